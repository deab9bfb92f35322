//! Repair at daemon start: tightens what older versions (or a tool run
//! under a loose umask) left readable by others under a Hangar dir.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::{set_mode_nofollow, SHARED_BITS};

/// What one repair walk did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RepairCount {
    /// Files and dirs whose mode was tightened.
    pub fixed: usize,
    /// Entries that could not be read or changed (logged, walk goes on).
    pub failed: usize,
}

/// Walks `root` and clears the group and other bits (and setuid, setgid,
/// sticky) of every dir and file in it, `root` included: a 0755 dir
/// becomes 0700, a 0644 file 0600. Owners are kept (a VM's files may
/// belong to the uid its VMM runs as).
///
/// Never follows a symlink (links are skipped, and chmod goes through an
/// `O_NOFOLLOW` handle). Does not enter:
/// - a dir on another filesystem (a mount point: a leftover `/proc` of a
///   crashed image build must not be chmodded),
/// - a dir whose name starts with `.` (`.pull-*`, `.build-*`,
///   `.prewarm-*`: scratch that may hold a guest's tree being built,
///   whose modes belong to the guest; the scratch dir itself is tightened,
///   which already closes everything below it),
/// - a dir listed in `not_into` (the Firecracker jails: a jailed VMM,
///   running as its own uid inside its chroot, needs the modes the jailer
///   gave its tree; the 0700 dir above closes it to everyone else).
///
/// `keep` names the shared bits a given entry may keep (0 for none): the
/// search bits Hangar itself grants so that a confined VMM can reach its
/// own VM dir (see `hangar-daemon/src/confine.rs`).
///
/// A missing `root` is nothing to repair.
pub fn repair_private_tree(
    root: &Path,
    not_into: &[&Path],
    keep: &dyn Fn(&Path, &std::fs::Metadata) -> u32,
) -> io::Result<RepairCount> {
    let meta = match std::fs::symlink_metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(RepairCount::default()),
        Err(e) => return Err(e),
    };
    let mut count = RepairCount::default();
    if meta.file_type().is_symlink() {
        return Ok(count);
    }
    tighten(root, &meta, keep(root, &meta), &mut count);
    if meta.is_dir() && !not_into.contains(&root) {
        walk(root, meta.dev(), not_into, keep, &mut count);
    }
    Ok(count)
}

fn walk(
    dir: &Path,
    dev: u64,
    not_into: &[&Path],
    keep: &dyn Fn(&Path, &std::fs::Metadata) -> u32,
    count: &mut RepairCount,
) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(path = %dir.display(), error = %e, "cannot read dir to repair its modes");
            count.failed += 1;
            return;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(path = %dir.display(), error = %e, "cannot read dir entry");
                count.failed += 1;
                continue;
            }
        };
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            // Gone meanwhile.
            continue;
        };
        if meta.file_type().is_symlink() {
            continue;
        }
        tighten(&path, &meta, keep(&path, &meta), count);
        let scratch = entry.file_name().as_encoded_bytes().starts_with(b".");
        if meta.is_dir() && meta.dev() == dev && !scratch && !not_into.contains(&path.as_path()) {
            walk(&path, dev, not_into, keep, count);
        }
    }
}

