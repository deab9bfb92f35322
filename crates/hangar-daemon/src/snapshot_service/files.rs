//! Boot snapshots on disk: a VM's saved state at the guest's snapshot
//! point (kernel booted, modules loaded, no disk read yet), one per image
//! and machine shape ([`hangar_vmm::VmmDriver::boot_snapshot_key`]).
//!
//! Layout: `<state_dir>/snapshots/<image digest hex>/<key>.state`, written
//! as `<key>.state.tmp` and renamed when complete, so a reader never sees
//! a partial file. Removing an image removes its directory.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing::warn;

/// Why a boot snapshot was not saved. Never fatal: the VM boots on.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("the VMM exited before the guest reached its snapshot point")]
    VmmExited,
    #[error("the guest did not reach its snapshot point within {secs} s")]
    NotReached { secs: u64 },
    #[error("cannot save the VM state")]
    Save(#[source] hangar_vmm::VmmError),
    #[error("cannot move the snapshot into place")]
    Commit(#[source] std::io::Error),
    #[error("cannot prepare the snapshot directory")]
    Prepare(#[source] std::io::Error),
    #[error("the snapshot boot was cancelled")]
    Cancelled,
}

const STATE_SUFFIX: &str = ".state";
const PARTIAL_SUFFIX: &str = ".state.tmp";

/// The snapshot files of one daemon.
pub struct BootSnapshots {
    dir: PathBuf,
    /// Keys being saved now, so two first boots do not both save.
    saving: Arc<Mutex<HashSet<String>>>,
}

/// A save in progress; dropping it without [`SnapshotSave::commit`]
/// removes the partial file.
pub struct SnapshotSave {
    partial: PathBuf,
    done: PathBuf,
    key: String,
    saving: Arc<Mutex<HashSet<String>>>,
    committed: bool,
}

impl BootSnapshots {
    pub fn new(dir: PathBuf) -> Self {
        BootSnapshots {
            dir,
            saving: Arc::default(),
        }
    }

    fn image_dir(&self, image_digest: &str) -> PathBuf {
        let hex = image_digest.rsplit(':').next().unwrap_or(image_digest);
        self.dir.join(hex)
    }

    /// The complete snapshot for this image and key, if there is one.
    pub fn find(&self, image_digest: &str, key: &str) -> Option<PathBuf> {
        let p = self
            .image_dir(image_digest)
            .join(format!("{key}{STATE_SUFFIX}"));
        p.is_file().then_some(p)
    }

    /// Starts saving a snapshot, unless one is being saved for this key.
    pub fn begin_save(
        &self,
        image_digest: &str,
        key: &str,
    ) -> std::io::Result<Option<SnapshotSave>> {
        {
            let mut saving = self.saving.lock().unwrap_or_else(|e| e.into_inner());
            if !saving.insert(key.to_string()) {
                return Ok(None);
            }
        }
        let save = SnapshotSave {
            partial: self
                .image_dir(image_digest)
                .join(format!("{key}{PARTIAL_SUFFIX}")),
            done: self
                .image_dir(image_digest)
                .join(format!("{key}{STATE_SUFFIX}")),
            key: key.to_string(),
            saving: self.saving.clone(),
            committed: false,
        };
        hangar_host::private::create_private_dir(&self.image_dir(image_digest))?;
        Ok(Some(save))
    }

    /// Removes a snapshot that failed to restore.
    pub fn discard(&self, path: &Path) {
        if let Err(e) = std::fs::remove_file(path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!(path = %path.display(), error = %e, "cannot remove boot snapshot");
            }
        }
    }

    /// Removes every snapshot of an image (when the image is removed).
    pub fn remove_image(&self, image_digest: &str) {
        let dir = self.image_dir(image_digest);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!(dir = %dir.display(), error = %e, "cannot remove boot snapshots");
            }
        }
    }

    /// Removes partial files a crashed daemon left; returns how many.
    pub fn remove_partial(&self) -> usize {
        self.files()
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with(PARTIAL_SUFFIX))
            .filter(|p| std::fs::remove_file(p).is_ok())
            .count()
    }

    /// Every file under the snapshots directory.
    pub fn files(&self) -> Vec<PathBuf> {
        let Ok(images) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<PathBuf> = images
            .flatten()
            .filter_map(|d| std::fs::read_dir(d.path()).ok())
            .flat_map(|entries| entries.flatten().map(|e| e.path()))
            .collect();
        out.sort();
        out
    }
}

impl SnapshotSave {
    /// Where the VMM writes the state.
    pub fn partial_path(&self) -> &Path {
        &self.partial
    }

    /// Makes the saved state the snapshot for its key.
    pub fn commit(mut self) -> std::io::Result<PathBuf> {
        std::fs::rename(&self.partial, &self.done)?;
        self.committed = true;
        Ok(self.done.clone())
    }
}

impl Drop for SnapshotSave {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.partial);
        }
        let mut saving = self.saving.lock().unwrap_or_else(|e| e.into_inner());
        saving.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMG: &str = "sha256:abc";

    #[test]
    fn a_committed_save_is_found_and_a_dropped_one_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = BootSnapshots::new(dir.path().join("snapshots"));
        assert_eq!(snaps.find(IMG, "k1"), None);

        let save = snaps.begin_save(IMG, "k1").unwrap().unwrap();
        std::fs::write(save.partial_path(), b"state").unwrap();
        assert_eq!(snaps.find(IMG, "k1"), None, "partial is not found");
        let path = save.commit().unwrap();
        assert_eq!(snaps.find(IMG, "k1"), Some(path));

        let save = snaps.begin_save(IMG, "k2").unwrap().unwrap();
        std::fs::write(save.partial_path(), b"half").unwrap();
        drop(save);
        assert_eq!(snaps.files().len(), 1, "{:?}", snaps.files());
    }

    #[test]
    fn only_one_save_per_key_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = BootSnapshots::new(dir.path().to_path_buf());

        let first = snaps.begin_save(IMG, "k").unwrap().unwrap();
        assert!(snaps.begin_save(IMG, "k").unwrap().is_none());
        assert!(snaps.begin_save(IMG, "other").unwrap().is_some());
        drop(first);
        assert!(snaps.begin_save(IMG, "k").unwrap().is_some());
    }

    #[test]
    fn removing_an_image_removes_its_snapshots_only() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = BootSnapshots::new(dir.path().to_path_buf());
        for img in [IMG, "sha256:def"] {
            let save = snaps.begin_save(img, "k").unwrap().unwrap();
            std::fs::write(save.partial_path(), b"s").unwrap();
            save.commit().unwrap();
        }

        snaps.remove_image(IMG);

        assert_eq!(snaps.find(IMG, "k"), None);
        assert!(snaps.find("sha256:def", "k").is_some());
    }

    #[test]
    fn partial_files_of_a_crashed_daemon_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = BootSnapshots::new(dir.path().to_path_buf());
        let save = snaps.begin_save(IMG, "k").unwrap().unwrap();
        std::fs::write(save.partial_path(), b"s").unwrap();
        std::mem::forget(save);
        let keep = snaps.begin_save(IMG, "j").unwrap().unwrap();
        std::fs::write(keep.partial_path(), b"s").unwrap();
        keep.commit().unwrap();

        assert_eq!(snaps.remove_partial(), 1);
        assert_eq!(snaps.files().len(), 1);
    }
}
