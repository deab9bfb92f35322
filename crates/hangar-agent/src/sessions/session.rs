//! One long-lived session: a command on its own PTY, run by the agent
//! rather than by any connection. Its output goes to the log file, to the
//! screen model (so a client that attaches sees the screen as it is) and
//! to every attached client; it ends when the command has exited and the
//! terminal has gone quiet, and its exit status is recorded.

use std::fs::File;
use std::io::Write;
use std::num::NonZeroU16;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use hangar_session_proto::{ErrorKind, ReplyError, SessionInfo, SessionState};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;
use tokio::sync::{broadcast, watch};

use super::record;
use crate::server::pty::{self, PtyMaster};

/// Chunks of output a slow client may fall behind by before it is
/// resynchronised with a fresh screen.
const CLIENT_BACKLOG: usize = 1024;

pub struct Session {
    info: Mutex<SessionInfo>,
    dir: PathBuf,
    /// The terminal, while the command runs.
    pty: Option<PtyMaster>,
    /// The command's process group (it is a session leader).
    pgid: Option<Pid>,
    output: Mutex<Output>,
    /// Turns true once the session has ended.
    done: watch::Sender<bool>,
    clients: AtomicU32,
}

struct Output {
    log: Option<File>,
    screen: vt100::Parser,
    /// Bytes written to the log so far.
    written: u64,
    tx: broadcast::Sender<Bytes>,
}

/// What [`Session::subscribe`] hands a client: every chunk of output after
/// the snapshot, and the snapshot itself.
pub struct Subscription {
    pub rx: broadcast::Receiver<Bytes>,
    /// Escape codes that draw the screen as it was at subscription.
    pub screen: Vec<u8>,
    /// Log length at subscription.
    pub log_offset: u64,
}

