//! Real repositories in temp dirs, real git, and the real import and
//! export scripts run locally with `sh` (they are plain sh + git + tar):
//! pack → import → compare, then commit → export → fetch → compare.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use hangar_workspace::{
    fetch_bundle, inspect, write_pack, ExportOutcome, PackOptions, Source, WorkspaceError,
};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Tëst Author")
        .env("GIT_AUTHOR_EMAIL", "author@example.com")
        .env("GIT_COMMITTER_NAME", "Tëst Author")
        .env("GIT_COMMITTER_EMAIL", "author@example.com")
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn me() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A repository with history on two branches, a submodule, a remote,
/// ignored files, and staged, unstaged and untracked changes of every
/// kind of file.
fn rich_repo(root: &Path) -> PathBuf {
    let sub = root.join("sub-src");
    git(root, &["init", "-q", "-b", "main", sub.to_str().unwrap()]);
    write(&sub.join("lib.txt"), b"submodule content\n");
    git(&sub, &["add", "."]);
    git(&sub, &["commit", "-qm", "sub: first"]);

    let repo = root.join("my repo");
    git(root, &["init", "-q", "-b", "main", repo.to_str().unwrap()]);
    git(&repo, &["config", "user.name", "Ünïcode Üser"]);
    git(&repo, &["config", "user.email", "user@example.com"]);
    write(&repo.join(".gitignore"), b"*.log\nbuild/\n");
    write(&repo.join("README.md"), b"# hello\n");
    write(&repo.join("staged-and-unstaged.txt"), b"one\n");
    write(&repo.join("to-delete.txt"), b"delete me\n");
    write(&repo.join("to-unstage-delete.txt"), b"delete me later\n");
    write(&repo.join("mode.sh"), b"#!/bin/sh\necho mode\n");
    let binary: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    write(&repo.join("data.bin"), &binary);
    write(&repo.join("dir with space/ünï cödé.txt"), b"unicode\n");
    write(&repo.join("empty"), b"");
    write(&repo.join("run.sh"), b"#!/bin/sh\necho run\n");
    chmod(&repo.join("run.sh"), 0o755);
    symlink("README.md", repo.join("link-to-readme")).unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "first"]);
    for i in 0..3 {
        write(&repo.join("history.txt"), format!("{i}\n").as_bytes());
        git(&repo, &["add", "history.txt"]);
        git(&repo, &["commit", "-qm", &format!("history {i}")]);
    }
    git(&repo, &["checkout", "-q", "-b", "feature"]);
    write(&repo.join("feature.txt"), b"feature\n");
    git(&repo, &["add", "feature.txt"]);
    git(&repo, &["commit", "-qm", "feature"]);
    git(&repo, &["checkout", "-q", "main"]);
    git(&repo, &["tag", "v1"]);
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
    git(&repo, &["commit", "-qm", "add submodule"]);
    git(
        &repo,
        &[
            "remote",
            "add",
            "origin",
            "https://example.invalid/my repo.git",
        ],
    );
    git(
        &repo,
        &["remote", "add", "upstream", "git@example.invalid:u/r.git"],
    );

    // Ignored: never copied.
    write(&repo.join("debug.log"), b"ignored\n");
    write(&repo.join("build/out.o"), b"ignored\n");
    // Staged.
    write(&repo.join("staged-and-unstaged.txt"), b"one\ntwo\n");
    write(&repo.join("new-staged.bin"), &[0, 1, 2, 0, 255]);
    git(&repo, &["add", "staged-and-unstaged.txt", "new-staged.bin"]);
    git(&repo, &["rm", "-q", "to-delete.txt"]);
    // Unstaged on top.
    write(&repo.join("staged-and-unstaged.txt"), b"one\ntwo\nthree\n");
    write(&repo.join("README.md"), b"# hello, changed\n");
    std::fs::remove_file(repo.join("to-unstage-delete.txt")).unwrap();
    chmod(&repo.join("mode.sh"), 0o755);
    // Untracked.
    write(&repo.join("untracked.txt"), b"untracked\n");
    write(&repo.join("new dir/ñéw fïlé.txt"), b"untracked unicode\n");
    write(&repo.join("untracked-empty"), b"");
    write(&repo.join("untracked.sh"), b"#!/bin/sh\n");
    chmod(&repo.join("untracked.sh"), 0o755);
    symlink("untracked.txt", repo.join("untracked-link")).unwrap();
    write(&repo.join("private.key"), b"0600\n");
    chmod(&repo.join("private.key"), 0o600);
    repo
}

