//! Runs `git` as the invoking user, with the variables that would point it
//! at another repository removed.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::error::WorkspaceError;

/// Variables that redirect git away from the directory we name.
const REDIRECTING_ENV: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_NAMESPACE",
    "GIT_CEILING_DIRECTORIES",
    "GIT_COMMON_DIR",
];

/// `git -C dir ARGS`, stdin closed, output captured.
pub(crate) fn command(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("git");
    c.arg("-C").arg(dir).args(args).stdin(Stdio::null());
    for v in REDIRECTING_ENV {
        c.env_remove(v);
    }
    // Messages we show or match must not be translated.
    c.env("LC_ALL", "C");
    c
}

pub(crate) fn output(mut cmd: Command, args: &[&str]) -> Result<Output, WorkspaceError> {
    cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            WorkspaceError::NoGit(e)
        } else {
            WorkspaceError::Io {
                what: format!("cannot run `git {}`", args.join(" ")),
                source: e,
            }
        }
    })
}

/// Runs git; its stdout on success, an error with its stderr otherwise.
pub(crate) fn run(dir: &Path, args: &[&str]) -> Result<Vec<u8>, WorkspaceError> {
    let out = output(command(dir, args), args)?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(failed(args, &out))
    }
}

/// Runs git; its trimmed stdout as text.
pub(crate) fn text(dir: &Path, args: &[&str]) -> Result<String, WorkspaceError> {
    let out = run(dir, args)?;
    String::from_utf8(out)
        .map(|s| s.trim_end_matches('\n').to_string())
        .map_err(|_| WorkspaceError::GitOutput {
            args: args.join(" "),
            what: "output that is not UTF-8".to_string(),
        })
}

/// Runs git; `None` when it exits non-zero (a query whose answer is "no").
pub(crate) fn query(dir: &Path, args: &[&str]) -> Result<Option<String>, WorkspaceError> {
    let out = output(command(dir, args), args)?;
    if !out.status.success() {
        return Ok(None);
    }
    Ok(Some(
        String::from_utf8_lossy(&out.stdout)
            .trim_end_matches('\n')
            .to_string(),
    ))
}

pub(crate) fn failed(args: &[&str], out: &Output) -> WorkspaceError {
    WorkspaceError::Git {
        args: args.join(" "),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    }
}

/// Whether `s` is a full hex object id (sha1 or sha256).
pub(crate) fn is_oid(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}
