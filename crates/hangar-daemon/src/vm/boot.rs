//! Booting a VM that already has its disk: identity → config drive → TAP →
//! VMM (resuming the boot snapshot of its image and shape, or booting the
//! kernel and saving one) → SSH readiness. Shared by create and start. On
//! any failure it undoes its own steps (VMM killed, TAP returned) and leaves
//! the disk alone.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hangar_api::{Progress, VmState};
use hangar_image::identity::{
    fill_config_drive, write_config_drive, write_snapshot_drive, GuestIdentity, RANDOM_SEED_BYTES,
    SNAPSHOT_POINT_MESSAGE,
};
use hangar_image::{kernel_cmdline, CmdlineOptions, ImageManifest};
use hangar_ops::OpHandle;
use hangar_store::{VmRecord, VmRuntime};
use hangar_vmm::{Drive, VmSpec, VmmHandle};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::snapshot::{SnapshotError, SnapshotSave};
use crate::daemon::Daemon;
use crate::error::{DaemonError, Result};

/// What [`Daemon::vm_spec`] needs: the VM, its shape and its files.
pub(crate) struct MachineSpec<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub cpus: u32,
    pub memory_mib: u32,
    pub image_dir: &'a std::path::Path,
    pub manifest: &'a ImageManifest,
    /// The root disk as the VMM opens it (file or block device).
    pub root_disk: PathBuf,
    /// Holds `config.img`, the serial log and the VMM's files.
    pub vm_dir: &'a std::path::Path,
    pub tap: String,
    pub mac: String,
}

/// How a boot uses boot snapshots.
enum SnapshotPlan {
    /// A plain kernel boot.
    Cold,
    /// Resume this saved state.
    Restore(PathBuf),
    /// Boot the kernel, save the VM at its snapshot point, then run on.
    Save(SnapshotSave),
}

impl SnapshotPlan {
    fn describe(&self) -> &'static str {
        match self {
            SnapshotPlan::Cold => "kernel boot",
            SnapshotPlan::Restore(_) => "resumed from boot snapshot",
            SnapshotPlan::Save(_) => "kernel boot, saving a boot snapshot",
        }
    }
}

/// The config drive in a VM dir.
pub const CONFIG_DRIVE_FILE: &str = "config.img";
/// File in the VM dir holding the user's extra authorized keys.
pub const USER_KEYS_FILE: &str = "authorized_keys";

