//! One behaviour suite for every VMM driver (containerd's
//! `SnapshotterSuite` idea): the same tests run against
//! - `qemu_tcg`: real QEMU, TCG, a busybox initramfs guest, TAP in a netns;
//! - `fake_firecracker`: the python fake (API + process handling only: no
//!   guest, its "console" is the fake's own stdout);
//! - `fake_firecracker_jailed`: the same under the fake jailer;
//! - `real_firecracker`: only with HANGAR_TEST_FIRECRACKER=/path (guest
//!   needs a kernel Firecracker can boot, and KVM that boots it).
//!
//! A backend with a need is `#[ignore = "needs …"]` (see scripts/test.sh);
//! run anyway, a backend whose need is unmet fails naming it.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Guest, KillOnDrop, TestNetns, READY_MARKER};
use hangar_vmm::{
    Accel, FirecrackerDriver, JailerConfig, QemuDriver, StopOutcome, VmSpec, VmmDriver, VmmError,
};

/// What the suite needs from a backend.
trait Backend: Sized {
    const NAME: &'static str;
    /// `Err(need)` when the backend cannot run here: what it needs.
    fn new() -> Result<Self, String>;
    /// A fresh driver instance (a new one simulates a daemon restart).
    fn driver(&self) -> Box<dyn VmmDriver>;
    /// A spec in `dir` for a guest that behaves as `guest`.
    fn spec(&self, dir: &Path, guest: Guest) -> VmSpec;
    /// Console text that means "booted and ready for a shutdown request".
    fn ready_marker(&self) -> &'static str;
    fn boot_timeout(&self) -> Duration {
        Duration::from_secs(120)
    }
    fn graceful_timeout(&self) -> Duration {
        Duration::from_secs(30)
    }
}

/// The backend, or a failure naming what it needs.
fn backend<B: Backend>() -> B {
    B::new().unwrap_or_else(|need| panic!("{} needs {need}", B::NAME))
}

// ---------------------------------------------------------------- backends

struct QemuTcg {
    kernel: PathBuf,
    ns: TestNetns,
}

impl Backend for QemuTcg {
    const NAME: &'static str = "qemu_tcg";
    fn new() -> Result<Self, String> {
        hangar_testsupport::require_root("a TAP in a network namespace");
        let kernel = common::find_kernel().ok_or(common::NO_KERNEL)?;
        if !Path::new("/bin/busybox").exists() {
            return Err("/bin/busybox (apt-get install busybox-static)".into());
        }
        let tag = format!("c{}", rand_tag());
        Ok(QemuTcg {
            kernel,
            ns: TestNetns::new(&tag),
        })
    }
    fn driver(&self) -> Box<dyn VmmDriver> {
        Box::new(QemuDriver::new("qemu-system-x86_64", Accel::Tcg))
    }
    fn spec(&self, dir: &Path, guest: Guest) -> VmSpec {
        let mut s = common::spec_in(dir, self.kernel.clone(), &common::tcg_cmdline("panic=0"));
        s.initrd = Some(common::make_guest_initrd(dir, &self.kernel, guest));
        s.netns = Some(self.ns.name.clone());
        s
    }
    fn ready_marker(&self) -> &'static str {
        READY_MARKER
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A short unique suffix for namespace names and VM ids.
fn rand_tag() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{}", N.fetch_add(1, Ordering::Relaxed))
}

fn fake_spec(dir: &Path, guest: Guest) -> VmSpec {
    let spec = common::spec_in(dir, dir.join("root.ext4"), "console=ttyS0");
    if guest == Guest::IgnoresShutdown {
        std::fs::write(
            dir.join("fake-firecracker.json"),
            r#"{"ignore_ctrl_alt_del": true}"#,
        )
        .unwrap();
    }
    spec
}

struct FakeFirecracker;

