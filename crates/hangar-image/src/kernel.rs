//! Turns a kernel into what Firecracker and QEMU microvm boot fastest: an
//! uncompressed ELF `vmlinux` with a PVH note. Debian's bzImage carries it
//! LZ4-compressed (legacy LZ4 frame) inside.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::ImageError;

/// Legacy LZ4 frame magic (0x184C2102, little endian).
const LZ4_LEGACY_MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];
/// Every block of a legacy frame but the last decompresses to this size.
const LZ4_LEGACY_BLOCK: usize = 8 << 20;
const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];
/// Enough of a kernel file to tell its kind (the bzImage header ends at 0x206).
const HEADER_PROBE: usize = 0x400;

/// What kind of kernel file a byte buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelKind {
    Elf64,
    BzImage,
    Unknown,
}

pub fn kernel_kind(data: &[u8]) -> KernelKind {
    if data.len() >= 5 && data[..4] == ELF_MAGIC && data[4] == 2 {
        KernelKind::Elf64
    } else if data.len() > 0x206 && &data[0x202..0x206] == b"HdrS" {
        KernelKind::BzImage
    } else {
        KernelKind::Unknown
    }
}

/// Extracts the ELF vmlinux from a bzImage whose payload is LZ4: the legacy
/// LZ4 frame starting at the first magic. The frame's end is not marked, so
/// decoding stops after the first short block or at a chunk size that
/// cannot be a block (the kernel appends its size after the frame).
pub fn vmlinux_from_bzimage(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    extract_bzimage(data, &mut out)?;
    Ok(out)
}

/// The largest vmlinux a bzImage may unpack to (Debian's is about 60 MiB).
pub const MAX_VMLINUX_BYTES: u64 = 1 << 30;

/// [`vmlinux_from_bzimage`] as a stream: reads `input` and writes the
/// vmlinux to `out` one LZ4 block at a time, so memory stays at about two
/// blocks (16 MiB) whatever the kernel's size. Returns the bytes written.
pub fn extract_bzimage(input: impl Read, out: &mut impl Write) -> Result<u64, String> {
    extract_bzimage_at_most(input, out, MAX_VMLINUX_BYTES)
}

fn extract_bzimage_at_most(
    input: impl Read,
    out: &mut impl Write,
    max_bytes: u64,
) -> Result<u64, String> {
    let mut input = BufReader::new(input);
    skip_to_lz4_magic(&mut input)?;
    let max_chunk = lz4_flex::block::get_maximum_output_size(LZ4_LEGACY_BLOCK);
    let mut block = Vec::new();
    let mut decoded = vec![0u8; LZ4_LEGACY_BLOCK];
    let mut written = 0u64;
    loop {
        let mut word = [0u8; 4];
        if !read_exact_or_eof(&mut input, &mut word)? {
            break;
        }
        if word == LZ4_LEGACY_MAGIC {
            continue;
        }
        let size = u32::from_le_bytes(word) as usize;
        if size == 0 || size > max_chunk {
            break;
        }
        block.resize(size, 0);
        if !read_exact_or_eof(&mut input, &mut block)? {
            break;
        }
        let n = match lz4_flex::block::decompress_into(&block, &mut decoded) {
            Ok(n) => n,
            Err(e) if written == 0 => {
                return Err(format!("LZ4 payload does not decompress: {e}"));
            }
            // Past the end of the frame: trailing bytes looked like a size.
            Err(_) => break,
        };
        if written == 0 && kernel_kind(&decoded[..n]) != KernelKind::Elf64 {
            break;
        }
        if written + n as u64 > max_bytes {
            // LZ4 expands up to ~250×: a small upload must not fill the
            // state dir (real vmlinux files are tens of MiB).
            return Err(format!(
                "the kernel unpacks to more than {} MiB; that is not a vmlinux",
                max_bytes >> 20
            ));
        }
        out.write_all(&decoded[..n])
            .map_err(|e| format!("cannot write the vmlinux: {e}"))?;
        written += n as u64;
        if n < LZ4_LEGACY_BLOCK {
            break;
        }
    }
    if written == 0 {
        return Err("LZ4 payload is not an ELF64 vmlinux".to_string());
    }
    Ok(written)
}

