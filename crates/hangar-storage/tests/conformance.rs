//! The disk-backend conformance suite: the same behaviour tests run against
//! every backend on a real filesystem (reflink on a loop-mounted btrfs, copy
//! on a temp dir). Needs root (mount, loop devices).

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

mod common;

use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use common::*;
use hangar_storage::{detect, CopyBackend, DiskBackend, ReflinkBackend, StorageError};

/// A directory for disks plus the backend under test; the guard keeps the
/// filesystem alive (and unmounts it on drop).
struct Fixture {
    dir: PathBuf,
    backend: Box<dyn DiskBackend>,
    _guard: Box<dyn std::any::Any>,
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

macro_rules! conformance_suite {
    ($suite:ident, $fixture:expr) => {
        mod $suite {
            use super::*;

            #[test]
            fn create_at_image_size_gives_identical_clean_disk() {
                let fx = $fixture;
                let img = make_image(&fx.dir, "rootfs.ext4", 64, 8);

                fx.backend.create(&img, &fx.dir.join("vm1.ext4"), 64 * MIB).unwrap();

                assert_eq!(sha256(&img), sha256(&fx.dir.join("vm1.ext4")));
                assert!(fsck_clean(&fx.dir.join("vm1.ext4")));
            }

            #[test]
            fn create_larger_grows_file_and_filesystem() {
                let fx = $fixture;
                let img = make_image(&fx.dir, "rootfs.ext4", 64, 8);
                let disk = fx.dir.join("vm1.ext4");

                fx.backend.create(&img, &disk, 256 * MIB).unwrap();

                assert_eq!(std::fs::metadata(&disk).unwrap().len(), 256 * MIB);
                assert_eq!(ext4_fs_bytes(&disk), 256 * MIB);
                assert!(fsck_clean(&disk), "e2fsck -fn must pass after growing");
                assert_eq!(ext4_fs_bytes(&img), 64 * MIB, "image must stay untouched");
            }

            #[test]
            fn write_to_one_disk_changes_neither_image_nor_other_disk() {
                let fx = $fixture;
                let img = make_image(&fx.dir, "rootfs.ext4", 64, 8);
                let (a, b) = (fx.dir.join("a.ext4"), fx.dir.join("b.ext4"));
                fx.backend.create(&img, &a, 64 * MIB).unwrap();
                fx.backend.create(&img, &b, 64 * MIB).unwrap();
                let (img_sum, b_sum) = (sha256(&img), sha256(&b));

                let f = std::fs::OpenOptions::new().write(true).open(&a).unwrap();
                f.write_all_at(&[0xab; 1 << 20], 10 * MIB).unwrap();
                f.sync_all().unwrap();

                assert_ne!(sha256(&a), img_sum, "the write must land in disk a");
                assert_eq!(sha256(&img), img_sum, "image changed");
                assert_eq!(sha256(&b), b_sum, "other disk changed");
            }

            #[test]
            fn remove_leaves_nothing_and_tolerates_missing_disk() {
                let fx = $fixture;
                let img = make_image(&fx.dir, "rootfs.ext4", 64, 0);
                let disk = fx.dir.join("vm1.ext4");
                fx.backend.create(&img, &disk, 128 * MIB).unwrap();

                fx.backend.remove(&disk).unwrap();
                fx.backend.remove(&disk).unwrap();

                assert_eq!(entries(&fx.dir), vec!["rootfs.ext4".to_string()]);
            }

            #[test]
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
            fn failed_grow_removes_the_disk() {
                let fx = $fixture;
                let not_ext4 = fx.dir.join("rootfs.ext4");
                std::fs::write(&not_ext4, vec![1u8; 1 << 20]).unwrap();
                let disk = fx.dir.join("vm1.ext4");

                let err = fx.backend.create(&not_ext4, &disk, 4 * MIB).unwrap_err();

                assert!(matches!(err, StorageError::Command { .. }), "{err}");
                assert_eq!(entries(&fx.dir), vec!["rootfs.ext4".to_string()]);
            }

            #[test]
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

conformance_suite!(reflink_on_btrfs, reflink_fixture());
conformance_suite!(copy_on_tmpdir, copy_fixture());
