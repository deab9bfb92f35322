//! Booting a VM that already has its disk, as named steps:
//! config drive → attach disk → attach TAP → start VMM (resuming the boot
//! snapshot of its image and shape, or booting the kernel) → record the
//! runtime → save a boot snapshot (when planned) → wait until SSH answers.
//! Shared by create and start. Each step records what it made in one
//! [`BootUndo`]; any failure or cancel undoes them all (VMM killed, runtime
//! cleared, TAP returned, disk deactivated) and leaves the disk file alone.

mod undo;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hangar_api::{Progress, VmState};
use hangar_guest::GuestClient;
use hangar_image::identity::{
    fill_config_drive, write_config_drive, write_snapshot_drive, GuestIdentity, LoginKeys,
    RANDOM_SEED_BYTES,
};
use hangar_image::ImageManifest;
use hangar_ops::OpHandle;
use hangar_store::{VmRecord, VmRuntime};
use hangar_vmm::{VmSpec, VmmHandle};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use undo::{handle_of, BootUndo};

use super::dir::VmDir;
use super::VmService;
use crate::boot_gate::BootPermit;
use crate::error::{error_chain, DaemonError, Result};
use crate::machine::{vm_spec, MachineSpec};
use crate::snapshot_service::{SnapshotPlan, SnapshotSave};

/// The phase of a boot waiting for a slot.
pub fn queued_phase(ahead: usize) -> String {
    format!("queued, {ahead} ahead")
}

/// Reports a boot's phases on its operation, if it has one.
struct Phases<'a>(Option<&'a OpHandle>);

impl Phases<'_> {
    fn enter(&self, phase: &str, detail: Option<String>) {
        if let Some(op) = self.0 {
            op.progress(Progress {
                phase: phase.to_string(),
                detail,
                ..Default::default()
            });
        }
    }
}

impl VmService {
    /// The directory and manifest of the image a VM was made from.
    pub fn image_files(&self, rec: &VmRecord) -> Result<(PathBuf, ImageManifest)> {
        let image = self.infra.store.get_image(&rec.image_digest).map_err(|e| {
            DaemonError::not_found(format!(
                "image {} of VM {:?} is gone ({e}); remove the VM and create it again",
                rec.image_name, rec.name
            ))
        })?;
        let dir = PathBuf::from(&image.dir);
        let manifest = ImageManifest::load(&dir).map_err(|e| {
            DaemonError::image(format!("cannot read manifest of image {}", image.name), e)
        })?;
        Ok((dir, manifest))
    }

    /// Boots `rec` and waits until its guest accepts SSH. The caller holds
    /// the VM lock.
    pub async fn boot_vm(
        &self,
        rec: &VmRecord,
        op: Option<&OpHandle>,
        cancel: &CancellationToken,
    ) -> Result<VmRecord> {
        let dir = self.vm_dir(&rec.id);
        let mut undo = BootUndo::new(self.infra.clone(), &rec.id, dir.disk());
        match self
            .boot_steps(rec, &dir, Phases(op), cancel, &mut undo)
            .await
        {
            Ok(client) => {
                undo.keep();
                self.guests.put_control(&rec.id, client);
                Ok(self.infra.store.get_vm(&rec.id)?)
            }
            Err(e) => {
                // The boot's own error is the one to report; a runtime row
                // left behind is logged by the undo and fixed by reconcile.
                let _ = undo.undo().await;
                Err(e)
            }
        }
    }

