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
    // 3: several names per image. Names move to their own table (one row
    // per name, pointing at a digest); an image whose last name goes is
    // removed with it. Existing names and dangling images are kept. The
    // names are set aside before the old table is dropped, and the new
    // table's foreign key is made after the rename, so no cascade runs.
    M::up(
        r#"
CREATE TABLE images_v3 (
    digest        TEXT PRIMARY KEY NOT NULL,
    source        TEXT NOT NULL,
    dir           TEXT NOT NULL,
    rootfs_bytes  INTEGER NOT NULL,
    created_at    TEXT NOT NULL,
    manifest_json TEXT NOT NULL
) STRICT;
INSERT INTO images_v3 (digest, source, dir, rootfs_bytes, created_at, manifest_json)
    SELECT digest, source, dir, rootfs_bytes, created_at, manifest_json FROM images;
CREATE TABLE image_names_v2 AS
    SELECT name, digest, created_at FROM images WHERE name IS NOT NULL;
DROP TABLE images;
ALTER TABLE images_v3 RENAME TO images;
CREATE TABLE image_names (
    name       TEXT PRIMARY KEY NOT NULL,
    digest     TEXT NOT NULL REFERENCES images(digest) ON DELETE CASCADE,
    created_at TEXT NOT NULL
) STRICT;
INSERT INTO image_names (name, digest, created_at)
    SELECT name, digest, created_at FROM image_names_v2;
DROP TABLE image_names_v2;
CREATE INDEX image_names_by_digest ON image_names(digest, name);
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

    #[test]
    fn migration_3_keeps_every_image_and_its_name() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "foreign_keys", true).unwrap();
        migrations().to_version(&mut conn, 2).unwrap();
        conn.execute_batch(
            r#"
INSERT INTO images VALUES ('sha256:aa', 'debian-12', 'bootstrap:debian-12', '/i/aa', 10, '2024-01-01T00:00:00.000Z', '{}');
INSERT INTO images VALUES ('sha256:bb', NULL, 'register', '/i/bb', 20, '2024-01-02T00:00:00.000Z', '{"x":1}');
INSERT INTO images VALUES ('sha256:cc', 'tool', 'oci:r/t:v1@sha256:1', '/i/cc', 30, '2024-01-03T00:00:00.000Z', '{}');
"#,
        )
        .unwrap();

        migrations().to_latest(&mut conn).unwrap();

        let images: Vec<(String, String, i64, String)> = conn
            .prepare("SELECT digest, dir, rootfs_bytes, manifest_json FROM images ORDER BY digest")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            images,
            [
                ("sha256:aa".into(), "/i/aa".into(), 10, "{}".into()),
                ("sha256:bb".into(), "/i/bb".into(), 20, r#"{"x":1}"#.into()),
                ("sha256:cc".into(), "/i/cc".into(), 30, "{}".into()),
            ]
        );
        let names: Vec<(String, String)> = conn
            .prepare("SELECT name, digest FROM image_names ORDER BY name")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            names,
            [
                ("debian-12".into(), "sha256:aa".into()),
                ("tool".into(), "sha256:cc".into())
            ]
        );
        // The new foreign key holds: a name needs its image.
        assert!(conn
            .execute(
                "INSERT INTO image_names VALUES ('ghost', 'sha256:zz', 'now')",
                []
            )
            .is_err());
    }
}
