//! Why a tool run failed.

use std::process::ExitStatus;
use std::time::Duration;

/// Why a tool could not be run to a successful end. Every variant names the
/// command line, so an operator can re-run it by hand. Crates wrap this in
/// their own error (keeping it as the source) to add what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The binary could not be started (missing, not executable).
    #[error("Cannot run `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    /// The tool ran and exited with a status not counted as success.
    /// `output` is its trimmed stderr (the last lines of its output for a
    /// streaming run).
    #[error("Command `{command}` failed ({status}): {output}")]
    Failed {
        command: String,
        status: ExitStatus,
        output: String,
    },
    /// The tool ran past its time limit; its process group was killed.
    #[error("`{command}` did not finish within {timeout:?} and was killed")]
    TimedOut { command: String, timeout: Duration },
    /// The run was cancelled; the tool's process group was killed.
    #[error("`{command}` was cancelled")]
    Cancelled { command: String },
    /// Waiting for the tool failed (an OS error, not the tool's).
    #[error("Cannot wait for `{command}`")]
    Wait {
        command: String,
        #[source]
        source: std::io::Error,
    },
}

impl ToolError {
    /// The command line of the run that failed.
    pub fn command(&self) -> &str {
        match self {
            ToolError::Spawn { command, .. }
            | ToolError::Failed { command, .. }
            | ToolError::TimedOut { command, .. }
            | ToolError::Cancelled { command }
            | ToolError::Wait { command, .. } => command,
        }
    }

    /// What a tool that ran and failed printed (see [`ToolError::Failed`]).
    pub fn output(&self) -> Option<&str> {
        match self {
            ToolError::Failed { output, .. } => Some(output),
            _ => None,
        }
    }

    /// True when the tool could not be started at all, so the hint is to
    /// install it.
    pub fn is_spawn(&self) -> bool {
        matches!(self, ToolError::Spawn { .. })
    }
}
