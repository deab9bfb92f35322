//! Attack suite, image registration (issue 8, item 1): a socket user must
//! not get the daemon to read a host file the user could not read. The CLI
//! uploads files it opened as the user; the path form of the API is root's
//! only (`docs/security.md#image-registration-the-daemon-never-opens-a-host-path-for-a-client`). Each test plays the socket user for
//! real and checks that the attack fails and nothing was stored.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::roles::{Role, NOBODY};
use common::{path_str, wait_until, Options, TestDaemon, IMAGE_CACHE};

/// A kernel and an ext4 rootfs the socket user owns, in its home: good
/// enough to pass every check of a registration.
fn users_small_image(d: &TestDaemon) -> (PathBuf, PathBuf) {
    let home = d.home_of(Role::SocketUser);
    let kernel = home.join("vmlinux");
    let mut elf = b"\x7fELF\x02".to_vec();
    elf.resize(64 << 10, 0x90);
    std::fs::write(&kernel, elf).unwrap();
    let rootfs = home.join("rootfs.ext4");
    std::fs::File::create(&rootfs)
        .and_then(|f| f.set_len(8 << 20))
        .unwrap();
    let st = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&rootfs)
        .status()
        .unwrap();
    assert!(st.success(), "mkfs.ext4 (apt-get install e2fsprogs)");
    for f in [&kernel, &rootfs] {
        give_to_nobody(f);
    }
    (kernel, rootfs)
}

fn give_to_nobody(p: &Path) {
    std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY)).unwrap();
}

