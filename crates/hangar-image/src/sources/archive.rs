//! Image archives a client streams: `docker save` (docker-archive, old and
//! new style), `podman save`, `buildah push oci-archive:`, `skopeo copy
//! oci-archive:` (an OCI image layout as a tar), plain or gzip/zstd
//! compressed. Their members come in no useful order (the manifest may be
//! last), so the stream is first spooled into the staging dir — each
//! member under a counter, never under its own name — and then read by
//! manifest. Member names are only keys of an in-memory table.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::image_config::MAX_JSON_BYTES;
use super::layer::{self, LayerDesc};
use super::{check_digest, ImageConfig, Unpacked};
use crate::flatten::Flattener;
use crate::ImageError;

const WHAT: &str = "the archive";

/// The members of a spooled archive.
#[derive(Debug, Default)]
pub struct Spool {
    /// Normalized member name → its spooled file.
    files: HashMap<String, PathBuf>,
    /// Normalized member name → normalized name it links to.
    links: HashMap<String, String>,
    /// Bytes of the archive stream read.
    pub bytes: u64,
}

fn bad(reason: impl Into<String>) -> ImageError {
    ImageError::BadOci {
        what: WHAT.to_string(),
        reason: reason.into(),
    }
}

/// `./a//b/` → `a/b`; `None` for a name that climbs (`..`) — such a member
/// cannot be referred to by a manifest anyway.
fn normalize(name: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(name).ok()?;
    let mut parts = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

/// Reads the archive stream (plain, gzip or zstd tar) into `dir`.
/// `max_bytes` bounds the bytes written to disk.
pub fn spool(
    input: impl Read,
    dir: &Path,
    max_bytes: u64,
    on_bytes: &dyn Fn(u64),
    cancelled: &dyn Fn() -> bool,
) -> Result<Spool, ImageError> {
    let io = |e: std::io::Error| bad(format!("cannot read it: {e}"));
    hangar_host::private::create_private_dir(dir).map_err(|e| ImageError::io("create", dir, e))?;
    let mut input = BufReader::with_capacity(
        1 << 20,
        CountingReader {
            inner: input,
            on_bytes,
            bytes: 0,
        },
    );
    if input.fill_buf().map_err(io)?.is_empty() {
        return Err(bad("it is empty"));
    }
    let tar = super::layer::decompressed(&mut input).map_err(io)?;
    let mut spool = Spool::default();
    let mut written = 0u64;
    let mut archive = tar::Archive::new(tar);
    for (n, entry) in archive.entries().map_err(io)?.enumerate() {
        if cancelled() {
            return Err(ImageError::Cancelled);
        }
        let mut entry = entry.map_err(|e| bad(format!("it is not a tar archive: {e}")))?;
        let Some(name) = normalize(&entry.path_bytes()) else {
            continue;
        };
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let Some(target) = entry.link_name_bytes() else {
                continue;
            };
            let base = if kind.is_symlink() {
                // Relative to the link's directory.
                let parent = name.rsplit_once('/').map_or("", |(p, _)| p);
                format!("{parent}/{}", String::from_utf8_lossy(&target))
            } else {
                String::from_utf8_lossy(&target).into_owned()
            };
            if let Some(t) = normalize(base.as_bytes()) {
                spool.links.insert(name, t);
            }
            continue;
        }
        if !kind.is_file() && kind != tar::EntryType::Continuous {
            continue;
        }
        let size = entry.size();
        written += size;
        if written > max_bytes {
            return Err(bad(format!(
                "it holds more than {max_bytes} bytes, the [images] max_rootfs_size limit"
            )));
        }
        let path = dir.join(format!("{n}"));
        let mut f = hangar_host::private::create_private_file(&path)
            .map_err(|e| ImageError::io("create", &path, e))?;
        std::io::copy(&mut entry, &mut f).map_err(|e| ImageError::io("write", &path, e))?;
        spool.files.insert(name, path);
    }
    drop(archive);
    spool.bytes = input.get_ref().bytes;
    Ok(spool)
}

struct CountingReader<'a, R> {
    inner: R,
    on_bytes: &'a dyn Fn(u64),
    bytes: u64,
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        (self.on_bytes)(n as u64);
        Ok(n)
    }
}

