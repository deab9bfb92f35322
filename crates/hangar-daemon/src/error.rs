//! The daemon's error type. Services return it with the failing library's
//! error as `#[source]`; only the API layer (`api/error.rs`) turns it into
//! the wire `ApiError`, choosing the kind by variant and joining the cause
//! chain into one message there.

use std::path::PathBuf;

use hangar_disk::StorageError;
use hangar_guest::GuestError;
use hangar_image::ImageError;
use hangar_net::NetError;
use hangar_store::StoreError;
use hangar_vmm::VmmError;

pub type Result<T, E = DaemonError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A request value is malformed or out of range; the message is whole.
    #[error("{0}")]
    Invalid(String),
    /// The named thing does not exist; the message is whole.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state; the message is whole.
    #[error("{0}")]
    Conflict(String),
    /// The host lacks something the request needs (a VMM binary, KVM).
    #[error("{0}")]
    Unavailable(String),
    /// The operation was cancelled before it finished.
    #[error("{0}")]
    Cancelled(String),
    /// A client stopped sending (an upload stalled); the message is whole.
    #[error("{0}")]
    Timeout(String),
    /// The state database said no, or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The disk backend failed (running out of space among others).
    #[error("{context}")]
    Disk {
        context: String,
        #[source]
        source: StorageError,
    },
    /// The VMM could not be started or driven.
    #[error("{context}")]
    Vmm {
        context: String,
        #[source]
        source: VmmError,
    },
    /// The VM network (TAP pool) failed.
    #[error("{context}")]
    Net {
        context: String,
        #[source]
        source: NetError,
    },
    /// Building, reading or writing image files failed.
    #[error("{context}")]
    Image {
        context: String,
        #[source]
        source: Box<ImageError>,
    },
    /// Files a client asked to register as an image were refused.
    #[error("{context}")]
    ImageRejected {
        context: String,
        #[source]
        source: Box<ImageError>,
    },
    /// A guest cannot be reached over SSH.
    #[error("{context}")]
    GuestUnreachable {
        context: String,
        #[source]
        source: Box<GuestError>,
    },
    /// Any other failure of the guest library (e.g. key generation).
    #[error("{context}")]
    Guest {
        context: String,
        #[source]
        source: Box<GuestError>,
    },
    /// The guest did not answer SSH within the boot timeout. The console
    /// log path is a field so a failed create can point it at the kept log.
    #[error(
        "VM {name:?} did not answer SSH within {secs}s: {source}; its serial console log (root only: read it with sudo) is {}{console_tail}",
        serial_log.display()
    )]
    BootTimeout {
        name: String,
        secs: u64,
        serial_log: PathBuf,
        /// The last console lines (see `console_tail`), or nothing.
        console_tail: String,
        #[source]
        source: Box<GuestError>,
    },
    /// A boot snapshot could not be saved.
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot_service::SnapshotError),
    /// A file operation of the daemon's own failed.
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A blocking task died (it panicked).
    #[error("{what} task failed")]
    Task {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

impl DaemonError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        DaemonError::Invalid(msg.into())
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        DaemonError::NotFound(msg.into())
    }
    pub fn conflict(msg: impl Into<String>) -> Self {
        DaemonError::Conflict(msg.into())
    }
    pub fn unavailable(msg: impl Into<String>) -> Self {
        DaemonError::Unavailable(msg.into())
    }
    pub fn cancelled(msg: impl Into<String>) -> Self {
        DaemonError::Cancelled(msg.into())
    }
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        DaemonError::Io {
            context: context.into(),
            source,
        }
    }
    pub fn disk(context: impl Into<String>, source: StorageError) -> Self {
        DaemonError::Disk {
            context: context.into(),
            source,
        }
    }
    pub fn vmm(context: impl Into<String>, source: VmmError) -> Self {
        DaemonError::Vmm {
            context: context.into(),
            source,
        }
    }
    pub fn net(context: impl Into<String>, source: NetError) -> Self {
        DaemonError::Net {
            context: context.into(),
            source,
        }
    }
    pub fn image(context: impl Into<String>, source: ImageError) -> Self {
        DaemonError::Image {
            context: context.into(),
            source: Box::new(source),
        }
    }

    pub fn is_cancelled(&self) -> bool {
        matches!(self, DaemonError::Cancelled(_))
    }

    /// The same error (same kind for the API) with `note` added to its
    /// message; errors that print only their source get it as context.
    pub fn with_note(self, note: &str) -> Self {
        use DaemonError::*;
        let add = |m: String| format!("{m}; {note}");
        match self {
            Invalid(m) => Invalid(add(m)),
            NotFound(m) => NotFound(add(m)),
            Conflict(m) => Conflict(add(m)),
            Unavailable(m) => Unavailable(add(m)),
            Cancelled(m) => Cancelled(add(m)),
            Timeout(m) => Timeout(add(m)),
            Disk { context, source } => Disk {
                context: add(context),
                source,
            },
            Vmm { context, source } => Vmm {
                context: add(context),
                source,
            },
            Net { context, source } => Net {
                context: add(context),
                source,
            },
            Image { context, source } => Image {
                context: add(context),
                source,
            },
            ImageRejected { context, source } => ImageRejected {
                context: add(context),
                source,
            },
            GuestUnreachable { context, source } => GuestUnreachable {
                context: add(context),
                source,
            },
            Guest { context, source } => Guest {
                context: add(context),
                source,
            },
            Io { context, source } => Io {
                context: add(context),
                source,
            },
            // Their text is their source's: the note would hide nothing,
            // but would change the kind; kept as they are.
            e @ (Store(_) | Snapshot(_) | Task { .. } | BootTimeout { .. }) => {
                tracing::warn!(error = %e, note, "an error kept without its note");
                e
            }
        }
    }
}

/// "error: cause: cause" — the whole chain on one line (the CLI shows a
/// message as is). A cause whose text is already in the line (an error
/// that prints its source) is not repeated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        src = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_keeps_the_error_s_kind_and_its_cause() {
        let e =
            DaemonError::cancelled("the promotion was cancelled").with_note("VM dev is in error");
        assert!(e.is_cancelled());
        assert_eq!(
            e.to_string(),
            "the promotion was cancelled; VM dev is in error"
        );
        let e = DaemonError::io("cannot copy", std::io::Error::other("disk full")).with_note("n");
        assert!(matches!(e, DaemonError::Io { .. }));
        assert_eq!(error_chain(&e), "cannot copy; n: disk full");
    }

    #[test]
    fn error_chain_joins_causes_once() {
        let e = DaemonError::io("create", std::io::Error::other("disk full"));
        assert_eq!(error_chain(&e), "create: disk full");
    }

    #[test]
    fn error_chain_does_not_repeat_a_cause_the_error_prints() {
        let e = DaemonError::BootTimeout {
            name: "a".into(),
            secs: 5,
            serial_log: "/s.log".into(),
            console_tail: String::new(),
            source: Box::new(GuestError::ConnectTimeout {
                addr: "10.0.0.2:22".parse().unwrap(),
                limit: std::time::Duration::from_secs(5),
            }),
        };
        let text = error_chain(&e);
        assert_eq!(text, e.to_string(), "{text}");
    }
}
