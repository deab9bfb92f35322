//! Everything doctor learns about the host, as plain data. [`HostProbe`]
//! is filled once by [`HostProbe::gather`](crate::probe) and the checks are
//! pure over it, so a test builds one by hand for any kind of host.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

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
    /// The dynamic loader the Firecracker binary asks for (`PT_INTERP`);
    /// `None` when it is static or was not found.
    pub firecracker_interpreter: Option<String>,
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
    /// What `[guest] agent` resolves to for this `hangar` binary.
    pub guest_agent: AgentFacts,
}

/// The guest agent as `hangar daemon` would find it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentFacts {
    Off,
    Found {
        path: PathBuf,
        bytes: usize,
    },
    /// `auto` found none usable: where it looked, and why candidates that
    /// exist are not usable.
    Missing {
        looked_in: Vec<PathBuf>,
        unusable: Vec<String>,
    },
    /// A configured path that is not a usable agent.
    Unusable(String),
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

/// What the jailer's CPU and memory limits need from the host's cgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupFacts {
    /// 2 for the unified hierarchy, else 1.
    pub version: u8,
    /// Controllers usable below the root: `cgroup.controllers` on v2, the
    /// mounted controller directories on v1.
    pub controllers: BTreeSet<String>,
}
