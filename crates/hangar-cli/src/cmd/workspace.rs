//! `hangar workspace import|export|status` and `vm create --workspace`.
//!
//! Everything here runs as the invoking user: the repository is read and
//! written by `git` on this side, and the guest side is a shell script run
//! through the exec stream (the daemon never sees a host path). What the
//! guest sends back (its messages, its bundle) is untrusted: messages are
//! escaped, the bundle goes to a private temp file and only its one ref is
//! fetched (`hangar_workspace::fetch_bundle`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hangar_api::{ApiError, ExecRequest};
use hangar_host::sanitize::escape_controls;
use hangar_workspace::{
    default_dest, export_command, fetch_bundle, import_command, inspect, parse_probe, parse_status,
    probe_command, status_command, write_pack, ExportOutcome, PackOptions, Source, WorkspaceError,
    EXPORT_NOTHING_EXIT,
};
use indicatif::{ProgressBar, ProgressStyle};

use crate::args::{
    Cli, WorkspaceCommand, WorkspaceExportArgs, WorkspaceImportArgs, WorkspaceStatusArgs,
};
use crate::client::Client;
use crate::guest_run;
use crate::output;

/// The most a bundle from a guest may be.
const BUNDLE_CAP: u64 = 32 << 30;
/// The most the small scripts may print.
const SMALL_CAP: u64 = 16 << 20;

pub async fn run(cli: &Cli, client: &Client, cmd: &WorkspaceCommand) -> Result<(), ApiError> {
    match cmd {
        WorkspaceCommand::Import(a) => import(cli, client, a).await,
        WorkspaceCommand::Export(a) => export(cli, client, a).await,
        WorkspaceCommand::Status(a) => status(cli, client, a).await,
    }
}

fn ws_error(e: WorkspaceError) -> ApiError {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    match e {
        WorkspaceError::NotFound(_) => ApiError::not_found(msg),
        WorkspaceError::Diverged { .. } | WorkspaceError::CheckedOut { .. } => {
            ApiError::conflict(msg)
        }
        WorkspaceError::Io { .. } | WorkspaceError::NoGit(_) => ApiError::internal(msg),
        _ => ApiError::invalid(msg),
    }
}

/// The guest's standard error, safe to print: the last lines, escaped.
fn guest_message(stderr: &[u8]) -> String {
    let text = escape_controls(stderr);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = &lines[lines.len().saturating_sub(8)..];
    if tail.is_empty() {
        "(no message)".to_string()
    } else {
        tail.join("\n  ")
    }
}

fn check_dest(dest: &str) -> Result<(), ApiError> {
    if !dest.starts_with('/')
        || dest.contains(['\n', '\0'])
        || dest.trim_end_matches('/').is_empty()
    {
        return Err(ApiError::invalid(format!(
            "--dest {dest:?} must be an absolute path in the VM (not /)"
        )));
    }
    Ok(())
}

fn exec_req(command: Vec<String>, user: Option<String>) -> ExecRequest {
    ExecRequest {
        command,
        tty: false,
        term: None,
        cols: None,
        rows: None,
        env: Vec::new(),
        user,
    }
}

fn check_user(user: &Option<String>) -> Result<(), ApiError> {
    match user {
        Some(u) => hangar_api::validate_user_name(u).map_err(ApiError::invalid),
        None => Ok(()),
    }
}

/// Inspects PATH before anything else happens (so `vm create --workspace`
/// refuses bad input before it creates a VM).
pub fn inspect_path(path: &Path) -> Result<Source, ApiError> {
    inspect(path).map_err(ws_error)
}

async fn import(cli: &Cli, client: &Client, a: &WorkspaceImportArgs) -> Result<(), ApiError> {
    if a.with_credentials {
        return Err(ApiError::invalid(
            "--with-credentials is not supported yet: no credentials are copied into VMs. Push and fetch from this machine (export the VM's work with `hangar workspace export`), or set up a deploy key inside the VM; see docs/architecture.md, \"Workspaces\"",
        ));
    }
    let source = inspect_path(&a.path)?;
    let opts = ImportOptions {
        dest: a.dest.clone(),
        depth: a.depth,
        force: a.force,
        user: a.user.clone(),
    };
    import_source(cli, client, &a.vm, &source, &opts).await
}

pub struct ImportOptions {
    pub dest: Option<String>,
    pub depth: Option<u32>,
    pub force: bool,
    pub user: Option<String>,
}

