//! The one error type every driver returns, so callers (the daemon's vm
//! subsystem, `doctor`) can match on what went wrong without knowing which
//! hypervisor was in use.

use std::path::PathBuf;

/// What went wrong while driving a VMM. Messages say what failed and what
/// to do; the underlying cause is carried as `#[source]`, not repeated.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// The VMM binary is missing or does not run.
    #[error("{kind} binary {path} is not usable: {hint}")]
    BinaryUnusable {
        kind: &'static str,
        path: PathBuf,
        hint: String,
        #[source]
        source: Option<std::io::Error>,
    },

    /// A file the VM needs (kernel, initrd, disk) is missing.
    #[error("{what} {path} does not exist; build or pull the image first")]
    MissingFile { what: &'static str, path: PathBuf },

    /// The network namespace named in the spec does not exist.
    #[error("network namespace {name} cannot be opened at /run/netns/{name}; create it first")]
    Netns {
        name: String,
        #[source]
        source: std::io::Error,
    },

    /// Preparing a file or directory in the VM directory failed.
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Spawning the VMM process failed.
    #[error("cannot spawn {kind} ({path})")]
    Spawn {
        kind: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The VMM process exited before it was ready.
    #[error("{kind} exited during start-up ({status}); its last output:\n{log_tail}")]
    EarlyExit {
        kind: &'static str,
        status: String,
        log_tail: String,
    },

    /// The VMM did not become ready in time.
    #[error("{kind} did not become ready within {secs:.1} s; its last output:\n{log_tail}")]
    StartTimeout {
        kind: &'static str,
        secs: f64,
        log_tail: String,
    },

    /// A QMP exchange failed.
    #[error("QMP {command} on {socket} failed: {message}")]
    Qmp {
        command: String,
        socket: PathBuf,
        message: String,
        #[source]
        source: Option<std::io::Error>,
    },

    /// Firecracker's API could not be reached or answered garbage.
    #[error("Firecracker API {method} {path} on {socket} failed: {message}")]
    FirecrackerTransport {
        method: &'static str,
        path: String,
        socket: PathBuf,
        message: String,
    },

    /// Firecracker rejected a request; `fault_message` is Firecracker's own text.
    #[error("Firecracker rejected {method} {path} (HTTP {status}): {fault_message}")]
    FirecrackerApi {
        method: &'static str,
        path: String,
        status: u16,
        fault_message: String,
    },

    /// Sending a signal to the VMM process failed.
    #[error("cannot send {signal} to VMM process {pid}")]
    Signal {
        signal: &'static str,
        pid: u32,
        #[source]
        source: nix::Error,
    },

    /// The VMM process did not exit even after SIGKILL.
    #[error("VMM process {pid} is still alive after SIGKILL")]
    Unkillable { pid: u32 },

    /// The VM id cannot be used as a jailer `--id`.
    #[error("VM id {id:?} cannot be used as a jail id: {reason}")]
    InvalidJailId { id: String, reason: &'static str },

    /// A writable file (disk, log, metrics) cannot be hard-linked into the
    /// jail because it lives on another filesystem; a copy would lose the
    /// guest's writes.
    #[error(
        "cannot hard-link writable {path} into the jail at {jail_path}: they are on different \
         filesystems; put the jailer's chroot base on the same filesystem as the VM directory"
    )]
    JailCrossDevice { path: PathBuf, jail_path: PathBuf },

    /// The driver cannot do what was asked (e.g. boot snapshots).
    #[error("the {kind} driver does not support {what}")]
    Unsupported {
        kind: &'static str,
        what: &'static str,
    },

    #[error("saving the VM state to {path} failed: {message}")]
    Snapshot { path: PathBuf, message: String },
}
