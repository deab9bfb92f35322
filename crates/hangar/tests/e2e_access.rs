//! Reaching a VM with the user's own tools: `hangar ssh-config --install`
//! then plain `ssh`, `scp` and `rsync`; `hangar cp` of a large file and of
//! a tree; `hangar port-forward`. Real guests, run as root
//! (`cargo test -p hangar --test e2e_access -- --include-ignored`).

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::TestDaemon;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn run_ok(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(out.status.success(), "{c:?}: {out:?}");
    stdout(&out)
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A tree with the things copies get wrong: modes (dirs too), a relative
/// and an absolute symlink, unicode and spaces in names, an empty dir.
fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
    std::fs::create_dir_all(root.join("empty dir")).unwrap();
    std::fs::write(root.join("plain.txt"), "plain\n").unwrap();
    std::fs::write(root.join("run.sh"), "#!/bin/sh\necho ran\n").unwrap();
    chmod(&root.join("run.sh"), 0o755);
    std::fs::write(root.join("sub/secret"), "s3cret\n").unwrap();
    chmod(&root.join("sub/secret"), 0o600);
    std::fs::write(root.join("sub/deeper/ünïcødé ☃.txt"), "snow\n").unwrap();
    chmod(&root.join("sub/deeper/ünïcødé ☃.txt"), 0o640);
    std::fs::write(root.join("sub/deeper/big.bin"), vec![7u8; 3 << 20]).unwrap();
    std::os::unix::fs::symlink("sub/deeper/ünïcødé ☃.txt", root.join("link-rel")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("link-abs")).unwrap();
    chmod(&root.join("sub/deeper"), 0o750);
    chmod(&root.join("empty dir"), 0o700);
}

/// What a copy must keep, as GNU find prints it (the same command on the
/// host and in the guest): path, type, mode, link target; and each
/// regular file's sha256.
const LISTING: &str = "cd \"$0\" && find . -mindepth 1 -printf '%P %y %m %l\\n' | LC_ALL=C sort \
    && find . -type f -exec sha256sum {} + | LC_ALL=C sort -k2";

fn local_listing(dir: &Path) -> String {
    run_ok(Command::new("sh").args(["-c", LISTING]).arg(dir))
}

fn guest_listing(d: &TestDaemon, vm: &str, dir: &str) -> String {
    let out = d.exec(vm, &["sh", "-c", LISTING, dir]);
    assert!(out.status.success(), "{out:?}");
    stdout(&out)
}

/// Names in `dir` of the guest that a copy must not leave behind.
fn guest_leftovers(d: &TestDaemon, vm: &str, dir: &str) -> String {
    stdout(&d.exec(
        vm,
        &["sh", "-c", "ls -A \"$0\" | grep hangar-cp || true", dir],
    ))
}

fn local_leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("hangar-cp"))
        .collect()
}

/// A VM created by a user whose HOME holds an ed25519 key (which
/// `vm create` puts into the VM).
fn vm_with_user_key(d: &TestDaemon, home: &Path) {
    vm_with_user_key_and(d, home, &[]);
}

fn vm_with_user_key_and(d: &TestDaemon, home: &Path, create_args: &[&str]) {
    let ssh_dir = home.join(".ssh");
    std::fs::create_dir_all(&ssh_dir).unwrap();
    chmod(&ssh_dir, 0o700);
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", ""])
            .arg("-f")
            .arg(ssh_dir.join("id_ed25519")),
    );
    run_ok(
        Command::new(common::hangar_bin())
            .arg("--config")
            .arg(&d.config)
            .args(["vm", "create", "dev"])
            .args(create_args)
            .env("HOME", home),
    );
}

/// `hangar ssh-config --install` as the user whose HOME is `home`.
fn install_ssh_config(d: &TestDaemon, home: &Path) -> String {
    run_ok(
        Command::new(common::hangar_bin())
            .arg("--config")
            .arg(&d.config)
            .args(["ssh-config", "--install"])
            .env("HOME", home),
    )
}

