use std::path::PathBuf;

/// Why a workspace could not be inspected, packed or exported. The
/// messages are sentence-case and say what to do.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("{} does not exist", .0.display())]
    NotFound(PathBuf),
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("{} is not inside a git repository", .0.display())]
    NotARepo(PathBuf),
    #[error("{} is a bare repository: a workspace needs a working tree", .0.display())]
    Bare(PathBuf),
    #[error("the repository at {} has no commits yet (unborn HEAD): commit something first", .0.display())]
    UnbornHead(PathBuf),
    #[error("the repository at {} is shallow: its history is incomplete, so the VM's commits could not be checked against it; run `git fetch --unshallow` first (or import a full clone)", .0.display())]
    Shallow(PathBuf),
    #[error("git is not installed on this machine (it is needed to read the repository)")]
    NoGit(#[source] std::io::Error),
    #[error("`git {args}` failed: {stderr}")]
    Git { args: String, stderr: String },
    #[error("`git {args}` printed something unexpected: {what}")]
    GitOutput { args: String, what: String },
    #[error("--depth must be at least 1")]
    BadDepth,
    #[error("{0}")]
    Unsupported(String),
    #[error("the bundle from the VM is not acceptable: {0}")]
    BadBundle(String),
    #[error("branch {branch} has commits that the VM's work does not contain (it diverged); nothing was changed; use --force to overwrite it, or another --branch")]
    Diverged { branch: String },
    #[error("branch {branch} is checked out in {}: switch to another branch first, or export with --branch NAME", .repo.display())]
    CheckedOut { branch: String, repo: PathBuf },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl WorkspaceError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> WorkspaceError {
        let what = what.into();
        move |source| WorkspaceError::Io { what, source }
    }
}
