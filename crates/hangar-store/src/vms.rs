//! VM rows: the record, insertion together with its IP lease, state and
//! runtime updates, deletion.

use std::net::Ipv4Addr;

use hangar_api::VmState;
use ipnet::Ipv4Net;
use rusqlite::types::Type;
use rusqlite::{params, OptionalExtension, Row, TransactionBehavior};
use serde::Serialize;

use crate::error::{unique_violation, Result, StoreError};
use crate::leases::{leased_ips, lowest_free_ip, mac_for_ip};
use crate::store::Store;

/// A VM as the daemon persists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmRecord {
    pub id: String,
    pub name: String,
    pub state: VmState,
    pub image_name: String,
    pub image_digest: String,
    pub cpus: u32,
    pub memory_mib: u32,
    pub disk_bytes: u64,
    pub ip: Ipv4Addr,
    pub mac: String,
    pub driver: String,
    pub host_key_public: String,
    /// Never serialized: records end up in logs and debug dumps.
    #[serde(skip_serializing)]
    pub host_key_private: String,
    /// Set while a VMM process runs, so a restarted daemon can adopt it.
    pub runtime: Option<VmRuntime>,
    pub created_at: String,
    pub last_error: Option<String>,
}

/// What identifies a running VMM process across daemon restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmRuntime {
    pub pid: u32,
    /// Process start time (clock ticks since boot, `/proc/PID/stat` field
    /// 22), so a recycled pid is not mistaken for the VMM.
    pub start_time: u64,
    pub api_socket: String,
    pub tap: String,
}

const VM_COLUMNS: &str = "id, name, state, image_name, image_digest, cpus, memory_mib, \
     disk_bytes, ip, mac, driver, host_key_public, host_key_private, rt_pid, rt_start_time, \
     rt_api_socket, rt_tap, created_at, last_error";

fn conversion_error(
    idx: usize,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, e.into())
}

pub(crate) fn parse_ip(row: &Row<'_>, idx: usize) -> rusqlite::Result<Ipv4Addr> {
    let text: String = row.get(idx)?;
    text.parse().map_err(|e| conversion_error(idx, e))
}

fn vm_from_row(row: &Row<'_>) -> rusqlite::Result<VmRecord> {
    let state: String = row.get(2)?;
    let state = VmState::parse(&state)
        .ok_or_else(|| conversion_error(2, format!("unknown VM state {state:?}")))?;
    let runtime = match (
        row.get::<_, Option<u32>>(13)?,
        row.get::<_, Option<u64>>(14)?,
        row.get::<_, Option<String>>(15)?,
        row.get::<_, Option<String>>(16)?,
    ) {
        (Some(pid), Some(start_time), Some(api_socket), Some(tap)) => Some(VmRuntime {
            pid,
            start_time,
            api_socket,
            tap,
        }),
        _ => None,
    };
    Ok(VmRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        state,
        image_name: row.get(3)?,
        image_digest: row.get(4)?,
        cpus: row.get(5)?,
        memory_mib: row.get(6)?,
        disk_bytes: row.get(7)?,
        ip: parse_ip(row, 8)?,
        mac: row.get(9)?,
        driver: row.get(10)?,
        host_key_public: row.get(11)?,
        host_key_private: row.get(12)?,
        runtime,
        created_at: row.get(17)?,
        last_error: row.get(18)?,
    })
}

fn not_found_id(id: &str) -> StoreError {
    StoreError::not_found(format!("no VM with id {id:?}"))
}

