//! The checks, one module per subsystem. Every check is a pure function of
//! a [`HostProbe`](crate::HostProbe) and the config (the daemon checks take
//! what the CLI learned from the socket), so each verdict is unit-tested on
//! hand-built hosts.
//!
//! - [`host`] — privileges;
//! - [`vmm`] — KVM, Firecracker, jailer and its cgroups, QEMU, boot snapshots;
//! - [`net`] — TUN and bridge support, `ip`/`nft`, forwarding, the host firewall;
//! - [`disk`] — loop and device-mapper, `resize2fs`, free space, the disk
//!   backend, leftover devices;
//! - [`image`] — `mkfs.ext4`, `debootstrap`/`busybox`, the default image;
//! - [`daemon`] — whether the daemon answers.
//!
//! Subsystems declare the kernel features ([`kernel::Feature`]) and tools
//! ([`tools::Tool`]) they need; [`kernel`] and [`tools`] judge them alike.

pub mod daemon;
pub mod disk;
pub mod host;
pub mod image;
pub mod kernel;
pub mod net;
pub mod tools;
pub mod vmm;

#[cfg(test)]
pub(crate) mod fixture;

/// Tools checked for presence only, in report order.
pub const TOOLS: [&tools::Tool; 5] = [
    &image::DEBOOTSTRAP,
    &disk::RESIZE2FS,
    &net::IP,
    &net::NFT,
    &image::BUSYBOX,
];

/// Every kernel feature a subsystem needs, in report order.
pub fn kernel_features() -> impl Iterator<Item = &'static kernel::Feature> {
    net::FEATURES.iter().chain(disk::FEATURES)
}
