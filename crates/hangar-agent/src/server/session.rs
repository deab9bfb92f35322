//! One `session` channel: collects its setup requests (pty-req, env,
//! auth-agent-req), starts what `exec`/`shell`/`subsystem` asks for, then
//! pumps stdin/stdout/stderr, window changes and signals until the process
//! is done, and reports its exit status or signal.

use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;

use russh::server::{Handle, Msg};
use russh::{Channel, ChannelMsg, ChannelWriteHalf, Sig};
use tokio::io::AsyncWriteExt;

use super::forward::AgentSocket;
use super::launch::{self, Launch, What};
use super::pty;
use crate::passwd::User;

/// SSH extended data type for stderr (RFC 4254 §5.2).
const STDERR: u32 = 1;

/// What every session of one connection shares.
pub struct SessionContext {
    pub user: User,
    pub handle: Handle,
    pub allow_poweroff: bool,
    pub sessions: Arc<crate::sessions::Registry>,
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

struct PtyRequest {
    term: String,
    cols: u32,
    rows: u32,
}

pub async fn run(channel: Channel<Msg>, ctx: Arc<SessionContext>) {
    let (mut read, write) = channel.split();
    let mut env: Vec<(String, String)> = Vec::new();
    let mut pty_req: Option<PtyRequest> = None;
    let mut agent: Option<AgentSocket> = None;

    let what = loop {
        match read.wait().await {
            None | Some(ChannelMsg::Close) => return,
            Some(ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                ..
            }) => {
                pty_req = Some(PtyRequest {
                    term,
                    cols: col_width,
                    rows: row_height,
                })
            }
            Some(ChannelMsg::WindowChange {
                col_width,
                row_height,
                ..
            }) => {
                if let Some(p) = pty_req.as_mut() {
                    (p.cols, p.rows) = (col_width, row_height);
                }
            }
            Some(ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            }) => {
                if is_env_name(&variable_name) {
                    env.push((variable_name, variable_value));
                }
            }
            Some(ChannelMsg::AgentForward { .. }) => {
                match AgentSocket::start(ctx.handle.clone(), &ctx.user) {
                    Ok(a) => agent = Some(a),
                    Err(e) => tracing::warn!(error = %e, "cannot set up agent forwarding"),
                }
            }
            Some(ChannelMsg::Exec { command, .. }) => {
                break What::Exec(String::from_utf8_lossy(&command).into_owned())
            }
            Some(ChannelMsg::RequestShell { .. }) => break What::Shell,
            Some(ChannelMsg::RequestSubsystem { name, .. }) => match name.as_str() {
                "sftp" => break What::Sftp,
                super::POWEROFF_SUBSYSTEM if ctx.allow_poweroff => {
                    tracing::info!(peer = %ctx.peer, "power-off requested");
                    let _ = write.exit_status(0).await;
                    let _ = write.eof().await;
                    let _ = write.close().await;
                    // PID 1 stops every process (us too), syncs and powers off.
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(1),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                    return;
                }
                hangar_session_proto::SUBSYSTEM if ctx.user.uid == 0 => {
                    crate::sessions::serve(read, write, Arc::clone(&ctx.sessions)).await;
                    return;
                }
                // The handler already answered failure; the client decides.
                _ => continue,
            },
            Some(_) => {}
        }
    };

    let connection = format!(
        "{} {} {} {}",
        ctx.peer.ip(),
        ctx.peer.port(),
        ctx.local.ip(),
        ctx.local.port()
    );
    let client = format!("{} {} {}", ctx.peer.ip(), ctx.peer.port(), ctx.local.port());
    // sftp is a byte protocol: never through a terminal.
    let pty_req = if what == What::Sftp { None } else { pty_req };
    let opened = match &pty_req {
        Some(p) => match pty::open(p.cols, p.rows) {
            Ok(pair) => Some(pair),
            Err(e) => return fail(&write, &format!("cannot allocate a terminal: {e}"), 1).await,
        },
        None => None,
    };
    let launch = Launch {
        user: &ctx.user,
        what: &what,
        env: &env,
        term: pty_req.as_ref().map(|p| p.term.as_str()),
        tty: opened.as_ref().map(|p| &p.slave),
        tty_name: opened.as_ref().and_then(|p| p.name.as_deref()),
        agent_socket: agent.as_ref().map(|a| a.path()),
        connection: &connection,
        client: &client,
    };
    let spawned = launch::command(&launch).and_then(|mut c| c.spawn().map_err(Into::into));
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let status = e.exit_status();
            let msg = match &what {
                What::Exec(_) | What::Shell | What::Argv(_) => format!("hangar-agent: {e}"),
                What::Sftp => format!("hangar-agent: cannot start sftp: {e}"),
            };
            return fail(&write, &msg, status).await;
        }
    };
    let pid = child.id().map(|p| nix::unistd::Pid::from_raw(p as i32));

    // Output pumps; stdin is fed from the channel below.
    let mut stdin: Option<Box<dyn tokio::io::AsyncWrite + Send + Unpin>> = None;
    let mut pumps = Vec::new();
    // Tells the PTY pump that the session's command has exited.
    let (exited_tx, exited_rx) = tokio::sync::watch::channel(false);
    let master = match opened {
        Some(pair) => {
            drop(pair.slave); // the child has its copies
            pumps.push(tokio::spawn(pty::pump_output(
                pair.master.clone(),
                write.make_writer(),
                exited_rx,
            )));
            stdin = Some(Box::new(pair.master.clone()));
            Some(pair.master)
        }
        None => {
            if let Some(mut out) = child.stdout.take() {
                let mut tx = write.make_writer();
                pumps.push(tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut out, &mut tx).await;
                }));
            }
            if let Some(mut err) = child.stderr.take() {
                let mut tx = write.make_writer_ext(Some(STDERR));
                pumps.push(tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut err, &mut tx).await;
                }));
            }
            if let Some(i) = child.stdin.take() {
                stdin = Some(Box::new(i));
            }
            None
        }
    };

    let done = async {
        let status = child.wait().await;
        let _ = exited_tx.send(true);
        for p in pumps {
            let _ = p.await;
        }
        status
    };
    tokio::pin!(done);
    let status = loop {
        tokio::select! {
            status = &mut done => break status,
            msg = read.wait() => match msg {
                Some(ChannelMsg::Data { data }) => {
                    if let Some(w) = stdin.as_mut() {
                        if w.write_all(&data).await.is_err() {
                            stdin = None;
                        }
                    }
                }
                Some(ChannelMsg::Eof) => {
                    // A terminal has no EOF of its own; a pipe closes.
                    if master.is_none() {
                        stdin = None;
                    }
                }
                Some(ChannelMsg::WindowChange { col_width, row_height, .. }) => {
                    if let Some(m) = &master {
                        m.resize(col_width, row_height);
                    }
                }
                Some(ChannelMsg::Signal { signal }) => {
                    // To the session's process group, as sshd does: the
                    // command runs in its own session, so its children
                    // (not in a job of their own) get it too.
                    if let (Some(pid), Some(sig)) = (pid, to_nix_signal(&signal)) {
                        let _ = nix::sys::signal::killpg(pid, sig);
                    }
                }
                None | Some(ChannelMsg::Close) => {
                    // The client went away: hang up the session like a
                    // closed terminal would, and stop reading its input.
                    if let Some(pid) = pid {
                        let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGHUP);
                    }
                    drop(stdin);
                    let _ = (&mut done).await;
                    return;
                }
                Some(_) => {}
            }
        }
    };
    drop(agent);
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => {
                let _ = write.exit_status(code as u32).await;
            }
            (None, Some(sig)) => {
                let _ = ctx
                    .handle
                    .exit_signal_request(
                        write.id(),
                        to_ssh_signal(sig),
                        s.core_dumped(),
                        String::new(),
                        String::new(),
                    )
                    .await;
            }
            (None, None) => {
                let _ = write.exit_status(255).await;
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot wait for a session's process");
            let _ = write.exit_status(255).await;
        }
    }
    let _ = write.eof().await;
    let _ = write.close().await;
}

