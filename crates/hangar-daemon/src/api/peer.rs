//! Who is on the other end of an API connection, from the kernel
//! (`SO_PEERCRED` on the Unix socket), never from anything the client says.
//! Handlers that must tell root clients from socket users take
//! `ConnectInfo<PeerCred>`.

/// The credentials of the process that opened the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCred {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

impl PeerCred {
    /// What a connection whose credentials cannot be read counts as: no
    /// one in particular, so never root.
    pub const UNKNOWN: PeerCred = PeerCred {
        uid: u32::MAX,
        gid: u32::MAX,
        pid: None,
    };

    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// The credentials of a connected Unix stream.
    pub fn of(stream: &tokio::net::UnixStream) -> PeerCred {
        match stream.peer_cred() {
            Ok(c) => PeerCred {
                uid: c.uid(),
                gid: c.gid(),
                pid: c.pid(),
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the API client's credentials; treating it as unprivileged");
                PeerCred::UNKNOWN
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_our_own_credentials_from_a_socket_pair() {
        let (a, _b) = tokio::net::UnixStream::pair().expect("socketpair");
        let cred = PeerCred::of(&a);
        assert_eq!(cred.uid, nix::unistd::geteuid().as_raw());
        assert_eq!(cred.gid, nix::unistd::getegid().as_raw());
        assert_eq!(cred.pid, Some(std::process::id() as i32));
        assert_eq!(cred.is_root(), nix::unistd::geteuid().is_root());
    }

    #[test]
    fn unknown_is_not_root() {
        assert!(!PeerCred::UNKNOWN.is_root());
    }
}