/// Every path git shows (tracked and untracked-not-ignored, without
/// submodule contents), with its type, mode and content.
fn manifest(dir: &Path) -> BTreeMap<String, String> {
    let list = git(
        dir,
        &[
            "ls-files",
            "--cached",
            "--others",
            "--exclude-standard",
            "-z",
        ],
    );
    let mut out = BTreeMap::new();
    for p in list.split('\0').filter(|p| !p.is_empty()) {
        let full = dir.join(p);
        let Ok(meta) = std::fs::symlink_metadata(&full) else {
            out.insert(p.to_string(), "missing".to_string());
            continue;
        };
        let entry = if meta.file_type().is_symlink() {
            format!("link {}", std::fs::read_link(&full).unwrap().display())
        } else if meta.is_dir() {
            "dir (submodule)".to_string()
        } else {
            let bytes = std::fs::read(&full).unwrap();
            format!("file {:o} {:?}", meta.mode() & 0o777, bytes)
        };
        out.insert(p.to_string(), entry);
    }
    out
}

fn pack_to_file(source: &Source, opts: &PackOptions, path: &Path) {
    let f = std::fs::File::create(path).unwrap();
    write_pack(source, opts, f, &mut |_| {}).unwrap();
}

fn import_locally(pack: &Path, dest: &Path, force: bool) -> std::process::Output {
    let argv = hangar_workspace::import_command(dest.to_str().unwrap(), force, &me());
    Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::fs::File::open(pack).unwrap())
        .output()
        .unwrap()
}

fn status_v2(dir: &Path) -> String {
    git(dir, &["status", "--porcelain=v2", "--untracked-files=all"])
}

#[test]
fn import_reproduces_branch_history_and_every_kind_of_change() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = rich_repo(tmp.path());
    let source = inspect(&repo).unwrap();
    let pack = tmp.path().join("pack.tar");
    let dest = tmp.path().join("guest/workspace/my repo");

    pack_to_file(&source, &PackOptions::default(), &pack);
    let out = import_locally(&pack, &dest, false);

    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(status_v2(&dest), status_v2(&repo));
    assert_eq!(manifest(&dest), manifest(&repo));
    assert_eq!(
        git(&dest, &["rev-parse", "HEAD"]),
        git(&repo, &["rev-parse", "HEAD"])
    );
    assert_eq!(git(&dest, &["symbolic-ref", "HEAD"]), "refs/heads/main\n");
    assert_eq!(git(&dest, &["remote", "-v"]), git(&repo, &["remote", "-v"]));
    assert_eq!(
        git(&dest, &["rev-parse", "feature", "v1", "refs/hangar/base"]),
        git(&repo, &["rev-parse", "feature", "v1", "HEAD"])
    );
    assert_eq!(
        git(&dest, &["rev-list", "--count", "HEAD"]),
        git(&repo, &["rev-list", "--count", "HEAD"])
    );
    assert_eq!(git(&dest, &["config", "user.name"]), "Ünïcode Üser\n");
    assert_eq!(git(&dest, &["config", "user.email"]), "user@example.com\n");
    // The submodule: the same gitlink, and its own history checked out.
    assert_eq!(
        git(&dest, &["ls-files", "-s", "vendor/sub"]),
        git(&repo, &["ls-files", "-s", "vendor/sub"])
    );
    assert_eq!(
        git(&dest.join("vendor/sub"), &["rev-parse", "HEAD"]),
        git(&repo.join("vendor/sub"), &["rev-parse", "HEAD"])
    );
    assert_eq!(
        std::fs::read(dest.join("vendor/sub/lib.txt")).unwrap(),
        b"submodule content\n"
    );
    assert_eq!(
        git(&dest.join("vendor/sub"), &["remote", "get-url", "origin"]),
        git(&repo.join("vendor/sub"), &["remote", "get-url", "origin"])
    );
    assert!(!dest.join("debug.log").exists());
    assert!(!dest.join("build").exists());
    // Nothing is left beside the destination.
    let siblings: Vec<_> = std::fs::read_dir(dest.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(siblings, vec![std::ffi::OsString::from("my repo")]);
}

