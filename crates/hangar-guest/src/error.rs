//! The crate's error type. Each message says what failed and, where there
//! is one, what to do about it; underlying causes ride along as `source`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("Cannot {action} the daemon key file {path}")]
    KeyFile {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("The daemon key file {path} is not a valid OpenSSH private key; move it away to let the daemon generate a new one")]
    KeyParse {
        path: PathBuf,
        #[source]
        source: russh::keys::ssh_key::Error,
    },

    #[error("The daemon key file {path} holds a {algorithm} key, but the daemon uses ed25519; move it away to let the daemon generate a new one")]
    KeyAlgorithm { path: PathBuf, algorithm: String },

    #[error("Cannot generate or encode an ed25519 key")]
    KeyGenerate {
        #[source]
        source: russh::keys::ssh_key::Error,
    },

    #[error("The pinned host key for the guest is not a valid OpenSSH public key (the VM record may be corrupt)")]
    InvalidPinnedHostKey {
        #[source]
        source: russh::keys::ssh_key::Error,
    },

    #[error("Cannot open a TCP connection to the guest at {addr}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },

    #[error("Connecting to the guest at {addr} over SSH took longer than {limit:?}")]
    ConnectTimeout { addr: SocketAddr, limit: Duration },

    #[error("The guest at {addr} presented host key {actual}, but the key pinned for this VM is {expected}; refusing to connect (another machine may be answering on this address)")]
    HostKeyMismatch {
        addr: SocketAddr,
        expected: String,
        actual: String,
    },

    #[error("The SSH handshake with the guest at {addr} failed")]
    Handshake {
        addr: SocketAddr,
        #[source]
        source: russh::Error,
    },

    #[error("The guest at {addr} rejected the daemon key {fingerprint} for user {user}; check that the daemon's public key is in the guest's authorized_keys")]
    AuthRejected {
        addr: SocketAddr,
        user: String,
        fingerprint: String,
    },

    #[error("The guest at {addr} was not ready for SSH after waiting {waited:?} ({attempts} attempts); last error: {last_error}")]
    NotReady {
        addr: SocketAddr,
        waited: Duration,
        attempts: u32,
        last_error: String,
    },

    #[error("The guest at {addr} did not answer within {limit:?} on a live connection: its SSH server (Hangar's guest agent) is stuck or gone; `hangar vm restart` restarts the machine")]
    Unresponsive { addr: SocketAddr, limit: Duration },
    #[error("Cannot {action} in the guest over sftp: {message}")]
    Sftp {
        action: &'static str,
        message: String,
    },
    #[error("Environment variable name {name:?} is not a valid shell identifier")]
    InvalidEnvName { name: String },

    #[error("Cannot {action} on the guest's SSH channel")]
    Channel {
        action: &'static str,
        #[source]
        source: russh::Error,
    },

    #[error("{host}:{port} in the guest refused: {reason}")]
    TcpRefused {
        host: String,
        port: u16,
        reason: String,
    },

    /// The guest did not answer a `direct-tcpip` open in time: its SSH
    /// connection may be stuck (a stalled stream holds it), so drop it.
    #[error("{host}:{port} in the guest: no answer within {after:?}")]
    TcpOpenTimedOut {
        host: String,
        port: u16,
        after: std::time::Duration,
    },

    #[error("The guest refused the {request} request")]
    RequestRefused { request: &'static str },

    #[error("The guest closed the command's channel without reporting an exit status (the SSH connection may have dropped)")]
    NoExitStatus,

    #[error("The receiver of the command's output went away; the command was closed")]
    OutputClosed,

    /// The guest agent answered a session request with an error.
    #[error("{0}")]
    Session(#[from] hangar_session_proto::ReplyError),

    #[error("The guest's SSH server does not offer sessions: they need Hangar's guest agent (the VM runs its image's own sshd; see `[guest] agent` in docs/architecture.md)")]
    SessionsUnsupported,

    #[error("The guest agent's session reply is malformed: {0}")]
    SessionProtocol(String),
}

impl GuestError {
    /// Errors that waiting longer cannot fix. A host key mismatch is a
    /// security signal: keep talking to that machine and we only hand it
    /// more chances.
    pub(crate) fn is_permanent(&self) -> bool {
        matches!(
            self,
            GuestError::HostKeyMismatch { .. } | GuestError::InvalidPinnedHostKey { .. }
        )
    }

    /// The guest answered the connect with a reset: its network is up but
    /// nothing listens on the port yet.
    pub(crate) fn is_connection_refused(&self) -> bool {
        matches!(self, GuestError::Connect { source, .. } if source.kind() == std::io::ErrorKind::ConnectionRefused)
    }
}

/// Renders an error with its whole `source` chain on one line, for messages
/// that must carry a cause as text (the last error seen while waiting).
pub(crate) fn chain_to_string(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect_error(kind: std::io::ErrorKind) -> GuestError {
        GuestError::Connect {
            addr: "10.0.0.2:22".parse().expect("addr"),
            source: std::io::Error::from(kind),
        }
    }

    #[test]
    fn only_a_refused_connect_counts_as_refused() {
        assert!(connect_error(std::io::ErrorKind::ConnectionRefused).is_connection_refused());
        assert!(!connect_error(std::io::ErrorKind::HostUnreachable).is_connection_refused());
        assert!(!GuestError::NoExitStatus.is_connection_refused());
    }
}
