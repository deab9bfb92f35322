//! `image promote VM NAME`: a VM's current disk becomes a new image, with
//! its lineage (parent image, VM, time) in the manifest.
//!
//! A running VM is refused unless the caller asks to stop it first
//! (`--stop`): a copy of a live ext4 is not a consistent filesystem, and
//! freezing the guest's filesystems over SSH would need `fsfreeze` in every
//! image (a busybox or single-binary image has none) and would still race
//! with the guest's page cache. A stopped VM's disk was synced and
//! unmounted by its power-off, so the copy is exact. The copy is a reflink
//! where the filesystem allows (instant), else sparse; the parent's kernel
//! and initrd come with it. Everything happens in a private staging dir,
//! removed on failure or cancel; the image is recorded only when whole.

use std::path::PathBuf;
use std::sync::Arc;

use hangar_api::{OpKind, Operation, PromoteImageRequest, VmState};
use hangar_image::{Lineage, INITRD_FILE, KERNEL_FILE, ROOTFS_FILE};

use super::VmService;
use crate::error::{DaemonError, Result};
use crate::image_service::upload::StagingDir;

impl VmService {
    /// Checks the request and begins the promotion as an operation.
    pub fn begin_promote(self: &Arc<Self>, req: PromoteImageRequest) -> Result<Operation> {
        hangar_api::name::validate_name("image", &req.name).map_err(DaemonError::Invalid)?;
        let rec = self.find_vm(&req.vm)?;
        self.images.refuse_taken_name(&req.name)?;
        if rec.state != VmState::Stopped && !req.stop {
            return Err(DaemonError::conflict(format!(
                "VM {} is {}; stop it first (`hangar vm stop {}`) or pass --stop: a running VM's disk is not a consistent copy",
                rec.name,
                rec.state.as_str(),
                rec.name
            )));
        }
        let this = self.clone();
        Ok(crate::op::begin(
            &self.infra.ops,
            OpKind::ImagePromote,
            &req.name.clone(),
            move |op| async move {
                let _g = this.locks.lock(&rec.id).await;
                let mut rec = this.infra.store.get_vm(&rec.id)?;
                if rec.runtime.is_some() {
                    if !req.stop {
                        return Err(DaemonError::conflict(format!(
                            "VM {} was started meanwhile; stop it or pass --stop",
                            rec.name
                        )));
                    }
                    rec = this.stop_locked(&rec, Some(&op)).await?;
                }
                let (image_dir, parent) = this.image_files(&rec)?;
                let staging = StagingDir::create(&this.infra.config.images_dir())?;
                op.phase("copy-disk");
                let disks = this.infra.disks.clone();
                let (rootfs, disk) = (image_dir.join(&parent.rootfs), this.vm_dir(&rec.id).disk());
                let (out, kdir, manifest_initrd) = (
                    staging.path().to_path_buf(),
                    image_dir.clone(),
                    parent.initrd.clone(),
                );
                let kernel_name = parent.kernel.clone();
                let cancel = op.cancel_token().clone();
                let bytes = crate::blocking::off_runtime(
                    "promote copy",
                    move || -> std::result::Result<u64, DaemonError> {
                        // A dm disk is read through its block device; a file disk is the file.
                        let source: PathBuf = disks
                            .activate(&rootfs, &disk)
                            .map_err(|e| DaemonError::disk("cannot open the VM disk", e))?;
                        let copied = copy(&source, &out.join(ROOTFS_FILE), &cancel);
                        let _ = disks.deactivate(&disk);
                        copied?;
                        copy(&kdir.join(&kernel_name), &out.join(KERNEL_FILE), &cancel)?;
                        if let Some(i) = &manifest_initrd {
                            copy(&kdir.join(i), &out.join(INITRD_FILE), &cancel)?;
                        }
                        let len = std::fs::metadata(out.join(ROOTFS_FILE))
                            .map_err(|e| DaemonError::io("cannot stat the copied disk", e))?
                            .len();
                        Ok(len)
                    },
                )
                .await??;
                let lineage = Lineage {
                    image: parent.digest.clone(),
                    image_name: rec.image_name.clone(),
                    vm: rec.name.clone(),
                    promoted_at: hangar_host::time::now_utc(),
                };
                let mut manifest =
                    parent.promoted(&format!("promote:{}", rec.name), bytes, lineage);
                manifest.kernel = KERNEL_FILE.to_string();
                manifest.initrd = parent.initrd.as_ref().map(|_| INITRD_FILE.to_string());
                manifest.rootfs = ROOTFS_FILE.to_string();
                manifest.digest = manifest.compute_digest();
                manifest
                    .save(staging.path())
                    .map_err(|e| DaemonError::image("cannot write the manifest", e))?;
                op.phase("store");
                let info = this.images.store_new(&req.name, staging, &manifest).await?;
                tracing::info!(image = %req.name, vm = %rec.name, digest = %info.digest, "VM disk promoted to an image");
                Ok(serde_json::to_value(info).unwrap_or_default())
            },
        ))
    }
}

/// `cp --reflink=auto --sparse=always` into a new private file; killed on
/// cancel.
fn copy(
    from: &std::path::Path,
    to: &std::path::Path,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<()> {
    hangar_host::private::create_private_file(to)
        .map_err(|e| DaemonError::io(format!("cannot create {}", to.display()), e))?;
    hangar_host::Tool::new("cp")
        .args(["--reflink=auto", "--sparse=always", "--"])
        .arg(from)
        .arg(to)
        .cancel_on(cancel)
        .run_blocking()
        .map(drop)
        .map_err(|e| {
            if cancel.is_cancelled() {
                DaemonError::cancelled("the promotion was cancelled")
            } else {
                DaemonError::io(
                    format!("cannot copy {}", from.display()),
                    std::io::Error::other(e.to_string()),
                )
            }
        })
}