#[test]
fn import_of_a_detached_head_is_detached_at_the_same_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = rich_repo(tmp.path());
    // Detached with every kind of change kept.
    git(&repo, &["checkout", "-q", "--detach", "HEAD"]);
    let source = inspect(&repo).unwrap();
    let pack = tmp.path().join("pack.tar");
    let dest = tmp.path().join("dest");

    pack_to_file(&source, &PackOptions::default(), &pack);
    let out = import_locally(&pack, &dest, false);

    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let Source::Git(info) = &source else {
        panic!("not git")
    };
    assert_eq!(info.branch, None);
    assert_eq!(
        git(&dest, &["rev-parse", "HEAD"]),
        git(&repo, &["rev-parse", "HEAD"])
    );
    let sym = Command::new("git")
        .arg("-C")
        .arg(&dest)
        .args(["symbolic-ref", "-q", "HEAD"])
        .status()
        .unwrap();
    assert!(!sym.success(), "HEAD must be detached");
    assert_eq!(status_v2(&dest), status_v2(&repo));
}

#[test]
fn import_with_depth_makes_a_shallow_repo_with_the_same_state() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = rich_repo(tmp.path());
    let source = inspect(&repo).unwrap();
    let pack = tmp.path().join("pack.tar");
    let dest = tmp.path().join("dest");

    pack_to_file(&source, &PackOptions { depth: Some(2) }, &pack);
    let out = import_locally(&pack, &dest, false);

    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(git(&dest, &["rev-list", "--count", "HEAD"]), "2\n");
    assert_eq!(
        git(&dest, &["rev-parse", "--is-shallow-repository"]),
        "true\n"
    );
    assert_eq!(status_v2(&dest), status_v2(&repo));
    assert_eq!(manifest(&dest), manifest(&repo));
    git(&dest, &["fsck", "--no-progress"]);
}

#[test]
fn import_refuses_an_existing_destination_and_leaves_it() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = rich_repo(tmp.path());
    let pack = tmp.path().join("pack.tar");
    let dest = tmp.path().join("dest");
    write(&dest.join("keep.txt"), b"mine\n");
    pack_to_file(&inspect(&repo).unwrap(), &PackOptions::default(), &pack);

    let out = import_locally(&pack, &dest, false);

    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert_eq!(std::fs::read(dest.join("keep.txt")).unwrap(), b"mine\n");
    assert_eq!(
        std::fs::read_dir(tmp.path().join("dest")).unwrap().count(),
        1
    );
}

#[test]
fn import_with_force_replaces_an_existing_destination() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = rich_repo(tmp.path());
    let pack = tmp.path().join("pack.tar");
    let dest = tmp.path().join("dest");
    write(&dest.join("keep.txt"), b"old\n");
    pack_to_file(&inspect(&repo).unwrap(), &PackOptions::default(), &pack);

    let out = import_locally(&pack, &dest, true);

    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dest.join("keep.txt").exists());
    assert_eq!(manifest(&dest), manifest(&repo));
}

