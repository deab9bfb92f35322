//! The files of one VM, `<state_dir>/vms/<id>/`. Every per-VM file name
//! lives here; the VMM's own files (`vmm.pid`, sockets, `vmm.log`) are
//! named by hangar-vmm.

use std::path::{Path, PathBuf};

/// The root disk (a file, or the COW store of a dm disk).
const DISK: &str = "disk.ext4";
/// The guest's serial console, one log per boot.
pub const SERIAL_LOG: &str = "serial.log";
/// The config drive: the guest's identity, read at boot.
const CONFIG_DRIVE: &str = "config.img";
/// The user's extra SSH keys, one per line.
const USER_KEYS: &str = "authorized_keys";
/// The login the user's keys may use (see `ssh_user`).
const SSH_USER: &str = "ssh-user";
/// Present when the VM starts its image's entrypoint at every boot.
const RUN_ENTRYPOINT: &str = "run-entrypoint";

/// A VM's directory (it need not exist yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmDir(PathBuf);

impl VmDir {
    /// The directory of VM `id` under `vms_dir`.
    pub fn of(vms_dir: &Path, id: &str) -> Self {
        VmDir(vms_dir.join(id))
    }

    /// A directory used as a VM dir elsewhere (a boot snapshot prewarm).
    pub fn at(path: PathBuf) -> Self {
        VmDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn disk(&self) -> PathBuf {
        self.0.join(DISK)
    }

    pub fn serial_log(&self) -> PathBuf {
        self.0.join(SERIAL_LOG)
    }

    pub fn config_drive(&self) -> PathBuf {
        self.0.join(CONFIG_DRIVE)
    }

    pub fn user_keys(&self) -> PathBuf {
        self.0.join(USER_KEYS)
    }

    pub fn ssh_user(&self) -> PathBuf {
        self.0.join(SSH_USER)
    }

    pub fn run_entrypoint(&self) -> PathBuf {
        self.0.join(RUN_ENTRYPOINT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_lives_in_the_vm_dir() {
        let dir = VmDir::of(Path::new("/state/vms"), "abc");
        for f in [
            dir.disk(),
            dir.serial_log(),
            dir.config_drive(),
            dir.user_keys(),
            dir.run_entrypoint(),
            dir.ssh_user(),
        ] {
            assert_eq!(f.parent(), Some(Path::new("/state/vms/abc")), "{f:?}");
        }
    }
}
