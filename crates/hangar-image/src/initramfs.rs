//! Our own initramfs: static busybox, the virtio modules and `/init` (see
//! `assets/initramfs-init`). Debian's initramfs-tools would take longer to
//! build and to boot.

use std::path::{Path, PathBuf};

use crate::cpio::CpioWriter;
use crate::{assets, ImageError};

/// Modules copied into the initramfs, in load order. `/init` loads the
/// mmio set always and the pci set only when the guest has PCI devices.
pub const MODULES: &[&str] = &[
    "virtio",
    "virtio_ring",
    "virtio_mmio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "virtio_blk",
    "failover",
    "net_failover",
    "virtio_net",
];

/// Finds `/lib/modules/<version>` in a tree (the only one, or the newest).
pub fn modules_dir(tree: &Path) -> Result<PathBuf, ImageError> {
    let base = tree.join("lib/modules");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(&base)
        .map_err(|_| ImageError::MissingInTree {
            path: tree.to_path_buf(),
            what: "/lib/modules (no kernel installed)".into(),
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    versions.sort();
    versions.pop().ok_or_else(|| ImageError::MissingInTree {
        path: tree.to_path_buf(),
        what: "a kernel version under /lib/modules".into(),
    })
}

/// The `.ko` files under a `/lib/modules/<version>`: module name → path.
#[derive(Debug, Default)]
pub struct ModuleIndex(Vec<(String, PathBuf)>);

impl ModuleIndex {
    /// Walks `dir` recursively. Symlinks are neither followed nor taken:
    /// the tree may be an untrusted image's.
    pub fn walk(dir: &Path) -> Result<ModuleIndex, ImageError> {
        let mut found = Vec::new();
        walk_modules(dir, &mut found).map_err(|e| ImageError::io("list modules in", dir, e))?;
        Ok(ModuleIndex(found))
    }

    fn get(&self, module: &str) -> Option<&Path> {
        self.0
            .iter()
            .find(|(n, _)| n == module)
            .map(|(_, p)| p.as_path())
    }

    /// Names of [`MODULES`] it lacks as plain `.ko` files.
    pub fn missing(&self) -> Vec<&'static str> {
        MODULES
            .iter()
            .copied()
            .filter(|m| self.get(m).is_none())
            .collect()
    }
}

fn walk_modules(dir: &Path, found: &mut Vec<(String, PathBuf)>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        let kind = e.file_type()?;
        if kind.is_dir() {
            walk_modules(&p, found)?;
        } else if !kind.is_file() {
            continue;
        } else if let Some(name) = p.file_name().and_then(|n| n.to_str()) {
            if let Some(stem) = name.strip_suffix(".ko") {
                found.push((stem.to_string(), p.clone()));
            }
        }
    }
    Ok(())
}

/// Builds the initramfs from a tree that has `/bin/busybox` (static) and a
/// kernel's modules. Modules that are absent (built in) are skipped;
/// compressed modules are not supported (Debian 12 ships plain `.ko`).
pub fn build_initramfs(tree: &Path) -> Result<Vec<u8>, ImageError> {
    let busybox_path = tree.join("bin/busybox");
    let busybox = std::fs::read(&busybox_path).map_err(|_| ImageError::MissingInTree {
        path: tree.to_path_buf(),
        what: "/bin/busybox (package busybox-static)".into(),
    })?;
    build_initramfs_with(&busybox, &ModuleIndex::walk(&modules_dir(tree)?)?)
}

/// Builds the initramfs from a static busybox and a kernel's modules.
pub fn build_initramfs_with(busybox: &[u8], modules: &ModuleIndex) -> Result<Vec<u8>, ImageError> {
    let mut w = CpioWriter::new();
    for d in ["bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules"] {
        w.dir(d, 0o755);
    }
    w.char_dev("dev/console", 0o600, 5, 1);
    w.char_dev("dev/null", 0o666, 1, 3);
    w.file("bin/busybox", 0o755, busybox);
    w.symlink("bin/sh", "busybox");
    w.file("init", 0o755, assets::INITRAMFS_INIT.as_bytes());
    for m in MODULES {
        if let Some(path) = modules.get(m) {
            let body = std::fs::read(path).map_err(|e| ImageError::io("read module", path, e))?;
            w.file(&format!("lib/modules/{m}.ko"), 0o644, &body);
        } else {
            tracing::debug!(module = m, "module not found; assuming built in");
        }
    }
    Ok(w.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initramfs_contains_init_busybox_and_found_modules() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = dir.path();
        std::fs::create_dir_all(t.join("bin")).expect("mkdir");
        std::fs::write(t.join("bin/busybox"), b"BUSYBOX").expect("write");
        let k = t.join("lib/modules/6.1.0-test/kernel/drivers/block");
        std::fs::create_dir_all(&k).expect("mkdir");
        std::fs::write(k.join("virtio_blk.ko"), b"KO").expect("write");

        let data = build_initramfs(t).expect("build");

        let text = String::from_utf8_lossy(&data);
        assert!(text.contains("lib/modules/virtio_blk.ko"));
        assert!(text.contains("bin/busybox"));
        assert!(text.contains("rdinit") || text.contains("switch_root"));
        assert!(!text.contains("lib/modules/virtio_net.ko"));
    }

    #[test]
    fn initramfs_without_busybox_says_which_package() {
        let dir = tempfile::tempdir().expect("tempdir");

        let err = build_initramfs(dir.path()).expect_err("must fail");

        assert!(err.to_string().contains("busybox-static"));
    }
}
