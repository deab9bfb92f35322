//! Operation rows, so `GET /v1/operations/{id}` still answers after a daemon
//! restart. Progress, result and error are JSON columns: they are only ever
//! read back whole.

use hangar_api::{ApiError, OpKind, OpState, Operation, Progress};
use rusqlite::types::Type;
use rusqlite::{params, OptionalExtension, Row};

use crate::error::{unique_violation, Result, StoreError};
use crate::store::Store;
use hangar_host::time::now_utc;

const OP_COLUMNS: &str =
    "id, kind, target, state, progress_json, result_json, error_json, created_at, updated_at";

fn conversion_error(
    idx: usize,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, e.into())
}

fn json_col<T: serde::de::DeserializeOwned>(
    row: &Row<'_>,
    idx: usize,
) -> rusqlite::Result<Option<T>> {
    row.get::<_, Option<String>>(idx)?
        .map(|s| serde_json::from_str(&s).map_err(|e| conversion_error(idx, e)))
        .transpose()
}

fn op_from_row(row: &Row<'_>) -> rusqlite::Result<Operation> {
    let kind: String = row.get(1)?;
    let state: String = row.get(3)?;
    Ok(Operation {
        id: row.get(0)?,
        kind: OpKind::parse(&kind)
            .ok_or_else(|| conversion_error(1, format!("unknown operation kind {kind:?}")))?,
        target: row.get(2)?,
        state: OpState::parse(&state)
            .ok_or_else(|| conversion_error(3, format!("unknown operation state {state:?}")))?,
        progress: json_col::<Progress>(row, 4)?.unwrap_or_default(),
        result: json_col(row, 5)?,
        error: json_col(row, 6)?,
        created_at: row.get(7)?,
        updated_at: row.get(8)?,
    })
}

struct EncodedOp {
    progress: String,
    result: Option<String>,
    error: Option<String>,
}

fn encode(op: &Operation) -> Result<EncodedOp> {
    Ok(EncodedOp {
        progress: serde_json::to_string(&op.progress).map_err(StoreError::Encode)?,
        result: op
            .result
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(StoreError::Encode)?,
        error: op
            .error
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(StoreError::Encode)?,
    })
}

fn not_found(id: &str) -> StoreError {
    StoreError::not_found(format!("no operation with id {id:?}"))
}

