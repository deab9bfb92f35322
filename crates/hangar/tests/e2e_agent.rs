//! End-to-end tests of Hangar's guest agent (issue 9) on real guests
//! (qemu driver, TCG, network inside a namespace per test): images with no
//! sshd, no bash, no coreutils, even no shell, boot and are reachable; a
//! stuck agent is reported clearly and the VM restarts.
//! Run one at a time: each boots real VMs on 2 cores.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::TestDaemon;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The default image's kernel and initrd (Hangar's initramfs), pulled by
/// the daemon: an image registered with them boots Hangar's initramfs,
/// which brings in the agent.
fn default_kernel_and_initrd(d: &TestDaemon) -> (PathBuf, PathBuf) {
    d.ok(&["image", "pull", "debian-12"]);
    let images = d.json(&["image", "ls"]);
    let digest = images
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "debian-12")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let dir = d.state_dir().join("images").join(digest);
    (dir.join("vmlinux"), dir.join("initrd.img"))
}

/// An ext4 rootfs (label `root`) made from `tree` with `mkfs.ext4 -d`.
fn ext4_from(tree: &Path, out: &Path) {
    let status = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "root", "-d"])
        .arg(tree)
        .arg(out)
        .arg("64M")
        .status()
        .expect("mkfs.ext4 (apt-get install e2fsprogs)");
    assert!(status.success(), "mkfs.ext4 failed");
}

fn write(path: &Path, body: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, body).unwrap();
}

fn register(d: &TestDaemon, name: &str, tree: &Path) {
    let (kernel, initrd) = default_kernel_and_initrd(d);
    let rootfs = d.dir.path().join(format!("{name}.ext4"));
    ext4_from(tree, &rootfs);
    let s = |p: &Path| p.display().to_string();
    d.ok(&[
        "image",
        "register",
        name,
        "--kernel",
        &s(&kernel),
        "--initrd",
        &s(&initrd),
        "--rootfs",
        &s(&rootfs),
    ]);
}

#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn an_image_with_only_busybox_boots_and_runs_commands_through_the_agent() {
    let _serial = common::serial();
    let d = TestDaemon::start("agent-bb");
    // busybox and its applet links, a passwd file, nothing else: no sshd,
    // no bash, no coreutils, no init.
    let tree = d.dir.path().join("bb-tree");
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    std::fs::copy(common::static_busybox(), tree.join("bin/busybox")).unwrap();
    for applet in ["sh", "cat", "id", "ls", "echo", "hostname", "uname", "env"] {
        std::os::unix::fs::symlink("busybox", tree.join("bin").join(applet)).unwrap();
    }
    write(
        &tree.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
    );
    std::fs::create_dir_all(tree.join("root")).unwrap();
    std::fs::create_dir_all(tree.join("home/app")).unwrap();
    std::os::unix::fs::chown(tree.join("home/app"), Some(1000), Some(1000)).unwrap();
    register(&d, "busybox", &tree);

    d.ok(&["vm", "create", "bb", "--image", "busybox"]);
    let out = d.exec("bb", &["id", "-u"]);
    assert_eq!(stdout(&out).trim(), "0", "{out:?}");
    let out = d.exec("bb", &["sh", "-c", "echo out; echo err >&2; exit 5"]);
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(stdout(&out), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    let out = d.exec("bb", &["hostname"]);
    assert_eq!(stdout(&out).trim(), "bb");
    // No sshd anywhere: the agent is what answers.
    assert!(!tree.join("usr/sbin/sshd").exists());
    let console = d.ok(&["vm", "logs", "bb"]);
    assert!(console.contains("hangar-agent: ready"), "{console}");
    // The environment reaches commands of an image without bash.
    let out = d.hangar(&["exec", "bb", "--env", "GREETING=hi there", "--", "env"]);
    assert!(stdout(&out).contains("GREETING=hi there"), "{out:?}");

    // --user: a user of the image's own /etc/passwd; an unknown one is a
    // clear error.
    let out = d.hangar(&[
        "exec",
        "--user",
        "app",
        "bb",
        "--",
        "sh",
        "-c",
        "id -u; echo $HOME; pwd",
    ]);
    assert_eq!(stdout(&out), "1000\n/home/app\n/home/app\n", "{out:?}");
    let err = d.fails(&["exec", "--user", "ghost", "bb", "--", "true"]);
    assert!(err.contains("no user \"ghost\""), "{err}");

    // hangar cp, both ways, through the agent's sftp.
    let local = d.dir.path().join("note.txt");
    std::fs::write(&local, "from the host\n").unwrap();
    d.ok(&["cp", &local.display().to_string(), "bb:/root/"]);
    assert_eq!(
        stdout(&d.exec("bb", &["cat", "/root/note.txt"])),
        "from the host\n"
    );
    let down = d.dir.path().join("down");
    std::fs::create_dir_all(&down).unwrap();
    d.ok(&["cp", "bb:/etc/passwd", &down.display().to_string()]);
    assert!(std::fs::read_to_string(down.join("passwd"))
        .unwrap()
        .starts_with("root:x:0:0:root:/root:/bin/sh\n"));
    let err = d.fails(&["cp", "bb:/no/such/file", &down.display().to_string()]);
    assert!(err.contains("/no/such/file"), "{err}");
    let err = d.fails(&["cp", "bb:/etc", &down.display().to_string()]);
    assert!(
        err.contains("is a directory") && err.contains("hangar cp -r"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(&down)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("passwd")],
        "a failed copy left files"
    );

    // Stop powers the guest off through the agent, start boots it again.
    d.ok(&["vm", "stop", "bb"]);
    d.ok(&["vm", "start", "bb"]);
    assert!(d.exec("bb", &["true"]).status.success());
    d.ok(&["vm", "rm", "--force", "bb"]);
    d.ok(&["image", "rm", "busybox"]);
}

