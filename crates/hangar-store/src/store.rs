//! Opening the database: file permissions, pragmas, migrations.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::Connection;

use crate::error::{Result, StoreError};
use crate::schema::migrations;

/// How long a statement waits for another connection's write lock (another
/// process holding the same file) before failing with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The state database. `Send + Sync`; share it as `Arc<Store>`.
pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and migrates it to
    /// the current schema. The parent directory is created; the file is made
    /// readable by its owner only because it holds SSH host private keys.
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        let path = path.as_ref();
        // A missing parent is made 0700; an existing one keeps its mode (the
        // daemon sets the state dir's, see `hangar-daemon/src/confine.rs`).
        if let Some(parent) = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty() && !p.exists())
        {
            hangar_host::private::create_private_dir(parent).map_err(|source| {
                StoreError::Prepare {
                    path: parent.to_path_buf(),
                    source,
                }
            })?;
        }
        // Pre-created 0600 (never briefly readable): it holds SSH host
        // private keys. SQLite gives its -wal and -shm files the
        // database's mode.
        drop(
            hangar_host::private::append_private_file(path).map_err(|source| {
                StoreError::Prepare {
                    path: path.to_path_buf(),
                    source,
                }
            })?,
        );
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| StoreError::Prepare {
                path: path.to_path_buf(),
                source,
            },
        )?;
        Self::init(conn, &path.display().to_string())
    }

    /// A private in-memory database, for tests.
    pub fn open_in_memory() -> Result<Store> {
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Open {
            path: ":memory:".into(),
            source,
        })?;
        Self::init(conn, ":memory:")
    }

    fn init(mut conn: Connection, label: &str) -> Result<Store> {
        // WAL lets readers proceed while a write commits; in-memory databases
        // answer "memory", which is fine.
        let _mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        migrations()
            .to_latest(&mut conn)
            .map_err(|source| StoreError::Migrate {
                path: label.to_string(),
                source,
            })?;
        tracing::debug!(db = label, "state database open");
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    /// The connection. A panic while it was held cannot leave a transaction
    /// half-applied (dropping a `Transaction` rolls back), so a poisoned
    /// lock is safe to take over.
    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Store>();
    }

    #[test]
    fn open_creates_parent_dir_and_private_file_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/state.db");

        let store = Store::open(&path).unwrap();

        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let journal: String = store
            .conn()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(journal, "wal");
        let fk: i64 = store
            .conn()
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
    }

    #[test]
    fn the_dirs_it_makes_and_the_wal_and_shm_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/state.db");
        let store = Store::open(&path).unwrap();
        store
            .conn()
            .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        assert_eq!(mode(&dir.path().join("a/b")), 0o700);
        for f in ["state.db-wal", "state.db-shm"] {
            assert_eq!(mode(&dir.path().join("a/b").join(f)), 0o600, "{f}");
        }
    }

    #[test]
    fn reopening_an_existing_file_keeps_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        drop(Store::open(&path).unwrap());

        let reopened = Store::open(&path);

        assert!(reopened.is_ok());
    }
}