impl Spool {
    /// The spooled file of member `name`, following the archive's own
    /// links (docker-archive links repeated layers).
    fn file(&self, name: &str) -> Result<&Path, ImageError> {
        let mut name = normalize(name.as_bytes())
            .ok_or_else(|| bad(format!("member {name:?} climbs out of the archive")))?;
        for _ in 0..16 {
            if let Some(p) = self.files.get(&name) {
                return Ok(p);
            }
            match self.links.get(&name) {
                Some(t) => name = t.clone(),
                None => break,
            }
        }
        Err(bad(format!(
            "it has no member {name:?} (named by its manifest)"
        )))
    }

    fn has(&self, name: &str) -> bool {
        self.file(name).is_ok()
    }

    /// A small JSON member, read whole (bounded).
    fn read_json(&self, name: &str) -> Result<Vec<u8>, ImageError> {
        let p = self.file(name)?;
        let f = std::fs::File::open(p).map_err(|e| ImageError::io("read", p, e))?;
        let mut buf = Vec::new();
        f.take(MAX_JSON_BYTES + 1)
            .read_to_end(&mut buf)
            .map_err(|e| ImageError::io("read", p, e))?;
        if buf.len() as u64 > MAX_JSON_BYTES {
            return Err(bad(format!(
                "member {name} is larger than {MAX_JSON_BYTES} bytes; not a manifest"
            )));
        }
        Ok(buf)
    }

    /// A blob of an OCI layout, read whole and checked against `digest`.
    fn read_blob(&self, digest: &str) -> Result<Vec<u8>, ImageError> {
        check_digest(digest, WHAT)?;
        let buf = self.read_json(&blob_path(digest))?;
        let got = format!("sha256:{}", hex::encode(Sha256::digest(&buf)));
        if got != digest {
            return Err(bad(format!("blob {digest} has digest {got}")));
        }
        Ok(buf)
    }
}

