//! How many API connections may be open at once: a cap for each non-root
//! user and one for all non-root users together. One user's flood of idle
//! connections then uses up only that user's slots, never another user's
//! or root's, and the daemon's file descriptors stay bounded. Root is not
//! counted: it can do anything to the host anyway, and must always be able
//! to reach its daemon.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::peer::PeerCred;

/// The caps, from `[api]` in the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnCaps {
    /// Connections of all non-root users together.
    pub total: usize,
    /// Connections of one non-root user.
    pub per_user: usize,
}

/// Why a connection was refused, for the client and the log.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("uid {uid} already has {limit} open connections to the hangar daemon ([api] max_connections_per_user); close some and retry")]
    PerUser { uid: u32, limit: usize },
    #[error("the hangar daemon already serves {limit} connections ([api] max_connections); retry shortly")]
    Total { limit: usize },
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_uid: HashMap<u32, usize>,
}

/// The open connections, counted per user. Cheap to clone.
#[derive(Clone)]
pub struct ConnLimiter {
    caps: ConnCaps,
    counts: Arc<Mutex<Counts>>,
}

/// One counted connection; dropping it frees the slot. Every request of
/// the connection carries it as an `Arc<ConnSlot>` extension, so that a
/// stream that outlives the HTTP connection (an upgraded exec stream) keeps
/// counting against its user until it ends.
pub struct ConnSlot {
    uid: Option<u32>,
    counts: Arc<Mutex<Counts>>,
}

impl ConnLimiter {
    pub fn new(caps: ConnCaps) -> Self {
        Self {
            caps,
            counts: Arc::default(),
        }
    }

    /// A slot for a new connection of `peer`, or why there is none.
    pub fn admit(&self, peer: &PeerCred) -> Result<ConnSlot, Refused> {
        if peer.is_root() {
            return Ok(ConnSlot {
                uid: None,
                counts: self.counts.clone(),
            });
        }
        let mut c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = c.per_uid.get(&peer.uid).copied().unwrap_or(0);
        if mine >= self.caps.per_user {
            return Err(Refused::PerUser {
                uid: peer.uid,
                limit: self.caps.per_user,
            });
        }
        if c.total >= self.caps.total {
            return Err(Refused::Total {
                limit: self.caps.total,
            });
        }
        c.total += 1;
        c.per_uid.insert(peer.uid, mine + 1);
        Ok(ConnSlot {
            uid: Some(peer.uid),
            counts: self.counts.clone(),
        })
    }

    /// Open non-root connections (for tests and logs).
    pub fn open(&self) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let Some(uid) = self.uid else { return };
        let mut c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_uid.get_mut(&uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_uid.remove(&uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(uid: u32) -> PeerCred {
        PeerCred {
            uid,
            gid: uid,
            pid: None,
        }
    }

    #[test]
    fn a_user_beyond_its_cap_is_refused_and_others_are_not() {
        let l = ConnLimiter::new(ConnCaps {
            total: 10,
            per_user: 2,
        });
        let _a = [l.admit(&user(1)).unwrap(), l.admit(&user(1)).unwrap()];
        assert_eq!(
            l.admit(&user(1)).err(),
            Some(Refused::PerUser { uid: 1, limit: 2 })
        );
        assert!(l.admit(&user(2)).is_ok());
    }

    #[test]
    fn the_total_cap_counts_all_non_root_users() {
        let l = ConnLimiter::new(ConnCaps {
            total: 2,
            per_user: 5,
        });
        let _a = [l.admit(&user(1)).unwrap(), l.admit(&user(2)).unwrap()];
        assert_eq!(l.admit(&user(3)).err(), Some(Refused::Total { limit: 2 }));
        assert_eq!(l.open(), 2);
    }

    #[test]
    fn root_is_never_refused_nor_counted() {
        let l = ConnLimiter::new(ConnCaps {
            total: 1,
            per_user: 1,
        });
        let _u = l.admit(&user(1)).unwrap();
        let root = user(0);
        let _r: Vec<_> = (0..5).map(|_| l.admit(&root).unwrap()).collect();
        assert_eq!(l.open(), 1);
    }

    #[test]
    fn a_closed_connection_frees_its_slot() {
        let l = ConnLimiter::new(ConnCaps {
            total: 1,
            per_user: 1,
        });
        let slot = l.admit(&user(1)).unwrap();
        assert!(l.admit(&user(1)).is_err());
        drop(slot);
        assert!(l.admit(&user(1)).is_ok());
        assert!(l.counts.lock().unwrap().per_uid.is_empty());
    }
}
