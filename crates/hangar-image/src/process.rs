//! Runs build tools through hangar-host's runner (own process group,
//! killed with everything it started on cancel), streaming their output
//! lines as progress.

use hangar_api::Progress;
use hangar_host::Tool;
use tokio_util::sync::CancellationToken;

use crate::ImageError;

/// Progress callback type used across the crate.
pub type ProgressFn<'a> = &'a (dyn Fn(Progress) + Send + Sync);

pub(crate) fn report(progress: ProgressFn<'_>, phase: &str, detail: impl Into<String>) {
    progress(Progress {
        phase: phase.to_string(),
        current: None,
        total: None,
        unit: None,
        detail: Some(detail.into()),
    });
}

/// Runs `program args...`; each output line is reported as the detail of
/// `phase`. On cancel the process group is killed and `Cancelled` returned.
/// `package` names the Debian package to install when the program is absent.
pub async fn run(
    program: &str,
    args: &[&str],
    envs: &[(&str, &str)],
    package: &str,
    phase: &str,
    progress: ProgressFn<'_>,
    cancel: &CancellationToken,
) -> Result<(), ImageError> {
    let tool = envs
        .iter()
        .fold(Tool::new(program).args(args), |t, (k, v)| t.env(k, v))
        .cancel_on(cancel);
    tool.run_streaming(&|line| report(progress, phase, line))
        .await
        .map(drop)
        .map_err(ImageError::tool(program, package))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn output_lines_become_progress_details() {
        let seen = Mutex::new(Vec::new());
        let cb = |p: Progress| {
            seen.lock()
                .expect("lock")
                .push(p.detail.unwrap_or_default())
        };

        run(
            "sh",
            &["-c", "echo one; echo two >&2"],
            &[],
            "dash",
            "t",
            &cb,
            &CancellationToken::new(),
        )
        .await
        .expect("run");

        let seen = seen.into_inner().expect("lock");
        assert!(seen.contains(&"one".to_string()));
        assert!(seen.contains(&"two".to_string()));
    }

    #[tokio::test]
    async fn failing_command_reports_last_lines() {
        let cb = |_: Progress| {};

        let err = run(
            "sh",
            &["-c", "echo boom; exit 3"],
            &[],
            "dash",
            "t",
            &cb,
            &CancellationToken::new(),
        )
        .await
        .expect_err("must fail");

        assert!(err.to_string().contains("boom"), "{err}");
    }

    #[tokio::test]
    async fn environment_reaches_the_tool() {
        let seen = Mutex::new(Vec::new());
        let cb = |p: Progress| {
            seen.lock()
                .expect("lock")
                .push(p.detail.unwrap_or_default())
        };

        run(
            "sh",
            &["-c", "echo $HANGAR_A-$HANGAR_B"],
            &[("HANGAR_A", "1"), ("HANGAR_B", "2")],
            "dash",
            "t",
            &cb,
            &CancellationToken::new(),
        )
        .await
        .expect("run");

        assert_eq!(seen.into_inner().expect("lock"), ["1-2"]);
    }

    #[tokio::test]
    async fn cancel_kills_the_process_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("pid");
        let script = format!(
            "sleep 60 & echo $! > {}; echo started; wait",
            pidfile.display()
        );
        let cancel = CancellationToken::new();
        // Cancelled when the script says its grandchild runs.
        let cb = {
            let cancel = cancel.clone();
            move |p: Progress| {
                if p.detail.as_deref() == Some("started") {
                    cancel.cancel();
                }
            }
        };

        let err = run("sh", &["-c", &script], &[], "dash", "t", &cb, &cancel)
            .await
            .expect_err("must be cancelled");

        assert!(matches!(err, ImageError::Cancelled));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .expect("pid")
            .trim()
            .parse()
            .expect("int");
        // SIGKILL is delivered asynchronously: give it a moment to land.
        let alive = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| !s.contains(") Z "))
                .unwrap_or(false)
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while alive() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(!alive(), "grandchild sleep {pid} survived cancel");
    }

    #[tokio::test]
    async fn missing_program_names_the_package() {
        let cb = |_: Progress| {};

        let err = run(
            "hangar-no-such-tool",
            &[],
            &[],
            "pkg-x",
            "t",
            &cb,
            &CancellationToken::new(),
        )
        .await
        .expect_err("must fail");

        assert!(err.to_string().contains("pkg-x"));
    }
}
