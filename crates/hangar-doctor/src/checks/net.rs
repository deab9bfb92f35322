//! The network subsystem: TUN and bridge support in the kernel, the `ip`
//! and `nft` tools, IPv4 forwarding and the host firewall's forward policy.

use hangar_config::Config;

use super::kernel::Feature;
use super::tools::{always, Tool};
use crate::report::{Check, Level};
use crate::HostProbe;

/// What the guest network needs from the kernel; without either no VM has
/// a network.
pub const FEATURES: &[Feature] = &[
    Feature {
        name: "kernel-tun",
        what: "kernel TUN/TAP support (/dev/net/tun) for VM network devices",
        config: "CONFIG_TUN",
        module: "tun",
        device: Some("/dev/net/tun"),
        required: true,
        impact: "VMs get no network device",
    },
    Feature {
        name: "kernel-bridge",
        what: "kernel bridge support for the guest network",
        config: "CONFIG_BRIDGE",
        module: "bridge",
        device: None,
        required: true,
        impact: "the guest bridge cannot be created",
    },
];

pub const IP: Tool = Tool {
    bin: "ip",
    package: "iproute2",
    why: "creates bridges and TAPs",
    required: always,
};

pub const NFT: Tool = Tool {
    bin: "nft",
    package: "nftables",
    why: "fences guests in (host firewall, anti-spoofing, VM isolation) and sets up NAT",
    required: always,
};

pub fn check_ip_forward(p: &HostProbe, config: &Config) -> Check {
    const WHAT: &str = "IPv4 forwarding for guest traffic (root-namespace mode only)";
    if let Some(ns) = config.netns() {
        return Check::new(
            "ip-forward",
            WHAT,
            Level::Ok,
            format!("not needed: the VM network lives in network namespace {ns:?}"),
        );
    }
    match (p.ip_forward, config.network.nat) {
        (Some(true), _) => Check::new("ip-forward", WHAT, Level::Ok, "enabled"),
        (Some(false), true) => Check::new(
            "ip-forward",
            WHAT,
            Level::Ok,
            "off now; the daemon turns it on when it sets up NAT ([network] nat = true)",
        ),
        (Some(false), false) => Check::new(
            "ip-forward",
            WHAT,
            Level::Warn,
            "off and [network] nat = false: guests cannot reach beyond the host",
        )
        .fix("sysctl -w net.ipv4.ip_forward=1, or set [network] nat = true"),
        (None, _) => Check::new(
            "ip-forward",
            WHAT,
            Level::Warn,
            "cannot read /proc/sys/net/ipv4/ip_forward",
        )
        .fix("check that /proc is mounted"),
    }
}

