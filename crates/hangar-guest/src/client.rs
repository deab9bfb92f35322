//! Connecting to a guest: TCP through a caller-supplied connector, SSH
//! handshake with the pinned host key, public-key auth with the daemon key.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use russh::client::{self, Handle};
use russh::keys::ssh_key::HashAlg;
use russh::keys::{PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use tokio::time::{timeout, Instant};

use crate::error::GuestError;
use crate::keys::{parse_public, DaemonKey};

/// How to reach a guest: the daemon passes a connector that opens the TCP
/// stream (possibly from inside a network namespace).
pub type ConnectFn = Arc<
    dyn Fn(SocketAddr) -> BoxFuture<'static, std::io::Result<tokio::net::TcpStream>> + Send + Sync,
>;

/// A connector that dials from the daemon's own network namespace.
pub fn direct_connector() -> ConnectFn {
    Arc::new(|addr| Box::pin(tokio::net::TcpStream::connect(addr)))
}

/// Where a guest listens and which host key it must present.
#[derive(Debug, Clone)]
pub struct GuestTarget {
    pub addr: SocketAddr,
    /// Normally "root".
    pub user: String,
    /// Pinned OpenSSH public host key; a mismatch is an error naming both
    /// fingerprints.
    pub host_key_public: String,
}

/// An authenticated SSH connection to one guest. Commands run on their own
/// channels, so one client serves many concurrent `exec` calls.
pub struct GuestClient {
    pub(crate) handle: Handle<PinnedHostKey>,
    pub(crate) addr: SocketAddr,
}

impl std::fmt::Debug for GuestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestClient")
            .field("addr", &self.addr)
            .finish()
    }
}

/// Longest a single TCP connect may take inside [`crate::wait_ready`]:
/// while a guest's network is not up yet a SYN can hang until the ARP
/// timeout, and a shorter cap lets the next attempt start sooner.
pub(crate) const TCP_ATTEMPT_LIMIT: Duration = Duration::from_secs(2);

impl GuestClient {
    /// Opens the TCP stream with `connect`, runs the SSH handshake (the
    /// guest must present the pinned host key) and authenticates with the
    /// daemon key, all within `timeout`.
    pub async fn connect(
        connect: &ConnectFn,
        target: &GuestTarget,
        key: &DaemonKey,
        timeout: Duration,
    ) -> Result<GuestClient, GuestError> {
        connect_within(connect, target, key, timeout, timeout).await
    }

    /// True once the SSH connection is gone (guest stopped or rebooted);
    /// a cached client must then be replaced.
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Address this client is connected to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Ends the SSH connection politely (the guest sees a disconnect, not a
    /// reset). Dropping the client also ends it.
    pub async fn close(self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }
}

/// Connect with a separate, usually shorter, limit on the TCP step.
pub(crate) async fn connect_within(
    connect: &ConnectFn,
    target: &GuestTarget,
    key: &DaemonKey,
    tcp_limit: Duration,
    total_limit: Duration,
) -> Result<GuestClient, GuestError> {
    let expected = parse_public(&target.host_key_public)?;
    let addr = target.addr;
    let started = Instant::now();
    let tcp_limit = tcp_limit.min(total_limit);

    let stream = timeout(tcp_limit, connect(addr))
        .await
        .map_err(|_| GuestError::ConnectTimeout {
            addr,
            limit: tcp_limit,
        })?
        .map_err(|source| GuestError::Connect { addr, source })?;
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(%addr, error = %err, "cannot set TCP_NODELAY");
    }

    let remaining = total_limit.saturating_sub(started.elapsed());
    timeout(remaining, handshake_and_auth(stream, expected, target, key))
        .await
        .map_err(|_| GuestError::ConnectTimeout {
            addr,
            limit: total_limit,
        })?
}

async fn handshake_and_auth(
    stream: tokio::net::TcpStream,
    expected: PublicKey,
    target: &GuestTarget,
    key: &DaemonKey,
) -> Result<GuestClient, GuestError> {
    let addr = target.addr;
    let expected_fp = fingerprint(&expected);
    let handler = PinnedHostKey { expected };
    let mut handle = client::connect_stream(Arc::new(ssh_config()), stream, handler)
        .await
        .map_err(|err| match err {
            HandshakeError::HostKeyMismatch { actual } => GuestError::HostKeyMismatch {
                addr,
                expected: expected_fp.clone(),
                actual,
            },
            HandshakeError::Ssh(source) => GuestError::Handshake { addr, source },
        })?;

    let auth = handle
        .authenticate_publickey(
            target.user.clone(),
            PrivateKeyWithHashAlg::new(key.private(), None),
        )
        .await
        .map_err(|source| GuestError::Handshake { addr, source })?;
    if !auth.success() {
        return Err(GuestError::AuthRejected {
            addr,
            user: target.user.clone(),
            fingerprint: key.fingerprint(),
        });
    }
    tracing::debug!(%addr, user = %target.user, "SSH session established");
    Ok(GuestClient { handle, addr })
}

fn ssh_config() -> client::Config {
    client::Config {
        // Guests live for hours; keepalives notice a dead guest without
        // closing idle sessions that are merely quiet.
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 4,
        nodelay: true,
        ..Default::default()
    }
}

fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Accepts exactly one host key: the one the daemon generated for the VM.
pub(crate) struct PinnedHostKey {
    expected: PublicKey,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    #[error(transparent)]
    Ssh(#[from] russh::Error),
    #[error("host key mismatch: got {actual}")]
    HostKeyMismatch { actual: String },
}

impl client::Handler for PinnedHostKey {
    type Error = HandshakeError;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let presented = match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.key_data().clone(),
            PublicKeyOrCertificate::Certificate(cert) => cert.public_key().clone(),
        };
        if &presented == self.expected.key_data() {
            Ok(true)
        } else {
            Err(HandshakeError::HostKeyMismatch {
                actual: presented.fingerprint(HashAlg::Sha256).to_string(),
            })
        }
    }
}
