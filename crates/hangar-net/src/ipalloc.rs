//! Guest address and MAC helpers. Pure functions: the store decides which
//! addresses are taken, these only pick the next one.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// The gateway (bridge) address: the first host address of the subnet.
/// `None` for /31 and /32, which have no room for a gateway and a guest.
pub fn gateway(subnet: Ipv4Net) -> Option<Ipv4Addr> {
    if subnet.prefix_len() > 30 {
        return None;
    }
    Some(Ipv4Addr::from(u32::from(subnet.network()) + 1))
}

/// Lowest free host address in `subnet`, skipping the network address, the
/// gateway (first host) and the broadcast address; `None` when full.
pub fn next_free(subnet: Ipv4Net, used: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let gw = u32::from(gateway(subnet)?);
    let last = u32::from(subnet.broadcast()) - 1;
    (gw + 1..=last)
        .map(Ipv4Addr::from)
        .find(|ip| !used.contains(ip))
}

/// A locally-administered unicast MAC derived from the whole IPv4 address
/// (`02:48:` + the four octets in hex), so distinct IPs never share a MAC.
pub fn mac_for(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("02:48:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn next_free_in_empty_subnet_skips_network_and_gateway() {
        assert_eq!(
            next_free(net("10.77.0.0/24"), &HashSet::new()),
            Some(Ipv4Addr::new(10, 77, 0, 2))
        );
    }

    #[test]
    fn next_free_returns_lowest_gap() {
        let used: HashSet<_> = [Ipv4Addr::new(10, 77, 0, 2), Ipv4Addr::new(10, 77, 0, 4)].into();
        assert_eq!(
            next_free(net("10.77.0.0/24"), &used),
            Some(Ipv4Addr::new(10, 77, 0, 3))
        );
    }

    #[test]
    fn next_free_never_returns_broadcast() {
        let used: HashSet<_> = (2..=253).map(|i| Ipv4Addr::new(10, 77, 0, i)).collect();
        assert_eq!(
            next_free(net("10.77.0.0/24"), &used),
            Some(Ipv4Addr::new(10, 77, 0, 254))
        );
        let mut full = used;
        full.insert(Ipv4Addr::new(10, 77, 0, 254));
        assert_eq!(next_free(net("10.77.0.0/24"), &full), None);
    }

    #[test]
    fn next_free_in_slash30_has_exactly_one_guest() {
        let subnet = net("192.168.5.4/30");
        assert_eq!(
            next_free(subnet, &HashSet::new()),
            Some(Ipv4Addr::new(192, 168, 5, 6))
        );
        let used: HashSet<_> = [Ipv4Addr::new(192, 168, 5, 6)].into();
        assert_eq!(next_free(subnet, &used), None);
    }

    #[test]
    fn next_free_in_slash31_and_slash32_is_none() {
        assert_eq!(next_free(net("10.0.0.0/31"), &HashSet::new()), None);
        assert_eq!(next_free(net("10.0.0.1/32"), &HashSet::new()), None);
    }

    #[test]
    fn next_free_ignores_host_bits_of_subnet() {
        assert_eq!(
            next_free(net("10.77.0.99/24"), &HashSet::new()),
            Some(Ipv4Addr::new(10, 77, 0, 2))
        );
    }

    #[test]
    fn gateway_is_first_host() {
        assert_eq!(
            gateway(net("10.77.0.0/24")),
            Some(Ipv4Addr::new(10, 77, 0, 1))
        );
    }

    #[test]
    fn mac_for_encodes_all_octets() {
        assert_eq!(mac_for(Ipv4Addr::new(10, 77, 0, 2)), "02:48:0a:4d:00:02");
    }

    #[test]
    fn mac_for_is_locally_administered_unicast() {
        let first = u8::from_str_radix(&mac_for(Ipv4Addr::new(172, 16, 9, 200))[..2], 16).unwrap();
        assert_eq!(first & 0b11, 0b10);
    }

    #[test]
    fn mac_for_differs_for_ips_differing_only_in_first_octet() {
        assert_ne!(
            mac_for(Ipv4Addr::new(10, 1, 2, 3)),
            mac_for(Ipv4Addr::new(11, 1, 2, 3))
        );
    }
}
