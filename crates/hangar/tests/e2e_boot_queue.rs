//! The boot admission queue with real boots: beyond `[vmm]
//! max_concurrent_boots`, a create waits as `queued, N ahead`, moves up as
//! those ahead leave, and can be cancelled (`rm --force`, `op cancel`)
//! while queued, leaving nothing behind.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Options, TestDaemon};

/// Waits until operation `op` shows a phase `want` accepts; returns it.
fn wait_phase(d: &TestDaemon, op: &str, what: &str, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let o = d.json(&["op", "show", op]);
        let phase = o["progress"]["phase"].as_str().unwrap_or("").to_string();
        if want(&phase) {
            return phase;
        }
        assert_eq!(o["state"], "running", "{op} ended before {what}: {o}");
        assert!(Instant::now() < deadline, "{op} never reached {what}: {o}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn create_no_wait(d: &TestDaemon, name: &str) -> String {
    d.ok(&["vm", "create", name, "--no-wait", "--cpus", "1"])
        .trim()
        .to_string()
}

#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn creates_beyond_max_concurrent_boots_queue_in_order_and_cancel_while_queued() {
    let _serial = common::serial();
    let d = TestDaemon::with(
        "bootq",
        Options {
            vmm_extra: "max_concurrent_boots = 1\nboot_snapshots = false\n".into(),
            ..Options::default()
        },
    );
    d.ok(&["image", "pull", "debian-12"]);
    let first = create_no_wait(&d, "first");
    wait_phase(&d, &first, "its boot", |p| p == "boot" || p == "wait-ssh");

    let second = create_no_wait(&d, "second");
    wait_phase(&d, &second, "the queue", |p| p == "queued, 0 ahead");
    let third = create_no_wait(&d, "third");
    wait_phase(&d, &third, "the queue", |p| p == "queued, 1 ahead");

    // The one ahead leaves the queue: the third moves up.
    d.ok(&["vm", "rm", "--force", "second"]);
    assert_eq!(d.json(&["op", "show", &second])["state"], "cancelled");
    wait_phase(&d, &third, "the head of the queue", |p| {
        p == "queued, 0 ahead"
    });

    d.ok(&["op", "cancel", &third]);
    let o = d.json(&["op", "show", &third, "--wait"]);
    assert_eq!(o["state"], "cancelled", "{o}");
    // The first kept its slot and boot all along.
    let o = d.json(&["op", "show", &first]);
    assert_eq!(o["state"], "running", "{o}");
    let names: Vec<String> = d
        .json(&["vm", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["first".to_string()]);

    d.ok(&["vm", "rm", "--force", "first"]);
    d.assert_nothing_left(1);
}
