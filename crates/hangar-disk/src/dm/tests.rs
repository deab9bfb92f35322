//! Unit tests of the dm backend against the recording fake: call order,
//! rollback at every step, idempotence, serialisation.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::fake::FakeOps;
use super::*;

const MIB: u64 = 1024 * 1024;

/// A 4 MiB (sparse) image file and the disk path `<tmp>/vm1/disk.ext4`.
fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("rootfs.ext4");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(4 * MIB)
        .unwrap();
    std::fs::create_dir(tmp.path().join("vm1")).unwrap();
    let dest = tmp.path().join("vm1/disk.ext4");
    (tmp, image, dest)
}

fn backend(fake: &Arc<FakeOps>, dir: &Path) -> DmBackend {
    DmBackend::with_ops(fake.clone(), dir)
}

/// Creates the COW disk through a non-failing fake (no dm calls needed when
/// the size equals the image).
fn created(image: &Path, dest: &Path, size: u64) {
    let fake = Arc::new(FakeOps::new());
    backend(&fake, Path::new("/"))
        .create(image, dest, size)
        .unwrap();
}

#[test]
fn activate_attaches_loops_creates_snapshot_then_hands_loops_to_kernel() {
    let (_tmp, image, dest) = setup();
    created(&image, &dest, 4 * MIB);
    let fake = Arc::new(FakeOps::new());

    let path = backend(&fake, Path::new("/"))
        .activate(&image, &dest)
        .unwrap();

    assert_eq!(path, PathBuf::from("/dev/mapper/hangar-vm1-disk"));
    assert_eq!(
        fake.calls(),
        vec![
            "dm_exists hangar-vm1-disk".to_string(),
            "dm_exists hangar-vm1-disk-base".to_string(),
            format!("loop_attach {} ro", image.display()),
            format!("loop_attach {} rw", dest.display()),
            "dm_create hangar-vm1-disk 0 8192 snapshot /dev/loop0 /dev/loop1 P 8".to_string(),
            "loop_detach /dev/loop0".to_string(),
            "loop_detach /dev/loop1".to_string(),
        ]
    );
}

#[test]
fn activate_leaves_loops_attached_only_as_autoclear_under_the_snapshot() {
    let (_tmp, image, dest) = setup();
    created(&image, &dest, 4 * MIB);
    let fake = Arc::new(FakeOps::new());

    backend(&fake, Path::new("/"))
        .activate(&image, &dest)
        .unwrap();

    let loops = fake.loops();
    assert_eq!(loops.len(), 2);
    assert!(loops.values().all(|l| l.autoclear), "{loops:?}");
    assert!(
        loops["/dev/loop0"].read_only,
        "image loop must be read-only"
    );
    assert!(!loops["/dev/loop1"].read_only, "COW loop must be writable");
    assert_eq!(fake.dms().len(), 1);
}

#[test]
fn activate_of_grown_disk_stacks_snapshot_on_linear_plus_zero_base() {
    let (_tmp, image, dest) = setup();
    let fake = Arc::new(FakeOps::new());
    let b = backend(&fake, Path::new("/"));
    b.create(&image, &dest, 8 * MIB).unwrap();
    let fake = Arc::new(FakeOps::new());

    backend(&fake, Path::new("/"))
        .activate(&image, &dest)
        .unwrap();

    let dms = fake.dms();
    assert_eq!(
        dms["hangar-vm1-disk-base"],
        "0 8192 linear /dev/loop0 0\n8192 8192 zero"
    );
    assert_eq!(
        dms["hangar-vm1-disk"],
        "0 16384 snapshot /dev/mapper/hangar-vm1-disk-base /dev/loop1 P 8"
    );
}

#[test]
fn deactivate_after_activate_leaves_no_dm_or_loop_device() {
    let (_tmp, image, dest) = setup();
    created(&image, &dest, 8 * MIB);
    let fake = Arc::new(FakeOps::new());
    let b = backend(&fake, Path::new("/"));
    b.activate(&image, &dest).unwrap();

    b.deactivate(&dest).unwrap();

    assert!(fake.dms().is_empty(), "{:?}", fake.dms());
    assert!(fake.loops().is_empty(), "{:?}", fake.loops());
}

#[test]
fn deactivate_is_idempotent_and_fine_on_never_activated_disk() {
    let (_tmp, image, dest) = setup();
    created(&image, &dest, 4 * MIB);
    let fake = Arc::new(FakeOps::new());
    let b = backend(&fake, Path::new("/"));
    b.activate(&image, &dest).unwrap();

    b.deactivate(&dest).unwrap();
    b.deactivate(&dest).unwrap();
    b.deactivate(&dest.with_file_name("never.ext4")).unwrap();

    assert!(fake.dms().is_empty() && fake.loops().is_empty());
}