/// Reads up to and including the first legacy LZ4 magic.
fn skip_to_lz4_magic(input: &mut impl BufRead) -> Result<(), String> {
    let mut window = [0u8; 4];
    let mut seen = 0usize;
    loop {
        let buf = input
            .fill_buf()
            .map_err(|e| format!("cannot read the kernel: {e}"))?;
        if buf.is_empty() {
            return Err("no LZ4 payload found (only LZ4-compressed bzImages are supported; convert others with the kernel's scripts/extract-vmlinux)".to_string());
        }
        let mut used = 0;
        let mut found = false;
        for &b in buf {
            used += 1;
            window.rotate_left(1);
            window[3] = b;
            seen += 1;
            if seen >= 4 && window == LZ4_LEGACY_MAGIC {
                found = true;
                break;
            }
        }
        input.consume(used);
        if found {
            return Ok(());
        }
    }
}

/// Fills `buf`, or returns false when the input ends first (the end of a
/// frame that is not marked).
fn read_exact_or_eof(input: &mut impl Read, buf: &mut [u8]) -> Result<bool, String> {
    match input.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(format!("cannot read the kernel: {e}")),
    }
}

/// Writes `out` as an ELF vmlinux from `input` (a bzImage with an LZ4
/// payload, or already an ELF vmlinux, which is copied). Streams: neither
/// file is ever held in memory whole. On failure `out` is removed.
pub fn write_vmlinux(input: &Path, out: &Path) -> Result<(), ImageError> {
    let result = convert_kernel(input, out);
    if result.is_err() {
        let _ = std::fs::remove_file(out);
    }
    result
}

