//! VM records as the API shows them, and the requests that act on VMs.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Where a VM is in its lifecycle. The store holds it; the daemon reconciles
/// it with the VMM process at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    Creating,
    Starting,
    Running,
    Stopping,
    Stopped,
    /// The last start or create failed; `VmInfo::last_error` says why.
    Error,
}

impl VmState {
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Creating => "creating",
            VmState::Starting => "starting",
            VmState::Running => "running",
            VmState::Stopping => "stopping",
            VmState::Stopped => "stopped",
            VmState::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "creating" => VmState::Creating,
            "starting" => VmState::Starting,
            "running" => VmState::Running,
            "stopping" => VmState::Stopping,
            "stopped" => VmState::Stopped,
            "error" => VmState::Error,
            _ => return None,
        })
    }
}

impl std::fmt::Display for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A VM as `GET /v1/vms` and `GET /v1/vms/{name}` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VmInfo {
    pub id: String,
    pub name: String,
    pub state: VmState,
    /// Image name as given at create time (e.g. `debian-12`).
    pub image: String,
    pub image_digest: String,
    pub cpus: u32,
    pub memory_mib: u32,
    pub disk_bytes: u64,
    /// Guest address (no prefix length).
    pub ip: String,
    pub mac: String,
    /// The guest's SSH host key (OpenSSH public key line), generated for
    /// this VM: pin it in `known_hosts` to use OpenSSH through `hangar
    /// proxy` without trust on first use.
    #[serde(default)]
    pub host_key: String,
    /// The guest user the user's own SSH keys log in as (`vm create
    /// --ssh-user`, else the image's user); absent when they cannot log in
    /// (an image whose user is a bare uid). The daemon's key, used by
    /// `hangar exec`/`ssh`, may log in as anyone.
    #[serde(default)]
    pub ssh_user: Option<String>,
    /// `qemu` or `firecracker`.
    pub driver: String,
    /// Populated while the VMM process runs.
    pub pid: Option<u32>,
    pub tap: Option<String>,
    /// The VMM's control socket (QMP or Firecracker API) while it runs.
    #[serde(default)]
    pub api_socket: Option<String>,
    pub serial_log: String,
    /// Latest VMM metrics (Firecracker: vCPU exits, block and net bytes).
    #[serde(default)]
    pub metrics: Option<serde_json::Value>,
    pub created_at: String,
    pub last_error: Option<String>,
}

/// `POST /v1/vms`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVmRequest {
    pub name: String,
    /// Image name or digest; the configured default when absent.
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub cpus: Option<u32>,
    #[serde(default)]
    pub memory_mib: Option<u32>,
    /// Root disk size in bytes; at least the image's rootfs size.
    #[serde(default)]
    pub disk_bytes: Option<u64>,
    /// Extra OpenSSH public keys to authorize in the guest (the CLI sends the
    /// invoking user's `~/.ssh/*.pub`).
    #[serde(default)]
    pub authorized_keys: Vec<String>,
    /// The guest user those keys may log in as; the image's user when
    /// absent. Root only when this says so or the image runs as root.
    #[serde(default)]
    pub ssh_user: Option<String>,
    /// Start the image's Entrypoint + Cmd as the session `entrypoint` on
    /// every boot (with the image's user, Env and WorkingDir), like a
    /// container's main process. The image must have one.
    #[serde(default)]
    pub run_entrypoint: bool,
}

/// First message of an exec or shell stream (`POST /v1/vms/{name}/exec`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// argv; empty means the user's login shell.
    #[serde(default)]
    pub command: Vec<String>,
    /// Allocate a PTY (interactive shell).
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub term: Option<String>,
    #[serde(default)]
    pub cols: Option<u16>,
    #[serde(default)]
    pub rows: Option<u16>,
    /// Extra environment for the command.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Run as this user of the image (its `/etc/passwd`); absent: root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Whether `name` can be a user name in a guest (POSIX portable names:
/// letters, digits, `_`, `-`, `.`, not starting with `-`, at most 32).
pub fn validate_user_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "user {name:?} is not a user name (letters, digits, _ - ., at most 32, not starting with -)"
        ))
    }
}

/// Query of `DELETE /v1/vms/{name}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteVmQuery {
    /// Stop a running VM first instead of refusing with `conflict`.
    #[serde(default)]
    pub force: bool,
}

/// Response header of `GET /v1/vms/{name}/console`: the byte offset in
/// the console log where the body starts (followers ask for `offset` =
/// this + body length next).
pub const CONSOLE_OFFSET_HEADER: &str = "x-hangar-console-offset";
/// Response header of the same request: an id of the log file (each boot
/// starts a new one). Followers send it back as `file`; when it changed,
/// the answer starts at 0 of the new log.
pub const CONSOLE_FILE_HEADER: &str = "x-hangar-console-file";

/// `GET`/`PUT /v1/vms/{name}/files`: one file in the guest (`hangar cp`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GuestFileQuery {
    /// The file's path in the guest (relative paths start at root's home).
    pub path: String,
    /// `PUT` only: the new file's permission bits (default 0644).
    #[serde(default)]
    pub mode: Option<u32>,
}

/// What a `PUT /v1/vms/{name}/files` wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GuestFileWritten {
    pub path: String,
    pub bytes: u64,
}

/// Query of `GET`/`PUT /v1/vms/{name}/tree` (`hangar cp -r`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GuestTreeQuery {
    /// The tree's path in the guest (relative paths start at root's home).
    /// `PUT`: when it is an existing directory the tree goes inside it,
    /// as `name`; otherwise it is created (its parent must exist).
    pub path: String,
    /// `PUT` only: the name of the tree inside `path` when `path` is an
    /// existing directory (one plain name, like scp's source name).
    #[serde(default)]
    pub name: Option<String>,
}

/// What a `PUT /v1/vms/{name}/tree` wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GuestTreeWritten {
    /// Where the tree is now.
    pub path: String,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// File content bytes written.
    pub bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_portable_names_and_nothing_a_shell_or_path_could_take() {
        for ok in ["root", "app", "www-data", "j.doe", "_svc", "u1000"] {
            assert!(validate_user_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", "a b", "a/b", "a;b", "$(id)", &"x".repeat(33)] {
            assert!(validate_user_name(bad).is_err(), "{bad:?}");
        }
    }
}
