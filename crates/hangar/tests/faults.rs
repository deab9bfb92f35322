//! The fault suite: `kill -9` the daemon at each step of `vm create`,
//! `vm rm`, `image pull` and `image register`, start a new daemon, and
//! check that nothing leaked and every VM is in a true state.
//!
//! The kills are real: the daemon is built with `--features
//! hangar/failpoints` and started with `FAILPOINTS=<point>=return`; at that
//! `crash_point!` it SIGKILLs itself (hangar-daemon/src/failpoint.rs). Run
//! (as root, holding the host-wide boot lock):
//! `sudo cargo test -p hangar --features failpoints
//! --test faults -- --include-ignored --test-threads=1`.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::TestDaemon;

/// The idle TAP pool of the test config.
const POOL: usize = 1;
/// How long an operation may take to reach its crash point (a boot under
/// TCG included).
const REACH: Duration = Duration::from_secs(240);

/// Restarts `d` with crash point `point` armed, runs `hangar args` (which
/// fails: the daemon dies under it), checks the daemon died by SIGKILL,
/// then starts a daemon without crash points (its start is the recovery
/// under test).
fn crash_at(d: &mut TestDaemon, point: &str, args: &[&str]) {
    let began = Instant::now();
    d.stop_daemon();
    d.spawn_with_env(&[("FAILPOINTS", &format!("{point}=return"))]);
    // The CLI returns when the operation ends or the daemon dies under
    // it: a point the operation did not reach fails here, quickly.
    let out = d.hangar(args);
    d.wait_killed(Duration::from_secs(20));
    d.spawn();
    eprintln!(
        "crash point {point}: `hangar {} {}` exited {}; killed and recovered in {:.1}s",
        args[0],
        args[1],
        out.status,
        began.elapsed().as_secs_f64()
    );
}

/// Every VM is running with its VMM alive or stopped without one; no VMM
/// runs that no VM records; each VM has its dir and lease and nothing
/// else has; no TAP beyond the pool and the running VMs; no mount, loop
/// device or image leftover.
fn assert_true_state(d: &TestDaemon, point: &str) {
    let vms = d.json(&["vm", "ls"]);
    let vms = vms.as_array().unwrap();
    let mut recorded_pids = Vec::new();
    let mut ids = Vec::new();
    for vm in vms {
        let state = vm["state"].as_str().unwrap();
        ids.push(vm["id"].as_str().unwrap().to_string());
        match state {
            "running" => {
                let pid = vm["pid"]
                    .as_i64()
                    .unwrap_or_else(|| panic!("after {point}: running VM without a pid: {vm}"));
                assert!(
                    PathBuf::from(format!("/proc/{pid}")).exists(),
                    "after {point}: running VM whose VMM is gone: {vm}"
                );
                recorded_pids.push(pid as i32);
            }
            "stopped" => assert!(
                vm["pid"].is_null(),
                "after {point}: stopped VM with a VMM: {vm}"
            ),
            other => panic!("after {point}: VM in state {other} after a restart: {vm}"),
        }
        let disk = d
            .state_dir()
            .join("vms")
            .join(vm["id"].as_str().unwrap())
            .join("disk.ext4");
        assert!(disk.exists(), "after {point}: VM without its disk: {vm}");
    }
    let mut live = d.vmm_pids();
    live.sort();
    recorded_pids.sort();
    assert_eq!(
        live, recorded_pids,
        "after {point}: VMM processes no VM records (or missing)"
    );
    let mut dirs = d.vm_dirs();
    dirs.sort();
    ids.sort();
    assert_eq!(dirs, ids, "after {point}: VM dirs differ from VM rows");
    assert_eq!(
        d.lease_count(),
        vms.len(),
        "after {point}: leases differ from VM rows"
    );
    assert!(
        d.taps().len() <= POOL + recorded_pids.len(),
        "after {point}: TAPs beyond the pool: {:?}",
        d.taps()
    );
    assert_eq!(
        d.mounts_under_state(),
        Vec::<String>::new(),
        "after {point}: mounts left"
    );
    assert_eq!(
        d.loop_devices_on_state(),
        Vec::<String>::new(),
        "after {point}: loop devices left"
    );
    assert_eq!(
        d.image_leftovers(),
        Vec::<String>::new(),
        "after {point}: image dirs left"
    );
}

/// Removes every VM (through the API) and checks that nothing is left.
fn clean_vms(d: &TestDaemon) {
    for vm in d.json(&["vm", "ls"]).as_array().unwrap() {
        d.ok(&["vm", "rm", "--force", vm["name"].as_str().unwrap()]);
    }
    d.assert_nothing_left(POOL);
}

fn report(what: &str, points: &[&str], began: Instant) {
    eprintln!(
        "fault suite {what}: {} kill points tried in {:.0}s",
        points.len(),
        began.elapsed().as_secs_f64()
    );
}

