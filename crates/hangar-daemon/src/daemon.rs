//! Composition root: builds every subsystem from the config in a fixed
//! order, reconciles stored VMs with live processes, serves the API, and
//! shuts down gracefully (running VMs keep running; the next daemon adopts
//! them).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use hangar_config::{AccelChoice, Config, DriverChoice};
use hangar_guest::DaemonKey;
use hangar_net::{NetConfig, Network};
use hangar_ops::OpRegistry;
use hangar_store::Store;
use hangar_vmm::{Accel, FirecrackerDriver, QemuDriver, VmmDriver};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::conn_limit::ConnCaps;
use crate::api::serve::ServeLimits;
use crate::boot_gate::BootGate;
use crate::image_service::ImageService;
use crate::infra::Infra;
use crate::pidfile::PidFile;
use crate::session_service::SessionService;
use crate::snapshot_service::SnapshotService;
use crate::vm_service::VmService;

/// The composition root: the shared infrastructure and the subsystems
/// built on it. Shared as `Arc<Daemon>` by the API handlers; each service
/// keeps its own state and locks.
pub struct Daemon {
    pub infra: Infra,
    /// Why this driver (and accel) was chosen, for `doctor` and logs.
    pub driver_reason: String,
    pub disk_reason: String,
    /// Boot snapshots: saved boot states, for fast boots.
    pub snapshots: Arc<SnapshotService>,
    pub images: Arc<ImageService>,
    pub vms: Arc<VmService>,
    /// Long-lived sessions in the guests.
    pub sessions: Arc<SessionService>,
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!(
            "hangar daemon must run as root (it creates TAP devices, bridges, namespaces and VM disks): run it with sudo; the CLI itself needs no root"
        );
    }
    // Resolved before anything is created, so a typo changes nothing.
    let socket_gid = socket_group(&config.socket_group)?;
    // Crash points of the fault suite (test builds only), armed by FAILPOINTS.
    let _crash_points = crate::failpoint::setup();
    raise_open_files_limit(&config);
    crate::private_dirs::create_runtime_dir(&config)?;
    let _pid = PidFile::acquire(&config.pid_path())?;
    crate::private_dirs::secure_runtime_dir(&config, socket_gid)?;
    let daemon = Daemon::build(config).await?;
    let listener = match bind_socket(&daemon.infra.config.socket_path(), socket_gid) {
        Ok(l) => l,
        Err(e) => {
            // Give back what `build` set up (idle TAPs) before failing.
            daemon.stop().await;
            return Err(e);
        }
    };
    let infra = &daemon.infra;
    info!(socket = %infra.config.socket_path().display(), driver = infra.driver.kind(), disks = infra.disks.name(), "hangar daemon ready");

    let app = crate::api::router(daemon.clone());
    let shutdown = infra.shutdown.clone();
    let api = &infra.config.api;
    let limits = ServeLimits {
        header_read_timeout: Duration::from_secs(api.header_read_timeout_secs),
        caps: ConnCaps {
            total: api.max_connections,
            per_user: api.max_connections_per_user,
        },
    };
    crate::api::serve::serve(listener, app, limits, async move {
        wait_for_signal().await;
        shutdown.cancel();
    })
    .await;
    daemon.stop().await;
    let _ = std::fs::remove_file(daemon.infra.config.socket_path());
    info!("hangar daemon stopped");
    Ok(())
}

/// Lifts the soft limit on open files to the hard one: every API
/// connection, VM and TAP holds descriptors, and the connection caps are
/// meant to be what bounds them, not a default soft limit of 1024.
fn raise_open_files_limit(config: &Config) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft < hard {
        if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            warn!(error = %e, soft, hard, "cannot raise the open files limit");
        }
    }
    let wanted = config.api.max_connections as u64 + 1024;
    if hard < wanted {
        warn!(limit = hard, max_connections = config.api.max_connections, "the open files limit is low for [api] max_connections; raise LimitNOFILE or lower max_connections");
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot install signal handlers; stop the daemon with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received, shutting down"),
        _ = int.recv() => info!("SIGINT received, shutting down"),
    }
}

/// The gid of `[socket_group]`, or `None` when it is empty.
fn socket_group(name: &str) -> Result<Option<nix::unistd::Gid>> {
    if name.is_empty() {
        return Ok(None);
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(Some(g.gid)),
        Ok(None) => anyhow::bail!(
            "socket_group {name:?} does not exist: create it (groupadd {name}) and add the users who may use hangar (usermod -aG {name} USER), or leave socket_group empty"
        ),
        Err(e) => Err(anyhow::anyhow!(e).context(format!("cannot look up group {name:?}"))),
    }
}

/// Binds the API socket with mode 0660, owned by `group` when given. A
/// stale socket file is removed: the pid-file lock already proved no other
/// daemon serves it.
fn bind_socket(path: &Path, group: Option<nix::unistd::Gid>) -> Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("cannot bind API socket {}", path.display()))?;
    let restrict = || -> Result<()> {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
            .with_context(|| format!("cannot set mode 0660 on {}", path.display()))?;
        if let Some(gid) = group {
            nix::unistd::chown(path, None, Some(gid))
                .with_context(|| format!("cannot give {} to group {gid}", path.display()))?;
        }
        Ok(())
    };
    if let Err(e) = restrict() {
        // Never leave a socket behind with the wrong owner or mode.
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(listener)
}