#[test]
fn a_truncated_stream_leaves_nothing_at_the_destination() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = rich_repo(tmp.path());
    let pack = tmp.path().join("pack.tar");
    pack_to_file(&inspect(&repo).unwrap(), &PackOptions::default(), &pack);
    let full = std::fs::read(&pack).unwrap();
    let cut = tmp.path().join("cut.tar");
    std::fs::write(&cut, &full[..full.len() / 2]).unwrap();
    let parent = tmp.path().join("guest");
    std::fs::create_dir(&parent).unwrap();

    let out = import_locally(&cut, &parent.join("dest"), false);

    assert!(!out.status.success());
    assert_eq!(std::fs::read_dir(&parent).unwrap().count(), 0);
}

#[test]
fn a_plain_directory_is_copied_without_what_hangarignore_names() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("plain");
    write(&dir.join(".hangarignore"), b"target/\n*.tmp\n");
    write(&dir.join("src/main.rs"), b"fn main() {}\n");
    write(&dir.join("notes.tmp"), b"skip\n");
    write(&dir.join("target/big"), b"skip\n");
    write(&dir.join("tool"), b"#!/bin/sh\n");
    chmod(&dir.join("tool"), 0o755);
    symlink("src/main.rs", dir.join("main-link")).unwrap();
    let source = inspect(&dir).unwrap();
    assert!(matches!(source, Source::Plain(_)));
    let pack = tmp.path().join("pack.tar");
    let dest = tmp.path().join("dest");

    pack_to_file(&source, &PackOptions::default(), &pack);
    let out = import_locally(&pack, &dest, false);

    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(dest.join("src/main.rs")).unwrap(),
        b"fn main() {}\n"
    );
    assert!(!dest.join("notes.tmp").exists());
    assert!(!dest.join("target").exists());
    assert!(dest.join(".hangarignore").exists());
    let mode = std::fs::metadata(dest.join("tool")).unwrap().mode();
    assert_eq!(mode & 0o777, 0o755);
    assert_eq!(
        std::fs::read_link(dest.join("main-link")).unwrap(),
        Path::new("src/main.rs")
    );
    assert!(!dest.join(".git").exists());
}

#[test]
fn inspect_rejects_bad_input_with_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    assert!(matches!(
        inspect(&missing),
        Err(WorkspaceError::NotFound(_))
    ));
    let file = tmp.path().join("file");
    write(&file, b"x");
    assert!(matches!(
        inspect(&file),
        Err(WorkspaceError::NotADirectory(_))
    ));
    let unborn = tmp.path().join("unborn");
    git(tmp.path(), &["init", "-q", unborn.to_str().unwrap()]);
    assert!(matches!(
        inspect(&unborn),
        Err(WorkspaceError::UnbornHead(_))
    ));
    let repo = rich_repo(tmp.path());
    let shallow = tmp.path().join("shallow");
    let url = format!("file://{}", repo.display());
    git(
        tmp.path(),
        &[
            "clone",
            "-q",
            "--depth",
            "1",
            &url,
            shallow.to_str().unwrap(),
        ],
    );
    let err = inspect(&shallow).unwrap_err();
    assert!(matches!(err, WorkspaceError::Shallow(_)));
    assert!(err.to_string().contains("--unshallow"), "{err}");
    // From a subdirectory: the whole repository.
    let Source::Git(info) = inspect(&repo.join("dir with space")).unwrap() else {
        panic!("not git")
    };
    assert_eq!(info.top, std::fs::canonicalize(&repo).unwrap());
}

/// Everything of the host repository an export must not touch: the
/// index file, HEAD, every ref but the exported branch, and the files.
fn untouchable(repo: &Path, except: &str) -> (Vec<u8>, String, String, BTreeMap<String, String>) {
    let refs: String = git(repo, &["for-each-ref", "--format=%(refname) %(objectname)"])
        .lines()
        .filter(|l| !l.starts_with(&format!("{except} ")))
        .map(|l| format!("{l}\n"))
        .collect();
    (
        std::fs::read(repo.join(".git/index")).unwrap(),
        std::fs::read_to_string(repo.join(".git/HEAD")).unwrap(),
        refs,
        manifest(repo),
    )
}

