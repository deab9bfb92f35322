//! Hypervisor drivers behind one trait ([`VmmDriver`]).
//!
//! - [`FirecrackerDriver`]: the product's engine; configured through its
//!   HTTP API on a Unix socket.
//! - [`QemuDriver`]: `-M microvm` under KVM or TCG, for hosts where
//!   Firecracker is missing or KVM cannot boot stock kernels.
//!
//! Every VMM process runs in its own session so it survives a daemon
//! restart; a [`VmmHandle`] (pid + start time + API socket) is what the
//! daemon persists to find and [`VmmDriver::adopt`] it again.

#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod accel;
pub(crate) mod confine;
mod error;
pub mod firecracker;
mod process;
pub mod qemu;
pub mod qmp;

pub use accel::{Accel, AccelDecision};
pub use error::VmmError;
pub use firecracker::elf::{elf_interpreter, jailer_incompatibility};
pub use firecracker::jailer::{
    host_cgroup_version, JailerConfig, DEFAULT_CGROUP_ROOT, LIMIT_CONTROLLERS,
};
pub use firecracker::metrics::{read_latest_metrics, summarize_metrics, MetricsSummary};
pub use firecracker::version::{firecracker_version_warning, parse_firecracker_version};
pub use firecracker::FirecrackerDriver;
pub use process::{is_same_process_alive, kill_stray_vmm, proc_start_time};
pub use qemu::QemuDriver;

/// Name of the pid file every driver writes in [`VmSpec::vm_dir`].
pub const PID_FILE: &str = "vmm.pid";
/// Name of the VMM's own log (QEMU stderr, Firecracker logger) in `vm_dir`.
pub const VMM_LOG: &str = "vmm.log";

/// An extra block device, e.g. the config drive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drive {
    /// Device id; must be unique per VM and not `root`.
    pub id: String,
    pub path: PathBuf,
    pub read_only: bool,
}

/// The unprivileged identity a confined VMM runs as: its VM's own uid and
/// gid, so one VM's VMM cannot open another VM's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

/// Everything a driver needs to boot one VM. Paths are prepared by others
/// (image, storage, net); the driver only checks they exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    pub id: String,
    pub name: String,
    pub cpus: u32,
    pub memory_mib: u32,
    /// Uncompressed PVH ELF `vmlinux` (QEMU also accepts a bzImage).
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    /// Complete kernel command line.
    pub cmdline: String,
    /// Raw ext4 image, attached read-write as the first virtio-blk device.
    pub root_disk: PathBuf,
    pub extra_drives: Vec<Drive>,
    /// Host TAP device name (inside `netns` when set).
    pub tap: String,
    pub mac: String,
    /// Directory for sockets, pid file and logs; must exist.
    pub vm_dir: PathBuf,
    /// Guest serial console output is appended here.
    pub serial_log: PathBuf,
    /// Run the VMM inside /run/netns/<name>.
    pub netns: Option<String>,
    /// Resume the saved VM state in this file (see
    /// [`VmmDriver::save_boot_snapshot`]) instead of booting the kernel.
    /// The rest of the spec must match the one the state was saved with,
    /// but for the per-VM paths, TAP and MAC: [`VmmDriver::boot_snapshot_key`].
    #[serde(default)]
    pub restore_from: Option<PathBuf>,
    /// Drop the VMM's rights to this uid/gid once it has opened what it
    /// needs (QEMU `-runas`, the Firecracker jailer's `--uid`/`--gid`);
    /// `None` runs it as the daemon's user (confinement off).
    #[serde(default)]
    pub run_as: Option<RunAs>,
}

/// What identifies a running VMM across daemon restarts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct VmmHandle {
    pub pid: u32,
    /// Field 22 of /proc/<pid>/stat; guards against pid reuse.
    pub start_time: u64,
    /// QMP socket (qemu) or Firecracker API socket.
    pub api_socket: PathBuf,
}

