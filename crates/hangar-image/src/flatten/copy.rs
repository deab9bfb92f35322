//! Streams a file's content from the tar into the new file, leaving
//! all-zero 4 KiB blocks as holes (GNU sparse entries arrive expanded).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

const BLOCK: usize = 4096;
/// Compared against as a whole (a memcmp), not byte by byte: the zero scan
/// of a 2 GiB sparse rootfs costs seconds otherwise.
static ZERO_BLOCK: [u8; BLOCK] = [0; BLOCK];

/// Reads until `buf` is full or the input ends; full buffers keep the
/// zero-block test aligned to file offsets.
fn fill(src: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match src.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Copies `src` into `dst` (a new, empty file) through `buf` and returns
/// the byte count.
pub(crate) fn copy_sparse(src: &mut impl Read, dst: &mut File, buf: &mut [u8]) -> io::Result<u64> {
    copy_sparse_each(src, dst, buf, |_| Ok(()))
}

/// The copy loop: each chunk read is shown to `each`, then written with
/// its zero blocks left as holes.
fn copy_sparse_each(
    src: &mut impl Read,
    dst: &mut File,
    buf: &mut [u8],
    mut each: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<u64> {
    let mut total: u64 = 0;
    loop {
        let n = fill(src, buf)?;
        if n == 0 {
            break;
        }
        each(&buf[..n])?;
        write_skipping_zeros(dst, &buf[..n])?;
        total += n as u64;
    }
    // A trailing hole is only a seek so far; set_len makes it part of the file.
    dst.set_len(total)?;
    Ok(total)
}

/// As [`copy_sparse`], and also returns the lowercase hex sha256 of all
/// it copied. The hash is computed on a second thread, so it overlaps the
/// reading (a decompressor) and the writing.
pub(crate) fn copy_sparse_sha256(
    src: &mut impl Read,
    dst: &mut File,
    buf: &mut [u8],
) -> io::Result<(u64, String)> {
    use sha2::{Digest, Sha256};
    // A few chunks in flight bound the memory to ~5 buffers.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
    std::thread::scope(|scope| {
        let hasher = scope.spawn(move || {
            let mut h = Sha256::new();
            for chunk in rx {
                h.update(&chunk);
            }
            hex::encode(h.finalize())
        });
        let copied = copy_sparse_each(src, dst, buf, |chunk| {
            tx.send(chunk.to_vec())
                .map_err(|_| io::Error::other("the hashing thread ended early"))
        });
        drop(tx);
        let hex = hasher
            .join()
            .map_err(|_| io::Error::other("the hashing thread panicked"))?;
        copied.map(|total| (total, hex))
    })
}

/// Writes runs of data blocks in one call each and seeks over zero blocks.
fn write_skipping_zeros(dst: &mut File, data: &[u8]) -> io::Result<()> {
    let mut start = 0;
    while start < data.len() {
        let zero_run = data[start..]
            .chunks(BLOCK)
            .take_while(|c| *c == &ZERO_BLOCK[..])
            .count()
            * BLOCK;
        if zero_run > 0 {
            dst.seek(SeekFrom::Current(zero_run as i64))?;
            start += zero_run;
            continue;
        }
        let data_run = data[start..]
            .chunks(BLOCK)
            .take_while(|c| *c != &ZERO_BLOCK[..])
            .map(<[u8]>::len)
            .sum::<usize>();
        dst.write_all(&data[start..start + data_run])?;
        start += data_run;
    }
    Ok(())
}
