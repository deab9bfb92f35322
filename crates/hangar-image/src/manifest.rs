//! `manifest.json`: what an image directory holds.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ImageError;

/// File name of the manifest inside an image directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Describes one image directory (`kernel`, optional `initrd`, `rootfs`,
/// all file names relative to the directory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageManifest {
    /// `sha256:<hex>` over this manifest with `digest` empty (see
    /// [`ImageManifest::compute_digest`]). It identifies a build: the same
    /// files copied elsewhere keep it.
    pub digest: String,
    /// Where it came from, e.g. `bootstrap:debian-12` or `register`.
    pub source: String,
    /// Uncompressed PVH ELF kernel, normally `vmlinux`.
    pub kernel: String,
    /// Initramfs (newc cpio), normally `initrd.img`.
    #[serde(default)]
    pub initrd: Option<String>,
    /// ext4 root filesystem, normally `rootfs.ext4`.
    pub rootfs: String,
    /// Apparent size of the rootfs file in bytes (what the guest sees).
    pub rootfs_bytes: u64,
    /// RFC 3339.
    pub created_at: String,
    /// Recipe cache key for bootstrapped images.
    #[serde(default)]
    pub recipe_key: Option<String>,
    /// The image boots Hangar's own initramfs (built by Hangar, or
    /// registered with it): its init waits at its snapshot point when given
    /// a snapshot drive (see `identity::SNAPSHOT_MARKER`), so the daemon
    /// may save and restore its boots, and the daemon brings the guest
    /// agent into it. Images with other initrds are booted cold, as they
    /// are. Left out of the JSON when false, so older manifests keep their
    /// digest.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub boot_snapshots: bool,
    /// The sha256 of each file as the user gave it (registered images).
    /// Left out of the JSON when absent, so older manifests keep their digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<FileDigests>,
    /// How to run it, from its OCI image config (OCI images only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<crate::sources::RunConfig>,
    /// The digest of the image whose kernel and initramfs it boots (OCI
    /// images without their own kernel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_from: Option<String>,
    /// Where a promoted image came from (`image promote VM NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Lineage>,
}

/// A promoted image's lineage: the image its VM was created from, the VM,
/// and when its disk became this image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    /// `sha256:…` of the parent image's manifest.
    pub image: String,
    /// The parent image's name at promotion time.
    pub image_name: String,
    pub vm: String,
    /// RFC 3339.
    pub promoted_at: String,
}

/// Lowercase hex sha256 of each file an image was registered from (the
/// kernel as given, before any bzImage conversion).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigests {
    pub kernel: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    pub rootfs: String,
}

impl ImageManifest {
    /// Builds a manifest with a fresh `created_at` and its digest set.
    pub fn new(
        source: &str,
        kernel: &str,
        initrd: Option<&str>,
        rootfs: &str,
        rootfs_bytes: u64,
        recipe_key: Option<String>,
    ) -> Self {
        let mut m = ImageManifest {
            digest: String::new(),
            source: source.to_string(),
            kernel: kernel.to_string(),
            initrd: initrd.map(str::to_string),
            rootfs: rootfs.to_string(),
            rootfs_bytes,
            created_at: hangar_host::time::now_utc(),
            recipe_key,
            boot_snapshots: false,
            files: None,
            run: None,
            kernel_from: None,
            parent: None,
        };
        m.digest = m.compute_digest();
        m
    }

    /// This manifest with the files' digests recorded (and its own digest
    /// recomputed over them).
    pub fn with_files(mut self, files: FileDigests) -> Self {
        self.files = Some(files);
        self.digest = self.compute_digest();
        self
    }

    /// Marks an image whose initrd is Hangar's own initramfs: it waits at
    /// the snapshot point and runs Hangar's guest agent.
    pub fn with_hangar_initramfs(mut self, yes: bool) -> Self {
        self.boot_snapshots = yes;
        self.digest = self.compute_digest();
        self
    }

    /// This manifest with the image config's run settings and the kernel
    /// image it borrows its kernel from.
    pub fn with_run(mut self, run: crate::sources::RunConfig, kernel_from: &str) -> Self {
        self.run = Some(run);
        self.kernel_from = Some(kernel_from.to_string());
        self.digest = self.compute_digest();
        self
    }

    /// A new image made of a VM's disk: this manifest (the parent image's)
    /// with the new source, rootfs size and lineage, and a fresh digest.
    pub fn promoted(&self, source: &str, rootfs_bytes: u64, parent: Lineage) -> Self {
        let mut m = self.clone();
        m.source = source.to_string();
        m.rootfs_bytes = rootfs_bytes;
        m.created_at = hangar_host::time::now_utc();
        m.recipe_key = None;
        m.files = None;
        m.parent = Some(parent);
        m.digest = m.compute_digest();
        m
    }

    /// `sha256:<hex>` of the JSON of this manifest with `digest` empty.
    pub fn compute_digest(&self) -> String {
        let mut copy = self.clone();
        copy.digest = String::new();
        let json = serde_json::to_vec(&copy).unwrap_or_default();
        format!("sha256:{}", hex::encode(Sha256::digest(&json)))
    }

    /// Reads `DIR/manifest.json`.
    pub fn load(dir: &Path) -> Result<Self, ImageError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read(&path).map_err(|e| ImageError::io("read", &path, e))?;
        serde_json::from_slice(&text).map_err(|source| ImageError::BadManifest { path, source })
    }

    /// Writes `DIR/manifest.json` (via a temp file and rename, so readers
    /// never see half a manifest).
    pub fn save(&self, dir: &Path) -> Result<(), ImageError> {
        let path = dir.join(MANIFEST_FILE);
        let tmp = dir.join(".manifest.json.tmp");
        let json = serde_json::to_vec_pretty(self).map_err(|source| ImageError::BadManifest {
            path: path.clone(),
            source,
        })?;
        hangar_host::private::write_private(&tmp, json)
            .map_err(|e| ImageError::io("write", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| ImageError::io("rename into place", &path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_through_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = ImageManifest::new(
            "bootstrap:debian-12",
            "vmlinux",
            Some("initrd.img"),
            "rootfs.ext4",
            2 << 30,
            Some("abc".into()),
        );

        m.save(dir.path()).expect("save");
        let loaded = ImageManifest::load(dir.path()).expect("load");

        assert_eq!(loaded, m);
        assert!(loaded.digest.starts_with("sha256:"));
        assert_eq!(loaded.digest, loaded.compute_digest());
    }

    #[test]
    fn load_of_garbage_returns_bad_manifest() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(MANIFEST_FILE), b"{not json").expect("write");

        let err = ImageManifest::load(dir.path()).expect_err("must fail");

        assert!(matches!(err, ImageError::BadManifest { .. }));
    }

    #[test]
    fn a_manifest_without_files_keeps_its_json_and_digest() {
        let m = ImageManifest::new("a", "vmlinux", None, "rootfs.ext4", 1, None);
        let json = serde_json::to_string(&m).expect("json");
        assert!(!json.contains("files"), "{json}");

        let with = m.clone().with_files(FileDigests {
            kernel: "aa".into(),
            initrd: None,
            rootfs: "bb".into(),
        });

        assert_ne!(with.digest, m.digest);
        assert_eq!(with.digest, with.compute_digest());
    }

    #[test]
    fn digest_depends_on_source() {
        let a = ImageManifest::new("a", "vmlinux", None, "rootfs.ext4", 1, None);
        let mut b = a.clone();
        b.source = "b".into();

        assert_ne!(a.compute_digest(), b.compute_digest());
    }
}
