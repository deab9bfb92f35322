//! The create recipe shared by every backend: validate the size, make the
//! file exclusively, let the backend fill it, grow it, and remove it again if
//! any step fails.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::{ext4, StorageError};

/// What a backend does between "dest exists and is empty" and "grow".
pub(crate) trait Fill {
    /// Makes `dst` hold the same bytes as `src` (`src_len` long).
    fn fill(
        &self,
        src: &File,
        src_path: &Path,
        dst: &File,
        dst_path: &Path,
    ) -> Result<(), StorageError>;
}

/// Image facts the recipe and the backends need.
pub(crate) struct ImageInfo {
    pub len: u64,
    /// Bytes actually allocated on disk (holes excluded).
    pub allocated: u64,
}

pub(crate) fn image_info(image: &Path) -> Result<ImageInfo, StorageError> {
    let meta =
        std::fs::metadata(image).map_err(|e| StorageError::io("read image rootfs", image, e))?;
    Ok(ImageInfo {
        len: meta.len(),
        allocated: meta.blocks().saturating_mul(512),
    })
}

/// Creates the empty disk file at `dest` (read-write), refusing to reuse
/// one that exists: an existing file is [`StorageError::AlreadyExists`].
pub(crate) fn create_new_disk(dest: &Path) -> Result<File, StorageError> {
    // Private (0600): the disk is the VM's whole filesystem.
    hangar_host::private::create_new_private_file(dest).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => StorageError::AlreadyExists {
            path: dest.to_path_buf(),
        },
        _ => StorageError::io("create disk", dest, e),
    })
}

/// Runs the shared recipe with the backend's `fill` step.
pub(crate) fn create_disk(
    fill: &dyn Fill,
    image: &Path,
    dest: &Path,
    size_bytes: u64,
) -> Result<(), StorageError> {
    let info = image_info(image)?;
    if size_bytes < info.len {
        return Err(StorageError::SizeTooSmall {
            requested: size_bytes,
            minimum: info.len,
        });
    }
    let src = File::open(image).map_err(|e| StorageError::io("open image rootfs", image, e))?;
    let dst = create_new_disk(dest)?;
    let mut guard = RemoveOnDrop::new(dest);

    fill.fill(&src, image, &dst, dest)?;
    if size_bytes > info.len {
        dst.set_len(size_bytes)
            .map_err(|e| StorageError::io("extend disk", dest, e))?;
    }
    dst.sync_all().map_err(|e| {
        if crate::space::is_enospc(&e) {
            crate::space::no_space(dest, info.allocated)
        } else {
            StorageError::io("sync disk", dest, e)
        }
    })?;
    drop(dst);
    if size_bytes > info.len {
        ext4::grow_to_file_size(dest)?;
    }
    guard.disarm();
    tracing::info!(dest = %dest.display(), size_bytes, "disk created");
    Ok(())
}

/// Deletes a half-made disk unless the recipe finished.
struct RemoveOnDrop {
    path: Option<PathBuf>,
}

impl RemoveOnDrop {
    fn new(path: &Path) -> Self {
        Self {
            path: Some(path.to_path_buf()),
        }
    }
    fn disarm(&mut self) {
        self.path = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            if let Err(e) = std::fs::remove_file(&p) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %p.display(), error = %e, "could not remove partial disk");
                }
            }
        }
    }
}

/// Removes a disk; a missing one is not an error.
pub(crate) fn remove_disk(dest: &Path) -> Result<(), StorageError> {
    match std::fs::remove_file(dest) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io("remove disk", dest, e)),
    }
}
