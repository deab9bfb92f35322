//! Turns a kernel into what Firecracker and QEMU microvm boot fastest: an
//! uncompressed ELF `vmlinux` with a PVH note. Debian's bzImage carries it
//! LZ4-compressed (legacy LZ4 frame) inside.

use std::path::Path;

use crate::ImageError;

/// Legacy LZ4 frame magic (0x184C2102, little endian).
const LZ4_LEGACY_MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];
/// Every block of a legacy frame but the last decompresses to this size.
const LZ4_LEGACY_BLOCK: usize = 8 << 20;
const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];

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
    let start = data
        .windows(4)
        .position(|w| w == LZ4_LEGACY_MAGIC)
        .ok_or("no LZ4 payload found (only LZ4-compressed bzImages are supported; convert others with the kernel's scripts/extract-vmlinux)")?;
    let max_chunk = lz4_flex::block::get_maximum_output_size(LZ4_LEGACY_BLOCK);
    let mut pos = start + 4;
    let mut out = Vec::with_capacity(64 << 20);
    loop {
        if pos + 4 > data.len() {
            break;
        }
        let mut word = [0u8; 4];
        word.copy_from_slice(&data[pos..pos + 4]);
        if word == LZ4_LEGACY_MAGIC {
            pos += 4;
            continue;
        }
        let size = u32::from_le_bytes(word) as usize;
        if size == 0 || size > max_chunk || pos + 4 + size > data.len() {
            break;
        }
        let block = &data[pos + 4..pos + 4 + size];
        let before = out.len();
        out.resize(before + LZ4_LEGACY_BLOCK, 0);
        let n = match lz4_flex::block::decompress_into(block, &mut out[before..]) {
            Ok(n) => n,
            Err(e) if before == 0 => {
                return Err(format!("LZ4 payload does not decompress: {e}"));
            }
            Err(_) => {
                // Past the end of the frame: trailing bytes looked like a size.
                out.truncate(before);
                break;
            }
        };
        out.truncate(before + n);
        pos += 4 + size;
        if n < LZ4_LEGACY_BLOCK {
            break;
        }
    }
    if kernel_kind(&out) != KernelKind::Elf64 {
        return Err("LZ4 payload is not an ELF64 vmlinux".to_string());
    }
    Ok(out)
}

/// Writes `out` as an ELF vmlinux from `input` (a bzImage with an LZ4
/// payload, or already an ELF vmlinux, which is copied).
pub fn write_vmlinux(input: &Path, out: &Path) -> Result<(), ImageError> {
    let data = std::fs::read(input).map_err(|e| ImageError::io("read kernel", input, e))?;
    let bad = |reason: String| ImageError::BadKernel {
        path: input.to_path_buf(),
        reason,
    };
    let elf = match kernel_kind(&data) {
        KernelKind::Elf64 => data,
        KernelKind::BzImage => vmlinux_from_bzimage(&data).map_err(bad)?,
        KernelKind::Unknown => return Err(bad(
            "neither an ELF64 vmlinux nor a bzImage; pass the kernel image (vmlinux or vmlinuz)"
                .to_string(),
        )),
    };
    hangar_host::private::write_private(out, elf)
        .map_err(|e| ImageError::io("write kernel", out, e))
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
}
