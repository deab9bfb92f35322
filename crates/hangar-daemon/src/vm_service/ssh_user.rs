//! Which guest user the user's own SSH keys may log in as (`vm create
//! --ssh-user`). The daemon's key may log in as anyone; the user's keys
//! (sent by the CLI from `~/.ssh/*.pub`) only as this one login, so root
//! is theirs only when the VM was created that way: `--ssh-user root`, or
//! an image whose user is root (the default image, most Docker images).
//!
//! Kept in the VM dir (`ssh-user`): the login name, or empty when the
//! user's keys may not log in at all (an image whose USER is a bare uid,
//! which has no name to log in as). A VM made before this file existed
//! has none and keeps what it had: root.

use std::io::ErrorKind;

use hangar_image::sources::RunConfig;

use super::dir::VmDir;
use crate::error::{DaemonError, Result};

/// Checks a requested login before anything is made.
pub fn check_requested(user: &str) -> Result<()> {
    hangar_api::name::validate_login_name(user)
        .map_err(|e| DaemonError::invalid(format!("ssh user: {e}")))
}

/// The login for a new VM: the one asked for (already checked), else the
/// image's user.
pub fn choose(requested: Option<&str>, image: Option<&RunConfig>) -> Option<String> {
    if let Some(user) = requested {
        return Some(user.to_string());
    }
    let image_user = image.and_then(|r| r.user_name()).unwrap_or("root");
    let image_user = if image_user == "0" {
        "root"
    } else {
        image_user
    };
    hangar_api::name::validate_login_name(image_user)
        .ok()
        .map(|()| image_user.to_string())
}

pub fn write(dir: &VmDir, user: Option<&str>) -> Result<()> {
    hangar_host::private::write_private(&dir.ssh_user(), user.unwrap_or(""))
        .map_err(|e| DaemonError::io("cannot record the VM's SSH login user", e))
}

/// The recorded login; `None` when the user's keys may not log in.
pub fn read(dir: &VmDir) -> Option<String> {
    match std::fs::read_to_string(dir.ssh_user()) {
        Ok(s) => {
            let s = s.trim();
            // Checked again: it names a file on the config drive.
            hangar_api::name::validate_login_name(s)
                .ok()
                .map(|()| s.to_string())
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Some("root".to_string()),
        Err(e) => {
            tracing::warn!(path = %dir.ssh_user().display(), error = %e, "cannot read the VM's SSH login user");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(user: Option<&str>) -> RunConfig {
        RunConfig {
            user: user.map(str::to_string),
            ..RunConfig::default()
        }
    }

    #[test]
    fn the_image_user_is_the_login_unless_one_is_asked_for() {
        let c = |req, img: Option<&str>| choose(req, Some(&image(img)));
        assert_eq!(c(None, None), Some("root".into()), "no USER: root");
        assert_eq!(c(None, Some("0")), Some("root".into()));
        assert_eq!(c(None, Some("dev:dev")), Some("dev".into()));
        assert_eq!(c(None, Some("65532")), None, "a bare uid has no login name");
        assert_eq!(c(Some("app"), Some("dev")), Some("app".into()));
        assert_eq!(choose(None, None), Some("root".into()));
        let e = check_requested("../etc").expect_err("bad name");
        assert!(e.to_string().contains("ssh user"), "{e}");
    }

    #[test]
    fn the_recorded_login_reads_back_and_a_vm_without_one_keeps_root() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = VmDir::at(tmp.path().to_path_buf());
        assert_eq!(read(&dir), Some("root".into()), "made before --ssh-user");
        write(&dir, Some("dev")).expect("write");
        assert_eq!(read(&dir), Some("dev".into()));
        write(&dir, None).expect("write");
        assert_eq!(read(&dir), None);
        std::fs::write(dir.ssh_user(), "a/../b").expect("write");
        assert_eq!(read(&dir), None, "never a path on the drive");
    }
}
