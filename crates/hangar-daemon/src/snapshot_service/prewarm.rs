//! Saving an image's boot snapshot ahead of its first VM: right after a
//! pull, a throw-away VM of the default shape (`[defaults]` CPUs, memory,
//! disk size) boots to the snapshot point and is saved there, so that the
//! first `vm create` resumes as every later one does.
//!
//! The throw-away VM needs no real disk: the guest reads nothing of it
//! before the snapshot point but its size and first blocks, so a sparse
//! file of the VM disk's size stands in (restored guests drop those cached
//! blocks). It lives in `snapshots/.prewarm-<random>/`, which is removed
//! afterwards, or at the next daemon start after a crash.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hangar_image::identity::write_snapshot_drive;
use hangar_image::ImageManifest;
use hangar_ops::OpHandle;
use hangar_store::ImageRecord;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{SnapshotError, SnapshotService};
use crate::error::{error_chain, DaemonError, Result};
use crate::machine::{vm_spec, MachineSpec};
use crate::vm_service::dir::VmDir;

/// Prefix of the work directories under the snapshots directory.
const PREWARM_PREFIX: &str = ".prewarm-";

/// Removes its work directory when dropped.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            if e.kind() != std::io::ErrorKind::NotFound {
                warn!(dir = %self.0.display(), error = %e, "cannot remove snapshot work dir");
            }
        }
    }
}

impl SnapshotService {
    /// Saves the boot snapshot of `image` for the default machine shape
    /// with a disk of `disk_bytes` (what a VM gets by default), unless
    /// there is one. Best effort: a failure is logged, and the
    /// first VM of that shape saves the snapshot instead.
    pub async fn prewarm(
        &self,
        image: &ImageRecord,
        disk_bytes: u64,
        op: Option<&OpHandle>,
        cancel: &CancellationToken,
    ) {
        match self.try_prewarm(image, disk_bytes, op, cancel).await {
            Ok(Some(path)) => {
                info!(image = %image.name, snapshot = %path.display(), "boot snapshot prepared")
            }
            Ok(None) => {}
            Err(e) => {
                warn!(image = %image.name, error = %error_chain(&e), "boot snapshot not prepared; the first VM saves it")
            }
        }
    }

    async fn try_prewarm(
        &self,
        image: &ImageRecord,
        disk_bytes: u64,
        op: Option<&OpHandle>,
        cancel: &CancellationToken,
    ) -> Result<Option<PathBuf>> {
        if !self.infra.config.vmm.boot_snapshots {
            return Ok(None);
        }
        let image_dir = PathBuf::from(&image.dir);
        let manifest = ImageManifest::load(&image_dir)
            .map_err(|e| DaemonError::image("cannot read the image manifest", e))?;
        if !manifest.boot_snapshots {
            return Ok(None);
        }
        // The prewarm boot competes for the CPU like any other boot. It
        // waits before it makes anything, so a queued prewarm holds no
        // TAP, dir or disk.
        let _slot = self
            .infra
            .boot_gate
            .acquire(cancel, |ahead| {
                if let Some(op) = op {
                    op.phase(&crate::vm_service::boot::queued_phase(ahead));
                }
            })
            .await
            .map_err(|_| SnapshotError::Cancelled)?;
        let initrd = crate::guest_agent::boot_initrd_for(
            self.infra.agent.clone(),
            image_dir.clone(),
            manifest.clone(),
        )
        .await?;
        let work = WorkDir(self.infra.config.snapshots_dir().join(format!(
            "{PREWARM_PREFIX}{}",
            hex::encode(rand::random::<[u8; 6]>())
        )));
        let io = |what: &str, p: &Path, e: std::io::Error| {
            DaemonError::io(format!("cannot {what} {}", p.display()), e)
        };
        hangar_host::private::create_private_dir(&work.0).map_err(|e| io("create", &work.0, e))?;
        let dir = VmDir::at(work.0.clone());
        let disk = dir.disk();
        hangar_host::private::create_private_file(&disk)
            .and_then(|f| f.set_len(disk_bytes))
            .map_err(|e| io("create", &disk, e))?;
        write_snapshot_drive(&dir.config_drive())
            .map_err(|e| DaemonError::image("cannot write the snapshot drive", e))?;

        let tap = self
            .infra
            .net
            .acquire_tap()
            .await
            .map_err(|e| DaemonError::net("cannot get a TAP device", e))?;
        let spec = vm_spec(
            &self.infra,
            MachineSpec {
                id: "prewarm",
                name: "prewarm",
                cpus: self.infra.config.defaults.cpus,
                memory_mib: self.infra.config.defaults.memory_mib,
                image_dir: &image_dir,
                manifest: &manifest,
                initrd,
                root_disk: disk,
                vm_dir: &dir,
                tap: tap.clone(),
                mac: "02:48:47:00:00:00".into(),
                run_as: crate::confine::prewarm_run_as(&self.infra.config),
            },
        );
        let result = match spec.run_as {
            Some(ids) => crate::confine::open_dir_to_vmm(dir.path(), ids)
                .map_err(|e| DaemonError::io("cannot open the prewarm dir to its confined VMM", e)),
            None => Ok(()),
        };
        let result = match result {
            Ok(()) => self.prewarm_with(&spec, &image.digest, op, cancel).await,
            Err(e) => Err(e),
        };
        if let Err(e) = self.infra.net.release_tap(&tap).await {
            warn!(tap, error = %e, "cannot release TAP device");
        }
        result
    }

    /// Boots `spec` to its snapshot point, saves it, and kills the VMM.
    async fn prewarm_with(
        &self,
        spec: &hangar_vmm::VmSpec,
        image_digest: &str,
        op: Option<&OpHandle>,
        cancel: &CancellationToken,
    ) -> Result<Option<PathBuf>> {
        let Some(key) = self.infra.driver.boot_snapshot_key(spec) else {
            return Ok(None);
        };
        if self.files.find(image_digest, &key).is_some() {
            return Ok(None);
        }
        let Some(save) = self
            .files
            .begin_save(image_digest, &key)
            .map_err(SnapshotError::Prepare)?
        else {
            return Ok(None);
        };
        if let Some(op) = op {
            op.phase("boot-snapshot");
        }
        let handle = self
            .infra
            .driver
            .start(spec)
            .await
            .map_err(|e| DaemonError::vmm("cannot start the snapshot VM", e))?;
        crate::crash_point!("pull.prewarm.after_vmm_spawn");
        let timeout = Duration::from_secs(self.infra.config.vmm.boot_timeout_secs);
        let saved = tokio::select! {
            r = self.save(&handle, &spec.serial_log, save, timeout) => r,
            _ = cancel.cancelled() => Err(SnapshotError::Cancelled),
        };
        crate::crash_point!("pull.prewarm.after_snapshot_save");
        if let Err(e) = self.infra.driver.kill(&handle).await {
            warn!(pid = handle.pid, error = %e, "cannot kill the snapshot VM");
        }
        Ok(Some(saved?))
    }

    /// Removes the work dirs (and kills the VMMs) of prewarms a crashed
    /// daemon left behind; returns how many.
    pub fn remove_prewarm_leftovers(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(self.infra.config.snapshots_dir()) else {
            return 0;
        };
        let mut removed = 0;
        for e in entries.flatten() {
            if !e.file_name().to_string_lossy().starts_with(PREWARM_PREFIX) {
                continue;
            }
            self.infra.driver.kill_stray(&e.path());
            drop(WorkDir(e.path()));
            removed += 1;
        }
        removed
    }
}
