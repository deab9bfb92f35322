//! Copy backend: a sparse copy of the image for filesystems without reflinks.
//! Holes in the image stay holes (SEEK_DATA/SEEK_HOLE), and all-zero blocks
//! inside data regions are skipped too, so a mostly-empty rootfs costs only
//! what it really holds.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::create::{create_disk, image_info, remove_disk, Fill};
use crate::{space, DiskBackend, StorageError};

/// Read/write granularity; big enough to keep syscalls cheap.
const CHUNK: usize = 1024 * 1024;
/// Zero-detection granularity (a multiple of every common fs block size).
const BLOCK: usize = 64 * 1024;

/// Sparse full copy; works on any filesystem.
#[derive(Debug, Default, Clone, Copy)]
pub struct CopyBackend;

impl Fill for CopyBackend {
    fn fill(
        &self,
        src: &File,
        src_path: &Path,
        dst: &File,
        dst_path: &Path,
    ) -> Result<(), StorageError> {
        let info = image_info(src_path)?;
        let dir = space::parent_dir(dst_path);
        let free = space::free_bytes(&dir)
            .map_err(|e| StorageError::io("query free space of", &dir, e))?;
        if info.allocated > free {
            return Err(StorageError::NoSpace {
                dir,
                need: info.allocated,
                free,
            });
        }
        sparse_copy(src, src_path, dst, dst_path, info.len)
    }
}

impl DiskBackend for CopyBackend {
    fn name(&self) -> &'static str {
        "copy"
    }

    fn create(
        &self,
        image_rootfs: &Path,
        dest: &Path,
        size_bytes: u64,
    ) -> Result<(), StorageError> {
        create_disk(self, image_rootfs, dest, size_bytes)
    }

    fn remove(&self, dest: &Path) -> Result<(), StorageError> {
        remove_disk(dest)
    }
}

/// Copies the data regions of `src` into `dst` at the same offsets and sets
/// `dst` to `len` bytes. ENOSPC becomes [`StorageError::NoSpace`].
pub(crate) fn sparse_copy(
    src: &File,
    src_path: &Path,
    dst: &File,
    dst_path: &Path,
    len: u64,
) -> Result<(), StorageError> {
    let mut buf = vec![0u8; CHUNK];
    let mut copied: u64 = 0;
    for (start, end) in
        data_regions(src, len).map_err(|e| StorageError::io("scan image rootfs", src_path, e))?
    {
        let mut off = start;
        while off < end {
            let want = usize::try_from((end - off).min(CHUNK as u64)).unwrap_or(CHUNK);
            let got = read_full_at(src, &mut buf[..want], off)
                .map_err(|e| StorageError::io("read image rootfs", src_path, e))?;
            if got == 0 {
                break;
            }
            write_nonzero_runs(dst, &buf[..got], off).map_err(|e| {
                if space::is_enospc(&e) {
                    space::no_space(dst_path, len.saturating_sub(copied))
                } else {
                    StorageError::io("write disk", dst_path, e)
                }
            })?;
            off += got as u64;
            copied += got as u64;
        }
    }
    dst.set_len(len)
        .map_err(|e| StorageError::io("size disk", dst_path, e))?;
    Ok(())
}

