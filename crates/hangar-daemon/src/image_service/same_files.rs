//! Whether a new image's files are those of the image already stored
//! under its digest. The digest is a hash of the manifest, which names
//! its files but not their content, so a bundle or upload could carry a
//! copy of another image's manifest with files of its own: storing it
//! under that digest must not hand those files to the real image's later
//! pulls (nor the real files to it).

use std::fs::File;
use std::io;
use std::path::Path;

use hangar_image::{fill, ImageManifest};

/// The first part (`kernel`, `initrd`, `rootfs`) whose file differs
/// between the image dirs `stored` and `new`, or `None` when all match.
pub(super) fn differing_part(stored: &Path, new: &Path) -> io::Result<Option<&'static str>> {
    let load = |dir: &Path| ImageManifest::load(dir).map_err(io::Error::other);
    let (a, b) = (load(stored)?, load(new)?);
    let parts: [(&'static str, Option<&String>, Option<&String>); 3] = [
        ("kernel", Some(&a.kernel), Some(&b.kernel)),
        ("initrd", a.initrd.as_ref(), b.initrd.as_ref()),
        ("rootfs", Some(&a.rootfs), Some(&b.rootfs)),
    ];
    for (part, x, y) in parts {
        let same = match (x, y) {
            (None, None) => true,
            (Some(x), Some(y)) => same_content(&stored.join(x), &new.join(y))?,
            _ => false,
        };
        if !same {
            return Ok(Some(part));
        }
    }
    Ok(None)
}

/// Byte-for-byte equality of two files (sizes first).
fn same_content(a: &Path, b: &Path) -> io::Result<bool> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fill(&mut fa, &mut ba)?;
        let m = fill(&mut fb, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(dir: &Path, rootfs: &[u8]) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("vmlinux"), b"kernel").unwrap();
        std::fs::write(dir.join("rootfs.ext4"), rootfs).unwrap();
        let m = ImageManifest::new(
            "t",
            "vmlinux",
            None,
            "rootfs.ext4",
            rootfs.len() as u64,
            None,
        );
        m.save(dir).unwrap();
    }

    #[test]
    fn the_same_files_match_and_another_rootfs_is_named() {
        let t = tempfile::tempdir().unwrap();
        let (a, b, c) = (t.path().join("a"), t.path().join("b"), t.path().join("c"));
        image(&a, b"root one");
        image(&b, b"root one");
        image(&c, b"root two");
        assert_eq!(differing_part(&a, &b).unwrap(), None);
        assert_eq!(differing_part(&a, &c).unwrap(), Some("rootfs"));
    }
}
