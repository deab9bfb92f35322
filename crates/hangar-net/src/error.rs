//! Errors of the host-networking layer. Command failures carry the exact
//! command line and its stderr (in [`ToolError`]), so an operator can re-run
//! it by hand.

use hangar_host::ToolError;

/// Everything that can go wrong while setting up or using host networking.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The configuration cannot work (names too long, subnet too small...).
    #[error("Invalid network config: {0}")]
    Config(String),

    /// A tool could not be started at all.
    #[error(
        "Failed to run `{}`; is iproute2 (ip) / nftables (nft) installed?",
        .source.command()
    )]
    Spawn {
        #[source]
        source: ToolError,
    },

    /// A tool ran and failed (or hung past its time limit).
    #[error(transparent)]
    Command(ToolError),

    /// `ip -j` printed something we could not read.
    #[error("Could not parse the JSON output of `{command}`")]
    Parse {
        command: String,
        #[source]
        source: serde_json::Error,
    },

    /// An existing interface has the bridge's name but is not a bridge.
    #[error("Interface {name} exists but is a {kind:?}, not a bridge; pick another bridge name or remove it")]
    NotABridge { name: String, kind: String },

    /// An existing interface is named like a pool TAP but is something else
    /// (adopting it would put a foreign link on the guests' bridge).
    #[error("Interface {name} is named like a hangar TAP but is a {kind:?}, not a TAP; remove or rename it, or change [network] tap_prefix")]
    NotATap { name: String, kind: String },

    /// A caller tried to hand back an interface that is not one of our TAPs.
    #[error("{name} is not a hangar TAP (expected prefix {prefix:?}); refusing to touch it")]
    ForeignTap { name: String, prefix: String },

    /// The network was shut down; no more TAPs are handed out.
    #[error("Host networking is shut down; restart the daemon")]
    ShutDown,

    /// Local file or sysctl access failed.
    #[error("Failed to {action}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },
}

impl From<ToolError> for NetError {
    fn from(e: ToolError) -> Self {
        if e.is_spawn() {
            NetError::Spawn { source: e }
        } else {
            NetError::Command(e)
        }
    }
}
