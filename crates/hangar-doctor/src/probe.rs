//! [`HostProbe::gather`]: the only code in doctor that touches the host
//! (files, devices, `/proc`, binaries on the doctor process's `PATH`). It
//! runs tools only through [`hangar_host::process::capture_blocking`], with
//! a time limit, so a hung binary cannot hang doctor.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hangar_config::Config;
use hangar_host::which;

use crate::checks;
use crate::facts::{BinaryFacts, CgroupFacts, DiskFacts, HostProbe, KernelFacts};
use crate::parse::{
    forward_drop_chains, parse_cap_eff, parse_kernel_config, parse_module_paths, parse_proc_modules,
};

/// How long a `--version` style probe of a binary may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

impl HostProbe {
    /// Looks at the host. Never fails: what cannot be read is recorded as
    /// absent (with the reason where one exists), and the checks say so.
    pub fn gather(config: &Config) -> HostProbe {
        let kvm = &config.vmm.kvm_device;
        let tools = checks::TOOLS
            .iter()
            .map(|t| (t.bin.to_string(), which(Path::new(t.bin))))
            .collect();
        let mkfs_ext4 = binary(Path::new("mkfs.ext4"), &["-V"]);
        let mkfs_usage = mkfs_ext4
            .path
            .as_ref()
            .and_then(|p| run_capture(p, &[]).ok())
            .unwrap_or_default();
        let disk_dir = nearest_existing(&config.state_dir);
        HostProbe {
            euid_root: nix::unistd::geteuid().is_root(),
            effective_caps: std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| parse_cap_eff(&s)),
            kvm_device_exists: kvm.exists(),
            kvm_open: OpenOptions::new()
                .read(true)
                .write(true)
                .open(kvm)
                .map(drop)
                .map_err(|e| e.to_string()),
            cpu_flags: std::fs::read_to_string("/proc/cpuinfo")
                .map(|s| hangar_vmm::accel::parse_cpu_flags(&s))
                .unwrap_or_default(),
            kernel: gather_kernel(),
            firecracker_interpreter: which(&config.vmm.firecracker)
                .and_then(|p| hangar_vmm::elf_interpreter(&p).ok().flatten()),
            firecracker: binary(&config.vmm.firecracker, &["--version"]),
            jailer: binary(&config.vmm.jailer_binary, &["--version"]),
            qemu: binary(&config.vmm.qemu, &["--version"]),
            tools,
            mkfs_ext4,
            mkfs_usage,
            ip_forward: std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
                .ok()
                .map(|s| s.trim() == "1"),
            disk: match &disk_dir {
                Some(dir) => hangar_disk::space::free_bytes(dir)
                    .map(|free_bytes| DiskFacts {
                        measured: dir.clone(),
                        free_bytes,
                    })
                    .map_err(|e| format!("statvfs {}: {e}", dir.display())),
                None => Err(format!(
                    "no ancestor of {} exists",
                    config.state_dir.display()
                )),
            },
            storage: {
                let dir = disk_dir.clone().unwrap_or_else(|| PathBuf::from("/"));
                hangar_disk::backend_by_name(&config.storage.backend, &dir)
                    .map(|(b, why)| (b.name().to_string(), why))
                    .map_err(|e| e.to_string())
            },
            leftovers: hangar_disk::find_leftovers(&config.state_dir),
            forward_drop_chains: match (config.netns(), which(Path::new("nft"))) {
                (None, Some(nft)) => run_capture(&nft, &["list", "ruleset"])
                    .ok()
                    .map(|text| forward_drop_chains(&text)),
                _ => None,
            },
            cgroups: gather_cgroups(Path::new(hangar_vmm::DEFAULT_CGROUP_ROOT)),
            boot_snapshots: boot_snapshot_usage(&config.snapshots_dir()),
            guest_agent: guest_agent(&config.guest.agent),
        }
    }
}

/// The cgroup version at `root` and the controllers usable below it.
pub fn gather_cgroups(root: &Path) -> CgroupFacts {
    let version = hangar_vmm::host_cgroup_version(root);
    let controllers = if version == 2 {
        std::fs::read_to_string(root.join("cgroup.controllers"))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect()
    } else {
        hangar_vmm::LIMIT_CONTROLLERS
            .into_iter()
            .filter(|c| root.join(c).is_dir())
            .map(str::to_string)
            .collect()
    };
    CgroupFacts {
        version,
        controllers,
    }
}

/// How many files the boot snapshots directory holds and their size. The
/// daemon keeps them as `<snapshots_dir>/<image digest hex>/<key>.state`
/// (see the daemon's `snapshot_service/files.rs`); every file there is counted, since
/// every one takes space. Doctor reads the layout itself rather than
/// depending on the daemon crate.
pub fn boot_snapshot_usage(snapshots_dir: &Path) -> (usize, u64) {
    let Ok(images) = std::fs::read_dir(snapshots_dir) else {
        return (0, 0);
    };
    images
        .flatten()
        .filter_map(|image| std::fs::read_dir(image.path()).ok())
        .flat_map(|files| files.flatten())
        .filter_map(|f| f.metadata().ok())
        .filter(|m| m.is_file())
        .fold((0, 0), |(count, bytes), m| (count + 1, bytes + m.len()))
}

