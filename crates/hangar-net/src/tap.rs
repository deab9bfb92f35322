//! TAP devices: the bookkeeping of the pool (pure, unit-tested) and the `ip`
//! commands that create, attach and delete them.

use std::collections::HashSet;

use crate::cmd::Ip;
use crate::NetError;

/// The TAP index encoded in `name` if it is one of ours (`prefix` + digits).
pub(crate) fn index_of(prefix: &str, name: &str) -> Option<u32> {
    let digits = name.strip_prefix(prefix)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Which TAPs are idle, which are in use, and the next free index.
/// Guarded by a std mutex and never held across an await.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    pub free: Vec<String>,
    pub in_use: HashSet<String>,
    pub next: u32,
    pub closed: bool,
}

impl Pool {
    /// Adopts TAPs found on the host at startup: all start idle (the daemon
    /// marks those of running VMs with `mark_in_use`).
    pub fn adopt(&mut self, prefix: &str, names: impl IntoIterator<Item = String>) {
        for name in names {
            if let Some(i) = index_of(prefix, &name) {
                self.next = self.next.max(i.saturating_add(1));
                if !self.free.contains(&name) && !self.in_use.contains(&name) {
                    self.free.push(name);
                }
            }
        }
        self.free.sort_by_key(|n| index_of(prefix, n));
    }

    /// Reserves a fresh name (never handed out before by this pool).
    pub fn reserve_name(&mut self, prefix: &str) -> String {
        let name = format!("{prefix}{}", self.next);
        self.next = self.next.saturating_add(1);
        name
    }

    /// Takes an idle TAP (lowest index first) and marks it in use.
    pub fn take_free(&mut self) -> Option<String> {
        if self.free.is_empty() {
            return None;
        }
        let name = self.free.remove(0);
        self.in_use.insert(name.clone());
        Some(name)
    }

    pub fn mark_in_use(&mut self, prefix: &str, name: &str) {
        self.free.retain(|n| n != name);
        self.in_use.insert(name.to_string());
        if let Some(i) = index_of(prefix, name) {
            self.next = self.next.max(i.saturating_add(1));
        }
    }

    /// Whether a released TAP should go back to the pool (else: delete it).
    pub fn should_keep(&self, size: usize) -> bool {
        !self.closed && self.free.len() < size
    }
}

/// Creates TAP `name` (persistent, no multi-queue, IPv6 off), attaches it
/// to `bridge` and brings it up; deletes it again if a step fails.
pub(crate) async fn create(ip: &Ip, name: &str, bridge: &str) -> Result<(), NetError> {
    ip.run(&["tuntap", "add", "dev", name, "mode", "tap"])
        .await?;
    let ready = match crate::sysctl::ipv6_off(ip.netns(), name).await {
        Ok(()) => attach(ip, name, bridge).await,
        Err(e) => Err(e),
    };
    if let Err(e) = ready {
        if let Err(del) = delete(ip, name).await {
            tracing::warn!(tap = name, error = %del, "could not delete half-made TAP");
        }
        return Err(e);
    }
    tracing::debug!(tap = name, bridge, "TAP created");
    Ok(())
}

/// Enslaves `name` to `bridge` and sets it up (idempotent).
pub(crate) async fn attach(ip: &Ip, name: &str, bridge: &str) -> Result<(), NetError> {
    ip.run(&["link", "set", "dev", name, "master", bridge, "up"])
        .await?;
    Ok(())
}

pub(crate) async fn delete(ip: &Ip, name: &str) -> Result<(), NetError> {
    ip.run(&["link", "del", "dev", name]).await?;
    tracing::debug!(tap = name, "TAP deleted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_of_accepts_prefix_plus_digits_only() {
        assert_eq!(index_of("hgtap", "hgtap12"), Some(12));
        assert_eq!(index_of("hgtap", "hgtap"), None);
        assert_eq!(index_of("hgtap", "hgtapx1"), None);
        assert_eq!(index_of("hgtap", "eth0"), None);
    }

    #[test]
    fn adopt_continues_numbering_after_highest_existing() {
        let mut p = Pool::default();
        p.adopt(
            "hgtap",
            [
                "hgtap3".to_string(),
                "hgtap0".to_string(),
                "eth0".to_string(),
            ],
        );
        assert_eq!(p.free, vec!["hgtap0", "hgtap3"]);
        assert_eq!(p.reserve_name("hgtap"), "hgtap4");
    }

    #[test]
    fn take_free_moves_lowest_to_in_use() {
        let mut p = Pool::default();
        p.adopt("hgtap", ["hgtap1".to_string(), "hgtap0".to_string()]);
        assert_eq!(p.take_free().as_deref(), Some("hgtap0"));
        assert!(p.in_use.contains("hgtap0"));
        assert_eq!(p.free, vec!["hgtap1"]);
    }

    #[test]
    fn mark_in_use_removes_from_free_and_bumps_next() {
        let mut p = Pool::default();
        p.adopt("hgtap", ["hgtap0".to_string()]);
        p.mark_in_use("hgtap", "hgtap0");
        p.mark_in_use("hgtap", "hgtap9");
        assert!(p.free.is_empty());
        assert_eq!(p.reserve_name("hgtap"), "hgtap10");
    }

    #[test]
    fn should_keep_only_while_below_size_and_open() {
        let mut p = Pool::default();
        p.free.push("hgtap0".into());
        assert!(p.should_keep(2));
        assert!(!p.should_keep(1));
        p.closed = true;
        assert!(!p.should_keep(2));
    }
}
