//! QEMU driver against the real `qemu-system-x86_64` (TCG). Networking
//! uses a TAP inside a network namespace the test creates and removes.
//! Boot tests need a Linux kernel: HANGAR_TEST_KERNEL, else an image under
//! /var/cache/hangar/images/*/vmlinux, else /boot/vmlinuz-*; without one
//! they fail naming the need. Tests with a namespace need root and are
//! `#[ignore = "needs root: …"]` (scripts/test.sh runs them).

#![allow(clippy::unwrap_used)]

mod common;

use common::{require_kernel, tcg_cmdline, TestNetns};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hangar_vmm::{accel, Accel, QemuDriver, VmSpec, VmmDriver, VmmError};

const QEMU: &str = "qemu-system-x86_64";

fn spec(dir: &Path, kernel: PathBuf, ns: &TestNetns, extra: &str) -> VmSpec {
    let mut s = common::spec_in(dir, kernel, &tcg_cmdline(extra));
    s.netns = Some(ns.name.clone());
    s
}

fn driver() -> QemuDriver {
    QemuDriver::new(QEMU, Accel::Tcg)
}

async fn wait_for_text(path: &Path, text: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::fs::read_to_string(path)
            .unwrap_or_default()
            .contains(text)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[test]
fn detect_on_this_host_gives_a_decision_with_reason() {
    let d = accel::detect();
    assert!(!d.reason.is_empty());
    if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        assert_eq!(d.accel, Accel::Tcg, "{}", d.reason);
    }
}

#[tokio::test]
#[ignore = "needs root: a TAP in a network namespace"]
async fn start_with_missing_kernel_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let ns = TestNetns::new("nokernel");
    let spec = spec(dir.path(), dir.path().join("missing-vmlinux"), &ns, "");

    let err = driver().start(&spec).await.unwrap_err();

    assert!(
        matches!(err, VmmError::MissingFile { what: "kernel", .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("missing-vmlinux"), "{err}");
    assert!(!dir.path().join("qmp.sock").exists());
    assert!(!dir.path().join("vmm.pid").exists());
    assert!(common::processes_mentioning(&dir.path().to_string_lossy()).is_empty());
}

#[tokio::test]
async fn start_with_missing_netns_names_the_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = common::spec_in(dir.path(), dir.path().join("root.ext4"), "");
    spec.netns = Some("hgtest-vmm-does-not-exist".into());

    let err = driver().start(&spec).await.unwrap_err();

    assert!(matches!(err, VmmError::Netns { .. }), "{err:?}");
    assert!(err.to_string().contains("hgtest-vmm-does-not-exist"));
}

#[tokio::test]
#[ignore = "needs root: a TAP in a network namespace"]
async fn start_with_unbootable_kernel_reports_qemu_stderr_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let ns = TestNetns::new("badkernel");
    let bogus = dir.path().join("bogus-vmlinux");
    std::fs::write(&bogus, b"this is not a kernel").unwrap();
    let spec = spec(dir.path(), bogus, &ns, "");

    let err = driver().start(&spec).await.unwrap_err();
    eprintln!("error shown to the user: {err}");

    assert!(matches!(err, VmmError::EarlyExit { .. }), "{err:?}");
    assert!(
        err.to_string().contains("kernel"),
        "QEMU's own message is shown: {err}"
    );
    assert!(!dir.path().join("qmp.sock").exists());
    assert!(!dir.path().join("vmm.pid").exists());
    assert!(common::processes_mentioning(&dir.path().to_string_lossy()).is_empty());
    assert!(
        dir.path().join("vmm.log").exists(),
        "QEMU stderr is kept in vmm.log"
    );
}

#[tokio::test]
#[ignore = "needs root: a TAP in a network namespace"]
async fn booted_vm_writes_console_and_supports_adopt_shutdown_and_kill() {
    let kernel = require_kernel();
    let dir = tempfile::tempdir().unwrap();
    let ns = TestNetns::new("boot");
    // No root fs: the kernel panics, and panic=0 keeps QEMU running.
    let spec = spec(dir.path(), kernel, &ns, "panic=0");
    let first = driver();

    let t0 = Instant::now();
    let h = first.start(&spec).await.unwrap();
    let _guard = common::KillOnDrop(h.clone());
    eprintln!("QEMU spawn -> QMP ready: {} ms", t0.elapsed().as_millis());

    assert!(first.is_alive(&h));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("vmm.pid"))
            .unwrap()
            .trim(),
        h.pid.to_string()
    );
    assert!(
        // `quiet` hides the banner; the panic (no root fs) always prints.
        wait_for_text(&spec.serial_log, "Kernel panic", Duration::from_secs(60)).await,
        "guest console output reaches the serial log"
    );
    let second = driver();
    assert!(
        second.adopt(&h).await.unwrap(),
        "a new driver adopts the running VM"
    );
    second.request_shutdown(&h).await.unwrap();
    // The panicked guest ignores the ACPI power button.
    assert!(!second
        .wait_exit(&h, Duration::from_millis(500))
        .await
        .unwrap());
    second.kill(&h).await.unwrap();
    assert!(!first.is_alive(&h));
    assert!(first.wait_exit(&h, Duration::from_secs(5)).await.unwrap());
    assert!(!h.api_socket.exists());
    assert!(!dir.path().join("vmm.pid").exists());
    second.kill(&h).await.unwrap(); // idempotent
    assert!(!second.adopt(&h).await.unwrap());
}

#[tokio::test]
#[ignore = "needs root: a TAP in a network namespace"]
async fn guest_power_off_makes_wait_exit_return_true() {
    let kernel = require_kernel();
    assert!(
        Path::new("/bin/busybox").exists(),
        "needs /bin/busybox (apt-get install busybox-static)"
    );
    let dir = tempfile::tempdir().unwrap();
    let initrd = make_poweroff_initrd(dir.path());
    let ns = TestNetns::new("poweroff");
    let mut spec = spec(dir.path(), kernel, &ns, "panic=0");
    spec.initrd = Some(initrd);
    let d = driver();
    let h = d.start(&spec).await.unwrap();
    let _guard = common::KillOnDrop(h.clone());

    let exited = d.wait_exit(&h, Duration::from_secs(90)).await.unwrap();

    assert!(exited, "guest powered off and QEMU exited");
    assert!(!d.is_alive(&h));
    let console = std::fs::read_to_string(&spec.serial_log).unwrap();
    assert!(console.contains("hangar-init-ran"), "{console}");
    d.kill(&h).await.unwrap();
    assert!(!h.api_socket.exists());
}

/// A newc initramfs whose /init prints a marker and powers off.
fn make_poweroff_initrd(dir: &Path) -> PathBuf {
    let tree = dir.join("initrd-tree");
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", tree.join("bin/busybox")).unwrap();
    let init = tree.join("init");
    std::fs::write(
        &init,
        "#!/bin/busybox sh\n/bin/busybox echo hangar-init-ran\n/bin/busybox poweroff -f\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = dir.join("initrd.cpio");
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {} && find . | cpio -o -H newc --quiet > {}",
            tree.display(),
            out.display()
        ))
        .status()
        .unwrap();
    assert!(st.success(), "cpio failed");
    out
}
