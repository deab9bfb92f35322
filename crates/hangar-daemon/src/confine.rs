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
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

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

/// Opens the path to every VM dir for confined VMMs, once at start. QEMU
/// reopens its drives by path, as the VM's uid, when it resumes after
/// saving a boot snapshot; behind 0700 dirs that reopen fails and so does
/// the boot. So `state_dir`, `vms/` and `snapshots/` are search-only for
/// others (0711: nothing can be listed, and everything in them is a 0600
/// file or a 0700 dir); each VM dir is then opened to its own VM only
/// ([`open_dir_to_vmm`]).
pub fn open_search_path(config: &Config) -> std::io::Result<()> {
    for dir in [
        config.state_dir.clone(),
        config.vms_dir(),
        config.snapshots_dir(),
    ] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))?;
    }
    Ok(())
}

/// Lets a confined VMM enter its own dir (a VM's or a prewarm's): 0710
/// root:<the VM's gid>, so that only this VM's VMM may enter it. Files
/// inside stay 0600, owned by root or by this VM's uid.
pub fn open_dir_to_vmm(dir: &Path, ids: RunAs) -> std::io::Result<()> {
    nix::unistd::chown(
        dir,
        Some(nix::unistd::Uid::from_raw(0)),
        Some(nix::unistd::Gid::from_raw(ids.gid)),
    )?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o710))
}

/// Start-up check: with confinement on, every dir above `state_dir` must be
/// searchable by others, or no confined VMM could reach its VM dir (see
/// [`open_search_path`]) and every boot would fail late with a reopen error.
pub fn check_state_dir_reachable(config: &Config) -> Result<(), String> {
    if !config.vmm.confine {
        return Ok(());
    }
    for above in config.state_dir.ancestors().skip(1) {
        let Ok(meta) = std::fs::metadata(above) else {
            continue; // made later, by create_private_dir
        };
        if meta.permissions().mode() & 0o001 == 0 {
            return Err(format!(
                "confined VMMs run as their own uids and must reach state_dir {} by path, but {} is not searchable by others (mode {:o}): `chmod o+x {}`, move state_dir, or set [vmm] confine = false (debugging only)",
                config.state_dir.display(),
                above.display(),
                meta.permissions().mode() & 0o7777,
                above.display()
            ));
        }
    }
    Ok(())
}

/// The shared mode bits the start-up repair lets an entry of the state dir
/// keep: exactly what [`open_search_path`] and [`open_dir_to_vmm`] grant, and only while VMMs are
/// confined.
pub fn granted_bits(config: &Config, path: &Path, meta: &std::fs::Metadata) -> u32 {
    let v = &config.vmm;
    if !v.confine || !meta.is_dir() {
        return 0;
    }
    let (vms, snapshots) = (config.vms_dir(), config.snapshots_dir());
    if path == config.state_dir || path == vms || path == snapshots {
        return 0o011;
    }
    let in_range = u64::from(meta.gid()) >= u64::from(v.uid_base)
        && u64::from(meta.gid()) < u64::from(v.uid_base) + u64::from(v.uid_count);
    let parent = path.parent();
    if meta.uid() == 0
        && in_range
        && (parent == Some(vms.as_path()) || parent == Some(snapshots.as_path()))
    {
        return 0o010;
    }
    0
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
