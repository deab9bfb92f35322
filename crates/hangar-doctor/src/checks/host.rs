//! Host basics: whether the daemon would have the privileges it needs.

use crate::report::{Check, Level};
use crate::HostProbe;

const CAP_DAC_OVERRIDE: u32 = 1;
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
/// Capabilities the daemon needs: TAPs, bridges and nft (NET_ADMIN); netns,
/// mounts, loop and dm devices (SYS_ADMIN); root-owned state (DAC_OVERRIDE).
const NEEDED_CAPS: &[(u32, &str)] = &[
    (CAP_DAC_OVERRIDE, "CAP_DAC_OVERRIDE"),
    (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
    (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
];

pub fn check_privileges(p: &HostProbe) -> Check {
    const WHAT: &str =
        "the daemon runs as root or with CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_DAC_OVERRIDE";
    let missing: Vec<&str> = NEEDED_CAPS
        .iter()
        .filter(|(bit, _)| p.effective_caps.is_none_or(|c| c & (1u64 << bit) == 0))
        .map(|(_, n)| *n)
        .collect();
    match (p.euid_root, missing.is_empty()) {
        (true, true) => Check::new("privileges", WHAT, Level::Ok, "running as root"),
        (false, true) => Check::new(
            "privileges",
            WHAT,
            Level::Ok,
            "not root, but the needed capabilities are effective",
        ),
        (root, false) => Check::new(
            "privileges",
            WHAT,
            Level::Warn,
            format!(
                "{}missing {} (fine for the CLI; the daemon needs them)",
                if root { "root, but " } else { "not root; " },
                missing.join(", ")
            ),
        )
        .fix("run the daemon as root: `sudo hangar daemon`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::fixture::healthy_host;

    #[test]
    fn root_with_every_capability_is_ok() {
        let c = check_privileges(&healthy_host());

        assert_eq!(c.level, Level::Ok);
        assert_eq!(c.result, "running as root");
    }

    #[test]
    fn not_root_but_with_the_capabilities_is_ok() {
        let mut p = healthy_host();
        p.euid_root = false;
        p.effective_caps = Some(1 << CAP_DAC_OVERRIDE | 1 << CAP_NET_ADMIN | 1 << CAP_SYS_ADMIN);

        let c = check_privileges(&p);

        assert_eq!(c.level, Level::Ok);
        assert!(
            c.result.contains("capabilities are effective"),
            "{}",
            c.result
        );
    }

    #[test]
    fn privileges_without_root_or_caps_warn_naming_what_is_missing() {
        let mut p = healthy_host();
        p.euid_root = false;
        p.effective_caps = Some(1 << CAP_NET_ADMIN);

        let c = check_privileges(&p);

        assert_eq!(c.level, Level::Warn);
        assert!(
            c.result.starts_with("not root; missing")
                && c.result.contains("CAP_SYS_ADMIN")
                && !c.result.contains("CAP_NET_ADMIN"),
            "{}",
            c.result
        );
        assert_eq!(
            c.fix.as_deref(),
            Some("run the daemon as root: `sudo hangar daemon`")
        );
    }

    #[test]
    fn root_without_capabilities_says_root_but() {
        let mut p = healthy_host();
        p.effective_caps = None;

        let c = check_privileges(&p);

        assert_eq!(c.level, Level::Warn);
        assert!(c.result.starts_with("root, but missing"), "{}", c.result);
    }
}
