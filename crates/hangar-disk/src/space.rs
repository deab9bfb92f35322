//! Free-space accounting, so a full disk is reported as such (with numbers)
//! instead of as a bare ENOSPC.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::StorageError;

/// Bytes free for ordinary writers (`f_bavail`): the conservative number a
/// copy can count on (the root reserve is left alone on purpose).
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let c = CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a valid NUL-terminated path and `st` is a valid out-pointer.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let st = unsafe { st.assume_init() };
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// The directory a disk lives in (for messages and statvfs).
pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Builds the "not enough space" error for `dest`'s directory.
pub(crate) fn no_space(dest: &Path, need: u64) -> StorageError {
    let dir = parent_dir(dest);
    let free = free_bytes(&dir).unwrap_or(0);
    StorageError::NoSpace { dir, need, free }
}

/// True when an I/O error means the filesystem is full.
pub(crate) fn is_enospc(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_bytes_of_existing_dir_is_positive() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).unwrap() > 0);
    }

    #[test]
    fn no_space_message_names_dir_need_and_free() {
        let err = StorageError::NoSpace {
            dir: PathBuf::from("/var/lib/hangar/vms"),
            need: 2 * 1024 * 1024 * 1024,
            free: 1024 * 1024,
        };
        assert_eq!(
            err.to_string(),
            "Not enough space in /var/lib/hangar/vms: need 2.0 GiB, free 1.0 MiB; free some space or use a reflink-capable filesystem"
        );
    }

    #[test]
    fn parent_dir_of_bare_name_is_current_dir() {
        assert_eq!(parent_dir(Path::new("disk.ext4")), PathBuf::from("."));
    }
}
