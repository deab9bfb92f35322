//! Registers user-provided kernel/initrd/rootfs files as an image.

use std::path::{Path, PathBuf};

use crate::bootstrap::{remove_path, INITRD_FILE, KERNEL_FILE, ROOTFS_FILE};
use crate::cache::copy_file;
use crate::{kernel, rootfs, ImageError, ImageManifest};

/// Copies the files into `out_dir` as an image: a bzImage kernel (LZ4) is
/// converted to `vmlinux`, an ELF vmlinux is kept; the rootfs must be ext4.
/// Checks come before any copy; on a copy error what was written is removed.
pub fn import_files(
    kernel_path: &Path,
    initrd: Option<&Path>,
    rootfs_path: &Path,
    out_dir: &Path,
    source: &str,
) -> Result<ImageManifest, ImageError> {
    rootfs::check_ext4(rootfs_path)?;
    if let Some(i) = initrd {
        std::fs::metadata(i).map_err(|e| ImageError::io("read initrd", i, e))?;
    }
    let created = !out_dir.exists();
    hangar_host::private::create_private_dir(out_dir)
        .map_err(|e| ImageError::io("create", out_dir, e))?;
    let written: Vec<PathBuf> = [
        KERNEL_FILE,
        INITRD_FILE,
        ROOTFS_FILE,
        crate::manifest::MANIFEST_FILE,
    ]
    .iter()
    .map(|f| out_dir.join(f))
    .collect();
    let result = (|| {
        kernel::write_vmlinux(kernel_path, &out_dir.join(KERNEL_FILE))?;
        if let Some(i) = initrd {
            copy_file(i, &out_dir.join(INITRD_FILE))?;
        }
        copy_file(rootfs_path, &out_dir.join(ROOTFS_FILE))?;
        let bytes = std::fs::metadata(out_dir.join(ROOTFS_FILE))
            .map_err(|e| ImageError::io("stat", out_dir.join(ROOTFS_FILE), e))?
            .len();
        let m = ImageManifest::new(
            source,
            KERNEL_FILE,
            initrd.map(|_| INITRD_FILE),
            ROOTFS_FILE,
            bytes,
            None,
        );
        m.save(out_dir)?;
        Ok(m)
    })();
    if result.is_err() {
        if created {
            let _ = remove_path(out_dir);
        } else {
            for p in &written {
                let _ = remove_path(p);
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext4(path: &Path) {
        std::fs::File::create(path)
            .and_then(|f| f.set_len(8 << 20))
            .expect("create");
        hangar_host::Tool::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(path)
            .run_blocking()
            .expect("mkfs.ext4 (apt-get install e2fsprogs)");
    }

    #[test]
    fn import_of_elf_kernel_and_ext4_writes_manifest() {
        let d = tempfile::tempdir().expect("tempdir");
        let k = d.path().join("vmlinux-in");
        std::fs::write(&k, b"\x7fELF\x02rest-of-kernel").expect("write");
        let r = d.path().join("root.img");
        ext4(&r);
        let out = d.path().join("out");

        let m = import_files(&k, None, &r, &out, "register").expect("import");

        assert_eq!(m.kernel, "vmlinux");
        assert_eq!(m.initrd, None);
        assert_eq!(m.rootfs_bytes, 8 << 20);
        assert_eq!(ImageManifest::load(&out).expect("load"), m);
        assert_eq!(
            std::fs::read(out.join("vmlinux")).expect("read"),
            b"\x7fELF\x02rest-of-kernel"
        );
    }

    #[test]
    fn import_of_non_ext4_rootfs_fails_and_creates_nothing() {
        let d = tempfile::tempdir().expect("tempdir");
        let k = d.path().join("vmlinux-in");
        std::fs::write(&k, b"\x7fELF\x02x").expect("write");
        let r = d.path().join("root.img");
        std::fs::write(&r, vec![0u8; 8192]).expect("write");
        let out = d.path().join("out");

        let err = import_files(&k, None, &r, &out, "register").expect_err("must fail");

        assert!(matches!(err, ImageError::BadRootfs { .. }), "{err}");
        assert!(!out.exists());
    }

    #[test]
    fn import_of_unknown_kernel_fails_and_cleans_out_dir() {
        let d = tempfile::tempdir().expect("tempdir");
        let k = d.path().join("kernel");
        std::fs::write(&k, b"not a kernel").expect("write");
        let r = d.path().join("root.img");
        ext4(&r);
        let out = d.path().join("out");

        let err = import_files(&k, None, &r, &out, "register").expect_err("must fail");

        assert!(matches!(err, ImageError::BadKernel { .. }), "{err}");
        assert!(!out.exists());
    }

    #[test]
    fn import_of_missing_initrd_fails() {
        let d = tempfile::tempdir().expect("tempdir");
        let k = d.path().join("vmlinux-in");
        std::fs::write(&k, b"\x7fELF\x02x").expect("write");
        let r = d.path().join("root.img");
        ext4(&r);

        let err = import_files(
            &k,
            Some(&d.path().join("nope")),
            &r,
            &d.path().join("out"),
            "register",
        )
        .expect_err("must fail");

        assert!(err.to_string().contains("initrd"), "{err}");
    }
}
