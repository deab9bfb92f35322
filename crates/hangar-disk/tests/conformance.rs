//! The disk-backend conformance suite: the same behaviour tests run against
//! every backend on a real filesystem (reflink on a loop-mounted btrfs, copy
//! on a temp dir, dm snapshots when `/dev/mapper/control` exists — ignored
//! otherwise, see scripts/test.sh). Needs root (mount, loop devices). Disk
//! contents are checked through `activate`, i.e. at the path a VMM would
//! open (the file itself, or the `/dev/mapper` device).

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

mod common;

use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use common::*;
use hangar_disk::{
    detect, dm_availability, dm_device_name, CopyBackend, DiskBackend, DmBackend, ReflinkBackend,
    StorageError,
};

/// A directory for disks plus the backend under test; the guard keeps the
/// filesystem alive (and unmounts it on drop).
struct Fixture {
    dir: PathBuf,
    backend: Box<dyn DiskBackend>,
    _guard: Box<dyn std::any::Any>,
}

/// Activates `disk`, runs `f` on the path a VMM would open, deactivates.
fn with_active<T>(
    fx: &Fixture,
    img: &std::path::Path,
    disk: &std::path::Path,
    f: impl FnOnce(&std::path::Path) -> T,
) -> T {
    let dev = fx.backend.activate(img, disk).unwrap();
    let out = f(&dev);
    fx.backend.deactivate(disk).unwrap();
    out
}

/// Size in bytes of a file or block device.
fn dev_len(path: &std::path::Path) -> u64 {
    use std::io::{Seek, SeekFrom};
    std::fs::File::open(path)
        .unwrap()
        .seek(SeekFrom::End(0))
        .unwrap()
}

/// Removes any dm device of this fixture's directory on drop (panic-safe).
struct DmCleanup {
    dir: PathBuf,
}

impl Drop for DmCleanup {
    fn drop(&mut self) {
        let prefix = dm_device_name(&self.dir.join("x"));
        let prefix = prefix.trim_end_matches("-x").to_string() + "-";
        let Ok(out) = std::process::Command::new("dmsetup").arg("ls").output() else {
            return;
        };
        let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&prefix))
            .map(str::to_string)
            .collect();
        // Snapshots before their "-base" origins.
        names.sort_by_key(|n| n.ends_with("-base"));
        for n in names {
            let _ = std::process::Command::new("dmsetup")
                .args(["remove", "--retry", &n])
                .status();
        }
    }
}

fn dm_fixture() -> Fixture {
    hangar_testsupport::require_root("device-mapper and loop devices");
    if let Err(why) = dm_availability() {
        panic!("needs device-mapper, which is not usable here: {why}");
    }
    let tmp = tempfile::Builder::new()
        .prefix("hgtest-dm")
        .tempdir()
        .unwrap();
    let dir = tmp.path().to_path_buf();
    let cleanup = DmCleanup { dir: dir.clone() };
    Fixture {
        dir: dir.clone(),
        backend: Box::new(DmBackend::new(&dir)),
        // Drop order: tuple fields in order, so devices go before the dir.
        _guard: Box::new((cleanup, tmp)),
    }
}

fn reflink_fixture() -> Fixture {
    let fs = BtrfsMount::new("1G");
    let dir = fs.mnt.clone();
    let (detected, reason) = detect(&dir);
    assert_eq!(
        detected.name(),
        "reflink",
        "btrfs must support reflink: {reason}"
    );
    Fixture {
        dir,
        backend: Box::new(ReflinkBackend),
        _guard: Box::new(fs),
    }
}

fn copy_fixture() -> Fixture {
    let tmp = tempfile::Builder::new()
        .prefix("hgtest-copy")
        .tempdir()
        .unwrap();
    Fixture {
        dir: tmp.path().to_path_buf(),
        backend: Box::new(CopyBackend),
        _guard: Box::new(tmp),
    }
}

