//! Firecracker under the jailer, with a fake `jailer` (tests/fixtures,
//! python3) that builds the jail directory and execs the fake firecracker
//! with paths resolved inside it. Proves the argv, the files placed in the
//! jail, jail-relative API paths, and removal of the jail on kill, stop and
//! failed start.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hangar_vmm::{FirecrackerDriver, JailerConfig, StopOutcome, VmSpec, VmmDriver, VmmError};

const UID: u32 = 4242;
const GID: u32 = 4343;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn driver(base: &Path, jailer: PathBuf) -> FirecrackerDriver {
    FirecrackerDriver::new(fixture("fake-firecracker.py"))
        .with_jailer(JailerConfig::new(jailer, UID, GID, base))
}

/// `<base>/fake-firecracker.py/<id>`: the exec file's name, as the jailer does.
fn jail_dir(base: &Path, spec: &VmSpec) -> PathBuf {
    base.join("fake-firecracker.py").join(&spec.id)
}

struct Setup {
    _vm: tempfile::TempDir,
    base: tempfile::TempDir,
    spec: VmSpec,
}

fn setup() -> Setup {
    let vm = tempfile::tempdir().unwrap();
    let base = tempfile::tempdir().unwrap();
    let mut spec = common::spec_in(vm.path(), vm.path().join("vmlinux"), "console=ttyS0");
    std::fs::write(&spec.kernel, b"fake kernel").unwrap();
    let initrd = vm.path().join("initrd.img");
    std::fs::write(&initrd, b"fake initrd").unwrap();
    spec.initrd = Some(initrd);
    Setup {
        _vm: vm,
        base,
        spec,
    }
}

fn recorded(jail: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(jail.join("root/run/fake-requests.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
#[ignore = "needs root: the jail belongs to another uid (chown, cgroups, namespaces)"]
async fn start_under_jailer_passes_documented_argv() {
    let s = setup();
    let d = driver(s.base.path(), fixture("fake-jailer.py"));

    let h = d.start(&s.spec).await.unwrap();
    let _guard = common::KillOnDrop(h.clone());

    let jail = jail_dir(s.base.path(), &s.spec);
    let got: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(jail.join("jailer-argv.json")).unwrap())
            .unwrap();
    let argv: Vec<String> = serde_json::from_value(got["argv"].clone()).unwrap();
    let fc = std::fs::canonicalize(fixture("fake-firecracker.py")).unwrap();
    assert_eq!(
        argv.join(" "),
        format!(
            "--id vm-test --exec-file {} --uid {UID} --gid {GID} --chroot-base-dir {} \
             --cgroup-version 2 -- --api-sock /run/firecracker.socket",
            fc.display(),
            s.base.path().display()
        )
    );
    d.kill(&h).await.unwrap();
}

#[tokio::test]
#[ignore = "needs root: the jail belongs to another uid (chown, cgroups, namespaces)"]
async fn start_under_jailer_runs_each_vm_as_its_own_uid_owning_its_files() {
    let mut s = setup();
    s.spec.run_as = Some(hangar_vmm::RunAs {
        uid: 200_031,
        gid: 200_032,
    });
    let d = driver(s.base.path(), fixture("fake-jailer.py"));

    let h = d.start(&s.spec).await.unwrap();
    let _guard = common::KillOnDrop(h.clone());

    let jail = jail_dir(s.base.path(), &s.spec);
    let got: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(jail.join("jailer-argv.json")).unwrap())
            .unwrap();
    let argv: Vec<String> = serde_json::from_value(got["argv"].clone()).unwrap();
    assert!(
        argv.join(" ").contains("--uid 200031 --gid 200032"),
        "{argv:?}"
    );
    let owner = |p: &Path| {
        let m = std::fs::metadata(p).unwrap();
        (m.uid(), m.gid(), m.mode() & 0o777)
    };
    let root = jail.join("root");
    for f in ["drive-root", "drive-config"] {
        assert_eq!(owner(&root.join(f)), (200_031, 200_032, 0o600), "{f}");
    }
    d.kill(&h).await.unwrap();
}

#[tokio::test]
#[ignore = "needs root: the jail belongs to another uid (chown, cgroups, namespaces)"]
async fn start_under_jailer_links_files_and_sends_jail_relative_paths() {
    let s = setup();
    let d = driver(s.base.path(), fixture("fake-jailer.py"));

    let t0 = Instant::now();
    let h = d.start(&s.spec).await.unwrap();
    let _guard = common::KillOnDrop(h.clone());
    eprintln!(
        "fake jailer + fake firecracker: spawn -> InstanceStart answered: {} ms",
        t0.elapsed().as_millis()
    );

    let root = jail_dir(s.base.path(), &s.spec).join("root");
    let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
    assert_eq!(ino(&root.join("vmlinux")), ino(&s.spec.kernel));
    assert_eq!(ino(&root.join("drive-root")), ino(&s.spec.root_disk));
    assert_eq!(
        ino(&root.join("drive-config")),
        ino(&s.spec.extra_drives[0].path)
    );
    assert_eq!(
        ino(&root.join("metrics.json")),
        ino(&s.spec.vm_dir.join("metrics.json"))
    );
    let disk = std::fs::metadata(root.join("drive-root")).unwrap();
    assert_eq!(
        (disk.uid(), disk.gid()),
        (UID, GID),
        "writable disk belongs to the jail user"
    );
    let boot = recorded(root.parent().unwrap())
        .into_iter()
        .find(|r| r["path"] == "/boot-source")
        .unwrap();
    assert_eq!(boot["body"]["kernel_image_path"], "/vmlinux");
    assert_eq!(boot["body"]["initrd_path"], "/initrd");
    assert_eq!(
        std::fs::read_link(&h.api_socket).unwrap(),
        root.join("run/firecracker.socket")
    );
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", h.pid)).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains(&*root.to_string_lossy()),
        "the handle's pid is the firecracker exec'd from the jail"
    );
    d.kill(&h).await.unwrap();
}

