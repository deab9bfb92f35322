//! Whether VMMs run confined: QEMU under `-sandbox` and `-runas` each VM's
//! own uid, Firecracker under its jailer (which needs a static binary).

use hangar_config::Config;

use super::firecracker_used;
use crate::report::{Check, Level};
use crate::HostProbe;

const STATIC_RELEASE: &str =
    "install the official static Firecracker release (https://github.com/firecracker-microvm/firecracker/releases)";

/// A dynamically linked Firecracker cannot start in the jailer's chroot
/// (no loader there): every start fails with "Failed to exec into
/// Firecracker: No such file or directory".
pub fn check_firecracker_static(p: &HostProbe, config: &Config) -> Check {
    const WHAT: &str =
        "Firecracker is statically linked, as the jailer's chroot (which has no dynamic loader) needs";
    let not_needed = |why: &str| Check::new("firecracker-static", WHAT, Level::Ok, why.to_string());
    if !firecracker_used(p, config) {
        return not_needed("not needed (Firecracker is not used)");
    }
    if config.vmm.jailer == Some(false) {
        return not_needed("not needed ([vmm] jailer = false)");
    }
    let Some(path) = &p.firecracker.path else {
        return not_needed("Firecracker not found");
    };
    let Some(interp) = &p.firecracker_interpreter else {
        return Check::new(
            "firecracker-static",
            WHAT,
            Level::Ok,
            format!("{} is statically linked", path.display()),
        );
    };
    let (level, consequence) = match config.vmm.jailer {
        Some(true) => (
            Level::Fail,
            "the daemon refuses to start with [vmm] jailer = true",
        ),
        _ => (
            Level::Warn,
            "so Firecracker runs without its jailer: as root, unconfined",
        ),
    };
    Check::new(
        "firecracker-static",
        WHAT,
        level,
        format!(
            "{} is dynamically linked (needs {interp}) and cannot run in the jailer's chroot; {consequence}",
            path.display()
        ),
    )
    .fix(format!(
        "{STATIC_RELEASE}, or set [vmm] jailer = false (debugging only)"
    ))
}

/// The debugging switches that turn confinement off.
pub fn check_confinement(p: &HostProbe, config: &Config) -> Check {
    const WHAT: &str =
        "VMMs run confined ([vmm] confine, [vmm] jailer): seccomp, each VM as its own uid";
    let v = &config.vmm;
    if !v.confine {
        return Check::new(
            "vmm-confine",
            WHAT,
            Level::Warn,
            "[vmm] confine = false: QEMU runs as root without its seccomp sandbox, and jailed \
             Firecrackers share one uid (debugging only)",
        )
        .fix("remove [vmm] confine = false");
    }
    if v.jailer == Some(false) && firecracker_used(p, config) {
        return Check::new(
            "vmm-confine",
            WHAT,
            Level::Warn,
            "[vmm] jailer = false: Firecracker runs as root without its jailer (debugging only)",
        )
        .fix("remove [vmm] jailer = false");
    }
    Check::new(
        "vmm-confine",
        WHAT,
        Level::Ok,
        format!(
            "on: each VM's VMM runs as uid/gid {} + its address's offset (up to {})",
            v.uid_base,
            u64::from(v.uid_base) + u64::from(v.uid_count) - 1
        ),
    )
}

#[cfg(test)]
mod tests {
    use hangar_config::DriverChoice;

    use super::*;
    use crate::checks::fixture::healthy_host;

    fn dynamic_firecracker() -> HostProbe {
        let mut p = healthy_host();
        p.firecracker_interpreter = Some("/lib64/ld-linux-x86-64.so.2".into());
        p
    }

    #[test]
    fn a_static_firecracker_is_ok() {
        let c = check_firecracker_static(&healthy_host(), &Config::default());
        assert_eq!(c.level, Level::Ok);
        assert!(c.result.contains("statically linked"), "{}", c.result);
    }

    #[test]
    fn a_dynamic_firecracker_warns_by_default_and_fails_with_jailer_true_naming_the_fix() {
        let p = dynamic_firecracker();

        let auto = check_firecracker_static(&p, &Config::default());
        assert_eq!(auto.level, Level::Warn);
        assert!(auto.result.contains("unconfined"), "{}", auto.result);
        assert!(auto.fix.unwrap().contains("static Firecracker release"));

        let mut cfg = Config::default();
        cfg.vmm.jailer = Some(true);
        let on = check_firecracker_static(&p, &cfg);
        assert_eq!(on.level, Level::Fail);
        assert!(on.result.contains("ld-linux"), "{}", on.result);
    }

    #[test]
    fn a_dynamic_firecracker_is_fine_when_it_is_not_jailed_or_not_used() {
        let p = dynamic_firecracker();
        let mut off = Config::default();
        off.vmm.jailer = Some(false);
        let mut qemu = Config::default();
        qemu.vmm.driver = DriverChoice::Qemu;
        assert_eq!(check_firecracker_static(&p, &off).level, Level::Ok);
        assert_eq!(check_firecracker_static(&p, &qemu).level, Level::Ok);
    }

    #[test]
    fn confinement_switched_off_warns() {
        let p = healthy_host();
        assert_eq!(check_confinement(&p, &Config::default()).level, Level::Ok);

        let mut cfg = Config::default();
        cfg.vmm.confine = false;
        let c = check_confinement(&p, &cfg);
        assert_eq!(c.level, Level::Warn);
        assert!(c.result.contains("seccomp"), "{}", c.result);

        let mut cfg = Config::default();
        cfg.vmm.jailer = Some(false);
        assert_eq!(check_confinement(&p, &cfg).level, Level::Warn);
        cfg.vmm.driver = DriverChoice::Qemu;
        assert_eq!(check_confinement(&p, &cfg).level, Level::Ok);
    }
}
