//! Is a binary dynamically linked? The jailer execs Firecracker inside a
//! chroot that holds nothing but the binary, so a binary that needs a
//! dynamic loader fails there at every start with "Failed to exec into
//! Firecracker: No such file or directory". Official releases are static.
//!
//! The answer is the ELF program header `PT_INTERP` (the loader's path),
//! read from the file's headers only.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

const PT_INTERP: u32 = 3;
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

/// Why `firecracker` cannot run under the jailer, with the fix; `None`
/// when it can (statically linked) or when the file cannot be read as ELF
/// (then starting it says what is wrong).
pub fn jailer_incompatibility(firecracker: &Path) -> Option<String> {
    let interp = elf_interpreter(firecracker).ok()??;
    Some(format!(
        "{} is dynamically linked (it needs {interp}), so it cannot start inside the jailer's \
         chroot, which holds no loader (\"Failed to exec into Firecracker: No such file or \
         directory\"); install the official static release from \
         https://github.com/firecracker-microvm/firecracker/releases, or set [vmm] jailer = false \
         (debugging only: Firecracker then runs unconfined)",
        firecracker.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 file with the given program header types; a
    /// PT_INTERP entry points at `interp`.
    fn elf_with(phdr_types: &[u32], interp: &str) -> Vec<u8> {
        let phoff = 64u64;
        let interp_off = phoff + 56 * phdr_types.len() as u64;
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[32..40].copy_from_slice(&phoff.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&(phdr_types.len() as u16).to_le_bytes());
        for t in phdr_types {
            let mut p = vec![0u8; 56];
            p[..4].copy_from_slice(&t.to_le_bytes());
            p[8..16].copy_from_slice(&interp_off.to_le_bytes());
            p[32..40].copy_from_slice(&(interp.len() as u64 + 1).to_le_bytes());
            b.extend(p);
        }
        b.extend(interp.as_bytes());
        b.push(0);
        b
    }

    fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), bytes).unwrap();
        f
    }

    #[test]
    fn a_dynamic_binary_names_its_loader() {
        let f = file_with(&elf_with(&[6, PT_INTERP, 1], "/lib64/ld-linux-x86-64.so.2"));
        assert_eq!(
            elf_interpreter(f.path()).unwrap().as_deref(),
            Some("/lib64/ld-linux-x86-64.so.2")
        );
        let why = jailer_incompatibility(f.path()).unwrap();
        assert!(
            why.contains("dynamically linked") && why.contains("static release"),
            "{why}"
        );
        assert!(why.contains("jailer = false"), "{why}");
    }

    #[test]
    fn a_static_binary_has_no_loader() {
        let f = file_with(&elf_with(&[1, 1, 4], ""));
        assert_eq!(elf_interpreter(f.path()).unwrap(), None);
        assert_eq!(jailer_incompatibility(f.path()), None);
    }

    #[test]
    fn the_host_shell_is_dynamic_and_not_elf_is_an_error() {
        // Debian's /bin/sh (dash) is dynamically linked.
        assert!(elf_interpreter(Path::new("/bin/sh")).unwrap().is_some());
        let f = file_with(b"#!/bin/sh\n");
        assert!(matches!(elf_interpreter(f.path()), Err(ElfError::NotElf64)));
        assert_eq!(jailer_incompatibility(f.path()), None);
    }
}