#[tokio::test]
#[ignore = "needs root: the jail belongs to another uid (chown, cgroups, namespaces)"]
async fn kill_under_jailer_removes_the_jail_but_keeps_the_vm_files() {
    let s = setup();
    let d = driver(s.base.path(), fixture("fake-jailer.py"));
    let h = d.start(&s.spec).await.unwrap();
    let _guard = common::KillOnDrop(h.clone());

    d.kill(&h).await.unwrap();

    assert!(!jail_dir(s.base.path(), &s.spec).exists());
    assert!(
        std::fs::symlink_metadata(&h.api_socket).is_err(),
        "socket symlink removed"
    );
    assert!(!s.spec.vm_dir.join("vmm.pid").exists());
    assert!(s.spec.root_disk.exists() && s.spec.kernel.exists());
    d.kill(&h).await.unwrap(); // idempotent
}

/// A driver whose jailer sets CPU and memory limits, with the fake's cgroup
/// v2 mount in `<base>/cgroup`.
fn limited_driver(base: &Path) -> FirecrackerDriver {
    let mut cfg = JailerConfig::new(fixture("fake-jailer.py"), UID, GID, base);
    cfg.limit_resources = true;
    cfg.cgroup_root = base.join("cgroup");
    std::fs::create_dir_all(&cfg.cgroup_root).unwrap();
    FirecrackerDriver::new(fixture("fake-firecracker.py")).with_jailer(cfg)
}

#[tokio::test]
#[ignore = "needs root: the jail belongs to another uid (chown, cgroups, namespaces)"]
async fn cgroup_limits_are_set_and_the_cgroup_is_removed_on_kill_and_stop() {
    for graceful in [false, true] {
        let s = setup();
        let d = limited_driver(s.base.path());
        let h = d.start(&s.spec).await.unwrap();
        let _guard = common::KillOnDrop(h.clone());
        let cgroup = s
            .base
            .path()
            .join("cgroup/fake-firecracker.py")
            .join(&s.spec.id);
        assert!(cgroup.is_dir(), "the jailer made the VM's cgroup");
        let argv: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(jail_dir(s.base.path(), &s.spec).join("jailer-argv.json"))
                .unwrap(),
        )
        .unwrap();
        let memory_max = format!("memory.max={}", (u64::from(s.spec.memory_mib) + 64) << 20);
        assert!(
            argv["cgroups"]
                .as_array()
                .unwrap()
                .contains(&serde_json::Value::from(memory_max.clone())),
            "{argv} lacks {memory_max}"
        );

        if graceful {
            d.stop(&h, Duration::from_secs(5)).await.unwrap();
        } else {
            d.kill(&h).await.unwrap();
        }

        assert!(!jail_dir(s.base.path(), &s.spec).exists());
        assert!(
            !cgroup.exists(),
            "cgroup left behind (graceful: {graceful})"
        );
    }
}

