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
pub fn fill(src: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
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

/// As [`copy_sparse`] for large files: the zero scan and the writes run on
/// a second thread while this one reads on (a decompressor), and the
/// filled buffers move between the two, never copied. Returns the byte
/// count.
pub(crate) fn copy_sparse_behind(src: &mut impl Read, dst: &mut File) -> io::Result<u64> {
    const CHUNK: usize = 1 << 20;
    const BUFFERS: usize = 4;
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(BUFFERS);
    let (empty_tx, empty_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(BUFFERS);
    for _ in 0..BUFFERS {
        let _ = empty_tx.send(vec![0u8; CHUNK]);
    }
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || {
            let mut total: u64 = 0;
            let mut flushed: u64 = 0;
            for buf in full_rx {
                write_skipping_zeros(dst, &buf)?;
                total += buf.len() as u64;
                if total - flushed >= WRITEBACK_STEP {
                    start_writeback(dst, flushed, total - flushed);
                    flushed = total;
                }
                // The reader may be done and gone; then the buffer goes.
                let _ = empty_tx.send(buf);
            }
            dst.set_len(total)?;
            Ok::<u64, io::Error>(total)
        });
        let read = (|| {
            // No empty buffer back means the writer stopped (its error is
            // the one to report).
            while let Ok(mut buf) = empty_rx.recv() {
                buf.resize(CHUNK, 0);
                let n = fill(src, &mut buf)?;
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                if full_tx.send(buf).is_err() {
                    break;
                }
            }
            Ok::<(), io::Error>(())
        })();
        drop(full_tx);
        let written = writer
            .join()
            .map_err(|_| io::Error::other("the writing thread panicked"))?;
        read?;
        written
    })
}

/// How much is written before its writeback to disk is started.
const WRITEBACK_STEP: u64 = 16 << 20;

/// Starts writing `len` bytes at `offset` of `file` to disk without
/// waiting, so the fsync that makes the file durable later finds most of
/// it written already (instead of all of it dirty in the page cache).
/// Best effort: a failure only leaves the work to that fsync.
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: a plain syscall on a descriptor this function borrows; it
    // reads no memory of ours.
    let _ = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
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