#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn an_image_without_a_shell_boots_and_runs_programs_directly() {
    let _serial = common::serial();
    let d = TestDaemon::start("agent-noshell");
    // Distroless-like: one static program (busybox, but no applet links
    // and no /bin/sh), a passwd whose shell is absent.
    let tree = d.dir.path().join("ds-tree");
    std::fs::create_dir_all(tree.join("app")).unwrap();
    std::fs::copy(common::static_busybox(), tree.join("app/busybox")).unwrap();
    write(&tree.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n");
    register(&d, "distroless", &tree);

    d.ok(&["vm", "create", "ds", "--image", "distroless"]);
    let out = d.exec("ds", &["/app/busybox", "echo", "a b", "c"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "a b c\n");
    // Files move through sftp without a shell or cat in the image.
    let local = d.dir.path().join("blob.bin");
    let blob: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&local, &blob).unwrap();
    d.ok(&["cp", &local.display().to_string(), "ds:/app/blob.bin"]);
    let back = d.dir.path().join("back.bin");
    d.ok(&["cp", "ds:/app/blob.bin", &back.display().to_string()]);
    assert_eq!(std::fs::read(&back).unwrap(), blob);
    // What needs a shell fails clearly, with a shell's status.
    let out = d.exec("ds", &["sh", "-c", "true"]);
    assert_eq!(out.status.code(), Some(127), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sh: command not found"),
        "{out:?}"
    );
    d.ok(&["vm", "rm", "--force", "ds"]);
    d.ok(&["image", "rm", "distroless"]);
}

#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn a_killed_agent_comes_back_and_a_stuck_one_is_reported_and_restart_heals_it() {
    let _serial = common::serial();
    let d = TestDaemon::start("agent-kill");
    d.ok(&["vm", "create", "k"]);
    let server_pid = || {
        let out = d.exec("k",
            &[
                "sh",
                "-c",
                "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null | grep -q '^/run/hangar-agent serve' && echo ${p#/proc/}; done",
            ],
        );
        stdout(&out).trim().to_string()
    };
    let first = server_pid();
    assert!(!first.is_empty(), "no agent server process found");

    // Killed: PID 1 starts a new server; the daemon reconnects.
    let _ = d.exec(
        "k",
        &[
            "sh",
            "-c",
            &format!("(sleep 0.5; kill -9 {first}) >/dev/null 2>&1 &"),
        ],
    );
    common::wait_until(
        "a new agent server answers",
        Duration::from_secs(60),
        || {
            let p = server_pid();
            !p.is_empty() && p != first
        },
    );

    // Stopped (wedged): the next exec says so within its limit.
    let pid = server_pid();
    let _ = d.exec(
        "k",
        &[
            "sh",
            "-c",
            &format!("(sleep 0.5; kill -STOP {pid}) >/dev/null 2>&1 &"),
        ],
    );
    std::thread::sleep(Duration::from_secs(2));
    let t = Instant::now();
    let out = d.exec("k", &["true"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("did not answer") && err.contains("hangar vm restart"),
        "{err}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(40),
        "took {:?}",
        t.elapsed()
    );

    // The VM is not wedged: restart brings it back.
    d.ok(&["vm", "restart", "k"]);
    assert!(d.exec("k", &["true"]).status.success());
    d.ok(&["vm", "rm", "--force", "k"]);
    d.assert_nothing_left(1);
}