impl Store {
    /// Stores a new VM with the lowest free address of `subnet` (not leased,
    /// not in `reserved`) and the MAC derived from it, in one transaction
    /// with its lease. `rec.ip` and `rec.mac` are ignored; the returned
    /// record holds what was stored.
    pub fn insert_vm_with_lease(
        &self,
        rec: &VmRecord,
        subnet: Ipv4Net,
        reserved: &[Ipv4Addr],
    ) -> Result<VmRecord> {
        let mut conn = self.conn();
        // IMMEDIATE takes the write lock up front, so another process cannot
        // lease the same address between our read and our insert.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let taken: bool = tx
            .prepare_cached("SELECT EXISTS(SELECT 1 FROM vms WHERE name = ?1)")?
            .query_row([&rec.name], |r| r.get(0))?;
        if taken {
            return Err(name_taken(&rec.name));
        }
        let ip = lowest_free_ip(subnet, &leased_ips(&tx)?, reserved).ok_or_else(|| {
            StoreError::conflict(format!(
                "no free IP address in {subnet}: remove a VM or widen [network] subnet"
            ))
        })?;
        let stored = VmRecord {
            ip,
            mac: mac_for_ip(ip),
            ..rec.clone()
        };
        let runtime = stored.runtime.as_ref();
        tx.prepare_cached(&format!(
            "INSERT INTO vms ({VM_COLUMNS}) VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)"
        ))?
        .execute(params![
            stored.id,
            stored.name,
            stored.state.as_str(),
            stored.image_name,
            stored.image_digest,
            stored.cpus,
            stored.memory_mib,
            stored.disk_bytes,
            stored.ip.to_string(),
            stored.mac,
            stored.driver,
            stored.host_key_public,
            stored.host_key_private,
            runtime.map(|r| r.pid),
            runtime.map(|r| r.start_time),
            runtime.map(|r| r.api_socket.as_str()),
            runtime.map(|r| r.tap.as_str()),
            stored.created_at,
            stored.last_error,
        ])
        .map_err(|e| vm_insert_error(e, &stored))?;
        tx.prepare_cached("INSERT INTO ip_leases (ip, vm_id) VALUES (?1, ?2)")?
            .execute(params![stored.ip.to_string(), stored.id])
            .map_err(|e| vm_insert_error(e, &stored))?;
        tx.commit()?;
        tracing::debug!(vm = %stored.name, ip = %stored.ip, "VM stored with lease");
        Ok(stored)
    }

    pub fn get_vm(&self, id: &str) -> Result<VmRecord> {
        self.conn()
            .prepare_cached(&format!("SELECT {VM_COLUMNS} FROM vms WHERE id = ?1"))?
            .query_row([id], vm_from_row)
            .optional()?
            .ok_or_else(|| not_found_id(id))
    }

    pub fn get_vm_by_name(&self, name: &str) -> Result<VmRecord> {
        self.conn()
            .prepare_cached(&format!("SELECT {VM_COLUMNS} FROM vms WHERE name = ?1"))?
            .query_row([name], vm_from_row)
            .optional()?
            .ok_or_else(|| StoreError::not_found(format!("no VM named {name:?}")))
    }

    /// All VMs, oldest first (ties by name), in one query.
    pub fn list_vms(&self) -> Result<Vec<VmRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {VM_COLUMNS} FROM vms ORDER BY created_at, name"
        ))?;
        let rows = stmt.query_map([], vm_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Sets the state and replaces `last_error` (None clears it).
    pub fn set_vm_state(&self, id: &str, state: VmState, last_error: Option<&str>) -> Result<()> {
        let n = self
            .conn()
            .prepare_cached("UPDATE vms SET state = ?1, last_error = ?2 WHERE id = ?3")?
            .execute(params![state.as_str(), last_error, id])?;
        if n == 0 {
            return Err(not_found_id(id));
        }
        Ok(())
    }

    /// Records (or, with None, forgets) the running VMM process.
    pub fn set_vm_runtime(&self, id: &str, runtime: Option<&VmRuntime>) -> Result<()> {
        let n = self
            .conn()
            .prepare_cached(
                "UPDATE vms SET rt_pid = ?1, rt_start_time = ?2, rt_api_socket = ?3, rt_tap = ?4 \
                 WHERE id = ?5",
            )?
            .execute(params![
                runtime.map(|r| r.pid),
                runtime.map(|r| r.start_time),
                runtime.map(|r| r.api_socket.as_str()),
                runtime.map(|r| r.tap.as_str()),
                id
            ])?;
        if n == 0 {
            return Err(not_found_id(id));
        }
        Ok(())
    }

    /// Deletes the VM and releases its lease, in one transaction.
    pub fn delete_vm(&self, id: &str) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.prepare_cached("DELETE FROM ip_leases WHERE vm_id = ?1")?
            .execute([id])?;
        let n = tx
            .prepare_cached("DELETE FROM vms WHERE id = ?1")?
            .execute([id])?;
        if n == 0 {
            return Err(not_found_id(id));
        }
        tx.commit()?;
        Ok(())
    }
}

fn name_taken(name: &str) -> StoreError {
    StoreError::conflict(format!("a VM named {name:?} already exists"))
}

/// Turns a unique violation while inserting a VM into a message naming the
/// field; anything else stays a database error.
fn vm_insert_error(e: rusqlite::Error, rec: &VmRecord) -> StoreError {
    match unique_violation(&e) {
        Some("vms.name") => name_taken(&rec.name),
        Some("vms.id") | Some("ip_leases.vm_id") => {
            StoreError::conflict(format!("a VM with id {:?} already exists", rec.id))
        }
        Some("vms.ip") | Some("ip_leases.ip") => {
            StoreError::conflict(format!("IP address {} is already leased", rec.ip))
        }
        _ => e.into(),
    }
}

#[cfg(test)]
mod tests;