fn mode_of(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn ssh_config_install_lets_plain_ssh_scp_and_rsync_reach_the_vm() {
    let _serial = common::serial();
    assert!(
        Command::new("rsync").arg("--version").output().is_ok(),
        "needs rsync on the host (scripts/install-deps.sh installs it)"
    );
    let d = TestDaemon::start("access-ssh");
    let home = d.dir.path().join("home");
    vm_with_user_key(&d, &home);
    // The user's own config, with an entry and a mode of their choosing.
    let user_config = home.join(".ssh/config");
    std::fs::write(&user_config, "Host work\n    User me\n").unwrap();
    chmod(&user_config, 0o644);
    let install = || install_ssh_config(&d, &home);

    let first = install();
    let second = install();

    assert!(first.contains("dev.hangar"), "{first}");
    assert!(first.contains("Added `Include"), "{first}");
    assert!(!second.contains("Added `Include"), "{second}");
    let hangar_dir = home.join(".ssh/hangar");
    assert_eq!(
        std::fs::read_to_string(&user_config).unwrap(),
        format!(
            "Include {}\nHost work\n    User me\n",
            hangar_dir.join("config").display()
        )
    );
    assert_eq!(mode_of(&user_config), 0o644);
    assert_eq!(mode_of(&hangar_dir), 0o700);
    assert_eq!(mode_of(&hangar_dir.join("config")), 0o600);
    assert_eq!(mode_of(&hangar_dir.join("known_hosts")), 0o600);
    let host_key = d.json(&["vm", "show", "dev"])["host_key"]
        .as_str()
        .unwrap()
        .to_string();
    let known = std::fs::read_to_string(hangar_dir.join("known_hosts")).unwrap();
    assert!(
        known.starts_with(&format!(
            "dev.hangar {}",
            host_key
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        )),
        "{known}"
    );

    // OpenSSH reads the user's config (ssh expands ~ from the passwd
    // entry, not HOME, so it is named with -F), pins the key, no prompt.
    let ssh_opts = format!(
        "-F {} -o BatchMode=yes -o StrictHostKeyChecking=yes",
        user_config.display()
    );
    let ssh = |args: &[&str]| {
        let mut c = Command::new("ssh");
        c.args(ssh_opts.split(' ')).args(args).stdin(Stdio::null());
        c
    };
    let uname = run_ok(&mut ssh(&["dev.hangar", "uname", "-a"]));
    assert!(uname.starts_with("Linux dev "), "{uname}");
    // A wrong pinned key is refused, not offered to the user to accept.
    let other = home.join("other_key");
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", ""])
            .arg("-f")
            .arg(&other),
    );
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let lied = home.join("wrong_known_hosts");
    std::fs::write(&lied, format!("dev.hangar {other_pub}")).unwrap();
    let out = ssh(&[
        "-o",
        &format!("UserKnownHostsFile={}", lied.display()),
        "dev.hangar",
        "true",
    ])
    .output()
    .unwrap();
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("HOST IDENTIFICATION HAS CHANGED"),
        "{out:?}"
    );

    let tree = d.dir.path().join("tree");
    make_tree(&tree);
    let want = local_listing(&tree);

    // scp -r -p: contents and modes both ways (scp follows symlinks, so
    // the comparison is of what they point at).
    let scp = |from: &str, to: &str| {
        run_ok(
            Command::new("scp")
                .args(ssh_opts.split(' '))
                .args(["-r", "-p", "-q", from, to]),
        )
    };
    scp(&tree.display().to_string(), "dev.hangar:/root/scp-up");
    let followed = "cd \"$0\" && find -L . -type f -printf '%P %m\\n' | LC_ALL=C sort \
        && find -L . -type f -exec sha256sum {} + | LC_ALL=C sort -k2";
    let local_followed = run_ok(Command::new("sh").args(["-c", followed]).arg(&tree));
    let out = d.exec("dev", &["sh", "-c", followed, "/root/scp-up"]);
    assert_eq!(stdout(&out), local_followed);
    let scp_down = d.dir.path().join("scp-down");
    scp("dev.hangar:/root/scp-up", &scp_down.display().to_string());
    assert_eq!(
        run_ok(Command::new("sh").args(["-c", followed]).arg(&scp_down)),
        local_followed
    );

    // rsync -a: modes, symlinks and names exactly, both ways.
    let rsync_e = format!("ssh {ssh_opts}");
    let rsync =
        |from: &str, to: &str| run_ok(Command::new("rsync").args(["-a", "-e", &rsync_e, from, to]));
    rsync(
        &format!("{}/", tree.display()),
        "dev.hangar:/root/rsync-up/",
    );
    assert_eq!(guest_listing(&d, "dev", "/root/rsync-up"), want);
    let rsync_down = d.dir.path().join("rsync-down");
    rsync(
        "dev.hangar:/root/rsync-up/",
        &format!("{}/", rsync_down.display()),
    );
    assert_eq!(local_listing(&rsync_down), want);

    // A removed VM drops out of the regenerated file.
    d.ok(&["vm", "rm", "--force", "dev"]);
    install();
    let config = std::fs::read_to_string(hangar_dir.join("config")).unwrap();
    assert!(!config.contains("dev.hangar"), "{config}");
    assert_eq!(
        std::fs::read_to_string(hangar_dir.join("known_hosts")).unwrap(),
        ""
    );
}

