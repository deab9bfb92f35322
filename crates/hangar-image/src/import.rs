//! Registers user-provided kernel/initrd/rootfs files as an image: files a
//! client streamed to the daemon ([`finish_upload`]), or, for root clients
//! only, files at host paths ([`import_files`]). Either way every file is
//! streamed (copied and hashed a buffer at a time), never read whole.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::bootstrap::{remove_path, INITRD_FILE, KERNEL_FILE, ROOTFS_FILE};
use crate::cache::copy_file;
use crate::manifest::FileDigests;
use crate::{kernel, rootfs, ImageError, ImageManifest};

/// Where an upload's kernel lands before it is checked and converted to
/// [`KERNEL_FILE`] (a bzImage is unpacked, an ELF copied).
pub const UPLOADED_KERNEL_FILE: &str = "kernel.upload";

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
        let kernel_sha256 = sha256_file(kernel_path)?;
        kernel::write_vmlinux(kernel_path, &out_dir.join(KERNEL_FILE))?;
        let initrd_sha256 = match initrd {
            Some(i) => {
                copy_file(i, &out_dir.join(INITRD_FILE))?;
                Some(sha256_file(&out_dir.join(INITRD_FILE))?)
            }
            None => None,
        };
        copy_file(rootfs_path, &out_dir.join(ROOTFS_FILE))?;
        let files = FileDigests {
            kernel: kernel_sha256,
            initrd: initrd_sha256,
            rootfs: sha256_file(&out_dir.join(ROOTFS_FILE))?,
        };
        save_manifest(out_dir, files, source)
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

/// Turns a directory a client uploaded into (`kernel.upload`, optional
/// `initrd.img`, `rootfs.ext4`, with their sha256s already checked by the
/// receiver) into an image: checks the rootfs is ext4, converts the kernel
/// and writes the manifest. On error the caller removes `out_dir`.
pub fn finish_upload(
    out_dir: &Path,
    files: FileDigests,
    source: &str,
) -> Result<ImageManifest, ImageError> {
    rootfs::check_ext4(&out_dir.join(ROOTFS_FILE))?;
    let uploaded = out_dir.join(UPLOADED_KERNEL_FILE);
    kernel::write_vmlinux(&uploaded, &out_dir.join(KERNEL_FILE))?;
    std::fs::remove_file(&uploaded).map_err(|e| ImageError::io("remove", &uploaded, e))?;
    save_manifest(out_dir, files, source)
}

fn save_manifest(
    out_dir: &Path,
    files: FileDigests,
    source: &str,
) -> Result<ImageManifest, ImageError> {
    let rootfs = out_dir.join(ROOTFS_FILE);
    let bytes = std::fs::metadata(&rootfs)
        .map_err(|e| ImageError::io("stat", &rootfs, e))?
        .len();
    let has_initrd = files.initrd.is_some();
    let hangars = has_initrd && is_hangar_initramfs(&out_dir.join(INITRD_FILE))?;
    let m = ImageManifest::new(
        source,
        KERNEL_FILE,
        has_initrd.then_some(INITRD_FILE),
        ROOTFS_FILE,
        bytes,
        None,
    )
    .with_files(files)
    .with_hangar_initramfs(hangars);
    m.save(out_dir)?;
    Ok(m)
}

/// The first line of Hangar's `/init`: an uncompressed initrd that holds
/// it is Hangar's initramfs (e.g. the default image's `initrd.img` given
/// with the user's own rootfs).
const HANGAR_INIT_MARKER: &[u8] = b"# Hangar initramfs /init (busybox).";

/// Looks for Hangar's `/init` in an initrd, a buffer at a time.
fn is_hangar_initramfs(path: &Path) -> Result<bool, ImageError> {
    let err = |e| ImageError::io("read", path, e);
    let mut f = std::fs::File::open(path).map_err(err)?;
    let keep = HANGAR_INIT_MARKER.len();
    let mut buf = vec![0u8; 1 << 20];
    let mut filled = 0;
    loop {
        let n = f.read(&mut buf[filled..]).map_err(err)?;
        if n == 0 {
            return Ok(false);
        }
        filled += n;
        if buf[..filled].windows(keep).any(|w| w == HANGAR_INIT_MARKER) {
            return Ok(true);
        }
        // Keep the tail, so a marker across two reads is found.
        let tail = filled.saturating_sub(keep);
        buf.copy_within(tail..filled, 0);
        filled -= tail;
    }
}

/// Lowercase hex sha256 of a file, read a buffer at a time.
pub fn sha256_file(path: &Path) -> Result<String, ImageError> {
    let err = |e| ImageError::io("read", path, e);
    let mut f = std::fs::File::open(path).map_err(err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn hangars_initramfs_is_recognised_even_across_read_buffers() {
        let t = tempfile::tempdir().expect("tempdir");
        let p = t.path().join("initrd.img");
        let mut body = vec![b'x'; (1 << 20) - 10];
        body.extend_from_slice(crate::assets::INITRAMFS_INIT.as_bytes());
        std::fs::write(&p, &body).expect("write");
        assert!(is_hangar_initramfs(&p).expect("scan"));
        std::fs::write(&p, b"070701 some other initramfs /init").expect("write");
        assert!(!is_hangar_initramfs(&p).expect("scan"));
    }

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
        let files = m.files.clone().expect("digests recorded");
        assert_eq!(files.kernel, sha256_file(&k).expect("hash"));
        assert_eq!(files.rootfs, sha256_file(&r).expect("hash"));
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

    #[test]
    fn finish_upload_converts_the_kernel_and_records_the_digests() {
        let d = tempfile::tempdir().expect("tempdir");
        let out = d.path();
        std::fs::write(out.join(UPLOADED_KERNEL_FILE), b"\x7fELF\x02k").expect("write");
        std::fs::write(out.join(INITRD_FILE), b"initrd").expect("write");
        ext4(&out.join(ROOTFS_FILE));
        let files = FileDigests {
            kernel: "k".into(),
            initrd: Some("i".into()),
            rootfs: "r".into(),
        };

        let m = finish_upload(out, files.clone(), "register").expect("finish");

        assert_eq!(m.files, Some(files));
        assert_eq!(m.initrd.as_deref(), Some(INITRD_FILE));
        assert!(!out.join(UPLOADED_KERNEL_FILE).exists());
        assert_eq!(
            std::fs::read(out.join(KERNEL_FILE)).expect("read"),
            b"\x7fELF\x02k"
        );
        assert_eq!(ImageManifest::load(out).expect("load"), m);
    }

    #[test]
    fn finish_upload_of_non_ext4_rootfs_fails() {
        let d = tempfile::tempdir().expect("tempdir");
        let out = d.path();
        std::fs::write(out.join(UPLOADED_KERNEL_FILE), b"\x7fELF\x02k").expect("write");
        std::fs::write(out.join(ROOTFS_FILE), vec![0u8; 8192]).expect("write");
        let files = FileDigests {
            kernel: "k".into(),
            initrd: None,
            rootfs: "r".into(),
        };

        let err = finish_upload(out, files, "register").expect_err("must fail");

        assert!(matches!(err, ImageError::BadRootfs { .. }), "{err}");
    }
}
