//! Image rows: content-addressed by digest, with at most one name per
//! digest and one digest per name.

use rusqlite::{params, OptionalExtension, Row, TransactionBehavior};
use serde::Serialize;

use crate::error::{Result, StoreError};
use crate::store::Store;

/// Shortest digest prefix (hex characters) accepted as a reference, so a
/// typo does not silently pick some other image.
const MIN_PREFIX: usize = 12;

/// An image in the local store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageRecord {
    /// `sha256:<hex>` over the manifest.
    pub digest: String,
    /// Empty once a newer digest took the name over ("dangling"); such an
    /// image stays addressable by digest while VMs still use it.
    pub name: String,
    pub source: String,
    /// Directory holding kernel, initrd, rootfs and manifest.
    pub dir: String,
    pub rootfs_bytes: u64,
    pub created_at: String,
    pub manifest_json: String,
}

const IMAGE_COLUMNS: &str = "digest, name, source, dir, rootfs_bytes, created_at, manifest_json";

fn image_from_row(row: &Row<'_>) -> rusqlite::Result<ImageRecord> {
    Ok(ImageRecord {
        digest: row.get(0)?,
        name: row.get::<_, Option<String>>(1)?.unwrap_or_default(),
        source: row.get(2)?,
        dir: row.get(3)?,
        rootfs_bytes: row.get(4)?,
        created_at: row.get(5)?,
        manifest_json: row.get(6)?,
    })
}

/// The hex part of a digest reference (`sha256:` optional), lowercased, if
/// it is long enough to be used as a prefix.
fn digest_prefix(reference: &str) -> Option<String> {
    let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
    (hex.len() >= MIN_PREFIX && hex.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| format!("sha256:{}", hex.to_ascii_lowercase()))
}

impl Store {
    /// Stores the image and points `rec.name` at `rec.digest`. If the name
    /// pointed at another digest, that image loses its name (it stays, for
    /// the VMs that use it) and its digest is returned so the caller can
    /// remove it when unused. Re-storing a digest updates its row.
    pub fn upsert_image(&self, rec: &ImageRecord) -> Result<Option<String>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let name = (!rec.name.is_empty()).then_some(rec.name.as_str());
        let displaced: Option<String> = tx
            .prepare_cached("SELECT digest FROM images WHERE name = ?1 AND digest != ?2")?
            .query_row(params![name, rec.digest], |r| r.get(0))
            .optional()?;
        if let Some(old) = &displaced {
            tx.prepare_cached("UPDATE images SET name = NULL WHERE digest = ?1")?
                .execute([old])?;
        }
        tx.prepare_cached(&format!(
            "INSERT INTO images ({IMAGE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT(digest) DO UPDATE SET name = excluded.name, source = excluded.source, \
             dir = excluded.dir, rootfs_bytes = excluded.rootfs_bytes, \
             created_at = excluded.created_at, manifest_json = excluded.manifest_json"
        ))?
        .execute(params![
            rec.digest,
            name,
            rec.source,
            rec.dir,
            rec.rootfs_bytes,
            rec.created_at,
            rec.manifest_json
        ])?;
        tx.commit()?;
        if let Some(old) = &displaced {
            tracing::info!(image = %rec.name, new = %rec.digest, old = %old, "image name re-pointed");
        }
        Ok(displaced)
    }

    /// Finds an image by name, full digest, or a unique digest prefix of at
    /// least 12 hex characters (with or without `sha256:`).
    pub fn get_image(&self, reference: &str) -> Result<ImageRecord> {
        let conn = self.conn();
        let by_name = conn
            .prepare_cached(&format!(
                "SELECT {IMAGE_COLUMNS} FROM images WHERE name = ?1"
            ))?
            .query_row([reference], image_from_row)
            .optional()?;
        if let Some(img) = by_name {
            return Ok(img);
        }
        let Some(prefix) = digest_prefix(reference) else {
            return Err(StoreError::not_found(format!(
                "no image named {reference:?}"
            )));
        };
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {IMAGE_COLUMNS} FROM images WHERE substr(digest, 1, ?1) = ?2 LIMIT 2"
        ))?;
        let mut found = stmt
            .query_map(params![prefix.len(), prefix], image_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        match found.len() {
            0 => Err(StoreError::not_found(format!(
                "no image named or with digest {reference:?}"
            ))),
            1 => Ok(found.remove(0)),
            _ => Err(StoreError::conflict(format!(
                "digest prefix {reference:?} matches more than one image: give more characters"
            ))),
        }
    }

    /// All images: named ones by name, then dangling ones by age.
    pub fn list_images(&self) -> Result<Vec<ImageRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {IMAGE_COLUMNS} FROM images ORDER BY name IS NULL, name, created_at"
        ))?;
        let rows = stmt.query_map([], image_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Deletes the image row. Refused while a VM uses the image: checking
    /// and deleting in one transaction means a VM created meanwhile cannot
    /// lose its base.
    pub fn delete_image(&self, digest: &str) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let users = vm_names_using(&tx, digest)?;
        if !users.is_empty() {
            return Err(StoreError::conflict(format!(
                "image {digest} is used by VM(s) {}; remove them first (`hangar vm rm NAME`)",
                users.join(", ")
            )));
        }
        let n = tx
            .prepare_cached("DELETE FROM images WHERE digest = ?1")?
            .execute([digest])?;
        if n == 0 {
            return Err(StoreError::not_found(format!(
                "no image with digest {digest:?}"
            )));
        }
        tx.commit()?;
        Ok(())
    }

    /// Names of the VMs whose disk is based on `digest`, sorted.
    pub fn vms_using_image(&self, digest: &str) -> Result<Vec<String>> {
        vm_names_using(&self.conn(), digest)
    }
}

