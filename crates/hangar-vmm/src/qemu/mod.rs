//! QEMU driver: `-M microvm` with virtio-mmio devices, KVM or TCG, managed
//! over QMP. The argv is built by a pure function ([`build_args`]) so the
//! exact device layout the image authors rely on is unit-tested.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::accel::Accel;
use crate::error::VmmError;
use crate::process::{self, Children};
use crate::qmp::Qmp;
use crate::{check_spec_files, VmSpec, VmmDriver, VmmHandle, PID_FILE, VMM_LOG};

/// QMP socket name inside `vm_dir`.
pub const QMP_SOCKET: &str = "qmp.sock";
/// How long `start` waits for QMP to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `start` waits for a restored VM to run.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long saving a VM's state may take.
const SAVE_TIMEOUT: Duration = Duration::from_secs(120);
/// Bumped when what a boot snapshot depends on changes in a way the argv
/// does not show.
const SNAPSHOT_FORMAT: &str = "hangar-qemu-boot-snapshot-v1";
/// Name under which the snapshot file's fd is handed to QEMU.
const SNAPSHOT_FD_NAME: &str = "hangar-snapshot";
/// The fd number a boot snapshot being resumed has in QEMU (`-incoming
/// fd:3`): the daemon opens the file, so QEMU needs no right to it.
const RESTORE_FD: std::os::fd::RawFd = 3;
/// `-sandbox` (seccomp) of a QEMU that drops to its VM's uid itself: no
/// obsolete syscalls, no spawning (`fork`/`exec`), no resource control.
/// `elevateprivileges` stays allowed because the filter is installed
/// before `-runas` drops rights and would kill the drop itself (SIGSYS,
/// QEMU 7.2); once dropped, real, effective and saved ids are all the
/// VM's and the process has no capabilities (and `no_new_privs`), so
/// set*id calls cannot regain anything.
const SANDBOX_RUNAS: &str = "on,obsolete=deny,spawn=deny,resourcecontrol=deny";
/// `-sandbox` of a QEMU that keeps the daemon's user (no `run_as`).
const SANDBOX_FULL: &str =
    "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/// Drives `qemu-system-x86_64`.
pub struct QemuDriver {
    binary: PathBuf,
    accel: Accel,
    /// Run under `-sandbox` (seccomp).
    sandbox: bool,
    children: Children,
}

impl QemuDriver {
    /// `binary` may be a bare name (looked up on PATH).
    pub fn new(binary: impl Into<PathBuf>, accel: Accel) -> Self {
        QemuDriver {
            binary: binary.into(),
            accel,
            sandbox: true,
            children: Children::default(),
        }
    }

    /// Turns the seccomp sandbox off (debugging only) or on (the default).
    pub fn with_sandbox(mut self, on: bool) -> Self {
        self.sandbox = on;
        self
    }

    pub fn accel(&self) -> Accel {
        self.accel
    }

    /// Kills a half-started VMM and removes what `start` created.
    async fn abort_start(&self, h: &VmmHandle, pid_file: &Path) {
        if let Err(e) = self.children.terminate(h, Duration::from_secs(1)).await {
            tracing::error!(pid = h.pid, error = %e, "cannot kill half-started QEMU");
        }
        process::remove_if_exists(&h.api_socket);
        process::remove_if_exists(pid_file);
    }
}

