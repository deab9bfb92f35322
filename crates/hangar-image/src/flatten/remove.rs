//! Recursive removal under a directory fd. Names are looked at with
//! AT_SYMLINK_NOFOLLOW and directories are opened with O_NOFOLLOW, so a
//! symlink is removed itself and never descended through.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, FileStat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

/// `lstat` of `name` in `dir`; `None` if it does not exist.
pub(crate) fn stat_at(dir: BorrowedFd, name: &[u8]) -> nix::Result<Option<FileStat>> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

/// Opens the directory `name` in `dir` for listing, refusing a symlink.
pub(crate) fn open_subdir(dir: BorrowedFd, name: &[u8]) -> nix::Result<OwnedFd> {
    openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// The names in a directory (without `.` and `..`). Collected before any
/// removal because readdir while unlinking is not guaranteed to see all.
pub(crate) fn list_names(dir: BorrowedFd) -> nix::Result<Vec<Vec<u8>>> {
    let listing = openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for ent in Dir::from_fd(listing)?.iter() {
        let name = ent?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(name);
        }
    }
    Ok(names)
}

/// Removes `name` in `dir`, recursively if it is a directory. Returns
/// whether anything was there.
pub(crate) fn remove_all_at(dir: BorrowedFd, name: &[u8]) -> nix::Result<bool> {
    let Some(st) = stat_at(dir, name)? else {
        return Ok(false);
    };
    if is_dir(&st) {
        let sub = open_subdir(dir, name)?;
        empty_dir(sub.as_fd())?;
        unlinkat(dir, name, UnlinkatFlags::RemoveDir)?;
    } else {
        unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)?;
    }
    Ok(true)
}

/// Removes everything inside `dir`, keeping `dir`.
pub(crate) fn empty_dir(dir: BorrowedFd) -> nix::Result<()> {
    for name in list_names(dir)? {
        remove_all_at(dir, &name)?;
    }
    Ok(())
}