/// Whether the host firewall lets guest traffic be forwarded.
pub fn check_forward_policy(p: &HostProbe, config: &Config) -> Check {
    const WHAT: &str = "host firewall forwards guest traffic (root-namespace mode only)";
    if let Some(ns) = config.netns() {
        return Check::new(
            "forward-policy",
            WHAT,
            Level::Ok,
            format!("not needed: the VM network lives in network namespace {ns:?}"),
        );
    }
    match &p.forward_drop_chains {
        None => Check::new(
            "forward-policy",
            WHAT,
            Level::Ok,
            "not checked (nft missing or the ruleset could not be read)",
        ),
        Some(chains) if chains.is_empty() => Check::new(
            "forward-policy",
            WHAT,
            Level::Ok,
            "no forward chain with policy drop",
        ),
        Some(chains) => {
            let bridge = &config.network.bridge;
            Check::new(
                "forward-policy",
                WHAT,
                Level::Warn,
                format!(
                    "{} drops forwarded packets by default (Docker and ufw do this): guests cannot reach beyond the host",
                    chains.join(", ")
                ),
            )
            .fix(format!(
                "allow the bridge in that chain, e.g. `iptables -I FORWARD -i {bridge} -j ACCEPT; iptables -I FORWARD -o {bridge} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT` (with Docker: the DOCKER-USER chain), or set [network] netns"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::fixture::healthy_host;
    use crate::checks::kernel::check_feature;
    use crate::checks::tools::check_tool;
    use crate::parse::parse_kernel_config;
    use crate::KernelFacts;

    fn in_netns() -> Config {
        let mut cfg = Config::default();
        cfg.network.netns = "ns1".into();
        cfg
    }

    fn without_nat() -> Config {
        let mut cfg = Config::default();
        cfg.network.nat = false;
        cfg
    }

    #[test]
    fn tun_and_bridge_are_required() {
        let k = KernelFacts {
            config: parse_kernel_config("CONFIG_BRIDGE=y\n# CONFIG_TUN is not set\n"),
            ..KernelFacts::default()
        };

        let [tun, bridge] = [&FEATURES[0], &FEATURES[1]].map(|f| check_feature(&k, f));

        assert_eq!((tun.name.as_str(), tun.level), ("kernel-tun", Level::Fail));
        assert_eq!(
            tun.result,
            "not in this kernel (CONFIG_TUN unset): VMs get no network device"
        );
        assert_eq!(
            (bridge.name.as_str(), bridge.level),
            ("kernel-bridge", Level::Ok)
        );
    }

    #[test]
    fn builtin_tun_without_device_node_says_so() {
        let k = KernelFacts {
            config: parse_kernel_config("CONFIG_TUN=y\n"),
            ..KernelFacts::default()
        };

        let c = check_feature(&k, &FEATURES[0]);

        assert_eq!(c.level, Level::Fail);
        assert!(c.result.contains("/dev/net/tun is missing"), "{}", c.result);
    }

    #[test]
    fn missing_nft_always_fails_since_every_mode_fences_guests_with_it() {
        let mut p = healthy_host();
        p.tools.insert("nft".into(), None);

        let root_ns = check_tool(&p, &Config::default(), &NFT);

        assert_eq!(root_ns.level, Level::Fail);
        assert_eq!(root_ns.fix.as_deref(), Some("apt-get install nftables"));
        assert_eq!(check_tool(&p, &in_netns(), &NFT).level, Level::Fail);
        assert_eq!(check_tool(&p, &without_nat(), &NFT).level, Level::Fail);
    }

    #[test]
    fn missing_ip_always_fails() {
        let mut p = healthy_host();
        p.tools.insert("ip".into(), None);

        assert_eq!(check_tool(&p, &in_netns(), &IP).level, Level::Fail);
    }

    #[test]
    fn ip_forward_is_not_checked_in_netns_mode() {
        let mut p = healthy_host();
        p.ip_forward = Some(false);
        let mut cfg = without_nat();
        cfg.network.netns = "ns1".into();

        assert_eq!(check_ip_forward(&p, &cfg).level, Level::Ok);
        cfg.network.netns.clear();
        assert_eq!(check_ip_forward(&p, &cfg).level, Level::Warn);
    }

    #[test]
    fn ip_forward_off_is_fine_when_the_daemon_turns_it_on_for_nat() {
        let mut p = healthy_host();
        p.ip_forward = Some(false);

        let c = check_ip_forward(&p, &Config::default());

        assert_eq!(c.level, Level::Ok);
        assert!(c.result.starts_with("off now"), "{}", c.result);
    }

    #[test]
    fn ip_forward_unreadable_warns() {
        let mut p = healthy_host();
        p.ip_forward = None;

        let c = check_ip_forward(&p, &Config::default());

        assert_eq!(c.level, Level::Warn);
        assert_eq!(c.fix.as_deref(), Some("check that /proc is mounted"));
    }

    #[test]
    fn forward_drop_warns_in_root_namespace_mode_only() {
        let mut p = healthy_host();
        p.forward_drop_chains = Some(vec!["table ip filter chain FORWARD".into()]);

        let c = check_forward_policy(&p, &Config::default());

        assert_eq!(c.level, Level::Warn);
        assert!(
            c.result.starts_with("table ip filter chain FORWARD drops"),
            "{}",
            c.result
        );
        assert!(
            c.fix.as_deref().unwrap_or("").contains("-i hangar0"),
            "{c:?}"
        );
        assert_eq!(check_forward_policy(&p, &in_netns()).level, Level::Ok);
    }

    #[test]
    fn forward_policy_unread_or_clean_is_ok() {
        let mut p = healthy_host();
        let clean = check_forward_policy(&p, &Config::default());
        p.forward_drop_chains = None;
        let unread = check_forward_policy(&p, &Config::default());

        assert_eq!(clean.level, Level::Ok);
        assert_eq!(clean.result, "no forward chain with policy drop");
        assert_eq!(unread.level, Level::Ok);
        assert!(
            unread.result.starts_with("not checked"),
            "{}",
            unread.result
        );
    }
}
