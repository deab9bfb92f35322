//! The catalog: image names the daemon knows how to obtain. The built-in
//! catalog has the default image, built locally from Debian packages;
//! `[images] catalogs` adds JSON catalogs (file or https URLs), merged in
//! order, a later entry overriding an earlier one of the same name. An
//! entry names its source: a bootstrap recipe (built-in only), an OCI
//! reference, or a bundle URL with its sha256; and optionally the disk
//! size a VM made from it gets when `vm create` names none.
//!
//! A catalog file:
//! ```json
//! {"images": [
//!   {"name": "team-golden", "description": "…",
//!    "oci": "registry.example.com/team/golden:v3", "disk_size": "20G"},
//!   {"name": "golden", "description": "…",
//!    "bundle": "https://example.com/golden.hangar.tar.zst", "sha256": "<64 hex>"}
//! ]}
//! ```

use serde::Deserialize;

use crate::{ImageError, Recipe};

/// A built-in catalog image.
pub struct CatalogItem {
    pub name: &'static str,
    pub description: &'static str,
    pub recipe: fn() -> Recipe,
}

/// Every built-in catalog image.
pub fn catalog() -> Vec<CatalogItem> {
    vec![CatalogItem {
        name: "debian-12",
        description: "Debian 12 (bookworm) minbase with the cloud kernel, openssh-server, tmux, git, curl, sudo; built locally with debootstrap",
        recipe: Recipe::default_debian12,
    }]
}

/// The built-in catalog item called `name`.
pub fn find(name: &str) -> Option<CatalogItem> {
    catalog().into_iter().find(|c| c.name == name)
}

/// The catalog image whose kernel and initramfs boot OCI images that bring
/// no kernel of their own.
pub const KERNEL_IMAGE: &str = "debian-12";

/// Where a catalog entry's image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A built-in recipe, built locally.
    Recipe(String),
    /// An OCI reference; `insecure` allows plain HTTP to a loopback registry.
    Oci { reference: String, insecure: bool },
    /// A bundle URL and the sha256 of the bundle file.
    Bundle { url: String, sha256: String },
}

impl Source {
    /// For listings: `bootstrap:NAME`, `oci:REF`, `bundle:URL`.
    pub fn describe(&self) -> String {
        match self {
            Source::Recipe(n) => format!("bootstrap:{n}"),
            Source::Oci { reference, .. } => format!("oci:{reference}"),
            Source::Bundle { url, .. } => format!("bundle:{url}"),
        }
    }
}

/// One entry of the merged catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub description: String,
    pub source: Source,
    /// The disk size of a VM made from it when the request names none
    /// (bytes); `None`: the daemon's `[defaults] disk_size`, else the
    /// image's own size.
    pub disk_bytes: Option<u64>,
}

