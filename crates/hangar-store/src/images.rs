//! Image rows: content-addressed by digest. An image has any number of
//! names (`image_names`, one digest per name); it is removed when its
//! last name goes, unless a VM still uses it. An image whose name was
//! re-pointed at newer content and that has no other name is "dangling":
//! it stays, addressable by digest, while VMs use it.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
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
    /// The name the image was found by; found by digest or listed, its
    /// first name. Empty when it has none ("dangling"); such an image
    /// stays addressable by digest while VMs still use it. On
    /// [`Store::upsert_image`], the name to point at the image.
    pub name: String,
    /// Every name of the image, sorted (read from the store; ignored by
    /// [`Store::upsert_image`]).
    pub names: Vec<String>,
    pub source: String,
    /// Directory holding kernel, initrd, rootfs and manifest.
    pub dir: String,
    pub rootfs_bytes: u64,
    pub created_at: String,
    pub manifest_json: String,
}

/// What [`Store::remove_image_name`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameRemoval {
    /// Only the name went; the image keeps its other names.
    Name {
        digest: String,
        remaining: Vec<String>,
    },
    /// It was the image's last name (or the image was named by digest):
    /// the image's row went; its files are the caller's to remove.
    Image(ImageRecord),
}

const IMAGE_COLUMNS: &str = "digest, source, dir, rootfs_bytes, created_at, manifest_json";

fn image_from_row(row: &Row<'_>) -> rusqlite::Result<ImageRecord> {
    Ok(ImageRecord {
        digest: row.get(0)?,
        name: String::new(),
        names: Vec::new(),
        source: row.get(1)?,
        dir: row.get(2)?,
        rootfs_bytes: row.get(3)?,
        created_at: row.get(4)?,
        manifest_json: row.get(5)?,
    })
}

/// The hex part of a digest reference (`sha256:` optional), lowercased, if
/// it is long enough to be used as a prefix.
fn digest_prefix(reference: &str) -> Option<String> {
    let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
    (hex.len() >= MIN_PREFIX && hex.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| format!("sha256:{}", hex.to_ascii_lowercase()))
}

fn names_of(conn: &Connection, digest: &str) -> Result<Vec<String>> {
    let mut stmt =
        conn.prepare_cached("SELECT name FROM image_names WHERE digest = ?1 ORDER BY name")?;
    let rows = stmt.query_map([digest], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
}

fn digest_named(conn: &Connection, name: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT digest FROM image_names WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?)
}

/// The image with exactly this digest, with its names.
fn by_digest(conn: &Connection, digest: &str) -> Result<Option<ImageRecord>> {
    let Some(mut rec) = conn
        .prepare_cached(&format!(
            "SELECT {IMAGE_COLUMNS} FROM images WHERE digest = ?1"
        ))?
        .query_row([digest], image_from_row)
        .optional()?
    else {
        return Ok(None);
    };
    rec.names = names_of(conn, digest)?;
    rec.name = rec.names.first().cloned().unwrap_or_default();
    Ok(Some(rec))
}

