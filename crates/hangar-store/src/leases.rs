//! IP leases: which guest address belongs to which VM. Allocation itself
//! happens inside `Store::insert_vm_with_lease` so that picking an address
//! and recording it are one transaction.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::error::{Result, StoreError};
use crate::store::Store;

/// The lowest address of `subnet` that is neither leased nor reserved. The
/// network address, the first host (the bridge's gateway address) and the
/// broadcast address are never handed out.
pub fn lowest_free_ip(
    subnet: Ipv4Net,
    leased: &HashSet<Ipv4Addr>,
    reserved: &[Ipv4Addr],
) -> Option<Ipv4Addr> {
    let network = u32::from(subnet.network());
    let broadcast = u32::from(subnet.broadcast());
    (network.saturating_add(2)..broadcast)
        .map(Ipv4Addr::from)
        .find(|ip| !leased.contains(ip) && !reserved.contains(ip))
}

/// The guest MAC for `ip`: the locally administered prefix `02:48:47`
/// ("HG") followed by the last three bytes of the address, so it is unique
/// within any subnet of /8 or smaller and stable across restarts.
pub fn mac_for_ip(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("02:48:47:{:02x}:{:02x}:{:02x}", o[1], o[2], o[3])
}

impl Store {
    /// Every lease as (address, VM id), ordered by address.
    pub fn list_leases(&self) -> Result<Vec<(Ipv4Addr, String)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT ip, vm_id FROM ip_leases")?;
        let rows = stmt.query_map([], |r| {
            Ok((crate::vms::parse_ip(r, 0)?, r.get::<_, String>(1)?))
        })?;
        let mut leases = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        leases.sort();
        Ok(leases)
    }
}

/// The leased addresses, read inside the allocating transaction.
pub(crate) fn leased_ips(tx: &rusqlite::Transaction<'_>) -> Result<HashSet<Ipv4Addr>> {
    let mut stmt = tx.prepare_cached("SELECT ip FROM ip_leases")?;
    let rows = stmt.query_map([], |r| crate::vms::parse_ip(r, 0))?;
    rows.collect::<rusqlite::Result<HashSet<_>>>()
        .map_err(StoreError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn first_free_skips_network_and_gateway() {
        let ip = lowest_free_ip(net("10.20.0.0/24"), &HashSet::new(), &[]);
        assert_eq!(ip, Some(Ipv4Addr::new(10, 20, 0, 2)));
    }

    #[test]
    fn host_bits_in_subnet_are_ignored() {
        let ip = lowest_free_ip(net("10.20.0.77/24"), &HashSet::new(), &[]);
        assert_eq!(ip, Some(Ipv4Addr::new(10, 20, 0, 2)));
    }

    #[test]
    fn leased_and_reserved_addresses_are_skipped() {
        let leased = HashSet::from([Ipv4Addr::new(10, 0, 0, 2)]);
        let ip = lowest_free_ip(net("10.0.0.0/24"), &leased, &[Ipv4Addr::new(10, 0, 0, 3)]);
        assert_eq!(ip, Some(Ipv4Addr::new(10, 0, 0, 4)));
    }

    #[test]
    fn broadcast_is_never_handed_out() {
        // /30: .0 network, .1 gateway, .2 host, .3 broadcast.
        let leased = HashSet::from([Ipv4Addr::new(10, 0, 0, 2)]);
        assert_eq!(lowest_free_ip(net("10.0.0.0/30"), &leased, &[]), None);
    }

    #[test]
    fn tiny_subnets_have_no_guest_addresses() {
        for s in ["10.0.0.0/31", "10.0.0.0/32", "255.255.255.255/32"] {
            assert_eq!(lowest_free_ip(net(s), &HashSet::new(), &[]), None, "{s}");
        }
    }

    #[test]
    fn mac_embeds_last_three_ip_bytes() {
        assert_eq!(
            mac_for_ip(Ipv4Addr::new(10, 1, 2, 254)),
            "02:48:47:01:02:fe"
        );
    }
}