fn export_locally(dest: &Path, uncommitted: bool, bundle: &Path) -> i32 {
    let argv = hangar_workspace::export_command(dest.to_str().unwrap(), uncommitted);
    let st = Command::new(&argv[0])
        .args(&argv[1..])
        .stdout(std::fs::File::create(bundle).unwrap())
        .stderr(Stdio::inherit())
        .status()
        .unwrap();
    st.code().unwrap()
}

fn commit_in(dest: &Path, file: &str, content: &str) {
    write(&dest.join(file), content.as_bytes());
    git(dest, &["add", file]);
    git(dest, &["commit", "-qm", &format!("guest: {file}")]);
}

#[test]
fn export_round_trip_fetches_one_branch_and_touches_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = rich_repo(tmp.path());
    let pack = tmp.path().join("pack.tar");
    let dest = tmp.path().join("dest");
    pack_to_file(&inspect(&repo).unwrap(), &PackOptions::default(), &pack);
    assert!(import_locally(&pack, &dest, false).status.success());
    let bundle = tmp.path().join("export.bundle");
    let before = untouchable(&repo, "refs/heads/hangar/dev");
    let status_before = status_v2(&repo);

    // Nothing committed yet: nothing to export.
    assert_eq!(export_locally(&dest, false, &bundle), 3);
    // Two commits (the uncommitted import state stays out of them).
    git(&dest, &["stash", "-q", "-u"]);
    commit_in(&dest, "guest-1.txt", "one\n");
    commit_in(&dest, "guest-2.txt", "two\n");
    assert_eq!(export_locally(&dest, false, &bundle), 0);
    let first = fetch_bundle(&repo, &bundle, "hangar/dev", false).unwrap();
    let guest_head = git(&dest, &["rev-parse", "HEAD"]).trim().to_string();
    assert_eq!(
        first,
        ExportOutcome::Created {
            branch: "hangar/dev".into(),
            commit: guest_head.clone()
        }
    );
    assert_eq!(
        git(&repo, &["rev-parse", "refs/heads/hangar/dev"]).trim(),
        guest_head
    );
    assert_eq!(untouchable(&repo, "refs/heads/hangar/dev"), before);
    assert_eq!(status_v2(&repo), status_before);
    assert!(!repo.join(".git/FETCH_HEAD").exists());

    // More commits: a fast-forward.
    commit_in(&dest, "guest-3.txt", "three\n");
    assert_eq!(export_locally(&dest, false, &bundle), 0);
    let second = fetch_bundle(&repo, &bundle, "hangar/dev", false).unwrap();
    assert!(
        matches!(second, ExportOutcome::FastForward { .. }),
        "{second:?}"
    );

    // History rewritten in the guest: refused, then forced.
    git(&dest, &["reset", "-q", "--hard", "HEAD~2"]);
    commit_in(&dest, "guest-other.txt", "other\n");
    assert_eq!(export_locally(&dest, false, &bundle), 0);
    let err = fetch_bundle(&repo, &bundle, "hangar/dev", false).unwrap_err();
    assert!(matches!(err, WorkspaceError::Diverged { .. }), "{err}");
    assert!(err.to_string().contains("--force"), "{err}");
    let forced = fetch_bundle(&repo, &bundle, "hangar/dev", true).unwrap();
    assert!(matches!(forced, ExportOutcome::Forced { .. }), "{forced:?}");
    assert_eq!(untouchable(&repo, "refs/heads/hangar/dev"), before);
    assert_eq!(status_v2(&repo), status_before);
}