fn vm_names_using(conn: &rusqlite::Connection, digest: &str) -> Result<Vec<String>> {
    let mut stmt =
        conn.prepare_cached("SELECT name FROM vms WHERE image_digest = ?1 ORDER BY name")?;
    let rows = stmt.query_map([digest], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vms::VmRecord;
    use hangar_api::VmState;
    use std::net::Ipv4Addr;

    const D1: &str = "sha256:1111111111111111aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const D2: &str = "sha256:2222222222222222bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const D2_TWIN: &str = "sha256:2222222222222222cccccccccccccccccccccccccccccccccccccccccccccccc";

    fn image(name: &str, digest: &str) -> ImageRecord {
        ImageRecord {
            digest: digest.into(),
            name: name.into(),
            source: "register".into(),
            dir: format!("/var/lib/hangar/images/{digest}"),
            rootfs_bytes: 1 << 30,
            created_at: "2024-01-01T00:00:00.000Z".into(),
            manifest_json: "{}".into(),
        }
    }

    fn add_vm_on(store: &Store, name: &str, digest: &str) {
        let rec = VmRecord {
            id: format!("id-{name}"),
            name: name.into(),
            state: VmState::Stopped,
            image_name: "x".into(),
            image_digest: digest.into(),
            cpus: 1,
            memory_mib: 256,
            disk_bytes: 1 << 30,
            ip: Ipv4Addr::UNSPECIFIED,
            mac: String::new(),
            driver: "qemu".into(),
            host_key_public: String::new(),
            host_key_private: String::new(),
            runtime: None,
            created_at: "2024-01-01T00:00:00.000Z".into(),
            last_error: None,
        };
        store
            .insert_vm_with_lease(&rec, "10.1.0.0/24".parse().unwrap(), &[])
            .unwrap();
    }

    #[test]
    fn upserted_image_is_found_by_name() {
        let store = Store::open_in_memory().unwrap();

        let displaced = store.upsert_image(&image("debian-12", D1)).unwrap();

        assert_eq!(displaced, None);
        assert_eq!(
            store.get_image("debian-12").unwrap(),
            image("debian-12", D1)
        );
    }

    #[test]
    fn reregistering_a_name_points_it_to_the_new_digest() {
        let store = Store::open_in_memory().unwrap();
        store.upsert_image(&image("debian-12", D1)).unwrap();

        let displaced = store.upsert_image(&image("debian-12", D2)).unwrap();

        assert_eq!(displaced.as_deref(), Some(D1));
        assert_eq!(store.get_image("debian-12").unwrap().digest, D2);
        assert_eq!(store.get_image(D1).unwrap().name, "");
    }

    #[test]
    fn upserting_same_digest_updates_row() {
        let store = Store::open_in_memory().unwrap();
        store.upsert_image(&image("debian-12", D1)).unwrap();
        let mut changed = image("debian-12", D1);
        changed.rootfs_bytes = 42;

        let displaced = store.upsert_image(&changed).unwrap();

        assert_eq!(displaced, None);
        assert_eq!(store.list_images().unwrap(), vec![changed]);
    }

    #[test]
    fn get_image_accepts_full_digest() {
        let store = Store::open_in_memory().unwrap();
        store.upsert_image(&image("a", D1)).unwrap();

        assert_eq!(store.get_image(D1).unwrap().name, "a");
    }

    #[test]
    fn get_image_accepts_unique_prefix_with_or_without_algorithm() {
        let store = Store::open_in_memory().unwrap();
        store.upsert_image(&image("a", D1)).unwrap();
        store.upsert_image(&image("b", D2)).unwrap();

        assert_eq!(store.get_image("sha256:111111111111").unwrap().name, "a");
        assert_eq!(store.get_image("222222222222").unwrap().name, "b");
        assert_eq!(store.get_image("2222222222222222BBB").unwrap().name, "b");
    }

    #[test]
    fn get_image_with_short_prefix_returns_not_found() {
        let store = Store::open_in_memory().unwrap();
        store.upsert_image(&image("a", D1)).unwrap();

        let err = store.get_image("11111111111").unwrap_err();

        assert!(matches!(err, StoreError::NotFound { .. }));
        assert_eq!(err.to_string(), r#"no image named "11111111111""#);
    }

    #[test]
    fn get_image_with_ambiguous_prefix_returns_conflict() {
        let store = Store::open_in_memory().unwrap();
        store.upsert_image(&image("b", D2)).unwrap();
        store.upsert_image(&image("c", D2_TWIN)).unwrap();

        let err = store.get_image("2222222222222222").unwrap_err();

        assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    }

    #[test]
    fn get_image_with_unknown_digest_returns_not_found() {
        let store = Store::open_in_memory().unwrap();

        let err = store.get_image(D1).unwrap_err();

        assert!(matches!(err, StoreError::NotFound { .. }));
    }

    #[test]
    fn list_images_puts_named_first_then_dangling() {
        let store = Store::open_in_memory().unwrap();
        store.upsert_image(&image("zeta", D1)).unwrap();
        store.upsert_image(&image("alpha", D2)).unwrap();
        store.upsert_image(&image("zeta", D2_TWIN)).unwrap();

        let names: Vec<String> = store
            .list_images()
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect();

        assert_eq!(names, ["alpha", "zeta", ""]);
    }

    #[test]
    fn delete_image_removes_unused_image() {
        let store = Store::open_in_memory().unwrap();
        store.upsert_image(&image("a", D1)).unwrap();

        store.delete_image(D1).unwrap();

        assert!(store.list_images().unwrap().is_empty());
    }

    #[test]
    fn delete_image_in_use_returns_conflict_naming_vms() {
        let store = Store::open_in_memory().unwrap();
        store.upsert_image(&image("a", D1)).unwrap();
        add_vm_on(&store, "web", D1);
        add_vm_on(&store, "db", D1);

        let err = store.delete_image(D1).unwrap_err();

        assert!(matches!(err, StoreError::Conflict { .. }));
        assert!(err.to_string().contains("db, web"), "{err}");
        assert_eq!(store.list_images().unwrap().len(), 1);
    }

    #[test]
    fn delete_unknown_image_returns_not_found() {
        let store = Store::open_in_memory().unwrap();

        let err = store.delete_image(D1).unwrap_err();

        assert!(matches!(err, StoreError::NotFound { .. }));
    }

    #[test]
    fn vms_using_image_lists_only_that_digest() {
        let store = Store::open_in_memory().unwrap();
        add_vm_on(&store, "web", D1);
        add_vm_on(&store, "db", D1);
        add_vm_on(&store, "other", D2);

        assert_eq!(store.vms_using_image(D1).unwrap(), ["db", "web"]);
    }

    #[test]
    fn images_persist_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        Store::open(&path)
            .unwrap()
            .upsert_image(&image("a", D1))
            .unwrap();

        let store = Store::open(&path).unwrap();

        assert_eq!(store.get_image("a").unwrap(), image("a", D1));
    }
}
