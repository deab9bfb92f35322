//! `image promote VM NAME`: a VM's current disk becomes a new image, with
//! its lineage (parent image, VM, time) in the manifest.
//!
//! A running VM is refused unless the caller asks to stop it for the copy
//! (`--stop`; it is started again after, whether the promotion worked,
//! failed or was cancelled; not when the daemon stops meanwhile, nor when
//! `vm rm --force` cancelled it to remove the VM): a copy
//! of a live ext4 is not a consistent filesystem, and
//! freezing the guest's filesystems over SSH would need `fsfreeze` in every
//! image (a busybox or single-binary image has none) and would still race
//! with the guest's page cache. A stopped VM's disk was synced and
//! unmounted by its power-off, so the copy is exact. The copy is a reflink
//! where the filesystem allows (instant), else sparse; the parent's kernel
//! and initrd come with it. Everything happens in a private staging dir,
//! removed on failure or cancel; the image is recorded only when whole.

use std::path::PathBuf;
use std::sync::Arc;

use hangar_api::{ImageInfo, OpKind, Operation, PromoteImageRequest, VmState};
use hangar_image::{Lineage, INITRD_FILE, KERNEL_FILE, ROOTFS_FILE};
use hangar_ops::OpHandle;
use hangar_store::VmRecord;

use super::boot::handle_of;
use super::VmService;
use crate::error::{DaemonError, Result};
use crate::image_service::upload::StagingDir;

impl VmService {
    /// Checks the request and begins the promotion as an operation.
    pub fn begin_promote(self: &Arc<Self>, req: PromoteImageRequest) -> Result<Operation> {
        hangar_api::name::validate_name("image", &req.name).map_err(DaemonError::Invalid)?;
        let rec = self.find_vm(&req.vm)?;
        self.images.refuse_taken_name(&req.name)?;
        if rec.state != VmState::Stopped {
            if !req.stop {
                return Err(DaemonError::conflict(format!(
                    "VM {} is {}; stop it first (`hangar vm stop {}`) or pass --stop: a running VM's disk is not a consistent copy",
                    rec.name,
                    rec.state.as_str(),
                    rec.name
                )));
            }
            // It is to be started again after the copy: a host that
            // cannot start it must not get to stop it.
            self.check_vmm_ready()?;
        }
        let this = self.clone();
        Ok(crate::op::begin(
            &self.infra.ops,
            OpKind::ImagePromote,
            &req.name.clone(),
            move |op| async move {
                // Registered before the lock, so that a `vm rm --force`
                // coming while this waits for it cancels it too.
                let promotion = this.promotions.register(op.id(), &rec.id);
                let _g = this.locks.lock(&rec.id).await;
                if op.cancel_token().is_cancelled() {
                    return Err(DaemonError::cancelled("the promotion was cancelled"));
                }
                let mut rec = this.infra.store.get_vm(&rec.id)?;
                // A VM that already powered itself off (its runtime is
                // cleared a moment later) is torn down but not started.
                let stopped_here = rec
                    .runtime
                    .as_ref()
                    .is_some_and(|rt| this.infra.driver.is_alive(&handle_of(rt)));
                if rec.runtime.is_some() {
                    if !req.stop {
                        return Err(DaemonError::conflict(format!(
                            "VM {} was started meanwhile; stop it or pass --stop",
                            rec.name
                        )));
                    }
                    rec = this.stop_locked(&rec, Some(&op)).await?;
                }
                let promoted = this.promote_stopped(&rec, &req.name, &op).await;
                if stopped_here {
                    if this.infra.shutdown.is_cancelled() {
                        // The daemon is going down: the VM stays stopped.
                        tracing::warn!(vm = %rec.name, "the daemon is stopping: the VM stopped for a promotion stays stopped");
                    } else if promotion.vm_is_being_removed() {
                        tracing::info!(vm = %rec.name, "the VM stopped for a promotion is being removed: not started again");
                    } else {
                        // Stopped only for the copy: it runs again whatever
                        // the copy's outcome, even after the user's cancel
                        // (only the daemon's shutdown stops that boot).
                        op.phase("start-again");
                        let again = this
                            .start_locked_until(&rec, &op, &this.infra.shutdown.child_token())
                            .await;
                        if let Err(e) = again {
                            return Err(not_started_again(promoted, &rec.name, &req.name, &e));
                        }
                    }
                }
                let info = promoted?;
                Ok(serde_json::to_value(info).unwrap_or_default())
            },
        ))
    }

    /// Copies a stopped VM's disk (and its image's kernel and initrd) into
    /// a staging dir and stores it as the image `name`.
    async fn promote_stopped(
        &self,
        rec: &VmRecord,
        name: &str,
        op: &OpHandle,
    ) -> Result<ImageInfo> {
        let (image_dir, parent) = self.image_files(rec)?;
        let staging = StagingDir::create(&self.infra.config.images_dir())?;
        crate::pause_point!("promote.before_copy");
        let cancel = op.cancel_token().clone();
        if cancel.is_cancelled() {
            return Err(DaemonError::cancelled("the promotion was cancelled"));
        }
        op.phase("copy-disk");
        let disks = self.infra.disks.clone();
        let (rootfs, disk) = (image_dir.join(&parent.rootfs), self.vm_dir(&rec.id).disk());
        let (out, kdir, manifest_initrd) = (
            staging.path().to_path_buf(),
            image_dir.clone(),
            parent.initrd.clone(),
        );
        let kernel_name = parent.kernel.clone();
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
        let mut manifest = parent.promoted(&format!("promote:{}", rec.name), bytes, lineage);
        manifest.kernel = KERNEL_FILE.to_string();
        manifest.initrd = parent.initrd.as_ref().map(|_| INITRD_FILE.to_string());
        manifest.rootfs = ROOTFS_FILE.to_string();
        manifest.digest = manifest.compute_digest();
        manifest
            .save(staging.path())
            .map_err(|e| DaemonError::image("cannot write the manifest", e))?;
        op.phase("store");
        let info = self.images.store_new(name, staging, &manifest).await?;
        tracing::info!(image = %name, vm = %rec.name, digest = %info.digest, "VM disk promoted to an image");
        Ok(info)
    }
}

/// The error when a VM stopped for a promotion did not boot again. The
/// VM is left in the error state with that failure as its message. A
/// promotion that had failed keeps its own error and kind (what the user
/// asked about), with the VM's fate added; one that worked says the image
/// exists, so nobody makes it again.
fn not_started_again(
    promoted: Result<ImageInfo>,
    vm: &str,
    image: &str,
    e: &DaemonError,
) -> DaemonError {
    let why = crate::error::error_chain(e);
    match promoted {
        Ok(_) => DaemonError::unavailable(format!(
            "image {image} was made from VM {vm}'s disk, but {vm} did not start again: {why}; start it with `hangar vm start {vm}`"
        )),
        Err(p) => {
            tracing::warn!(vm, error = %why, "a VM stopped for a failed promotion did not start again");
            p.with_note(&format!(
                "VM {vm}, stopped for the copy, did not start again: {why}; start it with `hangar vm start {vm}`"
            ))
        }
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