/// An image by name, full digest, or unique digest prefix; `.name` is the
/// name it was found by (or its first name).
fn find(conn: &Connection, reference: &str) -> Result<ImageRecord> {
    if let Some(digest) = digest_named(conn, reference)? {
        if let Some(mut rec) = by_digest(conn, &digest)? {
            rec.name = reference.to_string();
            return Ok(rec);
        }
    }
    let Some(prefix) = digest_prefix(reference) else {
        return Err(StoreError::not_found(format!(
            "no image named {reference:?}"
        )));
    };
    let mut stmt =
        conn.prepare_cached("SELECT digest FROM images WHERE substr(digest, 1, ?1) = ?2 LIMIT 2")?;
    let found = stmt
        .query_map(params![prefix.len(), prefix], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    match found.as_slice() {
        [] => Err(StoreError::not_found(format!(
            "no image named or with digest {reference:?}"
        ))),
        [digest] => by_digest(conn, digest)?.ok_or_else(|| {
            StoreError::not_found(format!("no image named or with digest {reference:?}"))
        }),
        _ => Err(StoreError::conflict(format!(
            "digest prefix {reference:?} matches more than one image: give more characters"
        ))),
    }
}

impl Store {
    /// Stores the image and points `rec.name` at `rec.digest` (keeping the
    /// image's other names). If the name pointed at another digest that is
    /// left without any name, that image stays (for the VMs that use it)
    /// and its digest is returned so the caller can remove it when unused.
    /// Re-storing a digest updates its row.
    pub fn upsert_image(&self, rec: &ImageRecord) -> Result<Option<String>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.prepare_cached(&format!(
            "INSERT INTO images ({IMAGE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT(digest) DO UPDATE SET source = excluded.source, \
             dir = excluded.dir, rootfs_bytes = excluded.rootfs_bytes, \
             created_at = excluded.created_at, manifest_json = excluded.manifest_json"
        ))?
        .execute(params![
            rec.digest,
            rec.source,
            rec.dir,
            rec.rootfs_bytes,
            rec.created_at,
            rec.manifest_json
        ])?;
        let mut displaced = None;
        if !rec.name.is_empty() {
            let old = digest_named(&tx, &rec.name)?.filter(|d| *d != rec.digest);
            tx.prepare_cached(
                "INSERT INTO image_names (name, digest, created_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(name) DO UPDATE SET digest = excluded.digest, \
                 created_at = excluded.created_at",
            )?
            .execute(params![rec.name, rec.digest, rec.created_at])?;
            if let Some(old) = old {
                if names_of(&tx, &old)?.is_empty() {
                    displaced = Some(old);
                }
            }
        }
        tx.commit()?;
        if let Some(old) = &displaced {
            tracing::info!(image = %rec.name, new = %rec.digest, old = %old, "image name re-pointed");
        }
        Ok(displaced)
    }

    /// Gives the image `reference` (a name or digest) one more name,
    /// `new_name`. A name that already names this image is fine (nothing
    /// changes); one that names another image is refused.
    pub fn tag_image(&self, reference: &str, new_name: &str, now: &str) -> Result<ImageRecord> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let rec = find(&tx, reference)?;
        match digest_named(&tx, new_name)? {
            Some(d) if d == rec.digest => {}
            Some(d) => {
                return Err(StoreError::conflict(format!(
                    "an image named {new_name:?} already exists (digest {d}); remove that name first with `hangar image rm {new_name}`"
                )))
            }
            None => {
                tx.prepare_cached(
                    "INSERT INTO image_names (name, digest, created_at) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![new_name, rec.digest, now])?;
            }
        }
        let mut tagged = by_digest(&tx, &rec.digest)?
            .ok_or_else(|| StoreError::not_found(format!("no image {reference:?}")))?;
        tx.commit()?;
        tagged.name = new_name.to_string();
        Ok(tagged)
    }

    /// Finds an image by name, full digest, or a unique digest prefix of at
    /// least 12 hex characters (with or without `sha256:`).
    pub fn get_image(&self, reference: &str) -> Result<ImageRecord> {
        find(&self.conn(), reference)
    }

    /// All images, each once with all its names: named ones by first name,
    /// then dangling ones by age.
    pub fn list_images(&self) -> Result<Vec<ImageRecord>> {
        let conn = self.conn();
        let mut names: HashMap<String, Vec<String>> = HashMap::new();
        {
            let mut stmt =
                conn.prepare_cached("SELECT digest, name FROM image_names ORDER BY name")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))?;
            for row in rows {
                let (digest, name) = row?;
                names.entry(digest).or_default().push(name);
            }
        }
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {IMAGE_COLUMNS} FROM images ORDER BY created_at, digest"
        ))?;
        let mut recs = stmt
            .query_map([], image_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for rec in &mut recs {
            rec.names = names.remove(&rec.digest).unwrap_or_default();
            rec.name = rec.names.first().cloned().unwrap_or_default();
        }
        // Stable: dangling ones keep their age order.
        recs.sort_by(|a, b| (a.name.is_empty(), &a.name).cmp(&(b.name.is_empty(), &b.name)));
        Ok(recs)
    }

    /// Removes the name `reference`. While the image has other names, only
    /// the name goes. Its last name (or the image named by its digest)
    /// takes the image's row with it, refused while a VM uses the image
    /// (naming the VMs); a digest is refused while the image has more
    /// than one name, so no name goes unnoticed. Checking and deleting in
    /// one transaction means a VM created meanwhile cannot lose its base.
    pub fn remove_image_name(&self, reference: &str) -> Result<NameRemoval> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let rec = find(&tx, reference)?;
        let by_name = rec.names.iter().any(|n| n == reference);
        if by_name && rec.names.len() > 1 {
            tx.prepare_cached("DELETE FROM image_names WHERE name = ?1")?
                .execute([reference])?;
            let remaining = names_of(&tx, &rec.digest)?;
            tx.commit()?;
            return Ok(NameRemoval::Name {
                digest: rec.digest,
                remaining,
            });
        }
        if !by_name && rec.names.len() > 1 {
            return Err(StoreError::conflict(format!(
                "image {} has {} names ({}); remove them by name (`hangar image rm NAME`), the image goes with its last one",
                rec.digest,
                rec.names.len(),
                rec.names.join(", ")
            )));
        }
        let users = vm_names_using(&tx, &rec.digest)?;
        if !users.is_empty() {
            return Err(StoreError::conflict(format!(
                "image {reference} ({}) is used by VM(s) {}; remove them first (`hangar vm rm NAME`)",
                rec.digest,
                users.join(", ")
            )));
        }
        tx.prepare_cached("DELETE FROM images WHERE digest = ?1")?
            .execute([&rec.digest])?;
        tx.commit()?;
        Ok(NameRemoval::Image(rec))
    }

    /// Deletes the image row and all its names. Refused while a VM uses
    /// the image: checking and deleting in one transaction means a VM
    /// created meanwhile cannot lose its base.
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