#[test]
fn export_with_uncommitted_adds_one_commit_and_leaves_the_guest_branch() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = rich_repo(tmp.path());
    let pack = tmp.path().join("pack.tar");
    let dest = tmp.path().join("dest");
    pack_to_file(&inspect(&repo).unwrap(), &PackOptions::default(), &pack);
    assert!(import_locally(&pack, &dest, false).status.success());
    let guest_head = git(&dest, &["rev-parse", "HEAD"]);
    let guest_status = status_v2(&dest);
    let bundle = tmp.path().join("export.bundle");

    assert_eq!(export_locally(&dest, true, &bundle), 0);
    fetch_bundle(&repo, &bundle, "hangar/wip", false).unwrap();

    assert_eq!(git(&dest, &["rev-parse", "HEAD"]), guest_head);
    assert_eq!(status_v2(&dest), guest_status);
    assert_eq!(
        git(&repo, &["rev-parse", "hangar/wip^"]),
        git(&repo, &["rev-parse", "HEAD"])
    );
    // The extra commit holds the working tree, untracked files included.
    let files = git(&repo, &["ls-tree", "-r", "--name-only", "hangar/wip"]);
    assert!(files.contains("untracked.txt"), "{files}");
    assert!(!files.contains("to-unstage-delete.txt"), "{files}");
    assert!(!files.contains("debug.log"), "{files}");
    assert_eq!(
        git(&repo, &["show", "hangar/wip:staged-and-unstaged.txt"]),
        "one\ntwo\nthree\n"
    );
}

#[test]
fn fetch_refuses_a_bundle_with_other_refs() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = rich_repo(tmp.path());
    let bundle = tmp.path().join("evil.bundle");
    git(
        &repo,
        &[
            "bundle",
            "create",
            "-q",
            bundle.to_str().unwrap(),
            "main",
            "feature",
        ],
    );
    let refs_before = git(&repo, &["for-each-ref"]);

    let err = fetch_bundle(&repo, &bundle, "hangar/x", false).unwrap_err();

    assert!(matches!(err, WorkspaceError::BadBundle(_)), "{err}");
    assert_eq!(git(&repo, &["for-each-ref"]), refs_before);
}

#[test]
fn fetch_refuses_the_checked_out_branch() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = rich_repo(tmp.path());
    let pack = tmp.path().join("pack.tar");
    let dest = tmp.path().join("dest");
    pack_to_file(&inspect(&repo).unwrap(), &PackOptions::default(), &pack);
    assert!(import_locally(&pack, &dest, false).status.success());
    git(&dest, &["stash", "-q", "-u"]);
    commit_in(&dest, "g.txt", "g\n");
    let bundle = tmp.path().join("export.bundle");
    assert_eq!(export_locally(&dest, false, &bundle), 0);

    let err = fetch_bundle(&repo, &bundle, "main", true).unwrap_err();

    assert!(matches!(err, WorkspaceError::CheckedOut { .. }), "{err}");
}

#[test]
fn status_script_reports_branch_ahead_and_uncommitted() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = rich_repo(tmp.path());
    let pack = tmp.path().join("pack.tar");
    let dest = tmp.path().join("dest");
    pack_to_file(&inspect(&repo).unwrap(), &PackOptions::default(), &pack);
    assert!(import_locally(&pack, &dest, false).status.success());
    git(&dest, &["stash", "-q", "-u"]);
    commit_in(&dest, "g.txt", "g\n");
    write(&dest.join("wip file.txt"), b"wip\n");
    let argv = hangar_workspace::status_command(dest.to_str().unwrap());

    let out = Command::new(&argv[0]).args(&argv[1..]).output().unwrap();

    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = hangar_workspace::parse_status(&out.stdout).unwrap();
    assert_eq!(st.branch.as_deref(), Some("main"));
    assert_eq!(st.ahead, 1);
    assert_eq!(st.uncommitted, vec!["?? wip file.txt".to_string()]);
}