fn convert_kernel(input: &Path, out: &Path) -> Result<(), ImageError> {
    let read_err = |e| ImageError::io("read kernel", input, e);
    let mut src = File::open(input).map_err(read_err)?;
    let mut head = Vec::with_capacity(HEADER_PROBE);
    (&mut src)
        .take(HEADER_PROBE as u64)
        .read_to_end(&mut head)
        .map_err(read_err)?;
    src.seek(SeekFrom::Start(0)).map_err(read_err)?;
    let bad = |reason: String| ImageError::BadKernel {
        path: input.to_path_buf(),
        reason,
    };
    let kind = kernel_kind(&head);
    if kind == KernelKind::Unknown {
        return Err(bad(
            "neither an ELF64 vmlinux nor a bzImage; pass the kernel image (vmlinux or vmlinuz)"
                .to_string(),
        ));
    }
    let write_err = |e| ImageError::io("write kernel", out, e);
    let mut dst =
        BufWriter::new(hangar_host::private::create_private_file(out).map_err(write_err)?);
    match kind {
        KernelKind::BzImage => {
            extract_bzimage(src, &mut dst).map_err(bad)?;
        }
        _ => {
            std::io::copy(&mut BufReader::new(src), &mut dst).map_err(write_err)?;
        }
    }
    dst.into_inner()
        .map_err(|e| write_err(e.into_error()))?
        .sync_all()
        .map_err(write_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_elf(len: usize) -> Vec<u8> {
        let mut v: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        v[..4].copy_from_slice(&ELF_MAGIC);
        v[4] = 2;
        v
    }

    /// A bzImage-like buffer: setup junk, legacy LZ4 frame, appended size.
    fn fake_bzimage(payload: &[u8]) -> Vec<u8> {
        let mut img = vec![0u8; 0x400];
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img.extend_from_slice(&LZ4_LEGACY_MAGIC);
        for chunk in payload.chunks(LZ4_LEGACY_BLOCK) {
            let c = lz4_flex::block::compress(chunk);
            img.extend_from_slice(&(c.len() as u32).to_le_bytes());
            img.extend_from_slice(&c);
        }
        img.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        img.extend_from_slice(&[0xAA; 64]);
        img
    }

    #[test]
    fn extracts_single_block_payload() {
        let elf = fake_elf(100_000);

        let out = vmlinux_from_bzimage(&fake_bzimage(&elf)).expect("extract");

        assert_eq!(out, elf);
    }

    #[test]
    fn extracts_multi_block_payload() {
        let elf = fake_elf(LZ4_LEGACY_BLOCK + 12_345);

        let out = vmlinux_from_bzimage(&fake_bzimage(&elf)).expect("extract");

        assert_eq!(out.len(), elf.len());
        assert!(out == elf);
    }

    #[test]
    fn extracts_payload_of_exact_block_multiple() {
        let elf = fake_elf(LZ4_LEGACY_BLOCK);

        let out = vmlinux_from_bzimage(&fake_bzimage(&elf)).expect("extract");

        assert!(out == elf);
    }

    #[test]
    fn a_bzimage_that_unpacks_past_the_limit_is_refused() {
        let elf = fake_elf(LZ4_LEGACY_BLOCK * 3);
        let limit = (LZ4_LEGACY_BLOCK * 2) as u64;

        let err = extract_bzimage_at_most(&fake_bzimage(&elf)[..], &mut std::io::sink(), limit)
            .expect_err("must fail");

        assert!(err.contains("unpacks to more than 16 MiB"), "{err}");
    }

    #[test]
    fn bzimage_without_lz4_is_rejected() {
        let mut img = vec![0u8; 0x400];
        img[0x202..0x206].copy_from_slice(b"HdrS");

        let err = vmlinux_from_bzimage(&img).expect_err("must fail");

        assert!(err.contains("no LZ4 payload"));
    }

    #[test]
    fn non_elf_payload_is_rejected() {
        let err = vmlinux_from_bzimage(&fake_bzimage(&[1u8; 5000])).expect_err("must fail");

        assert!(err.contains("not an ELF64"));
    }

    #[test]
    fn kind_detects_elf_bzimage_and_junk() {
        assert_eq!(kernel_kind(&fake_elf(64)), KernelKind::Elf64);
        assert_eq!(
            kernel_kind(&fake_bzimage(&fake_elf(64))),
            KernelKind::BzImage
        );
        assert_eq!(kernel_kind(b"hello"), KernelKind::Unknown);
    }

    #[test]
    fn write_vmlinux_converts_a_bzimage_file_and_copies_an_elf() {
        let d = tempfile::tempdir().expect("tempdir");
        let elf = fake_elf(LZ4_LEGACY_BLOCK * 2 + 777);
        let (bz, plain, out) = (
            d.path().join("bz"),
            d.path().join("elf"),
            d.path().join("out"),
        );
        std::fs::write(&bz, fake_bzimage(&elf)).expect("write");
        std::fs::write(&plain, &elf).expect("write");

        write_vmlinux(&bz, &out).expect("bzImage");
        assert!(std::fs::read(&out).expect("read") == elf);
        write_vmlinux(&plain, &out).expect("elf");
        assert!(std::fs::read(&out).expect("read") == elf);
    }

    #[test]
    fn write_vmlinux_of_junk_fails_and_leaves_no_output() {
        let d = tempfile::tempdir().expect("tempdir");
        let (junk, out) = (d.path().join("junk"), d.path().join("out"));
        std::fs::write(&junk, b"not a kernel").expect("write");

        let err = write_vmlinux(&junk, &out).expect_err("must fail");

        assert!(matches!(err, ImageError::BadKernel { .. }), "{err}");
        assert!(!out.exists());
    }

    #[test]
    fn write_vmlinux_of_bzimage_with_bad_payload_leaves_no_output() {
        let d = tempfile::tempdir().expect("tempdir");
        let (bz, out) = (d.path().join("bz"), d.path().join("out"));
        std::fs::write(&bz, fake_bzimage(&[1u8; 5000])).expect("write");

        let err = write_vmlinux(&bz, &out).expect_err("must fail");

        assert!(err.to_string().contains("not an ELF64"), "{err}");
        assert!(!out.exists());
    }
}