fn blob_path(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

/// The image an archive holds, found from its manifest(s).
#[derive(Debug)]
pub struct ArchiveImage {
    pub config: ImageConfig,
    /// Member name and description of each layer, bottom first.
    pub layers: Vec<(String, LayerDesc)>,
    pub format: &'static str,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    platform: Option<Platform>,
    #[serde(default)]
    annotations: HashMap<String, String>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
}

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn is_index(media_type: &str) -> bool {
    media_type.ends_with("image.index.v1+json") || media_type.ends_with("manifest.list.v2+json")
}

/// Reads the spooled archive's manifest: an OCI layout (`index.json`) or
/// a docker-archive (`manifest.json`).
pub fn read_image(spool: &Spool) -> Result<ArchiveImage, ImageError> {
    if spool.has("index.json") && spool.has("oci-layout") {
        read_oci_layout(spool)
    } else if spool.has("manifest.json") {
        read_docker_archive(spool)
    } else {
        Err(bad("it is neither a docker-archive (no manifest.json) nor an OCI image layout (no index.json and oci-layout); make one with `docker save`, `podman save` or `buildah push IMAGE oci-archive:FILE`"))
    }
}

fn parse<'a, T: Deserialize<'a>>(bytes: &'a [u8], name: &str) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| bad(format!("{name} is not valid: {e}")))
}

fn read_oci_layout(spool: &Spool) -> Result<ArchiveImage, ImageError> {
    let bytes = spool.read_json("index.json")?;
    let mut index: Index = parse(&bytes, "index.json")?;
    // Nested indexes (multi-platform images) are resolved to linux/amd64.
    for _ in 0..4 {
        let candidates: Vec<&Descriptor> = index
            .manifests
            .iter()
            .filter(|d| {
                d.annotations
                    .get("vnd.docker.reference.type")
                    .map(String::as_str)
                    != Some("attestation-manifest")
                    && d.platform
                        .as_ref()
                        .is_none_or(|p| p.os == "linux" && p.architecture == "amd64")
            })
            .collect();
        let chosen = match candidates.as_slice() {
            [one] => *one,
            [] => return Err(bad("its index has no linux/amd64 image")),
            many => {
                let names: Vec<String> = many
                    .iter()
                    .map(|d| {
                        d.annotations
                            .get("org.opencontainers.image.ref.name")
                            .cloned()
                            .unwrap_or_else(|| d.digest.clone())
                    })
                    .collect();
                return Err(bad(format!(
                    "it holds {} images ({}); import an archive of one image",
                    many.len(),
                    names.join(", ")
                )));
            }
        };
        let blob = spool.read_blob(&chosen.digest)?;
        if is_index(&chosen.media_type) {
            index = parse(&blob, &chosen.digest)?;
            continue;
        }
        let manifest: Manifest = parse(&blob, &chosen.digest)?;
        let config = ImageConfig::parse(&spool.read_blob(&manifest.config.digest)?, WHAT)?;
        config.check_platform(WHAT)?;
        if config.diff_ids.len() != manifest.layers.len() {
            return Err(bad(format!(
                "its manifest lists {} layers but its config {} diff_ids",
                manifest.layers.len(),
                config.diff_ids.len()
            )));
        }
        let layers = manifest
            .layers
            .iter()
            .zip(&config.diff_ids)
            .map(|(l, diff_id)| {
                check_digest(&l.digest, WHAT)?;
                Ok((
                    blob_path(&l.digest),
                    LayerDesc {
                        digest: Some(l.digest.clone()),
                        size: l.size,
                        diff_id: Some(diff_id.clone()),
                        label: l.digest.clone(),
                    },
                ))
            })
            .collect::<Result<Vec<_>, ImageError>>()?;
        return Ok(ArchiveImage {
            config,
            layers,
            format: "oci-archive",
        });
    }
    Err(bad("its indexes nest too deep"))
}

fn read_docker_archive(spool: &Spool) -> Result<ArchiveImage, ImageError> {
    let bytes = spool.read_json("manifest.json")?;
    let entries: Vec<DockerEntry> = parse(&bytes, "manifest.json")?;
    let entry = match entries.as_slice() {
        [one] => one,
        [] => return Err(bad("its manifest.json lists no image")),
        many => {
            let tags: Vec<String> = many
                .iter()
                .map(|e| e.repo_tags.clone().unwrap_or_default().join(" "))
                .collect();
            return Err(bad(format!(
                "it holds {} images ({}); `docker save` one image at a time",
                many.len(),
                tags.join(", ")
            )));
        }
    };
    let config = ImageConfig::parse(&spool.read_json(&entry.config)?, WHAT)?;
    config.check_platform(WHAT)?;
    if config.diff_ids.len() != entry.layers.len() {
        return Err(bad(format!(
            "its manifest.json lists {} layers but its config {} diff_ids",
            entry.layers.len(),
            config.diff_ids.len()
        )));
    }
    let layers = entry
        .layers
        .iter()
        .zip(&config.diff_ids)
        .map(|(path, diff_id)| {
            (
                path.clone(),
                LayerDesc {
                    digest: None,
                    size: None,
                    // The config's diff_ids verify docker's uncompressed layers.
                    diff_id: Some(diff_id.clone()),
                    label: path.clone(),
                },
            )
        })
        .collect();
    Ok(ArchiveImage {
        config,
        layers,
        format: "docker-archive",
    })
}

/// Applies the spooled image's layers into `tree`; together they may
/// unpack to at most `max_bytes`.
pub fn unpack(
    spool: &Spool,
    image: ArchiveImage,
    tree: &Path,
    max_bytes: u64,
    on_bytes: &dyn Fn(u64),
    cancelled: &dyn Fn() -> bool,
) -> Result<Unpacked, ImageError> {
    let mut flattener = Flattener::new(tree)?;
    let mut budget = max_bytes;
    let mut bytes = 0;
    for (member, desc) in &image.layers {
        let path = spool.file(member)?;
        let f = std::fs::File::open(path).map_err(|e| ImageError::io("read", path, e))?;
        let (_, n) = layer::apply_blob(f, desc, &mut flattener, &mut budget, on_bytes, cancelled)?;
        bytes += n;
    }
    flattener.finish()?;
    Ok(Unpacked {
        run: image.config.run,
        source: image.format.to_string(),
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, body) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000);
            h.set_cksum();
            b.append_data(&mut h, name, *body).expect("append");
        }
        b.into_inner().expect("tar")
    }

    fn sha(b: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(b)))
    }

    fn import(archive: &[u8]) -> (tempfile::TempDir, Result<Unpacked, ImageError>) {
        let t = tempfile::tempdir().expect("tempdir");
        let tree = t.path().join("tree");
        std::fs::create_dir(&tree).expect("mkdir");
        let r = spool(archive, &t.path().join("spool"), 1 << 30, &|_| {}, &|| {
            false
        })
        .and_then(|s| {
            let image = read_image(&s)?;
            unpack(&s, image, &tree, 1 << 30, &|_| {}, &|| false)
        });
        (t, r)
    }

    #[test]
    fn a_docker_archive_with_the_manifest_last_is_imported() {
        let layer = tar_of(&[("etc/motd", b"hello\n")]);
        let config = format!(
            r#"{{"os":"linux","architecture":"amd64","config":{{"Env":["A=1"]}},"rootfs":{{"diff_ids":["{}"]}}}}"#,
            sha(&layer)
        );
        let manifest =
            br#"[{"Config":"cfg.json","RepoTags":["x:latest"],"Layers":["abc/layer.tar"]}]"#;
        let archive = tar_of(&[
            ("abc/layer.tar", &layer),
            ("cfg.json", config.as_bytes()),
            ("manifest.json", manifest),
        ]);

        let (t, r) = import(&archive);

        let u = r.expect("import");
        assert_eq!(u.run.env, vec!["A=1"]);
        assert_eq!(u.source, "docker-archive");
        assert_eq!(
            std::fs::read(t.path().join("tree/etc/motd")).expect("motd"),
            b"hello\n"
        );
    }

    #[test]
    fn an_oci_layout_with_a_gzip_layer_is_imported_and_verified() {
        let layer = tar_of(&[("bin/tool", b"#!/bin/sh\n")]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &layer).expect("gz");
        let gz = gz.finish().expect("gz");
        let config = format!(r#"{{"rootfs":{{"diff_ids":["{}"]}}}}"#, sha(&layer));
        let manifest = format!(
            r#"{{"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},
                "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":{}}}]}}"#,
            sha(config.as_bytes()),
            config.len(),
            sha(&gz),
            gz.len()
        );
        let index = format!(
            r#"{{"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{}}}]}}"#,
            sha(manifest.as_bytes()),
            manifest.len()
        );
        let p = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
        let members: Vec<(String, Vec<u8>)> = vec![
            (
                "oci-layout".into(),
                br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            ),
            (p(&sha(&gz)), gz.clone()),
            (p(&sha(config.as_bytes())), config.clone().into_bytes()),
            (p(&sha(manifest.as_bytes())), manifest.clone().into_bytes()),
            ("index.json".into(), index.into_bytes()),
        ];
        let refs: Vec<(&str, &[u8])> = members
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();

        let (t, r) = import(&tar_of(&refs));
        r.expect("import");
        assert!(t.path().join("tree/bin/tool").exists());

        // The same archive with the layer blob corrupted is refused.
        let mut bad_members = members.clone();
        let mut corrupt = gz.clone();
        let last = corrupt.len() - 9;
        corrupt[last] ^= 0xff;
        bad_members[1].1 = corrupt;
        let refs: Vec<(&str, &[u8])> = bad_members
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        let (_t, r) = import(&tar_of(&refs));
        assert!(r.is_err());
    }

    #[test]
    fn something_else_is_refused_with_what_to_do() {
        let (_t, r) = import(&tar_of(&[("hello.txt", b"hi")]));
        let err = r.expect_err("not an image");
        assert!(err.to_string().contains("docker save"), "{err}");
        let (_t, r) = import(b"");
        assert!(r.is_err());
    }

    #[test]
    fn member_names_are_normalized_and_climbing_ones_dropped() {
        assert_eq!(normalize(b"./a//b/").as_deref(), Some("a/b"));
        assert_eq!(normalize(b"/abs").as_deref(), Some("abs"));
        assert_eq!(normalize(b"a/../../x"), None);
    }
}
