//! The pack: one tar stream that [`crate::IMPORT_SCRIPT`] unpacks in the
//! guest. Entries, in order:
//!
//! - `meta.json` (for people), `meta/kind` (`git` or `plain`);
//! - git: `meta/head`, `meta/branch` (empty when detached), `meta/remotes`
//!   (NAME and URL lines in pairs), `meta/upstream`, `meta/user.name`,
//!   `meta/user.email`, `meta/shallow` (with `--depth`), `repo.bundle`
//!   (`git bundle` of HEAD, the branches, tags and remote-tracking refs; or
//!   of HEAD and the branch at `--depth N`), `staged.patch` (`git diff
//!   --cached --binary`), `unstaged.patch` (`git diff --binary`) and
//!   `untracked/…` (untracked files that are not ignored), and per
//!   checked-out submodule `submodules/N/{path,head,repo.bundle}` (its
//!   own history; checked out in the guest at the commit it is at here);
//! - plain: `files/…` (the directory, less what `.hangarignore` names);
//! - `end`, last: the script refuses a stream without it.
//!
//! Nothing is held in memory: the bundle and the patches go through a
//! private temp dir on the user's disk (their size must be in the tar
//! header before their bytes), files are copied from the tree as they are.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::error::WorkspaceError;
use crate::git;
use crate::inspect::{GitRepo, PlainDir, Source};

#[derive(Debug, Clone, Default)]
pub struct PackOptions {
    /// Only the last N commits of the current branch (a shallow repo in the
    /// guest); `None`: full history.
    pub depth: Option<u32>,
}

/// What went into a pack.
#[derive(Debug, Clone, Default)]
pub struct PackSummary {
    pub bundle_bytes: u64,
    pub untracked_files: u64,
    pub files: u64,
    /// Submodules packed with their own history.
    pub submodules: u64,
    /// Paths left out, with why (nested repositories, sockets, ...).
    pub skipped: Vec<String>,
}

/// Writes the pack of `source` to `w`. `phase` is told what is being done
/// (for a progress line).
pub fn write_pack<W: Write>(
    source: &Source,
    opts: &PackOptions,
    w: W,
    phase: &mut dyn FnMut(&str),
) -> Result<PackSummary, WorkspaceError> {
    if opts.depth == Some(0) {
        return Err(WorkspaceError::BadDepth);
    }
    let mut tar = tar::Builder::new(w);
    tar.follow_symlinks(false);
    let meta = serde_json::to_vec_pretty(source).map_err(|e| WorkspaceError::Io {
        what: "cannot encode meta.json".to_string(),
        source: e.into(),
    })?;
    add_bytes(&mut tar, "meta.json", &meta)?;
    let summary = match source {
        Source::Git(repo) => pack_git(&mut tar, repo, opts, phase)?,
        Source::Plain(dir) => pack_plain(&mut tar, dir, phase)?,
    };
    add_bytes(&mut tar, "end", b"")?;
    tar.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(WorkspaceError::io("cannot finish the workspace stream"))?;
    Ok(summary)
}

