//! Is a binary dynamically linked? The ELF program header `PT_INTERP` (the
//! loader's path), read from the file's headers only. The jailer's chroot
//! (Firecracker) and guests without libc (Hangar's guest agent) can run
//! only binaries without one.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The program header type of the loader path.
pub const PT_INTERP: u32 = 3;
/// Program headers read at most (a real binary has about a dozen).
const MAX_PHDRS: u16 = 256;

/// Why a file's ELF headers cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a 64-bit little-endian ELF file")]
    NotElf64,
}

/// The dynamic loader `path` asks for (`PT_INTERP`), or `None` when it is
/// statically linked.
pub fn elf_interpreter(path: &Path) -> Result<Option<String>, ElfError> {
    let mut f = std::fs::File::open(path)?;
    let mut ehdr = [0u8; 64];
    f.read_exact(&mut ehdr).map_err(|_| ElfError::NotElf64)?;
    // Magic, ELFCLASS64, ELFDATA2LSB.
    if ehdr[..4] != *b"\x7fELF" || ehdr[4] != 2 || ehdr[5] != 1 {
        return Err(ElfError::NotElf64);
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let u64_at = |b: &[u8], o: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[o..o + 8]);
        u64::from_le_bytes(a)
    };
    let phoff = u64_at(&ehdr, 32);
    let phentsize = usize::from(u16_at(&ehdr, 54));
    let phnum = u16_at(&ehdr, 56).min(MAX_PHDRS);
    if phentsize < 56 {
        return Err(ElfError::NotElf64);
    }
    let mut phdr = vec![0u8; phentsize];
    for i in 0..u64::from(phnum) {
        f.seek(SeekFrom::Start(phoff + i * phentsize as u64))?;
        f.read_exact(&mut phdr)?;
        if u32_at(&phdr, 0) != PT_INTERP {
            continue;
        }
        let offset = u64_at(&phdr, 8);
        let size = u64_at(&phdr, 32).min(4096) as usize;
        let mut interp = vec![0u8; size];
        f.seek(SeekFrom::Start(offset))?;
        f.read_exact(&mut interp)?;
        let end = interp.iter().position(|&b| b == 0).unwrap_or(interp.len());
        return Ok(Some(String::from_utf8_lossy(&interp[..end]).into_owned()));
    }
    Ok(None)
}
