//! Long-lived sessions: a command on its own terminal inside a VM, run by
//! the guest agent, that outlives every client (`hangar session …`).

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The `Upgrade` protocol of `POST /v1/vms/{name}/sessions/{session}/attach`:
/// after `101` the connection carries [`crate::stream::Frame`]s (client:
/// `Stdin`, `Resize`; daemon: `Stdout`, then `Exit` or `Error`).
pub const ATTACH_UPGRADE_PROTOCOL: &str = "hangar-attach";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    Running,
    /// The command exited: `exit_code` (and `signal` when killed).
    Exited,
    /// It ended without an exit status: the VM restarted while it ran, or
    /// the VM is stopped (`end_reason`).
    Ended,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Running => "running",
            SessionState::Exited => "exited",
            SessionState::Ended => "ended",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionInfo {
    /// The VM it runs in.
    pub vm: String,
    pub name: String,
    /// Program and arguments.
    pub command: Vec<String>,
    #[serde(default)]
    pub cwd: Option<String>,
    pub user: String,
    pub state: SessionState,
    /// 0-255, or 128 + the signal number when killed by a signal.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// The signal that killed it (`TERM`).
    #[serde(default)]
    pub signal: Option<String>,
    #[serde(default)]
    pub end_reason: Option<String>,
    /// RFC 3339, UTC (the guest's clock).
    pub started_at: String,
    #[serde(default)]
    pub ended_at: Option<String>,
    /// Clients attached now.
    pub clients: u32,
    /// Size of its log in the guest.
    pub log_bytes: u64,
}

/// `POST /v1/vms/{name}/sessions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartSessionRequest {
    /// Letters, digits, '.', '_' and '-', starting with a letter or digit;
    /// at most 64.
    pub name: String,
    /// Program and arguments, run directly (no shell; PATH is searched).
    pub command: Vec<String>,
    /// Working directory in the VM [default: the image's WorkingDir, else
    /// the user's home].
    #[serde(default)]
    pub cwd: Option<String>,
    /// Extra environment (the image's own Env comes first).
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// User from the image's /etc/passwd [default: the image's USER, else
    /// root].
    #[serde(default)]
    pub user: Option<String>,
    /// Terminal size until a client attaches [default: 80x24].
    #[serde(default)]
    pub cols: Option<u16>,
    #[serde(default)]
    pub rows: Option<u16>,
}

/// `POST /v1/vms/{name}/sessions/{session}/send`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendSessionRequest {
    /// Bytes typed into the session's terminal, as text (a key such as
    /// Enter is its character: "\r").
    pub data: String,
}

/// `POST /v1/vms/{name}/sessions/{session}/stop`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StopSessionRequest {
    /// Seconds between SIGTERM and SIGKILL [default: 10; at most 300].
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// `GET /v1/vms/{name}/sessions/{session}/logs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SessionLogsQuery {
    /// Only the last N lines.
    #[serde(default)]
    pub tail: Option<u64>,
    /// Keep streaming new output until the command is done.
    #[serde(default)]
    pub follow: bool,
}

/// `POST /v1/vms/{name}/sessions/{session}/attach`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AttachQuery {
    /// The client's terminal size (the latest client's size wins).
    #[serde(default)]
    pub cols: Option<u16>,
    #[serde(default)]
    pub rows: Option<u16>,
}
