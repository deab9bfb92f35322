//! `hangar session …`: long-lived sessions in a VM. `attach` is an
//! upgraded stream (hangar-exec frames) with the detach keys watched here,
//! on the client side; the rest are plain API calls.

use std::io::{IsTerminal, Read, Write};

use hangar_api::stream::Frame;
use hangar_api::{
    ApiError, SendSessionRequest, SessionInfo, SessionState, StartSessionRequest,
    StopSessionRequest,
};
use hangar_host::sanitize::escape_controls;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::exec::{terminal_size, RawMode};
use super::{report, seg};
use crate::args::{Cli, SessionCommand, SessionSendArgs, SessionStartArgs};
use crate::client::Client;
use crate::output;

/// Exit code when hangar itself failed (as for exec and ssh).
const CLIENT_ERROR: u8 = 255;

pub async fn run(cli: &Cli, client: &Client, cmd: &SessionCommand) -> u8 {
    let done = match cmd {
        SessionCommand::Start(a) => start(cli, client, a).await,
        SessionCommand::Ls { vm } => ls(cli, client, vm.as_deref()).await,
        SessionCommand::Attach {
            vm,
            name,
            detach_keys,
        } => return attach(client, vm, name, detach_keys).await,
        SessionCommand::Send(a) => send(cli, client, a).await,
        SessionCommand::Logs {
            vm,
            name,
            follow,
            tail,
            raw,
        } => logs(client, vm, name, *follow, *tail, *raw).await,
        SessionCommand::Stop { vm, name, timeout } => stop(cli, client, vm, name, *timeout).await,
        SessionCommand::Rm { vm, name } => {
            let path = session_path(vm, name);
            client
                .delete(&path)
                .await
                .map(|()| println!("removed {name}"))
        }
    };
    match done {
        Ok(()) => 0,
        Err(e) => {
            report(&e);
            1
        }
    }
}

fn session_path(vm: &str, name: &str) -> String {
    format!("/v1/vms/{}/sessions/{}", seg(vm), seg(name))
}

async fn start(cli: &Cli, client: &Client, a: &SessionStartArgs) -> Result<(), ApiError> {
    let mut env = Vec::new();
    for e in &a.env {
        match e.split_once('=') {
            Some((k, v)) if !k.is_empty() => env.push((k.to_string(), v.to_string())),
            _ => {
                return Err(ApiError::invalid(format!(
                    "--env {e:?} must look like NAME=VALUE"
                )))
            }
        }
    }
    let (cols, rows) = terminal_size().unwrap_or((80, 24));
    let req = StartSessionRequest {
        name: a.name.clone(),
        command: a.command.clone(),
        cwd: a.cwd.clone(),
        env,
        user: a.user.clone(),
        cols: Some(cols),
        rows: Some(rows),
    };
    let info: SessionInfo = client
        .post(&format!("/v1/vms/{}/sessions", seg(&a.vm)), &req)
        .await?;
    if cli.json {
        output::json(&info);
    } else {
        println!(
            "started session {} in {} (attach: hangar session attach {} {})",
            info.name, info.vm, info.vm, info.name
        );
    }
    Ok(())
}

/// "running", "exited (3)", "killed (TERM)", "ended (the VM restarted…)".
pub fn state_text(s: &SessionInfo) -> String {
    match s.state {
        SessionState::Running => "running".into(),
        SessionState::Exited => match (&s.signal, s.exit_code) {
            (Some(sig), _) => format!("killed (SIG{})", escape_controls(sig.as_bytes())),
            (None, Some(code)) => format!("exited ({code})"),
            (None, None) => "exited".into(),
        },
        SessionState::Ended => match &s.end_reason {
            Some(r) => format!("ended ({})", escape_controls(r.as_bytes())),
            None => "ended".into(),
        },
    }
}

async fn ls(cli: &Cli, client: &Client, vm: Option<&str>) -> Result<(), ApiError> {
    let path = match vm {
        Some(vm) => format!("/v1/vms/{}/sessions", seg(vm)),
        None => "/v1/sessions".to_string(),
    };
    let all: Vec<SessionInfo> = client.get(&path).await?;
    if cli.json {
        output::json(&all);
        return Ok(());
    }
    output::table(
        &["vm", "name", "command", "state", "started", "clients"],
        all.iter()
            .map(|s| {
                // The command line comes from the guest: shown escaped.
                let command = escape_controls(s.command.join(" ").as_bytes());
                vec![
                    s.vm.clone(),
                    s.name.clone(),
                    command,
                    state_text(s),
                    s.started_at.clone(),
                    s.clients.to_string(),
                ]
            })
            .collect(),
    );
    Ok(())
}

async fn send(cli: &Cli, client: &Client, a: &SessionSendArgs) -> Result<(), ApiError> {
    let data = if a.keys {
        a.input.iter().map(|k| key_bytes(k)).collect::<String>()
    } else {
        a.input.join(" ")
    };
    let info: SessionInfo = client
        .post(
            &format!("{}/send", session_path(&a.vm, &a.name)),
            &SendSessionRequest { data },
        )
        .await?;
    if cli.json {
        output::json(&info);
    }
    Ok(())
}

