//! Removing a work directory a crashed process left behind, safely.
//!
//! A build killed with `kill -9` can leave processes still working in its
//! tree (debootstrap, a chroot'ed apt) and mounts inside it (`/proc`,
//! `/sys`, `/dev/pts` that debootstrap mounts in the target). A plain
//! `rm -rf` would walk into those mounts. [`sweep_dir`] first kills the
//! processes rooted or working in the directory, then unmounts everything
//! under it (deepest first, detached, never following a symlink), then
//! removes the tree without ever crossing into another filesystem.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::mount::{umount2, MntFlags};

/// What [`sweep_dir`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    pub killed: usize,
    pub unmounted: usize,
}

/// Errors of [`sweep_dir`].
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("cannot unmount {path}: {source}")]
    Unmount {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("{path} is still a mount point after unmounting; left in place")]
    StillMounted { path: PathBuf },
    #[error("cannot remove {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Kills what still runs in `dir`, unmounts everything under it and
/// removes it. A missing `dir` is fine. Never follows symlinks and never
/// removes anything on another filesystem than `dir`'s own.
pub fn sweep_dir(dir: &Path) -> Result<Swept, SweepError> {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Swept::default()),
        Err(source) => {
            return Err(SweepError::Remove {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    if !meta.is_dir() {
        // A symlink or a file: removing the entry itself touches nothing else.
        std::fs::remove_file(dir).map_err(|source| SweepError::Remove {
            path: dir.to_path_buf(),
            source,
        })?;
        return Ok(Swept::default());
    }
    let killed = kill_processes_in(dir);
    let unmounted = unmount_all_under(dir)?;
    // Mounted on itself (its own filesystem root): never remove across it.
    if mounts_under(dir).iter().any(|m| m == dir) {
        return Err(SweepError::StillMounted {
            path: dir.to_path_buf(),
        });
    }
    remove_tree_one_fs(dir, meta.dev())?;
    Ok(Swept { killed, unmounted })
}

/// Mount points at or below `dir`, deepest first, as this process's mount
/// namespace sees them (`/proc/self/mountinfo`).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mountinfo(m)))
        .filter(|m| m.starts_with(dir))
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    found.dedup();
    found
}

/// Unmounts every mount at or below `dir`, deepest first, lazily
/// (`MNT_DETACH`: a busy mount is detached now and freed when unused) and
/// without following a symlink at the mount point (`UMOUNT_NOFOLLOW`).
/// Mounts stacked on one point are unmounted one by one. Returns how many.
pub fn unmount_all_under(dir: &Path) -> Result<usize, SweepError> {
    let mut count = 0;
    // Each round unmounts the top mount of every point; stacked mounts
    // need more rounds. A bound keeps a mount that comes back from looping.
    for _ in 0..64 {
        let mounts = mounts_under(dir);
        if mounts.is_empty() {
            return Ok(count);
        }
        for m in mounts {
            match umount2(&m, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
                Ok(()) => {
                    tracing::info!(mount = %m.display(), "unmounted a leftover mount");
                    count += 1;
                }
                // Gone with its parent already (detached as a subtree).
                Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
                Err(source) => return Err(SweepError::Unmount { path: m, source }),
            }
        }
    }
    match mounts_under(dir).into_iter().next() {
        Some(path) => Err(SweepError::StillMounted { path }),
        None => Ok(count),
    }
}

/// Removes `path` and everything below it that lives on device `dev`; a
/// directory on another device (a mount that could not be removed) stops
/// the removal with an error instead of being walked into. Symlinks are
/// removed, never followed.
fn remove_tree_one_fs(path: &Path, dev: u64) -> Result<(), SweepError> {
    let err = |source| SweepError::Remove {
        path: path.to_path_buf(),
        source,
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(err(e)),
    };
    if !meta.is_dir() {
        return match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(err(e)),
            _ => Ok(()),
        };
    }
    if meta.dev() != dev {
        return Err(SweepError::StillMounted {
            path: path.to_path_buf(),
        });
    }
    for entry in std::fs::read_dir(path).map_err(err)? {
        let entry = entry.map_err(err)?;
        remove_tree_one_fs(&entry.path(), dev)?;
    }
    match std::fs::remove_dir(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(err(e)),
        _ => Ok(()),
    }
}