fn binary(configured: &Path, version_args: &[&str]) -> BinaryFacts {
    let path = which(configured);
    let version_output = match &path {
        Some(p) => run_capture(p, version_args),
        None => Err("not found".into()),
    };
    BinaryFacts {
        configured: configured.to_path_buf(),
        path,
        version_output,
    }
}

/// Runs `bin args` with the probe time limit: stdout then stderr.
fn run_capture(bin: &Path, args: &[&str]) -> Result<String, String> {
    hangar_host::process::capture_blocking(bin, args, PROBE_TIMEOUT).map_err(|e| e.to_string())
}

fn nearest_existing(dir: &Path) -> Option<PathBuf> {
    std::iter::successors(Some(dir), |p| p.parent())
        .find(|p| p.exists())
        .map(Path::to_path_buf)
}

fn gather_kernel() -> KernelFacts {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let config_text = std::fs::read_to_string(format!("/boot/config-{release}"))
        .ok()
        .or_else(|| {
            Path::new("/proc/config.gz")
                .exists()
                .then(|| run_capture(Path::new("gzip"), &["-dc", "/proc/config.gz"]).ok())
                .flatten()
        })
        .unwrap_or_default();
    let loaded_modules = match std::fs::read_to_string("/proc/modules") {
        Ok(s) => parse_proc_modules(&s),
        Err(_) => std::fs::read_dir("/sys/module")
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default(),
    };
    let mods = PathBuf::from("/lib/modules").join(&release);
    let read_mods = |f: &str| {
        std::fs::read_to_string(mods.join(f))
            .map(|s| parse_module_paths(&s))
            .unwrap_or_default()
    };
    let mut present_paths: BTreeSet<PathBuf> = checks::kernel_features()
        .filter_map(|f| f.device)
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .collect();
    if let Ok(rd) = std::fs::read_dir("/sys/class/misc") {
        present_paths.extend(rd.filter_map(Result::ok).map(|e| e.path()));
    }
    KernelFacts {
        config: parse_kernel_config(&config_text),
        loaded_modules,
        builtin_modules: read_mods("modules.builtin"),
        available_modules: read_mods("modules.dep"),
        present_paths,
    }
}

fn guest_agent(setting: &str) -> crate::facts::AgentFacts {
    use crate::facts::AgentFacts;
    let exe = std::env::current_exe().ok();
    match hangar_image::find_agent(setting, exe.as_deref()) {
        Ok(hangar_image::AgentLookup::Off) => AgentFacts::Off,
        Ok(hangar_image::AgentLookup::Found(a)) => AgentFacts::Found {
            path: a.path().to_path_buf(),
            bytes: a.size(),
        },
        Ok(hangar_image::AgentLookup::Missing {
            looked_in,
            unusable,
        }) => AgentFacts::Missing {
            looked_in,
            unusable,
        },
        Err(e) => AgentFacts::Unusable(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_facts_read_v2_controllers_and_v1_directories() {
        let v2 = tempfile::tempdir().unwrap();
        std::fs::write(
            v2.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        let f = gather_cgroups(v2.path());
        assert_eq!(f.version, 2);
        assert!(f.controllers.contains("cpu") && f.controllers.contains("memory"));

        let v1 = tempfile::tempdir().unwrap();
        std::fs::create_dir(v1.path().join("memory")).unwrap();
        let f = gather_cgroups(v1.path());
        assert_eq!(f.version, 1);
        assert_eq!(f.controllers, ["memory".to_string()].into());
    }

    #[test]
    fn boot_snapshot_usage_counts_the_files_of_every_image() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("aaaa");
        let b = dir.path().join("bbbb");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("k1.state"), vec![0u8; 1000]).unwrap();
        std::fs::write(a.join("k2.state"), vec![0u8; 24]).unwrap();
        std::fs::write(b.join("k1.state"), vec![0u8; 1]).unwrap();
        // A stray file beside the image directories is no snapshot.
        std::fs::write(dir.path().join("README"), "x").unwrap();

        assert_eq!(boot_snapshot_usage(dir.path()), (3, 1025));
    }

    #[test]
    fn boot_snapshot_usage_of_a_missing_dir_is_zero() {
        let dir = tempfile::tempdir().unwrap();

        assert_eq!(boot_snapshot_usage(&dir.path().join("snapshots")), (0, 0));
    }

    #[test]
    fn nearest_existing_walks_up_to_a_dir_that_exists() {
        let dir = tempfile::tempdir().unwrap();

        assert_eq!(
            nearest_existing(&dir.path().join("a/b/c")),
            Some(dir.path().to_path_buf())
        );
    }

    #[test]
    fn a_missing_binary_is_recorded_not_run() {
        let b = binary(Path::new("/nonexistent/firecracker"), &["--version"]);

        assert_eq!(b.path, None);
        assert_eq!(b.version_output, Err("not found".into()));
    }

    #[test]
    fn a_binary_on_path_is_found_and_its_output_captured() {
        let b = binary(Path::new("sh"), &["-c", "echo v9.8.7"]);

        assert!(b.path.is_some());
        assert_eq!(b.version_output.as_deref(), Ok("v9.8.7\n"));
    }
}
