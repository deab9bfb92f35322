//! Streams a file's content from the tar into the new file, leaving
//! all-zero 4 KiB blocks as holes (GNU sparse entries arrive expanded).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

const BLOCK: usize = 4096;

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
    let mut total: u64 = 0;
    loop {
        let n = fill(src, buf)?;
        if n == 0 {
            break;
        }
        write_skipping_zeros(dst, &buf[..n])?;
        total += n as u64;
    }
    // A trailing hole is only a seek so far; set_len makes it part of the file.
    dst.set_len(total)?;
    Ok(total)
}

/// Writes runs of data blocks in one call each and seeks over zero blocks.
fn write_skipping_zeros(dst: &mut File, data: &[u8]) -> io::Result<()> {
    let mut start = 0;
    while start < data.len() {
        let zero_run = data[start..]
            .chunks(BLOCK)
            .take_while(|c| c.len() == BLOCK && c.iter().all(|b| *b == 0))
            .count()
            * BLOCK;
        if zero_run > 0 {
            dst.seek(SeekFrom::Current(zero_run as i64))?;
            start += zero_run;
            continue;
        }
        let data_run = data[start..]
            .chunks(BLOCK)
            .take_while(|c| c.len() < BLOCK || c.iter().any(|b| *b != 0))
            .map(<[u8]>::len)
            .sum::<usize>();
        dst.write_all(&data[start..start + data_run])?;
        start += data_run;
    }
    Ok(())
}
