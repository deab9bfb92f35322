//! File transfer: sftp batches and scp (sftp and legacy protocol).

use super::*;

// ---------------------------------------------------------------- sftp

pub(crate) fn sftp_batch_changes_the_disk(kind: Server) {
    let s = Running::start(kind);
    let local = work_dir(&s, "local");
    let r = work_dir(&s, "remote");
    let l = local.display();
    let rd = r.display();
    let data = pseudo_random(1_000_000, 3);
    fs::write(local.join("a.bin"), &data).unwrap();
    fs::write(local.join("tool.sh"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(local.join("tool.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    set_mtime(&local.join("tool.sh"), 1_000_000_000);
    // More entries than one READDIR answer holds.
    fs::create_dir(r.join("many")).unwrap();
    for i in 0..300 {
        fs::write(r.join("many").join(format!("f{i:03}")), b"").unwrap();
    }
    let batch = format!(
        "mkdir {rd}/d\n\
         put {l}/a.bin {rd}/d/a.bin\n\
         chmod 640 {rd}/d/a.bin\n\
         rename {rd}/d/a.bin {rd}/d/b.bin\n\
         symlink {rd}/d/b.bin {rd}/d/link\n\
         ln -s b.bin {rd}/d/rel\n\
         put -p {l}/tool.sh {rd}/d/tool.sh\n\
         ls -l {rd}/d\n\
         get {rd}/d/b.bin {l}/got.bin\n\
         get {rd}/d/link {l}/via-link.bin\n\
         put {l}/a.bin {rd}/d/c.bin\n\
         rm {rd}/d/c.bin\n\
         mkdir {rd}/e\n\
         rmdir {rd}/e\n\
         -rm {rd}/d/no-such-file\n\
         put {l}/tool.sh {rd}/d/replaced\n\
         put {l}/a.bin {rd}/d/newer\n\
         rename {rd}/d/newer {rd}/d/replaced\n\
         ln {rd}/d/b.bin {rd}/d/hard\n\
         put -f {l}/tool.sh {rd}/d/synced\n\
         copy {rd}/d/b.bin {rd}/d/copied\n\
         df {rd}/d\n\
         ls -1 {rd}/many\n\
         cd {rd}/d\n\
         pwd\n\
         ls\n"
    );
    let batch_file = local.join("batch");
    fs::write(&batch_file, batch).unwrap();
    let mut cmd = s.file_client("sftp");
    cmd.arg("-b").arg(&batch_file).arg("root@127.0.0.1");
    let out = run(cmd, b"");
    let listing = ok_output(&s, &out);
    assert!(
        listing.contains("b.bin") && listing.contains("link"),
        "{listing}"
    );
    assert!(
        listing.contains(&format!("Remote working directory: {rd}/d")),
        "{listing}"
    );
    let many: Vec<&str> = listing
        .lines()
        .filter(|l| l.starts_with(&format!("{rd}/many/f")))
        .collect();
    assert_eq!(many.len(), 300, "{listing}");

    let d = r.join("d");
    assert!(fs::read(d.join("b.bin")).unwrap() == data, "put differs");
    assert_eq!(mode(&d.join("b.bin")), 0o640);
    assert!(!d.join("a.bin").exists(), "renamed away");
    assert_eq!(fs::read_link(d.join("link")).unwrap(), d.join("b.bin"));
    assert_eq!(
        fs::read_link(d.join("rel")).unwrap(),
        PathBuf::from("b.bin")
    );
    assert_eq!(mode(&d.join("tool.sh")), 0o755);
    assert_eq!(
        fs::metadata(d.join("tool.sh")).unwrap().mtime(),
        1_000_000_000
    );
    assert!(!d.join("c.bin").exists(), "rm");
    assert!(!r.join("e").exists(), "rmdir");
    assert!(
        fs::read(local.join("got.bin")).unwrap() == data,
        "get differs"
    );
    assert!(fs::read(local.join("via-link.bin")).unwrap() == data);
    // OpenSSH's extensions: rename replaces an existing target
    // (posix-rename), ln makes a hard link, put -f syncs (fsync), copy
    // copies on the server (copy-data), df reports the file system.
    assert!(
        fs::read(d.join("replaced")).unwrap() == data,
        "rename over a file"
    );
    assert!(!d.join("newer").exists());
    let (b, hard) = (
        fs::metadata(d.join("b.bin")).unwrap(),
        fs::metadata(d.join("hard")).unwrap(),
    );
    assert_eq!((hard.ino(), b.nlink()), (b.ino(), 2), "ln");
    assert_eq!(fs::read(d.join("synced")).unwrap(), b"#!/bin/sh\n");
    assert!(fs::read(d.join("copied")).unwrap() == data, "copy");
    assert!(listing.contains("%Capacity"), "df: {listing}");
    // `ls -l` names owners and shows dates like sshd's sftp-server.
    let ls_line = |file: &str| -> Vec<String> {
        listing
            .lines()
            .find(|l| !l.starts_with("sftp>") && l.ends_with(&format!("/{file}")))
            .unwrap_or_else(|| panic!("no ls -l line for {file}: {listing}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let b = ls_line("b.bin");
    assert_eq!(
        (b[0].as_str(), b[2].as_str(), b[3].as_str(), b[4].as_str()),
        ("-rw-r-----", "root", "root", "1000000"),
        "{b:?}"
    );
    let tool = ls_line("tool.sh");
    assert_eq!(tool[0], "-rwxr-xr-x");
    assert_eq!(&tool[5..8], &["Sep", "9", "2001"], "{tool:?}");

    // A failing command fails the batch, naming the reason.
    let fail = local.join("fail");
    fs::write(&fail, format!("get {rd}/no-such-file {l}/x\n")).unwrap();
    let mut cmd = s.file_client("sftp");
    cmd.arg("-b").arg(&fail).arg("root@127.0.0.1");
    let out = run(cmd, b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not found"),
        "{}",
        text(&out.stderr)
    );
    assert!(!local.join("x").exists());
}

fn set_mtime(path: &Path, secs: i64) {
    let t = nix::sys::time::TimeSpec::new(secs, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::FollowSymlink,
    )
    .unwrap();
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

// ----------------------------------------------------------------- scp

/// A tree with nested dirs, odd modes and a fixed mtime.
fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("sub/deeper")).unwrap();
    fs::write(root.join("a.txt"), b"alpha\n").unwrap();
    fs::write(root.join("sub/b.bin"), pseudo_random(300_000, 4)).unwrap();
    fs::write(root.join("sub/deeper/c.sh"), b"#!/bin/sh\necho c\n").unwrap();
    fs::write(root.join("sub/deeper/empty"), b"").unwrap();
    // Names a shell would split or mangle (legacy scp quotes them).
    fs::write(root.join("sub/with space & $dollar.txt"), b"odd name\n").unwrap();
    fs::write(root.join("sub/ünïcødé-'quote'.txt"), b"unicode\n").unwrap();
    for (p, m) in [
        ("a.txt", 0o644),
        ("sub/b.bin", 0o600),
        ("sub/deeper/c.sh", 0o755),
        ("sub/deeper/empty", 0o400),
        ("sub", 0o750),
    ] {
        fs::set_permissions(root.join(p), fs::Permissions::from_mode(m)).unwrap();
    }
    for p in ["a.txt", "sub/b.bin", "sub/deeper/c.sh", "sub/deeper/empty"] {
        set_mtime(&root.join(p), 1_234_567_890);
    }
}

/// (relative path, is dir, mode, content, mtime for files) of every entry.
fn tree_of(root: &Path) -> Vec<(PathBuf, bool, u32, Vec<u8>, i64)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if m.is_dir() {
                stack.push(p.clone());
                out.push((rel, true, m.mode() & 0o7777, vec![], 0));
            } else {
                out.push((
                    rel,
                    false,
                    m.mode() & 0o7777,
                    fs::read(&p).unwrap(),
                    m.mtime(),
                ));
            }
        }
    }
    out.sort();
    out
}

fn scp_round_trip(kind: Server, legacy: bool) {
    let s = Running::start(kind);
    let local = work_dir(&s, "local");
    let r = work_dir(&s, "remote");
    make_tree(&local.join("tree"));
    let expected = tree_of(&local.join("tree"));

    let mut up = s.file_client("scp");
    if legacy {
        up.arg("-O");
    }
    up.arg("-r")
        .arg("-p")
        .arg(local.join("tree"))
        .arg(format!("root@127.0.0.1:{}/up", r.display()));
    ok_output(&s, &run(up, b""));
    assert_eq!(tree_of(&r.join("up")), expected, "upload");

    let mut down = s.file_client("scp");
    if legacy {
        down.arg("-O");
    }
    down.arg("-r")
        .arg("-p")
        .arg(format!("root@127.0.0.1:{}/up", r.display()))
        .arg(local.join("down"));
    ok_output(&s, &run(down, b""));
    assert_eq!(tree_of(&local.join("down")), expected, "download");
}

pub(crate) fn scp_recursive_preserves_tree_and_modes(kind: Server) {
    // scp's default protocol is sftp.
    scp_round_trip(kind, false);
}

pub(crate) fn scp_legacy_protocol_preserves_tree_and_modes(kind: Server) {
    // `scp -O` runs `scp -t`/`scp -f` on the server through exec.
    scp_round_trip(kind, true);
}
