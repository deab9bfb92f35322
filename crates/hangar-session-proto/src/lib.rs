//! The `hangar-session` subsystem of Hangar's guest agent: long-lived
//! sessions (a command on a PTY that outlives every connection), as
//! specified in `docs/api.md` ("Sessions in the guest agent").
//!
//! One SSH session channel per request: the client asks for the subsystem
//! [`SUBSYSTEM`], writes one [`Request`] as a JSON line, and reads one
//! [`Reply`] JSON line. `attach` and `logs` then carry raw bytes on the
//! same channel (terminal output to the client; for `attach`, keystrokes
//! from the client and `window-change` requests), and end with an SSH
//! `exit-status` once the session's command is done.
//!
//! This crate holds only the wire types, so the guest agent links no code
//! of the host.

use serde::{Deserialize, Serialize};

/// The SSH subsystem name.
pub const SUBSYSTEM: &str = "hangar-session";

/// Longest request line the agent reads (a command line with its
/// environment fits many times over).
pub const MAX_REQUEST_LINE: usize = 256 * 1024;

/// Longest session name.
pub const MAX_NAME_LEN: usize = 64;

/// One request, tagged by `op`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Start a command in a new session; replies [`SessionInfo`] once the
    /// command has started.
    Start(StartRequest),
    /// Every session the guest knows; replies `Vec<SessionInfo>`.
    List,
    /// One session; replies [`SessionInfo`].
    Info { name: String },
    /// Attach: replies [`SessionInfo`], then the screen as it is now, then
    /// live output; channel data from the client is typed into the session.
    Attach { name: String, cols: u16, rows: u16 },
    /// Type `data` into the session; replies [`SessionInfo`].
    Send { name: String, data: String },
    /// The session's log: replies [`SessionInfo`], then the log's bytes
    /// (the last `tail_lines` lines if given), then, with `follow`, new
    /// output until the command is done.
    Logs {
        name: String,
        #[serde(default)]
        tail_lines: Option<u64>,
        #[serde(default)]
        follow: bool,
    },
    /// SIGTERM to the session's process group, SIGKILL after
    /// `timeout_secs`; replies [`SessionInfo`] once the command is done.
    Stop { name: String, timeout_secs: u64 },
    /// Forget a session that is no longer running (its record and log);
    /// replies [`SessionInfo`] as it was.
    Remove { name: String },
}

impl Request {
    /// The session a request is about (`list` is about none).
    pub fn session_name(&self) -> Option<&str> {
        match self {
            Request::Start(r) => Some(&r.name),
            Request::List => None,
            Request::Info { name }
            | Request::Attach { name, .. }
            | Request::Send { name, .. }
            | Request::Logs { name, .. }
            | Request::Stop { name, .. }
            | Request::Remove { name } => Some(name),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    pub name: String,
    /// Program and arguments, run directly (PATH looked up), no shell.
    pub argv: Vec<String>,
    /// Working directory [default: the user's home].
    #[serde(default)]
    pub cwd: Option<String>,
    /// Extra environment, applied after the defaults.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// User from the image's /etc/passwd [default: root].
    #[serde(default)]
    pub user: Option<String>,
    /// TERM [default: xterm-256color].
    #[serde(default)]
    pub term: Option<String>,
    /// Terminal size until a client attaches [default: 80x24].
    #[serde(default)]
    pub cols: Option<u16>,
    #[serde(default)]
    pub rows: Option<u16>,
}

/// The agent's answer line: `{"ok": …}` or `{"error": {…}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply<T> {
    Ok(T),
    Error(ReplyError),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyError {
    pub kind: ErrorKind,
    pub message: String,
}

impl std::fmt::Display for ReplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ReplyError {}

impl ReplyError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ReplyError {
        ReplyError {
            kind,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// No session of that name.
    NotFound,
    /// The name is taken by a running session, or the session is in the
    /// wrong state for the request (attach to an ended one, remove a
    /// running one).
    Conflict,
    /// The request is malformed or names something that does not exist in
    /// the guest (user, directory, program).
    Invalid,
    /// The guest failed to do it.
    Internal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    Running,
    /// The command exited (`exit_code`, and `signal` if killed).
    Exited,
    /// It ended without an exit status: the VM or its agent restarted
    /// while it ran (`end_reason`).
    Ended,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub name: String,
    pub argv: Vec<String>,
    #[serde(default)]
    pub cwd: Option<String>,
    pub user: String,
    pub state: SessionState,
    /// 0–255, or 128 + the signal number when killed by a signal.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Name of the signal that killed it (`TERM`).
    #[serde(default)]
    pub signal: Option<String>,
    #[serde(default)]
    pub end_reason: Option<String>,
    /// Unix seconds (the guest's clock).
    pub started_at: i64,
    #[serde(default)]
    pub ended_at: Option<i64>,
    /// Clients attached right now.
    #[serde(default)]
    pub clients: u32,
    /// Bytes in the session's log.
    #[serde(default)]
    pub log_bytes: u64,
}

/// Why a session name is refused, or `None` when it is fine: 1 to
/// [`MAX_NAME_LEN`] characters of `A-Z a-z 0-9 . _ -`, starting with a
/// letter or digit (it names files in the guest).
pub fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("a session name must not be empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Some(format!(
            "session name {name:?} is longer than {MAX_NAME_LEN} characters"
        ));
    }
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let all_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !first_ok || !all_ok {
        return Some(format!(
            "session name {name:?} may use only letters, digits, '.', '_' and '-', and must start with a letter or digit"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn requests_are_tagged_json_lines() {
        let r = Request::Attach {
            name: "build".into(),
            cols: 100,
            rows: 30,
        };
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(
            line,
            r#"{"op":"attach","name":"build","cols":100,"rows":30}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r);
        let list: Request = serde_json::from_str(r#"{"op":"list"}"#).unwrap();
        assert_eq!(list, Request::List);
        assert!(serde_json::from_str::<Request>(r#"{"op":"format_disk"}"#).is_err());
    }

    #[test]
    fn replies_are_ok_or_error() {
        let e: Reply<SessionInfo> = Reply::Error(ReplyError::new(ErrorKind::NotFound, "no"));
        let line = serde_json::to_string(&e).unwrap();
        assert_eq!(line, r#"{"error":{"kind":"not_found","message":"no"}}"#);
        let ok: Reply<Vec<SessionInfo>> = serde_json::from_str(r#"{"ok":[]}"#).unwrap();
        assert_eq!(ok, Reply::Ok(vec![]));
    }

    #[test]
    fn a_request_names_its_session() {
        assert_eq!(Request::List.session_name(), None);
        let stop = Request::Stop {
            name: "a".into(),
            timeout_secs: 1,
        };
        assert_eq!(stop.session_name(), Some("a"));
        let start = Request::Start(StartRequest {
            name: "b".into(),
            ..Default::default()
        });
        assert_eq!(start.session_name(), Some("b"));
    }

    #[test]
    fn names_are_file_safe() {
        for good in ["a", "build-1", "web.dev", "A_b", &"x".repeat(64)] {
            assert_eq!(name_problem(good), None, "{good}");
        }
        for bad in [
            "",
            ".hidden",
            "-x",
            "a/b",
            "..",
            "a b",
            "\u{e9}",
            &"x".repeat(65),
        ] {
            assert!(name_problem(bad).is_some(), "{bad}");
        }
    }
}
