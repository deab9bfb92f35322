//! Turns a debootstrapped tree into a hangar rootfs and packs it as ext4.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use crate::{assets, ImageError};

fn write_mode(path: &Path, body: &str, mode: u32) -> Result<(), ImageError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| ImageError::io("create", parent, e))?;
    }
    std::fs::write(path, body).map_err(|e| ImageError::io("write", path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| ImageError::io("chmod", path, e))
}

/// Replaces `path` (file, link or nothing) with a symlink to `target`.
fn relink(path: &Path, target: &str) -> Result<(), ImageError> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => std::fs::remove_file(path).map_err(|e| ImageError::io("remove", path, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ImageError::io("inspect", path, e)),
    }
    symlink(target, path).map_err(|e| ImageError::io("symlink", path, e))
}

/// Makes `tree` boot under hangar: guest init and poweroff, sshd reading
/// the per-VM host key and keys from `/run/hangar` (the config drive),
/// `/etc/{hostname,hosts,resolv.conf}` pointing there, no baked host keys,
/// root usable by key, and no apt caches.
pub fn finalize_tree(tree: &Path) -> Result<(), ImageError> {
    write_mode(
        &tree.join("usr/lib/hangar/guest-init"),
        assets::GUEST_INIT,
        0o755,
    )?;
    for name in ["poweroff", "halt", "shutdown", "reboot"] {
        write_mode(
            &tree.join("usr/local/sbin").join(name),
            assets::POWEROFF,
            0o755,
        )?;
    }
    write_mode(
        &tree.join("etc/ssh/sshd_config"),
        assets::SSHD_CONFIG,
        0o644,
    )?;
    std::fs::create_dir_all(tree.join("etc/hangar"))
        .map_err(|e| ImageError::io("create", tree.join("etc/hangar"), e))?;

    // No host keys in the shared image: each VM gets its own.
    let ssh_dir = tree.join("etc/ssh");
    for e in std::fs::read_dir(&ssh_dir).map_err(|e| ImageError::io("list", &ssh_dir, e))? {
        let p = e.map_err(|e| ImageError::io("list", &ssh_dir, e))?.path();
        let is_key = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("ssh_host_"));
        if is_key {
            std::fs::remove_file(&p).map_err(|e| ImageError::io("remove", &p, e))?;
        }
    }

    relink(&tree.join("etc/hostname"), "/run/hangar/hostname")?;
    relink(&tree.join("etc/hosts"), "/run/hangar/hosts")?;
    relink(&tree.join("etc/resolv.conf"), "/run/hangar/resolv.conf")?;
    write_mode(
        &tree.join("etc/fstab"),
        "# hangar: / is mounted by the initramfs (label root); /run, /tmp by guest-init\n",
        0o644,
    )?;
    unlock_root(tree)?;

    // apt caches and lists are stale by the time a VM runs: drop them.
    for dir in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        clear_files(&tree.join(dir))?;
    }
    for f in [
        "var/cache/apt/pkgcache.bin",
        "var/cache/apt/srcpkgcache.bin",
    ] {
        let _ = std::fs::remove_file(tree.join(f));
    }
    Ok(())
}

/// sshd refuses even key logins for a locked (`!`) account when PAM is off;
/// `*` means "no password" without locking.
fn unlock_root(tree: &Path) -> Result<(), ImageError> {
    let path = tree.join("etc/shadow");
    let text = std::fs::read_to_string(&path).map_err(|e| ImageError::io("read", &path, e))?;
    let fixed: String = text
        .lines()
        .map(|l| match l.split_once(':') {
            Some(("root", rest)) => {
                let mut fields: Vec<&str> = rest.split(':').collect();
                if let Some(pw) = fields.first_mut() {
                    *pw = "*";
                }
                format!("root:{}\n", fields.join(":"))
            }
            _ => format!("{l}\n"),
        })
        .collect();
    write_mode(&path, &fixed, 0o640)
}

