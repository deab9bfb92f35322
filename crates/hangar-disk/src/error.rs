//! The one error type of this crate: every variant says what failed and what
//! to do about it.

use std::path::PathBuf;

use hangar_host::ToolError;

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
        dir.display(), hangar_host::bytes::human_bytes(*need), hangar_host::bytes::human_bytes(*free)
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

    /// A host tool (e2fsprogs, losetup, dmsetup) could not be started.
    #[error("Failed to run `{}`; is {package} installed?", .source.command())]
    Spawn {
        /// The Debian package that provides the tool.
        package: &'static str,
        #[source]
        source: ToolError,
    },

    /// A host tool ran and failed (or hung past its time limit).
    #[error(transparent)]
    Command(ToolError),

    /// A host tool printed something we could not read.
    #[error("Could not parse the output of `{command}`")]
    Parse {
        command: String,
        #[source]
        source: serde_json::Error,
    },

    /// The reflink backend was asked for explicitly but the directory cannot do it.
    #[error(
        "The reflink disk backend is not usable in {}: {reason}; use `copy` or `auto`",
        dir.display()
    )]
    ReflinkUnsupported { dir: PathBuf, reason: String },

    /// The dm backend was asked for explicitly but this host cannot do it.
    #[error("Device-mapper is not available on this host ({reason}): use backend = \"reflink\" or \"copy\"")]
    DmUnavailable { reason: String },

    /// The image length is not a whole number of 512-byte sectors, so
    /// device-mapper cannot map it exactly.
    #[error(
        "Image rootfs {} is {len} bytes, not a multiple of 512; the dm backend needs a sector-aligned image (rebuild it, or use reflink or copy)",
        path.display()
    )]
    ImageNotSectorAligned { path: PathBuf, len: u64 },

    /// A per-VM COW disk exists but its size record next to it is missing or
    /// unreadable, so the snapshot cannot be rebuilt with the right size.
    #[error(
        "The dm disk {} has no valid size record ({}); recreate the VM disk",
        disk.display(), record.display()
    )]
    DmRecord {
        disk: PathBuf,
        record: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A backend name nobody knows.
    #[error("Unknown disk backend {name:?}; expected auto, dm, reflink or copy")]
    UnknownBackend { name: String },
}

impl StorageError {
    /// The error for a failed run of a tool from Debian package `package`.
    pub(crate) fn tool(package: &'static str) -> impl Fn(ToolError) -> Self {
        move |e| {
            if e.is_spawn() {
                StorageError::Spawn { package, source: e }
            } else {
                StorageError::Command(e)
            }
        }
    }

    pub(crate) fn io(action: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        StorageError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}