#[test]
#[cfg_attr(not(feature = "failpoints"), ignore = "needs --features failpoints")]
#[cfg_attr(
    feature = "failpoints",
    ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"
)]
fn kill_9_at_each_step_of_vm_create_leaves_nothing_and_true_states() {
    let _serial = common::serial();
    let began = Instant::now();
    let mut d = TestDaemon::start("fcreate");
    d.ok(&["image", "pull", "debian-12"]);
    let points = [
        "create.after_name_reserved",
        "create.after_row_and_lease",
        "create.after_vm_dir",
        "create.after_disk",
        "boot.after_config_drive",
        "boot.after_disk_activated",
        "boot.after_tap",
        "boot.after_vmm_spawn",
        "boot.after_runtime_row",
        "boot.after_ssh_ready",
        "create.after_ready",
    ];
    for point in points {
        crash_at(&mut d, point, &["vm", "create", "victim"]);
        assert_true_state(&d, point);
        clean_vms(&d);
    }
    report("vm create", &points, began);
}

#[test]
#[cfg_attr(not(feature = "failpoints"), ignore = "needs --features failpoints")]
#[cfg_attr(
    feature = "failpoints",
    ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"
)]
fn kill_9_at_each_step_of_vm_rm_leaves_nothing_and_true_states() {
    let _serial = common::serial();
    let began = Instant::now();
    let mut d = TestDaemon::start("frm");
    d.ok(&["image", "pull", "debian-12"]);
    let points = [
        "rm.after_lock",
        "undo.after_vmm_killed",
        "undo.after_tap_released",
        "rm.after_stop",
        "rm.after_disk_removed",
        "rm.after_dir_removed",
        "rm.after_row_deleted",
    ];
    for point in points {
        d.ok(&["vm", "create", "victim"]);
        crash_at(&mut d, point, &["vm", "rm", "--force", "victim"]);
        assert_true_state(&d, point);
        clean_vms(&d);
    }
    report("vm rm", &points, began);
}

#[test]
#[cfg_attr(not(feature = "failpoints"), ignore = "needs --features failpoints")]
#[cfg_attr(
    feature = "failpoints",
    ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"
)]
fn kill_9_at_each_step_of_image_pull_leaves_nothing_and_true_states() {
    let _serial = common::serial();
    let began = Instant::now();
    let mut d = TestDaemon::start("fpull");
    // The build itself comes from the machine's image cache (a debootstrap
    // build takes many minutes); crashed builds there are swept by
    // `hangar_image::sweep_crashed_builds`, tested on real mounts in
    // hangar-host/tests/sweep_mounts.rs.
    let points = [
        "pull.after_files_written",
        "pull.before_store_row",
        "pull.after_store_row",
        "pull.prewarm.after_vmm_spawn",
        "pull.prewarm.after_snapshot_save",
    ];
    for point in points {
        crash_at(&mut d, point, &["image", "pull", "debian-12"]);
        assert_true_state(&d, point);
        assert_eq!(
            d.partial_snapshot_files(),
            Vec::<PathBuf>::new(),
            "after {point}: partial snapshots"
        );
        if d.json(&["image", "ls"]).as_array().unwrap().len() == 1 {
            // What the crash kept is a whole image: a VM boots from it.
            d.ok(&["vm", "create", "check"]);
            clean_vms(&d);
            d.ok(&["image", "rm", "debian-12"]);
        }
        d.assert_nothing_left(POOL);
    }
    report("image pull", &points, began);
}

#[test]
#[cfg_attr(not(feature = "failpoints"), ignore = "needs --features failpoints")]
#[cfg_attr(
    feature = "failpoints",
    ignore = "needs root: runs the daemon (network namespace, TAPs)"
)]
fn kill_9_at_each_step_of_image_register_leaves_nothing_and_true_states() {
    let began = Instant::now();
    let mut d = TestDaemon::start("freg");
    let cached = cached_image_dir();
    let s = |f: &str| cached.join(f).display().to_string();
    let (kernel, initrd, rootfs) = (s("vmlinux"), s("initrd.img"), s("rootfs.ext4"));
    let args = [
        "image", "register", "reg", "--kernel", &kernel, "--initrd", &initrd, "--rootfs", &rootfs,
    ];
    let points = [
        "register.after_files_written",
        "register.before_store_row",
        "register.after_store_row",
    ];
    for point in points {
        crash_at(&mut d, point, &args);
        assert_true_state(&d, point);
        if d.json(&["image", "ls"]).as_array().unwrap().len() == 1 {
            d.ok(&["image", "rm", "reg"]);
        }
        d.assert_nothing_left(POOL);
    }
    report("image register", &points, began);
}

/// A built image in the machine's cache (the e2e tests build it once).
fn cached_image_dir() -> PathBuf {
    std::fs::read_dir(common::IMAGE_CACHE)
        .unwrap_or_else(|e| panic!("needs a built image in {}: {e}", common::IMAGE_CACHE))
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("manifest.json").exists())
        .unwrap_or_else(|| panic!("needs a built image in {}", common::IMAGE_CACHE))
}