fn tighten(path: &Path, meta: &std::fs::Metadata, keep: u32, count: &mut RepairCount) {
    let mode = meta.permissions().mode() & 0o7777;
    let want = mode & !(SHARED_BITS & !keep) & 0o777;
    if mode == want {
        return;
    }
    match set_mode_nofollow(path, want) {
        Ok(()) => {
            tracing::debug!(path = %path.display(), from = format!("{mode:o}"), to = format!("{want:o}"), "mode tightened");
            count.fixed += 1;
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot tighten mode");
            count.failed += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn keep_none(_: &Path, _: &std::fs::Metadata) -> u32 {
        0
    }
    use std::fs::Permissions;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }
    fn chmod(p: &Path, m: u32) {
        std::fs::set_permissions(p, Permissions::from_mode(m)).unwrap();
    }

    #[test]
    fn loose_files_and_dirs_are_tightened_and_counted() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("state");
        let vm = root.join("vms/abc");
        std::fs::create_dir_all(&vm).unwrap();
        for (p, m) in [(&root, 0o755), (&root.join("vms"), 0o755), (&vm, 0o750)] {
            chmod(p, m);
        }
        let img = vm.join("config.img");
        std::fs::write(&img, "key").unwrap();
        chmod(&img, 0o644);
        let exe = vm.join("tool");
        std::fs::write(&exe, "#!").unwrap();
        chmod(&exe, 0o4755);
        let ok = vm.join("disk.ext4");
        std::fs::write(&ok, "").unwrap();
        chmod(&ok, 0o600);

        let n = repair_private_tree(&root, &[], &keep_none).unwrap();
        assert_eq!(
            n,
            RepairCount {
                fixed: 5,
                failed: 0
            }
        );
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&root.join("vms")), 0o700);
        assert_eq!(mode(&vm), 0o700);
        assert_eq!(mode(&img), 0o600);
        assert_eq!(mode(&exe), 0o700);
        assert_eq!(mode(&ok), 0o600);
        // A second walk finds nothing left to do.
        assert_eq!(
            repair_private_tree(&root, &[], &keep_none).unwrap().fixed,
            0
        );
    }

    #[test]
    fn symlinks_are_not_followed_out_of_the_tree() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("state");
        std::fs::create_dir(&root).unwrap();
        chmod(&root, 0o700);
        let outside_dir = t.path().join("outside");
        std::fs::create_dir(&outside_dir).unwrap();
        chmod(&outside_dir, 0o755);
        let outside_file = outside_dir.join("f");
        std::fs::write(&outside_file, "x").unwrap();
        chmod(&outside_file, 0o644);
        std::os::unix::fs::symlink(&outside_dir, root.join("dirlink")).unwrap();
        std::os::unix::fs::symlink(&outside_file, root.join("filelink")).unwrap();

        assert_eq!(
            repair_private_tree(&root, &[], &keep_none).unwrap().fixed,
            0
        );
        assert_eq!(mode(&outside_dir), 0o755);
        assert_eq!(mode(&outside_file), 0o644);
        // A root that is itself a link is not followed either.
        let link_root = t.path().join("linkroot");
        std::os::unix::fs::symlink(&outside_dir, &link_root).unwrap();
        assert_eq!(
            repair_private_tree(&link_root, &[], &keep_none)
                .unwrap()
                .fixed,
            0
        );
        assert_eq!(mode(&outside_dir), 0o755);
    }

    #[test]
    fn scratch_dirs_are_closed_but_not_entered() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("cache");
        let tree = root.join(".build-key-42/work/tree/usr/bin");
        std::fs::create_dir_all(&tree).unwrap();
        chmod(&root, 0o700);
        let scratch = root.join(".build-key-42");
        chmod(&scratch, 0o755);
        let sudo = tree.join("sudo");
        std::fs::write(&sudo, "").unwrap();
        chmod(&sudo, 0o4755);

        assert_eq!(
            repair_private_tree(&root, &[], &keep_none).unwrap().fixed,
            1
        );
        assert_eq!(mode(&scratch), 0o700);
        assert_eq!(mode(&sudo), 0o4755, "a guest's file modes are the guest's");
    }

    #[test]
    fn dirs_listed_as_not_into_are_closed_but_not_entered() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("state");
        let jail = root.join("jail");
        let chroot = jail.join("firecracker/vm1/root");
        std::fs::create_dir_all(&chroot).unwrap();
        chmod(&root, 0o700);
        chmod(&jail, 0o755);
        chmod(&chroot, 0o755);
        let n = repair_private_tree(&root, &[jail.as_path()], &keep_none).unwrap();
        assert_eq!(n.fixed, 1);
        assert_eq!(mode(&jail), 0o700);
        assert_eq!(
            mode(&chroot),
            0o755,
            "the jailed VMM's uid must still enter its root"
        );
    }

    #[test]
    fn a_missing_root_is_nothing_to_repair() {
        let t = tempfile::tempdir().unwrap();
        let n = repair_private_tree(&t.path().join("absent"), &[], &keep_none).unwrap();
        assert_eq!(n, RepairCount::default());
    }

    #[test]
    fn bits_named_by_keep_stay_and_the_rest_go() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("state");
        let vm = root.join("vms").join("a");
        std::fs::create_dir_all(&vm).unwrap();
        chmod(&root, 0o755);
        chmod(&root.join("vms"), 0o755);
        chmod(&vm, 0o750);
        let vms = root.join("vms");
        let keep = |p: &Path, _: &std::fs::Metadata| {
            if p == root.as_path() || p == vms.as_path() {
                0o011
            } else {
                0o010
            }
        };
        let n = repair_private_tree(&root, &[], &keep).unwrap();
        assert_eq!(n.fixed, 3);
        assert_eq!(mode(&root), 0o711);
        assert_eq!(mode(&vms), 0o711);
        assert_eq!(mode(&vm), 0o710);
        assert_eq!(repair_private_tree(&root, &[], &keep).unwrap().fixed, 0);
    }
}
