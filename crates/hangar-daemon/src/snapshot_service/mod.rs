//! Boot snapshots: a VM saved at the guest's snapshot point (kernel booted,
//! modules loaded, no disk read yet), one per image and machine shape, so
//! later boots resume it instead of booting the kernel. The service owns
//! the files ([`files`]), chooses how a boot uses them ([`SnapshotPlan`]),
//! saves one while a boot waits at its snapshot point, and prewarms an
//! image's snapshot right after a pull ([`prewarm`]).

mod files;
mod prewarm;

use std::path::{Path, PathBuf};
use std::time::Duration;

use hangar_image::identity::SNAPSHOT_POINT_MESSAGE;
use hangar_image::ImageManifest;
use hangar_vmm::{VmSpec, VmmHandle};
use tracing::warn;

pub use files::{BootSnapshots, SnapshotError, SnapshotSave};

use crate::infra::Infra;

pub struct SnapshotService {
    infra: Infra,
    files: BootSnapshots,
}

/// How a boot uses boot snapshots.
pub enum SnapshotPlan {
    /// A plain kernel boot.
    Cold,
    /// Resume this saved state.
    Restore(PathBuf),
    /// Boot the kernel, save the VM at its snapshot point, then run on.
    Save(SnapshotSave),
}

impl SnapshotPlan {
    pub fn describe(&self) -> &'static str {
        match self {
            SnapshotPlan::Cold => "kernel boot",
            SnapshotPlan::Restore(_) => "resumed from boot snapshot",
            SnapshotPlan::Save(_) => "kernel boot, saving a boot snapshot",
        }
    }
}

impl SnapshotService {
    pub fn new(infra: Infra) -> Self {
        let files = BootSnapshots::new(infra.config.snapshots_dir());
        SnapshotService { infra, files }
    }

    /// Chooses how a boot uses boot snapshots: restore one that fits, save
    /// one if none does (and no other boot is saving it), or neither
    /// (turned off, an image whose init has no snapshot point, a driver or
    /// spec without snapshots).
    pub fn plan(
        &self,
        image_digest: &str,
        manifest: &ImageManifest,
        spec: &VmSpec,
    ) -> SnapshotPlan {
        if !self.infra.config.vmm.boot_snapshots || !manifest.boot_snapshots {
            return SnapshotPlan::Cold;
        }
        let Some(key) = self.infra.driver.boot_snapshot_key(spec) else {
            return SnapshotPlan::Cold;
        };
        if let Some(state) = self.files.find(image_digest, &key) {
            return SnapshotPlan::Restore(state);
        }
        match self.files.begin_save(image_digest, &key) {
            Ok(Some(save)) => SnapshotPlan::Save(save),
            Ok(None) => SnapshotPlan::Cold,
            Err(e) => {
                warn!(error = %e, "cannot prepare the boot snapshot directory");
                SnapshotPlan::Cold
            }
        }
    }

    /// Waits for the guest to reach its snapshot point, saves the VM
    /// there and commits the file. The VM is left paused on success.
    pub async fn save(
        &self,
        handle: &VmmHandle,
        serial_log: &Path,
        save: SnapshotSave,
        timeout: Duration,
    ) -> Result<PathBuf, SnapshotError> {
        let driver = &self.infra.driver;
        crate::console::wait_for_console(serial_log, SNAPSHOT_POINT_MESSAGE, timeout, || {
            driver.is_alive(handle)
        })
        .await?;
        driver
            .save_boot_snapshot(handle, save.partial_path())
            .await
            .map_err(SnapshotError::Save)?;
        save.commit().map_err(SnapshotError::Commit)
    }

    /// Removes a snapshot that failed to restore.
    pub fn discard(&self, path: &Path) {
        self.files.discard(path);
    }

    /// Removes every snapshot of an image (when the image is removed).
    pub fn remove_image(&self, image_digest: &str) {
        self.files.remove_image(image_digest);
    }

    /// Removes partial files a crashed daemon left; returns how many.
    pub fn remove_partial(&self) -> usize {
        self.files.remove_partial()
    }
}