/// SIGKILLs every process whose root, working directory or executable is
/// inside `dir`, or whose command line names a path inside it (a
/// debootstrap or chroot the crashed process started). Returns how many.
pub fn kill_processes_in(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let me = std::process::id();
    let mut killed = 0;
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me || !process_uses_dir(&e.path(), dir) {
            continue;
        }
        tracing::warn!(pid, dir = %dir.display(), "killing a process left working in a crashed build's directory");
        let target = nix::unistd::Pid::from_raw(pid as i32);
        if nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL).is_ok() {
            killed += 1;
        }
    }
    killed
}

fn process_uses_dir(proc_dir: &Path, dir: &Path) -> bool {
    let links = ["root", "cwd", "exe"]
        .iter()
        .filter_map(|l| std::fs::read_link(proc_dir.join(l)).ok());
    if links.into_iter().any(|p| p.starts_with(dir)) {
        return true;
    }
    let cmdline = std::fs::read(proc_dir.join("cmdline")).unwrap_or_default();
    cmdline_names_dir(&cmdline, dir)
}

/// Whether one argument of a NUL-separated command line is `dir` or a path
/// (or `key=path`/`key:path` option) inside it. Whole arguments, so
/// `vms/abc` never matches a process of `vms/abc2`.
pub fn cmdline_names_dir(cmdline: &[u8], dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let dir = dir.as_os_str().as_bytes();
    cmdline.split(|b| *b == 0).any(|arg| {
        // An option value such as `path=/x/vms/abc/disk.ext4`.
        (0..arg.len())
            .filter(|&i| i == 0 || matches!(arg[i - 1], b'=' | b':' | b','))
            .any(|i| {
                let rest = &arg[i..];
                rest.starts_with(dir)
                    && matches!(rest.get(dir.len()), None | Some(b'/') | Some(b','))
            })
    })
}

/// Mount points in mountinfo escape space, tab, newline and backslash as
/// `\ooo` octal.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn cmdline_names_dir_matches_whole_arguments_only() {
        let dir = Path::new("/x/vms/abc");
        assert!(cmdline_names_dir(
            b"qemu\0-kernel\0/x/vms/abc/vmlinux\0",
            dir
        ));
        assert!(cmdline_names_dir(
            b"qemu\0-drive\0id=root,file=/x/vms/abc/disk.ext4\0",
            dir
        ));
        assert!(cmdline_names_dir(b"fc\0--api-sock\0/x/vms/abc\0", dir));
        assert!(!cmdline_names_dir(
            b"qemu\0-kernel\0/x/vms/abc2/vmlinux\0",
            dir
        ));
        assert!(!cmdline_names_dir(b"sleep\0ninety\0", dir));
    }

    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/end\\04"), "/end\\04");
    }

    #[test]
    fn command_lines_name_whole_path_components() {
        let dir = Path::new("/x/.pull-ab");
        assert!(cmdline_names_dir(
            b"debootstrap\0--variant=minbase\0/x/.pull-ab/tree\0",
            dir
        ));
        assert!(cmdline_names_dir(b"chroot\0/x/.pull-ab\0", dir));
        assert!(!cmdline_names_dir(b"chroot\0/x/.pull-abc/tree\0", dir));
        assert!(!cmdline_names_dir(b"sleep\x0010\0", dir));
    }

    #[test]
    fn a_tree_with_files_and_a_dangling_symlink_is_removed_without_following_it() {
        let base = tempfile::tempdir().unwrap();
        let outside = base.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), "x").unwrap();
        let dir = base.path().join(".pull-1");
        std::fs::create_dir_all(dir.join("tree/etc")).unwrap();
        std::fs::write(dir.join("tree/etc/f"), "y").unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("tree/link")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", dir.join("dangling")).unwrap();
        assert_eq!(sweep_dir(&dir).unwrap().unmounted, 0);
        assert!(!dir.exists());
        assert!(outside.join("keep").exists(), "a symlink was followed");
    }

    #[test]
    fn a_missing_dir_is_fine() {
        let base = tempfile::tempdir().unwrap();
        assert_eq!(
            sweep_dir(&base.path().join("nope")).unwrap(),
            Swept::default()
        );
    }
}
