//! `hangar doctor`: host diagnostics. Each check says what it checks, the
//! result, and the exact fix (a command or a config line) when it does not
//! pass.
//!
//! Split so that every verdict is unit-testable:
//! - [`report`] — what a check reports ([`Check`], [`Level`]);
//! - [`facts`] — what doctor knows about the host ([`HostProbe`]), as data;
//! - [`probe`] — [`HostProbe::gather`], the only code that touches the host;
//! - [`parse`] — pure parsers of `/proc`, kernel and `nft` texts;
//! - [`checks`] — one module per subsystem (vmm, net, disk, image, daemon),
//!   pure over a probe and the config.
//!
//! The daemon-dependent checks (API socket, default image present locally)
//! take what the CLI learned from the socket ([`check_daemon`],
//! [`check_default_image`]); doctor never needs a daemon, and does not
//! depend on the daemon crate.

pub mod checks;
pub mod facts;
pub mod parse;
pub mod probe;
pub mod report;

use hangar_config::Config;

use checks::{disk, host, image, kernel, net, tools, vmm};

pub use checks::daemon::check_daemon;
pub use checks::image::{check_default_image, CatalogFacts};
pub use facts::{BinaryFacts, CgroupFacts, DiskFacts, HostProbe, KernelFacts};
pub use report::{Check, Level};

/// Runs every host check for this config (no daemon needed).
pub fn run_checks(config: &Config) -> Vec<Check> {
    let probe = HostProbe::gather(config);
    host_checks(&probe, config)
}

/// The pure part of [`run_checks`]: every host check, in report order.
pub fn host_checks(p: &HostProbe, config: &Config) -> Vec<Check> {
    let mut out = vec![
        host::check_privileges(p),
        vmm::check_kvm(p, config),
        vmm::check_firecracker(p, config),
        vmm::check_jailer(p, config),
        vmm::check_jailer_cgroups(p, config),
        vmm::check_firecracker_static(p, config),
        vmm::check_qemu(p, config),
        vmm::check_confinement(p, config),
    ];
    out.extend(checks::kernel_features().map(|f| kernel::check_feature(&p.kernel, f)));
    out.push(image::check_mkfs(p));
    out.push(image::check_guest_agent(p));
    out.extend(
        checks::TOOLS
            .iter()
            .map(|t| tools::check_tool(p, config, t)),
    );
    out.push(disk::check_disk_space(p, config));
    out.push(net::check_ip_forward(p, config));
    out.push(net::check_forward_policy(p, config));
    out.push(disk::check_storage(p, config));
    out.push(vmm::check_boot_snapshots(p, config));
    out.push(disk::check_leftovers(p));
    out
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::checks::fixture::{healthy_host, no_kvm_host, pvm_host};
    use crate::facts::DiskFacts;

    fn find<'a>(checks: &'a [Check], name: &str) -> &'a Check {
        checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no check named {name}: {checks:#?}"))
    }

    fn names(checks: &[Check]) -> Vec<&str> {
        checks.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn healthy_host_has_no_warnings_or_failures() {
        let checks = host_checks(&healthy_host(), &Config::default());

        let bad: Vec<_> = checks.iter().filter(|c| c.level != Level::Ok).collect();
        assert!(bad.is_empty(), "{bad:#?}");
        assert!(checks
            .iter()
            .all(|c| !c.what.is_empty() && !c.result.is_empty()));
    }

    #[test]
    fn every_check_has_its_own_name_whatever_the_host() {
        for host in [healthy_host(), pvm_host(), no_kvm_host()] {
            let checks = host_checks(&host, &Config::default());
            let unique: BTreeSet<&str> = names(&checks).into_iter().collect();
            assert_eq!(unique.len(), checks.len(), "{:?}", names(&checks));
        }
    }

    /// vsock is wired into nothing the daemon does, so doctor must not
    /// warn about it.
    #[test]
    fn no_check_is_about_vsock() {
        let mut p = healthy_host();
        p.kernel = KernelFacts::default();

        let checks = host_checks(&p, &Config::default());

        assert!(
            checks
                .iter()
                .all(|c| !c.name.contains("vsock") && !c.what.contains("vsock")),
            "{:?}",
            names(&checks)
        );
    }

    #[test]
    fn every_non_ok_check_has_a_fix() {
        let mut p = no_kvm_host();
        p.euid_root = false;
        p.effective_caps = Some(0);
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

        assert!(checks.iter().any(|c| c.level == Level::Fail));
        for c in checks.iter().filter(|c| c.level != Level::Ok) {
            assert!(c.fix.as_deref().is_some_and(|f| !f.is_empty()), "{c:?}");
        }
    }

    /// On a PVM guest only the KVM check warns: the qemu driver with TCG is
    /// chosen, so a missing Firecracker is no matter.
    #[test]
    fn pvm_host_without_firecracker_warns_about_kvm_only() {
        let mut p = pvm_host();
        p.firecracker.path = None;

        let checks = host_checks(&p, &Config::default());

        let not_ok: Vec<&str> = checks
            .iter()
            .filter(|c| c.level != Level::Ok)
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(not_ok, ["kvm"]);
        assert_eq!(find(&checks, "kvm").level, Level::Warn);
    }

    /// Against the real host: gathering never panics, every check is
    /// described, and what the probe read shows in the results.
    #[test]
    fn run_checks_on_this_host_describes_every_check() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.state_dir = dir.path().join("state");

        let checks = run_checks(&cfg);

        for name in [
            "privileges",
            "kvm",
            "qemu",
            "kernel-tun",
            "mkfs.ext4",
            "nft",
            "disk-space",
            "disk-backend",
            "boot-snapshots",
            "leftovers",
        ] {
            find(&checks, name);
        }
        assert!(find(&checks, "boot-snapshots").result.contains("0 saved"));
        assert!(checks
            .iter()
            .all(|c| !c.what.is_empty() && !c.result.is_empty()));
        assert!(find(&checks, "disk-space")
            .result
            .contains(&dir.path().display().to_string()));
    }
}
