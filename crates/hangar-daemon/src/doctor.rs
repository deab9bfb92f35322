//! Host diagnostics for `hangar doctor`. Each check says what it checks, the
//! result, and the exact fix (a command or a config line) when it does not
//! pass.
//!
//! Split in two so that every verdict is unit-testable: [`HostProbe::gather`]
//! is the only function that touches the host (files, devices, binaries on
//! the doctor process's `PATH`), and the `check_*` functions are pure over a
//! probe and the config. The daemon-dependent checks (API socket, default
//! image present locally) take what the CLI learned from the socket
//! ([`check_daemon`], [`check_default_image`]); doctor never needs a daemon.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hangar_config::{AccelChoice, Config, DriverChoice};
use hangar_vmm::Accel;
use serde::Serialize;

/// Below this much free space in the state dir doctor fails: the default
/// image's rootfs (~1 GiB) plus one VM disk (grown to `[defaults]
/// disk_size`, sparse) and the build scratch space do not fit.
pub const DISK_FAIL_BYTES: u64 = 2 << 30;
/// Below this much free space doctor warns: a few VMs that write to their
/// disks fill it quickly.
pub const DISK_WARN_BYTES: u64 = 10 << 30;
/// How long a `--version` style probe of a binary may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Short stable identifier, e.g. `kvm`, `disk-space`.
    pub name: String,
    /// One line: what this check looks at.
    pub what: String,
    pub level: Level,
    pub result: String,
    /// What to do when the level is warn or fail.
    pub fix: Option<String>,
}

impl Check {
    fn new(name: &str, what: &str, level: Level, result: impl Into<String>) -> Check {
        Check {
            name: name.to_string(),
            what: what.to_string(),
            level,
            result: result.into(),
            fix: None,
        }
    }

    fn fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }
}

/// A binary as configured, where it resolved on `PATH`, and what its
/// version probe printed.
#[derive(Debug, Clone)]
pub struct BinaryFacts {
    pub configured: PathBuf,
    pub path: Option<PathBuf>,
    /// stdout+stderr of the version probe (`--version`, `-V`), or why it
    /// could not run.
    pub version_output: Result<String, String>,
}

/// What the kernel offers, from every source doctor can read without
/// root: `/proc/config.gz` (or `/boot/config-<release>`), loaded modules
/// (`/proc/modules`, else `/sys/module`), `modules.builtin` and
/// `modules.dep` of the running kernel, and which device nodes exist.
#[derive(Debug, Clone, Default)]
pub struct KernelFacts {
    /// `CONFIG_X` → `y`/`m`; empty when no kernel config is readable.
    pub config: BTreeMap<String, String>,
    pub loaded_modules: BTreeSet<String>,
    /// Module names (as in `/sys/module`) built into the kernel.
    pub builtin_modules: BTreeSet<String>,
    /// Module names that exist as loadable `.ko` files.
    pub available_modules: BTreeSet<String>,
    /// Device nodes (and `/sys/class/misc` entries) that exist.
    pub present_paths: BTreeSet<PathBuf>,
}

/// Free space where the state dir is (or will be).
#[derive(Debug, Clone)]
pub struct DiskFacts {
    /// The nearest existing ancestor of the state dir that was measured.
    pub measured: PathBuf,
    pub free_bytes: u64,
}

/// Everything doctor learned about the host, gathered once.
#[derive(Debug, Clone)]
pub struct HostProbe {
    pub euid_root: bool,
    /// `CapEff` from `/proc/self/status`.
    pub effective_caps: Option<u64>,
    pub kvm_device_exists: bool,
    /// Opening the KVM device read-write: `Err` carries the OS error.
    pub kvm_open: Result<(), String>,
    pub cpu_flags: Vec<String>,
    pub kernel: KernelFacts,
    pub firecracker: BinaryFacts,
    pub jailer: BinaryFacts,
    pub qemu: BinaryFacts,
    /// Other tools by name (`nft`, `debootstrap`, `ip`, ...).
    pub tools: BTreeMap<String, Option<PathBuf>>,
    pub mkfs_ext4: BinaryFacts,
    /// `mkfs.ext4` run without arguments (its usage text).
    pub mkfs_usage: String,
    /// `/proc/sys/net/ipv4/ip_forward`, `None` when unreadable.
    pub ip_forward: Option<bool>,
    pub disk: Result<DiskFacts, String>,
    /// Name of the disk backend the config resolves to and why, or why the
    /// configured one cannot be used.
    pub storage: Result<(String, String), String>,
    pub leftovers: Vec<String>,
    /// Base chains on the forward hook with policy drop, from
    /// `nft list ruleset` (root-namespace mode only; `None`: not read).
    pub forward_drop_chains: Option<Vec<String>>,
    /// The cgroup hierarchy the jailer puts VMs in.
    pub cgroups: CgroupFacts,
    /// Saved boot snapshots: (count, bytes).
    pub boot_snapshots: (usize, u64),
}

/// What the jailer's CPU and memory limits need from the host's cgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupFacts {
    /// 2 for the unified hierarchy, else 1.
    pub version: u8,
    /// Controllers usable below the root: `cgroup.controllers` on v2, the
    /// mounted controller directories on v1.
    pub controllers: BTreeSet<String>,
}

/// Tools checked for presence only: (binary, Debian package, why needed).
const TOOLS: &[(&str, &str, &str)] = &[
    ("debootstrap", "debootstrap", "builds the catalog images"),
    ("resize2fs", "e2fsprogs", "grows VM disks"),
    ("ip", "iproute2", "creates bridges and TAPs"),
    ("nft", "nftables", "sets up NAT for guests"),
    ("busybox", "busybox-static", "builds the guest initramfs"),
];

/// Runs every host check for this config (no daemon needed).
pub fn run_checks(config: &Config) -> Vec<Check> {
    let probe = HostProbe::gather(config);
    host_checks(&probe, config)
}

/// The pure part of [`run_checks`].
pub fn host_checks(p: &HostProbe, config: &Config) -> Vec<Check> {
    let mut out = vec![
        check_privileges(p),
        check_kvm(p, config),
        check_firecracker(p, config),
        check_jailer(p, config),
        check_jailer_cgroups(p, config),
        check_qemu(p, config),
    ];
    out.extend(check_kernel_features(&p.kernel));
    out.push(check_mkfs(p));
    for (tool, pkg, why) in TOOLS {
        out.push(check_tool(p, config, tool, pkg, why));
    }
    out.push(check_disk_space(p, config));
    out.push(check_ip_forward(p, config));
    out.push(check_forward_policy(p, config));
    out.push(check_storage(p, config));
    out.push(check_boot_snapshots(p, config));
    out.push(check_leftovers(p));
    out
}

// ---------------------------------------------------------------- checks