impl Backend for FakeFirecracker {
    const NAME: &'static str = "fake_firecracker (API + process handling only)";
    fn new() -> Result<Self, String> {
        Ok(FakeFirecracker)
    }
    fn driver(&self) -> Box<dyn VmmDriver> {
        Box::new(FirecrackerDriver::new(fixture("fake-firecracker.py")))
    }
    fn spec(&self, dir: &Path, guest: Guest) -> VmSpec {
        fake_spec(dir, guest)
    }
    fn ready_marker(&self) -> &'static str {
        "fake firecracker starting"
    }
    fn graceful_timeout(&self) -> Duration {
        Duration::from_secs(5)
    }
}

struct FakeFirecrackerJailed {
    base: tempfile::TempDir,
}

impl Backend for FakeFirecrackerJailed {
    const NAME: &'static str = "fake_firecracker_jailed (fake jailer; API + process handling only)";
    fn new() -> Result<Self, String> {
        Ok(FakeFirecrackerJailed {
            base: tempfile::tempdir().map_err(|e| e.to_string())?,
        })
    }
    fn driver(&self) -> Box<dyn VmmDriver> {
        Box::new(
            FirecrackerDriver::new(fixture("fake-firecracker.py")).with_jailer(JailerConfig::new(
                fixture("fake-jailer.py"),
                0,
                0,
                self.base.path(),
            )),
        )
    }
    fn spec(&self, dir: &Path, guest: Guest) -> VmSpec {
        // The jail is built fresh by `start`; the fake jailer copies this
        // config into it.
        if guest == Guest::IgnoresShutdown {
            std::fs::write(
                self.base.path().join("fake-firecracker.json"),
                r#"{"ignore_ctrl_alt_del": true}"#,
            )
            .unwrap();
        }
        common::spec_in(dir, dir.join("root.ext4"), "console=ttyS0")
    }
    fn ready_marker(&self) -> &'static str {
        "fake firecracker starting"
    }
    fn graceful_timeout(&self) -> Duration {
        Duration::from_secs(5)
    }
}

struct RealFirecracker {
    binary: PathBuf,
    kernel: PathBuf,
    ns: TestNetns,
}

impl Backend for RealFirecracker {
    const NAME: &'static str = "real_firecracker";
    fn new() -> Result<Self, String> {
        let binary =
            hangar_testsupport::require_env_file("HANGAR_TEST_FIRECRACKER", "a Firecracker binary");
        hangar_testsupport::require_root("a TAP in a network namespace");
        let kernel = common::find_kernel().ok_or(common::NO_KERNEL)?;
        Ok(RealFirecracker {
            binary,
            kernel,
            ns: TestNetns::new(&format!("f{}", rand_tag())),
        })
    }
    fn driver(&self) -> Box<dyn VmmDriver> {
        Box::new(FirecrackerDriver::new(&self.binary))
    }
    fn spec(&self, dir: &Path, guest: Guest) -> VmSpec {
        let mut s = common::spec_in(dir, self.kernel.clone(), "console=ttyS0 reboot=k panic=1");
        s.initrd = Some(common::make_guest_initrd(dir, &self.kernel, guest));
        s.netns = Some(self.ns.name.clone());
        s
    }
    fn ready_marker(&self) -> &'static str {
        READY_MARKER
    }
}

// -------------------------------------------------------------- behaviours

/// Starts a guest and waits for its ready marker; prints the start time.
async fn boot<B: Backend>(
    b: &B,
    d: &dyn VmmDriver,
    dir: &Path,
    guest: Guest,
) -> (VmSpec, hangar_vmm::VmmHandle, KillOnDrop) {
    let spec = b.spec(dir, guest);
    let t0 = Instant::now();
    let h = d.start(&spec).await.unwrap();
    let guard = KillOnDrop(h.clone());
    let started = t0.elapsed();
    assert!(
        common::wait_for_text(&spec.serial_log, b.ready_marker(), b.boot_timeout()).await,
        "{}: console never showed {:?}:\n{}",
        B::NAME,
        b.ready_marker(),
        std::fs::read_to_string(&spec.serial_log).unwrap_or_default()
    );
    eprintln!(
        "{}: start() (spawn -> {} answered) {} ms; console ready after {} ms",
        B::NAME,
        if d.kind() == "qemu" {
            "QMP"
        } else {
            "InstanceStart"
        },
        started.as_millis(),
        t0.elapsed().as_millis()
    );
    (spec, h, guard)
}

