//! End-to-end workspaces: a real repository on this machine imported into a
//! real guest through the CLI (qemu, TCG), commits made there as the guest
//! user, exported back as a branch. The host repository's working tree,
//! index, HEAD and other refs are compared byte for byte before and after.
//! Run one at a time (`--test-threads=1`).
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::TestDaemon;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Host Author")
        .env("GIT_AUTHOR_EMAIL", "host@example.com")
        .env("GIT_COMMITTER_NAME", "Host Author")
        .env("GIT_COMMITTER_EMAIL", "host@example.com")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// History on two branches, a submodule, a remote, ignored files, and
/// staged, unstaged and untracked changes (binary, executable, symlinks,
/// unicode names with spaces, empty files).
fn make_repo(root: &Path) -> PathBuf {
    let sub = root.join("sub-src");
    git(root, &["init", "-q", "-b", "main", sub.to_str().unwrap()]);
    write(&sub.join("lib.txt"), b"sub\n");
    git(&sub, &["add", "."]);
    git(&sub, &["commit", "-qm", "sub"]);

    let repo = root.join("proj");
    git(root, &["init", "-q", "-b", "main", repo.to_str().unwrap()]);
    git(&repo, &["config", "user.name", "Wörkspace Üser"]);
    git(&repo, &["config", "user.email", "ws@example.com"]);
    write(&repo.join(".gitignore"), b"*.log\ntarget/\n");
    write(&repo.join("README.md"), b"# proj\n");
    write(&repo.join("both.txt"), b"1\n");
    write(&repo.join("gone.txt"), b"gone\n");
    let binary: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    write(&repo.join("blob.bin"), &binary);
    write(&repo.join("dír wïth spåce/ファイル.txt"), b"unicode\n");
    write(&repo.join("empty"), b"");
    write(&repo.join("tool.sh"), b"#!/bin/sh\necho tool\n");
    std::fs::set_permissions(repo.join("tool.sh"), PermissionsExt::from_mode(0o755)).unwrap();
    symlink("README.md", repo.join("readme-link")).unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "first"]);
    for i in 0..5 {
        write(&repo.join("log.txt"), format!("{i}\n").as_bytes());
        git(&repo, &["add", "log.txt"]);
        git(&repo, &["commit", "-qm", &format!("commit {i}")]);
    }
    git(&repo, &["branch", "side", "HEAD~2"]);
    git(
        &repo,
        &[
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "-q",
            sub.to_str().unwrap(),
            "vendor/sub",
        ],
    );
    git(&repo, &["commit", "-qm", "submodule"]);
    git(
        &repo,
        &[
            "remote",
            "add",
            "origin",
            "https://example.invalid/proj.git",
        ],
    );

    write(&repo.join("debug.log"), b"ignored\n");
    write(&repo.join("target/out"), b"ignored\n");
    write(&repo.join("both.txt"), b"1\n2\n");
    write(&repo.join("staged-new.bin"), &[0, 159, 146, 150]);
    git(&repo, &["add", "both.txt", "staged-new.bin"]);
    git(&repo, &["rm", "-q", "gone.txt"]);
    write(&repo.join("both.txt"), b"1\n2\n3\n");
    write(&repo.join("README.md"), b"# proj, edited\n");
    write(&repo.join("new dir/ünïcode ñame.txt"), b"untracked\n");
    write(&repo.join("untracked-empty"), b"");
    symlink("both.txt", repo.join("untracked-link")).unwrap();
    repo
}

/// The same listing on both sides: each path git shows (tracked and
/// untracked, not ignored) with its mode and sha256, or its link target.
const MANIFEST: &str = r#"cd "$1" && git -c safe.directory='*' ls-files -z --cached --others --exclude-standard |
  xargs -0 -r sh -c 'for f; do
    if [ -L "$f" ]; then printf "%s link %s\n" "$f" "$(readlink "$f")";
    elif [ -d "$f" ]; then printf "%s dir\n" "$f";
    else printf "%s %s %s\n" "$f" "$(stat -c %a "$f")" "$(sha256sum <"$f" | cut -d" " -f1)"; fi
  done' sh | LC_ALL=C sort"#;