    async fn boot_steps(
        &self,
        rec: &VmRecord,
        dir: &VmDir,
        phases: Phases<'_>,
        cancel: &CancellationToken,
        undo: &mut BootUndo,
    ) -> Result<Arc<GuestClient>> {
        let (image_dir, manifest) = self.image_files(rec)?;
        // Held until the guest is ready (or the boot fails): the boot
        // clock, which starts with the VMM, never runs while queued.
        let _slot = self.admit_boot(&rec.name, &phases, cancel).await?;

        phases.enter("config-drive", None);
        let identity = self.guest_identity(rec, dir);
        write_config_drive(&dir.config_drive(), &identity)
            .map_err(|e| DaemonError::image("cannot write the VM config drive", e))?;
        crate::crash_point!("boot.after_config_drive");

        phases.enter("disk-activate", None);
        let root_disk = self.attach_disk(&image_dir, &manifest, dir, undo).await?;
        crate::crash_point!("boot.after_disk_activated");

        phases.enter("network", None);
        let tap = self.attach_tap(rec, undo).await?;
        crate::crash_point!("boot.after_tap");

        let run_as = crate::confine::vm_run_as(&self.infra.config, rec.ip);
        if self.infra.config.vmm.confine && run_as.is_none() {
            // Never fall back to a VMM running as root.
            return Err(DaemonError::invalid(format!(
                "VM {:?} has address {}, outside [network] subnet {}: no VMM uid can be derived for it, and confined VMMs never run as root; remove it (`hangar vm rm {}`) or put the subnet back",
                rec.name, rec.ip, self.infra.config.network.subnet, rec.name
            )));
        }
        let initrd = crate::guest_agent::boot_initrd_for(
            self.infra.agent.clone(),
            image_dir.clone(),
            manifest.clone(),
        )
        .await?;
        let mut spec = vm_spec(
            &self.infra,
            MachineSpec {
                id: &rec.id,
                name: &rec.name,
                cpus: rec.cpus,
                memory_mib: rec.memory_mib,
                image_dir: &image_dir,
                manifest: &manifest,
                initrd,
                root_disk,
                vm_dir: dir,
                tap: tap.clone(),
                mac: rec.mac.clone(),
                run_as,
            },
        );
        if let Some(ids) = spec.run_as {
            crate::confine::open_dir_to_vmm(dir.path(), ids)
                .map_err(|e| DaemonError::io("cannot open the VM dir to its confined VMM", e))?;
        }
        let plan = self.snapshot_plan(rec, &manifest, &mut spec, dir);

        phases.enter(
            "boot",
            Some(format!(
                "{} driver, {}",
                self.infra.driver.kind(),
                plan.describe()
            )),
        );
        let vmm_started = Instant::now();
        let handle = self.start_vmm(&mut spec, &rec.name, undo).await?;
        crate::crash_point!("boot.after_vmm_spawn");
        let boot_kind = match plan {
            SnapshotPlan::Restore(_) if spec.restore_from.is_none() => {
                "kernel boot (the boot snapshot did not restore)"
            }
            _ => plan.describe(),
        };
        // The boot clock starts with the VMM that runs (after a snapshot
        // that failed to restore, with the kernel boot that replaced it).
        let started = Instant::now();
        self.record_runtime(&rec.id, &handle, &tap, undo)?;
        crate::crash_point!("boot.after_runtime_row");

        let boot_timeout = Duration::from_secs(self.infra.config.vmm.boot_timeout_secs);
        if let SnapshotPlan::Save(save) = plan {
            phases.enter("snapshot", None);
            self.save_snapshot_and_resume(
                rec,
                &handle,
                &spec.serial_log,
                (&dir.config_drive(), &identity),
                save,
                boot_timeout,
                cancel,
            )
            .await?;
        }

        phases.enter("wait-ssh", None);
        // One deadline for the whole boot, snapshot included.
        let deadline = boot_timeout
            .saturating_sub(started.elapsed())
            .max(Duration::from_secs(1));
        let client = self
            .wait_ready(rec, &spec.serial_log, deadline, boot_timeout, cancel)
            .await?;
        crate::crash_point!("boot.after_ssh_ready");
        self.start_entrypoint(rec, &client).await?;
        info!(vm = %rec.name, boot = boot_kind, boot_to_ssh_ms = vmm_started.elapsed().as_millis() as u64, "guest ready");
        self.infra
            .store
            .set_vm_state(&rec.id, VmState::Running, None)?;
        Ok(client)
    }

    /// Waits for a boot slot ([`crate::boot_gate`]), showing the place in
    /// the queue as the phase `queued, N ahead`.
    async fn admit_boot(
        &self,
        name: &str,
        phases: &Phases<'_>,
        cancel: &CancellationToken,
    ) -> Result<BootPermit> {
        let gate = &self.infra.boot_gate;
        let limit = gate.limit();
        gate.acquire(cancel, |ahead| {
            phases.enter(
                &queued_phase(ahead),
                Some(format!(
                    "waiting for one of {limit} boot slots ([vmm] max_concurrent_boots)"
                )),
            )
        })
        .await
        .map_err(|_| DaemonError::cancelled(format!("boot of VM {name:?} cancelled while queued")))
    }

