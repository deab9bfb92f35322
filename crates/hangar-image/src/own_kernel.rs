//! An imported image's own kernel (`/boot/vmlinuz-<version>`), used
//! instead of the default image's when Hangar can boot it: its
//! `/boot/config-<version>` says PVH entry (`CONFIG_PVH=y`), and each
//! virtio driver the initramfs loads is built in (`=y`) or a plain `.ko`
//! under `/lib/modules/<version>`. Otherwise the image gets the default
//! image's kernel, and the reason is reported.
//!
//! Everything is opened inside the tree (`openat2(RESOLVE_IN_ROOT)`):
//! the tree is an untrusted image's, so `/boot/vmlinuz -> /host/file`
//! resolves inside it, and the module walk follows no symlinks.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;

use nix::fcntl::OFlag;

use crate::finalize::open_in_root as open;
use crate::initramfs::ModuleIndex;
use crate::ImageError;

/// A kernel found in the tree, with its files open.
#[derive(Debug)]
pub struct OwnKernel {
    pub version: String,
    vmlinuz: OwnedFd,
    /// Its `/lib/modules/<version>`, kept open: the index's paths go
    /// through it.
    _modules: OwnedFd,
    /// The modules found there (walked once, without following links).
    pub modules: ModuleIndex,
}

impl OwnKernel {
    /// A path that opens the kernel file found (through this process's fd).
    pub fn vmlinuz_path(&self) -> PathBuf {
        fd_path(&self.vmlinuz)
    }
}

fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// What was found in `/boot`.
#[derive(Debug)]
pub enum Found {
    /// No `/boot/vmlinuz-*`: the default kernel, nothing to say.
    None,
    /// A kernel Hangar cannot boot, and why.
    Unusable(String),
    Usable(OwnKernel),
}

fn is_version(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-~".contains(&b))
}

/// The newest `/boot/vmlinuz-<version>` of the tree under `root`.
pub fn find(root: &OwnedFd) -> Result<Found, ImageError> {
    let Some(boot) = open(root, "boot", OFlag::O_DIRECTORY | OFlag::O_RDONLY)? else {
        return Ok(Found::None);
    };
    let mut versions: Vec<String> = std::fs::read_dir(fd_path(&boot))
        .map_err(|e| ImageError::io("list", PathBuf::from("/boot"), e))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let v = name.strip_prefix("vmlinuz-")?;
            is_version(v).then(|| v.to_string())
        })
        .collect();
    versions.sort();
    let Some(version) = versions.pop() else {
        return Ok(Found::None);
    };
    let unusable = |why: String| Ok(Found::Unusable(format!("its kernel {version}: {why}")));
    let Some(vmlinuz) = open(root, &format!("boot/vmlinuz-{version}"), OFlag::O_RDONLY)? else {
        return unusable("/boot/vmlinuz is a dangling link".into());
    };
    let st = nix::sys::stat::fstat(vmlinuz.as_fd())
        .map_err(|e| ImageError::io("stat", PathBuf::from("/boot"), e.into()))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return unusable("/boot/vmlinuz is not a file".into());
    }
    let config = match open(root, &format!("boot/config-{version}"), OFlag::O_RDONLY)? {
        Some(fd) => {
            use std::io::Read;
            let mut s = String::new();
            std::fs::File::from(fd)
                .take(4 << 20)
                .read_to_string(&mut s)
                .map_err(|e| ImageError::io("read", PathBuf::from("/boot/config"), e))?;
            s
        }
        None => return unusable(format!("no /boot/config-{version} to check it against")),
    };
    let set = |opt: &str, value: &str| config.lines().any(|l| l == format!("{opt}={value}"));
    if !set("CONFIG_PVH", "y") {
        return unusable("it has no PVH entry point (CONFIG_PVH)".into());
    }
    let Some(modules) = [
        format!("lib/modules/{version}"),
        format!("usr/lib/modules/{version}"),
    ]
    .iter()
    .find_map(|p| open(root, p, OFlag::O_DIRECTORY | OFlag::O_RDONLY).transpose())
    .transpose()?
    else {
        return unusable(format!("no /lib/modules/{version}"));
    };
    let index = ModuleIndex::walk(&fd_path(&modules))?;
    let lacking: Vec<&str> = index
        .missing()
        .into_iter()
        .filter(|m| {
            // Module names use '_'; config symbols are the upper-case name.
            let sym = format!("CONFIG_{}", m.to_ascii_uppercase());
            !set(&sym, "y") && relevant(m)
        })
        .collect();
    if !lacking.is_empty() {
        return unusable(format!(
            "the driver(s) {} are neither built in nor plain .ko modules",
            lacking.join(", ")
        ));
    }
    Ok(Found::Usable(OwnKernel {
        version,
        vmlinuz,
        _modules: modules,
        modules: index,
    }))
}