impl Store {
    pub fn insert_op(&self, op: &Operation) -> Result<()> {
        let enc = encode(op)?;
        self.conn()
            .prepare_cached(&format!(
                "INSERT INTO operations ({OP_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ))?
            .execute(params![
                op.id,
                op.kind.as_str(),
                op.target,
                op.state.as_str(),
                enc.progress,
                enc.result,
                enc.error,
                op.created_at,
                op.updated_at
            ])
            .map_err(|e| match unique_violation(&e) {
                Some("operations.id") => {
                    StoreError::conflict(format!("an operation with id {:?} already exists", op.id))
                }
                _ => e.into(),
            })?;
        Ok(())
    }

    /// Replaces state, progress, result, error and updated_at of the stored
    /// operation (id, kind, target and created_at never change).
    pub fn update_op(&self, op: &Operation) -> Result<()> {
        let enc = encode(op)?;
        let n = self
            .conn()
            .prepare_cached(
                "UPDATE operations SET state = ?1, progress_json = ?2, result_json = ?3, \
                 error_json = ?4, updated_at = ?5 WHERE id = ?6",
            )?
            .execute(params![
                op.state.as_str(),
                enc.progress,
                enc.result,
                enc.error,
                op.updated_at,
                op.id
            ])?;
        if n == 0 {
            return Err(not_found(&op.id));
        }
        Ok(())
    }

    pub fn get_op(&self, id: &str) -> Result<Operation> {
        self.conn()
            .prepare_cached(&format!(
                "SELECT {OP_COLUMNS} FROM operations WHERE id = ?1"
            ))?
            .query_row([id], op_from_row)
            .optional()?
            .ok_or_else(|| not_found(id))
    }

    /// All operations, newest first.
    pub fn list_ops(&self) -> Result<Vec<Operation>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {OP_COLUMNS} FROM operations \
             ORDER BY julianday(created_at) DESC, created_at DESC, id DESC"
        ))?;
        let rows = stmt.query_map([], op_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Deletes finished operations last updated before `finished_before`
    /// (RFC 3339). Running ones are kept whatever their age. Returns how
    /// many were deleted.
    pub fn prune_ops(&self, finished_before: &str) -> Result<usize> {
        let conn = self.conn();
        let valid: bool = conn
            .prepare_cached("SELECT julianday(?1) IS NOT NULL")?
            .query_row([finished_before], |r| r.get(0))?;
        if !valid {
            return Err(StoreError::Invalid {
                what: format!("{finished_before:?} is not an RFC 3339 timestamp"),
            });
        }
        let n = conn
            .prepare_cached(
                "DELETE FROM operations WHERE state != 'running' \
                 AND julianday(updated_at) < julianday(?1)",
            )?
            .execute([finished_before])?;
        Ok(n)
    }

    /// Marks every operation still `running` as failed with an internal
    /// error carrying `message`. Called at daemon start: no work survives
    /// the process that ran it. Returns how many were marked.
    pub fn fail_running_ops(&self, message: &str) -> Result<usize> {
        let error =
            serde_json::to_string(&ApiError::internal(message)).map_err(StoreError::Encode)?;
        let n = self
            .conn()
            .prepare_cached(
                "UPDATE operations SET state = 'failed', error_json = ?1, updated_at = ?2 \
                 WHERE state = 'running'",
            )?
            .execute(params![error, now_utc()])?;
        if n > 0 {
            tracing::warn!(
                count = n,
                "operations left running by a previous daemon marked failed"
            );
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hangar_api::ErrorKind;

    fn op(id: &str, state: OpState, created: &str, updated: &str) -> Operation {
        Operation {
            id: id.into(),
            kind: OpKind::VmCreate,
            target: "dev".into(),
            state,
            progress: Progress {
                phase: "boot".into(),
                current: Some(3),
                total: Some(10),
                unit: Some("steps".into()),
                detail: None,
            },
            result: None,
            error: None,
            created_at: created.into(),
            updated_at: updated.into(),
        }
    }

    /// The ids `list_ops` answers, in its order.
    fn op_ids(store: &Store) -> Vec<String> {
        store
            .list_ops()
            .unwrap()
            .into_iter()
            .map(|o| o.id)
            .collect()
    }

    const T0: &str = "2024-01-01T00:00:00.000Z";
    const T1: &str = "2024-01-01T01:00:00.000Z";
    const T2: &str = "2024-01-01T02:00:00.000Z";

    #[test]
    fn inserted_op_reads_back_equal() {
        let store = Store::open_in_memory().unwrap();
        let o = op("op-1", OpState::Running, T0, T0);

        store.insert_op(&o).unwrap();

        assert_eq!(store.get_op("op-1").unwrap(), o);
    }

    #[test]
    fn insert_with_taken_id_returns_conflict() {
        let store = Store::open_in_memory().unwrap();
        store
            .insert_op(&op("op-1", OpState::Running, T0, T0))
            .unwrap();

        let err = store
            .insert_op(&op("op-1", OpState::Running, T0, T0))
            .unwrap_err();

        assert_eq!(
            err.to_string(),
            r#"an operation with id "op-1" already exists"#
        );
    }

    #[test]
    fn update_op_replaces_state_result_and_error() {
        let store = Store::open_in_memory().unwrap();
        store
            .insert_op(&op("op-1", OpState::Running, T0, T0))
            .unwrap();
        let mut done = op("op-1", OpState::Failed, T0, T1);
        done.result = Some(serde_json::json!({"name": "dev"}));
        done.error = Some(ApiError::timeout("no SSH"));

        store.update_op(&done).unwrap();

        assert_eq!(store.get_op("op-1").unwrap(), done);
    }

    #[test]
    fn update_unknown_op_returns_not_found() {
        let store = Store::open_in_memory().unwrap();

        let err = store
            .update_op(&op("op-x", OpState::Failed, T0, T1))
            .unwrap_err();

        assert!(matches!(err, StoreError::NotFound { .. }));
    }

    #[test]
    fn get_unknown_op_returns_not_found() {
        let store = Store::open_in_memory().unwrap();

        let err = store.get_op("op-x").unwrap_err();

        assert_eq!(err.to_string(), r#"no operation with id "op-x""#);
    }

    #[test]
    fn list_ops_is_newest_first() {
        let store = Store::open_in_memory().unwrap();
        store
            .insert_op(&op("op-b", OpState::Running, T1, T1))
            .unwrap();
        store
            .insert_op(&op("op-c", OpState::Running, T2, T2))
            .unwrap();
        store
            .insert_op(&op("op-a", OpState::Running, T0, T0))
            .unwrap();

        let ids = op_ids(&store);

        assert_eq!(ids, ["op-c", "op-b", "op-a"]);
    }

    #[test]
    fn prune_deletes_only_old_finished_ops() {
        let store = Store::open_in_memory().unwrap();
        store
            .insert_op(&op("old-done", OpState::Succeeded, T0, T0))
            .unwrap();
        store
            .insert_op(&op("old-running", OpState::Running, T0, T0))
            .unwrap();
        store
            .insert_op(&op("new-done", OpState::Cancelled, T0, T2))
            .unwrap();

        let n = store.prune_ops(T1).unwrap();

        assert_eq!(n, 1);
        let ids = op_ids(&store);
        assert!(!ids.contains(&"old-done".to_string()));
        assert_eq!(ids.len(), 2);
    }

    #[test]
    fn prune_compares_times_not_text() {
        // Same instant written with and without fractional seconds and with
        // an offset: text comparison would get these wrong.
        let store = Store::open_in_memory().unwrap();
        store
            .insert_op(&op("a", OpState::Failed, T0, "2024-01-01T00:59:59.5Z"))
            .unwrap();
        store
            .insert_op(&op("b", OpState::Failed, T0, "2024-01-01T02:30:00+02:00"))
            .unwrap();

        let n = store.prune_ops("2024-01-01T01:00:00Z").unwrap();

        assert_eq!(n, 2);
    }

    #[test]
    fn prune_with_unreadable_time_returns_invalid() {
        let store = Store::open_in_memory().unwrap();

        let err = store.prune_ops("yesterday").unwrap_err();

        assert!(matches!(err, StoreError::Invalid { .. }));
    }

    #[test]
    fn fail_running_ops_marks_only_running_ones_failed() {
        let store = Store::open_in_memory().unwrap();
        store
            .insert_op(&op("run", OpState::Running, T0, T0))
            .unwrap();
        store
            .insert_op(&op("done", OpState::Succeeded, T0, T0))
            .unwrap();

        let n = store
            .fail_running_ops("the daemon restarted while this operation ran")
            .unwrap();

        assert_eq!(n, 1);
        let failed = store.get_op("run").unwrap();
        assert_eq!(failed.state, OpState::Failed);
        let err = failed.error.unwrap();
        assert_eq!(err.kind, ErrorKind::Internal);
        assert_eq!(err.message, "the daemon restarted while this operation ran");
        assert_ne!(failed.updated_at, T0);
        assert_eq!(store.get_op("done").unwrap().state, OpState::Succeeded);
    }

    #[test]
    fn ops_persist_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let o = op("op-1", OpState::Succeeded, T0, T1);
        Store::open(&path).unwrap().insert_op(&o).unwrap();

        let store = Store::open(&path).unwrap();

        assert_eq!(store.get_op("op-1").unwrap(), o);
    }
}