/// `conformance_suite!(#[ignore = "needs …"] module, fixture)`: the
/// attributes go on every test of the backend.
macro_rules! conformance_suite {
    ($(#[$need:meta])* $suite:ident, $fixture:expr) => {
        mod $suite {
            use super::*;

            #[test]
            $(#[$need])*
            fn create_at_image_size_gives_identical_clean_disk() {
                let fx = $fixture;
                let img = make_image(&fx.dir, "rootfs.ext4", 64, 8);

                let disk = fx.dir.join("vm1.ext4");
                fx.backend.create(&img, &disk, 64 * MIB).unwrap();

                let (sum, clean) = with_active(&fx, &img, &disk, |dev| (sha256(dev), fsck_clean(dev)));

                assert_eq!(sha256(&img), sum);
                assert!(clean);
            }

            #[test]
            $(#[$need])*
            fn create_larger_grows_file_and_filesystem() {
                let fx = $fixture;
                let img = make_image(&fx.dir, "rootfs.ext4", 64, 8);
                let disk = fx.dir.join("vm1.ext4");

                fx.backend.create(&img, &disk, 256 * MIB).unwrap();

                let (len, fs, clean) = with_active(&fx, &img, &disk, |dev| {
                    (dev_len(dev), ext4_fs_bytes(dev), fsck_clean(dev))
                });

                assert_eq!(len, 256 * MIB);
                assert_eq!(fs, 256 * MIB);
                assert!(clean, "e2fsck -fn must pass after growing");
                assert_eq!(ext4_fs_bytes(&img), 64 * MIB, "image must stay untouched");
            }

            #[test]
            $(#[$need])*
            fn write_to_one_disk_changes_neither_image_nor_other_disk() {
                let fx = $fixture;
                let img = make_image(&fx.dir, "rootfs.ext4", 64, 8);
                let (a, b) = (fx.dir.join("a.ext4"), fx.dir.join("b.ext4"));
                fx.backend.create(&img, &a, 64 * MIB).unwrap();
                fx.backend.create(&img, &b, 64 * MIB).unwrap();
                let img_sum = sha256(&img);
                let b_sum = with_active(&fx, &img, &b, |dev| sha256(dev));

                let a_sum = with_active(&fx, &img, &a, |dev| {
                    let f = std::fs::OpenOptions::new().write(true).open(dev).unwrap();
                    f.write_all_at(&[0xab; 1 << 20], 10 * MIB).unwrap();
                    f.sync_all().unwrap();
                    drop(f);
                    sha256(dev)
                });

                assert_ne!(a_sum, img_sum, "the write must land in disk a");
                assert_eq!(with_active(&fx, &img, &a, |dev| sha256(dev)), a_sum, "the write must survive deactivation");
                assert_eq!(sha256(&img), img_sum, "image changed");
                assert_eq!(with_active(&fx, &img, &b, |dev| sha256(dev)), b_sum, "other disk changed");
            }

            #[test]
            $(#[$need])*
            fn remove_leaves_nothing_and_tolerates_missing_disk() {
                let fx = $fixture;
                let img = make_image(&fx.dir, "rootfs.ext4", 64, 0);
                let disk = fx.dir.join("vm1.ext4");
                fx.backend.create(&img, &disk, 128 * MIB).unwrap();
                fx.backend.activate(&img, &disk).unwrap();

                fx.backend.remove(&disk).unwrap();
                fx.backend.remove(&disk).unwrap();

                assert_eq!(entries(&fx.dir), vec!["rootfs.ext4".to_string()]);
                let ours = dm_device_name(&disk);
                let left = fx.backend.leftovers();
                assert!(!left.iter().any(|l| l.contains(&ours) || l.contains("vm1.ext4")), "{left:?}");
            }

            #[test]
            $(#[$need])*
            fn too_small_size_is_refused_naming_minimum_and_leaves_nothing() {
                let fx = $fixture;
                let img = make_image(&fx.dir, "rootfs.ext4", 64, 0);
                let disk = fx.dir.join("vm1.ext4");

                let err = fx.backend.create(&img, &disk, 32 * MIB).unwrap_err();

                assert!(
                    matches!(err, StorageError::SizeTooSmall { minimum, .. } if minimum == 64 * MIB),
                    "{err}"
                );
                assert!(err.to_string().contains(&(64 * MIB).to_string()), "{err}");
                assert_eq!(entries(&fx.dir), vec!["rootfs.ext4".to_string()]);
            }

            #[test]
            $(#[$need])*
            fn create_over_existing_disk_is_refused_and_keeps_it() {
                let fx = $fixture;
                let img = make_image(&fx.dir, "rootfs.ext4", 64, 0);
                let disk = fx.dir.join("vm1.ext4");
                std::fs::write(&disk, b"precious").unwrap();

                let err = fx.backend.create(&img, &disk, 64 * MIB).unwrap_err();

                assert!(matches!(err, StorageError::AlreadyExists { .. }), "{err}");
                assert_eq!(std::fs::read(&disk).unwrap(), b"precious");
            }

            #[test]
            $(#[$need])*
            fn failed_grow_removes_the_disk() {
                let fx = $fixture;
                let not_ext4 = fx.dir.join("rootfs.ext4");
                std::fs::write(&not_ext4, vec![1u8; 1 << 20]).unwrap();
                let disk = fx.dir.join("vm1.ext4");

                let err = fx.backend.create(&not_ext4, &disk, 4 * MIB).unwrap_err();

                assert!(matches!(err, StorageError::Command(_)), "{err}");
                assert_eq!(entries(&fx.dir), vec!["rootfs.ext4".to_string()]);
            }

            #[test]
            $(#[$need])*
            fn missing_image_is_an_error_and_creates_nothing() {
                let fx = $fixture;
                let disk = fx.dir.join("vm1.ext4");

                let err = fx.backend.create(&fx.dir.join("nope.ext4"), &disk, 64 * MIB).unwrap_err();

                assert!(matches!(err, StorageError::Io { .. }), "{err}");
                assert!(!disk.exists());
            }
        }
    };
}

conformance_suite!(
    #[ignore = "needs root: a loop-mounted btrfs"]
    reflink_on_btrfs,
    reflink_fixture()
);
conformance_suite!(copy_on_tmpdir, copy_fixture());
// `dm_snapshot` in the test names is the marker scripts/test.sh selects
// these by: they run only where device-mapper is usable.
conformance_suite!(
    #[ignore = "needs device-mapper (/dev/mapper/control) and root"]
    dm_snapshot,
    dm_fixture()
);