impl VmmHandle {
    /// The pid file next to the API socket (both live in `vm_dir`).
    pub fn pid_file(&self) -> Option<PathBuf> {
        self.api_socket.parent().map(|d| d.join(PID_FILE))
    }
}

/// How [`VmmDriver::stop`] ended the VMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopOutcome {
    /// The guest powered off when asked, within the graceful timeout.
    Graceful,
    /// The guest did not power off in time; the VMM exited on SIGTERM.
    Terminated,
    /// The VMM ignored SIGTERM and was SIGKILLed.
    Killed,
    /// The VMM was already gone when `stop` was called (crashed, or the
    /// guest powered off by itself).
    AlreadyExited,
}

/// How long [`VmmDriver::stop`] waits after SIGTERM before SIGKILL.
pub const STOP_TERM_WAIT: Duration = Duration::from_secs(2);
/// How long [`VmmDriver::stop`] waits for the process after SIGKILL.
const STOP_KILL_WAIT: Duration = Duration::from_secs(5);

/// One hypervisor backend. Implementations are cheap to share (`Arc`) and
/// keep the children they spawned so they are reaped.
#[async_trait::async_trait]
pub trait VmmDriver: Send + Sync {
    /// "qemu" or "firecracker".
    fn kind(&self) -> &'static str;
    /// Starts the VMM and the guest; returns when the guest is booting. On
    /// error, kills what was spawned and removes sockets and pid file (the
    /// serial log is kept).
    async fn start(&self, spec: &VmSpec) -> Result<VmmHandle, VmmError>;
    /// Asks the guest to power off. Does not wait.
    async fn request_shutdown(&self, h: &VmmHandle) -> Result<(), VmmError>;
    /// Waits up to `timeout` for the process to exit; `Ok(true)` if it did
    /// (and was reaped if it is our child).
    async fn wait_exit(&self, h: &VmmHandle, timeout: Duration) -> Result<bool, VmmError>;
    /// SIGTERM, short wait, SIGKILL; reaps; removes the API socket and pid
    /// file. Idempotent.
    async fn kill(&self, h: &VmmHandle) -> Result<(), VmmError>;
    /// True iff `h.pid` exists, is not a zombie, and has `h.start_time`.
    fn is_alive(&self, h: &VmmHandle) -> bool;
    /// After a daemon restart: `Ok(true)` if the process is alive (and, for
    /// Firecracker, its API answers); registers it so wait/kill work.
    async fn adopt(&self, h: &VmmHandle) -> Result<bool, VmmError>;

    /// The VMM binary as configured (a bare name is looked up on PATH), so
    /// callers can check it is installed before they begin work.
    fn binary(&self) -> &Path;
    /// Whether guests under this driver should be told the host's TSC rate
    /// (it spares them calibrating it, which is slow under emulation).
    fn wants_host_tsc(&self) -> bool {
        false
    }
    /// Kernel arguments this driver adds to every guest's command line
    /// (before the user's); `tsc_khz` is the host's TSC rate when
    /// [`VmmDriver::wants_host_tsc`] and it is known.
    fn guest_kernel_args(&self, _tsc_khz: Option<u64>) -> Vec<String> {
        Vec::new()
    }

    /// Boot snapshots: a key that is equal for two specs iff a state saved
    /// from a VM started with one can be restored with the other (same
    /// VMM binary, machine, kernel, command line, memory, CPUs and device
    /// sizes). `None` if this driver or this spec cannot use snapshots.
    fn boot_snapshot_key(&self, _spec: &VmSpec) -> Option<String> {
        None
    }
    /// Pauses the VM and writes its whole state to `file` (truncated). The
    /// VM stays paused; [`VmmDriver::resume`] runs it on.
    async fn save_boot_snapshot(&self, _h: &VmmHandle, _file: &Path) -> Result<(), VmmError> {
        Err(VmmError::Unsupported {
            kind: self.kind(),
            what: "boot snapshots",
        })
    }
    /// Kills a VMM of `vm_dir` nobody recorded (a daemon killed between
    /// spawning it and storing its handle) and removes what its start
    /// made; returns whether a process was killed. By default, the process
    /// the pid file names if its command line names `vm_dir`.
    fn kill_stray(&self, vm_dir: &Path) -> bool {
        kill_stray_vmm(vm_dir)
    }

