//! Session rows: what the daemon last heard from a VM's guest agent about
//! each session, as JSON the daemon owns. The agent holds the live state;
//! these rows answer while the VM is stopped or unreachable and keep a
//! session's metadata across daemon restarts.

use rusqlite::{params, TransactionBehavior};

use crate::error::Result;
use crate::store::Store;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub vm_id: String,
    pub name: String,
    pub info_json: String,
    pub updated_at: String,
}

impl Store {
    pub fn upsert_session(&self, rec: &SessionRecord) -> Result<()> {
        let conn = self.conn();
        conn.prepare_cached(
            "INSERT INTO sessions (vm_id, name, info_json, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (vm_id, name) DO UPDATE SET info_json = ?3, updated_at = ?4",
        )?
        .execute(params![rec.vm_id, rec.name, rec.info_json, rec.updated_at])?;
        Ok(())
    }

    /// Makes the VM's rows exactly `recs` (what its agent reports), in one
    /// transaction.
    pub fn replace_sessions(&self, vm_id: &str, recs: &[SessionRecord]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM sessions WHERE vm_id = ?1", params![vm_id])?;
        for r in recs {
            tx.execute(
                "INSERT INTO sessions (vm_id, name, info_json, updated_at) VALUES (?1, ?2, ?3, ?4)",
                params![vm_id, r.name, r.info_json, r.updated_at],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The VM's rows, by name.
    pub fn list_sessions(&self, vm_id: &str) -> Result<Vec<SessionRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT vm_id, name, info_json, updated_at FROM sessions WHERE vm_id = ?1 ORDER BY name",
        )?;
        let rows = stmt.query_map(params![vm_id], |r| {
            Ok(SessionRecord {
                vm_id: r.get(0)?,
                name: r.get(1)?,
                info_json: r.get(2)?,
                updated_at: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    pub fn delete_session(&self, vm_id: &str, name: &str) -> Result<()> {
        self.conn()
            .prepare_cached("DELETE FROM sessions WHERE vm_id = ?1 AND name = ?2")?
            .execute(params![vm_id, name])?;
        Ok(())
    }
}
