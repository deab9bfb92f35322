//! [`Tool::run`]: the async runner, and the pieces the streaming runner
//! shares with it (spawning, the stop condition).

use std::process::ExitStatus;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Group, Output, Tool, ToolError, DRAIN_GRACE};

pub(super) async fn capture(mut tool: Tool) -> Result<Output, ToolError> {
    let command = tool.command_line();
    let (mut child, group) = spawn(&mut tool, &command)?;
    let stdout = Drain::start(child.stdout.take());
    let stderr = Drain::start(child.stderr.take());
    let status = tokio::select! {
        status = child.wait() => wait_result(status, &command)?,
        e = stopped(&tool, &command) => return Err(e),
    };
    let deadline = Instant::now() + DRAIN_GRACE;
    let stdout = stdout.finish(deadline).await;
    let stderr = stderr.finish(deadline).await;
    tool.finish(group, status, stdout, stderr)
}

/// Starts the tool in its own process group with piped output, feeding
/// its stdin if the tool has any. The child is killed if it is dropped
/// before it was waited for, and the [`Group`] takes its children along.
pub(super) fn spawn(tool: &mut Tool, command: &str) -> Result<(Child, Group), ToolError> {
    tracing::debug!(%command, "running");
    let input = tool.stdin.take();
    let mut child = Command::from(tool.command(input.is_some()))
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ToolError::Spawn {
            command: command.to_string(),
            source,
        })?;
    let group = Group::led_by(child.id());
    if let (Some(data), Some(mut pipe)) = (input, child.stdin.take()) {
        // A task, so a tool that reads slowly cannot block the drains. A
        // write error (the tool closed stdin) shows as its own failure.
        tokio::spawn(async move {
            let _ = pipe.write_all(&data).await;
        });
    }
    Ok((child, group))
}

/// Resolves when the run must stop: its token is cancelled or its time
/// limit passed. Never resolves for a tool with neither.
pub(super) async fn stopped(tool: &Tool, command: &str) -> ToolError {
    let cancelled = async {
        match &tool.cancel {
            Some(token) => token.cancelled().await,
            None => std::future::pending().await,
        }
    };
    let timed_out = async {
        match tool.timeout {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = cancelled => ToolError::Cancelled { command: command.to_string() },
        () = timed_out => ToolError::TimedOut {
            command: command.to_string(),
            // `timed_out` only resolves when there is a limit.
            timeout: tool.timeout.unwrap_or_default(),
        },
    }
}

pub(super) fn wait_result(
    status: std::io::Result<ExitStatus>,
    command: &str,
) -> Result<ExitStatus, ToolError> {
    status.map_err(|source| ToolError::Wait {
        command: command.to_string(),
        source,
    })
}

/// Reads a pipe to its end in a task; what was read is kept even if the
/// pipe stays open (a grandchild inherited it).
struct Drain {
    buf: Arc<Mutex<Vec<u8>>>,
    task: Option<JoinHandle<()>>,
}

impl Drain {
    fn start<R: AsyncRead + Unpin + Send + 'static>(pipe: Option<R>) -> Self {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let task = pipe.map(|mut pipe| {
            let buf = Arc::clone(&buf);
            tokio::spawn(async move {
                let mut chunk = [0u8; 8192];
                while let Ok(n @ 1..) = pipe.read(&mut chunk).await {
                    buf.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .extend_from_slice(&chunk[..n]);
                }
            })
        });
        Drain { buf, task }
    }

    /// What was read, after waiting for the end of the pipe until `deadline`.
    async fn finish(self, deadline: Instant) -> String {
        if let Some(task) = self.task {
            let _ = tokio::time::timeout_at(deadline, task).await;
        }
        let buf = self.buf.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&buf).into_owned()
    }
}
