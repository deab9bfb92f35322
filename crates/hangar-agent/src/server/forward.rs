//! Channels that carry connections: `direct-tcpip` (ssh -L, `hangar
//! proxy`) to an address as seen from inside the guest, and SSH agent
//! forwarding (ssh -A) through a Unix socket only the session's user can
//! open.

use std::path::{Path, PathBuf};
use std::time::Duration;

use russh::server::{ChannelOpenHandle, Handle, Msg};
use russh::{Channel, ChannelOpenFailure};
use tokio::net::{TcpStream, UnixListener};

use crate::passwd::User;

const CONNECT_LIMIT: Duration = Duration::from_secs(10);

/// Connects to `host:port` from the guest, then accepts the channel and
/// copies both ways until either side closes; refuses the channel when the
/// connection fails (the client sees "connect failed", as with OpenSSH).
pub fn direct_tcpip(channel: Channel<Msg>, host: String, port: u32, reply: ChannelOpenHandle) {
    tokio::spawn(async move {
        let Ok(port) = u16::try_from(port) else {
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return;
        };
        let connected =
            tokio::time::timeout(CONNECT_LIMIT, TcpStream::connect((host.as_str(), port))).await;
        let mut tcp = match connected {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%host, port, error = %e, "direct-tcpip: connect failed");
                reply.reject(ChannelOpenFailure::ConnectFailed).await;
                return;
            }
            Err(_) => {
                reply.reject(ChannelOpenFailure::ConnectFailed).await;
                return;
            }
        };
        let _ = tcp.set_nodelay(true);
        reply.accept().await;
        let mut stream = channel.into_stream();
        let _ = tokio::io::copy_bidirectional(&mut stream, &mut tcp).await;
    });
}

/// A forwarded agent: `SSH_AUTH_SOCK` of one session. Each connection to
/// the socket opens an `auth-agent@openssh.com` channel back to the
/// client. Dropping it stops listening and removes the socket's dir.
pub struct AgentSocket {
    dir: PathBuf,
    socket: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl AgentSocket {
    pub fn path(&self) -> &Path {
        &self.socket
    }

    /// Makes a fresh 0700 dir in /tmp owned by `user` with the socket in
    /// it (like OpenSSH's /tmp/ssh-XXXX/agent.N).
    pub fn start(handle: Handle, user: &User) -> std::io::Result<AgentSocket> {
        let dir = make_private_dir(user)?;
        let socket = dir.join("agent.sock");
        let listener = match UnixListener::bind(&socket) {
            Ok(l) => l,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        if let Err(e) = chown(&socket, user) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let handle = handle.clone();
                tokio::spawn(async move {
                    match handle.channel_open_agent().await {
                        Ok(channel) => {
                            let mut stream = channel.into_stream();
                            let _ = tokio::io::copy_bidirectional(&mut conn, &mut stream).await;
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "the client refused an agent channel")
                        }
                    }
                });
            }
        });
        Ok(AgentSocket { dir, socket, task })
    }
}

impl Drop for AgentSocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn make_private_dir(user: &User) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    for attempt in 0..16u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = base.join(format!(
            "hangar-ssh-{}-{nanos:08x}{attempt}",
            std::process::id()
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {
                chown(&dir, user)?;
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other(
        "cannot make a unique agent socket dir",
    ))
}

fn chown(path: &Path, user: &User) -> std::io::Result<()> {
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))?;
    }
    Ok(())
}
