//! Creating one entry of each kind as `name` in an already resolved parent
//! directory. The slot is known to be free (or, for a directory, to hold a
//! directory): every call creates exclusively and never follows `name`.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{mkdirat, mknodat, Mode, SFlag};
use nix::unistd::{linkat, symlinkat};

use super::copy::copy_sparse;
use super::meta::{apply_fd, apply_node, apply_symlink, set_mtime_fd, Meta};
use super::remove::open_subdir;

/// A regular file: content streamed in, then metadata. Returns the size.
pub(crate) fn file(
    dir: BorrowedFd,
    name: &[u8],
    meta: &Meta,
    content: &mut impl Read,
    buf: &mut [u8],
) -> Result<u64, String> {
    // O_EXCL|O_NOFOLLOW: never write through something that is there.
    let fd = openat(
        dir,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| format!("cannot create file: {e}"))?;
    let mut file = File::from(fd);
    let size =
        copy_sparse(content, &mut file, buf).map_err(|e| format!("cannot write file: {e}"))?;
    apply_fd(file.as_fd(), meta)?;
    set_mtime_fd(file.as_fd(), &meta.mtime)?;
    Ok(size)
}

/// A directory, new or kept; its mtime is set by the caller at the end
/// (later entries inside it would change it).
pub(crate) fn dir(
    parent: BorrowedFd,
    name: &[u8],
    meta: &Meta,
    exists: bool,
) -> Result<(), String> {
    if !exists {
        mkdirat(parent, name, Mode::from_bits_truncate(0o700))
            .map_err(|e| format!("cannot create directory: {e}"))?;
    }
    let fd = open_subdir(parent, name).map_err(|e| format!("cannot open directory: {e}"))?;
    apply_fd(fd.as_fd(), meta)
}

/// Metadata of an already open directory (the root itself).
pub(crate) fn dir_fd(fd: &OwnedFd, meta: &Meta) -> Result<(), String> {
    apply_fd(fd.as_fd(), meta)
}

/// A symlink; its target is stored verbatim and only ever resolved later
/// inside the root.
pub(crate) fn symlink(
    dir: BorrowedFd,
    name: &[u8],
    target: &[u8],
    meta: &Meta,
) -> Result<(), String> {
    if target.is_empty() {
        return Err("symlink with an empty target".into());
    }
    if target.contains(&0) {
        return Err("symlink target contains a NUL byte".into());
    }
    symlinkat(target, dir, name).map_err(|e| format!("cannot create symlink: {e}"))?;
    apply_symlink(dir, name, meta)
}

/// A hard link to an in-root entry; the inode keeps the target's metadata.
/// Without AT_SYMLINK_FOLLOW a link to a symlink links the symlink itself.
pub(crate) fn hardlink(
    target_dir: BorrowedFd,
    target_name: &[u8],
    dir: BorrowedFd,
    name: &[u8],
) -> Result<(), String> {
    linkat(target_dir, target_name, dir, name, AtFlags::empty()).map_err(|e| match e {
        Errno::ENOENT => "link target missing".into(),
        e => format!("cannot create hard link: {e}"),
    })
}

/// A character or block device or a FIFO.
pub(crate) fn node(
    dir: BorrowedFd,
    name: &[u8],
    kind: SFlag,
    dev: libc::dev_t,
    meta: &Meta,
) -> Result<(), String> {
    mknodat(dir, name, kind, Mode::from_bits_truncate(0o600), dev)
        .map_err(|e| format!("cannot create node: {e}"))?;
    apply_node(dir, name, meta)
}