async fn fail(write: &ChannelWriteHalf<Msg>, msg: &str, status: u32) {
    let _ = write
        .extended_data_bytes(STDERR, format!("{msg}\r\n").into_bytes())
        .await;
    let _ = write.exit_status(status).await;
    let _ = write.eof().await;
    let _ = write.close().await;
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

fn to_nix_signal(sig: &Sig) -> Option<nix::sys::signal::Signal> {
    use nix::sys::signal::Signal as S;
    Some(match sig {
        Sig::ABRT => S::SIGABRT,
        Sig::ALRM => S::SIGALRM,
        Sig::FPE => S::SIGFPE,
        Sig::HUP => S::SIGHUP,
        Sig::ILL => S::SIGILL,
        Sig::INT => S::SIGINT,
        Sig::KILL => S::SIGKILL,
        Sig::PIPE => S::SIGPIPE,
        Sig::QUIT => S::SIGQUIT,
        Sig::SEGV => S::SIGSEGV,
        Sig::TERM => S::SIGTERM,
        Sig::USR1 => S::SIGUSR1,
        Sig::Custom(name) => match name.as_str() {
            "USR2" => S::SIGUSR2,
            "WINCH" => S::SIGWINCH,
            "CONT" => S::SIGCONT,
            "STOP" => S::SIGSTOP,
            "TSTP" => S::SIGTSTP,
            _ => return None,
        },
    })
}

fn to_ssh_signal(sig: i32) -> Sig {
    match sig {
        libc::SIGABRT => Sig::ABRT,
        libc::SIGALRM => Sig::ALRM,
        libc::SIGFPE => Sig::FPE,
        libc::SIGHUP => Sig::HUP,
        libc::SIGILL => Sig::ILL,
        libc::SIGINT => Sig::INT,
        libc::SIGKILL => Sig::KILL,
        libc::SIGPIPE => Sig::PIPE,
        libc::SIGQUIT => Sig::QUIT,
        libc::SIGSEGV => Sig::SEGV,
        libc::SIGTERM => Sig::TERM,
        libc::SIGUSR1 => Sig::USR1,
        other => Sig::Custom(
            nix::sys::signal::Signal::try_from(other)
                .map(|s| s.as_str().trim_start_matches("SIG").to_string())
                .unwrap_or_else(|_| other.to_string()),
        ),
    }
}
