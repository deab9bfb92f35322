//! `hangar exec` and `hangar ssh`: an upgraded stream to the daemon, which
//! bridges it to an SSH channel in the guest. Standard input is forwarded
//! (like ssh); the remote exit code becomes ours; 255 means hangar itself
//! failed (as with ssh).

use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsFd;

use hangar_api::stream::Frame;
use hangar_api::ExecRequest;
use nix::sys::termios::{self, SetArg, Termios};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::seg;
use crate::args::{ExecArgs, SshArgs};
use crate::client::Client;

const CLIENT_ERROR: u8 = 255;

pub async fn exec(client: &Client, a: &ExecArgs) -> u8 {
    let mut env = Vec::new();
    for e in &a.env {
        match e.split_once('=') {
            Some((k, v)) if !k.is_empty() => env.push((k.to_string(), v.to_string())),
            _ => {
                eprintln!("error: --env {e:?} must look like NAME=VALUE");
                return CLIENT_ERROR;
            }
        }
    }
    let raw = a.tty && std::io::stdin().is_terminal();
    let (cols, rows) = terminal_size().unwrap_or((80, 24));
    let req = ExecRequest {
        command: a.command.clone(),
        tty: a.tty,
        term: std::env::var("TERM").ok(),
        cols: Some(cols),
        rows: Some(rows),
        env,
        user: a.user.clone(),
    };
    stream(client, &a.name, req, !a.no_stdin, raw).await
}

pub async fn ssh(client: &Client, a: &SshArgs) -> u8 {
    let tty = std::io::stdin().is_terminal();
    let (cols, rows) = terminal_size().unwrap_or((80, 24));
    let req = ExecRequest {
        command: a.command.clone(),
        tty,
        term: std::env::var("TERM").ok(),
        cols: Some(cols),
        rows: Some(rows),
        env: Vec::new(),
        user: a.user.clone(),
    };
    stream(client, &a.name, req, true, tty).await
}

/// Puts the terminal in raw mode until dropped.
pub(crate) struct RawMode(Option<Termios>);

impl RawMode {
    pub(crate) fn enter() -> RawMode {
        let stdin = std::io::stdin();
        let Ok(saved) = termios::tcgetattr(stdin.as_fd()) else {
            return RawMode(None);
        };
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        if termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).is_err() {
            return RawMode(None);
        }
        RawMode(Some(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, saved);
        }
    }
}

pub(crate) fn terminal_size() -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize into the struct we own.
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_col > 0).then_some((ws.ws_col, ws.ws_row))
}

async fn stream(
    client: &Client,
    name: &str,
    req: ExecRequest,
    forward_stdin: bool,
    raw: bool,
) -> u8 {
    let io = match client
        .upgrade(&format!("/v1/vms/{}/exec", seg(name)), &req)
        .await
    {
        Ok(io) => io,
        Err(e) => {
            eprintln!("error: {}", e.message);
            return CLIENT_ERROR;
        }
    };
    let _raw = raw.then(RawMode::enter);
    let (mut rd, mut wr) = tokio::io::split(io);
    let (tx, mut rx) = mpsc::channel::<Frame>(32);

    if forward_stdin {
        let tx = tx.clone();
        // Blocking reads of stdin cannot be cancelled; the thread ends with
        // the process.
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin();
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = tx.blocking_send(Frame::StdinEof);
                        return;
                    }
                    Ok(n) => {
                        if tx.blocking_send(Frame::Stdin(buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    } else {
        let _ = tx.send(Frame::StdinEof).await;
    }
    if raw {
        let tx = tx.clone();
        tokio::spawn(async move {
            let Ok(mut winch) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            else {
                return;
            };
            while winch.recv().await.is_some() {
                if let Some((c, r)) = terminal_size() {
                    if tx.send(Frame::Resize(c, r)).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    drop(tx);
    tokio::spawn(async move {
        while let Some(f) = rx.recv().await {
            if wr.write_all(&f.encode()).await.is_err() {
                return;
            }
        }
    });

    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    loop {
        loop {
            match Frame::decode(&buf) {
                Ok(Some((frame, used))) => {
                    buf.drain(..used);
                    match frame {
                        Frame::Stdout(b) => {
                            let _ = stdout.write_all(&b);
                            let _ = stdout.flush();
                        }
                        Frame::Stderr(b) => {
                            let _ = stderr.write_all(&b);
                            let _ = stderr.flush();
                        }
                        Frame::Exit(code) => return code.clamp(0, 255) as u8,
                        Frame::Error(msg) => {
                            drop(_raw);
                            eprintln!("error: {msg}");
                            return CLIENT_ERROR;
                        }
                        _ => {}
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    eprintln!("error: bad frame from the daemon: {e}");
                    return CLIENT_ERROR;
                }
            }
        }
        match rd.read(&mut chunk).await {
            Ok(0) => {
                drop(_raw);
                eprintln!("error: the daemon closed the stream before the command exited");
                return CLIENT_ERROR;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => {
                drop(_raw);
                eprintln!("error: exec stream failed: {e}");
                return CLIENT_ERROR;
            }
        }
    }
}
