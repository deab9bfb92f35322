//! `hangar doctor` against the real binary, on hosts where checks pass and
//! where they fail: fake binaries first on PATH, a state dir on a full
//! filesystem, a missing KVM device via the config, the daemon up or down.
//! Doctor needs no daemon: most tests only write a config
//! (`Options { start: false, .. }`).

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{hangar_bin, Options, TestDaemon, TmpfsMount};
use serde_json::Value;

/// Runs `hangar --config CFG [--json] doctor` with `prepend` put first on
/// PATH.
fn doctor(config: &Path, prepend: Option<&Path>, json: bool) -> Output {
    let mut cmd = Command::new(hangar_bin());
    cmd.arg("--config").arg(config);
    if json {
        cmd.arg("--json");
    }
    cmd.arg("doctor")
        .stdin(Stdio::null())
        .env_remove("HANGAR_SOCKET");
    if let Some(dir) = prepend {
        let old = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![dir.to_path_buf()];
        paths.extend(std::env::split_paths(&old));
        cmd.env("PATH", std::env::join_paths(paths).unwrap());
    }
    cmd.output().unwrap()
}

fn checks(out: &Output) -> Vec<Value> {
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json printed no JSON ({e}):\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    v.as_array().unwrap().clone()
}

fn find<'a>(checks: &'a [Value], name: &str) -> &'a Value {
    checks
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check named {name}: {checks:#?}"))
}

fn no_daemon(tag: &str, vmm_extra: &str) -> TestDaemon {
    TestDaemon::with(
        tag,
        Options {
            start: false,
            vmm_extra: vmm_extra.to_string(),
            ..Options::default()
        },
    )
}

