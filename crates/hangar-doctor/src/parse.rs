//! Pure parsers of what the host prints or exposes in `/proc`: one function
//! per format, each unit-tested on real samples. No I/O here.

use std::collections::{BTreeMap, BTreeSet};

/// `CapEff:` of a `/proc/<pid>/status` text.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// `CONFIG_X=y|m` lines of a kernel config.
pub fn parse_kernel_config(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.starts_with("CONFIG_"))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// Module names in `modules.builtin` / `modules.dep` lines
/// (`kernel/drivers/net/tun.ko[.xz]: deps`), with `-` normalised to `_`.
pub fn parse_module_paths(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.split(':').next())
        .filter_map(|p| p.rsplit('/').next())
        .filter_map(|f| f.split(".ko").next())
        .filter(|n| !n.is_empty())
        .map(|n| n.replace('-', "_"))
        .collect()
}

/// Loaded module names: the first word of each `/proc/modules` line.
pub fn parse_proc_modules(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Base chains hooked on `forward` whose policy is drop, as
/// `table <family> <name> chain <name>`, from `nft list ruleset` output.
/// Such a chain (Docker's and ufw's FORWARD) drops guest traffic whatever
/// Hangar's own table accepts.
pub fn forward_drop_chains(ruleset: &str) -> Vec<String> {
    let mut table = String::new();
    let mut chain = String::new();
    let mut found = Vec::new();
    for line in ruleset.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("table ") {
            table = rest.trim_end_matches('{').trim().to_string();
        } else if let Some(rest) = line.strip_prefix("chain ") {
            chain = rest.trim_end_matches('{').trim().to_string();
        } else if line.starts_with("type filter hook forward")
            && line.contains("policy drop")
            && table != "ip hangar"
        {
            found.push(format!("table {table} chain {chain}"));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_eff_is_parsed_as_hex() {
        assert_eq!(
            parse_cap_eff("Name:\tx\nCapEff:\t000001ffffffffff\n"),
            Some(0x1ff_ffff_ffff)
        );
        assert_eq!(parse_cap_eff("Name:\tx\n"), None);
    }

    #[test]
    fn kernel_config_keeps_set_options_only() {
        let c = parse_kernel_config("CONFIG_TUN=y\n# CONFIG_BRIDGE is not set\nCONFIG_LOOP=m\n");

        assert_eq!(c.get("CONFIG_TUN").map(String::as_str), Some("y"));
        assert_eq!(c.get("CONFIG_LOOP").map(String::as_str), Some("m"));
        assert!(!c.contains_key("CONFIG_BRIDGE"), "{c:?}");
    }

    #[test]
    fn module_paths_are_normalised() {
        let mods = parse_module_paths(
            "kernel/drivers/md/dm-mod.ko.xz: kernel/x.ko\nkernel/net/bridge/bridge.ko:\n",
        );

        assert!(
            mods.contains("dm_mod") && mods.contains("bridge"),
            "{mods:?}"
        );
    }

    #[test]
    fn proc_modules_gives_the_module_names() {
        let mods = parse_proc_modules(
            "kvm_intel 413696 0 - Live 0x0000000000000000\nkvm 1363968 1 kvm_intel, Live 0x0\n",
        );

        assert_eq!(mods, ["kvm", "kvm_intel"].map(String::from).into());
    }

    #[test]
    fn forward_drop_chains_are_found_outside_our_table() {
        let ruleset = "table ip filter {\n\tchain FORWARD {\n\t\ttype filter hook forward priority filter; policy drop;\n\t\tcounter jump DOCKER-USER\n\t}\n\tchain INPUT {\n\t\ttype filter hook input priority filter; policy drop;\n\t}\n}\ntable ip hangar {\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy drop;\n\t}\n}\n";
        assert_eq!(
            forward_drop_chains(ruleset),
            vec!["table ip filter chain FORWARD"]
        );
        assert!(forward_drop_chains("table inet x {\n chain f {\n type filter hook forward priority 0; policy accept;\n }\n}\n").is_empty());
    }
}
