//! Running host tools with a time limit. The child gets its own process
//! group, so a timeout kills everything it started, not just the child.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Why a tool could not be run to the end.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The binary could not be started (missing, not executable).
    #[error("cannot run {}", program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The tool ran past its time limit and was killed.
    #[error("{} did not finish within {timeout:?}", program.display())]
    Timeout { program: PathBuf, timeout: Duration },
    /// Waiting for the tool failed.
    #[error("waiting for {}", program.display())]
    Wait {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Runs `program args`, returning stdout followed by stderr whatever the
/// exit status (usage and version texts often exit non-zero). The process
/// group is killed after `timeout`. The pipes are drained by threads while
/// waiting, so a large output (a kernel config) cannot block the child.
pub fn capture_blocking(
    program: &Path,
    args: &[&str],
    timeout: Duration,
) -> Result<String, RunError> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|source| RunError::Spawn {
            program: program.to_path_buf(),
            source,
        })?;
    fn drain<R: Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    }
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let kill_group = |child: &mut std::process::Child| {
        // The group id is the child's pid (process_group(0)).
        let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = child.kill();
        let _ = child.wait();
    };
    let waited = loop {
        match child.try_wait() {
            Ok(Some(_)) => break Ok(()),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                kill_group(&mut child);
                break Err(RunError::Timeout {
                    program: program.to_path_buf(),
                    timeout,
                });
            }
            Err(source) => {
                kill_group(&mut child);
                break Err(RunError::Wait {
                    program: program.to_path_buf(),
                    source,
                });
            }
        }
    };
    // The group is gone, so the pipes close and the readers finish.
    let text = out.join().unwrap_or_default() + &err.join().unwrap_or_default();
    waited.map(|()| text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_returns_stdout_then_stderr_whatever_the_exit_status() {
        let out = capture_blocking(
            Path::new("sh"),
            &["-c", "echo out; echo err >&2; exit 3"],
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(out, "out\nerr\n");
    }

    #[test]
    fn capture_kills_a_tool_past_its_time_limit_with_its_children() {
        let began = Instant::now();
        let e = capture_blocking(
            Path::new("sh"),
            &["-c", "sleep 30 & sleep 30"],
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(matches!(e, RunError::Timeout { .. }), "{e}");
        // The grandchild held the pipes; killing the group closed them.
        assert!(began.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn capture_of_a_missing_binary_names_it() {
        let e = capture_blocking(Path::new("/nonexistent/tool"), &[], Duration::from_secs(1))
            .unwrap_err();
        assert_eq!(e.to_string(), "cannot run /nonexistent/tool");
    }
}
