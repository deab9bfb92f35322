//! The SSH server: russh on the listening socket, public-key auth against
//! the config drive's keys, one task per session channel
//! ([`session`]), `direct-tcpip` and agent forwarding ([`forward`]).

mod auth;
mod forward;
mod grace;
pub(crate) mod launch;
pub(crate) mod pty;
mod session;
mod startups;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use russh::keys::PrivateKey;
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, MethodKind, MethodSet};

use crate::args::ServeOptions;
use crate::passwd::{self, User};

/// Subsystem that asks PID 1 to power the guest off (docs/api.md, "Guest
/// agent protocol"): works on images with no shell and no `poweroff`.
pub const POWEROFF_SUBSYSTEM: &str = "hangar-poweroff";

pub use grace::DEFAULT_LOGIN_GRACE;
pub use startups::MaxStartups;

pub async fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    let host_key = load_host_key(&opts.host_key)?;
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    tracing::info!(listen = %opts.listen, "ssh server listening");
    let config = Arc::new(server_config(host_key));
    let shared = Arc::new(Shared {
        authorized_keys: opts.authorized_keys.clone(),
        root: PathBuf::from("/"),
        allow_poweroff: opts.allow_poweroff,
        sessions: Arc::new(crate::sessions::Registry::open(
            &opts.sessions_dir,
            Path::new("/"),
        )),
    });
    // SIGTERM (the guest shutting down, or whoever runs `serve`): sessions
    // that still run are recorded as ended by it before the server goes.
    {
        let sessions = Arc::clone(&shared.sessions);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot watch for SIGTERM")?;
        tokio::spawn(async move {
            if term.recv().await.is_some() {
                sessions.shutdown("the VM shut down while it ran");
                tracing::info!("SIGTERM: sessions recorded; exiting");
                std::process::exit(0);
            }
        });
    }
    let startups = startups::Startups::new(opts.max_startups);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(startup) = startups.admit() else {
            // Closed before a byte is read; the client sees the
            // connection closed, as with sshd's MaxStartups.
            tracing::debug!(%peer, pending = startups.pending(), "too many connections not logged in: dropped");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(opts.listen);
        let logged_in = Arc::new(AtomicBool::new(false));
        let handler = Connection {
            shared: Arc::clone(&shared),
            peer,
            local,
            user: None,
            logged_in: Arc::clone(&logged_in),
            startup: Some(startup),
        };
        let stream = grace::GraceStream::new(stream, opts.login_grace_time, logged_in);
        let config = Arc::clone(&config);
        tokio::spawn(async move {
            match russh::server::run_stream(config, stream, handler).await {
                Ok(session) => {
                    if let Err(e) = session.await {
                        tracing::debug!(%peer, error = %e, "connection ended");
                    }
                }
                Err(e) => tracing::debug!(%peer, error = %e, "handshake failed"),
            }
        });
    }
}

fn load_host_key(path: &Path) -> anyhow::Result<PrivateKey> {
    russh::keys::load_secret_key(path, None).with_context(|| {
        format!(
            "cannot load the host key {} (the config drive puts it there)",
            path.display()
        )
    })
}

fn server_config(host_key: PrivateKey) -> russh::server::Config {
    russh::server::Config {
        server_id: russh::SshId::Standard(
            concat!("SSH-2.0-hangar-agent_", env!("CARGO_PKG_VERSION")).into(),
        ),
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        // Failed attempts cost a second; OpenSSH's first "none" probe does
        // not (it is how every client learns the methods).
        auth_rejection_time: Duration::from_secs(1),
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![host_key],
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 4,
        nodelay: true,
        max_auth_attempts: 6,
        ..Default::default()
    }
}

struct Shared {
    authorized_keys: PathBuf,
    /// Where `/etc/passwd` is read from (`/` in a guest).
    root: PathBuf,
    allow_poweroff: bool,
    /// Long-lived sessions, shared by every connection.
    sessions: Arc<crate::sessions::Registry>,
}

/// One client connection.
struct Connection {
    shared: Arc<Shared>,
    peer: SocketAddr,
    local: SocketAddr,
    /// Set once authenticated.
    user: Option<User>,
    /// Set once authenticated; ends the login grace time.
    logged_in: Arc<AtomicBool>,
    /// Its place among the connections not logged in yet, freed at login.
    startup: Option<startups::Slot>,
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(
            if auth::is_known(&self.shared.authorized_keys, offer.public_key) {
                Auth::Accept
            } else {
                Auth::reject()
            },
        )
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if !auth::may_log_in(&self.shared.authorized_keys, user, key.public_key) {
            tracing::info!(peer = %self.peer, user, "key not allowed for this user");
            return Ok(Auth::reject());
        }
        match passwd::lookup(&self.shared.root, user) {
            Some(u) => {
                tracing::info!(peer = %self.peer, user, "accepted publickey");
                self.user = Some(u);
                self.logged_in.store(true, Ordering::Release);
                self.startup = None;
                Ok(Auth::Accept)
            }
            None => {
                tracing::info!(peer = %self.peer, user, "no such user in the image's /etc/passwd");
                Ok(Auth::reject())
            }
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(user) = self.user.clone() else {
            return Ok(()); // dropping `reply` refuses the channel
        };
        let ctx = Arc::new(session::SessionContext {
            user,
            handle: session.handle(),
            allow_poweroff: self.shared.allow_poweroff,
            sessions: Arc::clone(&self.shared.sessions),
            peer: self.peer,
            local: self.local,
        });
        tokio::spawn(session::run(channel, ctx));
        reply.accept().await;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.user.is_some() {
            forward::direct_tcpip(channel, host_to_connect.to_string(), port_to_connect, reply);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    /// X11 forwarding is not offered: say so (as sshd does with
    /// `X11Forwarding no`) instead of leaving the request unanswered, which
    /// would shift every later reply the client is waiting for.
    #[allow(clippy::too_many_arguments)]
    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        _value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Sessions are the daemon's to manage: they may run as any user,
        // so only root's connections get them.
        let is_root = self.user.as_ref().is_some_and(|u| u.uid == 0);
        let known = name == "sftp"
            || (name == POWEROFF_SUBSYSTEM && self.shared.allow_poweroff)
            || (name == hangar_session_proto::SUBSYSTEM && is_root);
        if known {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }

    async fn agent_request(
        &mut self,
        _channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}