impl Daemon {
    /// Builds the subsystems in dependency order.
    pub async fn build(config: Config) -> Result<Arc<Daemon>> {
        // Private dirs, and the modes older versions left repaired.
        crate::private_dirs::prepare_state_dirs(&config)?;
        let store = Arc::new(
            Store::open(config.store_path())
                .with_context(|| format!("cannot open store {}", config.store_path().display()))?,
        );
        let failed = store
            .fail_running_ops("the daemon restarted while this operation ran")
            .context("cannot mark interrupted operations")?;
        if failed > 0 {
            warn!(
                count = failed,
                "operations interrupted by a daemon restart marked failed"
            );
        }
        let ops = OpRegistry::new(
            store.clone(),
            Duration::from_secs(config.operation_retention_secs),
        );
        crate::confine::check_uid_range_free(&config).map_err(anyhow::Error::msg)?;
        let (driver, driver_reason, accel) = choose_driver(&config).map_err(anyhow::Error::msg)?;
        let boot_gate = BootGate::new(crate::boot_gate::limit_from_config(
            config.vmm.max_concurrent_boots,
            accel,
        ));
        info!(
            max_concurrent_boots = boot_gate.limit(),
            "boots beyond this many wait in a queue"
        );
        let (disks, disk_reason) =
            hangar_disk::backend_by_name(&config.storage.backend, &config.vms_dir())
                .context("cannot choose a disk backend")?;
        let agent = crate::guest_agent::load(&config.guest.agent)?;
        let trust = hangar_image::sources::Trust::load(&config.images.ca_certs)
            .context("cannot load [images] ca_certs")?;
        if !trust.is_empty() {
            info!(
                certificates = trust.len(),
                "extra CA certificates trusted for image downloads"
            );
        }
        let key = Arc::new(
            DaemonKey::load_or_generate(&config.keys_dir())
                .context("cannot load or create the daemon SSH key")?,
        );
        // Last fallible step: everything above creates no host resources, so
        // a failure there leaves no TAP or bridge behind.
        let net = Arc::new(
            Network::setup(NetConfig {
                netns: config.netns().map(str::to_string),
                bridge: config.network.bridge.clone(),
                subnet: config.network.subnet,
                nat: config.network.nat,
                tap_pool_size: config.network.tap_pool_size,
                tap_prefix: config.network.tap_prefix.clone(),
                vm_to_vm: config.network.vm_to_vm,
            })
            .await
            .context("cannot set up the VM network")?,
        );
        info!(reason = %driver_reason, "VMM driver chosen");
        info!(reason = %disk_reason, "disk backend chosen");
        let infra = Infra {
            config: Arc::new(config),
            store,
            ops,
            net,
            driver,
            disks: Arc::from(disks),
            key,
            shutdown: CancellationToken::new(),
            boot_gate,
            agent,
        };
        let snapshots = Arc::new(SnapshotService::new(infra.clone()));
        let images = Arc::new(ImageService::new(infra.clone(), snapshots.clone(), trust));
        let vms = Arc::new(VmService::new(
            infra.clone(),
            images.clone(),
            snapshots.clone(),
        ));
        let sessions = Arc::new(SessionService::new(
            infra.clone(),
            vms.clone(),
            images.clone(),
        ));
        let daemon = Arc::new(Daemon {
            infra,
            driver_reason,
            disk_reason,
            snapshots,
            sessions,
            images,
            vms,
        });
        let prewarms = daemon.snapshots.remove_prewarm_leftovers();
        if prewarms > 0 {
            info!(
                count = prewarms,
                "removed boot snapshot VMs a previous daemon left behind"
            );
        }
        let partial = daemon.snapshots.remove_partial();
        if partial > 0 {
            info!(
                count = partial,
                "removed boot snapshots a previous daemon left half-written"
            );
        }
        // Configured catalogs: read once now (a slow or broken one is
        // skipped with a warning), again on each `image catalog`.
        daemon.images.reload_catalogs().await;
        let images = daemon.images.sweep_leftovers();
        if images > 0 {
            info!(
                count = images,
                "removed what interrupted image pulls and registrations left"
            );
        }
        daemon.vms.reconcile().await;
        if let Err(e) = daemon.infra.net.trim_idle().await {
            warn!(error = %e, "cannot remove surplus TAP devices");
        }
        daemon.infra.ops.spawn_pruner();
        daemon.vms.spawn_vm_watcher();
        daemon.vms.console_logs().spawn_keeper(
            daemon.infra.config.vms_dir(),
            crate::vm_service::dir::SERIAL_LOG,
            daemon.infra.shutdown.clone(),
        );
        let pruned = crate::console_log::prune::prune_failed_logs(
            &daemon.infra.config.state_dir.join("logs"),
            daemon.infra.config.vmm.failed_console_logs_kept,
        );
        if pruned > 0 {
            info!(count = pruned, "removed old console logs of failed creates");
        }
        Ok(daemon)
    }

