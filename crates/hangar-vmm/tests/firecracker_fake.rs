//! Firecracker driver against a fake `firecracker` (tests/fixtures, a
//! python3 script serving the API on the Unix socket): the request flow,
//! error mapping and process/socket clean-up. A real Firecracker is used
//! only by `real_firecracker_*`, ignored unless HANGAR_TEST_FIRECRACKER is
//! set (scripts/test.sh runs it then).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hangar_vmm::{
    read_latest_metrics, summarize_metrics, FirecrackerDriver, StopOutcome, VmmDriver, VmmError,
};

fn fake() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/fake-firecracker.py"
    ))
}

fn recorded(dir: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("fake-requests.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn start_with_api_rejection_fails_with_fault_message_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let spec = common::spec_in(dir.path(), dir.path().join("root.ext4"), "console=ttyS0");
    std::fs::write(
        dir.path().join("fake-firecracker.json"),
        r#"{"fail_path": "/boot-source", "fault_message": "Kernel image file missing"}"#,
    )
    .unwrap();
    let driver = FirecrackerDriver::new(fake());

    let err = driver.start(&spec).await.unwrap_err();

    match &err {
        VmmError::FirecrackerApi {
            status,
            fault_message,
            path,
            ..
        } => {
            assert_eq!(*status, 400);
            assert_eq!(fault_message, "Kernel image file missing");
            assert_eq!(path, "/boot-source");
        }
        other => panic!("expected FirecrackerApi, got {other:?}"),
    }
    assert!(err.to_string().contains("Kernel image file missing"));
    let sock = dir.path().join("firecracker.sock");
    assert!(!sock.exists(), "API socket must be removed");
    assert!(
        !dir.path().join("vmm.pid").exists(),
        "pid file must be removed"
    );
    assert!(
        common::processes_mentioning(&sock.to_string_lossy()).is_empty(),
        "no process may be left"
    );
    assert!(spec.serial_log.exists(), "serial log is kept");
}

#[tokio::test]
async fn start_sends_configuration_in_order_and_ends_with_instance_start() {
    let dir = tempfile::tempdir().unwrap();
    let spec = common::spec_in(dir.path(), dir.path().join("root.ext4"), "console=ttyS0");
    let driver = FirecrackerDriver::new(fake());

    let t0 = Instant::now();
    let h = driver.start(&spec).await.unwrap();
    let _guard = common::KillOnDrop(h.clone());
    eprintln!(
        "fake firecracker: spawn -> InstanceStart answered: {} ms",
        t0.elapsed().as_millis()
    );

    let paths: Vec<String> = recorded(dir.path())
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        paths,
        [
            "/logger",
            "/metrics",
            "/machine-config",
            "/boot-source",
            "/drives/root",
            "/drives/config",
            "/network-interfaces/eth0",
            "/actions"
        ]
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("vmm.pid"))
            .unwrap()
            .trim(),
        h.pid.to_string()
    );
    driver.kill(&h).await.unwrap();
}

#[tokio::test]
async fn request_shutdown_then_wait_exit_reaps_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let spec = common::spec_in(dir.path(), dir.path().join("root.ext4"), "console=ttyS0");
    let driver = FirecrackerDriver::new(fake());
    let h = driver.start(&spec).await.unwrap();
    let _guard = common::KillOnDrop(h.clone());

    driver.request_shutdown(&h).await.unwrap();
    let exited = driver.wait_exit(&h, Duration::from_secs(10)).await.unwrap();

    assert!(exited);
    assert!(!driver.is_alive(&h));
    let last = recorded(dir.path()).pop().unwrap();
    assert_eq!(last["body"]["action_type"], "SendCtrlAltDel");
    driver.kill(&h).await.unwrap();
    assert!(!h.api_socket.exists());
}

#[tokio::test]
async fn adopt_by_a_new_driver_allows_kill_and_removes_socket() {
    let dir = tempfile::tempdir().unwrap();
    let spec = common::spec_in(dir.path(), dir.path().join("root.ext4"), "console=ttyS0");
    let first = FirecrackerDriver::new(fake());
    let h = first.start(&spec).await.unwrap();
    let _guard = common::KillOnDrop(h.clone());
    let second = FirecrackerDriver::new(fake());

    let adopted = second.adopt(&h).await.unwrap();
    second.kill(&h).await.unwrap();

    assert!(adopted);
    assert!(!second.is_alive(&h));
    assert!(!h.api_socket.exists());
    assert!(!dir.path().join("vmm.pid").exists());
    assert!(
        !second.adopt(&h).await.unwrap(),
        "a dead VMM cannot be adopted"
    );
    second.kill(&h).await.unwrap(); // idempotent
}

#[tokio::test]
async fn adopt_with_reused_pid_returns_false() {
    let dir = tempfile::tempdir().unwrap();
    let spec = common::spec_in(dir.path(), dir.path().join("root.ext4"), "console=ttyS0");
    let driver = FirecrackerDriver::new(fake());
    let h = driver.start(&spec).await.unwrap();
    let _guard = common::KillOnDrop(h.clone());
    let mut stale = h.clone();
    stale.start_time += 1;

    let adopted = driver.adopt(&stale).await.unwrap();

    assert!(!adopted);
    driver.kill(&h).await.unwrap();
}