#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn the_users_keys_log_in_as_the_vms_ssh_user_only() {
    let _serial = common::serial();
    let d = TestDaemon::start("access-user");
    // A bad login name is refused before anything is made.
    let err = d.fails(&["vm", "create", "bad", "--ssh-user", "../root"]);
    assert!(err.contains("login name"), "{err}");
    assert_eq!(d.json(&["vm", "ls"]), serde_json::json!([]));

    let home = d.dir.path().join("home");
    vm_with_user_key_and(&d, &home, &["--ssh-user", "dev"]);
    assert_eq!(d.json(&["vm", "show", "dev"])["ssh_user"], "dev");
    // The daemon's key reaches any user: make the login.
    d.ok(&["exec", "dev", "--", "useradd", "-m", "-s", "/bin/sh", "dev"]);
    install_ssh_config(&d, &home);
    let config = std::fs::read_to_string(home.join(".ssh/hangar/config")).unwrap();
    assert!(
        config.contains("    HostName dev\n    User dev\n"),
        "{config}"
    );
    let ssh = |user: &str| {
        Command::new("ssh")
            .arg("-F")
            .arg(home.join(".ssh/hangar/config"))
            .args(["-o", "BatchMode=yes", "-l", user, "dev.hangar", "id", "-un"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = ssh("dev");
    assert_eq!(stdout(&out), "dev\n", "{out:?}");
    for other in ["root", "daemon"] {
        let out = ssh(other);
        assert!(!out.status.success(), "{other}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Permission denied (publickey)"),
            "{out:?}"
        );
    }
    // `hangar ssh` goes through the daemon, so root stays reachable there.
    assert_eq!(stdout(&d.exec("dev", &["id", "-un"])), "root\n");
}

#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn cp_copies_a_large_file_and_a_tree_both_ways_and_refuses_bad_input_cleanly() {
    let _serial = common::serial();
    let d = TestDaemon::start("access-cp");
    d.ok(&["vm", "create", "dev"]);
    let work = d.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let p = |path: &Path| path.display().to_string();

    // 100 MB each way, identical.
    let big = work.join("big.bin");
    run_ok(Command::new("sh").args([
        "-c",
        &format!("head -c 100000000 /dev/urandom > {}", p(&big)),
    ]));
    let sum = |path: &Path| {
        run_ok(Command::new("sha256sum").arg(path))
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    d.ok(&["cp", &p(&big), "dev:/root/big.bin"]);
    let guest_sum = stdout(&d.exec("dev", &["sha256sum", "/root/big.bin"]));
    assert!(guest_sum.starts_with(&sum(&big)), "{guest_sum}");
    let back = work.join("big.back");
    d.ok(&["cp", "dev:/root/big.bin", &p(&back)]);
    assert_eq!(sum(&back), sum(&big));

    // A tree with -r: up into a dir (as scp names it), then down.
    let tree = work.join("tree");
    make_tree(&tree);
    let want = local_listing(&tree);
    d.ok(&["cp", "-r", &p(&tree), "dev:/root/"]);
    assert_eq!(guest_listing(&d, "dev", "/root/tree"), want);
    let down = work.join("down");
    d.ok(&["cp", "-r", "dev:/root/tree", &p(&down)]);
    assert_eq!(local_listing(&down), want);
    assert_eq!(mode_of(&down.join("sub/deeper")), 0o750);

    // Bad input: a clear error each, and nothing left at the destination.
    let err = d.fails(&["cp", "-r", &p(&tree), "dev:/root/missing/tree"]);
    assert!(
        err.contains("directory /root/missing does not exist"),
        "{err}"
    );
    assert_eq!(guest_leftovers(&d, "dev", "/root"), "");
    let err = d.fails(&["cp", &p(&work.join("nope")), "dev:/root/"]);
    assert!(err.contains("nope: no such file or directory"), "{err}");
    let err = d.fails(&["cp", &p(&tree), "dev:/root/again"]);
    assert!(
        err.contains("is a directory: copy it with `hangar cp -r`"),
        "{err}"
    );
    let err = d.fails(&["cp", "dev:/root/tree", &p(&work.join("x"))]);
    assert!(err.contains("is a directory"), "{err}");
    assert!(err.contains("hangar cp -r"), "{err}");
    let err = d.fails(&["cp", "-r", "dev:/root/no-such", &p(&work)]);
    assert!(
        err.contains("/root/no-such does not exist in the guest"),
        "{err}"
    );
    let err = d.fails(&["cp", "-r", "dev:/root/tree", &p(&work.join("no/dir/x"))]);
    assert!(err.contains("does not exist"), "{err}");
    // An existing tree is never merged into, on either side.
    let err = d.fails(&["cp", "-r", "dev:/root/tree", &p(&work)]);
    assert!(err.contains("already exists"), "{err}");
    let err = d.fails(&["cp", "-r", &p(&tree), "dev:/root/"]);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(local_listing(&work.join("tree")), want);
    assert!(
        local_leftovers(&work).is_empty(),
        "{:?}",
        local_leftovers(&work)
    );
    assert_eq!(guest_leftovers(&d, "dev", "/root"), "");
    // A VM that does not exist.
    let err = d.fails(&["cp", "-r", &p(&tree), "nope:/root/"]);
    assert!(err.contains("nope"), "{err}");
}

#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn port_forward_and_proxy_reach_loopback_only_servers_with_concurrent_connections() {
    let _serial = common::serial();
    let d = TestDaemon::start("access-fwd");
    d.ok(&["vm", "create", "dev"]);
    let ip = d.json(&["vm", "show", "dev"])["ip"]
        .as_str()
        .unwrap()
        .to_string();
    // One server on the guest's loopback only (a dev server's default),
    // one on the guest's address only.
    let out = d.exec(
        "dev",
        &[
            "sh",
            "-c",
            &format!(
                "mkdir -p /srv/www && echo served > /srv/www/index.html && \
                 busybox httpd -p 127.0.0.1:8080 -h /srv/www && \
                 busybox httpd -p {ip}:8081 -h /srv/www && busybox netstat -ltn"
            ),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let listening = stdout(&out);
    assert!(
        listening.contains("127.0.0.1:8080") && !listening.contains("0.0.0.0:8080"),
        "{listening}"
    );

    // `hangar proxy VM PORT` (or `--port PORT`): stdin and stdout are the
    // connection.
    let proxy_get = |port: &[&str]| {
        let mut c = Command::new(common::hangar_bin())
            .arg("--config")
            .arg(&d.config)
            .args(["proxy", "dev"])
            .args(port)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin
            .take()
            .unwrap()
            .write_all(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
            .unwrap();
        c.wait_with_output().unwrap()
    };
    // 8080 is on the guest's loopback only (the tunnel), 8081 on its
    // address only (the direct way).
    for port in [&["8080"][..], &["--port", "8081"]] {
        let out = proxy_get(port);
        assert!(
            out.status.success() && stdout(&out).ends_with("served\n"),
            "proxy to {port:?}: {out:?}"
        );
    }
    // Nothing listens: an error naming the port and what to check, before
    // any byte flows.
    let out = proxy_get(&["8099"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && out.stdout.is_empty(), "{out:?}");
    assert!(
        err.contains("cannot connect to port 8099 of VM \"dev\"")
            && err.contains("127.0.0.1:8099 in the guest refused")
            && err.contains("is a server listening?"),
        "{err}"
    );
    // Unknown or stopped VMs fail before anything listens.
    let err = d.fails(&["port-forward", "nope", "8080"]);
    assert!(err.contains("nope"), "{err}");

    let mut fwd = Command::new(common::hangar_bin())
        .arg("--config")
        .arg(&d.config)
        .args(["port-forward", "dev", "0:8080"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(fwd.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line
        .strip_prefix("Forwarding 127.0.0.1:")
        .and_then(|r| r.strip_suffix(" -> dev:8080\n"))
        .unwrap_or_else(|| panic!("{line:?}"))
        .parse()
        .unwrap();

    let clients: Vec<_> = (0..20)
        .map(|_| {
            std::thread::spawn(move || -> std::io::Result<String> {
                let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
                s.set_read_timeout(Some(Duration::from_secs(60)))?;
                s.write_all(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")?;
                let mut body = String::new();
                s.read_to_string(&mut body)?;
                Ok(body)
            })
        })
        .collect();
    let bodies: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let served = |b: &std::io::Result<String>| {
        b.as_ref()
            .is_ok_and(|b| b.contains("200 OK") && b.ends_with("served\n"))
    };
    if !bodies.iter().all(served) {
        fwd.kill().unwrap();
        let mut err = String::new();
        fwd.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        panic!("through the forward: {bodies:?}\nport-forward said: {err}");
    }

    // A stream whose reader stalls holds up only its own connection to
    // the guest: exec (the daemon's control connection) still answers.
    let out = d.exec(
        "dev",
        &["sh", "-c", "head -c 64000000 /dev/zero > /srv/www/big"],
    );
    assert!(out.status.success(), "{out:?}");
    let mut stalled = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stalled
        .write_all(b"GET /big HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let (tx, rx) = std::sync::mpsc::channel();
    let (bin, config) = (common::hangar_bin(), d.config.clone());
    std::thread::spawn(move || {
        let out = Command::new(bin)
            .arg("--config")
            .arg(config)
            .args(["exec", "dev", "--", "echo", "alive"])
            .output();
        let _ = tx.send(out);
    });
    let out = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("exec hung behind a stalled forwarded stream")
        .unwrap();
    assert_eq!(stdout(&out), "alive\n", "{out:?}");
    drop(stalled);

    // The same port again: taken, and said so with what to do.
    let err = d.fails(&["port-forward", "dev", &format!("{port}:8080")]);
    assert!(
        err.contains(&format!("local port {port} is already in use")),
        "{err}"
    );
    fwd.kill().unwrap();
    fwd.wait().unwrap();
}
