//! Host diagnostics. Each check says what it checks, the result, and the
//! exact fix when it fails. `hangar doctor` runs these locally (it needs no
//! daemon) and adds whether the daemon's socket answers.

use std::path::Path;

use hangar_config::Config;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub level: Level,
    pub result: String,
    /// What to do when the level is warn or fail.
    pub fix: Option<String>,
}

fn check(name: &str, level: Level, result: impl Into<String>, fix: Option<&str>) -> Check {
    Check {
        name: name.to_string(),
        level,
        result: result.into(),
        fix: fix.map(str::to_string),
    }
}

/// Runs the host checks for this config.
pub fn run_checks(config: &Config) -> Vec<Check> {
    let mut out = Vec::new();
    let root = nix::unistd::geteuid().is_root();
    out.push(if root {
        check("root", Level::Ok, "running as root", None)
    } else {
        check(
            "root",
            Level::Warn,
            "not root: the daemon needs root (TAPs, bridges, disks)",
            Some("run `sudo hangar daemon`"),
        )
    });

    let decision = hangar_vmm::accel::detect();
    let kvm_level = match decision.accel {
        hangar_vmm::Accel::Kvm => Level::Ok,
        hangar_vmm::Accel::Tcg => Level::Warn,
    };
    out.push(check(
        "kvm",
        kvm_level,
        decision.reason.clone(),
        (kvm_level != Level::Ok).then_some(
            "VMs still run with the qemu driver under TCG (slower); for Firecracker use a host with hardware virtualization and /dev/kvm",
        ),
    ));

    let qemu = crate::daemon::which(&config.vmm.qemu);
    let fc = crate::daemon::which(&config.vmm.firecracker);
    out.push(match &qemu {
        Some(p) => check("qemu", Level::Ok, format!("found {}", p.display()), None),
        None => check(
            "qemu",
            if fc.is_some() {
                Level::Warn
            } else {
                Level::Fail
            },
            format!("{} not found", config.vmm.qemu.display()),
            Some("apt-get install qemu-system-x86"),
        ),
    });
    out.push(match &fc {
        Some(p) => check(
            "firecracker",
            Level::Ok,
            format!("found {}", p.display()),
            None,
        ),
        None => check(
            "firecracker",
            Level::Warn,
            format!(
                "{} not found; the qemu driver is used",
                config.vmm.firecracker.display()
            ),
            Some("install Firecracker ≥ 1.8 and set [vmm] firecracker = \"/path/to/firecracker\""),
        ),
    });

    for (tool, pkg) in [
        ("mkfs.ext4", "e2fsprogs"),
        ("resize2fs", "e2fsprogs"),
        ("debootstrap", "debootstrap"),
        ("ip", "iproute2"),
        ("nft", "nftables"),
        ("busybox", "busybox-static"),
    ] {
        out.push(match crate::daemon::which(Path::new(tool)) {
            Some(p) => check(tool, Level::Ok, format!("found {}", p.display()), None),
            None => check(
                tool,
                if tool == "nft" && config.netns().is_some() {
                    Level::Warn
                } else {
                    Level::Fail
                },
                format!("{tool} not found"),
                Some(&format!("apt-get install {pkg}")),
            ),
        });
    }

    out.push(if Path::new("/dev/net/tun").exists() {
        check("tun", Level::Ok, "/dev/net/tun present", None)
    } else {
        check(
            "tun",
            Level::Fail,
            "/dev/net/tun missing",
            Some("modprobe tun"),
        )
    });

    out.push(disk_space_check(&config.state_dir));

    let default = &config.defaults.image;
    let local = crate::images::catalog()
        .iter()
        .any(|c| c.name == default.as_str());
    out.push(if local {
        check(
            "default-image",
            Level::Ok,
            format!("{default} is in the catalog; `hangar vm create` builds it on first use"),
            None,
        )
    } else {
        check(
            "default-image",
            Level::Warn,
            format!("{default} is not in the built-in catalog; it must be registered locally"),
            Some(
                "register it with `hangar image register` or set [defaults] image = \"debian-12\"",
            ),
        )
    });
    out
}

fn disk_space_check(dir: &Path) -> Check {
    let probe = std::iter::successors(Some(dir), |p| p.parent()).find(|p| p.exists());
    let Some(probe) = probe else {
        return check("disk-space", Level::Warn, "cannot find the state dir", None);
    };
    match nix::sys::statvfs::statvfs(probe) {
        Ok(s) => {
            let free = s.blocks_available() as u64 * s.fragment_size() as u64;
            let gib = free as f64 / (1u64 << 30) as f64;
            if free < (4u64 << 30) {
                check(
                    "disk-space",
                    Level::Fail,
                    format!("{gib:.1} GiB free in {}", probe.display()),
                    Some("free at least 4 GiB or point state_dir at a larger filesystem"),
                )
            } else {
                check(
                    "disk-space",
                    Level::Ok,
                    format!("{gib:.1} GiB free in {}", probe.display()),
                    None,
                )
            }
        }
        Err(e) => check(
            "disk-space",
            Level::Warn,
            format!("statvfs failed: {e}"),
            None,
        ),
    }
}
