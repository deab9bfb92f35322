//! Errors of image building, import and per-VM boot data.

use std::path::PathBuf;

/// Everything that can go wrong in this crate. Messages say what failed and,
/// where there is one, what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("Cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot start `{program}`; is it installed? (apt-get install {package})")]
    Spawn {
        program: String,
        package: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed with {status}: {last_lines}")]
    CommandFailed {
        command: String,
        status: String,
        last_lines: String,
    },
    #[error("The image build was cancelled")]
    Cancelled,
    #[error("Kernel {path} is not usable: {reason}")]
    BadKernel { path: PathBuf, reason: String },
    #[error("Root filesystem {path} is not usable: {reason}")]
    BadRootfs { path: PathBuf, reason: String },
    #[error("Image manifest {path} is invalid; remove the image directory and pull it again")]
    BadManifest {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("Invalid guest identity: {0}")]
    BadIdentity(String),
    #[error("The built tree at {path} lacks {what}; the recipe must install it")]
    MissingInTree { path: PathBuf, what: String },
}

impl ImageError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        ImageError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
