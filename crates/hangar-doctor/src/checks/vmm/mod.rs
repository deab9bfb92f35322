//! The VMM subsystem: KVM, QEMU and boot snapshots here; the Firecracker
//! binary, its jailer and the cgroups the jailer needs in [`firecracker`];
//! whether VMMs run confined in [`confine`].

pub mod confine;
pub mod firecracker;

pub use confine::{check_confinement, check_firecracker_static};
pub use firecracker::{check_firecracker, check_jailer, check_jailer_cgroups};

use hangar_config::{AccelChoice, Config, DriverChoice};
use hangar_host::version::Version;
use hangar_vmm::Accel;

use crate::report::{Check, Level};
use crate::HostProbe;

/// The accelerator KVM would give, from the probe (same rules as the
/// daemon's choice: `hangar_vmm::accel::decide`).
fn kvm_decision(p: &HostProbe) -> hangar_vmm::AccelDecision {
    let modules: Vec<String> = p.kernel.loaded_modules.iter().cloned().collect();
    hangar_vmm::accel::decide(p.kvm_open.is_ok(), &p.cpu_flags, &modules)
}

/// Whether the daemon would pick Firecracker (same rule as its choice).
pub(super) fn firecracker_used(p: &HostProbe, config: &Config) -> bool {
    match config.vmm.driver {
        DriverChoice::Firecracker => true,
        DriverChoice::Qemu => false,
        DriverChoice::Auto => p.firecracker.path.is_some() && kvm_boots_guests(p),
    }
}

pub(super) fn kvm_boots_guests(p: &HostProbe) -> bool {
    kvm_decision(p).accel == Accel::Kvm
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

pub fn check_qemu(p: &HostProbe, config: &Config) -> Check {
    const WHAT: &str = "the QEMU binary ([vmm] qemu) is present (the driver that works everywhere)";
    let q = &p.qemu;
    let Some(path) = &q.path else {
        let fc_used = firecracker_used(p, config);
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
        .and_then(Version::find_in)
        .map(|v| v.to_string())
        .unwrap_or_else(|| "unknown".into());
    Check::new(
        "qemu",
        WHAT,
        Level::Ok,
        format!("found {}, version {version}", path.display()),
    )
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

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use crate::checks::fixture::{healthy_host, no_kvm_host, pvm_host};

    #[test]
    fn kvm_with_hardware_virtualisation_is_ok() {
        let c = check_kvm(&healthy_host(), &Config::default());

        assert_eq!(c.level, Level::Ok);
        assert!(c.result.contains("guests run under KVM"), "{}", c.result);
    }

    #[test]
    fn kvm_missing_device_warns_with_module_and_tcg_fix() {
        let mut cfg = Config::default();
        cfg.vmm.kvm_device = "/nonexistent/kvm".into();

        let c = check_kvm(&no_kvm_host(), &cfg);

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
    fn kvm_device_that_does_not_open_names_the_error_and_group() {
        let mut p = healthy_host();
        p.kvm_open = Err("Permission denied (os error 13)".into());

        let c = check_kvm(&p, &Config::default());

        assert_eq!(c.level, Level::Warn);
        assert!(c.result.contains("Permission denied"), "{}", c.result);
        assert!(c.fix.unwrap().contains("(group kvm)"));
    }

    #[test]
    fn kvm_pvm_host_warns_and_explains_tcg_fallback() {
        let c = check_kvm(&pvm_host(), &Config::default());

        assert_eq!(c.level, Level::Warn);
        assert!(
            c.result.contains("PVM") && c.result.contains("TCG"),
            "{}",
            c.result
        );
        assert!(c.result.contains("Probing EDD"), "{}", c.result);
        assert!(c.fix.unwrap().starts_with("nothing to do"));
    }

    #[test]
    fn kvm_on_a_pvm_host_with_driver_firecracker_fails() {
        let mut cfg = Config::default();
        cfg.vmm.driver = DriverChoice::Firecracker;

        let c = check_kvm(&pvm_host(), &cfg);

        assert_eq!(c.level, Level::Fail);
        assert!(
            c.result
                .starts_with("[vmm] driver = \"firecracker\" needs KVM, but"),
            "{}",
            c.result
        );
    }

    #[test]
    fn kvm_unusable_with_accel_kvm_fails() {
        let mut p = healthy_host();
        p.cpu_flags = vec![];
        let mut cfg = Config::default();
        cfg.vmm.accel = AccelChoice::Kvm;

        let c = check_kvm(&p, &cfg);

        assert_eq!(c.level, Level::Fail);
        assert!(c.result.starts_with("[vmm] accel = \"kvm\" needs KVM"));
        assert!(c.fix.unwrap().contains("accel = \"tcg\""));
    }

    #[test]
    fn qemu_found_reports_version() {
        let c = check_qemu(&healthy_host(), &Config::default());

        assert_eq!(c.level, Level::Ok);
        assert_eq!(
            c.result,
            "found /usr/bin/qemu-system-x86_64, version 7.2.19"
        );
    }

    #[test]
    fn qemu_without_a_version_says_unknown() {
        let mut p = healthy_host();
        p.qemu.version_output = Err("did not finish within 5s".into());

        let c = check_qemu(&p, &Config::default());

        assert_eq!(c.level, Level::Ok);
        assert!(c.result.ends_with("version unknown"), "{}", c.result);
    }

    #[test]
    fn qemu_missing_with_qemu_driver_fails_with_apt_fix() {
        let mut p = healthy_host();
        p.qemu.path = None;
        p.qemu.configured = "/nonexistent".into();
        let mut cfg = Config::default();
        cfg.vmm.driver = DriverChoice::Qemu;

        let c = check_qemu(&p, &cfg);

        assert_eq!(c.level, Level::Fail);
        assert_eq!(c.result, "/nonexistent not found: VMs cannot start");
        let fix = c.fix.unwrap();
        assert!(
            fix.starts_with("apt-get install qemu-system-x86 and set [vmm] qemu"),
            "{fix}"
        );
    }

    #[test]
    fn qemu_missing_where_firecracker_is_used_warns() {
        let mut p = healthy_host();
        p.qemu.path = None;

        let auto = check_qemu(&p, &Config::default());
        let mut on_pvm = pvm_host();
        on_pvm.qemu.path = None;
        let auto_without_kvm = check_qemu(&on_pvm, &Config::default());

        assert_eq!(auto.level, Level::Warn);
        assert!(
            auto.result.contains("Firecracker is used instead"),
            "{}",
            auto.result
        );
        assert_eq!(auto.fix.as_deref(), Some("apt-get install qemu-system-x86"));
        assert_eq!(auto_without_kvm.level, Level::Fail);
    }

    #[test]
    fn boot_snapshots_off_is_a_warning_with_the_fix_and_on_reports_what_is_saved() {
        let mut cfg = Config::default();
        let on = check_boot_snapshots(&healthy_host(), &cfg);
        assert_eq!(on.level, Level::Ok);
        assert!(
            on.result
                .contains("1 saved (70 MiB) in /var/lib/hangar/snapshots"),
            "{}",
            on.result
        );

        cfg.vmm.boot_snapshots = false;
        let off = check_boot_snapshots(&healthy_host(), &cfg);
        assert_eq!(off.level, Level::Warn);
        assert_eq!(off.fix.as_deref(), Some("set [vmm] boot_snapshots = true"));

        cfg.vmm.driver = DriverChoice::Firecracker;
        let fc = check_boot_snapshots(&healthy_host(), &cfg);
        assert_eq!(fc.level, Level::Ok);
        assert!(fc.result.contains("not used"), "{}", fc.result);
    }
}
