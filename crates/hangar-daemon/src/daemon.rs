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

use crate::image_service::ImageService;
use crate::infra::Infra;
use crate::pidfile::PidFile;
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
    std::fs::create_dir_all(&config.runtime_dir)
        .with_context(|| format!("cannot create runtime dir {}", config.runtime_dir.display()))?;
    let _pid = PidFile::acquire(&config.pid_path())?;
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
    // Each connection carries its peer's credentials (`api::peer`).
    let app = app.into_make_service_with_connect_info::<crate::api::peer::PeerCred>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        wait_for_signal().await;
        shutdown.cancel();
    });
    server.await.context("API server failed")?;
    daemon.stop().await;
    let _ = std::fs::remove_file(daemon.infra.config.socket_path());
    info!("hangar daemon stopped");
    Ok(())
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
        for dir in [
            &config.state_dir,
            &config.images_dir(),
            &config.vms_dir(),
            &config.keys_dir(),
        ] {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
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
        let (driver, driver_reason) = choose_driver(&config);
        let (disks, disk_reason) =
            hangar_disk::backend_by_name(&config.storage.backend, &config.vms_dir())
                .context("cannot choose a disk backend")?;
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
        };
        let snapshots = Arc::new(SnapshotService::new(infra.clone()));
        let images = Arc::new(ImageService::new(infra.clone(), snapshots.clone()));
        let vms = Arc::new(VmService::new(
            infra.clone(),
            images.clone(),
            snapshots.clone(),
        ));
        let daemon = Arc::new(Daemon {
            infra,
            driver_reason,
            disk_reason,
            snapshots,
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

/// Picks the VMM driver: Firecracker needs its binary and a KVM that can
/// boot guests; QEMU runs everywhere (TCG when KVM cannot boot guests).
fn choose_driver(config: &Config) -> (Arc<dyn VmmDriver>, String) {
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
        if config.vmm.jailer {
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
        (Arc::new(fc), format!("firecracker ({accel_reason})"))
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
        (
            Arc::new(QemuDriver::new(config.vmm.qemu.clone(), accel)),
            format!("qemu with {accel_name}: {why}; {accel_reason}"),
        )
    }
}

pub use hangar_host::which;
