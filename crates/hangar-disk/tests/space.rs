//! Space behaviour on real filesystems: reflinks are ~free, a full
//! filesystem gives a clear error and no partial file. Needs root.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

mod common;

use common::*;
use hangar_disk::{CopyBackend, DiskBackend, ReflinkBackend, StorageError};

#[test]
#[ignore = "needs root: a loop-mounted btrfs"]
fn reflinked_disk_of_512mib_image_consumes_almost_no_space() {
    let fs = BtrfsMount::new("1G");
    let img = make_image(&fs.mnt, "rootfs.ext4", 512, 300);
    sh(&mut std::process::Command::new("sync"));
    let before = free_bytes(&fs.mnt);

    ReflinkBackend
        .create(&img, &fs.mnt.join("vm1.ext4"), 512 * MIB)
        .unwrap();
    sh(&mut std::process::Command::new("sync"));

    let used = before.saturating_sub(free_bytes(&fs.mnt));
    assert!(used < 8 * MIB, "reflink used {} bytes", used);
}

#[test]
#[ignore = "needs root: a size-limited tmpfs"]
fn copy_into_too_small_filesystem_reports_no_space_and_leaves_nothing() {
    let small = TmpfsMount::new("16M");
    let src = tempfile::Builder::new()
        .prefix("hgtest-img")
        .tempdir()
        .unwrap();
    let img = make_image(src.path(), "rootfs.ext4", 64, 32);
    let disk = small.mnt.join("vm1.ext4");

    let err = CopyBackend.create(&img, &disk, 64 * MIB).unwrap_err();

    assert!(matches!(err, StorageError::NoSpace { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "Not enough space in {}: need ",
            small.mnt.display()
        )),
        "{msg}"
    );
    assert!(msg.contains("free "), "{msg}");
    assert!(entries(&small.mnt).is_empty());
}

#[test]
#[ignore = "needs root: a size-limited tmpfs"]
fn grow_to_1024x_on_tiny_filesystem_succeeds_because_ext4_grow_is_thin() {
    // Documents a fact callers rely on: growing only writes metadata (new
    // groups stay uninitialised), so a big disk costs almost nothing until
    // the guest writes. Free space is the VM's problem at run time.
    let small = TmpfsMount::new("24M");
    let src = tempfile::Builder::new()
        .prefix("hgtest-img")
        .tempdir()
        .unwrap();
    let img = make_image(src.path(), "rootfs.ext4", 64, 4);
    let disk = small.mnt.join("vm1.ext4");

    CopyBackend.create(&img, &disk, 64 * 1024 * MIB).unwrap();

    assert_eq!(ext4_fs_bytes(&disk), 64 * 1024 * MIB);
    assert!(free_bytes(&small.mnt) > 0);
}

/// Timing of reflink vs copy for a 1 GiB image (~700 MiB of real data).
/// Run with `cargo test -p hangar-disk --test space -- --ignored --nocapture`.
#[test]
#[ignore = "needs a quiet machine: a benchmark (prints timings; run it by hand)"]
fn bench_reflink_vs_copy_1gib() {
    let fs = BtrfsMount::new("4G");
    let img = make_image(&fs.mnt, "rootfs.ext4", 1024, 700);
    let tmp = tempfile::Builder::new()
        .prefix("hgtest-bench")
        .tempdir()
        .unwrap();
    let img_tmp = tmp.path().join("rootfs.ext4");
    std::fs::copy(&img, &img_tmp).unwrap();
    sh(&mut std::process::Command::new("sync"));

    for (label, size) in [("same size", 1024 * MIB), ("grown to 4 GiB", 4096 * MIB)] {
        let t = std::time::Instant::now();
        ReflinkBackend
            .create(&img, &fs.mnt.join(format!("r{size}")), size)
            .unwrap();
        let reflink = t.elapsed();
        let t = std::time::Instant::now();
        CopyBackend
            .create(&img_tmp, &tmp.path().join(format!("c{size}")), size)
            .unwrap();
        let copy = t.elapsed();
        println!("1 GiB image, {label}: reflink {reflink:?}, copy {copy:?}");
    }
}
