//! End-to-end tests: real guests booted by the qemu driver (TCG) with their
//! network inside a namespace each test creates. The default image is built
//! on first use and cached by recipe in /var/cache/hangar/images.
//! Run one at a time (`--test-threads=1`): each boots real VMs on 2 cores.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Options, TestDaemon, TmpfsMount, Tmux};

#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn lifecycle_create_exec_stop_start_exec_rm() {
    let _serial = common::serial();
    let d = TestDaemon::start("life");
    let t = Instant::now();
    d.ok(&["vm", "create", "dev"]);
    eprintln!("create took {:?}", t.elapsed());

    let vm = d.json(&["vm", "show", "dev"]);
    assert_eq!(vm["state"], "running");
    assert_eq!(vm["driver"], "qemu");

    let out = d.exec("dev", &["cat", "/etc/os-release"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("bookworm"));

    let out = d.exec("dev", &["sh", "-c", "echo to-out; echo to-err >&2; exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "to-out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "to-err\n");

    let out = d.exec("dev", &["hostname"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "dev");
    let console = d.ok(&["vm", "logs", "dev"]);
    // The guest agent is PID 1 and the SSH server (issue 9).
    assert!(
        console.contains("hangar-agent: ready, ssh server started"),
        "{console}"
    );
    let tail = d.ok(&["vm", "logs", "dev", "--tail-bytes", "10"]);
    assert!(tail.len() <= 10, "{tail}");
    // `vm logs -f` prints what the console writes after it started. It
    // starts with the console's last byte: seeing that byte printed is the
    // sign that it has attached, so the marker is written only then.
    let mut follower = std::process::Command::new(common::hangar_bin())
        .arg("--config")
        .arg(&d.config)
        .args(["vm", "logs", "-f", "dev", "--tail-bytes", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = follower.stdout.take().unwrap();
    // The reader sends everything seen so far after each read.
    let (seen_tx, seen_rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&seen).into_owned();
            let done = text.contains("follow-marker-42");
            if seen_tx.send(text).is_err() || done {
                break;
            }
        }
    });
    let mut followed = seen_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("`vm logs -f --tail-bytes 1` printed nothing within 20s");
    assert!(d
        .exec(
            "dev",
            &["sh", "-c", "echo follow-marker-$((6*7)) > /dev/ttyS0"]
        )
        .status
        .success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !followed.contains("follow-marker-42") {
        match seen_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(text) => followed = text,
            Err(_) => break,
        }
    }
    follower.kill().unwrap();
    follower.wait().unwrap();
    reader.join().unwrap();
    assert!(followed.contains("follow-marker-42"), "{followed:?}");
    assert!(
        !followed.contains("sshd"),
        "--tail-bytes 1 starts at the last byte: {followed:?}"
    );

    // Data written before a stop is there after the next start.
    assert!(d
        .exec("dev", &["sh", "-c", "echo kept > /root/marker"])
        .status
        .success());
    d.ok(&["vm", "stop", "dev"]);
    assert_eq!(d.json(&["vm", "show", "dev"])["state"], "stopped");
    assert_eq!(
        d.vmm_pids(),
        Vec::<i32>::new(),
        "VMM still running after stop"
    );
    let err = d.fails(&["exec", "dev", "--", "true"]);
    assert!(err.contains("start it"), "{err}");

    d.ok(&["vm", "start", "dev"]);
    let out = d.exec("dev", &["cat", "/root/marker"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "kept\n");

    d.ok(&["vm", "restart", "dev"]);
    assert!(d.exec("dev", &["true"]).status.success());

    // The image is in use: removal is refused.
    let err = d.fails(&["image", "rm", "debian-12"]);
    assert!(err.contains("used by"), "{err}");
    // A running VM is not removed without --force.
    let err = d.fails(&["vm", "rm", "dev"]);
    assert!(err.contains("--force"), "{err}");
    // A duplicate name is a conflict and changes nothing.
    let err = d.fails(&["vm", "create", "dev"]);
    assert!(err.contains("already exists"), "{err}");

    d.ok(&["vm", "stop", "dev"]);
    d.ok(&["vm", "rm", "dev"]);
    d.assert_nothing_left(1);
    assert_eq!(d.snapshot_files().len(), 1, "the pull saved one");
    d.ok(&["image", "rm", "debian-12"]);
    assert_eq!(d.json(&["image", "ls"]), serde_json::json!([]));
    assert_eq!(
        d.snapshot_files(),
        Vec::<std::path::PathBuf>::new(),
        "image rm removes its boot snapshots"
    );
}

#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn cancel_during_create_leaves_nothing() {
    let _serial = common::serial();
    let d = TestDaemon::start("cancel");
    let op = d
        .ok(&["vm", "create", "doomed", "--no-wait"])
        .trim()
        .to_string();
    // Cancel while it boots.
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let o = d.json(&["op", "show", &op]);
        let phase = o["progress"]["phase"].as_str().unwrap_or("").to_string();
        if phase == "boot" || phase == "snapshot" || phase == "wait-ssh" {
            break;
        }
        assert_eq!(o["state"], "running", "create ended before it booted: {o}");
        assert!(Instant::now() < deadline, "create never reached boot: {o}");
        std::thread::sleep(Duration::from_millis(100));
    }
    d.ok(&["op", "cancel", &op]);
    let o = d.json(&["op", "show", &op, "--wait"]);
    assert_eq!(o["state"], "cancelled", "{o}");
    d.assert_nothing_left(1);
    // The name is free again.
    d.ok(&["vm", "create", "doomed"]);
    d.ok(&["vm", "rm", "--force", "doomed"]);
    d.assert_nothing_left(1);
}

