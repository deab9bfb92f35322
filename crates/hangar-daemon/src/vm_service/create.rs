//! `vm create`: validate, reserve the name, then (as an operation) make the
//! image local, allocate the IP, make the disk and boot. Any failure or
//! cancel removes everything made so far: VMM, TAP, disk, dir, lease, row.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use hangar_api::{CreateVmRequest, OpKind, Operation, VmState};
use hangar_config::Config;
use hangar_ops::OpHandle;
use hangar_store::{ImageRecord, VmRecord};
use tracing::{info, warn};

use super::VmService;
use crate::error::{DaemonError, Result};

/// Names reserved by creates still pulling their image (not yet stored).
#[derive(Default)]
pub struct PendingNames(Mutex<HashSet<String>>);

impl PendingNames {
    fn insert(&self, name: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string())
    }
    pub fn contains(&self, name: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name)
    }
    fn remove(&self, name: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }
}

/// Validated create parameters.
struct CreatePlan {
    name: String,
    image: String,
    cpus: u32,
    memory_mib: u32,
    /// Asked for by the request: the disk gets exactly this, or the
    /// create fails when the image is larger.
    disk_bytes: Option<u64>,
    authorized_keys: Vec<String>,
    ssh_user: Option<String>,
    run_entrypoint: bool,
}

fn plan(config: &Config, req: CreateVmRequest) -> Result<CreatePlan> {
    hangar_api::name::validate_name("VM", &req.name).map_err(DaemonError::Invalid)?;
    let cpus = req.cpus.unwrap_or(config.defaults.cpus);
    if !(1..=32).contains(&cpus) {
        return Err(DaemonError::invalid(format!(
            "cpus must be between 1 and 32, got {cpus}"
        )));
    }
    let memory_mib = req.memory_mib.unwrap_or(config.defaults.memory_mib);
    if !(128..=262_144).contains(&memory_mib) {
        return Err(DaemonError::invalid(format!(
            "memory must be between 128 MiB and 256 GiB, got {memory_mib} MiB"
        )));
    }
    let disk_bytes = req.disk_bytes;
    if let Some(b) = disk_bytes {
        hangar_api::size::check_disk_bytes(b).map_err(DaemonError::Invalid)?;
    }
    for k in &req.authorized_keys {
        if k.contains('\n')
            || !k.starts_with("ssh-") && !k.starts_with("ecdsa-") && !k.starts_with("sk-")
        {
            return Err(DaemonError::invalid(format!(
                "authorized key {:?} is not an OpenSSH public key line",
                k.chars().take(40).collect::<String>()
            )));
        }
    }
    if let Some(user) = &req.ssh_user {
        super::ssh_user::check_requested(user)?;
    }
    Ok(CreatePlan {
        name: req.name,
        image: req.image.unwrap_or_else(|| config.defaults.image.clone()),
        cpus,
        memory_mib,
        disk_bytes,
        authorized_keys: req.authorized_keys,
        ssh_user: req.ssh_user,
        run_entrypoint: req.run_entrypoint,
    })
}

