//! The files a confined VMM keeps open belong to its VM's uid.
//!
//! A VMM that runs as its VM's own uid ([`crate::RunAs`]) gets that VM's
//! own files (root disk, extra drives, serial log) chowned to that uid
//! with mode 0600: no other VM's VMM, and no other local user, can open
//! them. Only regular files inside the VM's directory are handed over, so
//! shared files (image kernels, a dm device node) keep their owner.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use nix::unistd::{chown, Gid, Uid};

use crate::error::VmmError;
use crate::{RunAs, VmSpec};

/// Gives `spec`'s own files to its [`VmSpec::run_as`] ids (no-op without
/// one). A missing serial log is created first so the VMM never makes it
/// with its own umask.
pub(crate) fn hand_over_vm_files(spec: &VmSpec) -> Result<(), VmmError> {
    let Some(ids) = spec.run_as else {
        return Ok(());
    };
    if spec.serial_log.starts_with(&spec.vm_dir) && !spec.serial_log.exists() {
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&spec.serial_log)
            .map_err(|source| VmmError::Io {
                action: "create",
                path: spec.serial_log.clone(),
                source,
            })?;
    }
    let own = std::iter::once(&spec.root_disk)
        .chain(spec.extra_drives.iter().map(|d| &d.path))
        .chain(std::iter::once(&spec.serial_log))
        .filter(|p| p.starts_with(&spec.vm_dir));
    for path in own {
        hand_over(path, ids)?;
    }
    Ok(())
}

/// chown to `ids` and chmod 0600, for a regular file only (a symlink or a
/// device is left alone).
fn hand_over(path: &Path, ids: RunAs) -> Result<(), VmmError> {
    let io = |action, source| VmmError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::symlink_metadata(path).map_err(|e| io("inspect", e))?;
    if !meta.file_type().is_file() {
        return Ok(());
    }
    chown(
        path,
        Some(Uid::from_raw(ids.uid)),
        Some(Gid::from_raw(ids.gid)),
    )
    .map_err(|e| io("chown to the VM user", e.into()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| io("chmod 0600", e))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::Drive;

    fn spec_in(vm_dir: &Path, outside: &Path) -> VmSpec {
        VmSpec {
            id: "vm1".into(),
            name: "dev".into(),
            cpus: 1,
            memory_mib: 256,
            kernel: outside.join("vmlinux"),
            initrd: None,
            cmdline: String::new(),
            root_disk: vm_dir.join("disk.ext4"),
            extra_drives: vec![Drive {
                id: "cfg".into(),
                path: vm_dir.join("config.img"),
                read_only: true,
            }],
            tap: "tap0".into(),
            mac: "02:00:00:00:00:01".into(),
            vm_dir: vm_dir.to_path_buf(),
            serial_log: vm_dir.join("serial.log"),
            netns: None,
            restore_from: None,
            run_as: Some(RunAs {
                uid: 200_021,
                gid: 200_022,
            }),
        }
    }

    #[test]
    #[ignore = "needs root (chown)"]
    fn the_vm_files_go_to_its_ids_with_mode_0600_and_shared_files_stay() {
        hangar_testsupport::require_root("chown");
        let dir = tempfile::tempdir().unwrap();
        let (vm_dir, image) = (dir.path().join("vm"), dir.path().join("image"));
        std::fs::create_dir_all(&vm_dir).unwrap();
        std::fs::create_dir_all(&image).unwrap();
        let spec = spec_in(&vm_dir, &image);
        for f in [&spec.kernel, &spec.root_disk, &spec.extra_drives[0].path] {
            std::fs::write(f, b"x").unwrap();
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
        }

        hand_over_vm_files(&spec).unwrap();

        let of = |p: &Path| {
            let m = std::fs::metadata(p).unwrap();
            (m.uid(), m.gid(), m.mode() & 0o777)
        };
        for f in [
            &spec.root_disk,
            &spec.extra_drives[0].path,
            &spec.serial_log,
        ] {
            assert_eq!(of(f), (200_021, 200_022, 0o600), "{}", f.display());
        }
        assert_eq!(of(&spec.kernel), (0, 0, 0o644), "image files are shared");
    }

    #[test]
    fn without_run_as_nothing_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = spec_in(dir.path(), dir.path());
        spec.run_as = None;
        hand_over_vm_files(&spec).unwrap();
        assert!(!spec.serial_log.exists());
    }
}
