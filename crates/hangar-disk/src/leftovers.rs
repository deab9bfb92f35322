//! Finding loop and dm devices hangar may have left behind (daemon crash,
//! failed teardown), for `hangar doctor`. This only lists candidates; the
//! caller knows which VMs run and decides what is really orphaned.

use std::path::Path;

use crate::dm::ops::DmOps;
use crate::dm::real::HostOps;

/// Lists `hangar-*` dm devices and loop devices whose backing file is under
/// `state_dir`, as one human-readable line each (with the command that
/// removes it). Loop devices held by a dm device with autoclear set are not
/// listed: they go away with that dm device, which is listed itself. A
/// listing that fails becomes a line saying so. dm devices are only looked
/// for when `/dev/mapper/control` exists.
pub fn find_leftovers(state_dir: &Path) -> Vec<String> {
    leftovers_with(
        &HostOps,
        state_dir,
        Path::new("/dev/mapper/control").exists(),
    )
}

pub(crate) fn leftovers_with(ops: &dyn DmOps, state_dir: &Path, with_dm: bool) -> Vec<String> {
    let mut found = Vec::new();
    if with_dm {
        match ops.dm_list() {
            Ok(names) => found.extend(names.into_iter().filter(|n| n.starts_with("hangar-")).map(
                |n| format!("dm device {n} (remove with `dmsetup remove {n}` if no VM uses it)"),
            )),
            Err(e) => found.push(format!("could not list dm devices: {e}")),
        }
    }
    let canonical = state_dir.canonicalize().ok();
    let under =
        |p: &Path| p.starts_with(state_dir) || canonical.as_ref().is_some_and(|c| p.starts_with(c));
    match ops.loop_list() {
        Ok(loops) => found.extend(
            loops
                .into_iter()
                .filter(|l| !l.held_with_autoclear && under(&l.backing_file))
                .map(|l| {
                    format!(
                        "loop device {} backed by {} (detach with `losetup -d {}` if no VM uses it)",
                        l.device,
                        l.backing_file.display(),
                        l.device
                    )
                }),
        ),
        Err(e) => found.push(format!("could not list loop devices: {e}")),
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dm::ops::DmOps;

    /// Real loop device on a file in a temp dir (needs root).
    #[test]
    #[ignore = "needs root: loop devices"]
    fn find_leftovers_lists_loop_backed_by_file_under_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("disk.ext4");
        std::fs::File::create(&file)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let dev = HostOps.loop_attach(&file, false).unwrap();

        let found = find_leftovers(dir.path());
        HostOps.loop_detach(&dev).unwrap();
        let after = find_leftovers(dir.path());

        assert!(
            found
                .iter()
                .any(|l| l.contains(&dev) && l.contains("disk.ext4")),
            "{found:?}"
        );
        assert!(!after.iter().any(|l| l.contains(&dev)), "{after:?}");
    }

    #[test]
    fn leftovers_ignore_loops_outside_state_dir_and_foreign_dm_names() {
        let fake = crate::dm::fake::FakeOps::new();
        fake.preattach(Path::new("/elsewhere/file"), false);
        fake.precreate("vg0-root", "0 8 zero");
        fake.precreate("hangar-abc-disk", "0 8 zero");

        let found = leftovers_with(&fake, Path::new("/var/lib/hangar"), true);

        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("dm device hangar-abc-disk"),
            "{found:?}"
        );
    }

    #[test]
    fn leftovers_skip_autoclear_loops_held_by_dm() {
        let fake = crate::dm::fake::FakeOps::new();
        let dev = fake.preattach(Path::new("/s/vms/a/disk.ext4"), false);
        fake.precreate("hangar-a-disk", &format!("0 8 linear {dev} 0"));
        fake.loop_detach(&dev).unwrap(); // held: becomes autoclear

        let found = leftovers_with(&fake, Path::new("/s"), true);

        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("hangar-a-disk"), "{found:?}");
    }
}