    /// What the guest learns from its config drive: name, address, keys.
    fn guest_identity(&self, rec: &VmRecord, dir: &VmDir) -> GuestIdentity {
        let net = &self.infra.net;
        let user_keys: Vec<String> = std::fs::read_to_string(dir.user_keys())
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        let login_keys = super::ssh_user::read(dir).map(|user| LoginKeys {
            user,
            keys: user_keys,
        });
        GuestIdentity {
            hostname: rec.name.clone(),
            ip: rec.ip,
            prefix_len: net.prefix_len(),
            gateway: net.gateway(),
            dns: net.guest_dns(),
            authorized_keys: vec![self.infra.key.public_openssh()],
            login_keys,
            host_key_private_openssh: rec.host_key_private.clone(),
            host_key_public_openssh: rec.host_key_public.clone(),
            mac: rec.mac.clone(),
            random_seed: {
                let mut seed = vec![0u8; RANDOM_SEED_BYTES];
                rand::Rng::fill(&mut rand::rng(), seed.as_mut_slice());
                seed
            },
        }
    }

    /// Makes the disk openable by the VMM (a block device for dm disks);
    /// returns the path the VMM opens.
    async fn attach_disk(
        &self,
        image_dir: &Path,
        manifest: &ImageManifest,
        dir: &VmDir,
        undo: &mut BootUndo,
    ) -> Result<PathBuf> {
        let disks = self.infra.disks.clone();
        let (rootfs, disk) = (image_dir.join(&manifest.rootfs), dir.disk());
        let root_disk = tokio::task::spawn_blocking(move || disks.activate(&rootfs, &disk))
            .await
            .map_err(|source| DaemonError::Task {
                what: "disk",
                source,
            })?
            .map_err(|e| DaemonError::disk("cannot activate the VM disk", e))?;
        undo.disk_activated();
        Ok(root_disk)
    }

    /// Takes a TAP and binds it to the VM's MAC and IP: the only
    /// addresses its frames may carry.
    async fn attach_tap(&self, rec: &VmRecord, undo: &mut BootUndo) -> Result<String> {
        let tap = self
            .infra
            .net
            .acquire_tap()
            .await
            .map_err(|e| DaemonError::net("cannot get a TAP device for the VM", e))?;
        undo.tap_acquired(&tap);
        self.infra
            .net
            .bind_tap(&tap, &rec.mac, rec.ip)
            .await
            .map_err(|e| DaemonError::net("cannot bind the TAP device to the VM's addresses", e))?;
        Ok(tap)
    }

    /// Chooses how this boot uses boot snapshots and prepares the spec and
    /// config drive for it.
    fn snapshot_plan(
        &self,
        rec: &VmRecord,
        manifest: &ImageManifest,
        spec: &mut VmSpec,
        dir: &VmDir,
    ) -> SnapshotPlan {
        let plan = self.snapshots.plan(&rec.image_digest, manifest, spec);
        match &plan {
            SnapshotPlan::Restore(state) => spec.restore_from = Some(state.clone()),
            SnapshotPlan::Save(_) => {
                // The guest waits at its snapshot point until this drive is
                // filled in place with the real one.
                if let Err(e) = write_snapshot_drive(&dir.config_drive()) {
                    warn!(vm = %rec.name, error = %e, "cannot write the snapshot drive; booting without saving a snapshot");
                    return SnapshotPlan::Cold;
                }
            }
            SnapshotPlan::Cold => {}
        }
        plan
    }

    /// Starts the VMM. A snapshot that does not restore (QEMU refuses the
    /// state) is removed and the VM boots its kernel instead; the next
    /// boot saves a fresh snapshot.
    async fn start_vmm(
        &self,
        spec: &mut VmSpec,
        name: &str,
        undo: &mut BootUndo,
    ) -> Result<VmmHandle> {
        let driver = &self.infra.driver;
        // A fresh serial log per boot, so a timeout points at this boot.
        self.console_logs.start_over(&spec.serial_log);
        let started = match spec.restore_from.clone() {
            None => driver.start(spec).await,
            Some(state) => {
                let note = format!(
                    "hangar: resuming boot snapshot {}: the kernel's boot messages are in the guest's dmesg\n",
                    state.display()
                );
                let _ = hangar_host::private::write_private(&spec.serial_log, note);
                match driver.start(spec).await {
                    Ok(h) => Ok(h),
                    Err(e) => {
                        warn!(vm = name, snapshot = %state.display(), error = %e, "boot snapshot does not restore; removing it and booting the kernel");
                        self.snapshots.discard(&state);
                        spec.restore_from = None;
                        self.console_logs.start_over(&spec.serial_log);
                        driver.start(spec).await
                    }
                }
            }
        };
        let handle = started
            .map_err(|e| DaemonError::vmm(format!("cannot start the VMM for {name:?}"), e))?;
        undo.vmm_started(&handle);
        Ok(handle)
    }