/// The built-in entries.
pub fn builtin() -> Vec<Entry> {
    catalog()
        .into_iter()
        .map(|c| Entry {
            name: c.name.to_string(),
            description: c.description.to_string(),
            source: Source::Recipe(c.name.to_string()),
            disk_bytes: None,
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    oci: Option<String>,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    bundle: Option<String>,
    #[serde(default)]
    sha256: Option<String>,
    /// `20G`, `512M` or a byte count.
    #[serde(default)]
    disk_size: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    images: Vec<FileEntry>,
}

/// Parses a catalog file; `origin` names it in errors.
pub fn parse(json: &[u8], origin: &str) -> Result<Vec<Entry>, ImageError> {
    let bad = |reason: String| ImageError::BadOci {
        what: format!("catalog {origin}"),
        reason,
    };
    let file: CatalogFile =
        serde_json::from_slice(json).map_err(|e| bad(format!("not a catalog: {e}")))?;
    file.images
        .into_iter()
        .map(|e| {
            hangar_api::name::validate_name("image", &e.name).map_err(|m| bad(m.to_string()))?;
            let source = match (e.oci, e.bundle, e.sha256) {
                (Some(reference), None, None) => Source::Oci {
                    reference,
                    insecure: e.insecure,
                },
                (None, Some(url), Some(sha256)) => Source::Bundle { url, sha256 },
                _ => {
                    return Err(bad(format!(
                        "entry {:?} needs either \"oci\", or \"bundle\" with \"sha256\"",
                        e.name
                    )))
                }
            };
            let disk_bytes = e
                .disk_size
                .as_deref()
                .map(|s| {
                    hangar_api::size::parse_size(s)
                        .and_then(hangar_api::size::check_disk_bytes)
                        .map_err(|why| {
                            bad(format!(
                                "entry {:?}: disk_size {s:?}: {why} (e.g. \"20G\")",
                                e.name
                            ))
                        })
                })
                .transpose()?;
            Ok(Entry {
                name: e.name,
                description: e.description,
                source,
                disk_bytes,
            })
        })
        .collect()
}

/// `lists` merged in order: a later entry replaces an earlier one of the
/// same name, in its place.
pub fn merge(lists: Vec<Vec<Entry>>) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    for e in lists.into_iter().flatten() {
        match out.iter_mut().find(|o| o.name == e.name) {
            Some(slot) => *slot = e,
            None => out.push(e),
        }
    }
    out
}

/// Reads one configured catalog: `file://PATH` (the daemon's own config
/// names it; it is not a client's path) or `https://` (plain `http://`
/// only from a loopback address).
pub async fn load(url: &str, trust: &crate::sources::Trust) -> Result<Vec<Entry>, ImageError> {
    let bytes = if let Some(path) = url.strip_prefix("file://") {
        tokio::fs::read(path)
            .await
            .map_err(|e| ImageError::io("read the catalog", path, e))?
    } else {
        let parsed = crate::sources::bundle::check_url(url)?;
        let net = |e: reqwest::Error| ImageError::Registry {
            registry: parsed.host_str().unwrap_or("").to_string(),
            reason: crate::sources::trust::net_error(&e),
        };
        let client = trust
            .http_client(std::time::Duration::from_secs(15))
            .map_err(net)?;
        let resp = client.get(parsed.clone()).send().await.map_err(net)?;
        let body = resp
            .error_for_status()
            .map_err(net)?
            .bytes()
            .await
            .map_err(net)?;
        body.to_vec()
    };
    parse(&bytes, url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_and_later_catalogs_override_earlier_ones() {
        let sha = "a".repeat(64);
        let file = format!(
            r#"{{"images":[
                {{"name":"team-golden","description":"team","oci":"127.0.0.1:5000/team/golden:v3","insecure":true,"disk_size":"20G"}},
                {{"name":"debian-12","description":"ours","bundle":"https://h/d.hangar.tar.zst","sha256":"{sha}"}}]}}"#
        );
        let parsed = parse(file.as_bytes(), "t").expect("parse");
        assert_eq!(
            parsed[0].source,
            Source::Oci {
                reference: "127.0.0.1:5000/team/golden:v3".into(),
                insecure: true
            }
        );
        assert_eq!(parsed[0].disk_bytes, Some(20 << 30));
        assert_eq!(parsed[1].disk_bytes, None);

        let merged = merge(vec![builtin(), parsed]);

        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].name, "debian-12");
        assert_eq!(merged[0].description, "ours");
        assert_eq!(
            merged[0].source.describe(),
            "bundle:https://h/d.hangar.tar.zst"
        );
    }

    #[test]
    fn an_entry_without_a_source_or_with_a_bad_name_is_refused() {
        assert!(parse(br#"{"images":[{"name":"x"}]}"#, "t").is_err());
        assert!(parse(br#"{"images":[{"name":"x","bundle":"https://h/x"}]}"#, "t").is_err());
        assert!(parse(br#"{"images":[{"name":"Bad Name","oci":"r/x"}]}"#, "t").is_err());
        assert!(parse(br#"{"images":[{"name":"x","oci":"r/x","bogus":1}]}"#, "t").is_err());
        for bad_size in ["big", "1M", "17T", "0"] {
            let json =
                format!(r#"{{"images":[{{"name":"x","oci":"r/x","disk_size":"{bad_size}"}}]}}"#);
            let err = parse(json.as_bytes(), "t").unwrap_err().to_string();
            assert!(err.contains("disk_size"), "{bad_size}: {err}");
        }
    }
}
