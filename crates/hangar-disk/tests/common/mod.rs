//! Real-world fixtures for the storage tests: loop-mounted btrfs, tmpfs, and
//! small ext4 images made with `mkfs.ext4 -d`. Every fixture undoes itself on
//! drop, including on panic.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub const MIB: u64 = 1024 * 1024;

pub fn sh(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A btrfs filesystem in a sparse file, loop-mounted at `mnt`.
pub struct BtrfsMount {
    pub mnt: PathBuf,
    backing: PathBuf,
    _base: tempfile::TempDir,
}

impl BtrfsMount {
    pub fn new(size: &str) -> Self {
        hangar_testsupport::require_root("mount a loop-backed btrfs");
        let base = tempfile::Builder::new()
            .prefix("hgtest-btrfs")
            .tempdir()
            .unwrap();
        let backing = base.path().join("fs.img");
        let mnt = base.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        sh(Command::new("truncate").arg("-s").arg(size).arg(&backing));
        sh(Command::new("mkfs.btrfs").arg("-q").arg(&backing));
        sh(Command::new("mount")
            .arg("-o")
            .arg("loop")
            .arg(&backing)
            .arg(&mnt));
        BtrfsMount {
            mnt,
            backing,
            _base: base,
        }
    }
}

impl Drop for BtrfsMount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.mnt)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
        // `mount -o loop` sets autoclear, but detach explicitly in case it did not.
        if let Ok(out) = Command::new("losetup")
            .arg("-j")
            .arg(&self.backing)
            .output()
        {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some(dev) = line.split(':').next() {
                    let _ = Command::new("losetup").arg("-d").arg(dev).status();
                }
            }
        }
    }
}

/// A size-limited tmpfs, to run a filesystem out of space on purpose.
pub struct TmpfsMount {
    pub mnt: PathBuf,
    _base: tempfile::TempDir,
}

impl TmpfsMount {
    pub fn new(size: &str) -> Self {
        hangar_testsupport::require_root("mount a tmpfs");
        let base = tempfile::Builder::new()
            .prefix("hgtest-tmpfs")
            .tempdir()
            .unwrap();
        let mnt = base.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        sh(Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size}"))
            .arg("hgtest-tmpfs")
            .arg(&mnt));
        TmpfsMount { mnt, _base: base }
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.mnt)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
    }
}

/// Makes an ext4 image of `size_mib` MiB at `dir/name`, holding a small tree
/// plus `random_mib` MiB of incompressible data (so copies really cost space).
pub fn make_image(dir: &Path, name: &str, size_mib: u64, random_mib: u64) -> PathBuf {
    let tree = tempfile::Builder::new()
        .prefix("hgtest-tree")
        .tempdir()
        .unwrap();
    std::fs::create_dir_all(tree.path().join("etc")).unwrap();
    std::fs::write(tree.path().join("etc/hostname"), "image\n").unwrap();
    if random_mib > 0 {
        let data = tree.path().join("data.bin");
        sh(Command::new("dd")
            .arg("if=/dev/urandom")
            .arg(format!("of={}", data.display()))
            .arg("bs=1M")
            .arg(format!("count={random_mib}"))
            .arg("status=none"));
    }
    let img = dir.join(name);
    sh(Command::new("truncate")
        .arg("-s")
        .arg(format!("{size_mib}M"))
        .arg(&img));
    sh(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "root", "-m", "0", "-d"])
        .arg(tree.path())
        .arg(&img));
    img
}

pub fn sha256(path: &Path) -> String {
    // sha256sum: the sha2 crate is unoptimised in test builds and dominates the run time.
    let out = sh(Command::new("sha256sum").arg(path));
    out.split_whitespace().next().unwrap().to_string()
}

/// Filesystem size in bytes as ext4 itself reports it (`dumpe2fs -h`).
pub fn ext4_fs_bytes(path: &Path) -> u64 {
    let out = sh(Command::new("dumpe2fs").arg("-h").arg(path));
    let field = |name: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().parse::<u64>().unwrap())
            .unwrap_or_else(|| panic!("{name} missing in dumpe2fs output"))
    };
    field("Block count:") * field("Block size:")
}

/// True when `e2fsck -fn` finds the filesystem clean.
pub fn fsck_clean(path: &Path) -> bool {
    Command::new("e2fsck")
        .arg("-fn")
        .arg(path)
        .output()
        .unwrap()
        .status
        .success()
}

pub fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

pub fn free_bytes(dir: &Path) -> u64 {
    hangar_disk::space::free_bytes(dir).unwrap()
}
