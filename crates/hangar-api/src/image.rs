//! Images as the API shows them.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// An image present in the local store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImageInfo {
    /// The name it was asked for by; shown by digest or listed, its first
    /// name. Empty for a dangling image (its name now names newer content).
    pub name: String,
    /// Every name of the image, sorted: an image stays until its last name
    /// is removed.
    #[serde(default)]
    pub names: Vec<String>,
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
    /// How the image runs, from its OCI image config (OCI images only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<ImageRun>,
    /// Where a promoted image came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ImageLineage>,
    /// Where an imported image's kernel comes from (OCI images only):
    /// `image:/boot/vmlinuz-<version>` for its own, else the digest of the
    /// image whose kernel and initramfs it boots with (the default image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_from: Option<String>,
}

/// A promoted image's lineage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImageLineage {
    /// The parent image's digest (`sha256:…`).
    pub image: String,
    /// The parent image's name when it was promoted.
    pub image_name: String,
    /// The VM whose disk became the image.
    pub vm: String,
    /// RFC 3339.
    pub promoted_at: String,
}

/// `POST /v1/images/{name}/tag`: one more name for an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TagImageRequest {
    /// The new name: 1-63 lowercase letters, digits or `-`.
    pub name: String,
}

/// `POST /v1/images/promote`: a VM's disk becomes a new image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteImageRequest {
    /// The VM whose disk to take.
    pub vm: String,
    /// The new image's name.
    pub name: String,
    /// Stop the VM for the copy when it runs, and start it again after
    /// (otherwise a running VM is refused).
    #[serde(default)]
    pub stop: bool,
}

/// An OCI image's run settings: `exec` uses its environment, user and
/// working directory; `--run-entrypoint` its entrypoint and command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImageRun {
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
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

/// `POST /v1/images/pull`: fetch or build a catalog image, or pull an
/// image from an OCI registry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PullImageRequest {
    /// A catalog name (`debian-12`), or an OCI reference
    /// (`REGISTRY/REPOSITORY[:TAG][@DIGEST]`, told apart by its `/`).
    pub name: String,
    /// Name to keep an OCI image under [default: the repository's last
    /// component, e.g. `golden` for `127.0.0.1:5000/team/golden:v3`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_name: Option<String>,
    /// Plain HTTP: allowed only for a registry on a loopback address.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// Registry credentials, read by the CLI from the invoking user's
    /// `~/.docker/config.json` (the daemon never reads root's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<RegistryCredentials>,
    /// For a bundle URL: the sha256 (64 hex digits) the bundle file must
    /// have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// Whether a pull name is a bundle URL (`https://…`, or `http://` from a
/// loopback address).
pub fn is_bundle_url(name: &str) -> bool {
    name.starts_with("https://") || name.starts_with("http://")
}

/// `POST /v1/images/bundle`: the name to keep a bundle the client streams
/// under, and the sha256 it must have. The body is the bundle file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BundleQuery {
    pub name: String,
    #[serde(default)]
    pub sha256: Option<String>,
}

/// Credentials for one registry. Never logged or stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistryCredentials {
    /// With `password`: basic auth (also used to obtain a bearer token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// A registry token, sent as is (docker's `registrytoken`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// An OAuth2 refresh token (docker's `identitytoken`, or a credential
    /// helper's `<token>` answer): exchanged at the registry's token server
    /// for an access token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_token: Option<String>,
}

impl std::fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCredentials")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field(
                "identity_token",
                &self.identity_token.as_ref().map(|_| "***"),
            )
            .finish()
    }
}

/// Whether a pull name is an OCI reference rather than a catalog name:
/// references have a registry (`host/…`), catalog names never contain `/`.
pub fn is_oci_reference(name: &str) -> bool {
    name.contains('/') && !name.contains("://")
}

/// `POST /v1/images/import`: the name to keep the image under. The body
/// is the archive (`application/x-tar`, optionally gzip or zstd): a
/// docker-archive (`docker save`) or an OCI image layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ImportImageQuery {
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
    /// Where it comes from: `bootstrap:NAME`, `oci:REFERENCE` or
    /// `bundle:URL`.
    #[serde(default)]
    pub source: String,
    /// Whether it is present locally.
    pub local: bool,
    /// The disk size (bytes) of a VM made from it when `vm create` names
    /// none; absent: the daemon's default, else the image's own size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_bytes: Option<u64>,
}
