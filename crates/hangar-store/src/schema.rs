//! The schema, as an append-only list of migrations: a later issue adds a
//! new `M::up` at the end and never edits an applied one.

use rusqlite_migration::{Migrations, M};

const MIGRATIONS: &[M<'static>] = &[
    // 1: VMs, IP leases, images, operations.
    M::up(
        r#"
CREATE TABLE vms (
    id               TEXT PRIMARY KEY NOT NULL,
    name             TEXT NOT NULL UNIQUE,
    state            TEXT NOT NULL,
    image_name       TEXT NOT NULL,
    image_digest     TEXT NOT NULL,
    cpus             INTEGER NOT NULL,
    memory_mib       INTEGER NOT NULL,
    disk_bytes       INTEGER NOT NULL,
    ip               TEXT NOT NULL UNIQUE,
    mac              TEXT NOT NULL,
    driver           TEXT NOT NULL,
    host_key_public  TEXT NOT NULL,
    host_key_private TEXT NOT NULL,
    rt_pid           INTEGER,
    rt_start_time    INTEGER,
    rt_api_socket    TEXT,
    rt_tap           TEXT,
    created_at       TEXT NOT NULL,
    last_error       TEXT
) STRICT;
CREATE INDEX vms_by_created ON vms(created_at, name);
CREATE INDEX vms_by_image ON vms(image_digest);

CREATE TABLE ip_leases (
    ip    TEXT PRIMARY KEY NOT NULL,
    vm_id TEXT NOT NULL UNIQUE REFERENCES vms(id) ON DELETE CASCADE
) STRICT;

-- name is NULL once a newer digest took the name over (a dangling image
-- that VMs may still use).
CREATE TABLE images (
    digest        TEXT PRIMARY KEY NOT NULL,
    name          TEXT UNIQUE,
    source        TEXT NOT NULL,
    dir           TEXT NOT NULL,
    rootfs_bytes  INTEGER NOT NULL,
    created_at    TEXT NOT NULL,
    manifest_json TEXT NOT NULL
) STRICT;

CREATE TABLE operations (
    id            TEXT PRIMARY KEY NOT NULL,
    kind          TEXT NOT NULL,
    target        TEXT NOT NULL,
    state         TEXT NOT NULL,
    progress_json TEXT NOT NULL,
    result_json   TEXT,
    error_json    TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
) STRICT;
CREATE INDEX operations_by_state ON operations(state, updated_at);
"#,
    ),
    // 2: long-lived sessions, as last seen from the guest agent (which
    // holds the live state); they go with their VM.
    M::up(
        r#"
CREATE TABLE sessions (
    vm_id      TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    info_json  TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (vm_id, name)
) STRICT;
"#,
    ),
];

/// All migrations, oldest first.
pub fn migrations() -> Migrations<'static> {
    Migrations::from_slice(MIGRATIONS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_validate() {
        assert!(migrations().validate().is_ok());
    }
}