impl Daemon {
    /// The directory and manifest of the image a VM was made from.
    pub fn image_files(&self, rec: &VmRecord) -> Result<(PathBuf, ImageManifest)> {
        let image = self.store.get_image(&rec.image_digest).map_err(|e| {
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
        let phase = |p: &str, detail: Option<String>| {
            if let Some(op) = op {
                op.progress(Progress {
                    phase: p.to_string(),
                    detail,
                    ..Default::default()
                });
            }
        };
        let vm_dir = self.vm_dir(&rec.id);
        let (image_dir, manifest) = self.image_files(rec)?;

        phase("config-drive", None);
        let user_keys = std::fs::read_to_string(vm_dir.join(USER_KEYS_FILE)).unwrap_or_default();
        let mut authorized_keys = vec![self.key.public_openssh()];
        authorized_keys.extend(
            user_keys
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string),
        );
        let identity = GuestIdentity {
            hostname: rec.name.clone(),
            ip: rec.ip,
            prefix_len: self.net.prefix_len(),
            gateway: self.net.gateway(),
            dns: self.net.guest_dns(),
            authorized_keys,
            host_key_private_openssh: rec.host_key_private.clone(),
            host_key_public_openssh: rec.host_key_public.clone(),
            mac: rec.mac.clone(),
            random_seed: {
                let mut seed = vec![0u8; RANDOM_SEED_BYTES];
                rand::Rng::fill(&mut rand::rng(), seed.as_mut_slice());
                seed
            },
        };
        let config_drive = vm_dir.join(CONFIG_DRIVE_FILE);
        write_config_drive(&config_drive, &identity)
            .map_err(|e| DaemonError::image("cannot write the VM config drive", e))?;

        phase("disk-activate", None);
        let disks = self.disks.clone();
        let (rootfs, disk) = (image_dir.join(&manifest.rootfs), vm_dir.join("disk.ext4"));
        let root_disk = tokio::task::spawn_blocking(move || disks.activate(&rootfs, &disk))
            .await
            .map_err(|source| DaemonError::Task {
                what: "disk",
                source,
            })?
            .map_err(|e| DaemonError::disk("cannot activate the VM disk", e))?;

        phase("network", None);
        let tap = match self.net.acquire_tap().await {
            Ok(t) => t,
            Err(e) => {
                self.deactivate_disk(&rec.id).await;
                return Err(DaemonError::net("cannot get a TAP device for the VM", e));
            }
        };

        let mut spec = self.vm_spec(MachineSpec {
            id: &rec.id,
            name: &rec.name,
            cpus: rec.cpus,
            memory_mib: rec.memory_mib,
            image_dir: &image_dir,
            manifest: &manifest,
            root_disk,
            vm_dir: &vm_dir,
            tap: tap.clone(),
            mac: rec.mac.clone(),
        });
        let mut plan = self.snapshot_plan(&rec.image_digest, &manifest, &spec);
        match &plan {
            SnapshotPlan::Restore(state) => spec.restore_from = Some(state.clone()),
            SnapshotPlan::Save(_) => {
                // The guest waits at its snapshot point until this drive is
                // filled in place with the real one.
                if let Err(e) = write_snapshot_drive(&config_drive) {
                    warn!(vm = %rec.name, error = %e, "cannot write the snapshot drive; booting without saving a snapshot");
                    plan = SnapshotPlan::Cold;
                }
            }
            SnapshotPlan::Cold => {}
        }

        phase(
            "boot",
            Some(format!(
                "{} driver, {}",
                self.driver.kind(),
                plan.describe()
            )),
        );
        let vmm_started = Instant::now();
        let handle = match self.start_vmm(&mut spec, &rec.name).await {
            Ok(h) => h,
            Err(e) => {
                self.release_tap_logged(&tap).await;
                self.deactivate_disk(&rec.id).await;
                return Err(DaemonError::vmm(
                    format!("cannot start the VMM for {:?}", rec.name),
                    e,
                ));
            }
        };
        let boot_kind = match plan {
            SnapshotPlan::Restore(_) if spec.restore_from.is_none() => {
                "kernel boot (the boot snapshot did not restore)"
            }
            _ => plan.describe(),
        };
        // The boot clock starts with the VMM that runs (after a snapshot
        // that failed to restore, with the kernel boot that replaced it).
        let started = Instant::now();
        let runtime = VmRuntime {
            pid: handle.pid,
            start_time: handle.start_time,
            api_socket: handle.api_socket.display().to_string(),
            tap: tap.clone(),
        };
        if let Err(e) = self.store.set_vm_runtime(&rec.id, Some(&runtime)) {
            self.undo_boot(&rec.id, &handle, &tap).await;
            return Err(e.into());
        }

        let boot_timeout = Duration::from_secs(self.config.vmm.boot_timeout_secs);
        if let SnapshotPlan::Save(save) = plan {
            phase("snapshot", None);
            let saved = tokio::select! {
                r = self.save_boot_snapshot(&handle, &spec.serial_log, save, boot_timeout) => Some(r),
                _ = cancel.cancelled() => None,
            };
            match saved {
                None => {
                    self.undo_boot(&rec.id, &handle, &tap).await;
                    let _ = self.store.set_vm_runtime(&rec.id, None);
                    return Err(DaemonError::cancelled(format!(
                        "boot of VM {:?} cancelled",
                        rec.name
                    )));
                }
                Some(Ok(path)) => {
                    info!(vm = %rec.name, snapshot = %path.display(), ms = started.elapsed().as_millis() as u64, "boot snapshot saved")
                }
                Some(Err(e)) => {
                    warn!(vm = %rec.name, error = %crate::error::error_chain(&e), "boot snapshot not saved; the VM boots on")
                }
            }
            // Whatever happened, the guest gets its identity and runs on.
            if let Err(e) = fill_config_drive(&config_drive, &identity) {
                self.undo_boot(&rec.id, &handle, &tap).await;
                let _ = self.store.set_vm_runtime(&rec.id, None);
                return Err(DaemonError::image("cannot write the VM config drive", e));
            }
            if let Err(e) = self.driver.resume(&handle).await {
                warn!(vm = %rec.name, error = %e, "cannot resume the VM after saving its boot snapshot");
            }
        }

        phase("wait-ssh", None);
        // One deadline for the whole boot, snapshot included.
        let deadline = boot_timeout
            .saturating_sub(started.elapsed())
            .max(Duration::from_secs(1));
        let connector = self.guest_connector();
        let target = Self::guest_target(rec);
        let ready = tokio::select! {
            r = hangar_guest::wait_ready(&connector, &target, &self.key, deadline) => r.map(|c| self.guest_clients.put(&rec.id, std::sync::Arc::new(c))).map_err(|e| {
                DaemonError::BootTimeout {
                    name: rec.name.clone(),
                    secs: boot_timeout.as_secs(),
                    serial_log: spec.serial_log.clone(),
                    console_tail: console_tail(&spec.serial_log),
                    source: Box::new(e),
                }
            }),
            _ = cancel.cancelled() => Err(DaemonError::cancelled(format!("boot of VM {:?} cancelled", rec.name))),
        };
        if let Err(e) = ready {
            self.undo_boot(&rec.id, &handle, &tap).await;
            let _ = self.store.set_vm_runtime(&rec.id, None);
            return Err(e);
        }
        info!(vm = %rec.name, boot = boot_kind, boot_to_ssh_ms = vmm_started.elapsed().as_millis() as u64, "guest ready");
        self.store.set_vm_state(&rec.id, VmState::Running, None)?;
        Ok(self.store.get_vm(&rec.id)?)
    }

    /// The VMM spec of a VM. Boots and snapshot prewarms both build it
    /// here, so a snapshot saved by one fits the other
    /// ([`hangar_vmm::VmmDriver::boot_snapshot_key`]).
    pub(crate) fn vm_spec(&self, m: MachineSpec<'_>) -> VmSpec {
        let tsc_khz = if self.driver.wants_host_tsc() {
            hangar_image::host_tsc_khz()
        } else {
            None
        };
        VmSpec {
            id: m.id.to_string(),
            name: m.name.to_string(),
            cpus: m.cpus,
            memory_mib: m.memory_mib,
            kernel: m.image_dir.join(&m.manifest.kernel),
            initrd: m.manifest.initrd.as_ref().map(|i| m.image_dir.join(i)),
            cmdline: kernel_cmdline(&CmdlineOptions {
                tsc_khz,
                extra: self.guest_kernel_args(tsc_khz),
            }),
            root_disk: m.root_disk,
            extra_drives: vec![Drive {
                id: "cfg".into(),
                path: m.vm_dir.join(CONFIG_DRIVE_FILE),
                read_only: true,
            }],
            tap: m.tap,
            mac: m.mac,
            vm_dir: m.vm_dir.to_path_buf(),
            serial_log: m.vm_dir.join("serial.log"),
            netns: self.config.netns().map(str::to_string),
            vsock: None,
            restore_from: None,
        }
    }

    /// Chooses how this boot uses boot snapshots: restore one that fits,
    /// save one if none does (and no other boot is saving it), or neither
    /// (turned off, an image whose init has no snapshot point, a driver
    /// or spec without snapshots).
    fn snapshot_plan(
        &self,
        image_digest: &str,
        manifest: &ImageManifest,
        spec: &VmSpec,
    ) -> SnapshotPlan {
        if !self.config.vmm.boot_snapshots || !manifest.boot_snapshots {
            return SnapshotPlan::Cold;
        }
        let Some(key) = self.driver.boot_snapshot_key(spec) else {
            return SnapshotPlan::Cold;
        };
        if let Some(state) = self.snapshots.find(image_digest, &key) {
            return SnapshotPlan::Restore(state);
        }
        match self.snapshots.begin_save(image_digest, &key) {
            Ok(Some(save)) => SnapshotPlan::Save(save),
            Ok(None) => SnapshotPlan::Cold,
            Err(e) => {
                warn!(error = %e, "cannot prepare the boot snapshot directory");
                SnapshotPlan::Cold
            }
        }
    }

    /// Starts the VMM. A snapshot that does not restore (QEMU refuses the
    /// state) is removed and the VM boots its kernel instead; the next
    /// boot saves a fresh snapshot.
    async fn start_vmm(
        &self,
        spec: &mut VmSpec,
        name: &str,
    ) -> Result<VmmHandle, hangar_vmm::VmmError> {
        // A fresh serial log per boot, so a timeout points at this boot.
        let _ = std::fs::remove_file(&spec.serial_log);
        let Some(state) = spec.restore_from.clone() else {
            return self.driver.start(spec).await;
        };
        let note = format!(
            "hangar: resuming boot snapshot {}: the kernel's boot messages are in the guest's dmesg\n",
            state.display()
        );
        let _ = std::fs::write(&spec.serial_log, note);
        match self.driver.start(spec).await {
            Ok(h) => Ok(h),
            Err(e) => {
                warn!(vm = name, snapshot = %state.display(), error = %e, "boot snapshot does not restore; removing it and booting the kernel");
                self.snapshots.discard(&state);
                spec.restore_from = None;
                let _ = std::fs::remove_file(&spec.serial_log);
                self.driver.start(spec).await
            }
        }
    }

    /// Waits for the guest to reach its snapshot point, saves the VM
    /// there and commits the file. The VM is left paused on success.
    pub(crate) async fn save_boot_snapshot(
        &self,
        handle: &VmmHandle,
        serial_log: &std::path::Path,
        save: SnapshotSave,
        timeout: Duration,
    ) -> Result<PathBuf, SnapshotError> {
        wait_for_console(serial_log, SNAPSHOT_POINT_MESSAGE, timeout, || {
            self.driver.is_alive(handle)
        })
        .await?;
        self.driver
            .save_boot_snapshot(handle, save.partial_path())
            .await
            .map_err(SnapshotError::Save)?;
        save.commit().map_err(SnapshotError::Commit)
    }

    /// Kernel arguments the driver adds, then the user's.
    fn guest_kernel_args(&self, tsc_khz: Option<u64>) -> Vec<String> {
        let mut args = self.driver.guest_kernel_args(tsc_khz);
        args.extend(
            self.config
                .vmm
                .kernel_args
                .split_whitespace()
                .map(str::to_string),
        );
        args
    }

    /// Kills a VMM and returns its TAP; used on failure paths and after
    /// every stop.
    pub async fn undo_boot(&self, vm_id: &str, handle: &VmmHandle, tap: &str) {
        if let Err(e) = self.driver.kill(handle).await {
            warn!(pid = handle.pid, error = %e, "cannot kill VMM");
        }
        self.release_tap_logged(tap).await;
        self.deactivate_disk(vm_id).await;
    }

    /// Tears down the disk's block device view (dm backend); a no-op for
    /// file-backed disks.
    pub async fn deactivate_disk(&self, vm_id: &str) {
        let disks = self.disks.clone();
        let disk = self.vm_dir(vm_id).join("disk.ext4");
        let r = tokio::task::spawn_blocking(move || disks.deactivate(&disk)).await;
        if let Ok(Err(e)) = r {
            warn!(vm = vm_id, error = %e, "cannot deactivate VM disk");
        }
    }

    pub async fn release_tap_logged(&self, tap: &str) {
        if let Err(e) = self.net.release_tap(tap).await {
            warn!(tap, error = %e, "cannot release TAP device");
        }
    }
}

/// Waits until the console log contains `needle`. Fails when `alive`
/// says the VMM is gone or after `timeout`.
async fn wait_for_console(
    log: &std::path::Path,
    needle: &str,
    timeout: Duration,
    alive: impl Fn() -> bool,
) -> Result<(), SnapshotError> {
    use std::io::{Read, Seek, SeekFrom};
    let began = Instant::now();
    let mut offset = 0u64;
    // The unmatched end of what was read, in case the needle is split.
    let mut carry = String::new();
    loop {
        if let Ok(mut f) = std::fs::File::open(log) {
            let mut buf = Vec::new();
            if f.seek(SeekFrom::Start(offset)).is_ok() && f.read_to_end(&mut buf).is_ok() {
                offset += buf.len() as u64;
                carry.push_str(&String::from_utf8_lossy(&buf));
                if carry.contains(needle) {
                    return Ok(());
                }
                let keep = carry.len().saturating_sub(needle.len());
                let cut = (keep..=carry.len())
                    .find(|&i| carry.is_char_boundary(i))
                    .unwrap_or(carry.len());
                carry.drain(..cut);
            }
        }
        if !alive() {
            return Err(SnapshotError::VmmExited);
        }
        if began.elapsed() > timeout {
            return Err(SnapshotError::NotReached {
                secs: timeout.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The last lines of a console log, for error messages (a boot that fails
/// usually says why on the console).
pub fn console_tail(path: &std::path::Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    const MAX_BYTES: u64 = 4096;
    const MAX_LINES: usize = 12;
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(MAX_BYTES)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return " (the console printed nothing)".to_string();
    }
    let tail = &lines[lines.len().saturating_sub(MAX_LINES)..];
    format!("; its last lines:\n  {}", tail.join("\n  "))
}

/// The VMM handle recorded for a VM's running process.
pub fn handle_of(runtime: &VmRuntime) -> VmmHandle {
    VmmHandle {
        pid: runtime.pid,
        start_time: runtime.start_time,
        api_socket: runtime.api_socket.clone().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::{console_tail, wait_for_console, SnapshotError};
    use std::io::Write;
    use std::time::Duration;

    #[tokio::test]
    async fn wait_for_console_finds_a_message_written_in_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serial.log");
        let writer = {
            let log = log.clone();
            tokio::spawn(async move {
                let mut f = std::fs::File::create(&log).unwrap();
                f.write_all(b"[ 0.1] boot\nhangar-initramfs: waiting for")
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
                f.write_all(b" the config drive (snapshot point)\n")
                    .unwrap();
            })
        };
        let r = wait_for_console(
            &log,
            "hangar-initramfs: waiting for the config drive",
            Duration::from_secs(5),
            || true,
        )
        .await;
        writer.await.unwrap();
        assert!(r.is_ok(), "{r:?}");
    }

    #[tokio::test]
    async fn wait_for_console_gives_up_when_the_vmm_is_gone_or_time_is_up() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serial.log");
        std::fs::write(&log, "kernel panic\n").unwrap();

        let gone = wait_for_console(&log, "snapshot point", Duration::from_secs(5), || false).await;
        assert!(matches!(gone, Err(SnapshotError::VmmExited)), "{gone:?}");

        let late =
            wait_for_console(&log, "snapshot point", Duration::from_millis(50), || true).await;
        assert!(
            matches!(late, Err(SnapshotError::NotReached { .. })),
            "{late:?}"
        );
    }

    #[test]
    fn console_tail_shows_the_last_twelve_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serial.log");
        let text: String = (1..=20).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&log, text).unwrap();
        let tail = console_tail(&log);
        assert!(tail.starts_with("; its last lines:\n  line 9\n"), "{tail}");
        assert!(tail.ends_with("line 20"), "{tail}");
    }

    #[test]
    fn console_tail_of_an_empty_log_says_so_and_of_a_missing_one_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serial.log");
        std::fs::write(&log, "\n\n").unwrap();
        assert_eq!(console_tail(&log), " (the console printed nothing)");
        assert_eq!(console_tail(&dir.path().join("none")), "");
    }
}
