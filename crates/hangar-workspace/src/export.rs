//! Taking the guest's bundle into the user's repository: one ref, as one
//! branch, with hooks off and nothing else touched.

use std::path::{Path, PathBuf};

use crate::error::WorkspaceError;
use crate::git;

/// The one ref the export script puts in its bundle.
pub const EXPORT_REF: &str = "refs/hangar/export";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportOutcome {
    Created {
        branch: String,
        commit: String,
    },
    FastForward {
        branch: String,
        from: String,
        commit: String,
    },
    Forced {
        branch: String,
        from: String,
        commit: String,
    },
    Unchanged {
        branch: String,
        commit: String,
    },
}

/// Settings for every git run on the user's repository with guest data:
/// no hooks, objects checked, no background maintenance.
const SAFE: &[&str] = &[
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "transfer.fsckObjects=true",
    "-c",
    "gc.auto=0",
    "-c",
    "maintenance.auto=false",
];

fn safe_args<'a>(rest: &[&'a str]) -> Vec<&'a str> {
    SAFE.iter().copied().chain(rest.iter().copied()).collect()
}

/// Fetches [`EXPORT_REF`] of `bundle` into `repo` (any path inside its
/// working tree) as `refs/heads/<branch>`: fast-forward only unless
/// `force`. The working tree, index, HEAD and every other ref stay as they
/// are.
pub fn fetch_bundle(
    repo: &Path,
    bundle: &Path,
    branch: &str,
    force: bool,
) -> Result<ExportOutcome, WorkspaceError> {
    let top = PathBuf::from(git::text(repo, &["rev-parse", "--show-toplevel"])?);
    check_branch_name(&top, branch)?;
    let bundle_s = bundle.to_string_lossy().into_owned();
    // Exactly one ref, ours, with a well-formed id.
    let heads = git::text(&top, &safe_args(&["bundle", "list-heads", &bundle_s]))?;
    let mut lines = heads.lines();
    let commit = match (lines.next(), lines.next()) {
        (Some(line), None) => match line.split_once(' ') {
            Some((oid, name)) if git::is_oid(oid) && name == EXPORT_REF => oid.to_string(),
            _ => {
                return Err(WorkspaceError::BadBundle(
                    "unexpected refs in it".to_string(),
                ))
            }
        },
        _ => {
            return Err(WorkspaceError::BadBundle(
                "it must hold exactly one ref".to_string(),
            ))
        }
    };
    // The prerequisites (the imported base) must be here.
    let args = safe_args(&["bundle", "verify", "-q", &bundle_s]);
    let out = git::output(git::command(&top, &args), &args)?;
    if !out.status.success() {
        return Err(WorkspaceError::BadBundle(format!(
            "its base commit is not in this repository (was the VM's workspace imported from here?): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let full = format!("refs/heads/{branch}");
    if let Some(current) = git::query(&top, &["symbolic-ref", "-q", "HEAD"])? {
        if current == full {
            return Err(WorkspaceError::CheckedOut {
                branch: branch.to_string(),
                repo: top,
            });
        }
    }
    let before = git::query(&top, &["rev-parse", "--verify", "-q", &full])?;
    if before.as_deref() == Some(commit.as_str()) {
        return Ok(ExportOutcome::Unchanged {
            branch: branch.to_string(),
            commit,
        });
    }
    let refspec = format!("{}{EXPORT_REF}:{full}", if force { "+" } else { "" });
    let args = safe_args(&[
        // No --quiet: git 2.47 then fails this fetch from a bundle with
        // no message (seen in the round-trip test); stderr is captured.
        "fetch",
        "--no-tags",
        "--no-write-fetch-head",
        "--no-recurse-submodules",
        "--no-auto-maintenance",
        &bundle_s,
        &refspec,
    ]);
    let out = git::output(git::command(&top, &args), &args)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("non-fast-forward") || stderr.contains("rejected") {
            return Err(WorkspaceError::Diverged {
                branch: branch.to_string(),
            });
        }
        return Err(git::failed(&args, &out));
    }
    let branch = branch.to_string();
    Ok(match before {
        None => ExportOutcome::Created { branch, commit },
        Some(from) if force => ExportOutcome::Forced {
            branch,
            from,
            commit,
        },
        Some(from) => ExportOutcome::FastForward {
            branch,
            from,
            commit,
        },
    })
}

fn check_branch_name(top: &Path, branch: &str) -> Result<(), WorkspaceError> {
    let ok = !branch.starts_with('-')
        && git::query(top, &["check-ref-format", "--branch", branch])?.is_some();
    if ok {
        Ok(())
    } else {
        Err(WorkspaceError::Unsupported(format!(
            "{branch:?} is not a valid branch name"
        )))
    }
}
