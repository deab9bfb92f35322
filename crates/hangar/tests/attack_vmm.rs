//! Attack suite, the VMM: each VM's VMM runs confined (seccomp, its own
//! unprivileged uid/gid), so a guest that breaks out into its VMM holds
//! nothing of the host's or of other VMs' (`docs/security.md#vmm-confinement`).
//! Boots real guests (QEMU TCG); run with the boot lock held.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::process::CommandExt;
use std::process::Command;

use common::TestDaemon;

/// Fields of `/proc/PID/status` as `(name, value)`.
fn status_of(pid: i32) -> Vec<(String, String)> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn field(status: &[(String, String)], name: &str) -> String {
    status
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no {name} in /proc/PID/status"))
}

/// The pid of the VMM of `vm` (from its runtime pid file).
fn vmm_pid(d: &TestDaemon, vm: &str) -> i32 {
    let pid = std::fs::read_to_string(d.vm_dir(vm).join("vmm.pid")).unwrap();
    pid.trim().parse().unwrap()
}

/// The real, effective, saved and filesystem uids of `pid`'s process.
fn uids(pid: i32) -> Vec<u32> {
    field(&status_of(pid), "Uid")
        .split_whitespace()
        .map(|u| u.parse().unwrap())
        .collect()
}

/// Asserts the VMM of `vm` runs under seccomp filtering, as one non-root
/// uid with no capabilities; returns that uid.
fn assert_confined(d: &TestDaemon, vm: &str) -> u32 {
    let pid = vmm_pid(d, vm);
    let st = status_of(pid);
    assert_eq!(field(&st, "Seccomp"), "2", "{vm}: seccomp filter mode");
    assert_eq!(field(&st, "NoNewPrivs"), "1", "{vm}");
    assert_eq!(field(&st, "CapEff"), "0000000000000000", "{vm}");
    let ids = uids(pid);
    assert!(ids.iter().all(|&u| u == ids[0]), "{vm}: uids {ids:?}");
    assert_ne!(ids[0], 0, "{vm}: the VMM runs as root");
    ids[0]
}

#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn vmm_runs_as_its_own_uid_under_seccomp_across_boots_and_snapshots() {
    let _serial = common::serial();
    let d = TestDaemon::start("sbx-conf");
    // The first boot of the default shape saves the boot snapshot (the
    // pull's prewarm VM runs confined too); the restart resumes it.
    d.ok(&["vm", "create", "a"]);
    assert_eq!(d.snapshot_files().len(), 1, "a boot snapshot was saved");
    let uid = assert_confined(&d, "a");
    let ip: std::net::Ipv4Addr = d.json(&["vm", "show", "a"])["ip"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        uid,
        200_000 + u32::from(ip.octets()[3]),
        "uid_base + the address's offset in 10.213.7.0/24"
    );

    d.ok(&["vm", "stop", "a"]);
    d.ok(&["vm", "start", "a"]);
    assert!(d
        .ok(&["vm", "logs", "a"])
        .starts_with("hangar: resuming boot snapshot"));
    assert_eq!(
        assert_confined(&d, "a"),
        uid,
        "a restart keeps the VM's uid"
    );
    d.ok(&["vm", "restart", "a"]);
    assert_eq!(assert_confined(&d, "a"), uid);
    let out = d.hangar(&["exec", "a", "--", "true"]);
    assert!(out.status.success(), "the confined VM works");
    d.ok(&["vm", "rm", "--force", "a"]);
}

#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn vm_uid_cannot_read_or_write_another_vms_disk() {
    let _serial = common::serial();
    let d = TestDaemon::start("sbx-atk");
    d.ok(&["vm", "create", "a"]);
    d.ok(&["vm", "create", "b"]);
    let uid_a = assert_confined(&d, "a");
    assert_ne!(assert_confined(&d, "b"), uid_a, "each VM has its own uid");
    let b_dir = d.vm_dir("b");
    let b_files = ["disk.ext4", "config.img", "serial.log"].map(|f| b_dir.join(f));
    let before: Vec<_> = b_files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().modified().unwrap())
        .collect();

    // As VM A's VMM would: its uid and gid, no supplementary groups.
    let as_a = |script: &str| {
        Command::new("sh")
            .args(["-c", script])
            .uid(uid_a)
            .gid(uid_a)
            .output()
            .unwrap()
    };
    for f in &b_files {
        let p = f.display();
        let read = as_a(&format!("head -c 1 '{p}' >/dev/null"));
        assert!(!read.status.success(), "VM a's uid read {p}");
        let write = as_a(&format!("printf x 1<>'{p}'"));
        assert!(!write.status.success(), "VM a's uid opened {p} for writing");
    }
    // Its own disk is its own (the VMM could reopen it), B's is not.
    let own = d.vm_dir("a").join("disk.ext4");
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&own).unwrap()),
        uid_a
    );

    let after: Vec<_> = b_files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().modified().unwrap())
        .collect();
    assert_eq!(before, after, "nothing of b changed");
    let out = d.hangar(&["exec", "b", "--", "true"]);
    assert!(out.status.success(), "b still runs");
}
