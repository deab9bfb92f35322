//! The disk subsystem: loop and device-mapper support for the dm backend,
//! `resize2fs`, free space in the state dir, which backend the config
//! resolves to, and devices a crash left behind.

use hangar_config::Config;

use super::kernel::Feature;
use super::tools::{always, Tool};
use crate::report::{Check, Level};
use crate::HostProbe;

/// Below this much free space in the state dir doctor fails: the default
/// image's rootfs (~1 GiB) plus one VM disk (grown to `[defaults]
/// disk_size`, sparse) and the build scratch space do not fit.
pub const DISK_FAIL_BYTES: u64 = 2 << 30;
/// Below this much free space doctor warns: a few VMs that write to their
/// disks fill it quickly.
pub const DISK_WARN_BYTES: u64 = 10 << 30;

/// What the dm disk backend needs from the kernel; without them the
/// reflink or copy backend is used, so missing them only warns.
pub const FEATURES: &[Feature] = &[
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
];

pub const RESIZE2FS: Tool = Tool {
    bin: "resize2fs",
    package: "e2fsprogs",
    why: "grows VM disks",
    required: always,
};

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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::checks::fixture::healthy_host;
    use crate::checks::kernel::check_feature;
    use crate::DiskFacts;

    #[test]
    fn missing_loop_or_dm_only_warns_that_dm_is_unavailable() {
        let mut k = healthy_host().kernel;
        k.present_paths.clear();
        k.config.clear();

        for f in FEATURES {
            let c = check_feature(&k, f);
            assert_eq!(c.level, Level::Warn, "{c:?}");
            assert!(
                c.result.ends_with("(reflink/copy are used)"),
                "{}",
                c.result
            );
            assert!(c.fix.unwrap().starts_with("optional;"));
        }
    }

    #[test]
    fn loadable_dm_module_gives_modprobe_fix() {
        let mut k = healthy_host().kernel;
        k.present_paths.remove(Path::new("/dev/mapper/control"));
        k.config.remove("CONFIG_BLK_DEV_DM");
        k.available_modules.insert("dm_mod".into());

        let c = check_feature(&k, &FEATURES[1]);

        assert_eq!(c.name, "kernel-device-mapper");
        assert_eq!(c.level, Level::Warn);
        assert!(
            c.fix.as_deref().unwrap().starts_with("modprobe dm_mod"),
            "{c:?}"
        );
    }

    #[test]
    fn disk_space_levels_follow_thresholds() {
        let mut p = healthy_host();
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
    fn disk_space_names_the_measured_dir_and_state_dir() {
        let mut p = healthy_host();
        p.disk = Ok(DiskFacts {
            measured: "/var".into(),
            free_bytes: 1 << 30,
        });

        let c = check_disk_space(&p, &Config::default());

        assert_eq!(c.result, "1.0 GiB free in /var (state_dir /var/lib/hangar)");
        assert!(c
            .fix
            .unwrap()
            .contains("need at least 2.0 GiB, 10.0 GiB recommended"));
    }

    #[test]
    fn disk_space_that_cannot_be_measured_warns() {
        let mut p = healthy_host();
        p.disk = Err("no ancestor of x exists".into());

        let c = check_disk_space(&p, &Config::default());

        assert_eq!(c.level, Level::Warn);
        assert_eq!(c.result, "cannot measure: no ancestor of x exists");
    }

    #[test]
    fn storage_reports_the_backend_and_why() {
        let c = check_storage(&healthy_host(), &Config::default());

        assert_eq!(c.level, Level::Ok);
        assert_eq!(c.result, "reflink — reflink: FICLONE works");
        assert!(c.what.contains("backend = \"auto\""), "{}", c.what);
    }

    #[test]
    fn storage_error_fails_with_auto_fix() {
        let mut p = healthy_host();
        p.storage = Err("FICLONE does not work".into());

        let c = check_storage(&p, &Config::default());

        assert_eq!(c.level, Level::Fail);
        assert!(c.fix.unwrap().contains("backend = \"auto\""));
    }

    #[test]
    fn leftovers_warn_listing_each() {
        let mut p = healthy_host();
        assert_eq!(check_leftovers(&p).level, Level::Ok);
        p.leftovers =
            vec!["dm device hangar-a-disk (remove with `dmsetup remove hangar-a-disk`)".into()];

        let c = check_leftovers(&p);

        assert_eq!(c.level, Level::Warn);
        assert!(c.result.starts_with("found 1: dm device hangar-a-disk"));
        assert!(c.result.contains("dmsetup remove hangar-a-disk"));
    }
}