fn assert_cleaned(spec: &VmSpec, h: &hangar_vmm::VmmHandle) {
    assert!(
        std::fs::symlink_metadata(&h.api_socket).is_err(),
        "API socket {} must be removed",
        h.api_socket.display()
    );
    assert!(
        !spec.vm_dir.join("vmm.pid").exists(),
        "pid file must be removed"
    );
}

async fn start_writes_console_log<B: Backend>() {
    let b = backend::<B>();
    let dir = tempfile::tempdir().unwrap();
    let d = b.driver();

    let (spec, h, _guard) = boot(&b, d.as_ref(), dir.path(), Guest::IgnoresShutdown).await;

    assert!(d.is_alive(&h));
    d.kill(&h).await.unwrap();
    assert_cleaned(&spec, &h);
}

async fn stop_is_graceful_when_guest_honours_it<B: Backend>() {
    let b = backend::<B>();
    let dir = tempfile::tempdir().unwrap();
    let d = b.driver();
    let (spec, h, _guard) = boot(&b, d.as_ref(), dir.path(), Guest::HonoursShutdown).await;

    let outcome = d.stop(&h, b.graceful_timeout()).await.unwrap();

    assert_eq!(outcome, StopOutcome::Graceful, "{}", B::NAME);
    assert!(!d.is_alive(&h));
    assert_cleaned(&spec, &h);
}

async fn stop_terminates_when_guest_ignores_it<B: Backend>() {
    let b = backend::<B>();
    let dir = tempfile::tempdir().unwrap();
    let d = b.driver();
    let (spec, h, _guard) = boot(&b, d.as_ref(), dir.path(), Guest::IgnoresShutdown).await;

    let t0 = Instant::now();
    let outcome = d.stop(&h, Duration::from_millis(500)).await.unwrap();

    eprintln!(
        "{}: ignored shutdown -> {outcome:?} after {} ms",
        B::NAME,
        t0.elapsed().as_millis()
    );
    assert!(
        matches!(outcome, StopOutcome::Terminated | StopOutcome::Killed),
        "{}: {outcome:?}",
        B::NAME
    );
    assert!(!d.is_alive(&h));
    assert_cleaned(&spec, &h);
}

async fn kill_ends_the_vmm_and_is_idempotent<B: Backend>() {
    let b = backend::<B>();
    let dir = tempfile::tempdir().unwrap();
    let d = b.driver();
    let (spec, h, _guard) = boot(&b, d.as_ref(), dir.path(), Guest::IgnoresShutdown).await;

    d.kill(&h).await.unwrap();

    assert!(!d.is_alive(&h));
    assert!(d.wait_exit(&h, Duration::from_secs(1)).await.unwrap());
    assert_cleaned(&spec, &h);
    d.kill(&h).await.unwrap();
}

async fn wait_exit_times_out_while_running_and_returns_after_power_off<B: Backend>() {
    let b = backend::<B>();
    let dir = tempfile::tempdir().unwrap();
    let d = b.driver();
    let (_spec, h, _guard) = boot(&b, d.as_ref(), dir.path(), Guest::HonoursShutdown).await;

    let early = d.wait_exit(&h, Duration::from_millis(300)).await.unwrap();
    d.request_shutdown(&h).await.unwrap();
    let later = d.wait_exit(&h, b.graceful_timeout()).await.unwrap();

    assert!(!early, "{}: still running", B::NAME);
    assert!(later, "{}: exited after power-off", B::NAME);
    assert!(!d.is_alive(&h));
    d.kill(&h).await.unwrap();
}