    /// Graceful stop: cancel running operations (they clean up what they
    /// made), wait for them, return unused TAPs. VMs keep running.
    pub async fn stop(&self) {
        self.infra.ops.cancel_all();
        self.infra.ops.drain(Duration::from_secs(30)).await;
        if let Err(e) = self.infra.net.shutdown().await {
            warn!(error = %e, "cannot remove unused TAP devices");
        }
    }
}

/// The accelerator the config asks for, when it insists on KVM but the
/// device cannot be used: the reason and the fix.
pub fn forced_kvm_problem(config: &Config) -> Option<String> {
    if config.vmm.accel != AccelChoice::Kvm {
        return None;
    }
    hangar_vmm::accel::kvm_device_usable(&config.vmm.kvm_device)
        .err()
        .map(|e| {
            format!(
                "KVM is not usable: cannot open {} read-write ({e}); load the kvm module (kvm_intel or kvm_amd) and check permissions, or set [vmm] accel = \"tcg\" (or \"auto\") to use software emulation",
                config.vmm.kvm_device.display()
            )
        })
}

/// Whether Firecracker runs under the jailer: as configured, or (unset)
/// where its needs are met. `jailer = true` with a Firecracker that cannot
/// run jailed is a start-up error naming the fix.
fn use_jailer(config: &Config) -> Result<bool, String> {
    let fc = which(&config.vmm.firecracker).unwrap_or_else(|| config.vmm.firecracker.clone());
    let unmet = match which(&config.vmm.jailer_binary) {
        None => Some(format!(
            "the jailer binary {} is not found; install it from the Firecracker release (same version) or set [vmm] jailer_binary",
            config.vmm.jailer_binary.display()
        )),
        Some(_) => hangar_vmm::jailer_incompatibility(&fc),
    };
    match (config.vmm.jailer, unmet) {
        (Some(false), _) => {
            warn!("[vmm] jailer = false: Firecracker runs unconfined (debugging only)");
            Ok(false)
        }
        (Some(true), Some(why)) => Err(format!("[vmm] jailer = true, but {why}")),
        (None, Some(why)) => {
            warn!(reason = %why, "Firecracker runs without its jailer (unconfined); `hangar doctor` says how to fix it");
            Ok(false)
        }
        (_, None) => Ok(true),
    }
}

/// Picks the VMM driver: Firecracker needs its binary and a KVM that can
/// boot guests; QEMU runs everywhere (TCG when KVM cannot boot guests).
fn choose_driver(config: &Config) -> Result<(Arc<dyn VmmDriver>, String, Accel), String> {
    let detected = hangar_vmm::accel::detect_with(&config.vmm.kvm_device);
    let (accel, accel_reason) = match config.vmm.accel {
        AccelChoice::Kvm => (Accel::Kvm, "accel = \"kvm\" in the config".to_string()),
        AccelChoice::Tcg => (Accel::Tcg, "accel = \"tcg\" in the config".to_string()),
        AccelChoice::Auto => (detected.accel, detected.reason.clone()),
    };
    let fc_found = which(&config.vmm.firecracker).is_some();
    let use_fc = match config.vmm.driver {
        DriverChoice::Firecracker => true,
        DriverChoice::Qemu => false,
        DriverChoice::Auto => fc_found && matches!(accel, Accel::Kvm),
    };
    if use_fc {
        let mut fc = FirecrackerDriver::new(config.vmm.firecracker.clone());
        if use_jailer(config)? {
            let mut jail = hangar_vmm::JailerConfig::new(
                config.vmm.jailer_binary.clone(),
                config.vmm.jailer_uid,
                config.vmm.jailer_gid,
                config.state_dir.join("jail"),
            );
            // Each VM's cgroup caps its VMM at the VM's vCPUs and memory.
            jail.limit_resources = true;
            jail.cgroup_version = hangar_vmm::host_cgroup_version(&jail.cgroup_root);
            fc = fc.with_jailer(jail);
        }
        Ok((
            Arc::new(fc),
            format!("firecracker ({accel_reason})"),
            Accel::Kvm,
        ))
    } else {
        let why = match config.vmm.driver {
            DriverChoice::Qemu => "driver = \"qemu\" in the config".to_string(),
            _ if !fc_found => format!(
                "firecracker binary {} not found",
                config.vmm.firecracker.display()
            ),
            _ => "KVM cannot boot guests here".to_string(),
        };
        let accel_name = match accel {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        };
        if !config.vmm.confine {
            warn!("[vmm] confine = false: QEMU runs as root without its seccomp sandbox (debugging only)");
        }
        Ok((
            Arc::new(
                QemuDriver::new(config.vmm.qemu.clone(), accel).with_sandbox(config.vmm.confine),
            ),
            format!("qemu with {accel_name}: {why}; {accel_reason}"),
            accel,
        ))
    }
}

pub use hangar_host::which;