/// Imports an inspected source into VM `vm`.
pub async fn import_source(
    cli: &Cli,
    client: &Client,
    vm: &str,
    source: &Source,
    opts: &ImportOptions,
) -> Result<(), ApiError> {
    check_user(&opts.user)?;
    if opts.depth == Some(0) {
        return Err(ApiError::invalid("--depth must be at least 1"));
    }
    let dest = opts.dest.clone().unwrap_or_else(|| default_dest(source));
    check_dest(&dest)?;
    match source {
        Source::Git(r) if r.branch.is_none() => eprintln!(
            "note: HEAD is detached at {}: the VM's copy is detached at the same commit",
            &r.head[..r.head.len().min(12)]
        ),
        Source::Plain(p) => eprintln!(
            "note: {} is not a git repository: copying its files (less what .hangarignore names); `hangar workspace export` will not be available",
            p.dir.display()
        ),
        Source::Git(_) => {}
    }

    // Ask the guest first: nothing is sent to a guest that cannot take it.
    let mut out = Vec::new();
    let probe = guest_run::run(
        client,
        vm,
        &exec_req(probe_command(&dest), None),
        None,
        None,
        &mut out,
        SMALL_CAP,
    )
    .await?;
    let Some(found) = (probe.code == 0).then(|| parse_probe(&out)).flatten() else {
        return Err(ApiError::internal(format!(
            "cannot check VM {vm} before the import: {}",
            guest_message(&probe.stderr)
        )));
    };
    if !found.git {
        return Err(ApiError::invalid(format!(
            "VM {vm} has no git: use an image with git (the default image has it), or install it there (`hangar exec {vm} -- apt-get install -y git`); nothing was sent"
        )));
    }
    if !found.tar {
        return Err(ApiError::invalid(format!(
            "VM {vm} has no tar: use an image with tar; nothing was sent"
        )));
    }
    if found.dest_exists && !opts.force {
        return Err(ApiError::conflict(format!(
            "{dest} already exists in VM {vm}: use --force to replace it, or --dest DIR; nothing was changed"
        )));
    }
    let owner = match &opts.user {
        Some(u) => u.clone(),
        None => {
            hangar_api::validate_user_name(&found.user).map_err(|e| {
                ApiError::internal(format!("VM {vm} reported a strange user name: {e}"))
            })?;
            found.user.clone()
        }
    };

    let bar = progress_bar();
    let producer: guest_run::Producer = {
        let source = source.clone();
        let pack_opts = PackOptions { depth: opts.depth };
        let bar = bar.clone();
        Box::new(move |w| {
            let mut phase = |p: &str| {
                if let Some(b) = &bar {
                    b.set_message(p.to_string());
                }
            };
            let summary =
                write_pack(&source, &pack_opts, w, &mut phase).map_err(|e| ws_error(e).message)?;
            for s in &summary.skipped {
                eprintln!("note: not copied: {}", escape_controls(s.as_bytes()));
            }
            if let Some(b) = &bar {
                b.set_message("importing in the VM");
            }
            Ok(())
        })
    };
    let started = std::time::Instant::now();
    let mut sink = std::io::sink();
    let done = guest_run::run(
        client,
        vm,
        &exec_req(
            import_command(&dest, opts.force, &owner),
            Some("root".into()),
        ),
        Some(producer),
        bar.clone(),
        &mut sink,
        SMALL_CAP,
    )
    .await;
    let sent = bar.as_ref().map(|b| b.position());
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let done = done?;
    if done.code != 0 {
        return Err(ApiError::internal(format!(
            "the import into VM {vm} failed (nothing was left at {dest}):\n  {}",
            guest_message(&done.stderr)
        )));
    }
    if cli.json {
        output::json(&serde_json::json!({
            "vm": vm,
            "dest": dest,
            "owner": owner,
            "source": source,
            "seconds": started.elapsed().as_secs_f64(),
        }));
    } else {
        let what = match source {
            Source::Git(r) => format!(
                "{} ({} at {})",
                r.top.display(),
                r.branch.as_deref().unwrap_or("detached HEAD"),
                &r.head[..r.head.len().min(12)]
            ),
            Source::Plain(p) => p.dir.display().to_string(),
        };
        let size = sent
            .map(|n| format!(", {} sent", output::human_bytes(n)))
            .unwrap_or_default();
        println!(
            "imported {what} into {vm}:{dest} (owner {owner}{size}, {:.1}s)",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

fn progress_bar() -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let b = ProgressBar::new_spinner();
    b.set_style(
        ProgressStyle::with_template("{spinner} {msg}: {bytes} sent ({bytes_per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    b.set_message("reading the repository");
    b.enable_steady_tick(Duration::from_millis(200));
    Some(b)
}

/// The host repository (must be git) and the guest path of its workspace.
fn repo_and_dest(repo: &Path, dest: &Option<String>) -> Result<(PathBuf, String), ApiError> {
    let source = inspect_path(repo)?;
    let Source::Git(r) = &source else {
        return Err(ApiError::invalid(format!(
            "{} is not a git repository: export and status need the repository the workspace was imported from (--repo DIR)",
            repo.display()
        )));
    };
    let dest = dest.clone().unwrap_or_else(|| default_dest(&source));
    check_dest(&dest)?;
    Ok((r.top.clone(), dest))
}

async fn guest_status(
    client: &Client,
    vm: &str,
    dest: &str,
    user: &Option<String>,
) -> Result<hangar_workspace::GuestStatus, ApiError> {
    let mut out = Vec::new();
    let done = guest_run::run(
        client,
        vm,
        &exec_req(status_command(dest), user.clone()),
        None,
        None,
        &mut out,
        SMALL_CAP,
    )
    .await?;
    if done.code != 0 {
        return Err(ApiError::invalid(format!(
            "cannot read the workspace {dest} in VM {vm}: {}",
            guest_message(&done.stderr)
        )));
    }
    parse_status(&out).ok_or_else(|| {
        ApiError::internal(format!("VM {vm} answered the status query with garbage"))
    })
}

async fn status(cli: &Cli, client: &Client, a: &WorkspaceStatusArgs) -> Result<(), ApiError> {
    check_user(&a.user)?;
    let (_, dest) = repo_and_dest(&a.repo, &a.dest)?;
    let st = guest_status(client, &a.vm, &dest, &a.user).await?;
    if cli.json {
        output::json(&serde_json::json!({
            "vm": a.vm,
            "dest": dest,
            "branch": st.branch,
            "head": st.head,
            "base": st.base,
            "ahead": st.ahead,
            "uncommitted": st.uncommitted,
        }));
        return Ok(());
    }
    let e = |s: &str| escape_controls(s.as_bytes());
    println!("workspace {}:{}", a.vm, e(&dest));
    match &st.branch {
        Some(b) => println!("branch    {}", e(b)),
        None => println!("branch    (detached HEAD)"),
    }
    println!(
        "commits   {} since the import ({})",
        st.ahead,
        e(short(&st.base))
    );
    if st.uncommitted.is_empty() {
        println!("uncommitted: none");
    } else {
        println!("uncommitted: {} files", st.uncommitted.len());
        for u in &st.uncommitted {
            println!("  {}", e(u));
        }
    }
    Ok(())
}

fn short(oid: &str) -> &str {
    &oid[..oid.len().min(12)]
}

async fn export(cli: &Cli, client: &Client, a: &WorkspaceExportArgs) -> Result<(), ApiError> {
    check_user(&a.user)?;
    let (top, dest) = repo_and_dest(&a.repo, &a.dest)?;
    let branch = a
        .branch
        .clone()
        .unwrap_or_else(|| format!("hangar/{}", a.vm));
    let st = guest_status(client, &a.vm, &dest, &a.user).await?;
    if !st.uncommitted.is_empty() && !a.include_uncommitted {
        eprintln!(
            "note: {} uncommitted files in the VM are not exported (commit them there, or use --include-uncommitted)",
            st.uncommitted.len()
        );
    }
    // A private temp file (0600) of the user's own: the guest's bytes go
    // nowhere else.
    let mut file = tempfile::Builder::new()
        .prefix("hangar-export-")
        .suffix(".bundle")
        .tempfile()
        .map_err(|e| ApiError::internal(format!("cannot make a temp file: {e}")))?;
    let started = std::time::Instant::now();
    let done = guest_run::run(
        client,
        &a.vm,
        &exec_req(export_command(&dest, a.include_uncommitted), a.user.clone()),
        None,
        None,
        file.as_file_mut(),
        BUNDLE_CAP,
    )
    .await?;
    if done.code == EXPORT_NOTHING_EXIT {
        if !cli.json {
            println!(
                "nothing to export: no commits in {}:{} since the import",
                a.vm, dest
            );
        } else {
            output::json(&serde_json::json!({"vm": a.vm, "branch": branch, "outcome": "nothing"}));
        }
        return Ok(());
    }
    if done.code != 0 {
        return Err(ApiError::internal(format!(
            "the export in VM {} failed (nothing was changed here):\n  {}",
            a.vm,
            guest_message(&done.stderr)
        )));
    }
    let bundle = file.path().to_path_buf();
    let force = a.force;
    let br = branch.clone();
    let outcome = tokio::task::spawn_blocking(move || fetch_bundle(&top, &bundle, &br, force))
        .await
        .map_err(|e| ApiError::internal(format!("the fetch failed: {e}")))?
        .map_err(ws_error)?;
    drop(file);
    let secs = started.elapsed().as_secs_f64();
    let (word, commit) = match &outcome {
        ExportOutcome::Created { commit, .. } => ("created", commit),
        ExportOutcome::FastForward { commit, .. } => ("fast-forwarded", commit),
        ExportOutcome::Forced { commit, .. } => ("overwrote (--force)", commit),
        ExportOutcome::Unchanged { commit, .. } => ("already up to date:", commit),
    };
    if cli.json {
        output::json(&serde_json::json!({
            "vm": a.vm, "branch": branch, "outcome": word, "commit": commit, "seconds": secs,
        }));
        return Ok(());
    }
    println!("{word} branch {branch} at {} ({secs:.1}s)", short(commit));
    println!("review: git log --stat HEAD..{branch}   merge: git merge {branch}");
    Ok(())
}
