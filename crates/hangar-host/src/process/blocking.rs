//! [`Tool::run_blocking`]: the runner for code on a blocking thread.

use std::io::{Read, Write};
use std::process::{Child, ExitStatus};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::{Group, Output, Tool, ToolError, DRAIN_GRACE};

/// How often a wait with a cancellation token looks at the token.
const CANCEL_POLL: Duration = Duration::from_millis(20);

pub(super) fn capture(mut tool: Tool) -> Result<Output, ToolError> {
    let command = tool.command_line();
    tracing::debug!(%command, "running");
    let input = tool.stdin.take();
    let mut child = tool
        .command(input.is_some())
        .spawn()
        .map_err(|source| ToolError::Spawn {
            command: command.clone(),
            source,
        })?;
    let group = Group::led_by(Some(child.id()));
    if let (Some(data), Some(mut pipe)) = (input, child.stdin.take()) {
        // A thread, so a tool that reads slowly cannot block the drains.
        // A write error (the tool closed stdin) shows as its own failure.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
    }
    let stdout = Drain::start(child.stdout.take());
    let stderr = Drain::start(child.stderr.take());
    let status = wait(&tool, child, &command)?;
    let deadline = Instant::now() + DRAIN_GRACE;
    let stdout = stdout.finish(deadline);
    let stderr = stderr.finish(deadline);
    tool.finish(group, status, stdout, stderr)
}

/// Waits for `child` within the tool's time limit and cancel token. A
/// thread owns the child and reaps it even after the wait gave up (the
/// caller's [`Group`] then kills it).
fn wait(tool: &Tool, mut child: Child, command: &str) -> Result<ExitStatus, ToolError> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let deadline = tool.timeout.map(|t| Instant::now() + t);
    loop {
        if tool.is_cancelled() {
            return Err(ToolError::Cancelled {
                command: command.to_string(),
            });
        }
        let mut slice = deadline.map_or(Duration::MAX, |d| {
            d.saturating_duration_since(Instant::now())
        });
        if tool.cancel.is_some() {
            slice = slice.min(CANCEL_POLL);
        }
        match rx.recv_timeout(slice) {
            Ok(Ok(status)) => return Ok(status),
            Ok(Err(source)) => {
                return Err(ToolError::Wait {
                    command: command.to_string(),
                    source,
                })
            }
            Err(RecvTimeoutError::Timeout) => {
                if let (Some(d), Some(timeout)) = (deadline, tool.timeout) {
                    if Instant::now() >= d {
                        return Err(ToolError::TimedOut {
                            command: command.to_string(),
                            timeout,
                        });
                    }
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(ToolError::Wait {
                    command: command.to_string(),
                    source: std::io::Error::other("the waiting thread ended without a status"),
                })
            }
        }
    }
}

/// Reads a pipe to its end on a thread, so a large output cannot block the
/// tool. What was read is kept even if the pipe stays open.
struct Drain {
    buf: Arc<Mutex<Vec<u8>>>,
    /// Disconnects when the reader is done.
    done: mpsc::Receiver<()>,
}

impl Drain {
    fn start<R: Read + Send + 'static>(pipe: Option<R>) -> Self {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let (tx, done) = mpsc::channel::<()>();
        if let Some(mut pipe) = pipe {
            let buf = Arc::clone(&buf);
            std::thread::spawn(move || {
                let _done = tx;
                let mut chunk = [0u8; 8192];
                while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                    buf.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .extend_from_slice(&chunk[..n]);
                }
            });
        }
        Drain { buf, done }
    }

    /// What was read, after waiting for the end of the pipe until `deadline`.
    fn finish(self, deadline: Instant) -> String {
        let _ = self
            .done
            .recv_timeout(deadline.saturating_duration_since(Instant::now()));
        let buf = self.buf.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&buf).into_owned()
    }
}
