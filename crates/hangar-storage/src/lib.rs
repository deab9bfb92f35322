//! hangar-storage: per-VM copy-on-write root disks over a read-only image
//! rootfs.
//!
//! Every backend follows one recipe (see `create`): refuse a size below the
//! image, create the disk exclusively, fill it (reflink or sparse copy), grow
//! the file and its ext4 to the requested size, and remove the disk again if
//! any step fails. [`detect`] picks the best backend for a directory.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod copy;
mod create;
mod error;
mod ext4;
mod reflink;
pub mod space;

use std::fs::File;
use std::io::Write;
use std::path::Path;

pub use copy::CopyBackend;
pub use error::StorageError;
pub use reflink::ReflinkBackend;

/// How per-VM disks are made from an image rootfs.
pub trait DiskBackend: Send + Sync {
    /// Stable name for config and doctor: "reflink" or "copy".
    fn name(&self) -> &'static str;
    /// Creates `dest` from the image rootfs, `size_bytes` large (the ext4
    /// inside is grown to match). A size below the image size is refused.
    /// `dest` must not exist. On failure nothing is left at `dest`.
    fn create(&self, image_rootfs: &Path, dest: &Path, size_bytes: u64)
        -> Result<(), StorageError>;
    /// Removes the disk; a missing disk is fine.
    fn remove(&self, dest: &Path) -> Result<(), StorageError>;
}

/// Picks reflink if FICLONE works in `dir`, else copy. The string says why,
/// for `hangar doctor`.
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

/// Resolves a configured backend name: `auto`, `reflink`, `copy` (and `dm`,
/// which is planned but not available yet).
pub fn backend_by_name(
    name: &str,
    dir: &Path,
) -> Result<(Box<dyn DiskBackend>, String), StorageError> {
    match name {
        "auto" => Ok(detect(dir)),
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
        "dm" => Err(StorageError::NotAvailable {
            name: name.to_string(),
        }),
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

    #[test]
    fn backend_by_name_dm_says_not_available_yet() {
        let dir = tempfile::tempdir().unwrap();
        let err = backend_by_name("dm", dir.path()).err().unwrap();
        assert!(err.to_string().contains("not available yet"), "{err}");
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
