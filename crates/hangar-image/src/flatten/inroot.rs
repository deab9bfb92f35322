//! Path resolution inside the staging root. Every directory an entry names
//! is resolved with `openat2(RESOLVE_IN_ROOT)` from a fd of the root, so a
//! symlink planted by a layer (`etc -> /`, `etc -> ../../..`) resolves as if
//! the root were `/` and can never lead outside it. Final components are
//! then handled by the callers with *at calls relative to the parent fd,
//! never following them.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{open, openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fchmod, mkdirat, Mode};
use nix::unistd::{fchown, Gid, Uid};

use super::entrypath::RelPath;

/// How often a resolution is retried when the kernel reports a concurrent
/// rename (EAGAIN); nothing else writes into the staging root, so this is
/// only a guard against spurious failures.
const EAGAIN_RETRIES: usize = 8;

fn resolve_flags() -> ResolveFlag {
    ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS | ResolveFlag::RESOLVE_NO_XDEV
}

/// Opens `path` (relative; `.` for the root itself) under the directory
/// `root` as if `root` were `/`: symlinks, `..` and absolute links resolve
/// inside it, magic links and mount crossings are refused. The one place
/// image paths are resolved (the flattener and `finalize` use it).
pub(crate) fn open_in_root(
    root: BorrowedFd<'_>,
    path: &[u8],
    flags: OFlag,
) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(resolve_flags());
    let mut tries = 0;
    loop {
        match openat2(root, path, how) {
            Err(Errno::EAGAIN) if tries < EAGAIN_RETRIES => tries += 1,
            other => return other,
        }
    }
}

/// The staging root, held open for the lifetime of the flattening.
pub(crate) struct Root {
    fd: OwnedFd,
    /// Implicit parents are made root:root, which only root can do; an
    /// unprivileged caller (tests) keeps its own ids for them.
    chown_implicit: bool,
}

impl Root {
    /// Opens `path` and checks that openat2 works here, so a kernel without
    /// it fails at once with a clear error instead of on the first entry.
    pub(crate) fn open(path: &Path) -> Result<Root, (&'static str, std::io::Error)> {
        let fd = open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ("open the staging root", e.into()))?;
        let root = Root {
            fd,
            chown_implicit: nix::unistd::geteuid().is_root(),
        };
        root.open_dir(&RelPath::root(), OFlag::O_PATH)
            .map_err(|e| match e {
                Errno::ENOSYS => (
                    "resolve paths with openat2 (Linux 5.6 or later is needed) in",
                    e.into(),
                ),
                e => ("resolve paths in", e.into()),
            })?;
        Ok(root)
    }

    /// Opens the directory at `rel`, resolved inside the root. `extra` is
    /// `O_PATH` for a dirfd or `O_RDONLY` for listing / fchmod. With
    /// `O_NOFOLLOW` in `extra` a final symlink is refused (ELOOP).
    pub(crate) fn open_dir(&self, rel: &RelPath, extra: OFlag) -> nix::Result<OwnedFd> {
        open_in_root(self.fd.as_fd(), &rel.to_bytes(), extra | OFlag::O_DIRECTORY)
    }

    /// The directory `dir` as an O_PATH fd, creating missing directories
    /// (0755, root:root) on the way like docker does for layers that omit
    /// parent entries.
    pub(crate) fn dir_creating(&self, dir: &RelPath) -> Result<OwnedFd, String> {
        match self.open_dir(dir, OFlag::O_PATH) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(describe_resolve(dir, e)),
        }
        // Walk from the root, resolving each prefix inside the root again,
        // so a symlink anywhere on the way resolves the same way as above.
        let mut fd = self
            .open_dir(&RelPath::root(), OFlag::O_PATH)
            .map_err(|e| describe_resolve(&RelPath::root(), e))?;
        for (i, name) in dir.comps().iter().enumerate() {
            let prefix = dir.prefix(i + 1);
            fd = match self.open_dir(&prefix, OFlag::O_PATH) {
                Ok(next) => next,
                Err(Errno::ENOENT) => {
                    self.make_implicit_dir(fd.as_fd(), name, &prefix)?;
                    self.open_dir(&prefix, OFlag::O_PATH)
                        .map_err(|e| describe_resolve(&prefix, e))?
                }
                Err(e) => return Err(describe_resolve(&prefix, e)),
            };
        }
        Ok(fd)
    }

    /// The directory `dir` as an O_PATH fd if it exists (as a directory,
    /// possibly through in-root symlinks); `None` if it does not.
    pub(crate) fn dir_existing(&self, dir: &RelPath) -> Result<Option<OwnedFd>, String> {
        match self.open_dir(dir, OFlag::O_PATH) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::ENOENT | Errno::ENOTDIR) => Ok(None),
            Err(e) => Err(describe_resolve(dir, e)),
        }
    }

    fn make_implicit_dir(
        &self,
        parent: BorrowedFd,
        name: &[u8],
        rel: &RelPath,
    ) -> Result<(), String> {
        let mode = Mode::from_bits_truncate(0o755);
        match mkdirat(parent, name, mode) {
            Ok(()) => {}
            // openat2 said ENOENT but the name exists: a symlink whose
            // target is missing inside the root. Docker would create the
            // target; refusing is safer and no real image needs it.
            Err(Errno::EEXIST) => {
                return Err(format!(
                    "parent {} is a dangling symlink",
                    String::from_utf8_lossy(&rel.key())
                ))
            }
            Err(e) => {
                return Err(format!(
                    "cannot create parent directory {}: {e}",
                    String::from_utf8_lossy(&rel.key())
                ))
            }
        }
        let fd = openat(
            parent,
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("cannot open new directory: {e}"))?;
        // mkdirat applied the umask; set the mode docker gives implicit dirs.
        fchmod(fd.as_fd(), mode).map_err(|e| format!("cannot chmod new directory: {e}"))?;
        if self.chown_implicit {
            fchown(fd.as_fd(), Some(Uid::from_raw(0)), Some(Gid::from_raw(0)))
                .map_err(|e| format!("cannot chown new directory: {e}"))?;
        }
        Ok(())
    }
}

/// Why resolving a directory failed, in words.
pub(crate) fn describe_resolve(dir: &RelPath, e: Errno) -> String {
    let path = String::from_utf8_lossy(&dir.key()).into_owned();
    match e {
        Errno::ENOTDIR => format!("parent {path} is not a directory"),
        Errno::ELOOP => format!("too many symlinks resolving {path}"),
        Errno::EXDEV => format!("resolving {path} leaves the staging filesystem"),
        Errno::ENOSYS => "openat2 is not available (Linux 5.6 or later is needed)".into(),
        e => format!("cannot resolve {path}: {e}"),
    }
}
