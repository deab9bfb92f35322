//! Running `nft -f -` scripts in the configured namespace. `nft` has no
//! `-n NS` flag, so in namespace mode it runs under `ip netns exec NS`:
//! nothing here can touch the host's ruleset when a namespace is set.

use crate::cmd;
use crate::NetError;

/// Feeds scripts to `nft` inside one namespace (or the root namespace).
#[derive(Debug, Clone)]
pub(crate) struct Nft {
    netns: Option<String>,
}

impl Nft {
    pub(crate) fn new(netns: Option<&str>) -> Self {
        Nft {
            netns: netns.map(str::to_string),
        }
    }

    /// `[ip netns exec NS] nft -f -`
    pub(crate) fn argv(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(ns) = &self.netns {
            v.extend(["ip", "netns", "exec", ns.as_str()].map(str::to_string));
        }
        v.extend(["nft", "-f", "-"].map(str::to_string));
        v
    }

    /// Applies `script` as one atomic transaction.
    pub(crate) async fn apply(&self, script: &str) -> Result<(), NetError> {
        cmd::run(&self.argv(), Some(script)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_in_a_namespace_goes_through_ip_netns_exec() {
        assert_eq!(
            Nft::new(Some("hg")).argv(),
            vec!["ip", "netns", "exec", "hg", "nft", "-f", "-"]
        );
    }

    #[test]
    fn argv_without_namespace_is_plain_nft() {
        assert_eq!(Nft::new(None).argv(), vec!["nft", "-f", "-"]);
    }
}
