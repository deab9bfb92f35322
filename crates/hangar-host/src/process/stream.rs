//! [`Tool::run_streaming`]: a run whose output lines are progress.

use std::collections::VecDeque;
use std::process::ExitStatus;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::run::{spawn, stopped, wait_result};
use super::{Tool, ToolError, DRAIN_GRACE, TAIL_LINES};

pub(super) async fn run(
    mut tool: Tool,
    on_line: &(dyn Fn(&str) + Send + Sync),
) -> Result<ExitStatus, ToolError> {
    let command = tool.command_line();
    let (mut child, mut group) = spawn(&mut tool, &command)?;
    let (tx, mut lines) = mpsc::unbounded_channel::<String>();
    send_lines(child.stdout.take(), &tx);
    send_lines(child.stderr.take(), &tx);
    drop(tx);

    let mut tail: VecDeque<String> = VecDeque::new();
    let mut note = |line: String| {
        let line = line.trim();
        if !line.is_empty() {
            on_line(line);
            tail.push_back(line.to_string());
            if tail.len() > TAIL_LINES {
                tail.pop_front();
            }
        }
    };
    let stop = stopped(&tool, &command);
    tokio::pin!(stop);
    let mut lines_open = true;
    let status = loop {
        tokio::select! {
            e = &mut stop => return Err(e),
            line = lines.recv(), if lines_open => match line {
                Some(line) => note(line),
                None => lines_open = false,
            },
            status = child.wait() => break wait_result(status, &command)?,
        }
    };
    // Lines still in the pipes; a grandchild holding them must not hang us.
    let deadline = Instant::now() + DRAIN_GRACE;
    while let Ok(Some(line)) = tokio::time::timeout_at(deadline, lines.recv()).await {
        note(line);
    }
    let last_lines = tail.into_iter().collect::<Vec<_>>().join(" | ");
    tool.check(status, &last_lines)?;
    group.release();
    Ok(status)
}

/// Sends each line of `pipe` (decoded lossily) to `tx` until it closes.
fn send_lines<R: AsyncRead + Unpin + Send + 'static>(
    pipe: Option<R>,
    tx: &mpsc::UnboundedSender<String>,
) {
    let Some(pipe) = pipe else { return };
    let tx = tx.clone();
    tokio::spawn(async move {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        while let Ok(1..) = reader.read_until(b'\n', &mut line).await {
            if tx
                .send(String::from_utf8_lossy(&line).into_owned())
                .is_err()
            {
                break;
            }
            line.clear();
        }
    });
}