/// Everything under `state/images/`, hidden staging dirs included.
fn image_dir_entries(d: &TestDaemon) -> Vec<String> {
    let dir = d.state_dir().join("images");
    match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn assert_nothing_registered(d: &TestDaemon) {
    assert_eq!(d.json(&["image", "ls"]), serde_json::json!([]));
    assert_eq!(image_dir_entries(d), Vec::<String>::new());
}

fn register_as_socket_user(d: &TestDaemon, args: &[&str]) -> (bool, String) {
    let mut all = vec!["image", "register"];
    all.extend_from_slice(args);
    let out = d.hangar_as(Role::SocketUser, &all);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `POST /v1/images/register` with a JSON body, as `role` (None: root),
/// with curl; returns the HTTP status and the body.
fn post_register_paths(d: &TestDaemon, role: Option<Role>, body: &str) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--unix-socket"]).arg(d.socket()).args([
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "-w",
        "\n%{http_code}",
        "-d",
        body,
        "http://hangar/v1/images/register",
    ]);
    let out = match role {
        Some(r) => d.run_as(r, cmd),
        None => cmd.output().unwrap(),
    };
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn sha256sum(p: &Path) -> String {
    let out = Command::new("sha256sum").arg(p).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
#[ignore = "needs root: runs the daemon and plays other users (setuid, groupadd)"]
fn socket_user_cannot_register_etc_shadow() {
    let d = TestDaemon::with_socket_group("atk-shadow", Options::default());
    let (kernel, rootfs) = users_small_image(&d);

    let (ok, err) = register_as_socket_user(
        &d,
        &[
            "evil",
            "--kernel",
            &path_str(&kernel),
            "--rootfs",
            &path_str(&rootfs),
            "--initrd",
            "/etc/shadow",
        ],
    );

    assert!(!ok, "a socket user registered /etc/shadow");
    assert!(
        err.contains("you cannot read initrd file /etc/shadow"),
        "{err}"
    );
    assert_nothing_registered(&d);
}

#[test]
#[ignore = "needs root: runs the daemon and plays other users (setuid, groupadd)"]
fn socket_user_cannot_register_host_paths_through_the_api() {
    let d = TestDaemon::with_socket_group("atk-paths", Options::default());
    let (kernel, rootfs) = users_small_image(&d);
    let body = serde_json::json!({
        "name": "evil",
        "kernel": path_str(&kernel),
        "rootfs": path_str(&rootfs),
        "initrd": "/etc/shadow",
    })
    .to_string();

    let (status, answer) = post_register_paths(&d, Some(Role::SocketUser), &body);

    assert_eq!(status, 400, "{answer}");
    assert!(
        answer.contains("root only") && answer.contains("/v1/images/upload"),
        "the refusal should name the upload form: {answer}"
    );
    assert_nothing_registered(&d);
}

#[test]
#[ignore = "needs root: runs the daemon and plays other users (setuid, groupadd)"]
fn socket_user_cannot_register_a_symlink_to_etc_shadow() {
    let d = TestDaemon::with_socket_group("atk-link", Options::default());
    let (kernel, rootfs) = users_small_image(&d);
    let link = d.home_of(Role::SocketUser).join("initrd.img");
    std::os::unix::fs::symlink("/etc/shadow", &link).unwrap();

    let (ok, err) = register_as_socket_user(
        &d,
        &[
            "evil",
            "--kernel",
            &path_str(&kernel),
            "--rootfs",
            &path_str(&rootfs),
            "--initrd",
            &path_str(&link),
        ],
    );

    assert!(!ok, "a socket user registered a symlink to /etc/shadow");
    assert!(err.contains("is a symbolic link"), "{err}");
    assert_nothing_registered(&d);
}

#[test]
#[ignore = "needs root: runs the daemon and plays other users (setuid, groupadd)"]
fn socket_user_cannot_register_a_fifo() {
    let d = TestDaemon::with_socket_group("atk-fifo", Options::default());
    let (kernel, _) = users_small_image(&d);
    let fifo = d.home_of(Role::SocketUser).join("rootfs.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    give_to_nobody(&fifo);

    let (ok, err) = register_as_socket_user(
        &d,
        &[
            "evil",
            "--kernel",
            &path_str(&kernel),
            "--rootfs",
            &path_str(&fifo),
        ],
    );

    assert!(!ok, "a socket user registered a FIFO");
    assert!(err.contains("is a FIFO, not a regular file"), "{err}");
    assert_nothing_registered(&d);
}

#[test]
#[ignore = "needs root: runs the daemon and plays other users (setuid, groupadd)"]
fn socket_user_cannot_register_a_root_only_file() {
    let d = TestDaemon::with_socket_group("atk-rootonly", Options::default());
    let (kernel, rootfs) = users_small_image(&d);
    // In the user's own home, so only the file's mode stands in the way.
    let secret = d.home_of(Role::SocketUser).join("root-initrd.img");
    std::fs::write(&secret, b"root's secret").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();

    let (ok, err) = register_as_socket_user(
        &d,
        &[
            "evil",
            "--kernel",
            &path_str(&kernel),
            "--rootfs",
            &path_str(&rootfs),
            "--initrd",
            &path_str(&secret),
        ],
    );

    assert!(!ok, "a socket user registered a file only root may read");
    assert!(err.contains("you cannot read initrd file"), "{err}");
    assert_nothing_registered(&d);
}

#[test]
#[ignore = "needs root: runs the daemon and plays other users (setuid, groupadd)"]
fn socket_user_killing_an_upload_mid_stream_leaves_nothing() {
    let d = TestDaemon::with_socket_group("atk-kill", Options::default());
    let (kernel, _) = users_small_image(&d);
    // Sparse on the user's side, so the test needs no disk; big enough
    // that the upload is still running when it is killed.
    let big = d.home_of(Role::SocketUser).join("big.ext4");
    std::fs::File::create(&big)
        .and_then(|f| f.set_len(16 << 30))
        .unwrap();
    give_to_nobody(&big);
    let mut cmd = Command::new(common::hangar_bin());
    cmd.arg("--config").arg(&d.config).args([
        "image",
        "register",
        "big",
        "--kernel",
        &path_str(&kernel),
        "--rootfs",
        &path_str(&big),
    ]);
    let mut cli = d.spawn_as(Role::SocketUser, cmd);
    wait_until(
        "the rootfs upload to start",
        Duration::from_secs(60),
        || {
            image_dir_entries(&d).iter().any(|e| {
                e.starts_with(".register-")
                    && d.state_dir()
                        .join("images")
                        .join(e)
                        .join("rootfs.ext4")
                        .exists()
            })
        },
    );

    cli.kill().unwrap();
    let status = cli.wait().unwrap();

    assert!(!status.success());
    wait_until(
        "the daemon to remove the partial upload",
        Duration::from_secs(10),
        || image_dir_entries(&d).is_empty(),
    );
    assert_nothing_registered(&d);
    assert!(
        d.json(&["vm", "ls"]) == serde_json::json!([]),
        "the daemon is still serving"
    );
}

#[test]
#[ignore = "needs root: runs the daemon and plays other users (setuid, groupadd)"]
fn socket_user_can_register_files_it_owns() {
    let d = TestDaemon::with_socket_group("atk-own", Options::default());
    let cached = std::fs::read_dir(IMAGE_CACHE)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("vmlinux").exists() && p.join("rootfs.ext4").exists())
        .expect("a built debian image in the image cache (run `hangar image pull debian-12` once)");
    let home = d.home_of(Role::SocketUser);
    for f in ["vmlinux", "initrd.img", "rootfs.ext4"] {
        let st = Command::new("cp")
            .arg("--sparse=always")
            .arg(cached.join(f))
            .arg(home.join(f))
            .status()
            .unwrap();
        assert!(st.success());
        give_to_nobody(&home.join(f));
    }

    let (ok, err) = register_as_socket_user(
        &d,
        &[
            "mine",
            "--kernel",
            "vmlinux",
            "--initrd",
            "initrd.img",
            "--rootfs",
            "rootfs.ext4",
        ],
    );

    assert!(ok, "{err}");
    let shown = d.json(&["image", "show", "mine"]);
    assert_eq!(shown["name"], "mine");
    assert_eq!(shown["source"], "register");
    let files = &shown["files"];
    assert_eq!(files["kernel_sha256"], sha256sum(&home.join("vmlinux")));
    assert_eq!(files["initrd_sha256"], sha256sum(&home.join("initrd.img")));
    assert_eq!(files["rootfs_sha256"], sha256sum(&home.join("rootfs.ext4")));
    let digest = shown["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let stored = d.state_dir().join("images").join(digest);
    assert_eq!(
        sha256sum(&stored.join("rootfs.ext4")),
        sha256sum(&home.join("rootfs.ext4"))
    );
    assert_eq!(image_dir_entries(&d), vec![digest.to_string()]);
}

#[test]
#[ignore = "needs root: runs the daemon and plays other users (setuid, groupadd)"]
fn root_can_still_register_from_host_paths() {
    let d = TestDaemon::with_socket_group("atk-rootpath", Options::default());
    let (kernel, rootfs) = users_small_image(&d);
    let body = serde_json::json!({
        "name": "rooted",
        "kernel": path_str(&kernel),
        "rootfs": path_str(&rootfs),
    })
    .to_string();

    let (status, answer) = post_register_paths(&d, None, &body);

    assert_eq!(status, 201, "{answer}");
    let shown = d.json(&["image", "show", "rooted"]);
    assert_eq!(shown["files"]["rootfs_sha256"], sha256sum(&rootfs));
    assert_eq!(image_dir_entries(&d).len(), 1);
}

#[test]
#[ignore = "needs root: runs the daemon and plays other users (setuid, groupadd)"]
fn socket_user_cannot_upload_past_the_size_limits() {
    let opts = Options {
        extra_config: "images.max_kernel_size = \"32K\"\n".into(),
        ..Options::default()
    };
    let d = TestDaemon::with_socket_group("atk-limit", opts);
    let (kernel, rootfs) = users_small_image(&d);

    let (ok, err) = register_as_socket_user(
        &d,
        &[
            "big",
            "--kernel",
            &path_str(&kernel),
            "--rootfs",
            &path_str(&rootfs),
        ],
    );

    assert!(!ok, "a 64 KiB kernel passed a 32 KiB limit");
    assert!(err.contains("[images] max_kernel_size"), "{err}");
    assert_nothing_registered(&d);
}