impl VmService {
    /// Validates the request, reserves the name and begins the create
    /// operation. Bad input fails here, before anything is made.
    pub fn begin_create(self: &Arc<Self>, req: CreateVmRequest) -> Result<Operation> {
        let plan = plan(&self.infra.config, req)?;
        // Fails fast for an image that is neither local nor in the catalog.
        self.images.resolve_image(&plan.image)?;
        self.check_vmm_ready()?;
        {
            let _g = self.create_lock.lock().unwrap_or_else(|p| p.into_inner());
            match self.infra.store.get_vm_by_name(&plan.name) {
                Ok(_) => {
                    return Err(DaemonError::conflict(format!(
                        "a VM named {:?} already exists; pick another name or remove it with `hangar vm rm {}`",
                        plan.name, plan.name
                    )))
                }
                Err(hangar_store::StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            if !self.pending_names.insert(&plan.name) {
                return Err(DaemonError::conflict(format!(
                    "a VM named {:?} is already being created",
                    plan.name
                )));
            }
        }
        let this = self.clone();
        let name = plan.name.clone();
        Ok(crate::op::begin(
            &self.infra.ops,
            OpKind::VmCreate,
            &name,
            move |op| async move {
                let name = plan.name.clone();
                let result = this.create_work(plan, &op).await;
                this.pending_names.remove(&name);
                result
            },
        ))
    }

    /// The new VM's disk size: the request's, which must hold the image;
    /// else the image's default (its catalog entry's, `[defaults]
    /// disk_size`, or its own size).
    fn disk_bytes_for(&self, plan: &CreatePlan, image: &ImageRecord) -> Result<u64> {
        let need = image.rootfs_bytes;
        if let Some(asked) = plan.disk_bytes {
            if asked < need {
                return Err(DaemonError::invalid(format!(
                    "disk size {asked} is smaller than image {} ({need} bytes); give at least {} MiB",
                    image.name,
                    need.div_ceil(1 << 20)
                )));
            }
            return Ok(asked);
        }
        Ok(self.images.default_disk_bytes(&plan.image, image))
    }

    /// Refuses early when the VMM binary is missing, with the fix.
    pub fn check_vmm_ready(&self) -> Result<()> {
        if let Some(problem) = crate::daemon::forced_kvm_problem(&self.infra.config) {
            return Err(DaemonError::unavailable(problem));
        }
        let bin = self.infra.driver.binary();
        if crate::daemon::which(bin).is_none() {
            return Err(DaemonError::unavailable(format!(
                "the {} binary {} was not found; install it (qemu: `apt-get install qemu-system-x86`) or set [vmm] {} in the config",
                self.infra.driver.kind(),
                bin.display(),
                self.infra.driver.kind()
            )));
        }
        Ok(())
    }

    async fn create_work(
        self: &Arc<Self>,
        plan: CreatePlan,
        op: &OpHandle,
    ) -> Result<serde_json::Value> {
        crate::crash_point!("create.after_name_reserved");
        let cancel = op.cancel_token().clone();
        let image = match self.images.resolve_image(&plan.image)? {
            Some(rec) => rec,
            None => {
                op.phase("pull-image");
                self.images
                    .pull_image(&plan.image, Some(op), &cancel)
                    .await?
            }
        };
        if cancel.is_cancelled() {
            return Err(DaemonError::cancelled("create cancelled"));
        }
        let disk_bytes = self.disk_bytes_for(&plan, &image)?;
        let host_key = hangar_guest::generate_host_key().map_err(|source| DaemonError::Guest {
            context: "cannot generate a host key".into(),
            source: Box::new(source),
        })?;
        let id = hex::encode(rand::random::<[u8; 6]>());
        let draft = VmRecord {
            id: id.clone(),
            name: plan.name.clone(),
            state: VmState::Creating,
            image_name: image.name.clone(),
            image_digest: image.digest.clone(),
            cpus: plan.cpus,
            memory_mib: plan.memory_mib,
            disk_bytes,
            ip: std::net::Ipv4Addr::UNSPECIFIED,
            mac: String::new(),
            driver: self.infra.driver.kind().to_string(),
            host_key_public: host_key.public_openssh,
            host_key_private: host_key.private_openssh,
            runtime: None,
            created_at: hangar_host::time::now_utc(),
            last_error: None,
        };
        // VM lock first, then the narrow create lock (lock order).
        let _vm_guard = self.locks.lock(&id).await;
        let rec = {
            let _g = self.create_lock.lock().unwrap_or_else(|p| p.into_inner());
            let gw = self.infra.net.gateway();
            self.infra.store.insert_vm_with_lease(
                &draft,
                self.infra.config.network.subnet,
                &[gw],
            )?
        };
        info!(vm = %rec.name, id = %rec.id, ip = %rec.ip, "VM record created");
        crate::crash_point!("create.after_row_and_lease");
        match self.provision_and_boot(&rec, &plan, op).await {
            Ok(rec) => {
                crate::crash_point!("create.after_ready");
                Ok(serde_json::to_value(self.vm_info(&rec)).unwrap_or_default())
            }
            Err(mut e) => {
                warn!(vm = %rec.name, error = %crate::error::error_chain(&e), "create failed; cleaning up");
                self.keep_failed_console_log(&rec, &mut e).await;
                self.remove_vm_files_and_row(&rec).await;
                Err(e)
            }
        }
    }

    async fn provision_and_boot(
        &self,
        rec: &VmRecord,
        plan: &CreatePlan,
        op: &OpHandle,
    ) -> Result<VmRecord> {
        let cancel = op.cancel_token().clone();
        let vm_dir = self.vm_dir(&rec.id);
        hangar_host::private::create_private_dir(vm_dir.path()).map_err(|e| {
            DaemonError::io(
                format!("cannot create VM dir {}", vm_dir.path().display()),
                e,
            )
        })?;
        if !plan.authorized_keys.is_empty() {
            hangar_host::private::write_private(
                &vm_dir.user_keys(),
                plan.authorized_keys.join("\n") + "\n",
            )
            .map_err(|e| DaemonError::io("cannot write authorized keys", e))?;
        }
        let login = super::ssh_user::choose(
            plan.ssh_user.as_deref(),
            self.images.run_config(&rec.image_digest).as_ref(),
        );
        super::ssh_user::write(&vm_dir, login.as_deref())?;
        if plan.run_entrypoint {
            hangar_host::private::write_private(&vm_dir.run_entrypoint(), "")
                .map_err(|e| DaemonError::io("cannot record --run-entrypoint", e))?;
        }
        crate::crash_point!("create.after_vm_dir");
        op.phase("disk");
        let (image_dir, manifest) = self.image_files(rec)?;
        let rootfs = image_dir.join(&manifest.rootfs);
        let disks = self.infra.disks.clone();
        let dest = vm_dir.disk();
        let size = rec.disk_bytes;
        let disk = tokio::task::spawn_blocking(move || disks.create(&rootfs, &dest, size))
            .await
            .map_err(|source| DaemonError::Task {
                what: "disk",
                source,
            })?;
        disk.map_err(|e| DaemonError::disk("cannot create the VM disk", e))?;
        crate::crash_point!("create.after_disk");
        if cancel.is_cancelled() {
            return Err(DaemonError::cancelled("create cancelled"));
        }
        // The state stays `creating` until the guest answers: a daemon
        // restart in between then undoes the whole create.
        self.boot_vm(rec, Some(op), &cancel).await
    }

    /// A failed create removes the VM dir; its console log, which usually
    /// says why the boot failed, moves to `state_dir/logs/` (both parts,
    /// in order) and the error points there. Only the newest
    /// `[vmm] failed_console_logs_kept` such logs are kept.
    async fn keep_failed_console_log(&self, rec: &VmRecord, e: &mut DaemonError) {
        let log = self.vm_dir(&rec.id).serial_log();
        if !log.exists() {
            return;
        }
        let config = &self.infra.config;
        let logs = config.state_dir.join("logs");
        let kept = logs.join(format!(
            "{}-{}{}",
            rec.name,
            rec.id,
            crate::console_log::prune::FAILED_LOG_SUFFIX
        ));
        // logs/ is private; the copy is made 0600 (root's, whatever uid the
        // VMM wrote the console as).
        // Up to twice the cap (more if the daemon was away): on the
        // blocking pool, like the pruning.
        let (console_logs, keep) = (
            self.console_logs.clone(),
            config.vmm.failed_console_logs_kept,
        );
        let kept2 = kept.clone();
        let copied = crate::blocking::off_runtime("keeping a console log", move || {
            hangar_host::private::create_private_dir(&logs)?;
            let view = console_logs.view(&log)?;
            let start = view.start();
            let mut reader = view.into_reader(start, u64::MAX)?;
            let mut out = hangar_host::private::create_private_file(&kept2)?;
            std::io::copy(&mut reader, &mut out)?;
            console_logs.start_over(&log);
            crate::console_log::prune::prune_failed_logs(&logs, keep);
            Ok::<_, std::io::Error>(())
        })
        .await;
        match copied {
            Ok(Ok(())) => {
                if let DaemonError::BootTimeout { serial_log, .. } = e {
                    *serial_log = kept;
                }
            }
            Ok(Err(err)) => {
                warn!(vm = %rec.name, error = %err, "cannot keep the console log of a failed create")
            }
            Err(err) => {
                warn!(vm = %rec.name, error = %err, "cannot keep the console log of a failed create")
            }
        }
    }

    /// Removes everything a VM owns on the host and its store row + lease.
    /// The VMM must already be gone (or is killed here if recorded).
    pub async fn remove_vm_files_and_row(&self, rec: &VmRecord) {
        if let Ok(current) = self.infra.store.get_vm(&rec.id) {
            if let Some(rt) = &current.runtime {
                // The row goes below anyway; a runtime that could not be
                // cleared first is only worth a line in the log.
                if let Err(e) = self.tear_down(&rec.id, rt).await {
                    warn!(vm = %rec.name, error = %e, "cannot clear the VM's runtime");
                }
            }
        }
        self.guests.forget(&rec.id);
        let vm_dir = self.vm_dir(&rec.id);
        // Off the async workers: a disk is gigabytes, and the dm backend
        // runs tools.
        let (disks, disk) = (self.infra.disks.clone(), vm_dir.disk());
        match crate::blocking::off_runtime("disk removal", move || disks.remove(&disk)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "cannot remove VM disk"),
            Err(e) => warn!(error = %e, "cannot remove VM disk"),
        }
        crate::crash_point!("rm.after_disk_removed");
        if let Some(e) = crate::blocking::remove_tree(vm_dir.path().to_path_buf()).await {
            warn!(dir = %vm_dir.path().display(), error = %e, "cannot remove VM dir");
        }
        crate::crash_point!("rm.after_dir_removed");
        if let Err(e) = self.infra.store.delete_vm(&rec.id) {
            warn!(vm = %rec.name, error = %e, "cannot delete VM row");
        }
        crate::crash_point!("rm.after_row_deleted");
        self.locks.forget(&rec.id);
    }
}