/// What pressing the named key types (tmux send-keys names); a name that
/// is no key is typed as text.
pub fn key_bytes(name: &str) -> String {
    let named = match name {
        "Enter" | "Return" => Some("\r"),
        "Tab" => Some("\t"),
        "Escape" | "Esc" => Some("\x1b"),
        "Space" => Some(" "),
        "BSpace" | "Backspace" => Some("\x7f"),
        "Up" => Some("\x1b[A"),
        "Down" => Some("\x1b[B"),
        "Right" => Some("\x1b[C"),
        "Left" => Some("\x1b[D"),
        "Home" => Some("\x1b[H"),
        "End" => Some("\x1b[F"),
        _ => None,
    };
    if let Some(s) = named {
        return s.to_string();
    }
    if let Some(c) = name.strip_prefix("C-").and_then(ctrl_of) {
        return (c as char).to_string();
    }
    name.to_string()
}

/// The control byte of Ctrl plus `key` (one character: a letter or one of
/// `@[\]^_ ?`).
fn ctrl_of(key: &str) -> Option<u8> {
    let mut chars = key.chars();
    let c = chars.next()?;
    if chars.next().is_some() || !c.is_ascii() {
        return None;
    }
    match c.to_ascii_uppercase() as u8 {
        b @ b'@'..=b'_' => Some(b & 0x1f),
        b' ' => Some(0),
        b'?' => Some(0x7f),
        _ => None,
    }
}

/// `--detach-keys`: "ctrl-p,ctrl-q", "ctrl-\", "x".
pub fn parse_detach_keys(spec: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for part in spec.split(',') {
        let byte = match part.strip_prefix("ctrl-") {
            Some(k) => ctrl_of(k),
            None if part.len() == 1 && part.is_ascii() => part.bytes().next(),
            None => None,
        };
        out.push(byte.ok_or_else(|| {
            format!("--detach-keys {spec:?}: {part:?} is not ctrl-KEY or one character (e.g. \"ctrl-p,ctrl-q\")")
        })?);
    }
    Ok(out)
}

/// Watches typed bytes for the detach sequence. Bytes that might start it
/// are held back until they do not.
#[derive(Debug)]
pub struct DetachWatch {
    keys: Vec<u8>,
    matched: usize,
}

impl DetachWatch {
    pub fn new(keys: Vec<u8>) -> DetachWatch {
        DetachWatch { keys, matched: 0 }
    }

    /// The bytes to send on, and whether the sequence is complete (the
    /// rest of `input` is dropped then).
    pub fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    self.matched = 0;
                    return (out, true);
                }
                continue;
            }
            // Not the sequence after all: what was held goes through, and
            // this byte may start it again.
            out.extend_from_slice(&self.keys[..self.matched]);
            self.matched = 0;
            if b == self.keys[0] {
                self.matched = 1;
                if self.keys.len() == 1 {
                    return (out, true);
                }
            } else {
                out.push(b);
            }
        }
        (out, false)
    }
}

enum FromUser {
    Frame(Frame),
    Detach,
}

