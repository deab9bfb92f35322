//! Is a binary dynamically linked? The jailer execs Firecracker inside a
//! chroot that holds nothing but the binary, so a binary that needs a
//! dynamic loader fails there at every start with "Failed to exec into
//! Firecracker: No such file or directory". Official releases are static.
//!
//! The answer is the ELF program header `PT_INTERP` (the loader's path),
//! read from the file's headers only.

use std::path::Path;

pub use hangar_host::elf::{elf_interpreter, ElfError};

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
    use hangar_host::elf::PT_INTERP;

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