#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn daemon_restart_adopts_a_running_vm() {
    let _serial = common::serial();
    let mut d = TestDaemon::start("adopt");
    d.ok(&["vm", "create", "keep"]);
    let pid_before = d.json(&["vm", "show", "keep"])["pid"].clone();
    d.stop_daemon();
    assert_eq!(
        d.vmm_pids().len(),
        1,
        "the VM must keep running without the daemon"
    );
    d.spawn();
    let vm = d.json(&["vm", "show", "keep"]);
    assert_eq!(vm["state"], "running");
    assert_eq!(vm["pid"], pid_before);
    let out = d.exec("keep", &["echo", "still here"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "still here\n");

    // A VM whose process died while the daemon was down is shown stopped.
    d.stop_daemon();
    for pid in d.vmm_pids() {
        // SAFETY: the VMM was started by this test's daemon.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    common::wait_until("the killed VMM to be gone", Duration::from_secs(10), || {
        d.vmm_pids().is_empty()
    });
    d.spawn();
    assert_eq!(d.json(&["vm", "show", "keep"])["state"], "stopped");
    d.ok(&["vm", "rm", "keep"]);
    d.assert_nothing_left(1);
}

#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn boot_timeout_fails_with_the_serial_log_and_leaves_nothing() {
    let _serial = common::serial();
    let d = TestDaemon::with(
        "timeout",
        Options {
            boot_timeout_secs: 1,
            // A restore from a boot snapshot can reach the guest agent in
            // under a second: only cold boots are sure to time out.
            vmm_extra: "boot_snapshots = false".into(),
            ..Default::default()
        },
    );
    // Make sure the image exists first so the timeout hits the boot.
    d.ok(&["image", "pull", "debian-12"]);
    let err = d.fails(&["vm", "create", "slow"]);
    assert!(err.contains("did not answer SSH"), "{err}");
    // The console log outlives the failed VM and the error points at it.
    let logs = d.state_dir().join("logs");
    let kept: Vec<_> = std::fs::read_dir(&logs)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(err.contains(&kept[0].display().to_string()), "{err}");
    d.assert_nothing_left(1);
}

#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn ssh_is_an_interactive_terminal_that_follows_resizes() {
    let _serial = common::serial();
    let d = TestDaemon::start("ssh");
    d.ok(&["vm", "create", "term"]);
    let cmd = format!(
        "{} --config {} ssh term; echo hangar-ssh-exited-$?; sleep 60",
        common::hangar_bin().display(),
        d.config.display()
    );
    let t = Tmux::start(&cmd, 100, 30);
    t.wait_for("root@term", Duration::from_secs(30));
    t.keys(&["stty size; tty", "Enter"]);
    let s = t.wait_for("/dev/pts/", Duration::from_secs(20));
    assert!(s.contains("30 100"), "{s}");
    t.resize(120, 40);
    // The window change travels tmux → hangar → daemon → sshd → the guest's
    // pty; on a slow host a `stty size` typed right away can still see the
    // old size, so ask again (after the prompt is back) until it changes.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        t.keys(&["clear; stty size", "Enter"]);
        // After `clear`: the size on the first line, the next prompt below.
        let s = t.wait_until("a size, then a prompt", Duration::from_secs(20), |s| {
            let mut lines = s.lines();
            let size = lines.next().unwrap_or("");
            size.split(' ').count() == 2
                && size.split(' ').all(|n| n.parse::<u16>().is_ok())
                && lines.next().is_some_and(|l| l.contains("root@term"))
        });
        if s.starts_with("40 120\n") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the resize never reached the guest:\n{s}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Ctrl-D goes only once the prompt is drawn (the loop above waited for
    // it): readline leaves canonical mode before drawing the prompt, and a
    // Ctrl-D that arrives earlier is eaten by the guest tty's line discipline.
    t.keys(&["C-d"]);
    t.wait_for("hangar-ssh-exited-0", Duration::from_secs(20));
    drop(t);
    d.ok(&["vm", "rm", "--force", "term"]);
    d.assert_nothing_left(1);
}