    /// Runs a paused VM on.
    async fn resume(&self, _h: &VmmHandle) -> Result<(), VmmError> {
        Err(VmmError::Unsupported {
            kind: self.kind(),
            what: "boot snapshots",
        })
    }

    /// The whole stop sequence: ask the guest to power off, wait up to
    /// `graceful_timeout`, then SIGTERM, wait [`STOP_TERM_WAIT`], then
    /// SIGKILL; reaps the process and removes the API socket, pid file and
    /// any other transient files (via [`VmmDriver::kill`], which is
    /// idempotent). A failing power-off request (API socket already gone,
    /// QMP wedged) does not stop the sequence: it moves on to SIGTERM.
    async fn stop(
        &self,
        h: &VmmHandle,
        graceful_timeout: Duration,
    ) -> Result<StopOutcome, VmmError> {
        let outcome = if !self.is_alive(h) {
            StopOutcome::AlreadyExited
        } else if graceful_stop(self, h, graceful_timeout).await? {
            StopOutcome::Graceful
        } else {
            tracing::info!(
                pid = h.pid,
                "guest did not power off in time; sending SIGTERM"
            );
            let ended = process::term_then_kill(h, STOP_TERM_WAIT, STOP_KILL_WAIT, |t| {
                self.wait_exit(h, t)
            })
            .await?;
            match ended {
                process::Ended::Term => StopOutcome::Terminated,
                process::Ended::Kill => StopOutcome::Killed,
            }
        };
        // The process is gone: this only reaps and removes files.
        self.kill(h).await?;
        tracing::info!(pid = h.pid, ?outcome, "VMM stopped");
        Ok(outcome)
    }
}

/// Asks the guest to power off and waits; `Ok(true)` if the VMM exited.
async fn graceful_stop<D: VmmDriver + ?Sized>(
    driver: &D,
    h: &VmmHandle,
    timeout: Duration,
) -> Result<bool, VmmError> {
    if let Err(e) = driver.request_shutdown(h).await {
        tracing::warn!(pid = h.pid, error = %e, "cannot ask the guest to power off");
        // It may have exited between the liveness check and the request.
        return driver.wait_exit(h, Duration::ZERO).await;
    }
    driver.wait_exit(h, timeout).await
}

/// Checks the files a spec points at exist, so a typo gives a clear error
/// instead of a VMM's terse one.
pub(crate) fn check_spec_files(spec: &VmSpec) -> Result<(), VmmError> {
    let mut files = vec![("kernel", &spec.kernel), ("root disk", &spec.root_disk)];
    if let Some(initrd) = &spec.initrd {
        files.push(("initrd", initrd));
    }
    for d in &spec.extra_drives {
        files.push(("drive", &d.path));
    }
    for (what, path) in files {
        if !path.exists() {
            return Err(VmmError::MissingFile {
                what,
                path: path.clone(),
            });
        }
    }
    if !spec.vm_dir.is_dir() {
        return Err(VmmError::MissingFile {
            what: "VM directory",
            path: spec.vm_dir.clone(),
        });
    }
    Ok(())
}

/// Writes `vm_dir/vmm.pid`.
pub(crate) fn write_pid_file(spec: &VmSpec, pid: u32) -> Result<(), VmmError> {
    let path = spec.vm_dir.join(PID_FILE);
    hangar_host::private::write_private(&path, format!("{pid}\n")).map_err(|source| VmmError::Io {
        action: "write pid file",
        path,
        source,
    })
}
