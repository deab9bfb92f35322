//! The recipe of a bootstrapped image: what debootstrap installs, from where.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{assets, mirror};

/// A distro bootstrap recipe. The default (`debian-12`) is embedded, so the
/// default image needs no hosted artifact: it is built from Debian packages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipe {
    /// Catalog name, e.g. `debian-12`; recorded as `bootstrap:<name>`.
    pub name: String,
    /// Debian suite passed to debootstrap.
    pub suite: String,
    /// Debian archive URL.
    pub mirror: String,
    /// Packages installed by debootstrap (`--include`).
    pub packages: Vec<String>,
    /// Kernel package, installed after debootstrap without building a Debian
    /// initramfs (we ship our own).
    pub kernel_package: String,
    /// Apparent size of `rootfs.ext4` in bytes (sparse).
    pub rootfs_size_bytes: u64,
}

impl Recipe {
    /// `debian-12`: bookworm minbase with sshd, tmux, git, rsync, the cloud kernel.
    pub fn default_debian12() -> Self {
        Recipe {
            name: "debian-12".to_string(),
            suite: "bookworm".to_string(),
            mirror: mirror::host_debian_mirror(),
            packages: [
                "openssh-server",
                "tmux",
                "git",
                "ca-certificates",
                "iproute2",
                "sudo",
                "curl",
                "tini",
                "busybox-static",
                "less",
                "procps",
                // `rsync -e ssh` to a VM (`hangar ssh-config`) runs rsync there.
                "rsync",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            kernel_package: "linux-image-cloud-amd64".to_string(),
            rootfs_size_bytes: 2 << 30,
        }
    }

    /// `bootstrap:<name>`, the manifest's `source`.
    pub fn source(&self) -> String {
        format!("bootstrap:{}", self.name)
    }

    /// Hex sha256 over the recipe and the embedded guest assets: a change
    /// to either gives a new key, so cached images are never stale.
    pub fn cache_key(&self) -> String {
        let mut h = Sha256::new();
        h.update(assets::BUILD_FORMAT.as_bytes());
        h.update([0]);
        // Serializing a plain struct of strings cannot fail; fall back to
        // Debug output rather than panic.
        let json = serde_json::to_vec(self).unwrap_or_else(|_| format!("{self:?}").into_bytes());
        h.update(&json);
        for (name, body) in assets::all() {
            h.update([0]);
            h.update(name.as_bytes());
            h.update([0]);
            h.update((body.len() as u64).to_le_bytes());
            h.update(body.as_bytes());
        }
        hex::encode(h.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_key_is_stable_for_same_recipe() {
        let a = Recipe::default_debian12();
        let b = a.clone();

        assert_eq!(a.cache_key(), b.cache_key());
        assert_eq!(a.cache_key().len(), 64);
    }

    #[test]
    fn cache_key_changes_with_packages() {
        let a = Recipe::default_debian12();
        let mut b = a.clone();
        b.packages.push("vim".to_string());

        assert_ne!(a.cache_key(), b.cache_key());
    }

    #[test]
    fn cache_key_changes_with_mirror() {
        let a = Recipe::default_debian12();
        let mut b = a.clone();
        b.mirror = "http://other.example/debian".to_string();

        assert_ne!(a.cache_key(), b.cache_key());
    }

    #[test]
    fn default_recipe_includes_ssh_tmux_git_and_kernel() {
        let r = Recipe::default_debian12();

        for p in [
            "openssh-server",
            "tmux",
            "git",
            "tini",
            "busybox-static",
            "rsync",
        ] {
            assert!(r.packages.iter().any(|x| x == p), "missing {p}");
        }
        assert_eq!(r.kernel_package, "linux-image-cloud-amd64");
        assert_eq!(r.suite, "bookworm");
    }
}