fn size(v: u16, default: u16) -> NonZeroU16 {
    NonZeroU16::new(v)
        .or(NonZeroU16::new(default))
        .unwrap_or(NonZeroU16::MIN)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Session {
    /// A session known only from its record on disk (the agent or the VM
    /// restarted): no terminal, nothing more to come.
    pub fn from_record(dir: &Path, info: SessionInfo) -> Arc<Session> {
        let (tx, _) = broadcast::channel(1);
        let written = std::fs::metadata(record::log_path(dir, &info.name))
            .map(|m| m.len())
            .unwrap_or(0);
        Arc::new(Session {
            info: Mutex::new(info),
            dir: dir.to_path_buf(),
            pty: None,
            pgid: None,
            output: Mutex::new(Output {
                log: None,
                screen: vt100::Parser::new(size(24, 24), size(80, 80), 0),
                written,
                tx,
            }),
            done: watch::Sender::new(true),
            clients: AtomicU32::new(0),
        })
    }

    /// Spawns the command on a fresh PTY and starts pumping its output.
    /// Synchronous, so the registry can check the name and insert the
    /// session without another request slipping in between.
    pub fn spawn(
        dir: &Path,
        info: SessionInfo,
        launch: &crate::server::launch::Launch<'_>,
        master: PtyMaster,
        cols: u16,
        rows: u16,
    ) -> Result<Arc<Session>, ReplyError> {
        // The command first: a start that fails (no such program, user or
        // shell) must not truncate the log of the ended session it would
        // have replaced. What the command prints meanwhile waits in the PTY.
        let mut child = crate::server::launch::command(launch)
            .and_then(|mut c| c.spawn().map_err(Into::into))
            .map_err(|e| {
                let kind = match e {
                    crate::server::launch::LaunchError::Io(_) => ErrorKind::Internal,
                    _ => ErrorKind::Invalid,
                };
                ReplyError::new(kind, format!("cannot start {:?}: {e}", info.argv.join(" ")))
            })?;
        let log = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(record::log_path(dir, &info.name));
        let log = match log {
            Ok(f) => f,
            Err(e) => {
                // No log, no session: the command goes (its whole group).
                if let Some(pid) = child.id() {
                    let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
                }
                tokio::spawn(async move {
                    let _ = child.wait().await;
                });
                return Err(ReplyError::new(
                    ErrorKind::Internal,
                    format!("cannot create the session's log in {}: {e}", dir.display()),
                ));
            }
        };
        let pgid = child.id().map(|p| Pid::from_raw(p as i32));
        let (tx, _) = broadcast::channel(CLIENT_BACKLOG);
        let session = Arc::new(Session {
            info: Mutex::new(info),
            dir: dir.to_path_buf(),
            pty: Some(master.clone()),
            pgid,
            output: Mutex::new(Output {
                log: Some(log),
                screen: vt100::Parser::new(size(rows, 24), size(cols, 80), 0),
                written: 0,
                tx,
            }),
            done: watch::Sender::new(false),
            clients: AtomicU32::new(0),
        });
        session.persist();
        let s = Arc::clone(&session);
        tokio::spawn(async move {
            let (exited_tx, exited_rx) = watch::channel(false);
            let wait = async {
                let status = child.wait().await;
                let _ = exited_tx.send(true);
                status
            };
            let pump = pty::pump_output(master, Emitter(Arc::clone(&s)), exited_rx);
            let (status, ()) = tokio::join!(wait, pump);
            s.finish(status);
        });
        Ok(session)
    }

    pub fn name(&self) -> String {
        lock(&self.info).name.clone()
    }

    pub fn info(&self) -> SessionInfo {
        let mut info = lock(&self.info).clone();
        info.clients = self.clients.load(Ordering::Relaxed);
        info.log_bytes = lock(&self.output).written;
        info
    }

    pub fn is_running(&self) -> bool {
        !*self.done.borrow()
    }

    /// Resolves once the session has ended.
    pub async fn ended(&self) {
        let mut rx = self.done.subscribe();
        let _ = rx.wait_for(|d| *d).await.map(drop);
    }

    pub fn log_path(&self) -> PathBuf {
        record::log_path(&self.dir, &lock(&self.info).name)
    }

    /// Output from now on, with the screen and log length as of now (taken
    /// under one lock, so nothing falls between them).
    pub fn subscribe(&self) -> Subscription {
        let out = lock(&self.output);
        let mut screen = b"\x1b[H\x1b[2J".to_vec();
        screen.extend_from_slice(out.screen.screen().state_formatted().as_bytes());
        Subscription {
            rx: out.tx.subscribe(),
            screen,
            log_offset: out.written,
        }
    }

    /// Counts an attached client while the guard lives.
    pub fn attach_guard(self: &Arc<Self>) -> ClientGuard {
        self.clients.fetch_add(1, Ordering::Relaxed);
        ClientGuard(Arc::clone(self))
    }

    /// The latest client's window size wins (tmux's `window-size latest`).
    pub fn resize(&self, cols: u16, rows: u16) {
        if let Some(p) = &self.pty {
            p.resize(cols.into(), rows.into());
            lock(&self.output)
                .screen
                .set_size(size(rows, 24), size(cols, 80));
        }
    }

    /// Types `data` into the session.
    pub async fn input(&self, data: &[u8]) -> Result<(), ReplyError> {
        let ended = || {
            ReplyError::new(
                ErrorKind::Conflict,
                format!("session {:?} has ended", self.name()),
            )
        };
        let Some(p) = &self.pty else {
            return Err(ended());
        };
        if !self.is_running() {
            return Err(ended());
        }
        let mut p = p.clone();
        p.write_all(data).await.map_err(|e| {
            ReplyError::new(
                ErrorKind::Internal,
                format!("cannot write to the session's terminal: {e}"),
            )
        })
    }

    /// SIGTERM to the command's process group, SIGKILL after `grace`;
    /// returns once the session has ended.
    pub async fn stop(&self, grace: Duration) {
        let Some(pgid) = self.pgid else { return };
        if !self.is_running() {
            return;
        }
        let _ = killpg(pgid, Signal::SIGTERM);
        // SIGHUP too: a shell ignores SIGTERM but not a hang-up.
        let _ = killpg(pgid, Signal::SIGHUP);
        if tokio::time::timeout(grace, self.ended()).await.is_err() {
            tracing::info!(session = %self.name(), "did not stop in time: SIGKILL");
            let _ = killpg(pgid, Signal::SIGKILL);
            self.ended().await;
        }
    }

    fn emit(&self, chunk: &[u8]) {
        let mut out = lock(&self.output);
        if let Some(log) = out.log.as_mut() {
            if let Err(e) = log.write_all(chunk) {
                tracing::warn!(error = %e, "cannot write a session log; it stays incomplete");
                out.log = None;
            }
        }
        out.written += chunk.len() as u64;
        out.screen.process(chunk);
        // No receivers is fine: nobody is attached.
        let _ = out.tx.send(Bytes::copy_from_slice(chunk));
    }

    fn finish(&self, status: std::io::Result<std::process::ExitStatus>) {
        if !self.is_running() {
            return; // already recorded as ended (shutdown)
        }
        {
            let mut info = lock(&self.info);
            info.state = SessionState::Exited;
            info.ended_at = Some(record::now());
            match status {
                Ok(s) => match (s.code(), s.signal()) {
                    (Some(code), _) => info.exit_code = Some(code),
                    (None, Some(sig)) => {
                        info.exit_code = Some(128 + sig);
                        info.signal = Some(
                            Signal::try_from(sig)
                                .map(|s| s.as_str().trim_start_matches("SIG").to_string())
                                .unwrap_or_else(|_| sig.to_string()),
                        );
                    }
                    (None, None) => info.exit_code = Some(255),
                },
                Err(e) => {
                    info.state = SessionState::Ended;
                    info.end_reason = Some(format!("cannot wait for the command: {e}"));
                }
            }
        }
        lock(&self.output).log = None;
        self.persist();
        tracing::info!(session = %self.name(), "session ended");
        self.done.send_replace(true);
    }

    /// Marks the session ended without an exit status (the agent exits
    /// while it runs) and saves the record; later events change nothing.
    pub fn end_without_status(&self, reason: &str) {
        {
            let mut info = lock(&self.info);
            info.state = SessionState::Ended;
            info.end_reason = Some(reason.to_string());
            info.ended_at = Some(record::now());
        }
        self.persist();
        self.done.send_replace(true);
    }

    fn persist(&self) {
        let info = lock(&self.info).clone();
        if let Err(e) = record::save(&self.dir, &info) {
            tracing::warn!(session = %info.name, error = %e, "cannot save the session's record");
        }
    }
}

/// The session's output as an `AsyncWrite`, for the PTY pump that SSH
/// sessions use too (same end-of-output rule): each chunk goes to the log,
/// the screen and the clients at once.
struct Emitter(Arc<Session>);

impl tokio::io::AsyncWrite for Emitter {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.0.emit(data);
        std::task::Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// One attached client; dropping it detaches.
pub struct ClientGuard(Arc<Session>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
    }
}
