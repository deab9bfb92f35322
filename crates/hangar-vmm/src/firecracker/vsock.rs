//! The host-side files of Firecracker's vsock device.
//!
//! Firecracker creates (binds) the vsock Unix socket itself and refuses to
//! start when the path exists, so a socket left by a crash must go before
//! the next start and every exit path must remove it. `kill` only gets a
//! [`crate::VmmHandle`], so `start` records the socket's host path as the
//! symlink `vm_dir/`[`VSOCK_LINK`]; `cleanup` follows it.
//!
//! Under the jailer the real socket is inside the jail (removed with it)
//! and the spec's `uds_path` is made a symlink to it, so host-initiated
//! connections use the same path with or without the jailer.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::error::VmmError;
use crate::VmSpec;

use super::jailer::Jail;

/// Symlink in `vm_dir` to the spec's vsock `uds_path`.
pub const VSOCK_LINK: &str = "firecracker-vsock.link";

/// Removes `path` if it is a socket or a symlink (what Firecracker or
/// [`prepare`] left); `Ok(false)` if it did not exist. Anything else is
/// refused, so a wrong `uds_path` never deletes a user's file.
pub(crate) fn remove_socket_file(path: &Path) -> Result<bool, VmmError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(VmmError::Io {
                action: "inspect the vsock socket",
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let kind = meta.file_type();
    if !kind.is_socket() && !kind.is_symlink() {
        return Err(VmmError::InvalidVsock {
            reason: format!(
                "{} exists and is not a socket; choose another uds_path or remove it",
                path.display()
            ),
        });
    }
    std::fs::remove_file(path).map_err(|source| VmmError::Io {
        action: "remove the stale vsock socket",
        path: path.to_path_buf(),
        source,
    })?;
    Ok(true)
}

/// Before spawning: removes what a previous run left, records the socket
/// path in `vm_dir` and, under the jailer, links `uds_path` to the socket
/// inside `jail`. Cleans up after itself on error.
pub(crate) fn prepare(spec: &VmSpec, jail: Option<&Jail>) -> Result<(), VmmError> {
    cleanup(&spec.vm_dir);
    let Some(v) = &spec.vsock else {
        return Ok(());
    };
    if remove_socket_file(&v.uds_path)? {
        tracing::warn!(vm = %spec.id, path = %v.uds_path.display(), "removed a stale vsock socket");
    }
    let link = spec.vm_dir.join(VSOCK_LINK);
    symlink(&v.uds_path, &link)?;
    if let Some(j) = jail {
        if let Err(e) = symlink(&j.vsock_socket(), &v.uds_path) {
            crate::process::remove_if_exists(&link);
            return Err(e);
        }
    }
    Ok(())
}

/// Removes the vsock socket (or the symlink to it) recorded in `vm_dir`,
/// and the record. Idempotent; problems are logged, not returned, as it
/// runs on clean-up paths.
pub(crate) fn cleanup(vm_dir: &Path) {
    let link = vm_dir.join(VSOCK_LINK);
    let Ok(target) = std::fs::read_link(&link) else {
        return;
    };
    if let Err(e) = remove_socket_file(&target) {
        tracing::warn!(path = %target.display(), error = %e, "cannot remove the vsock socket");
    }
    crate::process::remove_if_exists(&link);
}

/// The socket path recorded in `vm_dir`, if the VM has a vsock device.
pub(crate) fn recorded(vm_dir: &Path) -> Option<PathBuf> {
    std::fs::read_link(vm_dir.join(VSOCK_LINK)).ok()
}

fn symlink(target: &Path, link: &Path) -> Result<(), VmmError> {
    std::os::unix::fs::symlink(target, link).map_err(|source| VmmError::Io {
        action: "create the vsock symlink",
        path: link.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Vsock;

    fn spec_in(dir: &Path) -> VmSpec {
        VmSpec {
            id: "vm1".into(),
            name: "dev".into(),
            cpus: 1,
            memory_mib: 128,
            kernel: dir.join("vmlinux"),
            initrd: None,
            cmdline: String::new(),
            root_disk: dir.join("root.ext4"),
            extra_drives: vec![],
            tap: "tap0".into(),
            mac: "06:00:00:00:00:01".into(),
            vm_dir: dir.to_path_buf(),
            serial_log: dir.join("serial.log"),
            netns: None,
            vsock: Some(Vsock {
                guest_cid: 3,
                uds_path: dir.join("v.sock"),
            }),
            restore_from: None,
        }
    }

    fn bind(path: &Path) -> std::os::unix::net::UnixListener {
        std::os::unix::net::UnixListener::bind(path).unwrap()
    }

    #[test]
    fn prepare_removes_stale_socket_and_records_path() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec_in(dir.path());
        let sock = dir.path().join("v.sock");
        drop(bind(&sock));

        prepare(&spec, None).unwrap();

        assert!(!sock.exists() && std::fs::symlink_metadata(&sock).is_err());
        assert_eq!(recorded(dir.path()), Some(sock));
    }

    #[test]
    fn prepare_with_regular_file_at_uds_path_fails_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec_in(dir.path());
        std::fs::write(dir.path().join("v.sock"), b"precious").unwrap();

        let err = prepare(&spec, None).unwrap_err();

        assert!(matches!(err, VmmError::InvalidVsock { .. }), "{err:?}");
        assert_eq!(
            std::fs::read(dir.path().join("v.sock")).unwrap(),
            b"precious"
        );
        assert_eq!(recorded(dir.path()), None);
    }

    #[test]
    fn prepare_under_jailer_links_uds_path_into_the_jail() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec_in(dir.path());
        let jail = Jail::new(
            &dir.path().join("base"),
            Path::new("/usr/bin/firecracker"),
            "vm1",
        );

        prepare(&spec, Some(&jail)).unwrap();

        assert_eq!(
            std::fs::read_link(dir.path().join("v.sock")).unwrap(),
            jail.vsock_socket()
        );
    }

    #[test]
    fn cleanup_removes_the_socket_firecracker_created() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec_in(dir.path());
        prepare(&spec, None).unwrap();
        let sock = dir.path().join("v.sock");
        let _listener = bind(&sock);

        cleanup(dir.path());

        assert!(std::fs::symlink_metadata(&sock).is_err());
        assert_eq!(recorded(dir.path()), None);
    }

    #[test]
    fn cleanup_without_record_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("v.sock"), b"x").unwrap();

        cleanup(dir.path());

        assert!(dir.path().join("v.sock").exists());
    }
}