#[tokio::test]
#[ignore = "needs root: the jail belongs to another uid (chown, cgroups, namespaces)"]
async fn stop_under_jailer_is_graceful_and_removes_the_jail() {
    let s = setup();
    let d = driver(s.base.path(), fixture("fake-jailer.py"));
    let h = d.start(&s.spec).await.unwrap();
    let _guard = common::KillOnDrop(h.clone());

    let outcome = d.stop(&h, Duration::from_secs(5)).await.unwrap();

    assert_eq!(outcome, StopOutcome::Graceful);
    assert!(!jail_dir(s.base.path(), &s.spec).exists());
}

#[tokio::test]
#[ignore = "needs root: the jail belongs to another uid (chown, cgroups, namespaces)"]
async fn adopt_by_new_jailed_driver_then_kill_removes_the_jail() {
    let s = setup();
    let first = driver(s.base.path(), fixture("fake-jailer.py"));
    let h = first.start(&s.spec).await.unwrap();
    let _guard = common::KillOnDrop(h.clone());
    let second = driver(s.base.path(), fixture("fake-jailer.py"));

    assert!(second.adopt(&h).await.unwrap());
    second.kill(&h).await.unwrap();

    assert!(!second.is_alive(&h));
    assert!(!jail_dir(s.base.path(), &s.spec).exists());
}

#[tokio::test]
#[ignore = "needs root: the jail belongs to another uid (chown, cgroups, namespaces)"]
async fn start_when_jailer_fails_removes_the_jail_and_symlink() {
    let s = setup();
    let d = driver(s.base.path(), PathBuf::from("/bin/false"));

    let err = d.start(&s.spec).await.unwrap_err();

    assert!(matches!(err, VmmError::EarlyExit { .. }), "{err:?}");
    assert!(!jail_dir(s.base.path(), &s.spec).exists());
    assert!(std::fs::symlink_metadata(s.spec.vm_dir.join("firecracker.sock")).is_err());
    assert!(!s.spec.vm_dir.join("vmm.pid").exists());
}

#[tokio::test]
async fn start_with_invalid_jail_id_fails_before_creating_anything() {
    let mut s = setup();
    s.spec.id = "vm_with_underscore".into();
    let d = driver(s.base.path(), fixture("fake-jailer.py"));

    let err = d.start(&s.spec).await.unwrap_err();

    assert!(matches!(err, VmmError::InvalidJailId { .. }), "{err:?}");
    assert_eq!(std::fs::read_dir(s.base.path()).unwrap().count(), 0);
}

/// A network namespace, removed on drop.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[tokio::test]
#[ignore = "needs root: the jail belongs to another uid (chown, cgroups, namespaces)"]
async fn start_under_jailer_with_netns_passes_it_to_the_jailer() {
    let ns = Netns(format!("hgtest-jail-{}", std::process::id()));
    assert!(Command::new("ip")
        .args(["netns", "add", &ns.0])
        .status()
        .unwrap()
        .success());
    let mut s = setup();
    s.spec.netns = Some(ns.0.clone());
    let d = driver(s.base.path(), fixture("fake-jailer.py"));

    let h = d.start(&s.spec).await.unwrap();
    let _guard = common::KillOnDrop(h.clone());

    let jail = jail_dir(s.base.path(), &s.spec);
    let argv = std::fs::read_to_string(jail.join("jailer-argv.json")).unwrap();
    assert!(
        argv.contains(&format!("\"--netns\", \"/run/netns/{}\"", ns.0)),
        "{argv}"
    );
    d.kill(&h).await.unwrap();
}
