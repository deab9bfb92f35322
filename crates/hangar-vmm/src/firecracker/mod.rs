//! Firecracker driver: spawns `firecracker --api-sock ... --id ...` (or
//! the `jailer`, see [`jailer`]) in its own session, configures the VM
//! through the API, then InstanceStart.

pub mod api;
pub mod client;
pub mod elf;
pub mod jailer;
pub mod metrics;
mod stray;
pub mod version;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::error::VmmError;
use crate::process::{self, Children};
use crate::{check_spec_files, write_pid_file, VmSpec, VmmDriver, VmmHandle, PID_FILE};
use api::ActionType;
pub use client::ApiClient;
use jailer::{Jail, JailerConfig};

/// API socket name inside `vm_dir`.
pub const API_SOCKET: &str = "firecracker.sock";
/// How long `start` waits for the API socket to accept.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(5);

/// Drives the `firecracker` binary.
pub struct FirecrackerDriver {
    binary: PathBuf,
    jailer: Option<JailerConfig>,
    children: Children,
}

impl FirecrackerDriver {
    /// `binary` may be a bare name (looked up on PATH).
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        FirecrackerDriver {
            binary: binary.into(),
            jailer: None,
            children: Children::default(),
        }
    }

    /// Runs every VM under Firecracker's `jailer` (chroot, uid/gid drop,
    /// cgroups). `vm_dir/firecracker.sock` then is a symlink to the API
    /// socket inside the jail.
    pub fn with_jailer(mut self, cfg: JailerConfig) -> Self {
        self.jailer = Some(cfg);
        self
    }

    /// The jailer configuration, if any.
    pub fn jailer(&self) -> Option<&JailerConfig> {
        self.jailer.as_ref()
    }

    /// Asks Firecracker to append a metrics line now (read it with
    /// [`metrics::read_latest_metrics`]).
    pub async fn flush_metrics(&self, h: &VmmHandle) -> Result<(), VmmError> {
        ApiClient::new(&h.api_socket)
            .send(&api::action(ActionType::FlushMetrics))
            .await
            .map(|_| ())
    }

    /// The jail behind `h`, found through the `vm_dir` socket symlink. Only
    /// jails under this driver's chroot base count, so a driver without a
    /// jailer never removes directories.
    fn jail_of(&self, h: &VmmHandle) -> Option<Jail> {
        let cfg = self.jailer.as_ref()?;
        let target = std::fs::read_link(&h.api_socket).ok()?;
        Jail::from_api_socket(&target).filter(|j| j.dir.starts_with(&cfg.chroot_base))
    }

    /// Builds the jail for `spec` and the jailer command; returns the
    /// command, the spec with jail-relative paths, and the jail.
    fn jailed_command(
        &self,
        cfg: &JailerConfig,
        spec: &VmSpec,
        sock: &Path,
        netns: Option<&str>,
    ) -> Result<(Command, VmSpec, Jail), VmmError> {
        jailer::validate_jail_id(&spec.id)?;
        let exec_file = jailer::absolute_binary(&self.binary)?;
        let (api_spec, files) = jailer::jailed_spec(spec)?;
        let jail = Jail::new(&cfg.chroot_base, &exec_file, &spec.id);
        // A crash can leave this VM's (empty) cgroup behind; the jailer
        // would reuse it as it is.
        jailer::remove_cgroups(&jailer::cgroup_dirs(cfg, &jail));
        // The link first: it is how a daemon killed from here on finds the
        // jail again (`stray::kill_stray_jailed`), the hard-linked disk in
        // it included.
        std::os::unix::fs::symlink(jail.api_socket(), sock).map_err(|source| VmmError::Io {
            action: "create the API socket symlink",
            path: sock.to_path_buf(),
            source,
        })?;
        if let Err(e) = jailer::build_jail(&jail, &files, cfg.ids_for(spec)) {
            self.remove_jail(&jail);
            process::remove_if_exists(sock);
            return Err(e);
        }
        let mut cmd = Command::new(&cfg.binary);
        cmd.args(jailer::jailer_args(cfg, &exec_file, spec, netns));
        Ok((cmd, api_spec, jail))
    }

    /// Removes a jail and the cgroups the jailer made for it. Called only
    /// once the VMM has exited (or never ran).
    fn remove_jail(&self, jail: &Jail) {
        jailer::remove_jail(jail);
        if let Some(cfg) = &self.jailer {
            jailer::remove_cgroups(&jailer::cgroup_dirs(cfg, jail));
        }
    }

    /// Kills a half-started Firecracker and removes what `start` created.
    async fn abort_start(&self, h: &VmmHandle, pid_file: &Path, jail: Option<&Jail>) {
        if let Err(e) = self.children.terminate(h, Duration::from_secs(1)).await {
            tracing::error!(pid = h.pid, error = %e, "cannot kill half-started Firecracker");
        }
        process::remove_if_exists(&h.api_socket);
        process::remove_if_exists(pid_file);
        if let Some(j) = jail {
            self.remove_jail(j);
        }
    }

    /// Waits until the API socket accepts a connection or the process dies.
    async fn wait_socket(
        &self,
        h: &VmmHandle,
        serial_log: &Path,
        offset: u64,
    ) -> Result<(), VmmError> {
        let began = Instant::now();
        loop {
            if let Some(e) = self
                .children
                .early_exit(h.pid, "firecracker", serial_log, offset)
            {
                return Err(e);
            }
            if tokio::net::UnixStream::connect(&h.api_socket).await.is_ok() {
                return Ok(());
            }
            if began.elapsed() > SOCKET_TIMEOUT {
                return Err(VmmError::StartTimeout {
                    kind: "firecracker",
                    secs: SOCKET_TIMEOUT.as_secs_f64(),
                    log_tail: process::log_tail(serial_log, offset, 2000),
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Creates the (empty) log and metrics files: Firecracker opens them
    /// but does not create them.
    fn prepare_files(spec: &VmSpec) -> Result<(), VmmError> {
        for name in [api::LOG_FILE, api::METRICS_FILE] {
            process::open_append(&spec.vm_dir.join(name))?;
        }
        Ok(())
    }

    /// `api_spec` is `spec` with the paths Firecracker sees (jail-relative
    /// under the jailer).
    async fn configure_and_boot(
        &self,
        spec: &VmSpec,
        api_spec: &VmSpec,
        h: &VmmHandle,
        offset: u64,
    ) -> Result<(), VmmError> {
        self.wait_socket(h, &spec.serial_log, offset).await?;
        let client = ApiClient::new(&h.api_socket);
        for call in api::boot_calls(api_spec) {
            tracing::debug!(vm = %spec.id, method = call.method, path = %call.path, "Firecracker API call");
            client.send(&call).await?;
        }
        write_pid_file(spec, h.pid)
    }
}

#[async_trait::async_trait]
impl VmmDriver for FirecrackerDriver {
    fn kind(&self) -> &'static str {
        "firecracker"
    }

    async fn start(&self, spec: &VmSpec) -> Result<VmmHandle, VmmError> {
        check_spec_files(spec)?;
        let sock = spec.vm_dir.join(API_SOCKET);
        let pid_file = spec.vm_dir.join(PID_FILE);
        // Firecracker refuses to start if the socket path exists.
        process::remove_if_exists(&sock);
        process::remove_if_exists(&pid_file);
        Self::prepare_files(spec)?;
        if self.jailer.is_some() {
            // Firecracker opens the drives after the jailer dropped rights.
            crate::confine::hand_over_vm_files(spec)?;
        }

        let serial = process::open_append(&spec.serial_log)?;
        let offset = serial.metadata().map(|m| m.len()).unwrap_or(0);
        let serial_err = serial.try_clone().map_err(|source| VmmError::Io {
            action: "duplicate handle of",
            path: spec.serial_log.clone(),
            source,
        })?;
        let netns_name = spec
            .netns
            .clone()
            .or_else(|| self.jailer.as_ref().and_then(|j| j.netns.clone()));
        // Opened even under the jailer, for a clear error when it is missing.
        let netns = netns_name.as_deref().map(process::open_netns).transpose()?;

        let (mut cmd, api_spec, jail, spawned) = match &self.jailer {
            None => {
                let mut cmd = Command::new(&self.binary);
                cmd.arg("--api-sock").arg(&sock).arg("--id").arg(&spec.id);
                process::private_umask(&mut cmd);
                (cmd, spec.clone(), None, self.binary.clone())
            }
            Some(cfg) => {
                let (cmd, api_spec, jail) =
                    self.jailed_command(cfg, spec, &sock, netns_name.as_deref())?;
                (cmd, api_spec, Some(jail), cfg.binary.clone())
            }
        };
        cmd.stdout(serial).stderr(serial_err);
        // The jailer joins the namespace itself (`--netns`).
        let setns = if jail.is_some() { None } else { netns.as_ref() };
        process::detach(&mut cmd, setns);
        let began = Instant::now();
        let spawn = self.children.spawn(&mut cmd, "firecracker", &spawned);
        drop(netns);
        let (pid, start_time) = match spawn {
            Ok(p) => p,
            Err(e) => {
                process::remove_if_exists(&sock);
                if let Some(j) = &jail {
                    self.remove_jail(j);
                }
                return Err(e);
            }
        };
        let handle = VmmHandle {
            pid,
            start_time,
            api_socket: sock,
        };
        tracing::info!(vm = %spec.id, pid, jailed = jail.is_some(), "Firecracker spawned");

        if let Err(e) = self
            .configure_and_boot(spec, &api_spec, &handle, offset)
            .await
        {
            tracing::warn!(vm = %spec.id, error = %e, "Firecracker start failed; cleaning up");
            self.abort_start(&handle, &pid_file, jail.as_ref()).await;
            return Err(e);
        }
        tracing::info!(vm = %spec.id, pid, ms = began.elapsed().as_millis() as u64, "Firecracker guest started (InstanceStart answered)");
        Ok(handle)
    }

    async fn request_shutdown(&self, h: &VmmHandle) -> Result<(), VmmError> {
        ApiClient::new(&h.api_socket)
            .send(&api::action(ActionType::SendCtrlAltDel))
            .await
            .map(|_| ())
    }

    async fn wait_exit(&self, h: &VmmHandle, timeout: Duration) -> Result<bool, VmmError> {
        Ok(self.children.wait_exit(h, timeout).await)
    }

    async fn kill(&self, h: &VmmHandle) -> Result<(), VmmError> {
        // Read before the symlink is removed; removed after the process
        // is gone (it runs inside).
        let jail = self.jail_of(h);
        self.children.terminate(h, process::TERM_GRACE).await?;
        process::remove_if_exists(&h.api_socket);
        if let Some(p) = h.pid_file() {
            process::remove_if_exists(&p);
        }
        if let Some(j) = jail {
            self.remove_jail(&j);
        }
        Ok(())
    }

    fn is_alive(&self, h: &VmmHandle) -> bool {
        process::is_same_process_alive(h.pid, h.start_time)
    }

    fn kill_stray(&self, vm_dir: &Path) -> bool {
        let by_pid_file = process::kill_stray_vmm(vm_dir);
        let jailed = self
            .jailer
            .as_ref()
            .is_some_and(|cfg| stray::kill_stray_jailed(cfg, vm_dir));
        by_pid_file || jailed
    }

    fn binary(&self) -> &Path {
        &self.binary
    }

    async fn adopt(&self, h: &VmmHandle) -> Result<bool, VmmError> {
        if !self.is_alive(h) {
            return Ok(false);
        }
        if let Err(e) = ApiClient::new(&h.api_socket).get("/").await {
            tracing::warn!(pid = h.pid, error = %e, "Firecracker process alive but its API does not answer");
            return Ok(false);
        }
        Ok(true)
    }
}
