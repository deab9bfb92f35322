//! What guests may reach of the host: the `inet hangar` table (ours alone;
//! no other table is ever read or changed). Traffic arriving from the
//! bridge is dropped on input unless it answers a connection the host
//! opened (the daemon's SSH to guests) or goes to a host service listed in
//! [`HOST_SERVICES_FOR_GUESTS`]. Forwarded guest traffic to link-local
//! destinations (169.254.0.0/16, which holds the cloud metadata address
//! 169.254.169.254, and fe80::/10) is dropped, and so is traffic routed
//! from the bridge back onto it when VMs are isolated from each other.
//! Applied in both modes: in the root namespace and inside the daemon's
//! own namespace. Re-applying replaces the table atomically.

use std::net::Ipv4Addr;

/// Protocol of a host service guests may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn nft(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// Host services guests may reach on the gateway address. Guests get a
/// static address from the config drive (no DHCP), so today: none.
/// The VM DNS server (`NAME.hangar`) adds `(Proto::Udp, 53)` and
/// `(Proto::Tcp, 53)` here when it exists.
pub const HOST_SERVICES_FOR_GUESTS: &[(Proto, u16)] = &[];

/// Link-local IPv4 destinations guests must not reach through the host
/// (169.254.169.254, the cloud metadata service, is one of them).
pub const LINK_LOCAL_V4: &str = "169.254.0.0/16";
/// Link-local IPv6 destinations.
pub const LINK_LOCAL_V6: &str = "fe80::/10";

/// The complete `nft -f` script for `inet hangar`: creates the table (so
/// the delete cannot fail), deletes it, and defines it afresh, in one
/// transaction.
pub fn ruleset(bridge: &str, gateway: Ipv4Addr, vm_to_vm: bool) -> String {
    let services: String = HOST_SERVICES_FOR_GUESTS
        .iter()
        .map(|(proto, port)| {
            format!(
                "\t\tip daddr {gateway} {} dport {port} accept\n",
                proto.nft()
            )
        })
        .collect();
    let hairpin = if vm_to_vm {
        String::new()
    } else {
        format!("\t\tiifname \"{bridge}\" oifname \"{bridge}\" drop\n")
    };
    format!(
        "table inet hangar {{}}\n\
         delete table inet hangar\n\
         table inet hangar {{\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority filter; policy accept;\n\
         \t\tiifname \"{bridge}\" jump from_guests\n\
         \t}}\n\
         \tchain from_guests {{\n\
         \t\tct state established,related accept\n\
         {services}\
         \t\tdrop\n\
         \t}}\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t\tiifname \"{bridge}\" ip daddr {LINK_LOCAL_V4} drop\n\
         \t\tiifname \"{bridge}\" ip6 daddr {LINK_LOCAL_V6} drop\n\
         {hairpin}\
         \t}}\n\
         }}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(vm_to_vm: bool) -> String {
        ruleset("hgbr0", Ipv4Addr::new(10, 77, 0, 1), vm_to_vm)
    }

    #[test]
    fn input_from_the_bridge_accepts_only_replies_then_drops() {
        let t = text(false);
        assert!(t.contains("iifname \"hgbr0\" jump from_guests"), "{t}");
        let chain = t.split("chain from_guests {").nth(1).unwrap();
        let chain = chain.split('}').next().unwrap();
        let rules: Vec<&str> = chain
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(
            rules,
            ["ct state established,related accept", "drop"],
            "{t}"
        );
    }

    #[test]
    fn forward_drops_link_local_and_metadata_destinations() {
        let t = text(true);
        assert!(
            t.contains("iifname \"hgbr0\" ip daddr 169.254.0.0/16 drop"),
            "{t}"
        );
        assert!(
            t.contains("iifname \"hgbr0\" ip6 daddr fe80::/10 drop"),
            "{t}"
        );
    }

    #[test]
    fn isolated_vms_cannot_hairpin_through_the_gateway() {
        assert!(text(false).contains("iifname \"hgbr0\" oifname \"hgbr0\" drop"));
        assert!(!text(true).contains("oifname \"hgbr0\" drop"));
    }

    #[test]
    fn ruleset_replaces_the_table_atomically() {
        assert!(text(false)
            .starts_with("table inet hangar {}\ndelete table inet hangar\ntable inet hangar {\n"));
    }
}
