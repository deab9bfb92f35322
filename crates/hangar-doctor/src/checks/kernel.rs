//! Kernel features: how doctor decides whether one is usable, loadable or
//! missing. The features themselves are declared by the subsystem that
//! needs them ([`net::FEATURES`](super::net::FEATURES),
//! [`disk::FEATURES`](super::disk::FEATURES)).

use std::path::Path;

use crate::report::{Check, Level};
use crate::KernelFacts;

/// A kernel feature and where its presence shows.
pub struct Feature {
    pub name: &'static str,
    pub what: &'static str,
    pub config: &'static str,
    /// Module name as in `/sys/module` and `modules.dep` (`_` for `-`).
    pub module: &'static str,
    /// Device node the feature needs, if any.
    pub device: Option<&'static str>,
    /// Missing means fail (hangar cannot run VMs) rather than warn.
    pub required: bool,
    /// What missing it costs, for the result line.
    pub impact: &'static str,
}

/// Where a kernel feature stands.
#[derive(Debug, PartialEq, Eq)]
enum FeatureState {
    /// Usable now; the string is the evidence.
    Present(String),
    /// Built in or loaded, but its device node is missing.
    NoDevice,
    /// Available as a module that is not loaded.
    Loadable,
    Missing,
}

fn feature_state(k: &KernelFacts, f: &Feature) -> FeatureState {
    let dev_ok = f
        .device
        .is_none_or(|d| k.present_paths.contains(Path::new(d)));
    let cfg = k.config.get(f.config).map(String::as_str);
    let in_kernel = k.loaded_modules.contains(f.module)
        || k.builtin_modules.contains(f.module)
        || cfg == Some("y");
    if dev_ok && f.device.is_some() {
        return FeatureState::Present(format!("{} present", f.device.unwrap_or_default()));
    }
    if in_kernel {
        return if dev_ok {
            FeatureState::Present(if k.loaded_modules.contains(f.module) {
                format!("module {} loaded", f.module)
            } else {
                format!("built into the kernel ({}=y)", f.config)
            })
        } else {
            FeatureState::NoDevice
        };
    }
    if k.available_modules.contains(f.module) || cfg == Some("m") {
        return FeatureState::Loadable;
    }
    FeatureState::Missing
}

/// What the kernel `k` says about feature `f`.
pub fn check_feature(k: &KernelFacts, f: &Feature) -> Check {
    let bad = if f.required { Level::Fail } else { Level::Warn };
    match feature_state(k, f) {
        FeatureState::Present(why) => Check::new(f.name, f.what, Level::Ok, why),
        FeatureState::NoDevice => Check::new(
            f.name,
            f.what,
            bad,
            format!(
                "in the kernel, but {} is missing: {}",
                f.device.unwrap_or_default(),
                f.impact
            ),
        )
        .fix(format!(
            "`modprobe {}`; if {} still does not exist, check that devtmpfs/udev is mounted",
            f.module,
            f.device.unwrap_or_default()
        )),
        FeatureState::Loadable => Check::new(
            f.name,
            f.what,
            bad,
            format!(
                "module {} is available but not loaded: {}",
                f.module, f.impact
            ),
        )
        .fix(format!(
            "modprobe {0} (and add {0} to /etc/modules-load.d/hangar.conf)",
            f.module
        )),
        FeatureState::Missing => Check::new(
            f.name,
            f.what,
            bad,
            format!(
                "not in this kernel ({} unset{}): {}",
                f.config,
                if k.config.is_empty() {
                    "?, no kernel config readable"
                } else {
                    ""
                },
                f.impact
            ),
        )
        .fix(if f.required {
            format!("use a kernel with {}=y or =m", f.config)
        } else {
            format!("optional; for it use a kernel with {}=y or =m", f.config)
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::parse::parse_kernel_config;

    const NEEDED: Feature = Feature {
        name: "kernel-thing",
        what: "thing support (/dev/thing)",
        config: "CONFIG_THING",
        module: "thing",
        device: Some("/dev/thing"),
        required: true,
        impact: "no thing",
    };
    const OPTIONAL_NO_DEVICE: Feature = Feature {
        name: "kernel-extra",
        what: "extra support",
        config: "CONFIG_EXTRA",
        module: "extra",
        device: None,
        required: false,
        impact: "no extra",
    };

    fn kernel(config: &str) -> KernelFacts {
        KernelFacts {
            config: parse_kernel_config(config),
            ..KernelFacts::default()
        }
    }

    #[test]
    fn device_node_present_is_ok_whatever_the_config() {
        let mut k = KernelFacts::default();
        k.present_paths.insert(PathBuf::from("/dev/thing"));

        let c = check_feature(&k, &NEEDED);

        assert_eq!(c.level, Level::Ok);
        assert_eq!(c.result, "/dev/thing present");
    }

    #[test]
    fn builtin_without_device_node_fails_and_says_so() {
        let c = check_feature(&kernel("CONFIG_THING=y\n"), &NEEDED);

        assert_eq!(c.level, Level::Fail);
        assert_eq!(
            c.result,
            "in the kernel, but /dev/thing is missing: no thing"
        );
        assert!(c.fix.unwrap().contains("devtmpfs/udev"));
    }

    #[test]
    fn feature_without_device_is_ok_when_loaded_or_built_in() {
        let mut loaded = KernelFacts::default();
        loaded.loaded_modules.insert("extra".into());

        let by_module = check_feature(&loaded, &OPTIONAL_NO_DEVICE);
        let built_in = check_feature(&kernel("CONFIG_EXTRA=y\n"), &OPTIONAL_NO_DEVICE);

        assert_eq!(by_module.level, Level::Ok);
        assert_eq!(by_module.result, "module extra loaded");
        assert_eq!(built_in.level, Level::Ok);
        assert_eq!(built_in.result, "built into the kernel (CONFIG_EXTRA=y)");
    }

    #[test]
    fn loadable_module_gives_modprobe_fix_with_the_level_of_the_need() {
        let mut k = KernelFacts::default();
        k.available_modules.insert("extra".into());

        let optional = check_feature(&k, &OPTIONAL_NO_DEVICE);
        let needed = check_feature(&kernel("CONFIG_THING=m\n"), &NEEDED);

        assert_eq!(optional.level, Level::Warn);
        assert!(
            optional
                .fix
                .as_deref()
                .unwrap()
                .starts_with("modprobe extra"),
            "{optional:?}"
        );
        assert_eq!(needed.level, Level::Fail);
        assert!(
            needed.result.contains("available but not loaded"),
            "{needed:?}"
        );
    }

    #[test]
    fn missing_feature_says_whether_a_kernel_config_was_read() {
        let unread = check_feature(&KernelFacts::default(), &NEEDED);
        let read = check_feature(&kernel("CONFIG_OTHER=y\n"), &OPTIONAL_NO_DEVICE);

        assert_eq!(unread.level, Level::Fail);
        assert!(
            unread
                .result
                .contains("CONFIG_THING unset?, no kernel config readable"),
            "{}",
            unread.result
        );
        assert_eq!(
            unread.fix.as_deref(),
            Some("use a kernel with CONFIG_THING=y or =m")
        );
        assert_eq!(read.level, Level::Warn);
        assert_eq!(
            read.result,
            "not in this kernel (CONFIG_EXTRA unset): no extra"
        );
        assert!(read.fix.unwrap().starts_with("optional;"));
    }
}