#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn disk_size_grows_the_guest_filesystem() {
    let _serial = common::serial();
    let d = TestDaemon::start("grow");
    d.ok(&[
        "vm",
        "create",
        "big",
        "--disk-size",
        "5G",
        "--cpus",
        "1",
        "--memory",
        "384",
    ]);
    let vm = d.json(&["vm", "show", "big"]);
    assert_eq!(vm["disk_bytes"], 5u64 << 30);
    assert_eq!(vm["cpus"], 1);
    let out = d.exec(
        "big",
        &["sh", "-c", "df -k / | tail -1 | awk '{print $2}'; nproc"],
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut lines = text.lines();
    let kib: u64 = lines.next().unwrap().trim().parse().unwrap();
    assert!(kib > 4_500_000, "root fs is only {kib} KiB");
    assert_eq!(lines.next(), Some("1"));
    d.ok(&["vm", "rm", "--force", "big"]);
    d.assert_nothing_left(1);
}

#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn full_disk_fails_create_clearly_and_leaves_nothing() {
    let _serial = common::serial();
    // Room for the image copy (~0.5 GB allocated) but not for a VM disk.
    let fs = TmpfsMount::new("800M");
    let d = TestDaemon::with(
        "full",
        Options {
            state_dir: Some(fs.dir.path().join("state")),
            ..Default::default()
        },
    );
    d.ok(&["image", "pull", "debian-12"]);
    let err = d.fails(&["vm", "create", "nospace"]);
    assert!(err.to_lowercase().contains("space"), "{err}");
    d.assert_nothing_left(1);
    drop(d);
}