async fn adopt_after_restart_allows_stop<B: Backend>() {
    let b = backend::<B>();
    let dir = tempfile::tempdir().unwrap();
    let first = b.driver();
    let (spec, h, _guard) = boot(&b, first.as_ref(), dir.path(), Guest::HonoursShutdown).await;
    let second = b.driver();

    let adopted = second.adopt(&h).await.unwrap();
    let outcome = second.stop(&h, b.graceful_timeout()).await.unwrap();

    assert!(adopted, "{}", B::NAME);
    assert_eq!(outcome, StopOutcome::Graceful, "{}", B::NAME);
    assert!(!first.is_alive(&h));
    assert_cleaned(&spec, &h);
    assert!(
        !second.adopt(&h).await.unwrap(),
        "a dead VMM cannot be adopted"
    );
}

async fn start_with_missing_kernel_fails_cleanly<B: Backend>() {
    let b = backend::<B>();
    let dir = tempfile::tempdir().unwrap();
    let mut spec = b.spec(dir.path(), Guest::IgnoresShutdown);
    spec.kernel = dir.path().join("no-such-vmlinux");

    let err = b.driver().start(&spec).await.unwrap_err();

    assert!(
        matches!(err, VmmError::MissingFile { what: "kernel", .. }),
        "{}: {err:?}",
        B::NAME
    );
    assert!(err.to_string().contains("no-such-vmlinux"), "{err}");
    assert!(std::fs::symlink_metadata(dir.path().join("qmp.sock")).is_err());
    assert!(std::fs::symlink_metadata(dir.path().join("firecracker.sock")).is_err());
    assert!(!dir.path().join("vmm.pid").exists());
    assert!(common::processes_mentioning(&dir.path().to_string_lossy()).is_empty());
}

/// `conformance!(#[ignore = "needs …"] module, Backend)`: the attributes
/// go on every test of the backend.
macro_rules! conformance {
    ($(#[$need:meta])* $module:ident, $backend:ty) => {
        mod $module {
            use super::*;

            #[tokio::test]
            $(#[$need])*
            async fn start_writes_console_log() {
                super::start_writes_console_log::<$backend>().await
            }
            #[tokio::test]
            $(#[$need])*
            async fn stop_is_graceful_when_guest_honours_it() {
                super::stop_is_graceful_when_guest_honours_it::<$backend>().await
            }
            #[tokio::test]
            $(#[$need])*
            async fn stop_terminates_when_guest_ignores_it() {
                super::stop_terminates_when_guest_ignores_it::<$backend>().await
            }
            #[tokio::test]
            $(#[$need])*
            async fn kill_ends_the_vmm_and_is_idempotent() {
                super::kill_ends_the_vmm_and_is_idempotent::<$backend>().await
            }
            #[tokio::test]
            $(#[$need])*
            async fn wait_exit_times_out_while_running_and_returns_after_power_off() {
                super::wait_exit_times_out_while_running_and_returns_after_power_off::<$backend>()
                    .await
            }
            #[tokio::test]
            $(#[$need])*
            async fn adopt_after_restart_allows_stop() {
                super::adopt_after_restart_allows_stop::<$backend>().await
            }
            #[tokio::test]
            $(#[$need])*
            async fn start_with_missing_kernel_fails_cleanly() {
                super::start_with_missing_kernel_fails_cleanly::<$backend>().await
            }
        }
    };
}

conformance!(
    #[ignore = "needs root: a TAP in a network namespace for a QEMU TCG guest"]
    qemu_tcg,
    QemuTcg
);
conformance!(fake_firecracker, FakeFirecracker);
conformance!(
    #[ignore = "needs root: the fake jailer hands the jail to another uid"]
    fake_firecracker_jailed,
    FakeFirecrackerJailed
);
// `real_firecracker` in the test names is the marker scripts/test.sh
// selects these by: they run only when HANGAR_TEST_FIRECRACKER is set.
conformance!(
    #[ignore = "needs a Firecracker binary in HANGAR_TEST_FIRECRACKER (and root, KVM)"]
    real_firecracker,
    RealFirecracker
);
