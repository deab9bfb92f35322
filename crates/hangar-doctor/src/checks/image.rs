//! The image subsystem: the tools that build images (`mkfs.ext4` with
//! `-d`, `debootstrap`, `busybox`) and whether the default image exists.

use hangar_host::version::Version;

use super::tools::{always, Tool};
use crate::report::{Check, Level};
use crate::HostProbe;

pub const DEBOOTSTRAP: Tool = Tool {
    bin: "debootstrap",
    package: "debootstrap",
    why: "builds the catalog images",
    required: always,
};

pub const BUSYBOX: Tool = Tool {
    bin: "busybox",
    package: "busybox-static",
    why: "builds the guest initramfs",
    required: always,
};

/// The first e2fsprogs whose `mkfs.ext4` has `-d`.
const MKFS_D_SINCE: Version = Version::new(1, 43, 0);

/// Whether `mkfs.ext4` supports `-d DIR` (populating the filesystem from a
/// directory, e2fsprogs ≥ 1.43): from its usage text, else its version.
pub fn mkfs_supports_d(usage: &str, version: Option<Version>) -> Option<bool> {
    if usage.contains("Usage") || usage.contains("usage") {
        return Some(usage.contains("[-d "));
    }
    version.map(|v| v >= MKFS_D_SINCE)
}

pub fn check_mkfs(p: &HostProbe) -> Check {
    const WHAT: &str =
        "mkfs.ext4 (e2fsprogs) is present and supports -d (build a filesystem from a directory)";
    let fix = "apt-get install e2fsprogs (version 1.43 or newer)";
    let Some(path) = &p.mkfs_ext4.path else {
        return Check::new(
            "mkfs.ext4",
            WHAT,
            Level::Fail,
            "mkfs.ext4 not found: images cannot be built",
        )
        .fix(fix);
    };
    let version = p
        .mkfs_ext4
        .version_output
        .as_deref()
        .ok()
        .and_then(Version::find_in);
    let v = version
        .map(|v| v.to_string())
        .unwrap_or_else(|| "unknown".into());
    match mkfs_supports_d(&p.mkfs_usage, version) {
        Some(true) => Check::new(
            "mkfs.ext4",
            WHAT,
            Level::Ok,
            format!("found {}, e2fsprogs {v}, supports -d", path.display()),
        ),
        Some(false) => Check::new(
            "mkfs.ext4",
            WHAT,
            Level::Fail,
            format!(
                "found {} (e2fsprogs {v}), but it does not support -d: images cannot be built",
                path.display()
            ),
        )
        .fix(fix),
        None => Check::new(
            "mkfs.ext4",
            WHAT,
            Level::Warn,
            format!(
                "found {}, but could not tell whether it supports -d",
                path.display()
            ),
        )
        .fix(fix),
    }
}

/// What doctor knows of the image catalog: the built-in catalog merged
/// with `[images] catalogs` (the daemon's view when it answers, else read
/// by the CLI from the config), and the configured catalogs that could
/// not be read (`"URL: why"`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogFacts {
    pub names: Vec<String>,
    pub unreadable: Vec<String>,
}

/// The default image: `local` is whether the daemon has it (`None` when
/// the daemon could not be asked). In the catalog (built-in or configured)
/// is fine: `vm create` pulls or builds it on first use. Not in any
/// catalog that could be read, while one could not: a warning naming it.
pub fn check_default_image(image: &str, local: Option<bool>, catalog: &CatalogFacts) -> Check {
    const WHAT: &str = "the default image ([defaults] image) is present locally or in a catalog (built-in or [images] catalogs)";
    let in_catalog = catalog.names.iter().any(|n| n == image);
    let builtin = hangar_image::catalog().iter().any(|c| c.name == image);
    let fix = format!(
        "register or import it (`hangar image register {image} ...`, `hangar image import FILE --name {image}`), add it to a catalog in [images] catalogs, or set [defaults] image = one of: {}",
        catalog.names.join(", ")
    );
    let unreadable = || {
        format!(
            "; {} could not be read: {}",
            if catalog.unreadable.len() == 1 {
                "a configured catalog"
            } else {
                "configured catalogs"
            },
            catalog.unreadable.join("; ")
        )
    };
    match (local, in_catalog) {
        (Some(true), _) => Check::new("default-image", WHAT, Level::Ok, format!("{image} is present locally")),
        (local, true) => Check::new(
            "default-image",
            WHAT,
            Level::Ok,
            format!(
                "{image} is {}in the {} catalog: `hangar vm create` {} it on first use (or run `hangar image pull {image}` now)",
                if local.is_none() { "not known locally (daemon not reachable) but " } else { "not local yet, but " },
                if builtin { "built-in" } else { "configured ([images] catalogs)" },
                if builtin { "builds" } else { "pulls" },
            ),
        ),
        (_, false) if !catalog.unreadable.is_empty() => Check::new(
            "default-image",
            WHAT,
            Level::Warn,
            format!(
                "{image} is {}not in any catalog that could be read{}",
                if local.is_none() { "not known locally (daemon not reachable) and " } else { "not local and " },
                unreadable()
            ),
        )
        .fix("make the catalogs in [images] catalogs readable (file:// paths, https:// URLs), then run `hangar doctor` again"),
        (Some(false), false) => Check::new(
            "default-image",
            WHAT,
            Level::Fail,
            format!("{image} is neither present locally nor in the catalog: `hangar vm create` without --image fails"),
        )
        .fix(fix),
        (None, false) => Check::new(
            "default-image",
            WHAT,
            Level::Warn,
            format!("{image} is not in the catalog, and whether it is local is unknown (daemon not reachable)"),
        )
        .fix(fix),
    }
}

