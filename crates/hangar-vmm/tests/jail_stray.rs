//! A jailed Firecracker whose daemon died between spawn and recording it
//! is found again through its jail (item 10 of issue 8). The "Firecracker"
//! here is a static busybox `sleep` chroot'ed into a jail laid out exactly
//! as the jailer lays it out: what `kill_stray` looks at is the process's
//! root and the VM dir's socket link, not the binary.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hangar_vmm::firecracker::jailer::Jail;
use hangar_vmm::{FirecrackerDriver, JailerConfig, VmmDriver};

/// Kills the stand-in VMM if the test fails before `kill_stray` did.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const BUSYBOX: &str = "/usr/bin/busybox";

#[test]
#[ignore = "needs root: chroot into a jail (and a static /usr/bin/busybox)"]
fn a_jailed_firecracker_killed_before_its_runtime_was_stored_is_found_by_its_jail() {
    hangar_testsupport::require_root("chroot into a jail");
    assert!(Path::new(BUSYBOX).exists(), "needs a static {BUSYBOX}");
    let base = tempfile::tempdir().unwrap();
    let chroot_base = base.path().join("jail");
    let vm_dir = base.path().join("vms/0123456789ab");
    std::fs::create_dir_all(&vm_dir).unwrap();
    let jail = Jail::new(
        &chroot_base,
        Path::new("/usr/bin/firecracker"),
        "0123456789ab",
    );
    std::fs::create_dir_all(jail.root.join("run")).unwrap();
    std::fs::copy(BUSYBOX, jail.root.join("busybox")).unwrap();
    // Made before the spawn, as the driver does.
    std::os::unix::fs::symlink(jail.api_socket(), vm_dir.join("firecracker.sock")).unwrap();
    let vmm = Command::new("chroot")
        .arg(&jail.root)
        .args(["/busybox", "sleep", "600"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut vmm = KillOnDrop(vmm);
    let pid = vmm.0.id();
    let rooted = || std::fs::read_link(format!("/proc/{pid}/root")).ok() == Some(jail.root.clone());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !rooted() {
        assert!(
            Instant::now() < deadline,
            "the jailed process never chroot'ed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // No pid file: the daemon died before Firecracker was configured.
    let driver = FirecrackerDriver::new("/usr/bin/firecracker").with_jailer(JailerConfig::new(
        "/usr/bin/jailer",
        0,
        0,
        &chroot_base,
    ));

    let killed = driver.kill_stray(&vm_dir);

    let status = vmm.0.wait().unwrap();
    assert!(killed, "kill_stray did not find the jailed process");
    assert!(!status.success(), "the jailed process was not killed");
    assert!(!jail.dir.exists(), "the jail was left behind");
    assert!(
        std::fs::symlink_metadata(vm_dir.join("firecracker.sock")).is_err(),
        "the socket link was left behind"
    );
}