/// Removes regular files directly in `dir` (keeps subdirectories like
/// `partial/` that apt expects).
fn clear_files(dir: &Path) -> Result<(), ImageError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let p = e.path();
        if e.file_type().map(|t| t.is_file()).unwrap_or(false) {
            let keep = p.file_name().is_some_and(|n| n == "lock");
            if !keep {
                std::fs::remove_file(&p).map_err(|e| ImageError::io("remove", &p, e))?;
            }
        }
    }
    Ok(())
}

/// Checks the ext4 superblock magic (0xEF53 at byte 1080).
pub fn check_ext4(path: &Path) -> Result<(), ImageError> {
    use std::io::{Read, Seek, SeekFrom};
    let bad = |reason: &str| ImageError::BadRootfs {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let mut f = std::fs::File::open(path).map_err(|e| ImageError::io("open rootfs", path, e))?;
    let mut magic = [0u8; 2];
    f.seek(SeekFrom::Start(1080))
        .and_then(|_| f.read_exact(&mut magic))
        .map_err(|_| bad("too small to be an ext4 filesystem"))?;
    if magic != [0x53, 0xEF] {
        return Err(bad(
            "not an ext4 filesystem (no superblock magic); make one with mkfs.ext4 -d TREE",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal_tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = dir.path();
        std::fs::create_dir_all(t.join("etc/ssh")).expect("mkdir");
        std::fs::write(t.join("etc/ssh/ssh_host_ed25519_key"), "k").expect("write");
        std::fs::write(t.join("etc/ssh/ssh_config"), "c").expect("write");
        std::fs::write(t.join("etc/hostname"), "builder").expect("write");
        std::fs::write(t.join("etc/shadow"), "root:!:1:0:::::\nbin:*:1:::::\n").expect("write");
        dir
    }

    #[test]
    fn finalize_removes_host_keys_and_links_identity_files() {
        let dir = minimal_tree();
        let t = dir.path();

        finalize_tree(t).expect("finalize");

        assert!(!t.join("etc/ssh/ssh_host_ed25519_key").exists());
        assert!(t.join("etc/ssh/ssh_config").exists());
        assert_eq!(
            std::fs::read_link(t.join("etc/resolv.conf")).expect("link"),
            Path::new("/run/hangar/resolv.conf")
        );
        assert_eq!(
            std::fs::read_link(t.join("etc/hostname")).expect("link"),
            Path::new("/run/hangar/hostname")
        );
    }

    #[test]
    fn finalize_installs_init_poweroff_and_sshd_config() {
        let dir = minimal_tree();
        let t = dir.path();

        finalize_tree(t).expect("finalize");

        let init = t.join("usr/lib/hangar/guest-init");
        let mode = std::fs::metadata(&init).expect("init").permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        assert!(t.join("usr/local/sbin/poweroff").exists());
        let sshd = std::fs::read_to_string(t.join("etc/ssh/sshd_config")).expect("sshd");
        assert!(sshd.contains("UsePAM no"));
        assert!(sshd.contains("AuthorizedKeysFile /run/hangar/authorized_keys"));
    }

    #[test]
    fn finalize_unlocks_root_only() {
        let dir = minimal_tree();

        finalize_tree(dir.path()).expect("finalize");

        let shadow = std::fs::read_to_string(dir.path().join("etc/shadow")).expect("read");
        assert_eq!(shadow, "root:*:1:0:::::\nbin:*:1:::::\n");
    }

    #[test]
    fn check_ext4_rejects_non_ext4() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("x.img");
        std::fs::write(&p, vec![0u8; 4096]).expect("write");

        let err = check_ext4(&p).expect_err("must fail");

        assert!(err.to_string().contains("not an ext4"));
    }

    #[test]
    fn check_ext4_accepts_real_mkfs_output() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("x.img");
        std::fs::File::create(&p)
            .and_then(|f| f.set_len(8 << 20))
            .expect("create");
        hangar_host::Tool::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "root"])
            .arg(&p)
            .run_blocking()
            .expect("mkfs.ext4 (apt-get install e2fsprogs)");

        check_ext4(&p).expect("ext4");
    }
}
