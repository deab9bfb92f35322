//! Integration tests: a real daemon in a temp dir, driven through the real
//! CLI binary and raw HTTP on its Unix socket. No guest is booted here.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;

use common::{Options, TestDaemon};

fn raw_http(d: &TestDaemon, request: &str) -> String {
    let mut s = UnixStream::connect(d.socket()).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
#[ignore = "needs root: runs the daemon (network namespace, TAPs, socket ownership)"]
fn empty_daemon_lists_nothing() {
    let d = TestDaemon::start("empty");
    assert_eq!(d.json(&["vm", "ls"]), serde_json::json!([]));
    assert_eq!(d.json(&["image", "ls"]), serde_json::json!([]));
    assert_eq!(d.json(&["op", "ls"]), serde_json::json!([]));
    let catalog = d.json(&["image", "catalog"]);
    assert_eq!(catalog[0]["name"], "debian-12");
}

#[test]
#[ignore = "needs root: runs the daemon (network namespace, TAPs, socket ownership)"]
fn socket_has_mode_0660() {
    let d = TestDaemon::start("sockmode");
    let mode = std::fs::metadata(d.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
}

/// Runs the CLI as `nobody` with primary group `group` against `d`'s socket.
fn cli_as_nobody(d: &TestDaemon, group: &str, args: &[&str]) -> std::process::Output {
    // Reachable by an unprivileged user wherever the checkout lives.
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = d.dir.path().join("hangar-cli-copy");
    if !bin.exists() {
        std::fs::copy(common::hangar_bin(), &bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::process::Command::new("runuser")
        .args(["-u", "nobody", "-g", group, "--"])
        .arg(&bin)
        .arg("--socket")
        .arg(d.socket())
        .args(args)
        .output()
        .unwrap()
}

#[test]
#[ignore = "needs root: runs the daemon (network namespace, TAPs, socket ownership)"]
fn socket_group_members_use_the_cli_without_root_and_others_are_told_why_not() {
    let d = TestDaemon::with(
        "sockgrp",
        Options {
            extra_config: "socket_group = \"nogroup\"".into(),
            ..Options::default()
        },
    );
    let nogroup = nix::unistd::Group::from_name("nogroup").unwrap().unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::gid(&std::fs::metadata(d.socket()).unwrap()),
        nogroup.gid.as_raw()
    );

    let member = cli_as_nobody(&d, "nogroup", &["--json", "vm", "ls"]);
    assert!(
        member.status.success(),
        "{}",
        String::from_utf8_lossy(&member.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&member.stdout).trim(), "[]");

    let outsider = cli_as_nobody(&d, "daemon", &["vm", "ls"]);
    let err = String::from_utf8_lossy(&outsider.stderr);
    assert!(!outsider.status.success());
    assert!(
        err.contains("group \"nogroup\"") && err.contains("usermod -aG nogroup"),
        "{err}"
    );
}

#[test]
#[ignore = "needs root: runs the daemon (network namespace, TAPs, socket ownership)"]
fn unknown_socket_group_is_refused_before_anything_is_created() {
    let d = TestDaemon::with(
        "sockgrpbad",
        Options {
            extra_config: "socket_group = \"no-such-group-hg\"".into(),
            start: false,
            ..Options::default()
        },
    );
    let out = std::process::Command::new(common::hangar_bin())
        .args(["daemon", "--config"])
        .arg(&d.config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no-such-group-hg") && err.contains("groupadd"),
        "{err}"
    );
    assert!(!d.dir.path().join("run").exists(), "no runtime dir");
    assert!(!d.state.exists(), "no state dir");
}

#[test]
#[ignore = "needs root: runs the daemon (network namespace, TAPs, socket ownership)"]
fn unbindable_socket_fails_the_daemon_and_gives_back_its_taps() {
    let d = TestDaemon::with(
        "sockpath",
        Options {
            start: false,
            ..Options::default()
        },
    );
    // Longer than a Unix socket path may be (108 bytes): bind fails after
    // the network (bridge, TAP pool) is set up.
    let long = d.dir.path().join("r".repeat(120));
    let text = std::fs::read_to_string(&d.config).unwrap();
    let run = format!("runtime_dir = \"{}\"", d.dir.path().join("run").display());
    assert!(text.contains(&run));
    std::fs::write(
        &d.config,
        text.replace(&run, &format!("runtime_dir = \"{}\"", long.display())),
    )
    .unwrap();

    let out = std::process::Command::new(common::hangar_bin())
        .args(["daemon", "--config"])
        .arg(&d.config)
        .output()
        .unwrap();

    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot bind API socket"), "{err}");
    assert_eq!(d.taps(), Vec::<String>::new(), "TAPs left behind");
}

#[test]
#[ignore = "needs root: runs the daemon (network namespace, TAPs, socket ownership)"]
fn second_daemon_on_same_runtime_dir_is_refused() {
    let d = TestDaemon::start("single");
    let out = std::process::Command::new(common::hangar_bin())
        .args(["daemon", "--config"])
        .arg(&d.config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another hangar daemon"), "{err}");
    // The first daemon still answers.
    d.ok(&["vm", "ls"]);
}

#[test]
#[ignore = "needs root: runs the daemon (network namespace, TAPs, socket ownership)"]
fn unknown_config_key_is_an_error_naming_it() {
    let d = TestDaemon::with(
        "badkey",
        Options {
            extra_config: "colour = \"blue\"".into(),
            start: false,
            ..Default::default()
        },
    );
    let out = std::process::Command::new(common::hangar_bin())
        .args(["daemon", "--config"])
        .arg(&d.config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("colour"));
}

#[test]
#[ignore = "needs root: runs the daemon (network namespace, TAPs, socket ownership)"]
fn invalid_vm_name_is_rejected_and_nothing_is_created() {
    let d = TestDaemon::start("badname");
    for bad in [
        "Dev",
        "a_b",
        "x-",
        "toolong-toolong-toolong-toolong-toolong-toolong-toolong-toolong-x",
    ] {
        let err = d.fails(&["vm", "create", bad]);
        assert!(err.contains("name"), "{bad}: {err}");
    }
    assert_eq!(d.json(&["op", "ls"]), serde_json::json!([]));
    d.assert_nothing_left(1);
}

#[test]
#[ignore = "needs root: runs the daemon (network namespace, TAPs, socket ownership)"]
fn bad_cpu_memory_and_disk_values_are_rejected() {
    let d = TestDaemon::start("badvals");
    assert!(d
        .fails(&["vm", "create", "x", "--cpus", "0"])
        .contains("cpus"));
    assert!(d
        .fails(&["vm", "create", "x", "--cpus", "99"])
        .contains("cpus"));
    assert!(d
        .fails(&["vm", "create", "x", "--memory", "16"])
        .contains("memory"));
    assert!(d
        .fails(&["vm", "create", "x", "--memory", "lots"])
        .contains("memory"));
    assert!(d
        .fails(&["vm", "create", "x", "--disk-size", "12Q"])
        .contains("disk-size"));
    assert!(d
        .fails(&["vm", "create", "x", "--disk-size", "1M"])
        .contains("disk size"));
    assert_eq!(d.json(&["op", "ls"]), serde_json::json!([]));
    d.assert_nothing_left(1);
}

#[test]
#[ignore = "needs root: runs the daemon (network namespace, TAPs, socket ownership)"]
fn unknown_image_is_not_found_with_a_hint() {
    let d = TestDaemon::start("noimg");
    let err = d.fails(&["vm", "create", "x", "--image", "nosuch"]);
    assert!(err.contains("no image named \"nosuch\""), "{err}");
    assert!(err.contains("hangar image"), "{err}");
    d.assert_nothing_left(1);
}

#[test]
#[ignore = "needs root: runs the daemon (network namespace, TAPs, socket ownership)"]
fn unknown_vm_is_not_found_for_every_verb() {
    let d = TestDaemon::start("novm");
    for args in [
        vec!["vm", "show", "ghost"],
        vec!["vm", "stop", "ghost"],
        vec!["vm", "start", "ghost"],
        vec!["vm", "restart", "ghost"],
        vec!["vm", "rm", "ghost"],
    ] {
        let err = d.fails(&args);
        assert!(err.contains("no VM named \"ghost\""), "{args:?}: {err}");
    }
    let out = d.hangar(&["exec", "ghost", "--", "true"]);
    assert_eq!(out.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no VM named"));
}

#[test]
#[ignore = "needs root: runs the daemon (network namespace, TAPs, socket ownership)"]
fn missing_vmm_binary_fails_create_with_the_fix() {
    let d = TestDaemon::with(
        "novmm",
        Options {
            vmm_extra: "qemu = \"/nonexistent/qemu-system-x86_64\"".into(),
            ..Default::default()
        },
    );
    let err = d.fails(&["vm", "create", "x"]);
    assert!(err.contains("/nonexistent/qemu-system-x86_64"), "{err}");
    assert!(err.contains("apt-get install"), "{err}");
    d.assert_nothing_left(1);
}

#[test]
#[ignore = "needs root: runs the daemon (network namespace, TAPs, socket ownership)"]
fn api_errors_are_json_with_a_stable_kind_and_status() {
    let d = TestDaemon::start("rawhttp");
    let resp = raw_http(
        &d,
        "GET /v1/vms/ghost HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
    assert!(resp.contains(r#""kind":"not_found""#), "{resp}");

    let body = r#"{"name":"x","bogus":1}"#;
    let resp = raw_http(
        &d,
        &format!(
            "POST /v1/vms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(resp.contains(r#""kind":"invalid""#), "{resp}");
    assert!(resp.contains("bogus"), "{resp}");

    let resp = raw_http(
        &d,
        "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
}

#[test]
#[ignore = "needs root: runs the daemon (network namespace, TAPs, socket ownership)"]
fn unknown_operation_is_not_found_and_cannot_be_cancelled() {
    let d = TestDaemon::start("noop");
    assert!(d
        .fails(&["op", "show", "op-000000000000"])
        .contains("no operation"));
    assert!(d
        .fails(&["op", "cancel", "op-000000000000"])
        .contains("no operation"));
}

#[test]
fn cli_without_daemon_says_how_to_start_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::hangar_bin())
        .arg("--socket")
        .arg(dir.path().join("none.sock"))
        .args(["vm", "ls"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hangar daemon"), "{err}");
}

#[test]
#[ignore = "needs root: runs the daemon (network namespace, TAPs, socket ownership)"]
fn forced_kvm_without_a_usable_device_fails_create_with_the_fix() {
    let d = TestDaemon::with(
        "nokvm",
        Options {
            accel: "kvm",
            vmm_extra: "kvm_device = \"/nonexistent/kvm\"".into(),
            ..Default::default()
        },
    );
    let err = d.fails(&["vm", "create", "x"]);
    assert!(err.contains("KVM is not usable"), "{err}");
    assert!(err.contains("/nonexistent/kvm"), "{err}");
    assert!(err.contains("accel = \"tcg\""), "{err}");
    d.assert_nothing_left(1);
}

/// The daemon drives the Firecracker driver end to end against a stand-in
/// that serves Firecracker's API (no guest can boot here): the create
/// configures the VMM, times out waiting for SSH, and undoes everything.
#[test]
#[ignore = "needs root: runs the daemon (network namespace, TAPs, socket ownership)"]
fn firecracker_create_that_never_answers_ssh_cleans_up() {
    let fake = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../hangar-vmm/tests/fixtures/fake-firecracker.py");
    let mut d = TestDaemon::with(
        "fcfake",
        Options {
            start: false,
            boot_timeout_secs: 2,
            vmm_extra: format!(
                "firecracker = \"{}\"",
                fake.canonicalize().unwrap().display()
            ),
            ..Default::default()
        },
    );
    // The driver line in the template says qemu; this daemon overrides it.
    let cfg = std::fs::read_to_string(&d.config)
        .unwrap()
        .replace("driver = \"qemu\"", "driver = \"firecracker\"");
    std::fs::write(&d.config, cfg).unwrap();
    d.spawn();
    let info: serde_json::Value = serde_json::from_str(&raw_http_body(
        &d,
        "GET /v1/info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ))
    .unwrap();
    assert_eq!(info["driver"], "firecracker", "{info}");

    let err = d.fails(&["vm", "create", "fc"]);
    assert!(err.contains("did not answer SSH"), "{err}");
    d.assert_nothing_left(1);
}

fn raw_http_body(d: &TestDaemon, request: &str) -> String {
    let resp = raw_http(d, request);
    resp.split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

#[test]
#[ignore = "needs root: runs the daemon (network namespace, TAPs, socket ownership)"]
fn daemon_refuses_to_run_without_root_and_says_so() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir = \"{0}/state\"\nruntime_dir = \"{0}/run\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    // A copy the unprivileged user can reach wherever the checkout lives.
    let bin = dir.path().join("hangar");
    std::fs::copy(common::hangar_bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(&bin)
        .args(["daemon", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("must run as root"), "{err}");
    assert!(!dir.path().join("state").exists(), "nothing may be created");
}
