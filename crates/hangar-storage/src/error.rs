//! The one error type of this crate: every variant says what failed and what
//! to do about it.

use std::path::PathBuf;

/// Errors from creating, probing or removing per-VM disks.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The caller asked for a disk smaller than the image it is made from.
    #[error(
        "Disk size {requested} bytes is smaller than the image rootfs; ask for at least {minimum} bytes"
    )]
    SizeTooSmall { requested: u64, minimum: u64 },

    /// The filesystem holding the disks ran out of space (before or during the copy).
    #[error(
        "Not enough space in {}: need {}, free {}; free some space or use a reflink-capable filesystem",
        dir.display(), crate::space::human(*need), crate::space::human(*free)
    )]
    NoSpace { dir: PathBuf, need: u64, free: u64 },

    /// The destination already exists; we never overwrite a disk.
    #[error("Disk {} already exists; remove it first", path.display())]
    AlreadyExists { path: PathBuf },

    /// A filesystem operation on the image or the disk failed.
    #[error("Failed to {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// FICLONE was refused (filesystem without reflinks, or across filesystems).
    #[error(
        "Failed to reflink {} to {}; both must be on one reflink-capable filesystem (btrfs, xfs), or use the copy backend",
        src.display(), dest.display()
    )]
    Reflink {
        src: PathBuf,
        dest: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An e2fsprogs command could not be started.
    #[error("Failed to run `{command}`; is e2fsprogs installed?")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },

    /// An e2fsprogs command ran and failed.
    #[error("Command `{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },

    /// The reflink backend was asked for explicitly but the directory cannot do it.
    #[error(
        "The reflink disk backend is not usable in {}: {reason}; use `copy` or `auto`",
        dir.display()
    )]
    ReflinkUnsupported { dir: PathBuf, reason: String },

    /// A backend that is planned but not implemented.
    #[error("Disk backend {name:?} is not available yet; use auto, reflink or copy")]
    NotAvailable { name: String },

    /// A backend name nobody knows.
    #[error("Unknown disk backend {name:?}; expected auto, reflink or copy")]
    UnknownBackend { name: String },
}

impl StorageError {
    pub(crate) fn io(action: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        StorageError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}
