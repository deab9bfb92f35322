//! The VMM spec of a machine. Boots and boot snapshot prewarms both build
//! it here, so a snapshot saved by one fits the other
//! ([`hangar_vmm::VmmDriver::boot_snapshot_key`]).

use std::path::{Path, PathBuf};

use hangar_image::{kernel_cmdline, CmdlineOptions, ImageManifest};
use hangar_vmm::{Drive, RunAs, VmSpec};

use crate::infra::Infra;
use crate::vm_service::dir::VmDir;

/// A VM, its shape and its files.
pub struct MachineSpec<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub cpus: u32,
    pub memory_mib: u32,
    pub image_dir: &'a Path,
    pub manifest: &'a ImageManifest,
    /// The initrd to boot ([`crate::guest_agent::boot_initrd_for`]).
    pub initrd: Option<PathBuf>,
    /// The root disk as the VMM opens it (file or block device).
    pub root_disk: PathBuf,
    /// Holds the config drive, the serial log and the VMM's files.
    pub vm_dir: &'a VmDir,
    pub tap: String,
    pub mac: String,
    /// The ids its VMM runs as ([`crate::confine`]).
    pub run_as: Option<RunAs>,
}

pub fn vm_spec(infra: &Infra, m: MachineSpec<'_>) -> VmSpec {
    let tsc_khz = if infra.driver.wants_host_tsc() {
        hangar_image::host_tsc_khz()
    } else {
        None
    };
    VmSpec {
        id: m.id.to_string(),
        name: m.name.to_string(),
        cpus: m.cpus,
        memory_mib: m.memory_mib,
        kernel: m.image_dir.join(&m.manifest.kernel),
        initrd: m.initrd,
        cmdline: kernel_cmdline(&CmdlineOptions {
            tsc_khz,
            extra: guest_kernel_args(infra, tsc_khz),
        }),
        root_disk: m.root_disk,
        extra_drives: vec![Drive {
            id: "cfg".into(),
            path: m.vm_dir.config_drive(),
            read_only: true,
        }],
        tap: m.tap,
        mac: m.mac,
        vm_dir: m.vm_dir.path().to_path_buf(),
        serial_log: m.vm_dir.serial_log(),
        netns: infra.config.netns().map(str::to_string),
        restore_from: None,
        run_as: m.run_as,
    }
}

/// Kernel arguments the driver adds, then the user's.
fn guest_kernel_args(infra: &Infra, tsc_khz: Option<u64>) -> Vec<String> {
    let mut args = infra.driver.guest_kernel_args(tsc_khz);
    args.extend(
        infra
            .config
            .vmm
            .kernel_args
            .split_whitespace()
            .map(str::to_string),
    );
    args
}
