//! The wire side of errors: a [`DaemonError`] becomes an [`ApiError`] here
//! and only here. The kind follows the variant (and, for store and disk
//! failures, the library's own variant); the message is the whole cause
//! chain on one line, as the CLI shows it.

use hangar_api::{ApiError, ErrorKind};
use hangar_disk::StorageError;
use hangar_store::StoreError;

use crate::error::{error_chain, DaemonError};

impl From<DaemonError> for ApiError {
    fn from(e: DaemonError) -> Self {
        ApiError::new(kind_of(&e), error_chain(&e))
    }
}

fn kind_of(e: &DaemonError) -> ErrorKind {
    match e {
        DaemonError::Invalid(_) | DaemonError::ImageRejected { .. } => ErrorKind::Invalid,
        DaemonError::NotFound(_) => ErrorKind::NotFound,
        DaemonError::Conflict(_) => ErrorKind::Conflict,
        DaemonError::Unavailable(_) | DaemonError::GuestUnreachable { .. } => {
            ErrorKind::Unavailable
        }
        DaemonError::Cancelled(_) => ErrorKind::Cancelled,
        DaemonError::BootTimeout { .. } | DaemonError::Timeout(_) => ErrorKind::Timeout,
        DaemonError::Store(s) => store_kind(s),
        // The host is full: not a bug, and the fix is the user's.
        DaemonError::Disk {
            source: StorageError::NoSpace { .. },
            ..
        } => ErrorKind::Unavailable,
        DaemonError::Disk { .. }
        | DaemonError::Vmm { .. }
        | DaemonError::Net { .. }
        | DaemonError::Image { .. }
        | DaemonError::Guest { .. }
        | DaemonError::Snapshot(_)
        | DaemonError::Io { .. }
        | DaemonError::Task { .. } => ErrorKind::Internal,
    }
}

/// Not-found, conflict and invalid keep their meaning; any other store
/// failure is internal.
pub fn store_kind(e: &StoreError) -> ErrorKind {
    match e {
        StoreError::NotFound { .. } => ErrorKind::NotFound,
        StoreError::Conflict { .. } => ErrorKind::Conflict,
        StoreError::Invalid { .. } => ErrorKind::Invalid,
        _ => ErrorKind::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_row_is_not_found_with_the_store_message() {
        let e = DaemonError::from(StoreError::NotFound {
            what: "no VM named \"x\"".into(),
        });
        assert_eq!(ApiError::from(e), ApiError::not_found("no VM named \"x\""));
    }

    #[test]
    fn a_database_failure_is_internal_with_its_cause() {
        let e = DaemonError::from(StoreError::Prepare {
            path: "/state/state.db".into(),
            source: std::io::Error::other("read-only file system"),
        });
        let api = ApiError::from(e);
        assert_eq!(api.kind, ErrorKind::Internal);
        assert!(
            api.message
                .starts_with("could not prepare the state database at /state/state.db")
                && api.message.ends_with(": read-only file system"),
            "{}",
            api.message
        );
    }

    #[test]
    fn a_full_disk_is_unavailable_and_other_disk_failures_internal() {
        let full = DaemonError::disk(
            "cannot create the VM disk",
            StorageError::NoSpace {
                dir: "/vms".into(),
                need: 2 << 30,
                free: 1 << 20,
            },
        );
        let other = DaemonError::disk(
            "cannot create the VM disk",
            StorageError::AlreadyExists {
                path: "/vms/a/disk.ext4".into(),
            },
        );

        let full = ApiError::from(full);
        assert_eq!(full.kind, ErrorKind::Unavailable);
        assert!(
            full.message
                .starts_with("cannot create the VM disk: Not enough space in /vms"),
            "{}",
            full.message
        );
        assert_eq!(ApiError::from(other).kind, ErrorKind::Internal);
    }

    #[test]
    fn a_boot_timeout_is_a_timeout_naming_the_console_log() {
        let e = DaemonError::BootTimeout {
            name: "dev".into(),
            secs: 90,
            serial_log: "/state/logs/dev.serial.log".into(),
            console_tail: " (the console printed nothing)".into(),
            source: Box::new(hangar_guest::GuestError::InvalidEnvName { name: "x".into() }),
        };
        let api = ApiError::from(e);
        assert_eq!(api.kind, ErrorKind::Timeout);
        assert!(
            api.message.contains("did not answer SSH within 90s"),
            "{}",
            api.message
        );
        assert!(
            api.message
                .contains("/state/logs/dev.serial.log (the console"),
            "{}",
            api.message
        );
    }
}
