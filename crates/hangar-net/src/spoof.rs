//! Per-TAP anti-spoofing and VM-to-VM isolation: the `bridge hangar` table
//! (ours alone). Every frame a TAP sends into the bridge goes through the
//! `taps` verdict map: a TAP bound to a VM jumps to its own chain, which
//! accepts only the VM's MAC as source and, for IPv4 and ARP, the VM's IP
//! as sender; every other frame (other ether types, VLAN tags and IPv6
//! included) is dropped. A TAP with no binding (idle in the pool, or held
//! by a boot-snapshot prewarm that needs no network) sends nothing. With
//! `vm_to_vm = false` the bridge drops frames from one TAP to another.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::NetError;

/// A unicast Ethernet address, parsed so that only well-formed text ever
/// reaches an nft script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mac([u8; 6]);

impl FromStr for Mac {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || NetError::Config(format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"));
        let mut bytes = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut bytes {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *b = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() || bytes[0] & 1 == 1 {
            return Err(bad()); // Too long, or a multicast address.
        }
        Ok(Mac(bytes))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// The chain holding one TAP's rules.
fn chain_of(tap: &str) -> String {
    format!("tap_{tap}")
}

/// The complete `nft -f` script for `bridge hangar`, replacing the table
/// atomically (bindings included: the daemon binds the TAPs of running VMs
/// again when it adopts them).
pub fn ruleset(tap_prefix: &str, vm_to_vm: bool) -> String {
    let isolate = if vm_to_vm {
        String::new()
    } else {
        format!("\t\tiifname \"{tap_prefix}*\" oifname \"{tap_prefix}*\" drop\n")
    };
    format!(
        "table bridge hangar {{}}\n\
         delete table bridge hangar\n\
         table bridge hangar {{\n\
         \tmap taps {{\n\
         \t\ttype ifname : verdict\n\
         \t}}\n\
         \tchain prerouting {{\n\
         \t\ttype filter hook prerouting priority filter; policy accept;\n\
         \t\tiifname vmap @taps\n\
         \t\tiifname \"{tap_prefix}*\" drop\n\
         \t}}\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         {isolate}\
         \t}}\n\
         }}\n"
    )
}

/// Binds `tap` to the VM with `mac` and `ip` (replacing any earlier
/// binding of that TAP), in one transaction.
pub fn bind_script(tap: &str, mac: Mac, ip: Ipv4Addr) -> String {
    let chain = chain_of(tap);
    let rule = |body: &str| format!("add rule bridge hangar {chain} {body}\n");
    let mut s = format!("add chain bridge hangar {chain}\nflush chain bridge hangar {chain}\n");
    s += &rule(&format!("ether saddr != {mac} drop"));
    s += &rule(&format!(
        "ether type arp arp htype 1 arp ptype ip arp hlen 6 arp plen 4 \
         arp saddr ether {mac} arp saddr ip {ip} accept"
    ));
    s += &rule(&format!("ether type ip ip saddr {ip} accept"));
    s += &rule("drop");
    s += &format!("add element bridge hangar taps {{ \"{tap}\" : jump {chain} }}\n");
    s
}

/// Removes `tap`'s binding; idempotent (the add-then-delete pattern makes
/// the deletes succeed whether or not the binding existed).
pub fn unbind_script(tap: &str) -> String {
    let chain = chain_of(tap);
    format!(
        "add chain bridge hangar {chain}\n\
         add element bridge hangar taps {{ \"{tap}\" : jump {chain} }}\n\
         delete element bridge hangar taps {{ \"{tap}\" }}\n\
         flush chain bridge hangar {chain}\n\
         delete chain bridge hangar {chain}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parses_and_prints_lowercase() {
        let m: Mac = "02:48:47:0A:bc:01".parse().unwrap();
        assert_eq!(m.to_string(), "02:48:47:0a:bc:01");
    }

    #[test]
    fn mac_rejects_junk_that_could_reach_a_script() {
        for bad in [
            "",
            "02:48:47:00:00",
            "02:48:47:00:00:00:00",
            "02:48:47:00:00:0g",
            "02:48:47:00:00:0",
            "02:48:47:00:00:00 drop",
            "01:00:5e:00:00:01",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn unbound_taps_are_dropped_after_the_map() {
        let t = ruleset("hgtap", true);
        let vmap = t.find("iifname vmap @taps").unwrap();
        let drop = t.find("iifname \"hgtap*\" drop").unwrap();
        assert!(vmap < drop, "{t}");
    }

    #[test]
    fn isolation_drops_tap_to_tap_only_when_vm_to_vm_is_off() {
        let rule = "iifname \"hgtap*\" oifname \"hgtap*\" drop";
        assert!(ruleset("hgtap", false).contains(rule));
        assert!(!ruleset("hgtap", true).contains(rule));
    }

    #[test]
    fn bind_allows_only_own_mac_and_ip_then_drops() {
        let s = bind_script(
            "hgtap3",
            "02:48:47:00:00:05".parse().unwrap(),
            Ipv4Addr::new(10, 77, 0, 5),
        );
        let rules: Vec<&str> = s
            .lines()
            .filter_map(|l| l.strip_prefix("add rule bridge hangar tap_hgtap3 "))
            .collect();
        assert_eq!(
            rules,
            [
                "ether saddr != 02:48:47:00:00:05 drop",
                "ether type arp arp htype 1 arp ptype ip arp hlen 6 arp plen 4 \
                 arp saddr ether 02:48:47:00:00:05 arp saddr ip 10.77.0.5 accept",
                "ether type ip ip saddr 10.77.0.5 accept",
                "drop",
            ]
        );
        assert!(s.starts_with("add chain bridge hangar tap_hgtap3\nflush chain"));
        assert!(s.ends_with("add element bridge hangar taps { \"hgtap3\" : jump tap_hgtap3 }\n"));
    }

    #[test]
    fn unbind_removes_the_element_before_the_chain() {
        let s = unbind_script("hgtap3");
        let el = s.find("delete element").unwrap();
        let ch = s.find("delete chain").unwrap();
        assert!(el < ch, "{s}");
    }
}
