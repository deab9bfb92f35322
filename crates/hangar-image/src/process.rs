//! Runs build tools as children in their own process group, streaming their
//! output as progress and killing the whole group on cancel.

use std::collections::VecDeque;
use std::process::Stdio;

use hangar_api::Progress;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
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
    let command_text = format!("{program} {}", args.join(" "));
    tracing::debug!(command = %command_text, "running");
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| ImageError::Spawn {
        program: program.to_string(),
        package: package.to_string(),
        source,
    })?;
    let pgid = child.id().map(|p| p as i32);
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    if let Some(out) = stdout {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let _ = tx.send(l);
            }
        });
    }
    if let Some(err) = stderr {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(err).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let _ = tx.send(l);
            }
        });
    }
    drop(tx);

    let mut tail: VecDeque<String> = VecDeque::new();
    let note = |l: String, tail: &mut VecDeque<String>| {
        let l = l.trim().to_string();
        if !l.is_empty() {
            report(progress, phase, l.clone());
            tail.push_back(l);
            if tail.len() > 8 {
                tail.pop_front();
            }
        }
    };
    let mut lines_open = true;
    let status = loop {
        tokio::select! {
            _ = cancel.cancelled() => {
                kill_group(pgid);
                let _ = child.wait().await;
                return Err(ImageError::Cancelled);
            }
            line = rx.recv(), if lines_open => match line {
                Some(l) => note(l, &mut tail),
                None => lines_open = false,
            },
            st = child.wait() => {
                break st.map_err(|e| ImageError::io("wait for", program, e))?;
            }
        }
    };
    // Drain what is left; a grandchild holding the pipe must not hang us.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(500);
    while let Ok(Some(l)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        note(l, &mut tail);
    }
    if status.success() {
        Ok(())
    } else {
        // Children of a failed tool may linger in its group.
        kill_group(pgid);
        Err(ImageError::CommandFailed {
            command: command_text,
            status: status.to_string(),
            last_lines: tail.into_iter().collect::<Vec<_>>().join(" | "),
        })
    }
}

fn kill_group(pgid: Option<i32>) {
    if let Some(pgid) = pgid {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
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