#[tokio::test]
async fn start_when_firecracker_dies_early_reports_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let spec = common::spec_in(dir.path(), dir.path().join("root.ext4"), "console=ttyS0");
    std::fs::write(
        dir.path().join("fake-firecracker.json"),
        r#"{"exit_before_socket": 3}"#,
    )
    .unwrap();
    let driver = FirecrackerDriver::new(fake());

    let err = driver.start(&spec).await.unwrap_err();

    assert!(matches!(err, VmmError::EarlyExit { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("exit code 3"), "{msg}");
    assert!(msg.contains("configured to die early"), "{msg}");
    assert!(!dir.path().join("firecracker.sock").exists());
}

#[tokio::test]
async fn start_with_missing_kernel_fails_before_spawning() {
    let dir = tempfile::tempdir().unwrap();
    let spec = common::spec_in(
        dir.path(),
        dir.path().join("no-such-vmlinux"),
        "console=ttyS0",
    );
    let driver = FirecrackerDriver::new(fake());

    let err = driver.start(&spec).await.unwrap_err();

    assert!(
        matches!(err, VmmError::MissingFile { what: "kernel", .. }),
        "{err:?}"
    );
    assert!(recorded(dir.path()).is_empty());
}

/// Real Firecracker: only with HANGAR_TEST_FIRECRACKER (the kernel is
/// HANGAR_TEST_KERNEL or the default image's vmlinux). On this project's
/// machines KVM cannot boot a stock guest, so this checks the API flow,
/// not the guest.
#[tokio::test]
#[ignore = "needs a Firecracker binary in HANGAR_TEST_FIRECRACKER"]
async fn real_firecracker_accepts_the_boot_configuration() {
    let bin =
        hangar_testsupport::require_env_file("HANGAR_TEST_FIRECRACKER", "a Firecracker binary");
    let kernel = common::require_kernel();
    let driver = FirecrackerDriver::new(bin);
    let dir = tempfile::tempdir().unwrap();
    let mut spec = common::spec_in(dir.path(), kernel, "console=ttyS0 panic=0");
    spec.tap = "hgtest-fc-missing".into();
    // Without a TAP, Firecracker must reject the network interface with a
    // fault message, and start must clean up.
    let err = driver.start(&spec).await.unwrap_err();
    assert!(matches!(err, VmmError::FirecrackerApi { .. }), "{err:?}");
    assert!(!dir.path().join("firecracker.sock").exists());
}

/// Starts the fake with `config` written to its fake-firecracker.json.
async fn start_fake(
    dir: &std::path::Path,
    config: &str,
) -> (FirecrackerDriver, hangar_vmm::VmmHandle, common::KillOnDrop) {
    let spec = common::spec_in(dir, dir.join("root.ext4"), "console=ttyS0");
    std::fs::write(dir.join("fake-firecracker.json"), config).unwrap();
    let driver = FirecrackerDriver::new(fake());
    let h = driver.start(&spec).await.unwrap();
    let guard = common::KillOnDrop(h.clone());
    (driver, h, guard)
}

#[tokio::test]
async fn stop_when_guest_honours_ctrl_alt_del_is_graceful() {
    let dir = tempfile::tempdir().unwrap();
    let (driver, h, _guard) = start_fake(dir.path(), "{}").await;

    let outcome = driver.stop(&h, Duration::from_secs(5)).await.unwrap();

    assert_eq!(outcome, StopOutcome::Graceful);
    assert!(!driver.is_alive(&h));
    assert!(!h.api_socket.exists());
    assert!(!dir.path().join("vmm.pid").exists());
}

#[tokio::test]
async fn stop_when_guest_ignores_ctrl_alt_del_terminates() {
    let dir = tempfile::tempdir().unwrap();
    let (driver, h, _guard) = start_fake(dir.path(), r#"{"ignore_ctrl_alt_del": true}"#).await;

    let t0 = Instant::now();
    let outcome = driver.stop(&h, Duration::from_millis(300)).await.unwrap();

    assert_eq!(outcome, StopOutcome::Terminated);
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert!(!driver.is_alive(&h));
    assert!(!h.api_socket.exists());
    assert!(!dir.path().join("vmm.pid").exists());
}

#[tokio::test]
async fn stop_when_vmm_ignores_sigterm_kills() {
    let dir = tempfile::tempdir().unwrap();
    let (driver, h, _guard) = start_fake(
        dir.path(),
        r#"{"ignore_ctrl_alt_del": true, "ignore_sigterm": true}"#,
    )
    .await;

    let outcome = driver.stop(&h, Duration::from_millis(300)).await.unwrap();

    assert_eq!(outcome, StopOutcome::Killed);
    assert!(!driver.is_alive(&h));
    assert!(!h.api_socket.exists());
}

#[tokio::test]
async fn stop_of_an_exited_vmm_reports_already_exited_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let (driver, h, _guard) = start_fake(dir.path(), "{}").await;
    driver.request_shutdown(&h).await.unwrap();
    assert!(driver.wait_exit(&h, Duration::from_secs(5)).await.unwrap());

    let outcome = driver.stop(&h, Duration::from_secs(1)).await.unwrap();

    assert_eq!(outcome, StopOutcome::AlreadyExited);
    assert!(!h.api_socket.exists());
    assert!(!dir.path().join("vmm.pid").exists());
}

#[tokio::test]
async fn flush_metrics_appends_a_line_that_read_latest_metrics_returns() {
    let dir = tempfile::tempdir().unwrap();
    let (driver, h, _guard) = start_fake(dir.path(), "{}").await;
    assert_eq!(read_latest_metrics(dir.path()), None, "no flush yet");

    driver.flush_metrics(&h).await.unwrap();
    driver.flush_metrics(&h).await.unwrap();
    let latest = read_latest_metrics(dir.path()).unwrap();

    let summary = summarize_metrics(&latest);
    assert_eq!(summary.vcpu_exits, Some(20), "second flush: 2+4+6+8");
    assert_eq!(summary.block_read_bytes, Some(8192));
    assert_eq!(summary.net_tx_bytes, Some(400));
    let last = recorded(dir.path()).pop().unwrap();
    assert_eq!(last["body"]["action_type"], "FlushMetrics");
    driver.kill(&h).await.unwrap();
}
