//! What a path names: a git repository (and its state) or a plain
//! directory.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::WorkspaceError;
use crate::git;

/// What will be imported.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    Git(GitRepo),
    Plain(PlainDir),
}

impl Source {
    /// The directory's last component: the default name in the guest.
    pub fn name(&self) -> String {
        let top = match self {
            Source::Git(r) => &r.top,
            Source::Plain(p) => &p.dir,
        };
        top.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "workspace".to_string())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PlainDir {
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct Remote {
    pub name: String,
    pub url: String,
}

/// A repository's state as `git` on the host reports it.
#[derive(Debug, Clone, Serialize)]
pub struct GitRepo {
    pub top: PathBuf,
    pub head: String,
    /// The checked-out branch; `None` for a detached HEAD.
    pub branch: Option<String>,
    pub remotes: Vec<Remote>,
    /// `branch.<branch>.remote` and `.merge`.
    pub upstream: Option<(String, String)>,
    pub user_name: Option<String>,
    pub user_email: Option<String>,
    /// Paths of submodules (gitlinks in the index).
    pub submodules: Vec<String>,
}

/// Inspects `path` as the invoking user: a git repository (from anywhere
/// inside its working tree), or a plain directory.
pub fn inspect(path: &Path) -> Result<Source, WorkspaceError> {
    let meta = std::fs::metadata(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            WorkspaceError::NotFound(path.to_path_buf())
        } else {
            WorkspaceError::Io {
                what: format!("cannot read {}", path.display()),
                source: e,
            }
        }
    })?;
    if !meta.is_dir() {
        return Err(WorkspaceError::NotADirectory(path.to_path_buf()));
    }
    let dir = std::fs::canonicalize(path).map_err(WorkspaceError::io(format!(
        "cannot resolve {}",
        path.display()
    )))?;
    let args = ["rev-parse", "--is-bare-repository", "--show-toplevel"];
    let out = git::output(git::command(&dir, &args), &args)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("not a git repository") {
            return Ok(Source::Plain(PlainDir { dir }));
        }
        return Err(git::failed(&args, &out));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    if lines.next() == Some("true") {
        return Err(WorkspaceError::Bare(dir));
    }
    let top = match lines.next() {
        Some(t) if !t.is_empty() => PathBuf::from(t),
        // Inside .git: rev-parse answers but has no top level.
        _ => return Err(WorkspaceError::NotARepo(dir)),
    };
    inspect_repo(top)
}

fn inspect_repo(top: PathBuf) -> Result<Source, WorkspaceError> {
    if git::text(&top, &["rev-parse", "--is-shallow-repository"])? == "true" {
        return Err(WorkspaceError::Shallow(top));
    }
    let Some(head) = git::query(&top, &["rev-parse", "--verify", "-q", "HEAD^{commit}"])? else {
        return Err(WorkspaceError::UnbornHead(top));
    };
    let branch = git::query(&top, &["symbolic-ref", "-q", "--short", "HEAD"])?;
    let mut remotes = Vec::new();
    for name in git::text(&top, &["remote"])?.lines() {
        let key = format!("remote.{name}.url");
        let Some(url) = git::query(&top, &["config", "--get", &key])? else {
            continue;
        };
        if name.contains('\n') || url.contains('\n') {
            tracing::warn!(remote = name, "skipping a remote with a newline in it");
            continue;
        }
        remotes.push(Remote {
            name: name.to_string(),
            url,
        });
    }
    let upstream = match &branch {
        Some(b) => {
            let r = git::query(&top, &["config", "--get", &format!("branch.{b}.remote")])?;
            let m = git::query(&top, &["config", "--get", &format!("branch.{b}.merge")])?;
            r.zip(m)
                .filter(|(r, m)| !r.contains('\n') && !m.contains('\n'))
        }
        None => None,
    };
    let user_name = git::query(&top, &["config", "--get", "user.name"])?;
    let user_email = git::query(&top, &["config", "--get", "user.email"])?;
    let staged = git::run(&top, &["ls-files", "-s", "-z"])?;
    let submodules = staged
        .split(|b| *b == 0)
        .filter_map(|e| {
            let e = std::str::from_utf8(e).ok()?;
            let (meta, path) = e.split_once('\t')?;
            meta.starts_with("160000 ").then(|| path.to_string())
        })
        .collect();
    Ok(Source::Git(GitRepo {
        top,
        head,
        branch,
        remotes,
        upstream,
        user_name,
        user_email,
        submodules,
    }))
}
