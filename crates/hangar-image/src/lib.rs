//! hangar-image: images (kernel + initrd + ext4 rootfs + manifest) and the
//! per-VM boot contract.
//!
//! - [`build_bootstrap_image`] / [`build_or_reuse_cached`]: the default
//!   `debian-12` image, built locally from Debian packages.
//! - [`import_files`]: register user files.
//! - [`catalog`]: the image names the daemon knows how to obtain.
//! - [`identity::write_config_drive`] + [`kernel_cmdline`]: what each VM
//!   boots with. Boot contract (QEMU microvm or Firecracker):
//!   `-kernel vmlinux -initrd initrd.img -append "$(kernel_cmdline)"`, a
//!   writable root disk (ext4 label `root`), a read-only config drive and
//!   one virtio-net interface; device order does not matter.
//!
//! The guest side (`assets/`): our initramfs loads the virtio modules,
//! mounts the root by label, unpacks the config drive into `/run/hangar`,
//! sets the address and route, then `switch_root`s to
//! `tini -s -- /usr/lib/hangar/guest-init`, which mounts the API
//! filesystems, sets the hostname and runs `sshd -D -e -r`. SIGTERM/SIGINT
//! to PID 1 (and `poweroff` in the guest) stop all processes, remount `/`
//! read-only and power off, so the VMM process exits.

// Lets the flatten unit tests share tests/flatten_support with the
// integration tests, which name this crate `hangar_image`.
#[cfg(test)]
extern crate self as hangar_image;

mod agent;
mod assets;
mod bootstrap;
mod cache;
pub mod catalog;
mod cmdline;
mod cpio;
mod error;
mod finalize;
pub mod flatten;
pub mod identity;
mod import;
mod initramfs;
mod kernel;
mod manifest;
mod mirror;
mod own_kernel;
mod process;
mod recipe;
mod rootfs;
pub mod sources;

pub use agent::{
    agent_candidates, find_agent, AgentLookup, GuestAgent, AGENT_BINARY, AGENT_INITRD_PREFIX,
};
pub use bootstrap::{build_bootstrap_image, INITRD_FILE, KERNEL_FILE, ROOTFS_FILE};
pub use cache::{build_or_reuse_cached, copy_image, sweep_crashed_builds, DEFAULT_CACHE_DIR};
pub use catalog::{catalog, CatalogItem};
pub use cmdline::{host_tsc_khz, kernel_cmdline, CmdlineOptions};
pub use error::ImageError;
pub use finalize::{finalize_oci, KernelSource};
pub use flatten::copy::fill;
pub use identity::{login_keys_member, write_config_drive, GuestIdentity, LoginKeys};
pub use import::{finish_upload, import_files, sha256_file, UPLOADED_KERNEL_FILE};
pub use kernel::{extract_bzimage, vmlinux_from_bzimage, write_vmlinux};
pub use manifest::{FileDigests, ImageManifest, Lineage, MANIFEST_FILE};
pub use mirror::{host_debian_mirror, DEFAULT_MIRROR};
pub use process::ProgressFn;
pub use recipe::Recipe;
