//! Single daemon instance per runtime dir: an exclusive `flock` on the pid
//! file, held for the daemon's lifetime. The lock (not the file's presence)
//! is the truth, so a stale pid file left by a crash never blocks a start.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

#[derive(Debug, thiserror::Error)]
pub enum PidFileError {
    #[error("cannot open pid file {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another hangar daemon (pid {pid}) already serves this runtime dir ({path}); stop it first or give this one its own runtime_dir")]
    Held { path: PathBuf, pid: String },
    #[error("cannot write pid file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Holds the lock until dropped; the file is removed on drop.
pub struct PidFile {
    path: PathBuf,
    _lock: Flock<File>,
}

impl PidFile {
    pub fn acquire(path: &Path) -> Result<PidFile, PidFileError> {
        // Private (0600) whatever the umask; never truncated before the
        // lock is ours, so a running daemon's pid stays readable.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(hangar_host::private::PRIVATE_FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .and_then(|f| {
                f.set_permissions(std::fs::Permissions::from_mode(
                    hangar_host::private::PRIVATE_FILE_MODE,
                ))?;
                Ok(f)
            })
            .map_err(|source| PidFileError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((mut file, _)) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                return Err(PidFileError::Held {
                    path: path.to_path_buf(),
                    pid: pid.trim().to_string(),
                });
            }
        };
        let write = |f: &mut File| -> std::io::Result<()> {
            f.set_len(0)?;
            f.seek(SeekFrom::Start(0))?;
            writeln!(f, "{}", std::process::id())?;
            f.sync_all()
        };
        write(&mut lock).map_err(|source| PidFileError::Write {
            path: path.to_path_buf(),
            source,
        })?;
        let _ = lock.as_fd();
        Ok(PidFile {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_is_refused_with_first_pid() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hangar.pid");
        let _first = PidFile::acquire(&p).unwrap();
        let err = PidFile::acquire(&p).err().unwrap().to_string();
        assert!(err.contains(&std::process::id().to_string()), "{err}");
    }

    #[test]
    fn stale_file_without_lock_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hangar.pid");
        std::fs::write(&p, "999999\n").unwrap();
        assert!(PidFile::acquire(&p).is_ok());
    }

    #[test]
    fn drop_removes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hangar.pid");
        drop(PidFile::acquire(&p).unwrap());
        assert!(!p.exists());
    }
}