/// Counts the calls a successful run makes, then fails each one in turn.
/// With `must_fail` false, an operation may also recover (retry) and succeed;
/// either way nothing may stay attached.
fn fail_every_step(
    must_fail: bool,
    run: impl Fn(&Arc<FakeOps>) -> Result<(), StorageError>,
) -> usize {
    let happy = Arc::new(FakeOps::new());
    run(&happy).unwrap();
    let steps = happy.calls().len();
    for n in 0..steps {
        let fake = Arc::new(FakeOps::failing_at(n));

        let res = run(&fake);

        assert!(
            !must_fail || res.is_err(),
            "failing call {n} ({}) must fail the operation",
            fake.calls()[n]
        );
        assert!(
            fake.dms().is_empty(),
            "call {n} failed: dm left {:?}",
            fake.dms()
        );
        assert!(
            fake.loops().is_empty(),
            "call {n} failed: loop left {:?}",
            fake.loops()
        );
    }
    steps
}

#[test]
fn activate_failing_at_any_step_leaves_nothing_attached() {
    let (_tmp, image, dest) = setup();
    created(&image, &dest, 4 * MIB);

    let steps = fail_every_step(true, |fake| {
        backend(fake, Path::new("/"))
            .activate(&image, &dest)
            .map(drop)
    });

    assert_eq!(steps, 7);
}

#[test]
fn activate_of_grown_disk_failing_at_any_step_leaves_nothing_attached() {
    let (_tmp, image, dest) = setup();
    created(&image, &dest, 8 * MIB);

    let steps = fail_every_step(true, |fake| {
        backend(fake, Path::new("/"))
            .activate(&image, &dest)
            .map(drop)
    });

    assert_eq!(steps, 8);
}

#[test]
fn create_grown_failing_at_any_step_leaves_no_device_and_no_file() {
    let (tmp, image, dest) = setup();

    fail_every_step(false, |fake| {
        let b = backend(fake, Path::new("/"));
        let res = b.create(&image, &dest, 8 * MIB);
        if res.is_err() {
            assert_eq!(
                std::fs::read_dir(tmp.path().join("vm1")).unwrap().count(),
                0,
                "files left after failed create ({:?})",
                fake.calls()
            );
        } else {
            // Recovered by retrying: devices must be gone already (checked
            // by fail_every_step); drop the files for the next round.
            std::fs::remove_file(&dest).unwrap();
            std::fs::remove_file(record_path(&dest)).unwrap();
        }
        res
    });
}

#[test]
fn create_grown_grows_ext4_on_the_mapper_device_then_deactivates() {
    let (_tmp, image, dest) = setup();
    let fake = Arc::new(FakeOps::new());

    backend(&fake, Path::new("/"))
        .create(&image, &dest, 8 * MIB)
        .unwrap();

    assert!(fake
        .calls()
        .contains(&"grow_ext4 /dev/mapper/hangar-vm1-disk".to_string()));
    assert!(fake.dms().is_empty() && fake.loops().is_empty());
    assert_eq!(
        std::fs::read_to_string(record_path(&dest)).unwrap(),
        format!("{}\n", 8 * MIB)
    );
    assert_eq!(std::fs::metadata(&dest).unwrap().len(), cow_len(8 * MIB));
}

#[test]
fn create_at_image_size_makes_sparse_cow_without_touching_dm() {
    let (_tmp, image, dest) = setup();
    let fake = Arc::new(FakeOps::new());

    backend(&fake, Path::new("/"))
        .create(&image, &dest, 4 * MIB)
        .unwrap();

    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(&dest).unwrap().blocks(),
        0,
        "COW must be sparse"
    );
}

#[test]
fn create_below_image_size_is_refused_and_creates_nothing() {
    let (tmp, image, dest) = setup();
    let fake = Arc::new(FakeOps::new());

    let err = backend(&fake, Path::new("/"))
        .create(&image, &dest, MIB)
        .unwrap_err();

    assert!(
        matches!(err, StorageError::SizeTooSmall { minimum, .. } if minimum == 4 * MIB),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(tmp.path().join("vm1")).unwrap().count(),
        0
    );
}

#[test]
fn create_over_existing_disk_is_refused_and_keeps_it() {
    let (_tmp, image, dest) = setup();
    std::fs::write(&dest, b"precious").unwrap();
    let fake = Arc::new(FakeOps::new());

    let err = backend(&fake, Path::new("/"))
        .create(&image, &dest, 4 * MIB)
        .unwrap_err();

    assert!(matches!(err, StorageError::AlreadyExists { .. }), "{err}");
    assert_eq!(std::fs::read(&dest).unwrap(), b"precious");
}

#[test]
fn create_from_unaligned_image_is_refused() {
    let (_tmp, image, dest) = setup();
    std::fs::File::create(&image)
        .unwrap()
        .set_len(4 * MIB + 100)
        .unwrap();
    let fake = Arc::new(FakeOps::new());

    let err = backend(&fake, Path::new("/"))
        .create(&image, &dest, 8 * MIB)
        .unwrap_err();

    assert!(
        matches!(err, StorageError::ImageNotSectorAligned { .. }),
        "{err}"
    );
    assert!(!dest.exists());
}