async fn attach(client: &Client, vm: &str, name: &str, detach_keys: &str) -> u8 {
    let keys = match parse_detach_keys(detach_keys) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}");
            return CLIENT_ERROR;
        }
    };
    let tty = std::io::stdin().is_terminal();
    let (cols, rows) = terminal_size().unwrap_or((80, 24));
    let path = format!("{}/attach?cols={cols}&rows={rows}", session_path(vm, name));
    let io = match client.upgrade_attach(&path).await {
        Ok(io) => io,
        Err(e) => {
            eprintln!("error: {}", e.message);
            return CLIENT_ERROR;
        }
    };
    let raw = tty.then(RawMode::enter);
    let (mut rd, mut wr) = tokio::io::split(io);
    let (tx, mut rx) = mpsc::channel::<FromUser>(32);
    {
        let tx = tx.clone();
        // Blocking reads of stdin cannot be cancelled; the thread ends with
        // the process.
        std::thread::spawn(move || {
            let mut watch = DetachWatch::new(keys);
            let mut stdin = std::io::stdin();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                // stdin closed: stay attached, watching the output.
                let n = match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let (typed, detach) = watch.feed(&buf[..n]);
                if !typed.is_empty()
                    && tx
                        .blocking_send(FromUser::Frame(Frame::Stdin(typed)))
                        .is_err()
                {
                    return;
                }
                if detach {
                    let _ = tx.blocking_send(FromUser::Detach);
                    return;
                }
            }
        });
    }
    if tty {
        let tx = tx.clone();
        tokio::spawn(async move {
            let Ok(mut winch) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            else {
                return;
            };
            while winch.recv().await.is_some() {
                if let Some((c, r)) = terminal_size() {
                    if tx.send(FromUser::Frame(Frame::Resize(c, r))).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    drop(tx);
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut stdout = std::io::stdout();
    let mut user_gone = false;
    loop {
        loop {
            match Frame::decode(&buf) {
                Ok(Some((frame, used))) => {
                    buf.drain(..used);
                    match frame {
                        Frame::Stdout(b) | Frame::Stderr(b) => {
                            let _ = stdout.write_all(&b);
                            let _ = stdout.flush();
                        }
                        Frame::Exit(code) => {
                            drop(raw);
                            return code.clamp(0, 255) as u8;
                        }
                        Frame::Error(msg) => {
                            drop(raw);
                            eprintln!("\nerror: {msg}");
                            return CLIENT_ERROR;
                        }
                        _ => {}
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    drop(raw);
                    eprintln!("\nerror: bad frame from the daemon: {e}");
                    return CLIENT_ERROR;
                }
            }
        }
        tokio::select! {
            read = rd.read(&mut chunk) => match read {
                Ok(0) => {
                    drop(raw);
                    eprintln!("\nerror: the daemon closed the stream before the session ended");
                    return CLIENT_ERROR;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => {
                    drop(raw);
                    eprintln!("\nerror: attach stream failed: {e}");
                    return CLIENT_ERROR;
                }
            },
            msg = rx.recv(), if !user_gone => match msg {
                Some(FromUser::Frame(f)) => {
                    if wr.write_all(&f.encode()).await.is_err() {
                        user_gone = true;
                    }
                }
                Some(FromUser::Detach) => {
                    let _ = wr.shutdown().await;
                    drop(raw);
                    eprintln!("\r\n[detached from session {name}; it keeps running: hangar session attach {vm} {name}]");
                    return 0;
                }
                None => user_gone = true,
            },
        }
    }
}

async fn logs(
    client: &Client,
    vm: &str,
    name: &str,
    follow: bool,
    tail: Option<u64>,
    raw: bool,
) -> Result<(), ApiError> {
    let mut path = format!("{}/logs?follow={follow}", session_path(vm, name));
    if let Some(n) = tail {
        path.push_str(&format!("&tail={n}"));
    }
    let resp = client.get_stream(&path).await?;
    // Session output is the guest's: a terminal gets it escaped.
    let mut sanitizer =
        (!raw && std::io::stdout().is_terminal()).then(hangar_host::sanitize::Sanitizer::default);
    let mut body = resp.into_body();
    let mut out = std::io::stdout();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::internal(format!("the log stream broke: {e}")))?;
        if let Ok(data) = frame.into_data() {
            let _ = match sanitizer.as_mut() {
                Some(s) => out.write_all(s.push(&data).as_bytes()),
                None => out.write_all(&data),
            };
            let _ = out.flush();
        }
    }
    if let Some(s) = sanitizer.as_mut() {
        let _ = out.write_all(s.finish().as_bytes());
    }
    let _ = out.flush();
    Ok(())
}

async fn stop(
    cli: &Cli,
    client: &Client,
    vm: &str,
    name: &str,
    timeout: u64,
) -> Result<(), ApiError> {
    let info: SessionInfo = client
        .post(
            &format!("{}/stop", session_path(vm, name)),
            &StopSessionRequest {
                timeout_secs: Some(timeout),
            },
        )
        .await?;
    if cli.json {
        output::json(&info);
    } else {
        println!("{}: {}", info.name, state_text(&info));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_tmux_names_or_text() {
        assert_eq!(key_bytes("Enter"), "\r");
        assert_eq!(key_bytes("C-c"), "\x03");
        assert_eq!(key_bytes("C-\\"), "\x1c");
        assert_eq!(key_bytes("Up"), "\x1b[A");
        assert_eq!(key_bytes("ls -l"), "ls -l");
        assert_eq!(key_bytes("C-long"), "C-long");
    }

    #[test]
    fn detach_keys_parse_like_docker() {
        assert_eq!(parse_detach_keys("ctrl-\\").unwrap(), vec![0x1c]);
        assert_eq!(
            parse_detach_keys("ctrl-p,ctrl-q").unwrap(),
            vec![0x10, 0x11]
        );
        assert_eq!(parse_detach_keys("ctrl-a,d").unwrap(), vec![0x01, b'd']);
        assert!(parse_detach_keys("ctrl-").is_err());
        assert!(parse_detach_keys("meta-x")
            .unwrap_err()
            .contains("ctrl-KEY"));
    }

    #[test]
    fn the_detach_sequence_is_held_back_and_detaches_or_passes_through() {
        let mut w = DetachWatch::new(vec![0x10, 0x11]);
        assert_eq!(w.feed(b"ab\x10"), (b"ab".to_vec(), false));
        // The held Ctrl-P goes through when the next key is not Ctrl-Q.
        assert_eq!(w.feed(b"x"), (b"\x10x".to_vec(), false));
        assert_eq!(w.feed(b"\x10\x10"), (b"\x10".to_vec(), false));
        assert_eq!(w.feed(b"\x11rest"), (Vec::new(), true));
        let mut one = DetachWatch::new(vec![0x1c]);
        assert_eq!(one.feed(b"hi\x1cmore"), (b"hi".to_vec(), true));
    }
}
