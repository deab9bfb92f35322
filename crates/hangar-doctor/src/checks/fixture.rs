//! Hosts built by hand for the check tests: a healthy one that each test
//! breaks in the one way it is about.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::facts::{BinaryFacts, CgroupFacts, DiskFacts, HostProbe, KernelFacts};
use crate::parse::parse_kernel_config;

/// A binary configured as `name`, found at `path`, that printed `out`.
pub fn binary(name: &str, path: Option<&str>, out: &str) -> BinaryFacts {
    BinaryFacts {
        configured: PathBuf::from(name),
        path: path.map(PathBuf::from),
        version_output: Ok(out.to_string()),
    }
}

/// A healthy host: root, hardware KVM (vmx), every binary and tool, the
/// kernel features present, plenty of disk.
pub fn healthy_host() -> HostProbe {
    HostProbe {
        euid_root: true,
        effective_caps: Some(u64::MAX >> 24),
        kvm_device_exists: true,
        kvm_open: Ok(()),
        cpu_flags: vec!["vmx".into()],
        kernel: KernelFacts {
            config: parse_kernel_config(
                "CONFIG_TUN=y\nCONFIG_BRIDGE=m\nCONFIG_BLK_DEV_LOOP=y\nCONFIG_BLK_DEV_DM=y\n",
            ),
            loaded_modules: ["kvm", "kvm_intel", "bridge"].map(String::from).into(),
            builtin_modules: BTreeSet::new(),
            available_modules: BTreeSet::new(),
            present_paths: ["/dev/net/tun", "/dev/loop-control", "/dev/mapper/control"]
                .map(PathBuf::from)
                .into(),
        },
        firecracker: binary(
            "firecracker",
            Some("/usr/bin/firecracker"),
            "Firecracker v1.10.1\n",
        ),
        jailer: binary("jailer", Some("/usr/bin/jailer"), "Jailer v1.10.1\n"),
        firecracker_interpreter: None,
        qemu: binary(
            "qemu-system-x86_64",
            Some("/usr/bin/qemu-system-x86_64"),
            "QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18)\n",
        ),
        tools: super::TOOLS
            .iter()
            .map(|t| {
                let path = PathBuf::from(format!("/usr/sbin/{}", t.bin));
                (t.bin.to_string(), Some(path))
            })
            .collect(),
        mkfs_ext4: binary(
            "mkfs.ext4",
            Some("/usr/sbin/mkfs.ext4"),
            "mke2fs 1.47.0 (5-Feb-2023)\n",
        ),
        mkfs_usage: "Usage: mke2fs [-c|-l filename] [-N number-of-inodes] [-d root-directory]\n"
            .into(),
        ip_forward: Some(true),
        disk: Ok(DiskFacts {
            measured: "/var/lib/hangar".into(),
            free_bytes: 50 << 30,
        }),
        storage: Ok(("reflink".into(), "reflink: FICLONE works".into())),
        leftovers: vec![],
        forward_drop_chains: Some(vec![]),
        cgroups: CgroupFacts {
            version: 2,
            controllers: ["cpu", "io", "memory", "pids"].map(String::from).into(),
        },
        boot_snapshots: (1, 70 << 20),
        guest_agent: crate::facts::AgentFacts::Found {
            path: "/usr/local/lib/hangar/hangar-agent".into(),
            bytes: 2 << 20,
        },
    }
}

/// A host whose `/dev/kvm` opens but which is itself a PVM guest (kvm_pvm
/// loaded, no vmx/svm flag): KVM cannot boot a stock guest kernel.
pub fn pvm_host() -> HostProbe {
    let mut p = healthy_host();
    p.cpu_flags = vec!["sse".into(), "hypervisor".into()];
    p.kernel.loaded_modules.remove("kvm_intel");
    p.kernel.loaded_modules.insert("kvm_pvm".into());
    p
}

/// A host without KVM at all.
pub fn no_kvm_host() -> HostProbe {
    let mut p = healthy_host();
    p.kvm_device_exists = false;
    p.kvm_open = Err("No such file or directory (os error 2)".into());
    p.kernel.loaded_modules.remove("kvm");
    p.kernel.loaded_modules.remove("kvm_intel");
    p
}