    fn record_runtime(
        &self,
        vm_id: &str,
        handle: &VmmHandle,
        tap: &str,
        undo: &mut BootUndo,
    ) -> Result<()> {
        let runtime = VmRuntime {
            pid: handle.pid,
            start_time: handle.start_time,
            api_socket: handle.api_socket.display().to_string(),
            tap: tap.to_string(),
        };
        self.infra.store.set_vm_runtime(vm_id, Some(&runtime))?;
        undo.runtime_recorded();
        Ok(())
    }

    /// Waits for the snapshot point and saves the boot snapshot (a failure
    /// there is only logged), then hands the guest its real config drive
    /// and runs it on.
    #[allow(clippy::too_many_arguments)]
    async fn save_snapshot_and_resume(
        &self,
        rec: &VmRecord,
        handle: &VmmHandle,
        serial_log: &Path,
        (config_drive, identity): (&Path, &GuestIdentity),
        save: SnapshotSave,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let began = Instant::now();
        let saved = tokio::select! {
            r = self.snapshots.save(handle, serial_log, save, timeout) => r,
            _ = cancel.cancelled() => {
                return Err(DaemonError::cancelled(format!("boot of VM {:?} cancelled", rec.name)));
            }
        };
        match saved {
            Ok(path) => {
                info!(vm = %rec.name, snapshot = %path.display(), ms = began.elapsed().as_millis() as u64, "boot snapshot saved")
            }
            Err(e) => {
                warn!(vm = %rec.name, error = %error_chain(&e), "boot snapshot not saved; the VM boots on")
            }
        }
        crate::crash_point!("boot.after_snapshot_save");
        // Whatever happened, the guest gets its identity and runs on.
        fill_config_drive(config_drive, identity)
            .map_err(|e| DaemonError::image("cannot write the VM config drive", e))?;
        if let Err(e) = self.infra.driver.resume(handle).await {
            warn!(vm = %rec.name, error = %e, "cannot resume the VM after saving its boot snapshot");
        }
        Ok(())
    }

    /// Waits until the guest answers SSH; returns the connection.
    async fn wait_ready(
        &self,
        rec: &VmRecord,
        serial_log: &Path,
        deadline: Duration,
        boot_timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<Arc<GuestClient>> {
        let connector = self.guest_connector();
        let target = Self::guest_target(rec);
        tokio::select! {
            r = hangar_guest::wait_ready(&connector, &target, &self.infra.key, deadline) => r.map(Arc::new).map_err(|e| {
                DaemonError::BootTimeout {
                    name: rec.name.clone(),
                    secs: boot_timeout.as_secs(),
                    serial_log: serial_log.to_path_buf(),
                    console_tail: crate::console::console_tail(serial_log),
                    source: Box::new(e),
                }
            }),
            _ = cancel.cancelled() => Err(DaemonError::cancelled(format!("boot of VM {:?} cancelled", rec.name))),
        }
    }

    /// Ends what a boot made for a VM's recorded runtime — VMM killed,
    /// TAP returned, disk deactivated, runtime cleared — and forgets its
    /// guest connection. The VM's state is the caller's to set.
    pub async fn tear_down(&self, vm_id: &str, rt: &VmRuntime) -> Result<()> {
        self.guests.forget(vm_id);
        BootUndo::of_runtime(self.infra.clone(), vm_id, self.vm_dir(vm_id).disk(), rt)
            .undo()
            .await?;
        Ok(())
    }

    /// [`VmService::tear_down`], then records the VM stopped (a store
    /// failure is logged: the next reconcile sees the same).
    pub async fn tear_down_stopped(&self, vm_id: &str, rt: &VmRuntime) {
        if let Err(e) = self.tear_down(vm_id, rt).await {
            warn!(vm = vm_id, error = %e, "cannot clear the VM's runtime");
        }
        if let Err(e) = self.infra.store.set_vm_state(vm_id, VmState::Stopped, None) {
            warn!(vm = vm_id, error = %e, "cannot record the VM stopped");
        }
    }
}