/// Escapes a value for QEMU's comma-separated option syntax.
fn opt(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

/// Size of a disk file or block device (whose metadata says 0).
fn device_size(path: &Path) -> Option<u64> {
    use std::io::{Seek, SeekFrom};
    std::fs::File::open(path).ok()?.seek(SeekFrom::End(0)).ok()
}

/// The spec with everything that differs between VMs of one snapshot
/// replaced by fixed values, so its argv is the snapshot's shape.
fn snapshot_shape(spec: &VmSpec) -> VmSpec {
    let mut s = spec.clone();
    s.id = "vm".into();
    s.name = "vm".into();
    s.root_disk = "/vm/root".into();
    for d in &mut s.extra_drives {
        d.path = PathBuf::from("/vm/drive").join(&d.id);
    }
    s.tap = "tap".into();
    s.mac = "mac".into();
    s.vm_dir = "/vm".into();
    s.serial_log = "/vm/serial".into();
    s.netns = None;
    s.restore_from = None;
    // Which uid a VM runs as changes nothing in its state.
    if s.run_as.is_some() {
        s.run_as = Some(crate::RunAs { uid: 1, gid: 1 });
    }
    s
}

/// [`VmmDriver::boot_snapshot_key`] for QEMU: a hash over the binary (path,
/// size, mtime), the argv shape and the sizes of the disks, which the
/// guest has probed by the snapshot point.
pub fn boot_snapshot_key(
    binary: &Path,
    spec: &VmSpec,
    accel: Accel,
    sandbox: bool,
) -> Option<String> {
    use sha2::{Digest, Sha256};
    let bin = hangar_host::which(binary)?;
    let meta = std::fs::metadata(&bin).ok()?;
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    let mut h = Sha256::new();
    h.update(SNAPSHOT_FORMAT);
    h.update(format!(
        "\n{}\n{}\n{}\n",
        bin.display(),
        meta.len(),
        mtime.as_nanos()
    ));
    for a in build_args(&snapshot_shape(spec), accel, sandbox) {
        h.update(a);
        h.update([0]);
    }
    let disks = std::iter::once(&spec.root_disk).chain(spec.extra_drives.iter().map(|d| &d.path));
    for disk in disks {
        h.update(device_size(disk)?.to_le_bytes());
    }
    Some(hex::encode(h.finalize()))
}

/// The complete QEMU argv (without the binary) for `spec`; `sandbox` adds
/// the seccomp filter. A snapshot to resume is read from fd
/// [`RESTORE_FD`], which the caller hands over.
pub fn build_args(spec: &VmSpec, accel: Accel, sandbox: bool) -> Vec<String> {
    let qmp = spec.vm_dir.join(QMP_SOCKET);
    let pid = spec.vm_dir.join(PID_FILE);
    let mut a: Vec<String> = vec![
        "-M".into(),
        "microvm,acpi=on".into(),
        "-accel".into(),
        accel.qemu_accel_arg().into(),
        "-cpu".into(),
        accel.qemu_cpu_arg().into(),
        "-m".into(),
        spec.memory_mib.to_string(),
        "-smp".into(),
        spec.cpus.to_string(),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-nographic".into(),
        "-no-reboot".into(),
    ];
    if sandbox {
        a.push("-sandbox".into());
        a.push(
            if spec.run_as.is_some() {
                SANDBOX_RUNAS
            } else {
                SANDBOX_FULL
            }
            .into(),
        );
    }
    if let Some(id) = spec.run_as {
        // QEMU drops to the VM's ids after it has opened every file, the
        // TAP, the sockets and the pid file (all as root).
        a.push("-runas".into());
        a.push(format!("{}:{}", id.uid, id.gid));
    }
    a.push("-kernel".into());
    a.push(spec.kernel.to_string_lossy().into_owned());
    if let Some(initrd) = &spec.initrd {
        a.push("-initrd".into());
        a.push(initrd.to_string_lossy().into_owned());
    }
    a.push("-append".into());
    a.push(spec.cmdline.clone());
    a.push("-drive".into());
    a.push(format!(
        "id=root,file={},format=raw,if=none",
        opt(&spec.root_disk)
    ));
    a.push("-device".into());
    a.push("virtio-blk-device,drive=root".into());
    for d in &spec.extra_drives {
        let ro = if d.read_only { ",readonly=on" } else { "" };
        a.push("-drive".into());
        a.push(format!(
            "id={},file={},format=raw,if=none{ro}",
            d.id,
            opt(&d.path)
        ));
        a.push("-device".into());
        a.push(format!("virtio-blk-device,drive={}", d.id));
    }
    a.push("-netdev".into());
    a.push(format!(
        "tap,id=net0,ifname={},script=no,downscript=no",
        spec.tap
    ));
    a.push("-device".into());
    a.push(format!("virtio-net-device,netdev=net0,mac={}", spec.mac));
    // A file chardev with append=on keeps earlier boots' console output.
    a.push("-chardev".into());
    a.push(format!(
        "file,id=serial0,path={},append=on",
        opt(&spec.serial_log)
    ));
    a.push("-serial".into());
    a.push("chardev:serial0".into());
    a.push("-qmp".into());
    a.push(format!("unix:{},server=on,wait=off", opt(&qmp)));
    a.push("-pidfile".into());
    a.push(pid.to_string_lossy().into_owned());
    if spec.restore_from.is_some() {
        // An inherited fd, not `exec:cat FILE`: the sandbox forbids
        // spawning, and the VM's uid need not be able to open the file.
        a.push("-incoming".into());
        a.push(format!("fd:{RESTORE_FD}"));
    }
    a
}

#[async_trait::async_trait]
impl VmmDriver for QemuDriver {
    fn kind(&self) -> &'static str {
        "qemu"
    }

    async fn start(&self, spec: &VmSpec) -> Result<VmmHandle, VmmError> {
        check_spec_files(spec)?;
        if let Some(state) = &spec.restore_from {
            if !state.is_file() {
                return Err(VmmError::MissingFile {
                    what: "boot snapshot",
                    path: state.clone(),
                });
            }
        }
        crate::confine::hand_over_vm_files(spec)?;
        let qmp_sock = spec.vm_dir.join(QMP_SOCKET);
        let pid_file = spec.vm_dir.join(PID_FILE);
        let log_path = spec.vm_dir.join(VMM_LOG);
        process::remove_if_exists(&qmp_sock);
        process::remove_if_exists(&pid_file);

        let log = process::open_append(&log_path)?;
        // Pre-created private: QEMU's file chardev opens an existing file
        // (append=on) and keeps its mode; it would create it 0644.
        drop(process::open_append(&spec.serial_log)?);
        let log_offset = log.metadata().map(|m| m.len()).unwrap_or(0);
        let log_out = log.try_clone().map_err(|source| VmmError::Io {
            action: "duplicate handle of",
            path: log_path.clone(),
            source,
        })?;
        let netns = spec.netns.as_deref().map(process::open_netns).transpose()?;
        let state = spec
            .restore_from
            .as_deref()
            .map(|path| {
                std::fs::File::open(path).map_err(|source| VmmError::Io {
                    action: "open",
                    path: path.to_path_buf(),
                    source,
                })
            })
            .transpose()?;

        let mut cmd = Command::new(&self.binary);
        cmd.args(build_args(spec, self.accel, self.sandbox))
            .stdout(log_out)
            .stderr(log);
        process::detach(&mut cmd, netns.as_ref());
        process::private_umask(&mut cmd);
        if let Some(file) = &state {
            process::inherit_fd(&mut cmd, file, RESTORE_FD);
        }
        let began = Instant::now();
        let (pid, start_time) = self.children.spawn(&mut cmd, "qemu", &self.binary)?;
        drop(netns);
        drop(state);
        let handle = VmmHandle {
            pid,
            start_time,
            api_socket: qmp_sock.clone(),
        };
        tracing::info!(vm = %spec.id, pid, "QEMU spawned");

        loop {
            if let Some(e) = self.children.early_exit(pid, "qemu", &log_path, log_offset) {
                self.abort_start(&handle, &pid_file).await;
                return Err(e);
            }
            if qmp_sock.exists() {
                if let Ok(_qmp) = Qmp::connect(&qmp_sock).await {
                    break;
                }
            }
            if began.elapsed() > READY_TIMEOUT {
                self.abort_start(&handle, &pid_file).await;
                return Err(VmmError::StartTimeout {
                    kind: "qemu",
                    secs: READY_TIMEOUT.as_secs_f64(),
                    log_tail: process::log_tail(&log_path, log_offset, 2000),
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::info!(vm = %spec.id, pid, ms = began.elapsed().as_millis() as u64, "QEMU ready (QMP answered)");
        if spec.restore_from.is_some() {
            if let Err(e) = self.wait_restored(&handle, &log_path, log_offset).await {
                self.abort_start(&handle, &pid_file).await;
                return Err(e);
            }
            tracing::info!(vm = %spec.id, pid, ms = began.elapsed().as_millis() as u64, "VM state restored, running");
        }
        Ok(handle)
    }

    async fn request_shutdown(&self, h: &VmmHandle) -> Result<(), VmmError> {
        let mut qmp = Qmp::connect(&h.api_socket).await?;
        qmp.execute("system_powerdown", None).await?;
        Ok(())
    }

    async fn wait_exit(&self, h: &VmmHandle, timeout: Duration) -> Result<bool, VmmError> {
        Ok(self.children.wait_exit(h, timeout).await)
    }

    async fn kill(&self, h: &VmmHandle) -> Result<(), VmmError> {
        self.children.terminate(h, process::TERM_GRACE).await?;
        process::remove_if_exists(&h.api_socket);
        if let Some(p) = h.pid_file() {
            process::remove_if_exists(&p);
        }
        Ok(())
    }

    fn is_alive(&self, h: &VmmHandle) -> bool {
        process::is_same_process_alive(h.pid, h.start_time)
    }

    async fn adopt(&self, h: &VmmHandle) -> Result<bool, VmmError> {
        if !self.is_alive(h) {
            return Ok(false);
        }
        Ok(true)
    }

    fn binary(&self) -> &Path {
        &self.binary
    }

    fn wants_host_tsc(&self) -> bool {
        true
    }

    /// Under QEMU (TCG on hosts like these) the guest skips delay-loop
    /// calibration (`lpj`, from the TSC rate: the cloud kernel has HZ=250)
    /// and speculative-execution mitigations, whose page-table switches
    /// are costly under emulation; both only concern the guest's own
    /// processes. It also skips work that buys nothing in a microvm:
    /// zeroing every kernel allocation (`init_on_alloc=0`, a hardening
    /// default), the TSC and timer sanity checks and the lockup watchdog
    /// (an emulated CPU stalls by design), PCI probing (microvm has no PCI
    /// bus here) and kernel audit. Measured with bench/boot-args.sh: about
    /// 0.4 s less to SSH in two interleaved runs.
    fn guest_kernel_args(&self, tsc_khz: Option<u64>) -> Vec<String> {
        let mut args: Vec<String> = [
            "mitigations=off",
            "init_on_alloc=0",
            "tsc=reliable",
            "no_timer_check",
            "nowatchdog",
            "pci=off",
            "audit=0",
        ]
        .map(String::from)
        .into();
        if let Some(khz) = tsc_khz {
            args.push(format!("lpj={}", khz * 4));
        }
        args
    }

    fn boot_snapshot_key(&self, spec: &VmSpec) -> Option<String> {
        boot_snapshot_key(&self.binary, spec, self.accel, self.sandbox)
    }

    /// `stop`, then migration into the file, handed over as an fd: QEMU
    /// writes it itself, so "completed" means every byte is written (an
    /// `exec:` writer could still be draining its pipe).
    async fn save_boot_snapshot(&self, h: &VmmHandle, file: &Path) -> Result<(), VmmError> {
        let fail = |message: String| VmmError::Snapshot {
            path: file.to_path_buf(),
            message,
        };
        // Guest memory: readable by root only.
        let out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(file)
            .map_err(|source| VmmError::Io {
                action: "create",
                path: file.to_path_buf(),
                source,
            })?;
        let mut qmp = Qmp::connect(&h.api_socket).await?;
        qmp.execute("stop", None).await?;
        qmp.execute_with_fd(
            "getfd",
            serde_json::json!({ "fdname": SNAPSHOT_FD_NAME }),
            std::os::fd::AsFd::as_fd(&out),
        )
        .await?;
        qmp.execute(
            "migrate",
            Some(serde_json::json!({ "uri": format!("fd:{SNAPSHOT_FD_NAME}") })),
        )
        .await?;
        let began = Instant::now();
        loop {
            let r = qmp.execute("query-migrate", None).await?;
            match r.get("status").and_then(serde_json::Value::as_str) {
                Some("completed") => break,
                Some(s @ ("failed" | "cancelled")) => {
                    let desc = r
                        .get("error-desc")
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or("no reason given");
                    return Err(fail(format!("migration {s}: {desc}")));
                }
                _ if began.elapsed() > SAVE_TIMEOUT => {
                    let _ = qmp.execute("migrate_cancel", None).await;
                    return Err(fail(format!("not done after {} s", SAVE_TIMEOUT.as_secs())));
                }
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
        out.sync_all().map_err(|source| VmmError::Io {
            action: "sync",
            path: file.to_path_buf(),
            source,
        })?;
        tracing::info!(pid = h.pid, ms = began.elapsed().as_millis() as u64, file = %file.display(), "VM state saved");
        Ok(())
    }

    async fn resume(&self, h: &VmmHandle) -> Result<(), VmmError> {
        let mut qmp = Qmp::connect(&h.api_socket).await?;
        qmp.execute("cont", None).await?;
        Ok(())
    }
}

impl QemuDriver {
    /// Waits until a VM started with `-incoming` has loaded its state and
    /// runs. QEMU exits if the state does not load.
    async fn wait_restored(
        &self,
        h: &VmmHandle,
        log_path: &Path,
        log_offset: u64,
    ) -> Result<(), VmmError> {
        let began = Instant::now();
        loop {
            if let Some(e) = self
                .children
                .early_exit(h.pid, "qemu", log_path, log_offset)
            {
                return Err(e);
            }
            // QEMU may exit between the check above and this connection.
            if let Ok(mut qmp) = Qmp::connect(&h.api_socket).await {
                if let Ok(r) = qmp.execute("query-status", None).await {
                    match r.get("status").and_then(serde_json::Value::as_str) {
                        Some("running") => return Ok(()),
                        // Loaded; the VM was paused when it was saved.
                        Some("paused") => {
                            qmp.execute("cont", None).await?;
                            return Ok(());
                        }
                        _ => {}
                    }
                }
            }
            if began.elapsed() > RESTORE_TIMEOUT {
                return Err(VmmError::StartTimeout {
                    kind: "qemu",
                    secs: RESTORE_TIMEOUT.as_secs_f64(),
                    log_tail: process::log_tail(log_path, log_offset, 2000),
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[cfg(test)]
mod tests;
