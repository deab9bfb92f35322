//! The one way Hangar makes files and directories under its state, runtime
//! and image cache dirs: private to root (dirs 0700, files 0600), whatever
//! the process umask is.
//!
//! The umask can only take bits away, so a mode given at `open`/`mkdir`
//! could come out *tighter* than asked, never looser; each helper therefore
//! also sets the mode explicitly (`fchmod` on the open file, `chmod` on a
//! dir it made) so the result is exactly the private mode. A file that an
//! older version left with a looser mode is tightened when it is rewritten.
//!
//! Files that a tool creates (qemu's serial log, `cp`'s copy, `mkfs`'s
//! image) are pre-created here before the tool opens them, or tightened
//! with [`make_private`] right after; the call sites say which.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

mod repair;
pub use repair::{repair_private_tree, RepairCount};

/// Mode of every directory Hangar makes.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of every file Hangar makes.
pub const PRIVATE_FILE_MODE: u32 = 0o600;
/// The bits no file or dir of Hangar may grant (group and other).
pub const SHARED_BITS: u32 = 0o077;

/// Creates `dir` and its missing parents, each 0700. Parents that already
/// exist keep their mode (they may be `/var/lib` or a test's temp dir);
/// `dir` itself is set to 0700 even when it already existed.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    // Walk up to the first ancestor that exists, then create downwards, so
    // every dir made here (not just the last) gets an explicit chmod.
    let mut missing: Vec<PathBuf> = Vec::new();
    let mut cur = Some(dir);
    while let Some(p) = cur {
        match std::fs::symlink_metadata(p) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(p.to_path_buf()),
            Err(e) => return Err(e),
        }
        cur = p.parent().filter(|p| !p.as_os_str().is_empty());
    }
    for p in missing.iter().rev() {
        match DirBuilder::new().mode(PRIVATE_DIR_MODE).create(p) {
            Ok(()) => set_mode_nofollow(p, PRIVATE_DIR_MODE)?,
            // Someone else made it between our stat and mkdir: fine, it is
            // tightened below if it is `dir`, left alone if it is a parent.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a directory", dir.display()),
        ));
    }
    set_mode_nofollow(dir, PRIVATE_DIR_MODE)
}

/// Opens `path` for writing, created (or truncated) with mode 0600. Refuses
/// to follow a symlink at `path`, so a planted link cannot redirect a write.
pub fn create_private_file(path: &Path) -> io::Result<File> {
    open_private(
        path,
        OpenOptions::new().write(true).create(true).truncate(true),
    )
}

/// Like [`create_private_file`] but fails when `path` exists; opened for
/// reading too (a disk is sized and filled through it).
pub fn create_new_private_file(path: &Path) -> io::Result<File> {
    open_private(
        path,
        OpenOptions::new().read(true).write(true).create_new(true),
    )
}

/// Opens `path` for appending, created with mode 0600 when missing; an
/// existing file is tightened to 0600 and keeps its contents.
pub fn append_private_file(path: &Path) -> io::Result<File> {
    open_private(path, OpenOptions::new().append(true).create(true))
}

/// Writes `data` to `path` (created or truncated) with mode 0600.
pub fn write_private(path: &Path, data: impl AsRef<[u8]>) -> io::Result<()> {
    let mut f = create_private_file(path)?;
    f.write_all(data.as_ref())?;
    f.flush()
}

/// Tightens what a tool created at `path` to private: a directory to 0700,
/// anything else to its owner's bits only (0600 for a data file). A symlink
/// is left alone (its mode means nothing, and chmod would follow it).
pub fn make_private(path: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let want = if meta.is_dir() {
        PRIVATE_DIR_MODE
    } else {
        PRIVATE_FILE_MODE
    };
    set_mode_nofollow(path, want)
}

fn open_private(path: &Path, opts: &mut OpenOptions) -> io::Result<File> {
    let f = opts
        .mode(PRIVATE_FILE_MODE)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)?;
    // fchmod: exact mode whatever the umask, and tightens a file an older
    // version made with a looser one.
    f.set_permissions(Permissions::from_mode(PRIVATE_FILE_MODE))?;
    Ok(f)
}

