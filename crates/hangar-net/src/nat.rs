//! Outbound NAT for guests in root-namespace mode: an nftables table of our
//! own (`ip hangar`) that masquerades the guest subnet out of every interface
//! except the bridge, plus IPv4 forwarding. Applied atomically with `nft -f -`;
//! re-applying replaces the table, so it is idempotent. Never used in
//! namespace mode. The end-to-end test applies it for real with the daemon
//! itself running inside a namespace the test made, never on the host.

use ipnet::Ipv4Net;

use crate::NetError;

/// The complete `nft -f` script. It creates the table (so the delete cannot
/// fail), deletes it, and defines it afresh, all in one transaction.
pub fn ruleset(subnet: Ipv4Net, bridge: &str) -> String {
    let subnet = subnet.trunc();
    format!(
        "table ip hangar {{}}\n\
         delete table ip hangar\n\
         table ip hangar {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {subnet} oifname != \"{bridge}\" masquerade\n\
         \t}}\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t\tiifname \"{bridge}\" ip saddr {subnet} accept\n\
         \t\toifname \"{bridge}\" ct state established,related accept\n\
         \t}}\n\
         }}\n"
    )
}

/// Applies [`ruleset`] and turns on IPv4 forwarding. Root namespace only.
pub(crate) async fn apply(subnet: Ipv4Net, bridge: &str) -> Result<(), NetError> {
    crate::nft::Nft::new(None)
        .apply(&ruleset(subnet, bridge))
        .await?;
    tokio::fs::write("/proc/sys/net/ipv4/ip_forward", "1\n")
        .await
        .map_err(|source| NetError::Io {
            action: "enable IPv4 forwarding (/proc/sys/net/ipv4/ip_forward)".to_string(),
            source,
        })?;
    tracing::info!(%subnet, bridge, "NAT enabled (nft table ip hangar)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_masquerades_subnet_out_of_non_bridge_interfaces() {
        let text = ruleset("10.77.0.0/24".parse().unwrap(), "hgbr0");
        assert!(
            text.contains("ip saddr 10.77.0.0/24 oifname != \"hgbr0\" masquerade"),
            "{text}"
        );
        assert!(
            text.contains("type nat hook postrouting priority srcnat;"),
            "{text}"
        );
    }

    #[test]
    fn ruleset_replaces_existing_table_atomically() {
        let text = ruleset("10.77.0.0/24".parse().unwrap(), "hgbr0");
        assert!(
            text.starts_with("table ip hangar {}\ndelete table ip hangar\ntable ip hangar {\n"),
            "{text}"
        );
    }

    #[test]
    fn ruleset_uses_network_address_of_subnet() {
        let text = ruleset("10.77.0.9/24".parse().unwrap(), "hgbr0");
        assert!(text.contains("ip saddr 10.77.0.0/24 "), "{text}");
    }
}
