//! Serves one `hangar-session` channel: reads the request line, answers
//! with one reply line, and for `attach` and `logs` goes on streaming the
//! session's terminal over the channel.

use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hangar_session_proto::{ErrorKind, Reply, ReplyError, Request, SessionInfo, MAX_REQUEST_LINE};
use russh::server::Msg;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::broadcast::error::RecvError;

use super::session::Session;
use super::Registry;

/// Longest `stop` grace the agent accepts.
const MAX_STOP_GRACE: Duration = Duration::from_secs(300);

pub async fn serve(mut read: ChannelReadHalf, write: ChannelWriteHalf<Msg>, reg: Arc<Registry>) {
    let request = match read_request(&mut read).await {
        Ok(r) => r,
        Err(e) => return reply_and_close::<()>(&write, Err(e)).await,
    };
    match request {
        Request::Start(req) => reply_and_close(&write, reg.start(req)).await,
        Request::List => reply_and_close(&write, Ok(reg.list())).await,
        Request::Info { name } => reply_and_close(&write, reg.get(&name).map(|s| s.info())).await,
        Request::Remove { name } => reply_and_close(&write, reg.remove(&name)).await,
        Request::Send { name, data } => {
            let r = match reg.get(&name) {
                Ok(s) => s.input(data.as_bytes()).await.map(|()| s.info()),
                Err(e) => Err(e),
            };
            reply_and_close(&write, r).await
        }
        Request::Stop { name, timeout_secs } => {
            let r = match reg.get(&name) {
                Ok(s) => {
                    s.stop(Duration::from_secs(timeout_secs).min(MAX_STOP_GRACE))
                        .await;
                    Ok(s.info())
                }
                Err(e) => Err(e),
            };
            reply_and_close(&write, r).await
        }
        Request::Attach { name, cols, rows } => match reg.get(&name) {
            Ok(s) if s.is_running() => attach(read, write, s, cols, rows).await,
            Ok(s) => {
                let e = ReplyError::new(ErrorKind::Conflict, ended_message(&s.info()));
                reply_and_close::<()>(&write, Err(e)).await
            }
            Err(e) => reply_and_close::<()>(&write, Err(e)).await,
        },
        Request::Logs {
            name,
            tail_lines,
            follow,
        } => match reg.get(&name) {
            Ok(s) => logs(read, write, s, tail_lines, follow).await,
            Err(e) => reply_and_close::<()>(&write, Err(e)).await,
        },
    }
}

fn ended_message(info: &SessionInfo) -> String {
    let how = match (info.exit_code, &info.signal, &info.end_reason) {
        (_, Some(sig), _) => format!("was killed by SIG{sig}"),
        (Some(code), None, _) => format!("exited with code {code}"),
        (None, None, Some(reason)) => format!("ended: {reason}"),
        (None, None, None) => "ended".into(),
    };
    format!(
        "session {:?} {how}: nothing to attach to (its output: `hangar session logs`)",
        info.name
    )
}

async fn read_request(read: &mut ChannelReadHalf) -> Result<Request, ReplyError> {
    let invalid = |m: String| ReplyError::new(ErrorKind::Invalid, m);
    let mut line = Vec::new();
    loop {
        match read.wait().await {
            Some(ChannelMsg::Data { data }) => {
                line.extend_from_slice(&data);
                if let Some(end) = line.iter().position(|b| *b == b'\n') {
                    line.truncate(end);
                    break;
                }
                if line.len() > MAX_REQUEST_LINE {
                    return Err(invalid(format!(
                        "request line longer than {MAX_REQUEST_LINE} bytes"
                    )));
                }
            }
            Some(ChannelMsg::Eof) | Some(ChannelMsg::Close) | None => {
                return Err(invalid("the channel ended before a request line".into()))
            }
            Some(_) => {}
        }
    }
    serde_json::from_slice(&line).map_err(|e| invalid(format!("malformed request: {e}")))
}

async fn send_reply<T: Serialize>(
    write: &ChannelWriteHalf<Msg>,
    r: Result<T, ReplyError>,
) -> Result<(), russh::Error> {
    let reply = match r {
        Ok(v) => Reply::Ok(v),
        Err(e) => Reply::Error(e),
    };
    let mut line = serde_json::to_vec(&reply).unwrap_or_else(|e| {
        format!(r#"{{"error":{{"kind":"internal","message":"cannot encode the reply: {e}"}}}}"#)
            .into_bytes()
    });
    line.push(b'\n');
    write.data_bytes(Bytes::from(line)).await
}

async fn reply_and_close<T: Serialize>(write: &ChannelWriteHalf<Msg>, r: Result<T, ReplyError>) {
    let code = if r.is_ok() { 0 } else { 1 };
    let _ = send_reply(write, r).await;
    finish(write, code).await;
}

async fn finish(write: &ChannelWriteHalf<Msg>, code: u32) {
    let _ = write.exit_status(code).await;
    let _ = write.eof().await;
    let _ = write.close().await;
}

/// The exit status a client reports once the session is done.
fn exit_code(s: &Session) -> u32 {
    s.info().exit_code.map_or(255, |c| c as u32)
}

async fn attach(
    mut read: ChannelReadHalf,
    write: ChannelWriteHalf<Msg>,
    s: Arc<Session>,
    cols: u16,
    rows: u16,
) {
    let _client = s.attach_guard();
    s.resize(cols, rows);
    let mut sub = s.subscribe();
    if send_reply(&write, Ok(s.info())).await.is_err() {
        return;
    }
    let mut out = write.make_writer();
    if out.write_all(&sub.screen).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            chunk = sub.rx.recv() => match chunk {
                Ok(b) => {
                    if out.write_all(&b).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    // Too far behind: start again from the screen as it is.
                    sub = s.subscribe();
                    if out.write_all(&sub.screen).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Closed) => break,
            },
            msg = read.wait() => match msg {
                Some(ChannelMsg::Data { data }) => {
                    if s.input(&data).await.is_err() {
                        break;
                    }
                }
                Some(ChannelMsg::WindowChange { col_width, row_height, .. }) => {
                    s.resize(clamp(col_width), clamp(row_height));
                }
                // Detached: the session goes on.
                Some(ChannelMsg::Close) | None => return,
                Some(_) => {}
            },
            () = s.ended() => break,
        }
    }
    // The command is done: deliver what is still queued, then its status.
    while let Ok(b) = sub.rx.try_recv() {
        if out.write_all(&b).await.is_err() {
            return;
        }
    }
    let _ = out.flush().await;
    finish(&write, exit_code(&s)).await;
}