fn pack_git<W: Write>(
    tar: &mut tar::Builder<W>,
    repo: &GitRepo,
    opts: &PackOptions,
    phase: &mut dyn FnMut(&str),
) -> Result<PackSummary, WorkspaceError> {
    let mut summary = PackSummary::default();
    add_bytes(tar, "meta/kind", b"git")?;
    add_bytes(tar, "meta/head", repo.head.as_bytes())?;
    add_bytes(
        tar,
        "meta/branch",
        repo.branch.as_deref().unwrap_or("").as_bytes(),
    )?;
    let mut remotes = String::new();
    for r in &repo.remotes {
        remotes.push_str(&format!("{}\n{}\n", r.name, r.url));
    }
    add_bytes(tar, "meta/remotes", remotes.as_bytes())?;
    if let Some((r, m)) = &repo.upstream {
        add_bytes(tar, "meta/upstream", format!("{r}\n{m}\n").as_bytes())?;
    }
    if let Some(n) = &repo.user_name {
        add_bytes(tar, "meta/user.name", n.as_bytes())?;
    }
    if let Some(e) = &repo.user_email {
        add_bytes(tar, "meta/user.email", e.as_bytes())?;
    }

    let tmp = tempfile::Builder::new()
        .prefix("hangar-workspace-")
        .tempdir()
        .map_err(WorkspaceError::io("cannot make a temp dir"))?;
    let bundle = tmp.path().join("repo.bundle");
    phase("bundling history");
    match opts.depth {
        None => {
            let b = bundle.to_string_lossy().into_owned();
            let args = [
                "bundle",
                "create",
                "-q",
                &b,
                "HEAD",
                "--branches",
                "--tags",
                "--remotes",
            ];
            git::run(&repo.top, &args)?;
        }
        Some(depth) => {
            let shallow = shallow_bundle(repo, depth, tmp.path(), &bundle)?;
            add_bytes(tar, "meta/shallow", &shallow)?;
        }
    }
    summary.bundle_bytes = add_file(tar, "repo.bundle", &bundle)?;
    std::fs::remove_file(&bundle).map_err(WorkspaceError::io("cannot remove the temp bundle"))?;

    phase("packing uncommitted changes");
    for (name, cached) in [("staged.patch", true), ("unstaged.patch", false)] {
        let path = tmp.path().join(name);
        diff_to(&repo.top, cached, &path)?;
        add_file(tar, name, &path)?;
    }

    phase("packing untracked files");
    let list = git::run(
        &repo.top,
        &["ls-files", "--others", "--exclude-standard", "-z"],
    )?;
    add_listed(tar, &repo.top, &list, "untracked", &mut summary)?;
    summary.untracked_files = summary.files;

    for (i, path) in repo.submodules.iter().enumerate() {
        let dir = repo.top.join(path);
        if !dir.join(".git").exists() {
            summary
                .skipped
                .push(format!("{path} (a submodule not checked out here)"));
            continue;
        }
        phase("bundling submodules");
        let head = git::text(&dir, &["rev-parse", "--verify", "HEAD^{commit}"])?;
        let b = tmp.path().join(format!("sub{i}.bundle"));
        let b_s = b.to_string_lossy().into_owned();
        git::run(
            &dir,
            &[
                "bundle",
                "create",
                "-q",
                &b_s,
                "HEAD",
                "--branches",
                "--tags",
                "--remotes",
            ],
        )?;
        add_bytes(tar, &format!("submodules/{i}/path"), path.as_bytes())?;
        add_bytes(tar, &format!("submodules/{i}/head"), head.as_bytes())?;
        summary.bundle_bytes += add_file(tar, &format!("submodules/{i}/repo.bundle"), &b)?;
        std::fs::remove_file(&b).map_err(WorkspaceError::io("cannot remove a temp bundle"))?;
        summary.submodules += 1;
    }
    Ok(summary)
}

/// A bundle of HEAD (and the branch) cut at `depth` commits, made through a
/// shallow fetch into a temp repository (git computes the cut); returns
/// the shallow file for the guest's `.git/shallow`.
fn shallow_bundle(
    repo: &GitRepo,
    depth: u32,
    tmp: &Path,
    bundle: &Path,
) -> Result<Vec<u8>, WorkspaceError> {
    let bare = tmp.join("shallow.git");
    let bare_s = bare.to_string_lossy().into_owned();
    git::run(tmp, &["init", "-q", "--bare", &bare_s])?;
    // file:// so that --depth applies (a plain path is a local clone).
    let url = format!("file://{}", repo.top.display());
    let depth_arg = format!("--depth={depth}");
    let mut args = vec![
        "fetch",
        "-q",
        "--no-tags",
        &depth_arg,
        &url,
        "+HEAD:refs/hangar/head",
    ];
    let branch_spec = repo
        .branch
        .as_ref()
        .map(|b| format!("+refs/heads/{b}:refs/heads/{b}"));
    if let Some(s) = &branch_spec {
        args.push(s);
    }
    git::run(&bare, &args)?;
    git::run(
        &bare,
        &["update-ref", "--no-deref", "HEAD", "refs/hangar/head"],
    )?;
    let b = bundle.to_string_lossy().into_owned();
    let mut args = vec!["bundle", "create", "-q", &b, "HEAD"];
    let branch_ref = repo.branch.as_ref().map(|b| format!("refs/heads/{b}"));
    if let Some(r) = &branch_ref {
        args.push(r);
    }
    git::run(&bare, &args)?;
    match std::fs::read(bare.join("shallow")) {
        Ok(s) => Ok(s),
        // History shorter than the depth: nothing was cut.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(WorkspaceError::Io {
            what: "cannot read the shallow list".to_string(),
            source: e,
        }),
    }
}

