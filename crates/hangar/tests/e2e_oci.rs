//! End-to-end tests of OCI images (issue 10) on real guests: archives a
//! test builds byte by byte (docker-archive and OCI layout), imported
//! through the CLI from a file and from stdin, finalized with the default
//! image's kernel and booted; their image config (Env, WorkingDir, User,
//! Entrypoint) is kept and used by `exec`. Hostile and corrupted archives
//! are refused and leave nothing. The registry and buildah round trips are
//! in `e2e_oci_registry.rs`.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::oci::*;
use common::TestDaemon;
use sha2::{Digest, Sha256};

fn write_file(d: &TestDaemon, name: &str, body: &[u8]) -> PathBuf {
    let p = d.dir.path().join(name);
    std::fs::write(&p, body).unwrap();
    p
}

/// `hangar image import - --name NAME` with `body` on stdin.
fn import_stdin(d: &TestDaemon, name: &str, body: &[u8]) -> std::process::Output {
    d.hangar_with_stdin(&["image", "import", "-", "--name", name], body)
}

#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn a_docker_archive_from_stdin_boots_and_exec_uses_its_env_user_and_workdir() {
    let _serial = common::serial();
    let d = TestDaemon::start("oci-docker");
    d.ok(&["image", "pull", "debian-12"]);
    // Two layers: busybox, then the app's dir and a file that the second
    // layer replaces (whiteouts of the first are applied).
    let base = busybox_layer();
    let app = layer(&[
        Entry::Dir("srv", 0o755),
        Entry::Dir("srv/app", 0o755),
        Entry::File(
            "srv/app/greeting.txt",
            b"hello from layer 2\n".to_vec(),
            0o644,
        ),
        Entry::Dir("home/app", 0o755),
    ]);
    let archive = docker_archive(
        &[base, app],
        r#"{"Env":["PATH=/bin","GREETING=from-the-image"],"WorkingDir":"/srv/app","User":"app","Cmd":["sh"]}"#,
    );

    let out = import_stdin(&d, "bbapp", &archive);
    assert!(
        out.status.success(),
        "import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info = d.json(&["image", "show", "bbapp"]);
    assert_eq!(info["source"], "docker-archive");
    assert_eq!(info["run"]["working_dir"], "/srv/app");
    assert_eq!(info["run"]["user"], "app");

    d.ok(&["vm", "create", "bb", "--image", "bbapp"]);
    let out = d.exec(
        "bb",
        &["sh", "-c", "echo $GREETING; pwd; id -un; cat greeting.txt"],
    );
    assert_eq!(
        stdout(&out),
        "from-the-image\n/srv/app\napp\nhello from layer 2\n",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The request's own user and variables win over the image's.
    let out = d.hangar(&[
        "exec",
        "bb",
        "--user",
        "root",
        "--env",
        "GREETING=asked",
        "--",
        "sh",
        "-c",
        "echo $GREETING; id -u",
    ]);
    assert_eq!(
        stdout(&out),
        "asked\n0\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The kernel's modules are in the image, for modprobe.
    let out = d.exec("bb", &["sh", "-c", "ls /lib/modules"]);
    assert!(!stdout(&out).trim().is_empty(), "no /lib/modules: {out:?}");
    d.ok(&["vm", "rm", "-f", "bb"]);
    d.assert_no_image_leftovers();
}

#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn a_distroless_oci_archive_with_a_gzip_layer_boots_without_a_shell() {
    let _serial = common::serial();
    let d = TestDaemon::start("oci-distroless");
    d.ok(&["image", "pull", "debian-12"]);
    // One static binary, no shell, no passwd: the agent runs argv directly.
    let tar = layer(&[
        Entry::Dir("app", 0o755),
        Entry::File("app/busybox", busybox(), 0o755),
    ]);
    let gz = gzip(&tar);
    let archive = oci_archive(
        &[(gz, tar, "application/vnd.oci.image.layer.v1.tar+gzip")],
        r#"{"Entrypoint":["/app/busybox"],"Cmd":["sleep","1000"]}"#,
    );
    let file = write_file(&d, "distroless.oci.tar", &archive);

    d.ok(&[
        "image",
        "import",
        &common::path_str(&file),
        "--name",
        "distroless",
    ]);
    let info = d.json(&["image", "show", "distroless"]);
    assert_eq!(info["source"], "oci-archive");
    assert_eq!(info["run"]["entrypoint"][0], "/app/busybox");
    // No /boot: it boots the default image's kernel.
    assert_eq!(
        info["kernel_from"],
        d.json(&["image", "show", "debian-12"])["digest"],
        "{info}"
    );

    d.ok(&["vm", "create", "dl", "--image", "distroless"]);
    let out = d.exec("dl", &["/app/busybox", "echo", "no shell needed"]);
    assert_eq!(
        stdout(&out),
        "no shell needed\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.ok(&["vm", "rm", "-f", "dl"]);

    // --run-entrypoint: the image's Entrypoint + Cmd runs as the session
    // "entrypoint", at create and again after a restart.
    d.ok(&[
        "vm",
        "create",
        "ep",
        "--image",
        "distroless",
        "--run-entrypoint",
    ]);
    let entrypoint_running = |d: &TestDaemon| {
        let list = d.json(&["session", "ls", "ep"]);
        let s = &list[0];
        assert_eq!(s["name"], "entrypoint", "{list}");
        assert_eq!(
            s["command"],
            serde_json::json!(["/app/busybox", "sleep", "1000"]),
            "{list}"
        );
        assert_eq!(s["state"], "running", "{list}");
    };
    entrypoint_running(&d);
    d.ok(&["vm", "restart", "ep"]);
    entrypoint_running(&d);
    d.ok(&["vm", "rm", "-f", "ep"]);
    // An image without one: a clear error, and no VM is left.
    let err = d.fails(&["vm", "create", "noep", "--run-entrypoint"]);
    assert!(err.contains("has no Entrypoint or Cmd"), "{err}");
    assert_eq!(d.json(&["vm", "ls"]), serde_json::json!([]));
    d.assert_nothing_left(1);
}

#[test]
#[ignore = "needs root: runs the daemon (network namespace)"]
fn hostile_corrupt_and_unrunnable_archives_are_refused_and_leave_nothing() {
    let _serial = common::serial();
    let d = TestDaemon::start("oci-hostile");
    d.ok(&["image", "pull", "debian-12"]);
    let canary = d.dir.path().join("canary");
    std::fs::create_dir_all(&canary).unwrap();
    std::fs::write(canary.join("file"), "untouched").unwrap();
    let images_before = d.json(&["image", "ls"]);

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dotdot",
            docker_archive(
                &[layer(&[Entry::RawFile(
                    b"../../../../canary/file",
                    b"pwned",
                )])],
                "{}",
            ),
            "refused",
        ),
        (
            "symlink-then-write",
            docker_archive(
                &[
                    layer(&[Entry::Link("etc", "/")]),
                    layer(&[Entry::RawFile(b"etc/../../x", b"pwned")]),
                ],
                "{}",
            ),
            "refused",
        ),
        (
            "whiteout-climbs",
            docker_archive(
                &[
                    busybox_layer(),
                    layer(&[Entry::RawFile(b"../.wh.canary", b"")]),
                ],
                "{}",
            ),
            "refused",
        ),
        (
            "no-such-user",
            docker_archive(&[busybox_layer()], r#"{"User":"ghost"}"#),
            "\"ghost\"",
        ),
        (
            "no-such-entrypoint",
            docker_archive(&[busybox_layer()], r#"{"Entrypoint":["/usr/bin/missing"]}"#),
            "/usr/bin/missing",
        ),
        (
            "not-an-image",
            plain_tar(&[("hello.txt".into(), b"hi".to_vec())]),
            "docker save",
        ),
    ];
    for (name, archive, says) in cases {
        let file = write_file(&d, &format!("{name}.tar"), &archive);
        let err = d.fails(&["image", "import", &common::path_str(&file), "--name", name]);
        assert!(err.contains(says), "{name}: {err}");
        assert!(
            d.image_leftovers().is_empty(),
            "{name}: {:?}",
            d.image_leftovers()
        );
    }
    // A layer blob corrupted in transit: its digest no longer matches.
    let tar = busybox_layer();
    let mut bad = oci_archive(
        &[(tar.clone(), tar, "application/vnd.oci.image.layer.v1.tar")],
        "{}",
    );
    let at = bad.len() / 2;
    bad[at] ^= 0xff;
    let file = write_file(&d, "corrupt.tar", &bad);
    let err = d.fails(&[
        "image",
        "import",
        &common::path_str(&file),
        "--name",
        "corrupt",
    ]);
    assert!(err.contains("digest") || err.contains("not a tar"), "{err}");

    assert_eq!(
        d.json(&["image", "ls"]),
        images_before,
        "an image was registered"
    );
    d.assert_no_image_leftovers();
    assert_eq!(
        std::fs::read_to_string(canary.join("file")).unwrap(),
        "untouched"
    );
    assert_eq!(std::fs::read_dir(&canary).unwrap().count(), 1);
}

#[test]
#[ignore = "needs root: runs the daemon (network namespace)"]
fn a_cancelled_import_leaves_no_files_and_no_image() {
    let _serial = common::serial();
    let d = TestDaemon::start("oci-cancel");
    d.ok(&["image", "pull", "debian-12"]);
    // Many files: the unpack takes long enough to be cancelled midway.
    let bodies: Vec<(String, Vec<u8>)> = (0..40_000)
        .map(|i| (format!("data/{}/{i}", i % 100), vec![b'x'; 512]))
        .collect();
    let entries: Vec<Entry> = bodies
        .iter()
        .map(|(p, b)| Entry::File(p.as_str(), b.clone(), 0o644))
        .collect();
    let archive = docker_archive(&[busybox_layer(), layer(&entries)], "{}");
    let file = write_file(&d, "many.tar", &archive);

    let id = d.ok(&[
        "image",
        "import",
        &common::path_str(&file),
        "--name",
        "many",
        "--no-wait",
    ]);
    let id = id.trim();
    d.ok(&["op", "cancel", id]);
    common::wait_until(
        "the import ends",
        std::time::Duration::from_secs(120),
        || d.json(&["op", "show", id])["state"] != "running",
    );
    let op = d.json(&["op", "show", id]);
    assert_eq!(op["state"], "cancelled", "{op}");
    d.assert_no_image_leftovers();
    assert_eq!(d.image_names(), vec!["debian-12"]);
}

#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn a_promoted_vm_disk_boots_as_an_image_with_its_lineage() {
    let _serial = common::serial();
    let d = TestDaemon::start("oci-promote");
    d.ok(&["image", "pull", "debian-12"]);
    let archive = docker_archive(&[busybox_layer()], r#"{"Env":["PATH=/bin"]}"#);
    let file = write_file(&d, "bb.tar", &archive);
    d.ok(&["image", "import", &common::path_str(&file), "--name", "bb"]);
    d.ok(&["vm", "create", "dev", "--image", "bb"]);
    let out = d.exec("dev", &["sh", "-c", "echo kept > /root/note.txt && sync"]);
    assert!(out.status.success(), "{out:?}");

    // Running: refused, saying how; nothing made.
    let err = d.fails(&["image", "promote", "dev", "dev-snap"]);
    assert!(err.contains("--stop"), "{err}");
    d.assert_no_image_leftovers();
    // --stop stops it for the copy and starts it again after.
    d.ok(&["image", "promote", "dev", "dev-snap", "--stop"]);
    assert_eq!(d.json(&["vm", "show", "dev"])["state"], "running");
    let out = d.exec("dev", &["cat", "/root/note.txt"]);
    assert_eq!(stdout(&out), "kept\n", "{out:?}");
    let info = d.json(&["image", "show", "dev-snap"]);
    assert_eq!(info["source"], "promote:dev", "{info}");
    assert_eq!(info["parent"]["image_name"], "bb", "{info}");
    assert_eq!(info["parent"]["vm"], "dev", "{info}");
    assert_eq!(
        info["parent"]["image"],
        d.json(&["image", "show", "bb"])["digest"],
        "{info}"
    );
    assert_eq!(
        info["run"]["env"][0], "PATH=/bin",
        "the parent's run settings: {info}"
    );
    let ls = d.ok(&["image", "ls"]);
    assert!(ls.contains("bb (dev)"), "{ls}");

    d.ok(&["vm", "create", "dev2", "--image", "dev-snap"]);
    let out = d.exec("dev2", &["cat", "/root/note.txt"]);
    assert_eq!(stdout(&out), "kept\n", "{out:?}");
    // A taken name is refused before anything is copied.
    let err = d.fails(&["image", "promote", "dev", "dev-snap"]);
    assert!(err.contains("already exists"), "{err}");
    d.ok(&["vm", "rm", "-f", "dev2"]);
    d.ok(&["vm", "rm", "-f", "dev"]);
    d.ok(&["image", "rm", "dev-snap"]);
    d.assert_no_image_leftovers();
}

/// `python3 -m http.server` on 127.0.0.1 serving `dir`, killed on drop.
struct HttpServer {
    child: std::process::Child,
    port: u16,
}

impl HttpServer {
    fn start(dir: &std::path::Path) -> HttpServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
                "--directory",
            ])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        common::wait_until(
            "the HTTP server listens",
            std::time::Duration::from_secs(20),
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
        HttpServer { child, port }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `bundle` with one byte of its rootfs changed and its header kept.
fn forged_bundle(bundle: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let tar_bytes = zstd::decode_all(bundle).unwrap();
    let mut archive = tar::Archive::new(&tar_bytes[..]);
    let mut out = tar::Builder::new(Vec::new());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let header = entry.header().clone();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        if entry.path_bytes().as_ref() == b"rootfs.ext4" {
            let at = data.len() / 3;
            data[at] ^= 0x01;
        }
        out.append(&header, &data[..]).unwrap();
    }
    zstd::encode_all(&out.into_inner().unwrap()[..], 3).unwrap()
}

fn rootfs_sha(d: &TestDaemon, image: &str) -> String {
    let digest = d.json(&["image", "show", image])["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let f = std::fs::read(
        d.state_dir()
            .join("images")
            .join(digest)
            .join("rootfs.ext4"),
    )
    .unwrap();
    sha(&f)
}

#[test]
#[ignore = "needs root: runs two daemons and boots a guest (network namespaces, TAPs, QEMU)"]
fn a_bundle_exported_by_one_daemon_is_pulled_over_http_by_another_and_boots() {
    let _serial = common::serial();
    let a = TestDaemon::start("bundle-a");
    a.ok(&["image", "pull", "debian-12"]);
    let app = layer(&[
        Entry::Dir("srv", 0o755),
        Entry::File("srv/marker", b"bundled\n".to_vec(), 0o644),
    ]);
    let archive = docker_archive(&[busybox_layer(), app], r#"{"Env":["PATH=/bin"]}"#);
    let file = write_file(&a, "bb.tar", &archive);
    a.ok(&["image", "import", &common::path_str(&file), "--name", "bb"]);

    let served = a.dir.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let bundle = served.join("golden.hangar.tar.zst");
    let out = a.hangar(&["image", "export", "bb", &common::path_str(&bundle)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    let sum = hex::encode(Sha256::digest(std::fs::read(&bundle).unwrap()));
    assert!(said.contains(&format!("sha256 {sum}")), "{said}");
    // Corrupted copies beside it: one byte changed, and one cut short.
    let mut bytes = std::fs::read(&bundle).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x5a;
    std::fs::write(served.join("corrupt.hangar.tar.zst"), &bytes).unwrap();
    // A forged one: the same header (so the same manifest digest) over a
    // rootfs of its own, with its own correct sha256.
    let forged = forged_bundle(&std::fs::read(&bundle).unwrap());
    let forged_sum = hex::encode(Sha256::digest(&forged));
    std::fs::write(served.join("forged.hangar.tar.zst"), &forged).unwrap();
    let whole = std::fs::read(&bundle).unwrap();
    std::fs::write(
        served.join("short.hangar.tar.zst"),
        &whole[..whole.len() / 2],
    )
    .unwrap();
    let http = HttpServer::start(&served);
    let url = |f: &str| format!("http://127.0.0.1:{}/{f}", http.port);

    // A configured catalog names the bundle: `vm create --image team-golden`
    // pulls it on first use, with the entry's disk size.
    let catalog = a.dir.path().join("catalog.json");
    std::fs::write(
        &catalog,
        serde_json::json!({"images": [{"name": "team-golden", "description": "the team's image",
            "bundle": url("golden.hangar.tar.zst"), "sha256": sum, "disk_size": "3G"}]})
        .to_string(),
    )
    .unwrap();
    let b = TestDaemon::with(
        "bundle-b",
        common::Options {
            extra_config: format!("[images]\ncatalogs = [\"file://{}\"]\n", catalog.display()),
            ..Default::default()
        },
    );
    // From a local file, read by the CLI (file://); then removed again.
    b.ok(&[
        "image",
        "pull",
        &format!("file://{}", bundle.display()),
        "--sha256",
        &sum,
        "--name",
        "local",
    ]);
    assert_eq!(rootfs_sha(&a, "bb"), rootfs_sha(&b, "local"), "same rootfs");
    b.ok(&["image", "rm", "local"]);
    let images_before = b.json(&["image", "ls"]);
    // A wrong sha256, a corrupted bundle, a truncated one: refused, nothing kept.
    let err = b.fails(&[
        "image",
        "pull",
        &url("golden.hangar.tar.zst"),
        "--sha256",
        &"0".repeat(64),
    ]);
    assert!(err.contains("sha256"), "{err}");
    let err = b.fails(&[
        "image",
        "pull",
        &url("corrupt.hangar.tar.zst"),
        "--sha256",
        &sum,
    ]);
    assert!(!err.is_empty());
    // Without a sha256 the damage is still found (the zstd checksum, or
    // a part's sha256 from the header).
    b.fails(&["image", "pull", &url("corrupt.hangar.tar.zst")]);
    b.fails(&["image", "pull", &url("short.hangar.tar.zst")]);
    assert_eq!(b.json(&["image", "ls"]), images_before);
    b.assert_no_image_leftovers();

    b.ok(&[
        "image",
        "pull",
        &url("golden.hangar.tar.zst"),
        "--sha256",
        &sum,
    ]);
    assert_eq!(
        rootfs_sha(&a, "bb"),
        rootfs_sha(&b, "golden"),
        "same rootfs"
    );
    assert_eq!(
        a.json(&["image", "show", "bb"])["digest"],
        b.json(&["image", "show", "golden"])["digest"]
    );
    // The forged bundle claims golden's digest: its files are not golden's,
    // so it is refused (not stored as a name of golden), and nothing stays.
    let images_before = b.json(&["image", "ls"]);
    let err = b.fails(&[
        "image",
        "pull",
        &url("forged.hangar.tar.zst"),
        "--sha256",
        &forged_sum,
    ]);
    assert!(err.contains("already stored, with another rootfs"), "{err}");
    assert_eq!(b.json(&["image", "ls"]), images_before);
    b.assert_no_image_leftovers();
    // The same content under a second name: one image, two names, its
    // files stored once; removing one name keeps it.
    b.ok(&[
        "image",
        "pull",
        &format!("file://{}", bundle.display()),
        "--sha256",
        &sum,
        "--name",
        "golden2",
    ]);
    let images = b.json(&["image", "ls"]);
    let golden: Vec<&serde_json::Value> = images
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["digest"] == a.json(&["image", "show", "bb"])["digest"])
        .collect();
    assert_eq!(golden.len(), 1, "{images}");
    assert_eq!(golden[0]["names"], serde_json::json!(["golden", "golden2"]));
    b.assert_no_image_leftovers();
    let out = b.ok(&["image", "rm", "golden2"]);
    assert!(out.contains("stays as golden"), "{out}");
    assert_eq!(
        b.json(&["image", "show", "golden"])["names"],
        serde_json::json!(["golden"])
    );

    // Through the catalog instead: listed with its source, pulled by create.
    b.ok(&["image", "rm", "golden"]);
    let cat = b.json(&["image", "catalog"]);
    let entry = cat
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "team-golden")
        .cloned()
        .unwrap();
    assert_eq!(entry["local"], false, "{cat}");
    assert_eq!(
        entry["source"],
        format!("bundle:{}", url("golden.hangar.tar.zst")),
        "{cat}"
    );
    assert_eq!(entry["disk_bytes"], 3u64 << 30, "{cat}");
    b.ok(&["vm", "create", "g", "--image", "team-golden"]);
    let out = b.exec("g", &["cat", "/srv/marker"]);
    assert_eq!(stdout(&out), "bundled\n", "{out:?}");
    assert_eq!(b.json(&["vm", "show", "g"])["disk_bytes"], 3u64 << 30);
    // The guest's filesystem grew to it.
    let out = b.exec("g", &["sh", "-c", "df -k / | tail -1"]);
    let kib: u64 = stdout(&out)
        .split_whitespace()
        .nth(1)
        .and_then(|k| k.parse().ok())
        .unwrap_or(0);
    assert!(kib > 2_800_000, "root fs is only {kib} KiB: {out:?}");
    // An explicit size still wins.
    b.ok(&[
        "vm",
        "create",
        "g2",
        "--image",
        "team-golden",
        "--disk-size",
        "1G",
    ]);
    assert_eq!(b.json(&["vm", "show", "g2"])["disk_bytes"], 1u64 << 30);
    b.ok(&["vm", "rm", "-f", "g2"]);
    let cat = b.json(&["image", "catalog"]);
    assert!(
        cat.as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "team-golden" && e["local"] == true),
        "{cat}"
    );
    b.ok(&["vm", "rm", "-f", "g"]);
}

#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn an_image_with_several_names_stays_until_its_last_name_goes() {
    let _serial = common::serial();
    let d = TestDaemon::start("oci-tags");
    d.ok(&["image", "pull", "debian-12"]);
    let archive = docker_archive(&[busybox_layer()], r#"{"Env":["PATH=/bin"]}"#);
    let file = write_file(&d, "bb.tar", &archive);
    d.ok(&["image", "import", &common::path_str(&file), "--name", "bb"]);
    let digest = d.json(&["image", "show", "bb"])["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = d
        .state_dir()
        .join("images")
        .join(digest.trim_start_matches("sha256:"));

    // Two more names for it; a taken or bad name is refused.
    d.ok(&["image", "tag", "bb", "tools"]);
    d.ok(&["image", "tag", &digest, "tools-v1"]);
    let err = d.fails(&["image", "tag", "bb", "debian-12"]);
    assert!(err.contains("already exists"), "{err}");
    let err = d.fails(&["image", "tag", "bb", "Bad_Name"]);
    assert!(err.contains("image name"), "{err}");
    let err = d.fails(&["image", "tag", "nope", "x"]);
    assert!(err.contains("no image named"), "{err}");
    let listed = d.json(&["image", "ls"]);
    let bb: Vec<&serde_json::Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["digest"] == digest.as_str())
        .collect();
    assert_eq!(bb.len(), 1, "{listed}");
    assert_eq!(
        bb[0]["names"],
        serde_json::json!(["bb", "tools", "tools-v1"])
    );
    // The table shows each name on its own row.
    let table = d.ok(&["image", "ls"]);
    for name in ["bb ", "tools ", "tools-v1 ", "debian-12 "] {
        assert!(
            table.lines().any(|l| l.starts_with(name)),
            "{name}: {table}"
        );
    }
    // By digest, an image with several names is not removed.
    let err = d.fails(&["image", "rm", &digest]);
    assert!(err.contains("bb, tools, tools-v1"), "{err}");

    // A VM made from one name; the others go, the image stays.
    d.ok(&["vm", "create", "t", "--image", "tools"]);
    let out = d.exec("t", &["echo", "tagged"]);
    assert_eq!(stdout(&out), "tagged\n", "{out:?}");
    let out = d.ok(&["image", "rm", "bb"]);
    assert!(out.contains("stays as tools, tools-v1"), "{out}");
    d.ok(&["image", "rm", "tools"]);
    assert!(dir.is_dir(), "the files stay while a name does");
    // The last name: refused while the VM uses the image, naming it.
    let err = d.fails(&["image", "rm", "tools-v1"]);
    assert!(err.contains("used by VM(s) t"), "{err}");
    assert_eq!(
        d.json(&["image", "show", "tools-v1"])["names"],
        serde_json::json!(["tools-v1"])
    );
    d.ok(&["vm", "rm", "-f", "t"]);
    d.ok(&["image", "rm", "tools-v1"]);
    assert!(!dir.exists(), "the last name took the files");
    assert!(d.hangar(&["image", "show", &digest]).status.code() != Some(0));
    d.assert_no_image_leftovers();
    d.assert_nothing_left(1);
}
