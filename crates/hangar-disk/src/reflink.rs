//! Reflink backend: one FICLONE ioctl shares every extent of the image with
//! the new disk, so creation is instant and costs ~no space until the guest
//! writes.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::create::{create_disk, remove_disk, Fill};
use crate::{DiskBackend, StorageError};

/// Whole-file clone with FICLONE (btrfs, xfs with reflink=1, bcachefs).
#[derive(Debug, Default, Clone, Copy)]
pub struct ReflinkBackend;

/// Clones all of `src` into `dst` (both open, `dst` writable).
pub(crate) fn ficlone(src: &File, dst: &File) -> std::io::Result<()> {
    // SAFETY: both fds are open for the duration of the call; FICLONE takes
    // the source fd as its integer argument and touches no user memory.
    let rc = unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl Fill for ReflinkBackend {
    fn fill(
        &self,
        src: &File,
        src_path: &Path,
        dst: &File,
        dst_path: &Path,
    ) -> Result<(), StorageError> {
        ficlone(src, dst).map_err(|e| {
            if crate::space::is_enospc(&e) {
                // Metadata for the shared extents still needs a little room.
                crate::space::no_space(dst_path, 1024 * 1024)
            } else {
                StorageError::Reflink {
                    src: src_path.to_path_buf(),
                    dest: dst_path.to_path_buf(),
                    source: e,
                }
            }
        })
    }
}

impl DiskBackend for ReflinkBackend {
    fn name(&self) -> &'static str {
        "reflink"
    }

    fn create(
        &self,
        image_rootfs: &Path,
        dest: &Path,
        size_bytes: u64,
    ) -> Result<(), StorageError> {
        create_disk(self, image_rootfs, dest, size_bytes)
    }

    fn remove(&self, dest: &Path) -> Result<(), StorageError> {
        remove_disk(dest)
    }
}