const CAP_DAC_OVERRIDE: u32 = 1;
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
/// Capabilities the daemon needs: TAPs, bridges and nft (NET_ADMIN); netns,
/// mounts, loop and dm devices (SYS_ADMIN); root-owned state (DAC_OVERRIDE).
const NEEDED_CAPS: &[(u32, &str)] = &[
    (CAP_DAC_OVERRIDE, "CAP_DAC_OVERRIDE"),
    (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
    (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
];

pub fn check_privileges(p: &HostProbe) -> Check {
    const WHAT: &str =
        "the daemon runs as root or with CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_DAC_OVERRIDE";
    let missing: Vec<&str> = NEEDED_CAPS
        .iter()
        .filter(|(bit, _)| p.effective_caps.is_none_or(|c| c & (1u64 << bit) == 0))
        .map(|(_, n)| *n)
        .collect();
    match (p.euid_root, missing.is_empty()) {
        (true, true) => Check::new("privileges", WHAT, Level::Ok, "running as root"),
        (false, true) => Check::new(
            "privileges",
            WHAT,
            Level::Ok,
            "not root, but the needed capabilities are effective",
        ),
        (root, false) => Check::new(
            "privileges",
            WHAT,
            Level::Warn,
            format!(
                "{}missing {} (fine for the CLI; the daemon needs them)",
                if root { "root, but " } else { "not root; " },
                missing.join(", ")
            ),
        )
        .fix("run the daemon as root: `sudo hangar daemon`"),
    }
}

/// The accelerator KVM would give, from the probe (same rules as the
/// daemon's choice: `hangar_vmm::accel::decide`).
fn kvm_decision(p: &HostProbe) -> hangar_vmm::AccelDecision {
    let modules: Vec<String> = p.kernel.loaded_modules.iter().cloned().collect();
    hangar_vmm::accel::decide(p.kvm_open.is_ok(), &p.cpu_flags, &modules)
}

pub fn check_kvm(p: &HostProbe, config: &Config) -> Check {
    const WHAT: &str = "the KVM device exists, opens read-write and can run a stock guest kernel";
    let dev = config.vmm.kvm_device.display();
    let d = kvm_decision(p);
    let needs_kvm =
        config.vmm.accel == AccelChoice::Kvm || config.vmm.driver == DriverChoice::Firecracker;
    let tcg_fix =
        "use the qemu driver with TCG: [vmm] driver = \"qemu\" and accel = \"tcg\" (or \"auto\")";
    let (result, fix) = if !p.kvm_device_exists {
        (
            format!("{dev} is missing: no KVM; VMs run with the qemu driver under TCG (software emulation, slower)"),
            "load kvm_intel or kvm_amd (`modprobe kvm_intel` / `modprobe kvm_amd`) or use the qemu driver with accel = \"tcg\"".to_string(),
        )
    } else if let Err(e) = &p.kvm_open {
        (
            format!("{dev} exists but cannot be opened read-write ({e}); VMs run with the qemu driver under TCG"),
            format!("run the daemon as root or give it access to {dev} (group kvm), or {tcg_fix}"),
        )
    } else if d.accel == Accel::Tcg {
        let pvm = p.kernel.loaded_modules.contains("kvm_pvm")
            || p.kernel.config.contains_key("CONFIG_KVM_PVM");
        let why = if pvm {
            format!(
                "{dev} opens, but this host is itself a PVM guest (kvm_pvm, no vmx/svm CPU flag): \
                 KVM ioctls work, yet a stock guest kernel hangs under it (\"Probing EDD\" / \
                 emulation failure) with QEMU -accel kvm and with Firecracker; the qemu driver \
                 with TCG (software emulation) is used instead"
            )
        } else {
            format!(
                "{dev}: {}; the qemu driver with TCG is used instead",
                d.reason
            )
        };
        (
            why,
            format!("nothing to do: TCG is chosen automatically (slower than KVM). To make it explicit, {tcg_fix}; for KVM speed run on a host that exposes vmx/svm"),
        )
    } else {
        return Check::new(
            "kvm",
            WHAT,
            Level::Ok,
            format!("{dev} opens read-write and the CPU has vmx/svm: guests run under KVM"),
        );
    };
    if needs_kvm {
        let which = if config.vmm.driver == DriverChoice::Firecracker {
            "[vmm] driver = \"firecracker\""
        } else {
            "[vmm] accel = \"kvm\""
        };
        return Check::new(
            "kvm",
            WHAT,
            Level::Fail,
            format!("{which} needs KVM, but {result}"),
        )
        .fix(format!(
            "set [vmm] driver = \"qemu\" and accel = \"tcg\"; or {fix}"
        ));
    }
    Check::new("kvm", WHAT, Level::Warn, result).fix(fix)
}

/// Parses the first `x.y` or `x.y.z` version in a tool's output.
pub fn first_version(text: &str) -> Option<(u32, u32, u32)> {
    text.split(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')')
        .find_map(|w| {
            let w = w.trim_start_matches('v');
            let mut parts = w.split('.');
            let major = parts.next()?.parse().ok()?;
            let minor: u32 = parts
                .next()?
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .ok()?;
            let patch = parts
                .next()
                .map(|s| {
                    s.chars()
                        .take_while(char::is_ascii_digit)
                        .collect::<String>()
                })
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            Some((major, minor, patch))
        })
}

fn fmt_version(v: (u32, u32, u32)) -> String {
    format!("{}.{}.{}", v.0, v.1, v.2)
}

fn kvm_boots_guests(p: &HostProbe) -> bool {
    kvm_decision(p).accel == Accel::Kvm
}

pub fn check_firecracker(p: &HostProbe, config: &Config) -> Check {
    const WHAT: &str =
        "the Firecracker binary ([vmm] firecracker) is on PATH and is version 1.8 or newer";
    let fc = &p.firecracker;
    let install = "install Firecracker ≥ 1.8 from its GitHub releases and put it on PATH or set [vmm] firecracker = \"/path/to/firecracker\"";
    let Some(path) = &fc.path else {
        let name = fc.configured.display();
        return match config.vmm.driver {
            DriverChoice::Firecracker => Check::new(
                "firecracker",
                WHAT,
                Level::Fail,
                format!("{name} not found, but [vmm] driver = \"firecracker\""),
            )
            .fix(format!("{install}, or set [vmm] driver = \"qemu\"")),
            DriverChoice::Qemu => Check::new(
                "firecracker",
                WHAT,
                Level::Ok,
                format!("{name} not found; not needed ([vmm] driver = \"qemu\")"),
            ),
            DriverChoice::Auto if !kvm_boots_guests(p) => Check::new(
                "firecracker",
                WHAT,
                Level::Ok,
                format!("{name} not found; not needed: KVM cannot boot guests here, so the qemu driver is used"),
            ),
            DriverChoice::Auto => Check::new(
                "firecracker",
                WHAT,
                Level::Warn,
                format!("{name} not found; the qemu driver is used (Firecracker boots faster here)"),
            )
            .fix(install),
        };
    };
    match fc
        .version_output
        .as_deref()
        .ok()
        .and_then(hangar_vmm::parse_firecracker_version)
    {
        None => Check::new(
            "firecracker",
            WHAT,
            Level::Warn,
            format!(
                "found {}, but `firecracker --version` gave no version ({})",
                path.display(),
                short(fc.version_output.as_deref().unwrap_or_else(|e| e))
            ),
        )
        .fix(install),
        Some(v) => match hangar_vmm::firecracker_version_warning(v) {
            Some(w) => Check::new(
                "firecracker",
                WHAT,
                Level::Warn,
                format!("found {}: {w}", path.display()),
            )
            .fix(install),
            None => Check::new(
                "firecracker",
                WHAT,
                Level::Ok,
                format!("found {}, version {}", path.display(), fmt_version(v)),
            ),
        },
    }
}

/// Jailed VMs get `cpu.max`/`memory.max` (v2) or CFS quota and a memory
/// limit (v1): both controllers must be usable, or the jailer fails at
/// every start.
pub fn check_jailer_cgroups(p: &HostProbe, config: &Config) -> Check {
    const WHAT: &str =
        "the cpu and memory cgroup controllers the jailer limits VMs with (when [vmm] jailer = true)";
    let c = &p.cgroups;
    if !config.vmm.jailer {
        return Check::new(
            "jailer-cgroups",
            WHAT,
            Level::Ok,
            "not needed ([vmm] jailer = false)",
        );
    }
    let missing: Vec<&str> = hangar_vmm::LIMIT_CONTROLLERS
        .into_iter()
        .filter(|ctl| !c.controllers.contains(*ctl))
        .collect();
    if missing.is_empty() {
        return Check::new(
            "jailer-cgroups",
            WHAT,
            Level::Ok,
            format!("cgroup v{}: cpu and memory available", c.version),
        );
    }
    let level = if config.vmm.driver == DriverChoice::Firecracker {
        Level::Fail
    } else {
        Level::Warn
    };
    let fix = if c.version == 2 {
        "enable the controllers at the root (`echo +cpu +memory > /sys/fs/cgroup/cgroup.subtree_control`; with systemd they are on by default), or set [vmm] jailer = false"
    } else {
        "mount the cgroup v1 cpu and memory controllers under /sys/fs/cgroup (or boot with the unified hierarchy), or set [vmm] jailer = false"
    };
    Check::new(
        "jailer-cgroups",
        WHAT,
        level,
        format!(
            "cgroup v{}: {} not available, so the jailer cannot limit VMs",
            c.version,
            missing.join(" and ")
        ),
    )
    .fix(fix)
}

pub fn check_jailer(p: &HostProbe, config: &Config) -> Check {
    const WHAT: &str = "the jailer binary ([vmm] jailer_binary) is present and matches the Firecracker version when [vmm] jailer = true";
    let j = &p.jailer;
    let install = "install the jailer from the same Firecracker release and set [vmm] jailer_binary = \"/path/to/jailer\"";
    let Some(path) = &j.path else {
        if !config.vmm.jailer {
            return Check::new(
                "jailer",
                WHAT,
                Level::Ok,
                format!(
                    "{} not found; not used ([vmm] jailer = false)",
                    j.configured.display()
                ),
            );
        }
        let level = if config.vmm.driver == DriverChoice::Firecracker {
            Level::Fail
        } else {
            Level::Warn
        };
        return Check::new(
            "jailer",
            WHAT,
            level,
            format!(
                "{} not found, but [vmm] jailer = true",
                j.configured.display()
            ),
        )
        .fix(format!("{install}, or set [vmm] jailer = false"));
    };
    let jv = j
        .version_output
        .as_deref()
        .ok()
        .and_then(hangar_vmm::parse_firecracker_version);
    let fv = p
        .firecracker
        .version_output
        .as_deref()
        .ok()
        .and_then(hangar_vmm::parse_firecracker_version);
    match (jv, fv) {
        (None, _) => Check::new(
            "jailer",
            WHAT,
            Level::Warn,
            format!(
                "found {}, but `jailer --version` gave no version",
                path.display()
            ),
        )
        .fix(install),
        (Some(jv), Some(fv)) if jv != fv => Check::new(
            "jailer",
            WHAT,
            Level::Warn,
            format!(
                "found {} version {}, but Firecracker is {}: they must come from the same release",
                path.display(),
                fmt_version(jv),
                fmt_version(fv)
            ),
        )
        .fix(install),
        (Some(jv), _) => match hangar_vmm::firecracker_version_warning(jv) {
            Some(w) => Check::new(
                "jailer",
                WHAT,
                Level::Warn,
                format!("found {}: {w}", path.display()),
            )
            .fix(install),
            None => Check::new(
                "jailer",
                WHAT,
                Level::Ok,
                format!("found {}, version {}", path.display(), fmt_version(jv)),
            ),
        },
    }
}

pub fn check_qemu(p: &HostProbe, config: &Config) -> Check {
    const WHAT: &str = "the QEMU binary ([vmm] qemu) is present (the driver that works everywhere)";
    let q = &p.qemu;
    let Some(path) = &q.path else {
        let fc_used = match config.vmm.driver {
            DriverChoice::Firecracker => true,
            DriverChoice::Qemu => false,
            DriverChoice::Auto => p.firecracker.path.is_some() && kvm_boots_guests(p),
        };
        return Check::new(
            "qemu",
            WHAT,
            if fc_used { Level::Warn } else { Level::Fail },
            format!(
                "{} not found{}",
                q.configured.display(),
                if fc_used {
                    " (Firecracker is used instead)"
                } else {
                    ": VMs cannot start"
                }
            ),
        )
        .fix(format!(
            "apt-get install qemu-system-x86{}",
            if q.configured.components().count() > 1 {
                " and set [vmm] qemu = \"qemu-system-x86_64\" (or its full path)"
            } else {
                ""
            }
        ));
    };
    let version = q
        .version_output
        .as_deref()
        .ok()
        .and_then(first_version)
        .map(fmt_version)
        .unwrap_or_else(|| "unknown".into());
    Check::new(
        "qemu",
        WHAT,
        Level::Ok,
        format!("found {}, version {version}", path.display()),
    )
}

/// A kernel feature and where its presence shows.
struct Feature {
    name: &'static str,
    what: &'static str,
    config: &'static str,
    /// Module name as in `/sys/module` and `modules.dep` (`_` for `-`).
    module: &'static str,
    /// Device node the feature needs, if any.
    device: Option<&'static str>,
    /// Missing means fail (hangar cannot run VMs) rather than warn.
    required: bool,
    /// What missing it costs, for the result line.
    impact: &'static str,
}

const FEATURES: &[Feature] = &[
    Feature {
        name: "kernel-tun",
        what: "kernel TUN/TAP support (/dev/net/tun) for VM network devices",
        config: "CONFIG_TUN",
        module: "tun",
        device: Some("/dev/net/tun"),
        required: true,
        impact: "VMs get no network device",
    },
    Feature {
        name: "kernel-bridge",
        what: "kernel bridge support for the guest network",
        config: "CONFIG_BRIDGE",
        module: "bridge",
        device: None,
        required: true,
        impact: "the guest bridge cannot be created",
    },
    Feature {
        name: "kernel-loop",
        what: "loop devices (/dev/loop-control) for the dm disk backend",
        config: "CONFIG_BLK_DEV_LOOP",
        module: "loop",
        device: Some("/dev/loop-control"),
        required: false,
        impact: "the dm disk backend is unavailable (reflink/copy are used)",
    },
    Feature {
        name: "kernel-device-mapper",
        what: "device-mapper (/dev/mapper/control) for the dm disk backend",
        config: "CONFIG_BLK_DEV_DM",
        module: "dm_mod",
        device: Some("/dev/mapper/control"),
        required: false,
        impact: "the dm disk backend is unavailable (reflink/copy are used)",
    },
    Feature {
        name: "kernel-vhost-vsock",
        what: "vhost-vsock (/dev/vhost-vsock) for QEMU's host↔guest vsock channel",
        config: "CONFIG_VHOST_VSOCK",
        module: "vhost_vsock",
        device: Some("/dev/vhost-vsock"),
        required: false,
        impact:
            "QEMU guests get no vsock device (hangar reaches guests over SSH, so VMs still work)",
    },
];

/// Where a kernel feature stands.
#[derive(Debug, PartialEq, Eq)]
enum FeatureState {
    /// Usable now; the string is the evidence.
    Present(String),
    /// Built in or loaded, but its device node is missing.
    NoDevice,
    /// Available as a module that is not loaded.
    Loadable,
    Missing,
}

fn feature_state(k: &KernelFacts, f: &Feature) -> FeatureState {
    let dev_ok = f
        .device
        .is_none_or(|d| k.present_paths.contains(Path::new(d)));
    let cfg = k.config.get(f.config).map(String::as_str);
    let in_kernel = k.loaded_modules.contains(f.module)
        || k.builtin_modules.contains(f.module)
        || cfg == Some("y");
    if dev_ok && f.device.is_some() {
        return FeatureState::Present(format!("{} present", f.device.unwrap_or_default()));
    }
    if in_kernel {
        return if dev_ok {
            FeatureState::Present(if k.loaded_modules.contains(f.module) {
                format!("module {} loaded", f.module)
            } else {
                format!("built into the kernel ({}=y)", f.config)
            })
        } else {
            FeatureState::NoDevice
        };
    }
    if k.available_modules.contains(f.module) || cfg == Some("m") {
        return FeatureState::Loadable;
    }
    FeatureState::Missing
}

pub fn check_kernel_features(k: &KernelFacts) -> Vec<Check> {
    FEATURES
        .iter()
        .map(|f| {
            let bad = if f.required { Level::Fail } else { Level::Warn };
            match feature_state(k, f) {
                FeatureState::Present(why) => Check::new(f.name, f.what, Level::Ok, why),
                FeatureState::NoDevice => Check::new(
                    f.name,
                    f.what,
                    bad,
                    format!(
                        "in the kernel, but {} is missing: {}",
                        f.device.unwrap_or_default(),
                        f.impact
                    ),
                )
                .fix(format!(
                    "`modprobe {}`; if {} still does not exist, check that devtmpfs/udev is mounted",
                    f.module,
                    f.device.unwrap_or_default()
                )),
                FeatureState::Loadable => Check::new(
                    f.name,
                    f.what,
                    bad,
                    format!("module {} is available but not loaded: {}", f.module, f.impact),
                )
                .fix(format!(
                    "modprobe {0} (and add {0} to /etc/modules-load.d/hangar.conf)",
                    f.module
                )),
                FeatureState::Missing => Check::new(
                    f.name,
                    f.what,
                    bad,
                    format!(
                        "not in this kernel ({} unset{}): {}",
                        f.config,
                        if k.config.is_empty() { "?, no kernel config readable" } else { "" },
                        f.impact
                    ),
                )
                .fix(if f.required {
                    format!("use a kernel with {}=y or =m", f.config)
                } else {
                    format!("optional; for it use a kernel with {}=y or =m", f.config)
                }),
            }
        })
        .collect()
}

/// Whether `mkfs.ext4` supports `-d DIR` (populating the filesystem from a
/// directory, e2fsprogs ≥ 1.43): from its usage text, else its version.
pub fn mkfs_supports_d(usage: &str, version: Option<(u32, u32, u32)>) -> Option<bool> {
    if usage.contains("Usage") || usage.contains("usage") {
        return Some(usage.contains("[-d "));
    }
    version.map(|v| v >= (1, 43, 0))
}

pub fn check_mkfs(p: &HostProbe) -> Check {
    const WHAT: &str =
        "mkfs.ext4 (e2fsprogs) is present and supports -d (build a filesystem from a directory)";
    let fix = "apt-get install e2fsprogs (version 1.43 or newer)";
    let Some(path) = &p.mkfs_ext4.path else {
        return Check::new(
            "mkfs.ext4",
            WHAT,
            Level::Fail,
            "mkfs.ext4 not found: images cannot be built",
        )
        .fix(fix);
    };
    let version = p
        .mkfs_ext4
        .version_output
        .as_deref()
        .ok()
        .and_then(first_version);
    let v = version.map(fmt_version).unwrap_or_else(|| "unknown".into());
    match mkfs_supports_d(&p.mkfs_usage, version) {
        Some(true) => Check::new(
            "mkfs.ext4",
            WHAT,
            Level::Ok,
            format!("found {}, e2fsprogs {v}, supports -d", path.display()),
        ),
        Some(false) => Check::new(
            "mkfs.ext4",
            WHAT,
            Level::Fail,
            format!(
                "found {} (e2fsprogs {v}), but it does not support -d: images cannot be built",
                path.display()
            ),
        )
        .fix(fix),
        None => Check::new(
            "mkfs.ext4",
            WHAT,
            Level::Warn,
            format!(
                "found {}, but could not tell whether it supports -d",
                path.display()
            ),
        )
        .fix(fix),
    }
}

pub fn check_tool(p: &HostProbe, config: &Config, tool: &str, pkg: &str, why: &str) -> Check {
    let what = format!("{tool} is on PATH ({why})");
    match p.tools.get(tool).and_then(Option::as_ref) {
        Some(path) => Check::new(tool, &what, Level::Ok, format!("found {}", path.display())),
        None => {
            // NAT is only set up in root-namespace mode.
            let optional = tool == "nft" && (config.netns().is_some() || !config.network.nat);
            Check::new(
                tool,
                &what,
                if optional { Level::Warn } else { Level::Fail },
                format!("{tool} not found"),
            )
            .fix(format!("apt-get install {pkg}"))
        }
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

pub fn check_disk_space(p: &HostProbe, config: &Config) -> Check {
    let what = format!(
        "free space for images and VM disks in the state dir (fail below {}, warn below {})",
        gib(DISK_FAIL_BYTES),
        gib(DISK_WARN_BYTES)
    );
    let d = match &p.disk {
        Ok(d) => d,
        Err(e) => {
            return Check::new(
                "disk-space",
                &what,
                Level::Warn,
                format!("cannot measure: {e}"),
            )
            .fix("make state_dir (or a parent of it) exist and be readable")
        }
    };
    let result = format!(
        "{} free in {} (state_dir {})",
        gib(d.free_bytes),
        d.measured.display(),
        config.state_dir.display()
    );
    let fix = format!(
        "free space on that filesystem or set state_dir to a larger one (need at least {}, {} recommended)",
        gib(DISK_FAIL_BYTES),
        gib(DISK_WARN_BYTES)
    );
    if d.free_bytes < DISK_FAIL_BYTES {
        Check::new("disk-space", &what, Level::Fail, result).fix(fix)
    } else if d.free_bytes < DISK_WARN_BYTES {
        Check::new("disk-space", &what, Level::Warn, result).fix(fix)
    } else {
        Check::new("disk-space", &what, Level::Ok, result)
    }
}

pub fn check_ip_forward(p: &HostProbe, config: &Config) -> Check {
    const WHAT: &str = "IPv4 forwarding for guest traffic (root-namespace mode only)";
    if let Some(ns) = config.netns() {
        return Check::new(
            "ip-forward",
            WHAT,
            Level::Ok,
            format!("not needed: the VM network lives in network namespace {ns:?}"),
        );
    }
    match (p.ip_forward, config.network.nat) {
        (Some(true), _) => Check::new("ip-forward", WHAT, Level::Ok, "enabled"),
        (Some(false), true) => Check::new(
            "ip-forward",
            WHAT,
            Level::Ok,
            "off now; the daemon turns it on when it sets up NAT ([network] nat = true)",
        ),
        (Some(false), false) => Check::new(
            "ip-forward",
            WHAT,
            Level::Warn,
            "off and [network] nat = false: guests cannot reach beyond the host",
        )
        .fix("sysctl -w net.ipv4.ip_forward=1, or set [network] nat = true"),
        (None, _) => Check::new(
            "ip-forward",
            WHAT,
            Level::Warn,
            "cannot read /proc/sys/net/ipv4/ip_forward",
        )
        .fix("check that /proc is mounted"),
    }
}

pub fn check_storage(p: &HostProbe, config: &Config) -> Check {
    let what = format!(
        "which disk backend [storage] backend = {:?} resolves to, and why",
        config.storage.backend
    );
    match &p.storage {
        Ok((name, why)) => Check::new("disk-backend", &what, Level::Ok, format!("{name} — {why}")),
        Err(e) => Check::new("disk-backend", &what, Level::Fail, e.clone())
            .fix("set [storage] backend = \"auto\" (it picks the best one that works)"),
    }
}

pub fn check_leftovers(p: &HostProbe) -> Check {
    const WHAT: &str = "leftover hangar loop/dm devices (from a crash or failed teardown)";
    if p.leftovers.is_empty() {
        return Check::new("leftovers", WHAT, Level::Ok, "none found");
    }
    Check::new(
        "leftovers",
        WHAT,
        Level::Warn,
        format!("found {}: {}", p.leftovers.len(), p.leftovers.join("; ")),
    )
    .fix("stop the daemon's VMs or confirm none uses them, then run the commands shown")
}

/// The API socket: `Ok(detail)` when `GET /v1/info` answered.
pub fn check_daemon(socket: &Path, answer: Result<String, String>, config_path: &str) -> Check {
    const WHAT: &str = "the daemon's API socket answers (`hangar doctor` itself does not need it)";
    match answer {
        Ok(detail) => Check::new(
            "daemon",
            WHAT,
            Level::Ok,
            format!("answering on {} ({detail})", socket.display()),
        ),
        Err(e) => Check::new("daemon", WHAT, Level::Warn, format!("not reachable: {e}")).fix(
            format!("start it: `sudo hangar daemon --config {config_path}`"),
        ),
    }
}

/// Boot snapshots: whether they are used and what is saved.
pub fn check_boot_snapshots(p: &HostProbe, config: &Config) -> Check {
    const WHAT: &str = "boot snapshots ([vmm] boot_snapshots): later boots of an image resume after its kernel boot";
    let (count, bytes) = p.boot_snapshots;
    let saved = format!(
        "{count} saved ({} MiB) in {}",
        bytes >> 20,
        config.snapshots_dir().display()
    );
    if config.vmm.driver == DriverChoice::Firecracker {
        return Check::new(
            "boot-snapshots",
            WHAT,
            Level::Ok,
            "not used: the firecracker driver boots the kernel every time",
        );
    }
    if !config.vmm.boot_snapshots {
        return Check::new(
            "boot-snapshots",
            WHAT,
            Level::Warn,
            format!("off: every qemu boot runs the kernel (about 3 s more under TCG); {saved}"),
        )
        .fix("set [vmm] boot_snapshots = true");
    }
    Check::new(
        "boot-snapshots",
        WHAT,
        Level::Ok,
        format!("on (qemu driver, images Hangar builds): {saved}; safe to delete, the next boot saves a new one"),
    )
}

/// The default image: `local` is whether the daemon has it (`None` when
/// the daemon could not be asked). In the catalog is fine: `vm create`
/// builds it on first use.
pub fn check_default_image(image: &str, local: Option<bool>, catalog: &[&str]) -> Check {
    const WHAT: &str = "the default image ([defaults] image) is present locally or in the catalog";
    let in_catalog = catalog.contains(&image);
    let fix = format!(
        "register it with `hangar image register {image} ...` or set [defaults] image = one of: {}",
        catalog.join(", ")
    );
    match (local, in_catalog) {
        (Some(true), _) => Check::new("default-image", WHAT, Level::Ok, format!("{image} is present locally")),
        (local, true) => Check::new(
            "default-image",
            WHAT,
            Level::Ok,
            format!(
                "{image} is {}in the catalog: `hangar vm create` builds it on first use (or run `hangar image pull {image}` now)",
                if local.is_none() { "not known locally (daemon not reachable) but " } else { "not local yet, but " }
            ),
        ),
        (Some(false), false) => Check::new(
            "default-image",
            WHAT,
            Level::Fail,
            format!("{image} is neither present locally nor in the catalog: `hangar vm create` without --image fails"),
        )
        .fix(fix),
        (None, false) => Check::new(
            "default-image",
            WHAT,
            Level::Warn,
            format!("{image} is not in the catalog, and whether it is local is unknown (daemon not reachable)"),
        )
        .fix(fix),
    }
}

// ---------------------------------------------------------------- probing

impl HostProbe {
    /// Looks at the host. Never fails: what cannot be read is recorded as
    /// absent (with the reason where one exists), and the checks say so.
    pub fn gather(config: &Config) -> HostProbe {
        let kvm = &config.vmm.kvm_device;
        let tools = TOOLS
            .iter()
            .map(|(t, _, _)| (t.to_string(), which(Path::new(t))))
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
                Some(dir) => nix::sys::statvfs::statvfs(dir.as_path())
                    .map(|s| DiskFacts {
                        measured: dir.clone(),
                        free_bytes: s.blocks_available() * s.fragment_size(),
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
            boot_snapshots: {
                let files = crate::snapshots::BootSnapshots::new(config.snapshots_dir()).files();
                let bytes = files
                    .iter()
                    .filter_map(|f| std::fs::metadata(f).ok())
                    .map(|m| m.len())
                    .sum();
                (files.len(), bytes)
            },
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

/// Base chains hooked on `forward` whose policy is drop, as
/// `table <family> <name> chain <name>`, from `nft list ruleset` output.
/// Such a chain (Docker's and ufw's FORWARD) drops guest traffic whatever
/// Hangar's own table accepts.
pub fn forward_drop_chains(ruleset: &str) -> Vec<String> {
    let mut table = String::new();
    let mut chain = String::new();
    let mut found = Vec::new();
    for line in ruleset.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("table ") {
            table = rest.trim_end_matches('{').trim().to_string();
        } else if let Some(rest) = line.strip_prefix("chain ") {
            chain = rest.trim_end_matches('{').trim().to_string();
        } else if line.starts_with("type filter hook forward")
            && line.contains("policy drop")
            && table != "ip hangar"
        {
            found.push(format!("table {table} chain {chain}"));
        }
    }
    found
}

/// Whether the host firewall lets guest traffic be forwarded.
pub fn check_forward_policy(p: &HostProbe, config: &Config) -> Check {
    const WHAT: &str = "host firewall forwards guest traffic (root-namespace mode only)";
    if let Some(ns) = config.netns() {
        return Check::new(
            "forward-policy",
            WHAT,
            Level::Ok,
            format!("not needed: the VM network lives in network namespace {ns:?}"),
        );
    }
    match &p.forward_drop_chains {
        None => Check::new(
            "forward-policy",
            WHAT,
            Level::Ok,
            "not checked (nft missing or the ruleset could not be read)",
        ),
        Some(chains) if chains.is_empty() => Check::new(
            "forward-policy",
            WHAT,
            Level::Ok,
            "no forward chain with policy drop",
        ),
        Some(chains) => {
            let bridge = &config.network.bridge;
            Check::new(
                "forward-policy",
                WHAT,
                Level::Warn,
                format!(
                    "{} drops forwarded packets by default (Docker and ufw do this): guests cannot reach beyond the host",
                    chains.join(", ")
                ),
            )
            .fix(format!(
                "allow the bridge in that chain, e.g. `iptables -I FORWARD -i {bridge} -j ACCEPT; iptables -I FORWARD -o {bridge} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT` (with Docker: the DOCKER-USER chain), or set [network] netns"
            ))
        }
    }
}

/// Resolves a binary on the doctor process's `PATH` (an explicit path is
/// checked as is), like the daemon does.
fn which(bin: &Path) -> Option<PathBuf> {
    hangar_host::which(bin)
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

fn short(s: &str) -> String {
    let line = s.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        "no output".into()
    } else {
        line.chars().take(120).collect()
    }
}

/// `CapEff:` of a `/proc/<pid>/status` text.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// `CONFIG_X=y|m` lines of a kernel config.
pub fn parse_kernel_config(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.starts_with("CONFIG_"))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// Module names in `modules.builtin` / `modules.dep` lines
/// (`kernel/drivers/net/tun.ko[.xz]: deps`), with `-` normalised to `_`.
pub fn parse_module_paths(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.split(':').next())
        .filter_map(|p| p.rsplit('/').next())
        .filter_map(|f| f.split(".ko").next())
        .filter(|n| !n.is_empty())
        .map(|n| n.replace('-', "_"))
        .collect()
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
        Ok(s) => s
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect(),
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
    let mut present_paths: BTreeSet<PathBuf> = FEATURES
        .iter()
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::field_reassign_with_default)]
mod tests {
    use super::*;

    fn bin(name: &str, path: Option<&str>, out: &str) -> BinaryFacts {
        BinaryFacts {
            configured: PathBuf::from(name),
            path: path.map(PathBuf::from),
            version_output: Ok(out.to_string()),
        }
    }

    /// A healthy host with hardware KVM and every tool.
    fn good() -> HostProbe {
        HostProbe {
            euid_root: true,
            effective_caps: Some(u64::MAX >> 24),
            kvm_device_exists: true,
            kvm_open: Ok(()),
            cpu_flags: vec!["vmx".into()],
            kernel: KernelFacts {
                config: parse_kernel_config("CONFIG_TUN=y\nCONFIG_BRIDGE=m\nCONFIG_BLK_DEV_LOOP=y\nCONFIG_BLK_DEV_DM=y\nCONFIG_VHOST_VSOCK=m\n"),
                loaded_modules: ["kvm", "kvm_intel", "bridge", "vhost_vsock"].map(String::from).into(),
                builtin_modules: BTreeSet::new(),
                available_modules: BTreeSet::new(),
                present_paths: ["/dev/net/tun", "/dev/loop-control", "/dev/mapper/control", "/dev/vhost-vsock"]
                    .map(PathBuf::from)
                    .into(),
            },
            firecracker: bin("firecracker", Some("/usr/bin/firecracker"), "Firecracker v1.10.1\n"),
            jailer: bin("jailer", Some("/usr/bin/jailer"), "Jailer v1.10.1\n"),
            qemu: bin("qemu-system-x86_64", Some("/usr/bin/qemu-system-x86_64"), "QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18)\n"),
            tools: TOOLS.iter().map(|(t, _, _)| (t.to_string(), Some(PathBuf::from(format!("/usr/sbin/{t}"))))).collect(),
            mkfs_ext4: bin("mkfs.ext4", Some("/usr/sbin/mkfs.ext4"), "mke2fs 1.47.0 (5-Feb-2023)\n"),
            mkfs_usage: "Usage: mke2fs [-c|-l filename] [-N number-of-inodes] [-d root-directory]\n".into(),
            ip_forward: Some(true),
            disk: Ok(DiskFacts { measured: "/var/lib/hangar".into(), free_bytes: 50 << 30 }),
            storage: Ok(("reflink".into(), "reflink: FICLONE works".into())),
            leftovers: vec![],
            forward_drop_chains: Some(vec![]),
            cgroups: CgroupFacts { version: 2, controllers: ["cpu", "io", "memory", "pids"].map(String::from).into() },
            boot_snapshots: (1, 70 << 20),
        }
    }

    #[test]
    fn boot_snapshots_off_is_a_warning_with_the_fix_and_on_reports_what_is_saved() {
        let mut cfg = Config::default();
        let on = check_boot_snapshots(&good(), &cfg);
        assert_eq!(on.level, Level::Ok);
        assert!(on.result.contains("1 saved (70 MiB)"), "{}", on.result);

        cfg.vmm.boot_snapshots = false;
        let off = check_boot_snapshots(&good(), &cfg);
        assert_eq!(off.level, Level::Warn);
        assert_eq!(off.fix.as_deref(), Some("set [vmm] boot_snapshots = true"));

        cfg.vmm.driver = DriverChoice::Firecracker;
        let fc = check_boot_snapshots(&good(), &cfg);
        assert_eq!(fc.level, Level::Ok);
        assert!(fc.result.contains("not used"), "{}", fc.result);
    }

    #[test]
    fn jailer_cgroups_matter_only_with_the_jailer_and_name_the_missing_controller() {
        let mut p = good();
        p.cgroups.controllers.remove("memory");
        let mut cfg = Config::default();
        assert_eq!(check_jailer_cgroups(&p, &cfg).level, Level::Ok);

        cfg.vmm.jailer = true;
        cfg.vmm.driver = DriverChoice::Firecracker;
        let c = check_jailer_cgroups(&p, &cfg);

        assert_eq!(c.level, Level::Fail);
        assert!(
            c.result.contains("memory") && !c.result.contains("cpu and"),
            "{}",
            c.result
        );
        assert!(c.fix.unwrap().contains("subtree_control"));
        assert_eq!(check_jailer_cgroups(&good(), &cfg).level, Level::Ok);
    }

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
    fn forward_drop_chains_are_found_outside_our_table() {
        let ruleset = "table ip filter {\n\tchain FORWARD {\n\t\ttype filter hook forward priority filter; policy drop;\n\t\tcounter jump DOCKER-USER\n\t}\n\tchain INPUT {\n\t\ttype filter hook input priority filter; policy drop;\n\t}\n}\ntable ip hangar {\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy drop;\n\t}\n}\n";
        assert_eq!(
            forward_drop_chains(ruleset),
            vec!["table ip filter chain FORWARD"]
        );
        assert!(forward_drop_chains("table inet x {\n chain f {\n type filter hook forward priority 0; policy accept;\n }\n}\n").is_empty());
    }

    #[test]
    fn forward_drop_warns_in_root_namespace_mode_only() {
        let mut p = good();
        p.forward_drop_chains = Some(vec!["table ip filter chain FORWARD".into()]);
        let mut cfg = Config::default();
        let c = check_forward_policy(&p, &cfg);
        assert_eq!(c.level, Level::Warn);
        assert!(
            c.fix.as_deref().unwrap_or("").contains("-i hangar0"),
            "{c:?}"
        );
        cfg.network.netns = "ns1".into();
        assert_eq!(check_forward_policy(&p, &cfg).level, Level::Ok);
    }

    fn find<'a>(checks: &'a [Check], name: &str) -> &'a Check {
        checks.iter().find(|c| c.name == name).unwrap()
    }

    #[test]
    fn healthy_host_has_no_warnings_or_failures() {
        let checks = host_checks(&good(), &Config::default());

        let bad: Vec<_> = checks.iter().filter(|c| c.level != Level::Ok).collect();
        assert!(bad.is_empty(), "{bad:#?}");
        assert!(checks
            .iter()
            .all(|c| !c.what.is_empty() && !c.result.is_empty()));
    }

    #[test]
    fn every_non_ok_check_has_a_fix() {
        let mut p = good();
        p.euid_root = false;
        p.effective_caps = Some(0);
        p.kvm_device_exists = false;
        p.kvm_open = Err("No such file or directory".into());
        p.kernel = KernelFacts::default();
        p.firecracker.path = None;
        p.qemu.path = None;
        p.mkfs_ext4.path = None;
        p.tools.values_mut().for_each(|v| *v = None);
        p.disk = Ok(DiskFacts {
            measured: "/".into(),
            free_bytes: 1,
        });
        p.leftovers = vec!["dm device hangar-x".into()];

        let checks = host_checks(&p, &Config::default());

        for c in checks.iter().filter(|c| c.level != Level::Ok) {
            assert!(c.fix.as_deref().is_some_and(|f| !f.is_empty()), "{c:?}");
        }
    }

    #[test]
    fn kvm_missing_device_warns_with_module_and_tcg_fix() {
        let mut p = good();
        p.kvm_device_exists = false;
        p.kvm_open = Err("No such file or directory".into());
        let mut cfg = Config::default();
        cfg.vmm.kvm_device = "/nonexistent/kvm".into();

        let c = check_kvm(&p, &cfg);

        assert_eq!(c.level, Level::Warn);
        assert!(
            c.result.contains("/nonexistent/kvm is missing"),
            "{}",
            c.result
        );
        let fix = c.fix.unwrap();
        assert!(
            fix.contains("kvm_intel") && fix.contains("accel = \"tcg\""),
            "{fix}"
        );
    }

    #[test]
    fn kvm_pvm_host_warns_and_explains_tcg_fallback() {
        let mut p = good();
        p.cpu_flags = vec!["sse".into(), "hypervisor".into()];
        p.kernel.loaded_modules = ["kvm", "kvm_pvm"].map(String::from).into();

        let c = check_kvm(&p, &Config::default());

        assert_eq!(c.level, Level::Warn);
        assert!(
            c.result.contains("PVM") && c.result.contains("TCG"),
            "{}",
            c.result
        );
        assert!(c.result.contains("Probing EDD"), "{}", c.result);
    }

    #[test]
    fn kvm_unusable_with_accel_kvm_fails() {
        let mut p = good();
        p.cpu_flags = vec![];
        let mut cfg = Config::default();
        cfg.vmm.accel = AccelChoice::Kvm;

        let c = check_kvm(&p, &cfg);

        assert_eq!(c.level, Level::Fail);
        assert!(c.fix.unwrap().contains("accel = \"tcg\""));
    }

    #[test]
    fn firecracker_below_1_8_warns() {
        let mut p = good();
        p.firecracker.version_output = Ok("Firecracker v1.4.0\n".into());

        let c = check_firecracker(&p, &Config::default());

        assert_eq!(c.level, Level::Warn);
        assert!(c.result.contains("Firecracker < 1.8"), "{}", c.result);
    }

    #[test]
    fn firecracker_missing_with_auto_and_no_kvm_is_ok() {
        let mut p = good();
        p.firecracker.path = None;
        p.cpu_flags = vec![];

        let c = check_firecracker(&p, &Config::default());

        assert_eq!(c.level, Level::Ok, "{c:?}");
    }

    #[test]
    fn firecracker_missing_with_driver_firecracker_fails() {
        let mut p = good();
        p.firecracker.path = None;
        let mut cfg = Config::default();
        cfg.vmm.driver = DriverChoice::Firecracker;

        assert_eq!(check_firecracker(&p, &cfg).level, Level::Fail);
    }

    #[test]
    fn jailer_version_mismatch_warns() {
        let mut p = good();
        p.jailer.version_output = Ok("Jailer v1.9.0".into());
        let mut cfg = Config::default();
        cfg.vmm.jailer = true;

        let c = check_jailer(&p, &cfg);

        assert_eq!(c.level, Level::Warn);
        assert!(c.result.contains("same release"), "{}", c.result);
    }

    #[test]
    fn jailer_missing_but_unused_is_ok() {
        let mut p = good();
        p.jailer.path = None;

        assert_eq!(check_jailer(&p, &Config::default()).level, Level::Ok);
    }

    #[test]
    fn qemu_missing_with_qemu_driver_fails_with_apt_fix() {
        let mut p = good();
        p.qemu.path = None;
        p.qemu.configured = "/nonexistent".into();
        let mut cfg = Config::default();
        cfg.vmm.driver = DriverChoice::Qemu;

        let c = check_qemu(&p, &cfg);

        assert_eq!(c.level, Level::Fail);
        assert!(c.fix.unwrap().contains("apt-get install qemu-system-x86"));
    }

    #[test]
    fn qemu_found_reports_version() {
        let c = check_qemu(&good(), &Config::default());

        assert_eq!(c.level, Level::Ok);
        assert!(c.result.contains("7.2.19"), "{}", c.result);
    }

    #[test]
    fn loadable_module_gives_modprobe_fix() {
        let mut k = good().kernel;
        k.present_paths.remove(Path::new("/dev/mapper/control"));
        k.config.remove("CONFIG_BLK_DEV_DM");
        k.available_modules.insert("dm_mod".into());

        let checks = check_kernel_features(&k);
        let c = find(&checks, "kernel-device-mapper");

        assert_eq!(c.level, Level::Warn);
        assert!(
            c.fix.as_deref().unwrap().starts_with("modprobe dm_mod"),
            "{c:?}"
        );
    }

    #[test]
    fn missing_tun_fails_but_missing_vsock_warns() {
        let k = KernelFacts {
            config: parse_kernel_config("CONFIG_BRIDGE=y\n# CONFIG_TUN is not set\n"),
            ..KernelFacts::default()
        };

        let checks = check_kernel_features(&k);

        assert_eq!(find(&checks, "kernel-tun").level, Level::Fail);
        assert_eq!(find(&checks, "kernel-bridge").level, Level::Ok);
        assert_eq!(find(&checks, "kernel-vhost-vsock").level, Level::Warn);
    }

    #[test]
    fn builtin_feature_without_device_node_says_so() {
        let k = KernelFacts {
            config: parse_kernel_config("CONFIG_TUN=y\n"),
            ..KernelFacts::default()
        };

        let checks = check_kernel_features(&k);
        let c = find(&checks, "kernel-tun");

        assert_eq!(c.level, Level::Fail);
        assert!(c.result.contains("/dev/net/tun is missing"), "{}", c.result);
    }

    #[test]
    fn module_paths_are_normalised() {
        let mods = parse_module_paths(
            "kernel/drivers/md/dm-mod.ko.xz: kernel/x.ko\nkernel/net/bridge/bridge.ko:\n",
        );

        assert!(
            mods.contains("dm_mod") && mods.contains("bridge"),
            "{mods:?}"
        );
    }

    #[test]
    fn mkfs_without_d_in_usage_fails() {
        let mut p = good();
        p.mkfs_usage = "Usage: mke2fs [-c|-l filename] [-b block-size]\n".into();

        let c = check_mkfs(&p);

        assert_eq!(c.level, Level::Fail);
        assert!(c.fix.unwrap().contains("e2fsprogs"));
    }

    #[test]
    fn mkfs_supports_d_falls_back_to_version() {
        assert_eq!(mkfs_supports_d("", Some((1, 42, 9))), Some(false));
        assert_eq!(mkfs_supports_d("", Some((1, 47, 0))), Some(true));
        assert_eq!(mkfs_supports_d("", None), None);
    }

    #[test]
    fn disk_space_levels_follow_thresholds() {
        let mut p = good();
        let cfg = Config::default();
        let level = |p: &mut HostProbe, free| {
            p.disk = Ok(DiskFacts {
                measured: "/".into(),
                free_bytes: free,
            });
            check_disk_space(p, &cfg).level
        };

        assert_eq!(level(&mut p, DISK_FAIL_BYTES - 1), Level::Fail);
        assert_eq!(level(&mut p, DISK_WARN_BYTES - 1), Level::Warn);
        assert_eq!(level(&mut p, DISK_WARN_BYTES), Level::Ok);
    }

    #[test]
    fn ip_forward_is_not_checked_in_netns_mode() {
        let mut p = good();
        p.ip_forward = Some(false);
        let mut cfg = Config::default();
        cfg.network.nat = false;
        cfg.network.netns = "ns1".into();

        assert_eq!(check_ip_forward(&p, &cfg).level, Level::Ok);
        cfg.network.netns.clear();
        assert_eq!(check_ip_forward(&p, &cfg).level, Level::Warn);
    }

    #[test]
    fn privileges_without_root_or_caps_warn() {
        let mut p = good();
        p.euid_root = false;
        p.effective_caps = Some(1 << CAP_NET_ADMIN);

        let c = check_privileges(&p);

        assert_eq!(c.level, Level::Warn);
        assert!(
            c.result.contains("CAP_SYS_ADMIN") && !c.result.contains("CAP_NET_ADMIN"),
            "{}",
            c.result
        );
    }

    #[test]
    fn cap_eff_is_parsed_as_hex() {
        assert_eq!(
            parse_cap_eff("Name:\tx\nCapEff:\t000001ffffffffff\n"),
            Some(0x1ff_ffff_ffff)
        );
    }

    #[test]
    fn default_image_in_catalog_but_not_local_is_ok() {
        let c = check_default_image("debian-12", Some(false), &["debian-12"]);

        assert_eq!(c.level, Level::Ok);
        assert!(c.result.contains("first use"), "{}", c.result);
    }

    #[test]
    fn default_image_in_neither_fails_and_unknown_warns() {
        assert_eq!(
            check_default_image("mine", Some(false), &["debian-12"]).level,
            Level::Fail
        );
        assert_eq!(
            check_default_image("mine", None, &["debian-12"]).level,
            Level::Warn
        );
        assert_eq!(
            check_default_image("mine", Some(true), &["debian-12"]).level,
            Level::Ok
        );
    }

    #[test]
    fn storage_error_fails_with_auto_fix() {
        let mut p = good();
        p.storage = Err("FICLONE does not work".into());

        let c = check_storage(&p, &Config::default());

        assert_eq!(c.level, Level::Fail);
        assert!(c.fix.unwrap().contains("backend = \"auto\""));
    }

    #[test]
    fn leftovers_warn_listing_each() {
        let mut p = good();
        p.leftovers =
            vec!["dm device hangar-a-disk (remove with `dmsetup remove hangar-a-disk`)".into()];

        let c = check_leftovers(&p);

        assert_eq!(c.level, Level::Warn);
        assert!(c.result.contains("dmsetup remove hangar-a-disk"));
    }

    #[test]
    fn first_version_reads_common_formats() {
        assert_eq!(
            first_version("QEMU emulator version 7.2.19 (Debian)"),
            Some((7, 2, 19))
        );
        assert_eq!(
            first_version("mke2fs 1.47.0 (5-Feb-2023)"),
            Some((1, 47, 0))
        );
        assert_eq!(first_version("tool 8.1"), Some((8, 1, 0)));
        assert_eq!(first_version("none"), None);
    }

    /// Against the real host: gathering never panics and yields the fixed
    /// set of checks, each described.
    #[test]
    fn run_checks_on_this_host_describes_every_check() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.state_dir = dir.path().join("state");

        let checks = run_checks(&cfg);

        assert_eq!(checks.len(), 6 + FEATURES.len() + 1 + TOOLS.len() + 6);
        assert!(find(&checks, "boot-snapshots").result.contains("0 saved"));
        assert!(checks.iter().all(|c| !c.what.is_empty()));
        assert!(find(&checks, "disk-space")
            .result
            .contains(&dir.path().display().to_string()));
    }
}