/// Hangar's guest agent: found, static, or why guests fall back to their
/// image's sshd.
pub fn check_guest_agent(p: &HostProbe) -> Check {
    use crate::facts::AgentFacts;
    const WHAT: &str = "Hangar's guest agent ([guest] agent): PID 1 and SSH server of every guest, so images need no init, shell or sshd";
    let build =
        "scripts/build-agent.sh in the checkout (or copy hangar-agent to /usr/local/lib/hangar/)";
    match &p.guest_agent {
        AgentFacts::Found { path, bytes } => Check::new(
            "guest-agent",
            WHAT,
            Level::Ok,
            format!("{} ({} KiB, static)", path.display(), bytes >> 10),
        ),
        AgentFacts::Off => Check::new(
            "guest-agent",
            WHAT,
            Level::Warn,
            "off: guests start their image's own init and sshd; images without sshd are unreachable",
        )
        .fix("set [guest] agent = \"auto\""),
        AgentFacts::Missing { looked_in, unusable } => {
            let mut detail = format!(
                "not found (looked in {}): guests start their image's own sshd; images without one are unreachable",
                looked_in
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            for u in unusable {
                detail.push_str(&format!("; {u}"));
            }
            Check::new("guest-agent", WHAT, Level::Warn, detail).fix(build)
        }
        AgentFacts::Unusable(e) => {
            Check::new("guest-agent", WHAT, Level::Fail, format!("{e}: the daemon will not start")).fix(build)
        }
    }
}

#[cfg(test)]
mod tests {
    use hangar_config::Config;

    use super::*;
    use crate::checks::fixture::{binary, healthy_host};
    use crate::checks::tools::check_tool;

    #[test]
    fn a_missing_agent_warns_with_where_it_looked_and_how_to_build_it() {
        let mut p = healthy_host();
        assert_eq!(check_guest_agent(&p).level, Level::Ok);
        p.guest_agent = crate::facts::AgentFacts::Missing {
            looked_in: vec!["/usr/local/lib/hangar/hangar-agent".into()],
            unusable: vec!["Guest agent /x is not usable: dynamically linked".into()],
        };
        let c = check_guest_agent(&p);
        assert_eq!(c.level, Level::Warn);
        assert!(
            c.result.contains("/usr/local/lib/hangar/hangar-agent")
                && c.result.contains("dynamically"),
            "{}",
            c.result
        );
        assert!(c.fix.as_deref().unwrap_or("").contains("build-agent.sh"));
        p.guest_agent = crate::facts::AgentFacts::Unusable("bad".into());
        assert_eq!(check_guest_agent(&p).level, Level::Fail);
    }

    #[test]
    fn mkfs_with_d_in_usage_is_ok_with_its_version() {
        let c = check_mkfs(&healthy_host());

        assert_eq!(c.level, Level::Ok);
        assert_eq!(
            c.result,
            "found /usr/sbin/mkfs.ext4, e2fsprogs 1.47.0, supports -d"
        );
    }

    #[test]
    fn mkfs_without_d_in_usage_fails() {
        let mut p = healthy_host();
        p.mkfs_usage = "Usage: mke2fs [-c|-l filename] [-b block-size]\n".into();

        let c = check_mkfs(&p);

        assert_eq!(c.level, Level::Fail);
        assert!(c.result.contains("does not support -d"), "{}", c.result);
        assert!(c.fix.unwrap().contains("e2fsprogs"));
    }

    #[test]
    fn old_mkfs_without_usage_text_fails_by_its_version() {
        let mut p = healthy_host();
        p.mkfs_usage = String::new();
        p.mkfs_ext4 = binary(
            "mkfs.ext4",
            Some("/sbin/mkfs.ext4"),
            "mke2fs 1.42.9 (28-Dec-2013)\n",
        );

        let c = check_mkfs(&p);

        assert_eq!(c.level, Level::Fail);
        assert!(c.result.contains("(e2fsprogs 1.42.9)"), "{}", c.result);
    }

    #[test]
    fn mkfs_that_says_nothing_warns() {
        let mut p = healthy_host();
        p.mkfs_usage = String::new();
        p.mkfs_ext4.version_output = Err("did not finish".into());

        let c = check_mkfs(&p);

        assert_eq!(c.level, Level::Warn);
        assert!(c.result.contains("could not tell"), "{}", c.result);
    }

    #[test]
    fn missing_mkfs_fails() {
        let mut p = healthy_host();
        p.mkfs_ext4.path = None;

        let c = check_mkfs(&p);

        assert_eq!(c.level, Level::Fail);
        assert_eq!(c.result, "mkfs.ext4 not found: images cannot be built");
    }

    #[test]
    fn mkfs_supports_d_falls_back_to_version() {
        assert_eq!(
            mkfs_supports_d("", Some(Version::new(1, 42, 9))),
            Some(false)
        );
        assert_eq!(
            mkfs_supports_d("", Some(Version::new(1, 43, 0))),
            Some(true)
        );
        assert_eq!(mkfs_supports_d("", None), None);
    }

    #[test]
    fn missing_image_build_tools_fail_with_their_package() {
        let mut p = healthy_host();
        p.tools.insert("debootstrap".into(), None);
        p.tools.insert("busybox".into(), None);

        let d = check_tool(&p, &Config::default(), &DEBOOTSTRAP);
        let b = check_tool(&p, &Config::default(), &BUSYBOX);

        assert_eq!(d.level, Level::Fail);
        assert_eq!(b.level, Level::Fail);
        assert_eq!(b.fix.as_deref(), Some("apt-get install busybox-static"));
    }

    fn catalog(names: &[&str], unreadable: &[&str]) -> CatalogFacts {
        CatalogFacts {
            names: names.iter().map(|s| s.to_string()).collect(),
            unreadable: unreadable.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn default_image_in_catalog_but_not_local_is_ok() {
        let c = check_default_image("debian-12", Some(false), &catalog(&["debian-12"], &[]));

        assert_eq!(c.level, Level::Ok);
        assert!(c.result.contains("not local yet"), "{}", c.result);
        assert!(c.result.contains("built-in catalog"), "{}", c.result);
        assert!(c.result.contains("first use"), "{}", c.result);
    }

    #[test]
    fn default_image_in_a_configured_catalog_is_ok_and_pulled_on_first_use() {
        let cat = catalog(&["debian-12", "team-golden"], &[]);
        for local in [Some(false), None] {
            let c = check_default_image("team-golden", local, &cat);
            assert_eq!(c.level, Level::Ok, "{}", c.result);
            assert!(
                c.result.contains("configured ([images] catalogs)"),
                "{}",
                c.result
            );
            assert!(c.result.contains("pulls it on first use"), "{}", c.result);
        }
    }

    #[test]
    fn default_image_in_catalog_with_daemon_down_says_unknown_locally() {
        let c = check_default_image("debian-12", None, &catalog(&["debian-12"], &[]));

        assert_eq!(c.level, Level::Ok);
        assert!(c.result.contains("daemon not reachable"), "{}", c.result);
    }

    #[test]
    fn default_image_in_neither_fails_and_unknown_warns() {
        let fail =
            check_default_image("mine", Some(false), &catalog(&["debian-12", "alpine"], &[]));
        assert_eq!(fail.level, Level::Fail);
        assert!(
            fail.fix.unwrap().ends_with("one of: debian-12, alpine"),
            "fix names the catalog"
        );
        assert_eq!(
            check_default_image("mine", None, &catalog(&["debian-12"], &[])).level,
            Level::Warn
        );
        assert_eq!(
            check_default_image("mine", Some(true), &catalog(&["debian-12"], &[])).level,
            Level::Ok
        );
    }

    #[test]
    fn an_unreadable_catalog_turns_a_missing_image_into_a_warning_naming_it() {
        let cat = catalog(
            &["debian-12"],
            &["file:///etc/hangar/team.json: Cannot read"],
        );

        let c = check_default_image("team-golden", Some(false), &cat);

        assert_eq!(c.level, Level::Warn);
        assert!(
            c.result.contains("file:///etc/hangar/team.json"),
            "{}",
            c.result
        );
        assert!(c.fix.unwrap().contains("[images] catalogs"));
        // Local or found elsewhere: still fine.
        assert_eq!(
            check_default_image("team-golden", Some(true), &cat).level,
            Level::Ok
        );
        assert_eq!(
            check_default_image("debian-12", None, &cat).level,
            Level::Ok
        );
    }
}
