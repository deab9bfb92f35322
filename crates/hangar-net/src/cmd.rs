//! Running `ip` and `nft`. Every `ip` call targets the configured namespace
//! with `ip -n NS`, so nothing here can touch the host's interfaces when a
//! namespace is configured.

use std::time::Duration;

use hangar_host::Tool;
use serde::Deserialize;

use crate::NetError;

/// `ip` and `nft` answer in milliseconds; one that runs this long hangs
/// (e.g. on a netlink lock) and is killed rather than blocking the daemon.
pub(crate) const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// Builds `ip` commands for one namespace (or the root namespace when `None`).
#[derive(Debug, Clone)]
pub(crate) struct Ip {
    netns: Option<String>,
}

impl Ip {
    pub(crate) fn new(netns: Option<&str>) -> Self {
        Ip {
            netns: netns.map(str::to_string),
        }
    }

    pub(crate) fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    /// `ip [-n NS] ARGS...`
    pub(crate) fn args(&self, args: &[&str]) -> Vec<String> {
        let mut v = vec!["ip".to_string()];
        if let Some(ns) = &self.netns {
            v.push("-n".to_string());
            v.push(ns.clone());
        }
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }

    pub(crate) async fn run(&self, args: &[&str]) -> Result<String, NetError> {
        run(&self.args(args), None).await
    }

    /// All links in the namespace with kind details (`ip -j -d link show`).
    pub(crate) async fn links(&self) -> Result<Vec<Link>, NetError> {
        let argv = self.args(&["-j", "-d", "link", "show"]);
        let out = run(&argv, None).await?;
        parse_links(&out).map_err(|source| NetError::Parse {
            command: argv.join(" "),
            source,
        })
    }
}

/// The part of `ip -j -d link show` we use.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub(crate) struct Link {
    pub ifname: String,
    #[serde(default)]
    pub master: Option<String>,
    #[serde(default)]
    pub flags: Vec<String>,
    #[serde(default)]
    pub linkinfo: Option<LinkInfo>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub(crate) struct LinkInfo {
    #[serde(default)]
    pub info_kind: Option<String>,
    #[serde(default)]
    pub info_data: Option<InfoData>,
}

/// `linkinfo.info_data`: for a tun device, `type` is "tun" or "tap".
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub(crate) struct InfoData {
    #[serde(default, rename = "type")]
    pub mode: Option<String>,
}

impl Link {
    pub(crate) fn kind(&self) -> &str {
        self.linkinfo
            .as_ref()
            .and_then(|i| i.info_kind.as_deref())
            .unwrap_or("device")
    }

    /// What the link is, as said in errors: "tun/tap", "tun/tun", "veth"...
    pub(crate) fn kind_and_mode(&self) -> String {
        let mode = self
            .linkinfo
            .as_ref()
            .and_then(|i| i.info_data.as_ref())
            .and_then(|d| d.mode.as_deref());
        match mode {
            Some(mode) => format!("{}/{mode}", self.kind()),
            None => self.kind().to_string(),
        }
    }

    /// A TAP device (tun driver in tap mode).
    pub(crate) fn is_tap(&self) -> bool {
        self.kind_and_mode() == "tun/tap"
    }
}

pub(crate) fn parse_links(json: &str) -> Result<Vec<Link>, serde_json::Error> {
    if json.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(json)
}

/// Runs `argv` (optionally feeding `stdin`), returning stdout; a non-zero exit
/// becomes [`NetError::Command`] with the command line and stderr.
pub(crate) async fn run(argv: &[String], stdin: Option<&str>) -> Result<String, NetError> {
    Ok(tool(argv, stdin)?.run().await?.stdout)
}

/// [`run`] for callers on a blocking thread.
pub(crate) fn run_blocking(argv: &[String]) -> Result<String, NetError> {
    Ok(tool(argv, None)?.run_blocking()?.stdout)
}

fn tool(argv: &[String], stdin: Option<&str>) -> Result<Tool, NetError> {
    let (prog, rest) = argv
        .split_first()
        .ok_or_else(|| NetError::Config("empty command".to_string()))?;
    let tool = Tool::new(prog).args(rest).timeout(TOOL_TIMEOUT);
    Ok(match stdin {
        Some(input) => tool.stdin(input),
        None => tool,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_with_netns_target_the_namespace() {
        let ip = Ip::new(Some("hg"));
        assert_eq!(
            ip.args(&["link", "show"]),
            vec!["ip", "-n", "hg", "link", "show"]
        );
    }

    #[test]
    fn args_without_netns_have_no_n_flag() {
        let ip = Ip::new(None);
        assert_eq!(ip.args(&["link", "show"]), vec!["ip", "link", "show"]);
    }

    #[test]
    fn parse_links_reads_master_and_kind() {
        let json = r#"[{"ifindex":3,"ifname":"hgtap0","flags":["BROADCAST","UP"],"master":"hgbr0",
            "linkinfo":{"info_kind":"tun","info_data":{"type":"tap"}}}]"#;
        let links = parse_links(json).unwrap();
        assert_eq!(links[0].ifname, "hgtap0");
        assert_eq!(links[0].master.as_deref(), Some("hgbr0"));
        assert_eq!(links[0].kind(), "tun");
        assert!(links[0].is_tap());
    }

    #[test]
    fn only_tun_in_tap_mode_is_a_tap() {
        let json = r#"[{"ifname":"hgtap1","linkinfo":{"info_kind":"tun","info_data":{"type":"tun"}}},
            {"ifname":"hgtap2","linkinfo":{"info_kind":"veth"}},
            {"ifname":"hgtap3"}]"#;
        let links = parse_links(json).unwrap();
        let kinds: Vec<(bool, String)> = links
            .iter()
            .map(|l| (l.is_tap(), l.kind_and_mode()))
            .collect();
        assert_eq!(
            kinds,
            [
                (false, "tun/tun".to_string()),
                (false, "veth".to_string()),
                (false, "device".to_string())
            ]
        );
    }

    #[test]
    fn parse_links_of_empty_output_is_empty() {
        assert!(parse_links("").unwrap().is_empty());
    }

    #[tokio::test]
    async fn run_failure_carries_command_and_stderr() {
        let argv: Vec<String> = ["sh", "-c", "echo nope >&2; exit 2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let err = run(&argv, None).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "Command `sh -c echo nope >&2; exit 2` failed (exit status: 2): nope"
        );
    }

    #[tokio::test]
    async fn run_feeds_stdin() {
        let argv: Vec<String> = ["cat"].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            run(&argv, Some("table ip x {}")).await.unwrap(),
            "table ip x {}"
        );
    }

    #[tokio::test]
    async fn run_of_a_missing_tool_says_what_to_install() {
        let argv = vec!["hangar-no-such-ip".to_string(), "link".to_string()];

        let err = run(&argv, None).await.unwrap_err();

        assert!(matches!(err, NetError::Spawn { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "Failed to run `hangar-no-such-ip link`; is iproute2 (ip) / nftables (nft) installed?"
        );
    }

    #[test]
    fn run_blocking_failure_carries_command_and_stderr() {
        let argv: Vec<String> = ["sh", "-c", "echo nope >&2; exit 2"]
            .iter()
            .map(|s| s.to_string())
            .collect();

        let err = run_blocking(&argv).unwrap_err();

        assert_eq!(
            err.to_string(),
            "Command `sh -c echo nope >&2; exit 2` failed (exit status: 2): nope"
        );
    }
}
