//! The built-in catalog: image names the daemon knows how to obtain. There
//! is no hosted artifact to download: the default image is built locally
//! from Debian packages.

use crate::Recipe;

/// A named image the daemon knows how to obtain.
pub struct CatalogItem {
    pub name: &'static str,
    pub description: &'static str,
    pub recipe: fn() -> Recipe,
}

/// Every catalog image.
pub fn catalog() -> Vec<CatalogItem> {
    vec![CatalogItem {
        name: "debian-12",
        description: "Debian 12 (bookworm) minbase with the cloud kernel, openssh-server, tmux, git, curl, sudo; built locally with debootstrap",
        recipe: Recipe::default_debian12,
    }]
}

/// The catalog item called `name`.
pub fn find(name: &str) -> Option<CatalogItem> {
    catalog().into_iter().find(|c| c.name == name)
}

/// The catalog image whose kernel and initramfs boot OCI images that bring
/// no kernel of their own.
pub const KERNEL_IMAGE: &str = "debian-12";