/// `git diff [--cached] --binary` into `path`, with every user setting
/// that changes the patch format turned off.
fn diff_to(top: &Path, cached: bool, path: &Path) -> Result<(), WorkspaceError> {
    let mut args = vec![
        "-c",
        "diff.noprefix=false",
        "-c",
        "diff.mnemonicPrefix=false",
        "-c",
        "diff.relative=false",
        "-c",
        "core.quotePath=true",
        "diff",
        "--binary",
        "--no-color",
        "--no-ext-diff",
        "--no-textconv",
        "--src-prefix=a/",
        "--dst-prefix=b/",
        "--submodule=short",
    ];
    if cached {
        args.push("--cached");
    }
    let file = File::create(path).map_err(WorkspaceError::io("cannot write a temp patch"))?;
    let mut cmd = git::command(top, &args);
    cmd.stdout(file);
    let out = git::output(cmd, &args)?;
    if !out.status.success() {
        return Err(git::failed(&args, &out));
    }
    Ok(())
}

fn pack_plain<W: Write>(
    tar: &mut tar::Builder<W>,
    dir: &PlainDir,
    phase: &mut dyn FnMut(&str),
) -> Result<PackSummary, WorkspaceError> {
    let mut summary = PackSummary::default();
    add_bytes(tar, "meta/kind", b"plain")?;
    phase("packing files");
    // git's own matcher over a throwaway repository: `.hangarignore` files
    // in gitignore syntax, and nothing else (.gitignore is a file here).
    let tmp = tempfile::Builder::new()
        .prefix("hangar-workspace-")
        .tempdir()
        .map_err(WorkspaceError::io("cannot make a temp dir"))?;
    let git_dir = tmp.path().join("list.git");
    let git_dir_s = git_dir.to_string_lossy().into_owned();
    git::run(tmp.path(), &["init", "-q", "--bare", &git_dir_s])?;
    let args = [
        "ls-files",
        "--others",
        "--exclude-per-directory=.hangarignore",
        "-z",
    ];
    let mut cmd = git::command(&dir.dir, &args);
    cmd.env("GIT_DIR", &git_dir).env("GIT_WORK_TREE", &dir.dir);
    let out = git::output(cmd, &args)?;
    if !out.status.success() {
        return Err(git::failed(&args, &out));
    }
    add_listed(tar, &dir.dir, &out.stdout, "files", &mut summary)?;
    Ok(summary)
}

/// Adds the NUL-separated `list` of paths under `root` as `prefix/PATH`:
/// regular files and symlinks; a directory in the list (a nested
/// repository) and special files are skipped and named in the summary.
fn add_listed<W: Write>(
    tar: &mut tar::Builder<W>,
    root: &Path,
    list: &[u8],
    prefix: &str,
    summary: &mut PackSummary,
) -> Result<(), WorkspaceError> {
    use std::os::unix::ffi::OsStrExt;
    for rel in list.split(|b| *b == 0).filter(|p| !p.is_empty()) {
        let rel_path = Path::new(std::ffi::OsStr::from_bytes(rel));
        let shown = rel_path.display().to_string();
        if rel.ends_with(b"/") {
            summary
                .skipped
                .push(format!("{shown} (a nested repository)"));
            continue;
        }
        let full = root.join(rel_path);
        let meta = match std::fs::symlink_metadata(&full) {
            Ok(m) => m,
            // Gone since git listed it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(WorkspaceError::Io {
                    what: format!("cannot read {}", full.display()),
                    source: e,
                })
            }
        };
        let ft = meta.file_type();
        if !(ft.is_file() || ft.is_symlink()) {
            summary.skipped.push(format!("{shown} (not a file)"));
            continue;
        }
        tar.append_path_with_name(&full, Path::new(prefix).join(rel_path))
            .map_err(WorkspaceError::io(format!(
                "cannot pack {}",
                full.display()
            )))?;
        summary.files += 1;
    }
    Ok(())
}

fn header(size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

fn add_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    bytes: &[u8],
) -> Result<(), WorkspaceError> {
    let mut h = header(bytes.len() as u64, 0o644);
    tar.append_data(&mut h, name, bytes)
        .map_err(WorkspaceError::io("cannot write the workspace stream"))
}

fn add_file<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    path: &Path,
) -> Result<u64, WorkspaceError> {
    let mut f = File::open(path).map_err(WorkspaceError::io(format!(
        "cannot open {}",
        path.display()
    )))?;
    let size = f
        .metadata()
        .map_err(WorkspaceError::io(format!(
            "cannot stat {}",
            path.display()
        )))?
        .len();
    let mut h = header(size, 0o644);
    tar.append_data(&mut h, name, &mut f)
        .map_err(WorkspaceError::io("cannot write the workspace stream"))?;
    Ok(size)
}
