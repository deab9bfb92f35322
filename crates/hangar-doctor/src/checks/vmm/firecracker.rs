//! Firecracker: its binary and version, the jailer from the same release,
//! and the cgroup controllers the jailer limits VMs with.

use hangar_config::{Config, DriverChoice};
use hangar_host::version::Version;

use super::kvm_boots_guests;
use crate::report::{Check, Level};
use crate::HostProbe;

/// The version a Firecracker-release binary printed, if it printed one.
fn release_version(output: &Result<String, String>) -> Option<Version> {
    output
        .as_deref()
        .ok()
        .and_then(hangar_vmm::parse_firecracker_version)
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
    match release_version(&fc.version_output) {
        None => Check::new(
            "firecracker",
            WHAT,
            Level::Warn,
            format!(
                "found {}, but `firecracker --version` gave no version ({})",
                path.display(),
                first_line(fc.version_output.as_deref().unwrap_or_else(|e| e))
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
                format!("found {}, version {v}", path.display()),
            ),
        },
    }
}

/// The first line of a tool's output, shortened, for a result line.
fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        "no output".into()
    } else {
        line.chars().take(120).collect()
    }
}

/// Jailed VMs get `cpu.max`/`memory.max` (v2) or CFS quota and a memory
/// limit (v1): both controllers must be usable, or the jailer fails at
/// every start.
pub fn check_jailer_cgroups(p: &HostProbe, config: &Config) -> Check {
    const WHAT: &str =
        "the cpu and memory cgroup controllers the jailer limits VMs with (when [vmm] jailer = true)";
    let c = &p.cgroups;
    let unused = match config.vmm.jailer {
        Some(false) => Some("not needed ([vmm] jailer = false)"),
        None if p.jailer.path.is_none() => Some("not needed (the jailer is not found)"),
        _ => None,
    };
    if let Some(why) = unused {
        return Check::new("jailer-cgroups", WHAT, Level::Ok, why);
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
        if config.vmm.jailer == Some(false) {
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
        if config.vmm.jailer.is_none() {
            // Unset: on where its needs are met; without it Firecracker
            // runs unconfined.
            return if super::firecracker_used(p, config) {
                Check::new(
                    "jailer",
                    WHAT,
                    Level::Warn,
                    format!(
                        "{} not found, so Firecracker runs without its jailer: as root, unconfined",
                        j.configured.display()
                    ),
                )
                .fix(install)
            } else {
                Check::new(
                    "jailer",
                    WHAT,
                    Level::Ok,
                    format!(
                        "{} not found; not needed (Firecracker is not used)",
                        j.configured.display()
                    ),
                )
            };
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
    let jv = release_version(&j.version_output);
    let fv = release_version(&p.firecracker.version_output);
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
                "found {} version {jv}, but Firecracker is {fv}: they must come from the same release",
                path.display(),
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
                format!("found {}, version {jv}", path.display()),
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::fixture::{healthy_host, pvm_host};

    fn firecracker_driver() -> Config {
        let mut cfg = Config::default();
        cfg.vmm.driver = DriverChoice::Firecracker;
        cfg
    }

    fn jailed(driver: DriverChoice) -> Config {
        let mut cfg = Config::default();
        cfg.vmm.jailer = Some(true);
        cfg.vmm.driver = driver;
        cfg
    }

    #[test]
    fn firecracker_1_8_or_newer_is_ok_with_its_version() {
        let c = check_firecracker(&healthy_host(), &Config::default());

        assert_eq!(c.level, Level::Ok);
        assert_eq!(c.result, "found /usr/bin/firecracker, version 1.10.1");
    }

    #[test]
    fn firecracker_below_1_8_warns() {
        let mut p = healthy_host();
        p.firecracker.version_output = Ok("Firecracker v1.4.0\n".into());

        let c = check_firecracker(&p, &Config::default());

        assert_eq!(c.level, Level::Warn);
        assert!(
            c.result.contains("Firecracker 1.4.0") && c.result.contains("Firecracker < 1.8"),
            "{}",
            c.result
        );
    }

    #[test]
    fn firecracker_without_a_version_quotes_its_first_line() {
        let mut p = healthy_host();
        p.firecracker.version_output = Ok("\nsegfault\n".into());
        let mut silent = healthy_host();
        silent.firecracker.version_output = Ok(String::new());

        let c = check_firecracker(&p, &Config::default());
        let s = check_firecracker(&silent, &Config::default());

        assert_eq!(c.level, Level::Warn);
        assert!(
            c.result.ends_with("gave no version (no output)"),
            "{}",
            c.result
        );
        assert!(
            s.result.ends_with("gave no version (no output)"),
            "{}",
            s.result
        );
    }

    #[test]
    fn firecracker_missing_with_auto_and_no_kvm_is_ok() {
        let mut p = pvm_host();
        p.firecracker.path = None;

        let c = check_firecracker(&p, &Config::default());

        assert_eq!(c.level, Level::Ok, "{c:?}");
        assert!(
            c.result.contains("KVM cannot boot guests here"),
            "{}",
            c.result
        );
    }

    #[test]
    fn firecracker_missing_with_auto_and_kvm_warns_that_it_boots_faster() {
        let mut p = healthy_host();
        p.firecracker.path = None;

        let c = check_firecracker(&p, &Config::default());

        assert_eq!(c.level, Level::Warn);
        assert!(c.result.contains("boots faster"), "{}", c.result);
    }

    #[test]
    fn firecracker_missing_with_driver_qemu_is_ok_and_with_driver_firecracker_fails() {
        let mut p = healthy_host();
        p.firecracker.path = None;
        let mut qemu = Config::default();
        qemu.vmm.driver = DriverChoice::Qemu;

        let fails = check_firecracker(&p, &firecracker_driver());

        assert_eq!(check_firecracker(&p, &qemu).level, Level::Ok);
        assert_eq!(fails.level, Level::Fail);
        assert!(fails
            .fix
            .unwrap()
            .ends_with("or set [vmm] driver = \"qemu\""));
    }

    #[test]
    fn jailer_version_mismatch_warns() {
        let mut p = healthy_host();
        p.jailer.version_output = Ok("Jailer v1.9.0".into());

        let c = check_jailer(&p, &jailed(DriverChoice::Auto));

        assert_eq!(c.level, Level::Warn);
        assert!(
            c.result
                .contains("version 1.9.0, but Firecracker is 1.10.1")
                && c.result.contains("same release"),
            "{}",
            c.result
        );
    }

    #[test]
    fn jailer_matching_firecracker_is_ok() {
        let c = check_jailer(&healthy_host(), &jailed(DriverChoice::Firecracker));

        assert_eq!(c.level, Level::Ok);
        assert_eq!(c.result, "found /usr/bin/jailer, version 1.10.1");
    }

    #[test]
    fn jailer_missing_but_unused_is_ok() {
        let mut p = healthy_host();
        p.jailer.path = None;
        let mut qemu = Config::default();
        qemu.vmm.driver = DriverChoice::Qemu;
        let mut off = Config::default();
        off.vmm.jailer = Some(false);

        assert_eq!(check_jailer(&p, &qemu).level, Level::Ok);
        assert_eq!(check_jailer(&p, &off).level, Level::Ok);
    }

    #[test]
    fn jailer_missing_by_default_where_firecracker_runs_warns_that_it_runs_unconfined() {
        let mut p = healthy_host();
        p.jailer.path = None;

        let c = check_jailer(&p, &Config::default());

        assert_eq!(c.level, Level::Warn);
        assert!(c.result.contains("unconfined"), "{}", c.result);
    }

    #[test]
    fn jailer_missing_but_wanted_fails_only_with_driver_firecracker() {
        let mut p = healthy_host();
        p.jailer.path = None;

        assert_eq!(
            check_jailer(&p, &jailed(DriverChoice::Auto)).level,
            Level::Warn
        );
        let c = check_jailer(&p, &jailed(DriverChoice::Firecracker));
        assert_eq!(c.level, Level::Fail);
        assert!(c.fix.unwrap().ends_with("or set [vmm] jailer = false"));
    }

    #[test]
    fn jailer_cgroups_matter_only_with_the_jailer_and_name_the_missing_controller() {
        let mut p = healthy_host();
        p.cgroups.controllers.remove("memory");
        let mut off = Config::default();
        off.vmm.jailer = Some(false);
        assert_eq!(check_jailer_cgroups(&p, &off).level, Level::Ok);
        // Unset means on where the jailer is found: the controllers matter.
        assert_eq!(
            check_jailer_cgroups(&p, &Config::default()).level,
            Level::Warn
        );

        let cfg = jailed(DriverChoice::Firecracker);
        let c = check_jailer_cgroups(&p, &cfg);

        assert_eq!(c.level, Level::Fail);
        assert!(
            c.result.contains("memory") && !c.result.contains("cpu and"),
            "{}",
            c.result
        );
        assert!(c.fix.unwrap().contains("subtree_control"));
        assert_eq!(check_jailer_cgroups(&healthy_host(), &cfg).level, Level::Ok);
    }

    #[test]
    fn jailer_cgroups_v1_without_controllers_warns_with_the_v1_fix() {
        let mut p = healthy_host();
        p.cgroups.version = 1;
        p.cgroups.controllers.clear();

        let c = check_jailer_cgroups(&p, &jailed(DriverChoice::Qemu));

        assert_eq!(c.level, Level::Warn);
        assert!(
            c.result.contains("cgroup v1: cpu and memory not available"),
            "{}",
            c.result
        );
        assert!(c.fix.unwrap().starts_with("mount the cgroup v1"));
    }
}
