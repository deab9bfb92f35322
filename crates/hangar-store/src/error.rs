//! Errors of the store. `NotFound` and `Conflict` carry a finished message a
//! person can act on; the rest wrap the SQLite failure.

use std::path::PathBuf;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named row does not exist; `what` is the whole message.
    #[error("{what}")]
    NotFound { what: String },
    /// The write conflicts with existing rows (a taken name, a full subnet,
    /// an image in use); `what` is the whole message.
    #[error("{what}")]
    Conflict { what: String },
    /// A value passed in cannot be used, e.g. a timestamp SQLite cannot read.
    #[error("{what}")]
    Invalid { what: String },
    #[error("the state database failed; check that its disk is writable and not full")]
    Sqlite(#[source] rusqlite::Error),
    #[error("the state database holds a value hangar cannot read; the file may be corrupt or written by a newer hangar")]
    Corrupt(#[source] rusqlite::Error),
    #[error("could not encode a record as JSON for the state database")]
    Encode(#[source] serde_json::Error),
    #[error(
        "could not prepare the state database at {path}; check the state directory's permissions"
    )]
    Prepare {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not open the state database at {path}; check the path and its permissions")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("could not migrate the state database at {path} to the current schema; restore a backup or move the file away")]
    Migrate {
        path: String,
        #[source]
        source: rusqlite_migration::Error,
    },
}

impl StoreError {
    pub(crate) fn not_found(what: impl Into<String>) -> Self {
        StoreError::NotFound { what: what.into() }
    }
    pub(crate) fn conflict(what: impl Into<String>) -> Self {
        StoreError::Conflict { what: what.into() }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::IntegralValueOutOfRange(..) => StoreError::Corrupt(e),
            other => StoreError::Sqlite(other),
        }
    }
}

/// The `table.column` named by a UNIQUE or PRIMARY KEY violation, so callers
/// can turn it into a message about the field.
pub(crate) fn unique_violation(e: &rusqlite::Error) -> Option<&str> {
    use rusqlite::ffi;
    match e {
        rusqlite::Error::SqliteFailure(f, Some(msg))
            if f.extended_code == ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            msg.strip_prefix("UNIQUE constraint failed: ")
        }
        _ => None,
    }
}
