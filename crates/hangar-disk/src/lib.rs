//! hangar-disk: per-VM copy-on-write root disks over a read-only image
//! rootfs.
//!
//! Every backend follows one recipe (see `create`): refuse a size below the
//! image, create the disk exclusively, fill it (reflink or sparse copy), grow
//! the file and its ext4 to the requested size, and remove the disk again if
//! any step fails. [`detect`] picks the best file backend for a directory.
//!
//! The dm backend ([`DmBackend`]) instead keeps a sparse COW file per VM and
//! builds a device-mapper snapshot over the image only while the VM runs:
//! callers `activate` a disk before booting (and give the VMM the returned
//! path), and `deactivate` it after the VMM exits. For file backends these
//! are no-ops that return the disk file itself.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod copy;
mod create;
mod dm;
mod error;
mod ext4;
mod leftovers;
mod reflink;
pub mod space;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

pub use copy::CopyBackend;
pub use dm::{dm_availability, dm_device_name, dm_device_path, DmBackend};
pub use error::StorageError;
pub use leftovers::find_leftovers;
pub use reflink::ReflinkBackend;

/// How per-VM disks are made from an image rootfs.
pub trait DiskBackend: Send + Sync {
    /// Stable name for config and doctor: "dm", "reflink" or "copy".
    fn name(&self) -> &'static str;
    /// Creates `dest` from the image rootfs, `size_bytes` large (the ext4
    /// inside is grown to match). A size below the image size is refused.
    /// `dest` must not exist. On failure nothing is left at `dest`. For dm,
    /// `dest` is the per-VM COW file, not a bootable disk: see `activate`.
    fn create(&self, image_rootfs: &Path, dest: &Path, size_bytes: u64)
        -> Result<(), StorageError>;
    /// Removes the disk (deactivating it first if needed); a missing disk is
    /// fine.
    fn remove(&self, dest: &Path) -> Result<(), StorageError>;
    /// Makes the disk at `dest` usable by a VMM and returns the path the VMM
    /// opens: `dest` itself for file backends, `/dev/mapper/hangar-...` for
    /// dm. Call before every boot; activating an active disk returns the same
    /// path. On failure nothing new is left attached.
    fn activate(&self, image_rootfs: &Path, dest: &Path) -> Result<PathBuf, StorageError> {
        let _ = image_rootfs;
        Ok(dest.to_path_buf())
    }
    /// Undoes `activate` once the VMM has exited. Idempotent: deactivating an
    /// inactive or missing disk is fine. Fails (and changes nothing) while a
    /// process still has the device open.
    fn deactivate(&self, dest: &Path) -> Result<(), StorageError> {
        let _ = dest;
        Ok(())
    }
    /// Host objects of this backend that may be orphaned (for doctor); each
    /// line names the object and how to remove it.
    fn leftovers(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Picks the best *file* backend: reflink if FICLONE works in `dir`, else
/// copy. The string says why, for `hangar doctor`. (`backend_by_name("auto")`
/// also considers dm first.)
pub fn detect(dir: &Path) -> (Box<dyn DiskBackend>, String) {
    match probe_reflink(dir) {
        Ok(()) => (
            Box::new(ReflinkBackend),
            format!("reflink: FICLONE works in {}", dir.display()),
        ),
        Err(e) => (
            Box::new(CopyBackend),
            format!(
                "copy: FICLONE does not work in {} ({e}); disks are sparse copies (slower, use more space)",
                dir.display()
            ),
        ),
    }
}

/// Resolves a configured backend name: `auto`, `dm`, `reflink` or `copy`.
/// `auto` is dm when device-mapper is usable, else reflink when FICLONE works
/// in `dir`, else copy; the string says which and why the better ones were
/// skipped, for `hangar doctor`.
pub fn backend_by_name(
    name: &str,
    dir: &Path,
) -> Result<(Box<dyn DiskBackend>, String), StorageError> {
    match name {
        "auto" => Ok(match dm_availability() {
            Ok(()) => (
                Box::new(DmBackend::new(dir)),
                "dm: device-mapper is usable (/dev/mapper/control present, dmsetup works); disks are per-VM snapshots".to_string(),
            ),
            Err(why) => {
                let (backend, reason) = detect(dir);
                (backend, format!("{reason} (dm skipped: {why})"))
            }
        }),
        "reflink" => match probe_reflink(dir) {
            Ok(()) => Ok((
                Box::new(ReflinkBackend),
                format!("reflink: configured, FICLONE works in {}", dir.display()),
            )),
            Err(e) => Err(StorageError::ReflinkUnsupported {
                dir: dir.to_path_buf(),
                reason: e.to_string(),
            }),
        },
        "copy" => Ok((Box::new(CopyBackend), "copy: configured".to_string())),
        "dm" => match dm_availability() {
            Ok(()) => Ok((
                Box::new(DmBackend::new(dir)),
                "dm: configured, device-mapper is usable".to_string(),
            )),
            Err(reason) => Err(StorageError::DmUnavailable { reason }),
        },
        other => Err(StorageError::UnknownBackend {
            name: other.to_string(),
        }),
    }
}

/// Tries a real FICLONE between two temp files in `dir` (removed afterwards).
fn probe_reflink(dir: &Path) -> std::io::Result<()> {
    let mut src = tempfile::Builder::new()
        .prefix(".hangar-reflink-probe")
        .tempfile_in(dir)?;
    src.write_all(&[0x5a; 4096])?;
    src.as_file().sync_all()?;
    let dst = tempfile::Builder::new()
        .prefix(".hangar-reflink-probe")
        .tempfile_in(dir)?;
    let src_file: &File = src.as_file();
    reflink::ficlone(src_file, dst.as_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Host-dependent on purpose: checks whichever answer this host gives.
    #[test]
    fn backend_by_name_dm_matches_host_availability() {
        let dir = tempfile::tempdir().unwrap();

        let res = backend_by_name("dm", dir.path());

        match (dm_availability(), res) {
            (Ok(()), Ok((b, _))) => assert_eq!(b.name(), "dm"),
            (Err(why), Err(err)) => {
                let msg = err.to_string();
                assert!(msg.contains(&why), "{msg}");
                assert!(
                    msg.contains("use backend = \"reflink\" or \"copy\""),
                    "{msg}"
                );
            }
            (avail, res) => panic!(
                "availability {avail:?} but backend_by_name gave {:?}",
                res.map(|(b, r)| (b.name(), r))
            ),
        }
    }

    #[test]
    fn backend_by_name_auto_explains_dm_choice() {
        let dir = tempfile::tempdir().unwrap();

        let (b, reason) = backend_by_name("auto", dir.path()).unwrap();

        match dm_availability() {
            Ok(()) => assert_eq!(b.name(), "dm"),
            Err(why) => {
                assert_ne!(b.name(), "dm");
                assert!(reason.contains(&format!("dm skipped: {why}")), "{reason}");
            }
        }
    }

    #[test]
    fn dm_unavailable_message_names_reason_and_alternatives() {
        let err = StorageError::DmUnavailable {
            reason: "no /dev/mapper/control".to_string(),
        };

        assert_eq!(
            err.to_string(),
            "Device-mapper is not available on this host (no /dev/mapper/control): use backend = \"reflink\" or \"copy\""
        );
    }

    #[test]
    fn file_backends_activate_to_dest_and_have_no_leftovers() {
        let dest = Path::new("/x/vm/disk.ext4");

        let path = CopyBackend.activate(Path::new("/img"), dest).unwrap();

        assert_eq!(path, dest);
        assert!(CopyBackend.deactivate(dest).is_ok());
        assert!(ReflinkBackend.leftovers().is_empty());
    }

    #[test]
    fn backend_by_name_unknown_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = backend_by_name("zfs", dir.path()).err().unwrap();
        assert!(matches!(err, StorageError::UnknownBackend { .. }), "{err}");
    }

    #[test]
    fn backend_by_name_copy_gives_copy() {
        let dir = tempfile::tempdir().unwrap();
        let (b, _) = backend_by_name("copy", dir.path()).unwrap();
        assert_eq!(b.name(), "copy");
    }

    #[test]
    fn detect_on_missing_dir_falls_back_to_copy_with_reason() {
        let (b, reason) = detect(Path::new("/nonexistent/hangar-probe"));
        assert_eq!(b.name(), "copy");
        assert!(reason.contains("/nonexistent/hangar-probe"), "{reason}");
    }

    #[test]
    fn probe_leaves_no_files_behind() {
        let dir = tempfile::tempdir().unwrap();
        let _ = detect(dir.path());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
