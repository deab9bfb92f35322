//! Images as the API shows them.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

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
    /// The sha256 of each file it was registered from (registered images
    /// only; absent for images pulled from the catalog).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<ImageFiles>,
}

/// The lowercase hex sha256 of each file an image was registered from, as
/// the client had it (the kernel before any bzImage conversion).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImageFiles {
    pub kernel_sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_sha256: Option<String>,
    pub rootfs_sha256: String,
}

/// `POST /v1/images/pull`: fetch or build a catalog image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PullImageRequest {
    pub name: String,
}

/// `POST /v1/images/upload`: the image's name and the size in bytes of each
/// file the body carries. The body (`application/octet-stream`) is, for
/// each part in the order kernel, initrd (when `initrd_bytes` is given),
/// rootfs: exactly that many bytes of the file, then the 32-byte sha256 of
/// those bytes. See docs/api.md.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UploadImageQuery {
    /// Name to register the image under.
    pub name: String,
    pub kernel_bytes: u64,
    #[serde(default)]
    pub initrd_bytes: Option<u64>,
    pub rootfs_bytes: u64,
}

/// The length of the sha256 that follows each part of an upload body.
pub const UPLOAD_DIGEST_LEN: usize = 32;

/// `POST /v1/images/register`: import an image from files on the host.
/// Root clients only: the daemon opens these paths with its own rights.
/// Everyone else uploads the files (`POST /v1/images/upload`).
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
