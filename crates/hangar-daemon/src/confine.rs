//! Which uid/gid each VM's VMM runs as ([`hangar_config::VmmConfig`]'s
//! `confine`, `uid_base`, `uid_count`).
//!
//! The ids are derived, not stored: VM n of the subnet (its address's
//! offset from the network address) runs as `uid_base + n`. A VM's address
//! is leased for its whole life and no two VMs share one, so the uid is
//! unique among this daemon's VMs and stable across restarts, needs no
//! store column, and is free again exactly when the VM (and its files) are
//! gone. Offset 0, the network address, is never leased: the throw-away
//! boot snapshot VM of a pull (one at a time, under the image lock) uses
//! it. Config validation makes the range cover the whole subnet.

use std::net::Ipv4Addr;

use hangar_config::Config;
use hangar_vmm::RunAs;

/// The ids the VMM of the VM at `ip` runs as; `None` with confinement off.
pub fn vm_run_as(config: &Config, ip: Ipv4Addr) -> Option<RunAs> {
    let offset = u32::from(ip).checked_sub(u32::from(config.network.subnet.network()))?;
    run_as_offset(config, offset)
}

/// The ids of the boot snapshot VM a pull runs (offset 0).
pub fn prewarm_run_as(config: &Config) -> Option<RunAs> {
    run_as_offset(config, 0)
}

fn run_as_offset(config: &Config, offset: u32) -> Option<RunAs> {
    let v = &config.vmm;
    if !v.confine || offset >= v.uid_count {
        return None;
    }
    let id = v.uid_base.checked_add(offset)?;
    Some(RunAs { uid: id, gid: id })
}

/// Start-up check: no user of /etc/passwd and no group of /etc/group has
/// an id in the VMM range (its files would be open to the VMs' processes).
pub fn check_uid_range_free(config: &Config) -> Result<(), String> {
    let v = &config.vmm;
    if !v.confine {
        return Ok(());
    }
    for (file, what) in [("/etc/passwd", "user"), ("/etc/group", "group")] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if let Some((name, id)) = ids_in_range(&text, v.uid_base, v.uid_count).first() {
            return Err(format!(
                "{what} {name:?} ({file}) has id {id}, inside the VMM id range [vmm] uid_base = {} \
                 .. + uid_count = {}: VMMs would run as it; move uid_base to a free range \
                 (e.g. above every id in {file})",
                v.uid_base, v.uid_count
            ));
        }
    }
    Ok(())
}

/// `(name, id)` of the entries of a passwd/group file (`name:x:id:...`)
/// whose id lies in `base .. base + count`.
fn ids_in_range(text: &str, base: u32, count: u32) -> Vec<(String, u32)> {
    let end = u64::from(base) + u64::from(count);
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let id: u32 = f.nth(1)?.trim().parse().ok()?;
            (u64::from(id) >= u64::from(base) && u64::from(id) < end)
                .then(|| (name.to_string(), id))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(text, std::path::Path::new("test.toml")).unwrap()
    }

    #[test]
    fn each_address_of_the_subnet_has_its_own_ids() {
        let c = config("[network]\nsubnet = \"10.9.0.0/24\"\n");
        let ip = |last| Ipv4Addr::new(10, 9, 0, last);
        assert_eq!(
            vm_run_as(&c, ip(2)),
            Some(RunAs {
                uid: 200_002,
                gid: 200_002
            })
        );
        assert_ne!(vm_run_as(&c, ip(2)), vm_run_as(&c, ip(3)));
        assert_eq!(prewarm_run_as(&c).map(|r| r.uid), Some(200_000));
        assert_eq!(vm_run_as(&c, Ipv4Addr::new(10, 8, 0, 2)), None);
    }

    #[test]
    fn confinement_off_gives_no_ids() {
        let c = config("[vmm]\nconfine = false\n");
        assert_eq!(vm_run_as(&c, Ipv4Addr::new(10, 213, 0, 2)), None);
        assert_eq!(prewarm_run_as(&c), None);
        assert_eq!(check_uid_range_free(&c), Ok(()));
    }

    #[test]
    fn host_ids_inside_the_range_are_found() {
        let passwd = "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n\
                      clash:x:200010:100::/:/bin/sh\nbroken line\n";
        assert_eq!(
            ids_in_range(passwd, 200_000, 65_536),
            [("clash".to_string(), 200_010)]
        );
        assert!(ids_in_range(passwd, 300_000, 10).is_empty());
        assert_eq!(ids_in_range(passwd, 65_534, 1).len(), 1);
    }
}
