//! Network configuration and its validation (done once, before any command
//! runs, so a bad name never leaves half a setup behind).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::NetError;

/// Linux interface names are at most IFNAMSIZ-1 = 15 bytes.
pub const IFNAME_MAX: usize = 15;
/// Digits reserved for the TAP index (up to 99999 TAPs).
const TAP_INDEX_DIGITS: usize = 5;

/// How the daemon's host networking is laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// Dedicated network namespace (`/run/netns/<name>`), or `None` for the
    /// root namespace.
    pub netns: Option<String>,
    /// Bridge name, e.g. "hgbr0".
    pub bridge: String,
    /// Guest subnet; the first host address is the gateway on the bridge.
    pub subnet: Ipv4Net,
    /// Masquerade guest traffic (root-namespace mode only).
    pub nat: bool,
    /// How many idle TAPs to keep ready.
    pub tap_pool_size: usize,
    /// TAP name prefix, e.g. "hgtap"; names are prefix + index.
    pub tap_prefix: String,
    /// Let guests reach each other over the bridge (else: isolated).
    pub vm_to_vm: bool,
}

impl NetConfig {
    /// The gateway (bridge) address: the first host address of the subnet.
    /// `None` for /31 and /32, which have no room for a gateway and a
    /// guest. (Guest addresses and MACs are the store's: it leases them.)
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        if self.subnet.prefix_len() > 30 {
            return None;
        }
        Some(Ipv4Addr::from(u32::from(self.subnet.network()) + 1))
    }

    /// Checks names and subnet so every later command can succeed.
    pub fn validate(&self) -> Result<(), NetError> {
        check_ifname("bridge", &self.bridge, IFNAME_MAX)?;
        check_ifname(
            "tap_prefix",
            &self.tap_prefix,
            IFNAME_MAX - TAP_INDEX_DIGITS,
        )?;
        if self.bridge.starts_with(&self.tap_prefix) {
            return Err(NetError::Config(format!(
                "bridge name {:?} starts with the TAP prefix {:?}; TAP cleanup would delete it",
                self.bridge, self.tap_prefix
            )));
        }
        if self.subnet.prefix_len() > 30 {
            return Err(NetError::Config(format!(
                "subnet {} is too small; use /30 or larger (gateway + at least one guest)",
                self.subnet
            )));
        }
        if let Some(ns) = &self.netns {
            if ns.is_empty() || ns.contains('/') || ns == "." || ns == ".." {
                return Err(NetError::Config(format!(
                    "netns name {ns:?} is not a valid file name"
                )));
            }
        }
        Ok(())
    }
}

fn check_ifname(what: &str, name: &str, max: usize) -> Result<(), NetError> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if name.is_empty() || name.len() > max || !ok_chars {
        return Err(NetError::Config(format!(
            "{what} {name:?} must be 1-{max} characters of [A-Za-z0-9_-] (interface names are limited to {IFNAME_MAX})"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> NetConfig {
        NetConfig {
            netns: Some("hangar".into()),
            bridge: "hgbr0".into(),
            subnet: "10.77.0.0/24".parse().unwrap(),
            nat: false,
            tap_pool_size: 2,
            tap_prefix: "hgtap".into(),
            vm_to_vm: false,
        }
    }

    #[test]
    fn gateway_is_the_first_host_whatever_the_host_bits() {
        let c = NetConfig {
            subnet: "10.77.0.99/24".parse().unwrap(),
            ..cfg()
        };

        assert_eq!(c.gateway(), Some(Ipv4Addr::new(10, 77, 0, 1)));
    }

    #[test]
    fn slash31_and_slash32_have_no_gateway() {
        for subnet in ["10.0.0.0/31", "10.0.0.1/32"] {
            let c = NetConfig {
                subnet: subnet.parse().unwrap(),
                ..cfg()
            };

            assert_eq!(c.gateway(), None, "{subnet}");
        }
    }

    #[test]
    fn default_like_config_is_valid() {
        assert!(cfg().validate().is_ok());
    }

    #[test]
    fn tap_prefix_leaving_no_room_for_index_is_rejected() {
        let c = NetConfig {
            tap_prefix: "abcdefghijk".into(),
            ..cfg()
        };
        assert!(matches!(c.validate(), Err(NetError::Config(m)) if m.contains("tap_prefix")));
    }

    #[test]
    fn bridge_name_over_15_chars_is_rejected() {
        let c = NetConfig {
            bridge: "a-very-long-bridge".into(),
            ..cfg()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn bridge_sharing_tap_prefix_is_rejected() {
        let c = NetConfig {
            bridge: "hgtapbr".into(),
            ..cfg()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn slash31_subnet_is_rejected() {
        let c = NetConfig {
            subnet: "10.0.0.0/31".parse().unwrap(),
            ..cfg()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn netns_with_slash_is_rejected() {
        let c = NetConfig {
            netns: Some("../etc".into()),
            ..cfg()
        };
        assert!(c.validate().is_err());
    }
}