fn read_full_at(f: &File, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Writes `buf` (which belongs at `off`) skipping all-zero BLOCK-sized pieces,
/// coalescing adjacent non-zero pieces into one write.
fn write_nonzero_runs(dst: &File, buf: &[u8], off: u64) -> std::io::Result<()> {
    let mut run_start: Option<usize> = None;
    let mut pos = 0;
    while pos < buf.len() {
        let end = (pos + BLOCK).min(buf.len());
        let zero = buf[pos..end].iter().all(|&b| b == 0);
        match (zero, run_start) {
            (false, None) => run_start = Some(pos),
            (true, Some(s)) => {
                dst.write_all_at(&buf[s..pos], off + s as u64)?;
                run_start = None;
            }
            _ => {}
        }
        pos = end;
    }
    if let Some(s) = run_start {
        dst.write_all_at(&buf[s..], off + s as u64)?;
    }
    Ok(())
}

/// The `[start, end)` byte ranges of `f` that hold data. Falls back to the
/// whole file when the filesystem cannot answer SEEK_DATA.
pub(crate) fn data_regions(f: &File, len: u64) -> std::io::Result<Vec<(u64, u64)>> {
    let fd = f.as_raw_fd();
    let mut regions = Vec::new();
    let mut off: u64 = 0;
    while off < len {
        let data = match lseek(fd, off, libc::SEEK_DATA) {
            Ok(d) => d,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && regions.is_empty() => {
                return Ok(vec![(0, len)]);
            }
            Err(e) => return Err(e),
        };
        let hole = lseek(fd, data, libc::SEEK_HOLE)?.min(len);
        if hole > data {
            regions.push((data, hole));
        }
        off = hole.max(data + 1);
    }
    Ok(regions)
}

fn lseek(fd: i32, off: u64, whence: i32) -> std::io::Result<u64> {
    let off = libc::off_t::try_from(off)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: plain syscall on an fd the caller keeps open.
    let rc = unsafe { libc::lseek(fd, off, whence) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn sparse_file(dir: &Path, len: u64, data: &[(u64, &[u8])]) -> std::path::PathBuf {
        let p = dir.join("src");
        let f = File::create(&p).unwrap();
        f.set_len(len).unwrap();
        for (off, bytes) in data {
            f.write_all_at(bytes, *off).unwrap();
        }
        p
    }

    #[test]
    fn data_regions_of_sparse_file_skip_the_hole() {
        let dir = tempfile::tempdir().unwrap();
        let mib = 1024 * 1024;
        let p = sparse_file(
            dir.path(),
            8 * mib,
            &[(0, &[1u8; 4096]), (6 * mib, &[2u8; 4096])],
        );

        let regions = data_regions(&File::open(&p).unwrap(), 8 * mib).unwrap();

        assert_eq!(regions.len(), 2, "{regions:?}");
        assert!(
            regions[0].0 == 0 && regions[1].0 <= 6 * mib && regions[1].1 > 6 * mib,
            "{regions:?}"
        );
    }

    #[test]
    fn sparse_copy_reproduces_content_and_keeps_holes() {
        let dir = tempfile::tempdir().unwrap();
        let mib = 1024 * 1024;
        let len = 64 * mib;
        let p = sparse_file(
            dir.path(),
            len,
            &[(4096, b"hello"), (40 * mib, &[7u8; 100_000])],
        );
        let dst_path = dir.path().join("dst");
        let dst = File::create_new(&dst_path).unwrap();

        sparse_copy(&File::open(&p).unwrap(), &p, &dst, &dst_path, len).unwrap();

        assert_eq!(
            std::fs::read(&p).unwrap(),
            std::fs::read(&dst_path).unwrap()
        );
        let allocated = std::fs::metadata(&dst_path).unwrap().blocks() * 512;
        assert!(allocated < 2 * mib, "copy allocated {allocated} bytes");
    }

    #[test]
    fn sparse_copy_skips_explicit_zero_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let mib = 1024 * 1024;
        let len = 16 * mib;
        // A fully allocated file of zeros with one non-zero byte.
        let p = dir.path().join("src");
        let mut bytes = vec![0u8; len as usize];
        bytes[5 * mib as usize] = 9;
        std::fs::write(&p, &bytes).unwrap();
        let dst_path = dir.path().join("dst");
        let dst = File::create_new(&dst_path).unwrap();

        sparse_copy(&File::open(&p).unwrap(), &p, &dst, &dst_path, len).unwrap();

        assert_eq!(std::fs::read(&dst_path).unwrap(), bytes);
        let allocated = std::fs::metadata(&dst_path).unwrap().blocks() * 512;
        assert!(
            allocated <= 2 * BLOCK as u64,
            "copy allocated {allocated} bytes"
        );
    }

    #[test]
    fn write_nonzero_runs_of_all_zero_buffer_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dst");
        let f = File::create_new(&p).unwrap();

        write_nonzero_runs(&f, &vec![0u8; CHUNK], 0).unwrap();

        assert_eq!(std::fs::metadata(&p).unwrap().len(), 0);
    }

    /// Needs root: mounts a 4 MiB tmpfs so the copy itself hits ENOSPC
    /// (bypassing the free-space pre-check, as a concurrent writer would).
    #[test]
    #[ignore = "needs root: mounts a size-limited tmpfs"]
    fn sparse_copy_into_full_filesystem_reports_no_space() {
        let base = tempfile::tempdir().unwrap();
        let mnt = base.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        hangar_host::Tool::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4M", "hgtest-tmpfs"])
            .arg(&mnt)
            .run_blocking()
            .expect("mounting tmpfs needs root");
        struct Unmount<'a>(&'a Path);
        impl Drop for Unmount<'_> {
            fn drop(&mut self) {
                let _ = hangar_host::Tool::new("umount").arg(self.0).run_blocking();
            }
        }
        let _unmount = Unmount(&mnt);
        let src_path = base.path().join("src");
        std::fs::write(&src_path, vec![0x5au8; 8 * 1024 * 1024]).unwrap();
        let dst_path = mnt.join("dst");
        let dst = File::create_new(&dst_path).unwrap();

        let err = sparse_copy(
            &File::open(&src_path).unwrap(),
            &src_path,
            &dst,
            &dst_path,
            8 * 1024 * 1024,
        )
        .unwrap_err();

        assert!(
            matches!(err, StorageError::NoSpace { ref dir, .. } if dir == &mnt),
            "{err}"
        );
    }
}