/// The modules a guest cannot boot without (the rest are helpers that a
/// kernel may not have at all, e.g. `failover` when virtio_net is built in).
fn relevant(module: &str) -> bool {
    matches!(
        module,
        "virtio_blk" | "virtio_net" | "virtio_pci" | "virtio_mmio"
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::path::Path;

    fn tree() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn write(root: &Path, rel: &str, body: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }

    fn find_in(t: &Path) -> Found {
        let root = OwnedFd::from(std::fs::File::open(t).unwrap());
        find(&root).unwrap()
    }

    const CONFIG: &str = "CONFIG_PVH=y\nCONFIG_VIRTIO_MMIO=y\nCONFIG_VIRTIO_PCI=y\n";

    fn kernel(t: &Path, v: &str, config: &str, modules: &[&str]) {
        write(t, &format!("boot/vmlinuz-{v}"), "kernel");
        write(t, &format!("boot/config-{v}"), config);
        for m in modules {
            write(
                t,
                &format!("usr/lib/modules/{v}/kernel/drivers/{m}.ko"),
                "ko",
            );
        }
        std::fs::create_dir_all(t.join(format!("usr/lib/modules/{v}"))).unwrap();
    }

    #[test]
    fn the_newest_bootable_kernel_is_found_through_a_merged_usr_link() {
        let t = tree();
        std::os::unix::fs::symlink("usr/lib", t.path().join("lib")).unwrap();
        kernel(t.path(), "6.1.0-1", CONFIG, &["virtio_blk", "virtio_net"]);
        kernel(t.path(), "6.1.0-2", CONFIG, &["virtio_blk", "virtio_net"]);
        match find_in(t.path()) {
            Found::Usable(k) => {
                assert_eq!(k.version, "6.1.0-2");
                assert_eq!(std::fs::read(k.vmlinuz_path()).unwrap(), b"kernel");
                // virtio_blk.ko was found there (the rest are not written).
                assert!(!k.modules.missing().contains(&"virtio_blk"));
                assert!(k.modules.missing().contains(&"virtio_pci"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_boot_dir_or_no_kernel_is_none_and_an_unbootable_one_says_why() {
        let t = tree();
        assert!(matches!(find_in(t.path()), Found::None));
        std::fs::create_dir(t.path().join("boot")).unwrap();
        assert!(matches!(find_in(t.path()), Found::None));

        kernel(t.path(), "5.0", "CONFIG_VIRTIO_BLK=y\n", &[]);
        let Found::Unusable(why) = find_in(t.path()) else {
            panic!()
        };
        assert!(why.contains("PVH"), "{why}");

        let t = tree();
        kernel(t.path(), "5.0", CONFIG, &["virtio_blk"]);
        let Found::Unusable(why) = find_in(t.path()) else {
            panic!()
        };
        assert!(why.contains("virtio_net"), "{why}");

        let t = tree();
        write(t.path(), "boot/vmlinuz-5.0", "kernel");
        let Found::Unusable(why) = find_in(t.path()) else {
            panic!()
        };
        assert!(why.contains("/boot/config-5.0"), "{why}");
    }

    #[test]
    fn links_out_of_the_tree_resolve_inside_it() {
        let outside = tree();
        write(outside.path(), "secret.ko", "host file");
        let t = tree();
        kernel(t.path(), "6.1", CONFIG, &["virtio_blk"]);
        // virtio_net.ko is a link to a host file: not taken as a module.
        std::os::unix::fs::symlink(
            outside.path().join("secret.ko"),
            t.path()
                .join("usr/lib/modules/6.1/kernel/drivers/virtio_net.ko"),
        )
        .unwrap();
        let Found::Unusable(why) = find_in(t.path()) else {
            panic!()
        };
        assert!(why.contains("virtio_net"), "{why}");
        // /boot/vmlinuz-X -> an absolute host path resolves in the tree.
        let t = tree();
        kernel(t.path(), "6.1", CONFIG, &["virtio_blk", "virtio_net"]);
        std::fs::remove_file(t.path().join("boot/vmlinuz-6.1")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret.ko"),
            t.path().join("boot/vmlinuz-6.1"),
        )
        .unwrap();
        let Found::Unusable(why) = find_in(t.path()) else {
            panic!()
        };
        assert!(why.contains("dangling"), "{why}");
    }
}