/// The user's own OpenSSH against the agent through `hangar proxy`: ssh,
/// scp -r, sftp, a local port forward, and agent forwarding (git over ssh
/// from the guest with a key that exists only in the host's ssh-agent).
#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn openssh_reaches_the_agent_through_hangar_proxy() {
    let _serial = common::serial();
    let d = TestDaemon::start("agent-openssh");
    let home = d.dir.path().join("home");
    let ssh_dir = home.join(".ssh");
    std::fs::create_dir_all(&ssh_dir).unwrap();
    let key = ssh_dir.join("id_ed25519");
    run_ok(
        std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", ""])
            .arg("-f")
            .arg(&key),
    );
    // `vm create` reads the user's ~/.ssh/*.pub (as the user) into the VM.
    let out = std::process::Command::new(common::hangar_bin())
        .arg("--config")
        .arg(&d.config)
        .args(["vm", "create", "dev"])
        .env("HOME", &home)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let vm = d.json(&["vm", "show", "dev"]);
    let host_key = vm["host_key"].as_str().unwrap();
    assert!(host_key.starts_with("ssh-ed25519 "), "{vm}");
    let known_hosts = d.dir.path().join("known_hosts");
    std::fs::write(&known_hosts, format!("dev {host_key}\n")).unwrap();
    let config = d.dir.path().join("ssh_config");
    std::fs::write(
        &config,
        format!(
            "Host dev\n  User root\n  ProxyCommand {} --config {} proxy %h\n  IdentityFile {}\n  \
             UserKnownHostsFile {}\n  StrictHostKeyChecking yes\n  BatchMode yes\n",
            common::hangar_bin().display(),
            d.config.display(),
            key.display(),
            known_hosts.display()
        ),
    )
    .unwrap();
    let ssh = |args: &[&str]| {
        let mut c = std::process::Command::new("ssh");
        c.arg("-F")
            .arg(&config)
            .args(args)
            .stdin(std::process::Stdio::null());
        c
    };

    // ssh: a command, its output and its status; the host key was pinned.
    let out = ssh(&["dev", "echo hi; id -u; exit 3"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(stdout(&out), "hi\n0\n");

    // scp -r up and back.
    let up = d.dir.path().join("up");
    write(&up.join("a.txt"), "alpha\n");
    write(&up.join("sub/b.txt"), "beta\n");
    let scp = |from: &str, to: &str| {
        run_ok(
            std::process::Command::new("scp")
                .arg("-F")
                .arg(&config)
                .args(["-r", "-q", from, to]),
        );
    };
    scp(&up.display().to_string(), "dev:/root/up");
    assert_eq!(
        stdout(&d.exec("dev", &["cat", "/root/up/sub/b.txt"])),
        "beta\n"
    );
    let down = d.dir.path().join("down");
    scp("dev:/root/up", &down.display().to_string());
    assert_eq!(
        std::fs::read_to_string(down.join("a.txt")).unwrap(),
        "alpha\n"
    );
    assert_eq!(
        std::fs::read_to_string(down.join("sub/b.txt")).unwrap(),
        "beta\n"
    );

    // sftp in batch mode.
    let batch = d.dir.path().join("batch");
    std::fs::write(
        &batch,
        format!(
            "mkdir /root/s\nput {} /root/s/x\nrename /root/s/x /root/s/y\nls /root/s\n",
            up.join("a.txt").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new("sftp")
        .arg("-F")
        .arg(&config)
        .arg("-b")
        .arg(&batch)
        .arg("dev")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&d.exec("dev", &["cat", "/root/s/y"])), "alpha\n");

    // ssh -L: a web server inside the guest, reached from the host.
    let out = d.exec("dev",
        &["sh", "-c", "mkdir -p /srv/www && echo served > /srv/www/index.html && busybox httpd -p 127.0.0.1:8080 -h /srv/www"],
    );
    assert!(out.status.success(), "{out:?}");
    let local_port = free_port();
    let mut forward = ssh(&[
        "-N",
        "-L",
        &format!("127.0.0.1:{local_port}:127.0.0.1:8080"),
        "dev",
    ])
    .spawn()
    .unwrap();
    let mut body = String::new();
    let got = common::poll_until(Duration::from_secs(20), || {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", local_port)) else {
            return false;
        };
        let _ = s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n");
        body.clear();
        let _ = s.read_to_string(&mut body);
        body.contains("served")
    });
    let _ = forward.kill();
    let _ = forward.wait();
    assert!(got, "no answer through the forward: {body:?}");

    // ssh -A: the key lives only in the host's agent; git in the guest
    // uses it to reach a git server over ssh (the guest's own agent).
    let agent_dir = d.dir.path().join("agent");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let sock = agent_dir.join("sock");
    let mut agent = std::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    common::wait_until("ssh-agent listens", Duration::from_secs(10), || {
        sock.exists()
    });
    run_ok(
        std::process::Command::new("ssh-add")
            .arg("-q")
            .arg(&key)
            .env("SSH_AUTH_SOCK", &sock),
    );
    std::fs::remove_file(&key).unwrap(); // only the agent has it now
    let out = d.exec("dev",
        &["sh", "-c", "git init -q /srv/repo && git -C /srv/repo -c user.email=t@e -c user.name=t commit -q --allow-empty -m init"],
    );
    assert!(out.status.success(), "{out:?}");
    let ls_remote = "GIT_SSH_COMMAND='ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes' git ls-remote root@127.0.0.1:/srv/repo";
    let with_agent = ssh(&["-A", "-o", "IdentitiesOnly=no", "dev", ls_remote])
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    let without = ssh(&["-o", "IdentitiesOnly=no", "dev", ls_remote])
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(with_agent.status.success(), "{with_agent:?}");
    assert!(stdout(&with_agent).contains("HEAD"), "{with_agent:?}");
    assert!(
        !without.status.success(),
        "git reached the server without the forwarded agent: {without:?}"
    );

    d.ok(&["vm", "rm", "--force", "dev"]);
    d.assert_nothing_left(1);
}

fn run_ok(c: &mut std::process::Command) {
    let out = c.output().unwrap();
    assert!(out.status.success(), "{c:?}: {out:?}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
