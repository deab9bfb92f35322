//! Opening a file the user names, as the user, for upload. Only a regular
//! file the user can read is accepted: symlinks (not followed), devices,
//! FIFOs, sockets and directories are refused with a message that says
//! what the path is, before anything is sent. Whether the user may read it
//! is the kernel's answer to this process, never a guess from mode bits.

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A regular file opened for reading, and its size at open time.
#[derive(Debug)]
pub struct LocalFile {
    pub path: PathBuf,
    pub file: File,
    pub len: u64,
}

/// Why a file cannot be uploaded; the message names the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum LocalFileError {
    #[error("{what} file {path} does not exist")]
    Missing { what: String, path: PathBuf },
    #[error(
        "{what} {path} is a symbolic link; pass the file it points to (links are not followed)"
    )]
    Symlink { what: String, path: PathBuf },
    #[error("{what} {path} is {kind}, not a regular file")]
    NotRegular {
        what: String,
        path: PathBuf,
        kind: &'static str,
    },
    #[error(
        "you cannot read {what} file {path} ({source}); the file is read with your own rights"
    )]
    Unreadable {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} file {path} changed while it was being opened; try again")]
    Changed { what: String, path: PathBuf },
}

/// What a failed look at or open of `path` means to the user: missing, a
/// symlink (`ELOOP` from `O_NOFOLLOW`), or the kernel's own refusal.
fn open_error(what: &str, path: &Path, e: std::io::Error) -> LocalFileError {
    let (what, path) = (what.to_string(), path.to_path_buf());
    match (e.kind(), e.raw_os_error()) {
        (ErrorKind::NotFound, _) => LocalFileError::Missing { what, path },
        (_, Some(libc::ELOOP)) => LocalFileError::Symlink { what, path },
        _ => LocalFileError::Unreadable {
            what,
            path,
            source: e,
        },
    }
}

/// Opens `path` for upload as `what` (`kernel`, `initrd`, `rootfs`).
pub fn open_regular(what: &str, path: &Path) -> Result<LocalFile, LocalFileError> {
    let w = || what.to_string();
    let p = || path.to_path_buf();
    // Look before opening: opening a FIFO or a device can block or act.
    let before = std::fs::symlink_metadata(path).map_err(|e| open_error(what, path, e))?;
    check_type(what, path, &before.file_type())?;
    // O_NOFOLLOW and O_NONBLOCK: if the path was swapped for a link or a
    // FIFO since the look, the open fails or returns at once, and the
    // checks on the opened file below catch it.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| open_error(what, path, e))?;
    let meta = file.metadata().map_err(|e| LocalFileError::Unreadable {
        what: w(),
        path: p(),
        source: e,
    })?;
    check_type(what, path, &meta.file_type())?;
    if (meta.dev(), meta.ino()) != (before.dev(), before.ino()) {
        return Err(LocalFileError::Changed {
            what: w(),
            path: p(),
        });
    }
    Ok(LocalFile {
        path: p(),
        file,
        len: meta.len(),
    })
}

fn check_type(what: &str, path: &Path, t: &std::fs::FileType) -> Result<(), LocalFileError> {
    let kind = if t.is_file() {
        return Ok(());
    } else if t.is_symlink() {
        return Err(LocalFileError::Symlink {
            what: what.to_string(),
            path: path.to_path_buf(),
        });
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_char_device() {
        "a character device"
    } else {
        "not a regular file"
    };
    Err(LocalFileError::NotRegular {
        what: what.to_string(),
        path: path.to_path_buf(),
        kind,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_regular_file_opens_with_its_size() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("vmlinux");
        std::fs::write(&f, b"twelve bytes").unwrap();

        let opened = open_regular("kernel", &f).unwrap();

        assert_eq!(opened.len, 12);
    }

    #[test]
    fn a_symlink_is_refused_even_to_a_readable_file() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("real");
        std::fs::write(&target, b"x").unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();

        let err = open_regular("initrd", &link).unwrap_err();

        assert!(matches!(err, LocalFileError::Symlink { .. }), "{err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();

        let err = open_regular("rootfs", &fifo).unwrap_err();

        assert!(err.to_string().contains("a FIFO"), "{err}");
    }

    #[test]
    fn a_directory_a_device_and_a_socket_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let err = open_regular("rootfs", d.path()).unwrap_err();
        assert!(err.to_string().contains("a directory"), "{err}");

        let err = open_regular("kernel", Path::new("/dev/null")).unwrap_err();
        assert!(err.to_string().contains("a character device"), "{err}");

        let sock = d.path().join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let err = open_regular("kernel", &sock).unwrap_err();
        assert!(err.to_string().contains("a socket"), "{err}");
    }

    #[test]
    fn a_missing_file_says_so() {
        let err = open_regular("kernel", Path::new("/nonexistent/vmlinux")).unwrap_err();

        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    #[test]
    fn an_unreadable_file_is_refused_by_the_kernel() {
        // Root reads anything, so play a user who may not: a forked child
        // drops to nobody and reports what it got.
        if !nix::unistd::geteuid().is_root() {
            let d = tempfile::tempdir().unwrap();
            let f = d.path().join("secret");
            std::fs::write(&f, b"x").unwrap();
            std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o000))
                .unwrap();
            let err = open_regular("initrd", &f).unwrap_err();
            assert!(err.to_string().contains("you cannot read"), "{err}");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("secret");
        std::fs::write(&f, b"x").unwrap();
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        std::fs::set_permissions(
            d.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "local_file::tests::probe_unreadable_as_other_user",
                "--ignored",
                "--nocapture",
            ])
            .env("HANGAR_PROBE_FILE", &f)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("PROBE: you cannot read initrd file"),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Run by [`an_unreadable_file_is_refused_by_the_kernel`] as nobody.
    #[test]
    #[ignore = "a helper the test above runs as another user"]
    fn probe_unreadable_as_other_user() {
        let Some(f) = std::env::var_os("HANGAR_PROBE_FILE") else {
            return;
        };
        match open_regular("initrd", Path::new(&f)) {
            Ok(_) => println!("PROBE: opened"),
            Err(e) => println!("PROBE: {e}"),
        }
    }
}