/// `chmod` that never follows a symlink: it opens `path` with `O_NOFOLLOW`
/// (`O_PATH` so no read permission or device open is needed) and changes
/// the mode through `/proc/self/fd`, which names that very inode.
pub(crate) fn set_mode_nofollow(path: &Path, mode: u32) -> io::Result<()> {
    let fd = nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(io::Error::from)?;
    let file = File::from(fd);
    let meta = file.metadata()?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    if meta.permissions().mode() & 0o7777 == mode {
        return Ok(());
    }
    let via = PathBuf::from(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&file)
    ));
    std::fs::set_permissions(via, Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    /// Runs `f` with the process umask at 0 (the loosest), so the modes
    /// asserted come from the helpers, not from the umask.
    fn with_umask_zero<T>(f: impl FnOnce() -> T) -> T {
        static UMASK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _g = UMASK.lock().unwrap_or_else(|e| e.into_inner());
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
        let out = f();
        nix::sys::stat::umask(old);
        out
    }

    #[test]
    fn dirs_and_their_new_parents_are_0700_even_with_umask_zero() {
        let t = tempfile::tempdir().unwrap();
        let deep = t.path().join("a/b/c");
        with_umask_zero(|| create_private_dir(&deep)).unwrap();
        for p in ["a", "a/b", "a/b/c"] {
            assert_eq!(mode(&t.path().join(p)), 0o700, "{p}");
        }
    }

    #[test]
    fn an_existing_loose_dir_is_tightened_and_its_existing_parent_left_alone() {
        let t = tempfile::tempdir().unwrap();
        std::fs::set_permissions(t.path(), Permissions::from_mode(0o755)).unwrap();
        let d = t.path().join("keys");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700);
        assert_eq!(mode(t.path()), 0o755);
    }

    #[test]
    fn a_file_in_the_way_of_a_dir_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("f");
        std::fs::write(&f, "x").unwrap();
        assert!(create_private_dir(&f).is_err());
    }

    #[test]
    fn files_are_0600_even_with_umask_zero_and_old_loose_files_are_tightened() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("config.img");
        with_umask_zero(|| write_private(&p, b"secret")).unwrap();
        assert_eq!(mode(&p), 0o600);
        assert_eq!(std::fs::read(&p).unwrap(), b"secret");

        std::fs::set_permissions(&p, Permissions::from_mode(0o644)).unwrap();
        with_umask_zero(|| write_private(&p, b"new")).unwrap();
        assert_eq!(mode(&p), 0o600);
        assert_eq!(std::fs::read(&p).unwrap(), b"new");

        let a = t.path().join("serial.log");
        std::fs::write(&a, "old\n").unwrap();
        std::fs::set_permissions(&a, Permissions::from_mode(0o644)).unwrap();
        append_private_file(&a)
            .unwrap()
            .write_all(b"more\n")
            .unwrap();
        assert_eq!(mode(&a), 0o600);
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "old\nmore\n");
    }

    #[test]
    fn create_new_refuses_an_existing_file() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("disk.ext4");
        with_umask_zero(|| create_new_private_file(&p)).unwrap();
        assert_eq!(mode(&p), 0o600);
        let err = create_new_private_file(&p).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    }

    #[test]
    fn writes_do_not_follow_a_planted_symlink() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("target");
        std::fs::write(&target, "precious").unwrap();
        std::fs::set_permissions(&target, Permissions::from_mode(0o644)).unwrap();
        let link = t.path().join("serial.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(write_private(&link, b"overwritten").is_err());
        assert!(append_private_file(&link).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
        assert_eq!(mode(&target), 0o644);
    }

    #[test]
    fn make_private_tightens_what_a_tool_made_and_skips_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("disk.ext4");
        std::fs::write(&f, "x").unwrap();
        std::fs::set_permissions(&f, Permissions::from_mode(0o664)).unwrap();
        make_private(&f).unwrap();
        assert_eq!(mode(&f), 0o600);

        let d = t.path().join("tree");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, Permissions::from_mode(0o755)).unwrap();
        make_private(&d).unwrap();
        assert_eq!(mode(&d), 0o700);

        let outside = t.path().join("outside");
        std::fs::write(&outside, "x").unwrap();
        std::fs::set_permissions(&outside, Permissions::from_mode(0o644)).unwrap();
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        make_private(&link).unwrap();
        assert_eq!(mode(&outside), 0o644);
    }
}