fn host_manifest(repo: &Path) -> String {
    let out = Command::new("sh")
        .args(["-c", MANIFEST, "sh", repo.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn guest_out(d: &TestDaemon, user: Option<&str>, cmd: &[&str]) -> String {
    let mut args = vec!["exec", "dev"];
    if let Some(u) = user {
        args.extend(["-u", u]);
    }
    args.push("--");
    args.extend_from_slice(cmd);
    d.ok(&args)
}

fn guest_manifest(d: &TestDaemon, dest: &str) -> String {
    guest_out(d, None, &["sh", "-c", MANIFEST, "sh", dest])
}

const STATUS_ARGS: &[&str] = &[
    "-c",
    "safe.directory=*",
    "status",
    "--porcelain=v2",
    "--untracked-files=all",
];

fn host_status(repo: &Path) -> String {
    git(repo, STATUS_ARGS)
}

fn guest_status(d: &TestDaemon, dest: &str) -> String {
    let mut args = vec!["git", "-C", dest];
    args.extend_from_slice(STATUS_ARGS);
    guest_out(d, None, &args)
}

/// What an export must leave alone, byte for byte.
fn host_snapshot(repo: &Path) -> (Vec<u8>, Vec<u8>, String, String, String) {
    let refs: String = git(repo, &["for-each-ref", "--format=%(refname) %(objectname)"])
        .lines()
        .filter(|l| !l.starts_with("refs/heads/hangar/"))
        .map(|l| format!("{l}\n"))
        .collect();
    (
        std::fs::read(repo.join(".git/index")).unwrap(),
        std::fs::read(repo.join(".git/HEAD")).unwrap(),
        refs,
        host_manifest(repo),
        host_status(repo),
    )
}

#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn workspace_import_commit_export_round_trip() {
    let _serial = common::serial();
    let tmp = tempfile::tempdir().unwrap();
    let repo = make_repo(tmp.path());
    let repo_s = repo.to_str().unwrap();
    let d = TestDaemon::start("ws");

    // Bad input before any VM exists: nothing is created.
    let err = d.fails(&["vm", "create", "dev", "--workspace", "/nonexistent/dir"]);
    assert!(err.contains("does not exist"), "{err}");
    assert_eq!(d.json(&["vm", "ls"]), serde_json::json!([]));
    let err = d.fails(&["workspace", "import", "nosuch", repo_s]);
    assert!(err.contains("nosuch"), "{err}");

    // Create with a workspace: root owns it (the image has no USER).
    d.ok(&["vm", "create", "dev", "--workspace", repo_s]);
    let dest = "/workspace/proj";
    assert_eq!(guest_status(&d, dest), host_status(&repo));
    assert_eq!(guest_manifest(&d, dest), host_manifest(&repo));
    assert_eq!(
        guest_out(&d, None, &["git", "-C", dest, "rev-parse", "HEAD", "side"]),
        git(&repo, &["rev-parse", "HEAD", "side"])
    );
    assert_eq!(
        guest_out(&d, None, &["git", "-C", dest, "symbolic-ref", "HEAD"]),
        "refs/heads/main\n"
    );
    assert_eq!(
        guest_out(&d, None, &["git", "-C", dest, "remote", "-v"]),
        git(&repo, &["remote", "-v"])
    );
    assert_eq!(
        guest_out(&d, None, &["git", "-C", dest, "config", "user.name"]),
        "Wörkspace Üser\n"
    );

    // The destination exists: refused, nothing changed.
    let err = d.fails(&["workspace", "import", "dev", repo_s]);
    assert!(err.contains("--force"), "{err}");
    assert_eq!(guest_manifest(&d, dest), host_manifest(&repo));

    // Bad input on the host side: clear errors.
    let unborn = tmp.path().join("unborn");
    git(tmp.path(), &["init", "-q", unborn.to_str().unwrap()]);
    let err = d.fails(&["workspace", "import", "dev", unborn.to_str().unwrap()]);
    assert!(err.contains("no commits"), "{err}");
    let shallow = tmp.path().join("shallow");
    git(
        tmp.path(),
        &[
            "clone",
            "-q",
            "--depth",
            "1",
            &format!("file://{repo_s}"),
            shallow.to_str().unwrap(),
        ],
    );
    let err = d.fails(&["workspace", "import", "dev", shallow.to_str().unwrap()]);
    assert!(err.contains("shallow"), "{err}");
    let err = d.fails(&["workspace", "import", "dev", repo_s, "--with-credentials"]);
    assert!(err.contains("not supported"), "{err}");

    // A guest user's copy, at depth 3.
    guest_out(&d, None, &["useradd", "-m", "-s", "/bin/sh", "dev"]);
    let udest = "/home/dev/proj";
    d.ok(&[
        "workspace",
        "import",
        "dev",
        repo_s,
        "--dest",
        udest,
        "--user",
        "dev",
        "--depth",
        "3",
    ]);
    assert_eq!(
        guest_out(
            &d,
            None,
            &["stat", "-c", "%U", udest, &format!("{udest}/README.md")]
        ),
        "dev\ndev\n"
    );
    assert_eq!(
        guest_out(
            &d,
            Some("dev"),
            &["git", "-C", udest, "rev-list", "--count", "HEAD"]
        ),
        "3\n"
    );
    assert_eq!(guest_manifest(&d, udest), host_manifest(&repo));

    // Commits in the guest, as the guest user.
    let before = host_snapshot(&repo);
    let commit = |file: &str| {
        guest_out(
            &d,
            Some("dev"),
            &[
                "sh",
                "-c",
                &format!("cd {udest} && echo {file} > {file} && git add {file} && git commit -qm 'guest {file}'"),
            ],
        );
    };
    guest_out(&d, Some("dev"), &["git", "-C", udest, "stash", "-q", "-u"]);
    commit("g1");
    commit("g2");
    let status = d.ok(&[
        "workspace",
        "status",
        "dev",
        "--repo",
        repo_s,
        "--dest",
        udest,
        "-u",
        "dev",
    ]);
    assert!(status.contains("commits   2 since the import"), "{status}");
    let out = d.ok(&[
        "workspace",
        "export",
        "dev",
        "--repo",
        repo_s,
        "--dest",
        udest,
        "-u",
        "dev",
    ]);
    assert!(out.contains("created branch hangar/dev"), "{out}");
    let guest_head = guest_out(&d, Some("dev"), &["git", "-C", udest, "rev-parse", "HEAD"]);
    assert_eq!(git(&repo, &["rev-parse", "hangar/dev"]), guest_head);
    assert_eq!(
        git(&repo, &["log", "-1", "--format=%an", "hangar/dev"]),
        "Wörkspace Üser\n"
    );
    assert_eq!(host_snapshot(&repo), before);

    // Re-export fast-forwards.
    commit("g3");
    let out = d.ok(&[
        "workspace",
        "export",
        "dev",
        "--repo",
        repo_s,
        "--dest",
        udest,
        "-u",
        "dev",
    ]);
    assert!(out.contains("fast-forwarded"), "{out}");
    assert_eq!(host_snapshot(&repo), before);

    // Diverged: refused without --force, then overwritten.
    guest_out(
        &d,
        Some("dev"),
        &["git", "-C", udest, "reset", "-q", "--hard", "HEAD~2"],
    );
    commit("other");
    let ff_head = git(&repo, &["rev-parse", "hangar/dev"]);
    let err = d.fails(&[
        "workspace",
        "export",
        "dev",
        "--repo",
        repo_s,
        "--dest",
        udest,
        "-u",
        "dev",
    ]);
    assert!(err.contains("--force"), "{err}");
    assert_eq!(git(&repo, &["rev-parse", "hangar/dev"]), ff_head);
    let out = d.ok(&[
        "workspace",
        "export",
        "dev",
        "--repo",
        repo_s,
        "--dest",
        udest,
        "-u",
        "dev",
        "--force",
    ]);
    assert!(out.contains("overwrote"), "{out}");
    assert_eq!(host_snapshot(&repo), before);

    // Uncommitted work as one extra commit; the guest's branch stays.
    guest_out(
        &d,
        Some("dev"),
        &["sh", "-c", &format!("echo wip > {udest}/wip.txt")],
    );
    let head = guest_out(&d, Some("dev"), &["git", "-C", udest, "rev-parse", "HEAD"]);
    d.ok(&[
        "workspace",
        "export",
        "dev",
        "--repo",
        repo_s,
        "--dest",
        udest,
        "-u",
        "dev",
        "--include-uncommitted",
        "--branch",
        "hangar/wip",
    ]);
    assert_eq!(git(&repo, &["show", "hangar/wip:wip.txt"]), "wip\n");
    assert_eq!(git(&repo, &["rev-parse", "hangar/wip^"]), head);
    assert_eq!(
        guest_out(&d, Some("dev"), &["git", "-C", udest, "rev-parse", "HEAD"]),
        head
    );
    assert_eq!(host_snapshot(&repo), before);

    // No git in the guest: refused before anything is sent.
    guest_out(&d, None, &["mv", "/usr/bin/git", "/usr/bin/git.hidden"]);
    let err = d.fails(&["workspace", "import", "dev", repo_s, "--dest", "/tmp/nogit"]);
    guest_out(&d, None, &["mv", "/usr/bin/git.hidden", "/usr/bin/git"]);
    assert!(err.contains("no git"), "{err}");
    assert!(!guest_out(&d, None, &["ls", "-A", "/tmp"]).contains("nogit"));

    // A stopped VM: a clear error.
    d.ok(&["vm", "stop", "dev"]);
    let err = d.fails(&["workspace", "import", "dev", repo_s, "--dest", "/tmp/x"]);
    assert!(err.contains("start"), "{err}");
    let err = d.fails(&["workspace", "export", "dev", "--repo", repo_s]);
    assert!(err.contains("start"), "{err}");
    d.ok(&["vm", "rm", "dev"]);
    assert_eq!(host_snapshot(&repo), before);
}
