//! Errors of image building, import and per-VM boot data.

use std::path::PathBuf;

use hangar_host::ToolError;

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
        source: ToolError,
    },
    /// A build tool ran and failed; its error carries the command line,
    /// the exit status and the last lines it printed.
    #[error(transparent)]
    Command(ToolError),
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
    #[error("Guest agent {path} is not usable: {reason}")]
    BadAgent { path: PathBuf, reason: String },
    /// A layer entry that would write outside the staging root, or that
    /// cannot be applied; the import stops and its staging is removed.
    #[error("Layer {layer}: entry {entry:?} is refused: {reason}")]
    BadLayerEntry {
        layer: String,
        entry: String,
        reason: String,
    },
    /// An OCI/docker image (registry, archive) that cannot be used.
    #[error("{what}: {reason}")]
    BadOci { what: String, reason: String },
    /// A registry refused or failed a request.
    #[error("Registry {registry}: {reason}")]
    Registry { registry: String, reason: String },
    /// A registry wants credentials, or refused the ones sent.
    #[error("Registry {registry}: {reason}")]
    RegistryAuth { registry: String, reason: String },
    /// The finished tree cannot run as the image config asks.
    #[error("The image cannot run as its config says: {0}")]
    Unrunnable(String),
    #[error("The built tree at {path} lacks {what}; the recipe must install it")]
    MissingInTree { path: PathBuf, what: String },
}

impl ImageError {
    /// The error for a failed run of `program` from Debian package
    /// `package`: a cancelled run is [`ImageError::Cancelled`].
    pub(crate) fn tool(program: &str, package: &str) -> impl Fn(ToolError) -> Self {
        let (program, package) = (program.to_string(), package.to_string());
        move |e| match e {
            ToolError::Cancelled { .. } => ImageError::Cancelled,
            e if e.is_spawn() => ImageError::Spawn {
                program: program.clone(),
                package: package.clone(),
                source: e,
            },
            e => ImageError::Command(e),
        }
    }

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