#[test]
fn activate_without_size_record_fails_clearly_and_attaches_nothing() {
    let (_tmp, image, dest) = setup();
    std::fs::File::create(&dest)
        .unwrap()
        .set_len(cow_len(4 * MIB))
        .unwrap();
    let fake = Arc::new(FakeOps::new());

    let err = backend(&fake, Path::new("/"))
        .activate(&image, &dest)
        .unwrap_err();

    assert!(matches!(err, StorageError::DmRecord { .. }), "{err}");
    assert!(fake.loops().is_empty() && fake.dms().is_empty());
}

#[test]
fn activate_of_active_disk_returns_same_path_without_new_devices() {
    let (_tmp, image, dest) = setup();
    created(&image, &dest, 4 * MIB);
    let fake = Arc::new(FakeOps::new());
    let b = backend(&fake, Path::new("/"));
    let first = b.activate(&image, &dest).unwrap();

    let second = b.activate(&image, &dest).unwrap();

    assert_eq!(first, second);
    assert_eq!(fake.loops().len(), 2);
    assert_eq!(fake.dms().len(), 1);
}

#[test]
fn activate_removes_stale_base_device_left_by_a_crash() {
    let (_tmp, image, dest) = setup();
    created(&image, &dest, 8 * MIB);
    let fake = Arc::new(FakeOps::new());
    fake.precreate("hangar-vm1-disk-base", "0 8 zero");

    backend(&fake, Path::new("/"))
        .activate(&image, &dest)
        .unwrap();

    assert!(fake
        .calls()
        .contains(&"dm_remove hangar-vm1-disk-base".to_string()));
    assert_eq!(
        fake.dms().len(),
        2,
        "fresh base + snapshot: {:?}",
        fake.dms()
    );
}

#[test]
fn deactivate_detaches_stray_loop_on_the_cow_file() {
    let (_tmp, image, dest) = setup();
    created(&image, &dest, 4 * MIB);
    let fake = Arc::new(FakeOps::new());
    fake.preattach(&dest, false);
    let other = fake.preattach(&image, false);

    backend(&fake, Path::new("/")).deactivate(&dest).unwrap();

    let loops = fake.loops();
    assert_eq!(
        loops.keys().cloned().collect::<Vec<_>>(),
        vec![other],
        "only the COW loop is ours"
    );
}

#[test]
fn remove_deactivates_and_deletes_cow_and_record() {
    let (tmp, image, dest) = setup();
    created(&image, &dest, 8 * MIB);
    let fake = Arc::new(FakeOps::new());
    let b = backend(&fake, Path::new("/"));
    b.activate(&image, &dest).unwrap();

    b.remove(&dest).unwrap();
    b.remove(&dest).unwrap();

    assert!(fake.dms().is_empty() && fake.loops().is_empty());
    assert_eq!(
        std::fs::read_dir(tmp.path().join("vm1")).unwrap().count(),
        0
    );
}

#[test]
fn concurrent_activations_do_not_interleave_their_calls() {
    let (tmp, image, dest) = setup();
    created(&image, &dest, 4 * MIB);
    std::fs::create_dir(tmp.path().join("vm2")).unwrap();
    let dest2 = tmp.path().join("vm2/disk.ext4");
    created(&image, &dest2, 4 * MIB);
    let fake = Arc::new(FakeOps::slow(std::time::Duration::from_millis(5)));
    let b = Arc::new(backend(&fake, Path::new("/")));

    std::thread::scope(|s| {
        for d in [&dest, &dest2] {
            let b = b.clone();
            let image = image.clone();
            s.spawn(move || b.activate(&image, d).unwrap());
        }
    });

    let threads = fake.call_threads();
    let switches = threads.windows(2).filter(|w| w[0] != w[1]).count();
    assert_eq!(threads.len(), 14);
    assert_eq!(switches, 1, "calls interleaved: {:?}", fake.calls());
}

#[test]
fn dm_device_name_uses_vm_dir_and_disk_stem() {
    assert_eq!(
        dm_device_name(Path::new("/var/lib/hangar/vms/01abc/disk.ext4")),
        "hangar-01abc-disk"
    );
}

#[test]
fn dm_device_name_replaces_characters_dm_or_shells_dislike() {
    assert_eq!(
        dm_device_name(Path::new("/x/a b/d:k.img")),
        "hangar-a_b-d_k"
    );
}

#[test]
fn dm_device_name_of_long_paths_fits_kernel_limit_and_stays_distinct() {
    let long = "v".repeat(200);
    let a = dm_device_name(&Path::new("/x").join(&long).join("a.ext4"));
    let b = dm_device_name(&Path::new("/x").join(&long).join("b.ext4"));

    assert!(a.len() <= MAX_NAME && base_name(&a).len() < 128, "{a}");
    assert_ne!(a, b);
}

#[test]
fn cow_len_covers_every_chunk_plus_exception_metadata() {
    let virt = 10 * 1024 * MIB;
    let chunks = virt / (CHUNK_SECTORS * SECTOR);
    // One 16-byte exception per chunk, 256 per 4 KiB metadata chunk, + header.
    let needed = virt + chunks.div_ceil(256) * 4096 + 4096;

    assert!(cow_len(virt) >= needed);
}