#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn poweroff_inside_the_guest_is_noticed_and_the_vm_starts_again() {
    let _serial = common::serial();
    let d = TestDaemon::start("selfstop");
    d.ok(&["vm", "create", "quitter"]);
    // The command may or may not see its connection end; only the effect counts.
    let _ = d.exec(
        "quitter",
        &["sh", "-c", "sync; (sleep 0.2; poweroff) >/dev/null 2>&1 &"],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let vm = d.json(&["vm", "show", "quitter"]);
        if vm["state"] == "stopped" {
            assert_eq!(vm["pid"], serde_json::Value::Null, "{vm}");
            break;
        }
        assert!(Instant::now() < deadline, "VM never shown stopped: {vm}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(d.vmm_pids(), Vec::<i32>::new());
    d.ok(&["vm", "start", "quitter"]);
    assert!(d.exec("quitter", &["true"]).status.success());
    d.ok(&["vm", "rm", "--force", "quitter"]);
    d.assert_nothing_left(1);
}

#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn ctrl_c_during_create_cancels_it_and_leaves_nothing() {
    let _serial = common::serial();
    let d = TestDaemon::start("ctrlc");
    let child = std::process::Command::new(common::hangar_bin())
        .arg("--config")
        .arg(&d.config)
        .args(["vm", "create", "interrupted"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let ops = d.json(&["op", "ls"]);
        let phase = ops[0]["progress"]["phase"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if phase == "boot" || phase == "snapshot" || phase == "wait-ssh" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "create never reached boot: {ops}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: signalling the CLI process this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cancelling"), "{err}");
    let ops = d.json(&["op", "ls"]);
    assert_eq!(ops[0]["state"], "cancelled", "{ops}");
    d.assert_nothing_left(1);
}

#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn registered_image_boots_and_bad_registrations_change_nothing() {
    let _serial = common::serial();
    let d = TestDaemon::start("register");
    d.ok(&["image", "pull", "debian-12"]);
    let images = d.json(&["image", "ls"]);
    let digest = images[0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let dir = d.state_dir().join("images").join(&digest);
    let (kernel, initrd, rootfs) = (
        dir.join("vmlinux"),
        dir.join("initrd.img"),
        dir.join("rootfs.ext4"),
    );
    let s = |p: &std::path::Path| p.display().to_string();

    // Not ext4: refused, nothing stored.
    let junk = d.dir.path().join("junk.img");
    std::fs::write(&junk, vec![0u8; 1 << 20]).unwrap();
    let err = d.fails(&[
        "image",
        "register",
        "junk",
        "--kernel",
        &s(&kernel),
        "--rootfs",
        &s(&junk),
    ]);
    assert!(err.contains("ext4"), "{err}");
    // Missing file: refused.
    let err = d.fails(&[
        "image",
        "register",
        "ghost",
        "--kernel",
        "/nonexistent/vmlinux",
        "--rootfs",
        &s(&rootfs),
    ]);
    assert!(err.contains("does not exist"), "{err}");
    // Bad name: refused.
    let err = d.fails(&[
        "image",
        "register",
        "Bad_Name",
        "--kernel",
        &s(&kernel),
        "--rootfs",
        &s(&rootfs),
    ]);
    assert!(err.contains("name"), "{err}");
    assert_eq!(d.json(&["image", "ls"]).as_array().unwrap().len(), 1);

    d.ok(&[
        "image",
        "register",
        "mine",
        "--kernel",
        &s(&kernel),
        "--initrd",
        &s(&initrd),
        "--rootfs",
        &s(&rootfs),
    ]);
    let err = d.fails(&[
        "image",
        "register",
        "mine",
        "--kernel",
        &s(&kernel),
        "--rootfs",
        &s(&rootfs),
    ]);
    assert!(err.contains("already exists"), "{err}");

    d.ok(&["vm", "create", "custom", "--image", "mine"]);
    assert_eq!(d.json(&["vm", "show", "custom"])["image"], "mine");
    assert!(d.exec("custom", &["true"]).status.success());
    d.ok(&["vm", "rm", "--force", "custom"]);
    d.ok(&["image", "rm", "mine"]);
    d.assert_nothing_left(1);
}

#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn concurrent_creates_get_distinct_addresses_and_both_work() {
    let _serial = common::serial();
    // Guests reach each other below: that needs `vm_to_vm` (default off).
    let d = TestDaemon::with(
        "concurrent",
        Options {
            vm_to_vm: true,
            ..Options::default()
        },
    );
    d.ok(&["image", "pull", "debian-12"]);
    let op_a = d
        .ok(&["vm", "create", "alpha", "--no-wait", "--cpus", "1"])
        .trim()
        .to_string();
    let op_b = d
        .ok(&["vm", "create", "beta", "--no-wait", "--cpus", "1"])
        .trim()
        .to_string();
    for op in [&op_a, &op_b] {
        let o = d.json(&["op", "show", op, "--wait"]);
        assert_eq!(o["state"], "succeeded", "{o}");
    }
    let a = d.json(&["vm", "show", "alpha"]);
    let b = d.json(&["vm", "show", "beta"]);
    assert_ne!(a["ip"], b["ip"]);
    assert_ne!(a["mac"], b["mac"]);
    assert_ne!(a["tap"], b["tap"]);
    for (vm, info) in [("alpha", &a), ("beta", &b)] {
        let out = d.exec(
            vm,
            &["sh", "-c", "hostname; ip -4 -o addr show scope global"],
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(text.starts_with(vm), "{text}");
        assert!(text.contains(info["ip"].as_str().unwrap()), "{text}");
    }
    // Guests on the same bridge reach each other (vm_to_vm = true).
    let probe = format!(
        "timeout 10 bash -c 'head -c 7 < /dev/tcp/{}/22'",
        b["ip"].as_str().unwrap()
    );
    let out = d.exec("alpha", &["sh", "-c", &probe]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "SSH-2.0");
    assert!(
        out.status.success(),
        "alpha cannot reach beta's sshd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.ok(&["vm", "rm", "--force", "alpha"]);
    d.ok(&["vm", "rm", "--force", "beta"]);
    d.assert_nothing_left(1);
}

#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn daemon_crash_during_create_is_undone_by_the_next_daemon() {
    let _serial = common::serial();
    let mut d = TestDaemon::start("crash");
    d.ok(&["image", "pull", "debian-12"]);
    let op = d
        .ok(&["vm", "create", "orphan", "--no-wait"])
        .trim()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let o = d.json(&["op", "show", &op]);
        if o["progress"]["phase"] == "wait-ssh" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "create never reached wait-ssh: {o}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    d.crash_daemon();
    assert_eq!(d.vmm_pids().len(), 1, "the VMM outlives the crashed daemon");
    d.spawn();
    let o = d.json(&["op", "show", &op]);
    assert_eq!(o["state"], "failed", "{o}");
    assert!(
        o["error"]["message"]
            .as_str()
            .unwrap()
            .contains("restarted"),
        "{o}"
    );
    d.assert_nothing_left(1);
    // The name is free again.
    d.ok(&["vm", "create", "orphan"]);
    d.ok(&["vm", "rm", "--force", "orphan"]);
    d.assert_nothing_left(1);
}

#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn a_killed_exec_client_ends_its_terminal_command_in_the_guest() {
    let _serial = common::serial();
    let d = TestDaemon::start("execgone");
    d.ok(&["vm", "create", "ghostly"]);
    let mut child = std::process::Command::new(common::hangar_bin())
        .arg("--config")
        .arg(&d.config)
        .args(["exec", "-t", "ghostly", "--", "sleep", "4242"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let running = || {
        let out = d.exec("ghostly", &["sh", "-c", "pgrep -f '[s]leep 4242' || true"]);
        !String::from_utf8_lossy(&out.stdout).trim().is_empty()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !running() {
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(200));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while running() {
        assert!(
            Instant::now() < deadline,
            "the guest command outlived its client"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    d.ok(&["vm", "rm", "--force", "ghostly"]);
    d.assert_nothing_left(1);
}

/// A stand-in for "the internet": a second namespace joined to the
/// daemon's by a veth pair, with an HTTP server that answers with the
/// address the request came from.
struct FakeInternet {
    /// Removed (field drop) after `drop` has stopped the server in it.
    _ns: common::Netns,
    server: std::process::Child,
}

impl FakeInternet {
    const SERVER: &'static str = "198.51.100.1";
    const UPLINK: &'static str = "198.51.100.2";

    /// Links `host_ns` (its uplink gets [`Self::UPLINK`] and a default
    /// route) to a new namespace serving HTTP on [`Self::SERVER`]:8080.
    fn attach(host_ns: &str) -> FakeInternet {
        let ns = common::Netns::create("inet");
        let run = |args: &[&str]| {
            let st = std::process::Command::new("ip")
                .args(args)
                .status()
                .unwrap();
            assert!(st.success(), "ip {args:?} failed");
        };
        run(&[
            "-n", host_ns, "link", "add", "hgup", "type", "veth", "peer", "name", "hgdown",
            "netns", &ns.name,
        ]);
        run(&[
            "-n",
            host_ns,
            "addr",
            "add",
            "198.51.100.2/24",
            "dev",
            "hgup",
        ]);
        run(&["-n", host_ns, "link", "set", "hgup", "up"]);
        run(&[
            "-n",
            host_ns,
            "route",
            "add",
            "default",
            "via",
            Self::SERVER,
        ]);
        run(&[
            "-n",
            &ns.name,
            "addr",
            "add",
            "198.51.100.1/24",
            "dev",
            "hgdown",
        ]);
        run(&["-n", &ns.name, "link", "set", "hgdown", "up"]);
        run(&["-n", &ns.name, "link", "set", "lo", "up"]);
        let script = "import http.server as h\n\
            class H(h.BaseHTTPRequestHandler):\n\
            \x20   def do_GET(self):\n\
            \x20       b = self.client_address[0].encode()\n\
            \x20       self.send_response(200)\n\
            \x20       self.send_header('Content-Length', str(len(b)))\n\
            \x20       self.end_headers()\n\
            \x20       self.wfile.write(b)\n\
            h.HTTPServer(('198.51.100.1', 8080), H).serve_forever()\n";
        let server = std::process::Command::new("ip")
            .args(["netns", "exec", &ns.name, "python3", "-c", script])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        FakeInternet { _ns: ns, server }
    }
}

impl Drop for FakeInternet {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// Root-namespace mode (`netns = ""`, NAT on) for real, without touching
/// the host: the daemon runs inside a namespace the test made, so the
/// bridge, the `ip hangar` nft table and IP forwarding it sets up are that
/// namespace's. A guest reaches a server beyond the daemon's uplink, and
/// the server sees the uplink's address: the guest's traffic was
/// masqueraded. The guest's resolv.conf carries the daemon's DNS servers.
#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn root_namespace_mode_gives_guests_nat_to_the_outside() {
    let _serial = common::serial();
    // The image must be cached first: the daemon below has no route to a
    // Debian mirror.
    TestDaemon::start("natimg").ok(&["image", "pull", "debian-12"]);
    let d = TestDaemon::with(
        "nat",
        Options {
            daemon_in_netns: true,
            start: false,
            ..Options::default()
        },
    );
    let inet = FakeInternet::attach(&d.netns.name);
    let mut d = d;
    d.spawn();

    let ns_cmd = |args: &[&str]| {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &d.netns.name])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        ns_cmd(&["cat", "/proc/sys/net/ipv4/ip_forward"]).trim(),
        "1"
    );
    let table = ns_cmd(&["nft", "list", "table", "ip", "hangar"]);
    assert!(table.contains("masquerade"), "{table}");

    d.ok(&["vm", "create", "out"]);
    let out = d.exec(
        "out",
        &[
            "curl",
            "-s",
            "--max-time",
            "20",
            "http://198.51.100.1:8080/",
        ],
    );
    assert!(
        out.status.success(),
        "curl from the guest failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        FakeInternet::UPLINK,
        "the server must see the masqueraded uplink address"
    );

    // DNS: the daemon's own upstream servers (loopback stubs skipped).
    let host_dns: Vec<String> = std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .map(|s| s.trim().to_string())
        .filter(|s| {
            s.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|a| !a.is_loopback())
        })
        .collect();
    let guest_resolv =
        String::from_utf8_lossy(&d.exec("out", &["cat", "/etc/resolv.conf"]).stdout).into_owned();
    for ns in &host_dns {
        assert!(
            guest_resolv.contains(ns),
            "{ns} missing in:\n{guest_resolv}"
        );
    }

    d.ok(&["vm", "rm", "--force", "out"]);
    d.assert_nothing_left(1);
    drop(d);
    drop(inet);
}

/// What a guest says about itself: MAC, hostname, boot id, wall clock, and
/// whether the RNG seed of its config drive is still lying around.
fn guest_facts(d: &TestDaemon, vm: &str) -> Vec<String> {
    let out = d.exec(
        vm,
        &[
            "sh",
            "-c",
            "cat /sys/class/net/eth0/address; hostname; cat /proc/sys/kernel/random/boot_id; \
             date +%s; test -e /run/hangar/random-seed && echo seed-left || echo seed-used",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn boot_snapshots_are_saved_once_and_restored_vms_are_themselves() {
    let _serial = common::serial();
    // A restored guest must answer another guest under its own (new) MAC
    // and IP, which the per-TAP anti-spoofing rules check: that needs
    // `vm_to_vm` (default off).
    let d = TestDaemon::with(
        "snapshot",
        Options {
            vm_to_vm: true,
            ..Options::default()
        },
    );
    // The pull saves the snapshot of the default shape, before any VM.
    d.ok(&["image", "pull", "debian-12"]);
    let files = d.snapshot_files();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].to_string_lossy().ends_with(".state"), "{files:?}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&files[0]).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "guest memory is root's only");
    assert!(d.log().contains("boot snapshot prepared"), "{}", d.log());
    assert_eq!(d.vmm_pids(), Vec::<i32>::new(), "the snapshot VM is gone");

    d.ok(&["vm", "create", "first"]);
    d.ok(&["vm", "create", "second"]);
    assert_eq!(d.snapshot_files(), files, "saved once, then only read");
    // Another shape boots its kernel and saves its own snapshot.
    d.ok(&["vm", "create", "third", "--cpus", "1"]);
    assert!(!d
        .ok(&["vm", "logs", "third"])
        .contains("hangar: resuming boot snapshot"));
    assert_eq!(d.snapshot_files().len(), 2);

    let mut boot_ids = Vec::new();
    for vm in ["first", "second", "third"] {
        let console = d.ok(&["vm", "logs", vm]);
        if vm != "third" {
            assert!(
                console.starts_with("hangar: resuming boot snapshot"),
                "{vm}: {console}"
            );
        }
        // Without the reseed, VMs restored from one snapshot start sshd
        // with the snapshot's RNG state.
        assert!(
            console.contains("kernel RNG reseeded from the config drive"),
            "{vm}: {console}"
        );
        let facts = guest_facts(&d, vm);
        let info = d.json(&["vm", "show", vm]);
        assert_eq!(facts[0], info["mac"].as_str().unwrap(), "{vm}: MAC");
        assert_eq!(facts[1], vm, "hostname");
        let guest_clock: i64 = facts[3].parse().unwrap();
        let host_clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(
            (host_clock - guest_clock).abs() <= 5,
            "{vm}: guest clock {guest_clock}, host {host_clock}"
        );
        assert_eq!(facts[4], "seed-used", "{vm}");
        boot_ids.push(facts[2].clone());
    }
    boot_ids.sort();
    boot_ids.dedup();
    assert_eq!(boot_ids.len(), 3, "each VM draws its own randomness");

    // A restored guest with its new MAC is reachable by another one.
    let probe = format!(
        "timeout 10 bash -c 'head -c 7 < /dev/tcp/{}/22'",
        d.json(&["vm", "show", "second"])["ip"].as_str().unwrap()
    );
    let out = d.exec("first", &["sh", "-c", &probe]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "SSH-2.0", "{out:?}");

    // Later boots of a VM resume its shape's snapshot, and see their own disk.
    d.exec("third", &["sh", "-c", "echo kept > /root/mark; sync"]);
    d.ok(&["vm", "stop", "third"]);
    d.ok(&["vm", "start", "third"]);
    assert!(d
        .ok(&["vm", "logs", "third"])
        .starts_with("hangar: resuming boot snapshot"));
    let out = d.exec("third", &["sh", "-c", "cat /root/mark; nproc"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "kept\n1\n");

    for vm in ["first", "second", "third"] {
        d.ok(&["vm", "rm", "--force", vm]);
    }
    d.assert_nothing_left(1);
}

#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn daemon_crash_while_a_pull_saves_the_boot_snapshot_is_cleaned_up_by_the_next_daemon() {
    let _serial = common::serial();
    let mut d = TestDaemon::start("prewarmcrash");
    let op = d
        .ok(&["image", "pull", "debian-12", "--no-wait"])
        .trim()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let o = d.json(&["op", "show", &op]);
        if o["progress"]["phase"] == "boot-snapshot" && d.vmm_pids().len() == 1 {
            break;
        }
        assert_eq!(o["state"], "running", "pull ended before its snapshot: {o}");
        assert!(
            Instant::now() < deadline,
            "pull never saved a snapshot: {o}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    d.crash_daemon();
    d.spawn();
    assert_eq!(d.vmm_pids(), Vec::<i32>::new(), "the snapshot VM is killed");
    assert_eq!(
        d.snapshot_files(),
        Vec::<std::path::PathBuf>::new(),
        "its files are removed"
    );
    d.ok(&["vm", "create", "after"]);
    d.ok(&["vm", "rm", "--force", "after"]);
    d.assert_nothing_left(1);
}

#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn a_snapshot_that_does_not_restore_is_dropped_and_the_kernel_boots() {
    let _serial = common::serial();
    let d = TestDaemon::start("badsnap");
    d.ok(&["vm", "create", "first"]);
    let files = d.snapshot_files();
    assert_eq!(files.len(), 1, "{files:?}");
    std::fs::write(&files[0], b"not a QEMU migration stream").unwrap();

    d.ok(&["vm", "create", "second"]);
    let out = d.exec("second", &["hostname"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "second\n");
    assert!(
        d.log().contains("boot snapshot does not restore"),
        "{}",
        common::tail(&d.log(), 20)
    );
    assert_eq!(d.snapshot_files(), Vec::<std::path::PathBuf>::new());

    // The next boot saves a good one again.
    d.ok(&["vm", "create", "third"]);
    assert_eq!(d.snapshot_files().len(), 1);
    for vm in ["first", "second", "third"] {
        d.ok(&["vm", "rm", "--force", vm]);
    }
    d.assert_nothing_left(1);
}

#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn boot_snapshots_turned_off_boot_the_kernel_every_time() {
    let _serial = common::serial();
    let d = TestDaemon::with(
        "nosnap",
        Options {
            vmm_extra: "boot_snapshots = false".into(),
            ..Default::default()
        },
    );
    d.ok(&["vm", "create", "plain"]);
    let console = d.ok(&["vm", "logs", "plain"]);
    assert!(!console.contains("snapshot point"), "{console}");
    assert_eq!(d.snapshot_files(), Vec::<std::path::PathBuf>::new());
    d.ok(&["vm", "rm", "--force", "plain"]);
    d.assert_nothing_left(1);
}

#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn daemon_crash_while_a_boot_saves_its_snapshot_leaves_the_vm_stopped_and_startable() {
    let _serial = common::serial();
    let mut d = TestDaemon::start("snapcrash");
    d.ok(&["vm", "create", "vm1"]);
    d.ok(&["vm", "stop", "vm1"]);
    // Without a snapshot, the next start saves one.
    for f in d.snapshot_files() {
        std::fs::remove_file(f).unwrap();
    }
    let op = d
        .ok(&["vm", "start", "vm1", "--no-wait"])
        .trim()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let o = d.json(&["op", "show", &op]);
        if o["progress"]["phase"] == "snapshot" {
            break;
        }
        assert_eq!(
            o["state"], "running",
            "start ended before its snapshot: {o}"
        );
        assert!(
            Instant::now() < deadline,
            "start never saved a snapshot: {o}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    d.crash_daemon();
    d.spawn();
    let vm = d.json(&["vm", "show", "vm1"]);
    assert_eq!(vm["state"], "stopped", "{vm}");
    assert_eq!(d.vmm_pids(), Vec::<i32>::new(), "the waiting VMM is gone");
    d.ok(&["vm", "start", "vm1"]);
    let out = d.exec("vm1", &["hostname"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "vm1\n");
    d.ok(&["vm", "rm", "--force", "vm1"]);
    d.assert_nothing_left(1);
}

/// Runs one QMP command on a VM's socket; returns the `status` of its
/// reply (query-status) or the reply itself.
fn qmp(socket: &str, command: &str) -> String {
    let script = r#"
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile("rw")
f.readline()
for cmd in ("qmp_capabilities", sys.argv[2]):
    f.write(json.dumps({"execute": cmd}) + "\n")
    f.flush()
    while True:
        line = f.readline()
        if "return" in line or "error" in line:
            break
r = json.loads(line).get("return")
print(r["status"] if isinstance(r, dict) and "status" in r else json.dumps(r))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, socket, command])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn a_vm_a_crashed_boot_left_paused_is_resumed_by_the_next_daemon() {
    let _serial = common::serial();
    let mut d = TestDaemon::start("paused");
    d.ok(&["vm", "create", "vm1"]);
    let qmp_socket = d.json(&["vm", "show", "vm1"])["api_socket"]
        .as_str()
        .unwrap()
        .to_string();
    d.stop_daemon();
    // As a daemon that died between saving a boot snapshot and resuming
    // the VM leaves it: paused, its boot unfinished in the store.
    qmp(&qmp_socket, "stop");
    assert_eq!(qmp(&qmp_socket, "query-status"), "paused");
    let db = d.state_dir().join("state.db");
    let status = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg("UPDATE vms SET state = 'starting' WHERE name = 'vm1';")
        .status()
        .unwrap();
    assert!(status.success());

    d.spawn();
    assert_eq!(qmp(&qmp_socket, "query-status"), "running");
    let out = d.exec("vm1", &["hostname"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "vm1\n", "{out:?}");
    d.ok(&["vm", "rm", "--force", "vm1"]);
    d.assert_nothing_left(1);
}

/// Polls `op` until its phase is one of the boot phases (the VMM runs).
fn wait_until_booting(d: &TestDaemon, op: &str) {
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let o = d.json(&["op", "show", op]);
        let phase = o["progress"]["phase"].as_str().unwrap_or("").to_string();
        if phase == "boot" || phase == "snapshot" || phase == "wait-ssh" {
            return;
        }
        assert_eq!(
            o["state"], "running",
            "operation ended before it booted: {o}"
        );
        assert!(
            Instant::now() < deadline,
            "operation never reached boot: {o}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[ignore = "needs root (network namespaces, TAP devices) and qemu"]
fn rm_force_during_create_cancels_it_and_leaves_nothing() {
    let _serial = common::serial();
    let d = TestDaemon::start("rmcreate");
    let op = d
        .ok(&["vm", "create", "doomed", "--no-wait"])
        .trim()
        .to_string();
    wait_until_booting(&d, &op);

    let refused = d.fails(&["vm", "rm", "doomed"]);
    d.ok(&["vm", "rm", "--force", "doomed"]);

    assert!(refused.contains("busy"), "{refused}");
    let o = d.json(&["op", "show", &op]);
    assert_eq!(o["state"], "cancelled", "{o}");
    let gone = d.fails(&["vm", "show", "doomed"]);
    assert!(gone.contains("no VM named"), "{gone}");
    d.assert_nothing_left(1);
}

#[test]
#[ignore = "needs root (network namespaces, TAP devices) and qemu"]
fn rm_force_during_start_cancels_it_and_leaves_nothing() {
    let _serial = common::serial();
    let d = TestDaemon::start("rmstart");
    d.ok(&["vm", "create", "restarting"]);
    d.ok(&["vm", "stop", "restarting"]);
    let op = d
        .ok(&["vm", "start", "restarting", "--no-wait"])
        .trim()
        .to_string();
    wait_until_booting(&d, &op);

    let refused = d.fails(&["vm", "rm", "restarting"]);
    d.ok(&["vm", "rm", "--force", "restarting"]);

    assert!(refused.contains("busy"), "{refused}");
    let o = d.json(&["op", "show", &op]);
    assert_eq!(o["state"], "cancelled", "{o}");
    let gone = d.fails(&["vm", "show", "restarting"]);
    assert!(gone.contains("no VM named"), "{gone}");
    d.assert_nothing_left(1);
}
