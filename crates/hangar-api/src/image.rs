//! Images as the API shows them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An image present in the local store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImageInfo {
    pub name: String,
    /// `sha256:<hex>` over the manifest.
    pub digest: String,
    /// Where it came from, e.g. `bootstrap:debian-12` or `register`.
    pub source: String,
    pub rootfs_bytes: u64,
    pub created_at: String,
    /// VMs that use it (an image in use cannot be removed).
    pub used_by: Vec<String>,
}

/// `POST /v1/images/pull`: fetch or build a catalog image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PullImageRequest {
    pub name: String,
}

/// `POST /v1/images/register`: import an image from files on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterImageRequest {
    pub name: String,
    /// Uncompressed ELF vmlinux (PVH) or bzImage (qemu only).
    pub kernel: String,
    #[serde(default)]
    pub initrd: Option<String>,
    /// ext4 root filesystem image.
    pub rootfs: String,
}

/// A catalog entry (`GET /v1/images/catalog`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CatalogEntry {
    pub name: String,
    pub description: String,
    /// Whether it is present locally.
    pub local: bool,
}