fn clamp(v: u32) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

async fn logs(
    mut read: ChannelReadHalf,
    write: ChannelWriteHalf<Msg>,
    s: Arc<Session>,
    tail_lines: Option<u64>,
    follow: bool,
) {
    let mut sub = s.subscribe();
    let path = s.log_path();
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let e = ReplyError::new(
                ErrorKind::NotFound,
                format!("session {:?} has no log in the VM", s.name()),
            );
            return reply_and_close::<()>(&write, Err(e)).await;
        }
        Err(e) => {
            let e = ReplyError::new(
                ErrorKind::Internal,
                format!("cannot read {}: {e}", path.display()),
            );
            return reply_and_close::<()>(&write, Err(e)).await;
        }
    };
    let end = sub.log_offset;
    let start = match tail_lines {
        Some(n) => tail_start(&mut file, end, n).unwrap_or(0),
        None => 0,
    };
    if send_reply(&write, Ok(s.info())).await.is_err() {
        return;
    }
    let mut out = write.make_writer();
    // The log up to the subscription point, in chunks (constant memory).
    if file.seek(SeekFrom::Start(start)).is_err() {
        return finish(&write, 1).await;
    }
    let mut left = end.saturating_sub(start);
    let mut buf = vec![0u8; 64 * 1024];
    while left > 0 {
        let want = buf.len().min(left as usize);
        let n = match file.read(&mut buf[..want]) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if out.write_all(&buf[..n]).await.is_err() {
            return;
        }
        left -= n as u64;
    }
    if follow && s.is_running() {
        loop {
            tokio::select! {
                chunk = sub.rx.recv() => match chunk {
                    Ok(b) => {
                        if out.write_all(&b).await.is_err() {
                            return;
                        }
                    }
                    // A follower too slow for the output: say so in band.
                    Err(RecvError::Lagged(n)) => {
                        let note = format!("\r\n[hangar: {n} chunks of output skipped; the log has them]\r\n");
                        if out.write_all(note.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    Err(RecvError::Closed) => break,
                },
                msg = read.wait() => if matches!(msg, Some(ChannelMsg::Close) | None) {
                    return;
                },
                () = s.ended() => break,
            }
        }
        while let Ok(b) = sub.rx.try_recv() {
            if out.write_all(&b).await.is_err() {
                return;
            }
        }
    }
    let _ = out.flush().await;
    finish(&write, 0).await;
}

/// Offset of the start of the last `lines` lines of the first `end` bytes
/// (a final line without a newline counts), read backwards in blocks.
fn tail_start(file: &mut std::fs::File, end: u64, lines: u64) -> std::io::Result<u64> {
    if lines == 0 {
        return Ok(end);
    }
    let mut pos = end;
    let mut seen = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    let mut first_block = true;
    while pos > 0 {
        let n = buf.len().min(pos as usize);
        pos -= n as u64;
        file.seek(SeekFrom::Start(pos))?;
        file.read_exact(&mut buf[..n])?;
        let mut block = &buf[..n];
        if first_block {
            // A trailing newline ends the last line; it does not start one.
            if block.last() == Some(&b'\n') {
                block = &block[..block.len() - 1];
            }
            first_block = false;
        }
        for (i, b) in block.iter().enumerate().rev() {
            if *b == b'\n' {
                seen += 1;
                if seen == lines {
                    return Ok(pos + i as u64 + 1);
                }
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Write;

    #[test]
    fn tail_start_finds_the_last_lines() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"one\ntwo\nthree\n").unwrap();
        let end = 14;
        let tail = |f: &mut std::fs::File, n| tail_start(f, end, n).unwrap();
        assert_eq!(tail(&mut f, 1), 8);
        assert_eq!(tail(&mut f, 2), 4);
        assert_eq!(tail(&mut f, 3), 0);
        assert_eq!(tail(&mut f, 10), 0);
        assert_eq!(tail(&mut f, 0), 14);
        // Without a final newline the partial line is the last one.
        assert_eq!(tail_start(&mut f, 11, 1).unwrap(), 8);
    }
}