/// A directory holding one executable shell script `name`.
fn fake_bin(dir: &Path, name: &str, script: &str) {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn host_is_pvm_guest() -> bool {
    let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hw = flags
        .lines()
        .find(|l| l.starts_with("flags"))
        .is_some_and(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    Path::new("/sys/module/kvm_pvm").exists() && !hw
}

#[test]
#[ignore = "needs root: probes the host as the daemon does (network namespace, mounts)"]
fn doctor_on_this_host_passes_with_every_field() {
    let d = no_daemon("doc-host", "");

    let out = doctor(&d.config, None, true);
    let checks = checks(&out);

    assert_eq!(out.status.code(), Some(0), "{checks:#?}");
    for c in &checks {
        for field in ["name", "what", "level", "result"] {
            assert!(
                c[field].as_str().is_some_and(|s| !s.is_empty()),
                "{field} missing in {c}"
            );
        }
        if c["level"] != "ok" {
            assert!(c["fix"].as_str().is_some_and(|s| !s.is_empty()), "{c}");
        }
    }
    assert_eq!(find(&checks, "qemu")["level"], "ok");
    let kvm = find(&checks, "kvm");
    if host_is_pvm_guest() {
        assert_eq!(kvm["level"], "warn", "{kvm}");
        let r = kvm["result"].as_str().unwrap();
        assert!(r.contains("PVM") && r.contains("TCG"), "{r}");
    }
}

#[test]
#[ignore = "needs root: probes the host as the daemon does (network namespace, mounts)"]
fn old_firecracker_on_path_warns_below_1_8() {
    let d = no_daemon("doc-fc", "");
    let bin = tempfile::tempdir().unwrap();
    fake_bin(bin.path(), "firecracker", "echo 'Firecracker v1.4.0'");

    let out = doctor(&d.config, Some(bin.path()), true);
    let checks = checks(&out);
    let fc = find(&checks, "firecracker");

    assert_eq!(fc["level"], "warn", "{fc}");
    let r = fc["result"].as_str().unwrap();
    assert!(r.contains("1.4.0") && r.contains("< 1.8"), "{r}");
    assert!(r.contains(&bin.path().display().to_string()), "{r}");
    assert_eq!(out.status.code(), Some(0), "a warning alone must not fail");
}

#[test]
#[ignore = "needs root: probes the host as the daemon does (network namespace, mounts)"]
fn missing_qemu_fails_with_apt_fix_and_exit_1() {
    let d = no_daemon("doc-qemu", "qemu = \"/nonexistent\"");

    let json = doctor(&d.config, None, true);
    let human = doctor(&d.config, None, false);
    let checks = checks(&json);
    let q = find(&checks, "qemu");

    assert_eq!(json.status.code(), Some(1));
    assert_eq!(q["level"], "fail", "{q}");
    assert!(
        q["fix"]
            .as_str()
            .unwrap()
            .contains("apt-get install qemu-system-x86"),
        "{q}"
    );
    assert_eq!(human.status.code(), Some(1));
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("Failed (1)"), "{text}");
    assert!(
        text.contains("fix: apt-get install qemu-system-x86"),
        "{text}"
    );
}

#[test]
#[ignore = "needs root: probes the host as the daemon does (network namespace, mounts)"]
fn mkfs_without_d_support_fails() {
    let d = no_daemon("doc-mkfs", "");
    let bin = tempfile::tempdir().unwrap();
    fake_bin(
        bin.path(),
        "mkfs.ext4",
        "echo 'mke2fs 1.42.9 (28-Dec-2013)' >&2\n[ \"$1\" = -V ] && exit 0\necho 'Usage: mke2fs [-c|-l filename] [-b block-size] device' >&2\nexit 1",
    );

    let out = doctor(&d.config, Some(bin.path()), true);
    let checks = checks(&out);
    let m = find(&checks, "mkfs.ext4");

    assert_eq!(m["level"], "fail", "{m}");
    assert!(m["result"].as_str().unwrap().contains("-d"), "{m}");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
#[ignore = "needs root: probes the host as the daemon does (network namespace, mounts)"]
fn state_dir_on_full_filesystem_fails_disk_space() {
    let fs = TmpfsMount::new("16M");
    let filler = fs.dir.path().join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0x5au8; 1 << 20];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    drop(f);
    let d = TestDaemon::with(
        "doc-full",
        Options {
            start: false,
            state_dir: Some(fs.dir.path().join("state")),
            ..Options::default()
        },
    );

    let out = doctor(&d.config, None, true);
    let checks = checks(&out);
    let disk = find(&checks, "disk-space");

    assert_eq!(disk["level"], "fail", "{disk}");
    assert!(
        disk["result"].as_str().unwrap().starts_with("0.0 GiB free"),
        "{disk}"
    );
    assert!(
        disk["fix"].as_str().unwrap().contains("state_dir"),
        "{disk}"
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
#[ignore = "needs root: probes the host as the daemon does (network namespace, mounts)"]
fn missing_kvm_device_is_reported_with_fix() {
    let d = no_daemon("doc-kvm", "kvm_device = \"/nonexistent/kvm\"");

    let out = doctor(&d.config, None, true);
    let checks = checks(&out);
    let kvm = find(&checks, "kvm");

    assert_eq!(kvm["level"], "warn", "{kvm}");
    assert!(
        kvm["result"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/kvm is missing"),
        "{kvm}"
    );
    let fix = kvm["fix"].as_str().unwrap();
    assert!(
        fix.contains("kvm_intel") && fix.contains("accel = \"tcg\""),
        "{fix}"
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
#[ignore = "needs root: probes the host as the daemon does (network namespace, mounts)"]
fn daemon_down_warns_with_start_command() {
    let d = no_daemon("doc-down", "");

    let out = doctor(&d.config, None, true);
    let checks = checks(&out);
    let daemon = find(&checks, "daemon");
    let image = find(&checks, "default-image");

    assert_eq!(daemon["level"], "warn", "{daemon}");
    assert!(
        daemon["fix"].as_str().unwrap().contains(&format!(
            "sudo hangar daemon --config {}",
            d.config.display()
        )),
        "{daemon}"
    );
    assert_eq!(image["level"], "ok", "{image}");
    assert!(
        image["result"].as_str().unwrap().contains("catalog"),
        "{image}"
    );
}

#[test]
#[ignore = "needs root: probes the host as the daemon does (network namespace, mounts)"]
fn daemon_up_is_ok_and_is_asked_about_local_images() {
    let d = TestDaemon::start("doc-up");

    let out = doctor(&d.config, None, true);
    let checks = checks(&out);
    let daemon = find(&checks, "daemon");
    let image = find(&checks, "default-image");

    assert_eq!(daemon["level"], "ok", "{daemon}");
    assert!(
        daemon["result"]
            .as_str()
            .unwrap()
            .contains(&d.socket().display().to_string()),
        "{daemon}"
    );
    // A fresh state dir has no images: the daemon says so, and the catalog
    // makes it fine.
    assert_eq!(image["level"], "ok", "{image}");
    assert!(
        image["result"].as_str().unwrap().contains("not local yet"),
        "{image}"
    );
}

#[test]
#[ignore = "needs root: probes the host as the daemon does (network namespace, mounts)"]
fn default_image_in_neither_store_nor_catalog_is_flagged() {
    let mut d = no_daemon("doc-img", "");
    let text = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(
        &d.config,
        text.replace("[defaults]\n", "[defaults]\nimage = \"no-such-image\"\n"),
    )
    .unwrap();

    let down = doctor(&d.config, None, true);
    d.spawn();
    let up = doctor(&d.config, None, true);

    assert_eq!(find(&checks(&down), "default-image")["level"], "warn");
    let up_checks = checks(&up);
    let image = find(&up_checks, "default-image");
    assert_eq!(image["level"], "fail", "{image}");
    assert!(
        image["fix"].as_str().unwrap().contains("debian-12"),
        "{image}"
    );
    assert_eq!(up.status.code(), Some(1));
}

#[test]
#[ignore = "needs root: probes the host as the daemon does (network namespace, mounts)"]
fn a_default_image_from_a_configured_catalog_is_fine_and_an_unreadable_catalog_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("team.json");
    std::fs::write(
        &catalog,
        r#"{"images":[{"name":"team-golden","description":"the team's image","oci":"127.0.0.1:5000/team/golden:v3","insecure":true}]}"#,
    )
    .unwrap();
    let missing = dir.path().join("gone.json");
    let with_catalogs = |tag: &str, catalogs: &[&Path]| {
        let list: Vec<String> = catalogs
            .iter()
            .map(|p| format!("\"file://{}\"", p.display()))
            .collect();
        let d = TestDaemon::with(
            tag,
            Options {
                start: false,
                extra_config: format!("[images]\ncatalogs = [{}]\n", list.join(", ")),
                ..Options::default()
            },
        );
        let text = std::fs::read_to_string(&d.config).unwrap();
        std::fs::write(
            &d.config,
            text.replace("[defaults]\n", "[defaults]\nimage = \"team-golden\"\n"),
        )
        .unwrap();
        d
    };

    // Daemon down: the CLI merges the configured catalog itself.
    let mut d = with_catalogs("doc-cat", &[&catalog]);
    let down = doctor(&d.config, None, true);
    let image = find(&checks(&down), "default-image").clone();
    assert_eq!(image["level"], "ok", "{image}");
    let result = image["result"].as_str().unwrap();
    assert!(result.contains("configured ([images] catalogs)"), "{image}");
    assert!(result.contains("daemon not reachable"), "{image}");

    // Daemon up: its merged catalog says the same.
    d.spawn();
    let up = doctor(&d.config, None, true);
    let image = find(&checks(&up), "default-image").clone();
    assert_eq!(image["level"], "ok", "{image}");
    assert!(
        image["result"].as_str().unwrap().contains("not local yet"),
        "{image}"
    );
    drop(d);

    // A catalog that cannot be read: a warning naming it, not a failure.
    let d = with_catalogs("doc-cat2", &[&missing]);
    let out = doctor(&d.config, None, true);
    let image = find(&checks(&out), "default-image").clone();
    assert_eq!(image["level"], "warn", "{image}");
    assert!(
        image["result"]
            .as_str()
            .unwrap()
            .contains(&missing.display().to_string()),
        "{image}"
    );
}