fn vm_names_using(conn: &Connection, digest: &str) -> Result<Vec<String>> {
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
            names: if name.is_empty() {
                vec![]
            } else {
                vec![name.into()]
            },
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

    fn names(store: &Store, reference: &str) -> Vec<String> {
        store.get_image(reference).unwrap().names
    }

    #[test]
    fn a_tag_gives_the_same_image_a_second_name() {
        let store = Store::open_in_memory().unwrap();
        store.upsert_image(&image("golden", D1)).unwrap();

        let tagged = store.tag_image("golden", "golden-v3", "now").unwrap();

        assert_eq!(tagged.name, "golden-v3");
        assert_eq!(tagged.names, ["golden", "golden-v3"]);
        assert_eq!(store.get_image("golden-v3").unwrap().digest, D1);
        assert_eq!(store.get_image("golden").unwrap().name, "golden");
        let listed = store.list_images().unwrap();
        assert_eq!(listed.len(), 1, "one image, two names");
        assert_eq!(listed[0].names, ["golden", "golden-v3"]);
        // By digest works too, and naming it again changes nothing.
        store.tag_image(&D1[..20], "g", "now").unwrap();
        store.tag_image("golden", "g", "now").unwrap();
        assert_eq!(names(&store, D1), ["g", "golden", "golden-v3"]);
    }

    #[test]
    fn a_tag_never_takes_a_name_from_another_image() {
        let store = Store::open_in_memory().unwrap();
        store.upsert_image(&image("a", D1)).unwrap();
        store.upsert_image(&image("b", D2)).unwrap();

        let err = store.tag_image("a", "b", "now").unwrap_err();

        assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
        assert!(err.to_string().contains("hangar image rm b"), "{err}");
        assert_eq!(store.get_image("b").unwrap().digest, D2);
        let err = store.tag_image("nope", "c", "now").unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
        assert!(store.get_image("c").is_err());
    }

    #[test]
    fn removing_one_of_several_names_keeps_the_image() {
        let store = Store::open_in_memory().unwrap();
        store.upsert_image(&image("a", D1)).unwrap();
        store.tag_image("a", "b", "now").unwrap();
        // A VM on the image does not stop a name that is not the last.
        add_vm_on(&store, "web", D1);

        let removed = store.remove_image_name("a").unwrap();

        assert_eq!(
            removed,
            NameRemoval::Name {
                digest: D1.into(),
                remaining: vec!["b".into()]
            }
        );
        assert!(store.get_image("a").is_err());
        assert_eq!(names(&store, "b"), ["b"]);
    }

    #[test]
    fn the_last_name_takes_the_image_unless_a_vm_uses_it() {
        let store = Store::open_in_memory().unwrap();
        store.upsert_image(&image("a", D1)).unwrap();
        store.tag_image("a", "b", "now").unwrap();
        store.remove_image_name("a").unwrap();
        add_vm_on(&store, "web", D1);
        add_vm_on(&store, "db", D1);

        let err = store.remove_image_name("b").unwrap_err();

        assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
        assert!(err.to_string().contains("db, web"), "{err}");
        assert_eq!(names(&store, D1), ["b"], "the name stays");

        let store = Store::open_in_memory().unwrap();
        store.upsert_image(&image("a", D1)).unwrap();
        match store.remove_image_name("a").unwrap() {
            NameRemoval::Image(rec) => assert_eq!(rec.digest, D1),
            other => panic!("{other:?}"),
        }
        assert!(store.list_images().unwrap().is_empty());
        let count: i64 = store
            .conn()
            .query_row("SELECT count(*) FROM image_names", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 0);
    }

    #[test]
    fn a_digest_removes_an_image_only_when_it_has_at_most_one_name() {
        let store = Store::open_in_memory().unwrap();
        store.upsert_image(&image("a", D1)).unwrap();
        store.tag_image("a", "b", "now").unwrap();

        let err = store.remove_image_name(D1).unwrap_err();

        assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
        assert!(err.to_string().contains("a, b"), "{err}");
        assert_eq!(names(&store, D1), ["a", "b"]);

        store.remove_image_name("a").unwrap();
        assert!(matches!(
            store.remove_image_name(&D1[..20]).unwrap(),
            NameRemoval::Image(_)
        ));
        assert!(store.list_images().unwrap().is_empty());
    }

    #[test]
    fn re_pointing_a_name_displaces_only_an_image_left_without_names() {
        let store = Store::open_in_memory().unwrap();
        store.upsert_image(&image("a", D1)).unwrap();
        store.tag_image("a", "keep", "now").unwrap();

        let displaced = store.upsert_image(&image("a", D2)).unwrap();

        assert_eq!(displaced, None, "D1 still has `keep`");
        assert_eq!(names(&store, D1), ["keep"]);
        assert_eq!(store.get_image("a").unwrap().digest, D2);
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