/// `vm rm --force x` looks `x` up, then locks it. Held back between the
/// two (a pause point), it used to lock the id it had looked up although
/// `x` was by then removed and created again: it reported success and the
/// new `x` stayed. Now it looks the name up again under the lock and
/// removes the `x` that exists when it holds its lock.
#[test]
#[cfg_attr(not(feature = "failpoints"), ignore = "needs --features failpoints")]
#[cfg_attr(
    feature = "failpoints",
    ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"
)]
fn rm_racing_a_create_of_the_same_name_removes_the_vm_the_name_maps_to_under_its_lock() {
    let _serial = common::serial();
    let mut d = TestDaemon::start("rmrace");
    d.ok(&["image", "pull", "debian-12"]);
    d.ok(&["vm", "create", "x"]);
    let first_id = d.json(&["vm", "show", "x"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    d.stop_daemon();
    d.spawn_with_env(&[("FAILPOINTS", "rm.after_lookup=1*return(15000)")]);

    let mut held = std::process::Command::new(common::hangar_bin())
        .arg("--config")
        .arg(&d.config)
        .args(["vm", "rm", "--force", "x"])
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    common::wait_until("the first rm to be held after its lookup", REACH, || {
        d.log().contains("pause point reached")
    });
    // Meanwhile `x` is removed and created again under a new id.
    d.ok(&["vm", "rm", "--force", "x"]);
    let op = d.ok(&["vm", "create", "x", "--no-wait"]).trim().to_string();
    common::wait_until("the new x to be stored", REACH, || {
        d.json(&["vm", "ls"])
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "x")
    });
    let second_id = d.json(&["vm", "show", "x"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(first_id, second_id);
    assert!(
        held.try_wait().unwrap().is_none(),
        "the held rm finished before the new x existed: the race was not set up"
    );

    let status = held.wait().unwrap();
    assert!(status.success(), "the held rm failed");
    common::wait_until("the create to end", REACH, || {
        d.json(&["op", "show", &op])["state"] != "running"
    });
    let left: Vec<String> = d
        .json(&["vm", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| format!("{} ({})", v["name"], v["id"]))
        .collect();
    assert_eq!(
        left,
        Vec::<String>::new(),
        "rm --force x reported success but x is still there"
    );
    d.assert_nothing_left(POOL);
}

/// `image promote --stop` stops a running VM for the copy and starts it
/// again after. Cancelled while held before the copy (a pause point), the
/// promotion leaves no image and no staging, and the VM runs again with
/// its disk as it was. Held again, `vm rm --force` cancels it and removes
/// the VM, which is not started again first.
#[test]
#[cfg_attr(not(feature = "failpoints"), ignore = "needs --features failpoints")]
#[cfg_attr(
    feature = "failpoints",
    ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"
)]
fn a_cancelled_promote_starts_the_vm_it_stopped_again_and_keeps_nothing_and_rm_force_cancels_one() {
    let _serial = common::serial();
    let mut d = TestDaemon::start("promotecancel");
    d.ok(&["image", "pull", "debian-12"]);
    d.ok(&["vm", "create", "dev"]);
    let out = d.exec("dev", &["sh", "-c", "echo kept > /root/note.txt && sync"]);
    assert!(out.status.success(), "{out:?}");
    d.stop_daemon();
    d.spawn_with_env(&[("FAILPOINTS", "promote.before_copy=2*return(15000)")]);

    let op = d
        .ok(&["image", "promote", "dev", "snap", "--stop", "--no-wait"])
        .trim()
        .to_string();
    common::wait_until("the promotion to be held before its copy", REACH, || {
        d.log().contains("pause point reached")
    });
    assert_eq!(d.json(&["vm", "show", "dev"])["state"], "stopped");
    d.ok(&["op", "cancel", &op]);
    common::wait_until("the promotion to end", REACH, || {
        d.json(&["op", "show", &op])["state"] != "running"
    });
    let shown = d.json(&["op", "show", &op]);
    assert_eq!(shown["state"], "cancelled", "{shown}");

    assert_eq!(d.json(&["vm", "show", "dev"])["state"], "running");
    let out = d.exec("dev", &["cat", "/root/note.txt"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "kept\n", "{out:?}");
    assert_eq!(d.image_names(), vec!["debian-12"]);
    d.assert_no_image_leftovers();

    let op = d
        .ok(&["image", "promote", "dev", "snap", "--stop", "--no-wait"])
        .trim()
        .to_string();
    common::wait_until("the second promotion to be held", REACH, || {
        d.log().matches("pause point reached").count() == 2
    });
    d.ok(&["vm", "rm", "--force", "dev"]);
    let shown = d.json(&["op", "show", &op]);
    assert_eq!(shown["state"], "cancelled", "{shown}");
    assert!(
        d.log().contains("is being removed: not started again"),
        "the VM being removed was started again"
    );
    assert_eq!(d.json(&["vm", "ls"]), serde_json::json!([]));
    assert_eq!(d.image_names(), vec!["debian-12"]);
    d.assert_no_image_leftovers();
    d.assert_nothing_left(POOL);
}
