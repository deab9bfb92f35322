//! A pseudo-terminal for interactive sessions: the master side as async
//! I/O for the channel pumps, the slave side as the child's stdio and
//! controlling terminal.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use nix::pty::{openpty, Winsize};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;

/// Once the session's command has exited, how long the terminal may stay
/// quiet before the session ends without waiting for EOF.
const QUIET_AFTER_EXIT: Duration = Duration::from_millis(100);

pub struct Pty {
    pub master: PtyMaster,
    pub slave: OwnedFd,
    /// The slave's path (/dev/pts/N), for `SSH_TTY`.
    pub name: Option<PathBuf>,
}

/// The master side; clones share the fd (one reads, one writes).
#[derive(Clone)]
pub struct PtyMaster(Arc<AsyncFd<OwnedFd>>);

pub fn open(cols: u32, rows: u32) -> io::Result<Pty> {
    let pair = openpty(Some(&winsize(cols, rows)), None).map_err(io::Error::from)?;
    let name = nix::unistd::ttyname(&pair.slave).ok();
    let flags = nix::fcntl::fcntl(&pair.master, nix::fcntl::FcntlArg::F_GETFL)?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&pair.master, nix::fcntl::FcntlArg::F_SETFL(flags))?;
    // SAFETY: the OwnedFd is moved into the AsyncFd, so it stays open and
    // the same fd for the AsyncFd's whole life.
    let master = unsafe { AsyncFd::register(pair.master) }?;
    Ok(Pty {
        master: PtyMaster(Arc::new(master)),
        slave: pair.slave,
        name,
    })
}

fn winsize(cols: u32, rows: u32) -> Winsize {
    let clamp = |v: u32, default: u16| match u16::try_from(v) {
        Ok(0) | Err(_) => default,
        Ok(v) => v,
    };
    Winsize {
        ws_row: clamp(rows, 24),
        ws_col: clamp(cols, 80),
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

impl PtyMaster {
    /// Window change: the kernel sends SIGWINCH to the foreground group.
    pub fn resize(&self, cols: u32, rows: u32) {
        let ws = winsize(cols, rows);
        // SAFETY: TIOCSWINSZ reads one Winsize, which lives across the call.
        let rc = unsafe { libc::ioctl(self.0.get_ref().as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if rc != 0 {
            tracing::debug!(error = %io::Error::last_os_error(), "TIOCSWINSZ");
        }
    }
}

/// Copies the terminal's output to `tx` until every process has closed the
/// terminal or, once the session's command has exited (`exited` turns
/// true), until the terminal has been quiet for [`QUIET_AFTER_EXIT`]. A job
/// that left the session (`setsid`, a daemon) but kept the terminal as its
/// stdio must not hold the session open: sshd ends it with the command too.
pub async fn pump_output(
    mut master: PtyMaster,
    mut tx: impl AsyncWrite + Unpin,
    mut exited: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    let mut command_gone = *exited.borrow();
    loop {
        let read = if command_gone {
            match tokio::time::timeout(QUIET_AFTER_EXIT, master.read(&mut buf)).await {
                Ok(r) => r,
                Err(_quiet) => break,
            }
        } else {
            tokio::select! {
                r = master.read(&mut buf) => r,
                changed = exited.changed() => {
                    // A dropped sender also means the wait is over.
                    command_gone = changed.is_err() || *exited.borrow();
                    continue;
                }
            }
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = tx.flush().await;
}

impl AsyncRead for PtyMaster {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard
                .try_io(|fd| nix::unistd::read(fd.get_ref(), unfilled).map_err(io::Error::from))
            {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // EIO: every slave fd is closed (the session's processes
                // are gone): that is the end of the output.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Poll::Ready(Ok(())),
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for PtyMaster {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(io::Error::from))
            {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
