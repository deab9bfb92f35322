//! `hangar cp [-r] SRC DST`: files and trees between this machine and a VM,
//! one side written `VM:PATH` (like scp). The local side is read and
//! written here, as the user; the daemon moves the bytes through the
//! guest's sftp subsystem (`GET`/`PUT /v1/vms/{name}/files` for one file,
//! `/v1/vms/{name}/tree` for a tree), so images without a shell work too.
//! Nothing half-written is ever left at the destination: files and trees
//! are built beside it and renamed into place once complete.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use hangar_api::tree::TREE_CONTENT_TYPE;
use hangar_api::{ApiError, GuestFileWritten, GuestTreeWritten};
use http_body_util::{BodyStream, StreamBody};
use hyper::body::Frame;
use hyper::Method;

use super::seg;
use crate::args::CpArgs;
use crate::client::Client;
use crate::cp_tree::{self, io_message, SendError};
use crate::local_file::open_regular;
use crate::progress::Progress;

/// One side of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Side {
    Local(PathBuf),
    Vm { name: String, path: String },
}

/// `NAME:PATH` is a VM's file when NAME is a VM name (no `/` before the
/// colon), as with scp; `./a:b` is a local file.
fn side(arg: &str) -> Side {
    match arg.split_once(':') {
        Some((name, path)) if !name.is_empty() && !name.contains('/') => Side::Vm {
            name: name.to_string(),
            path: if path.is_empty() {
                ".".into()
            } else {
                path.to_string()
            },
        },
        _ => Side::Local(PathBuf::from(arg)),
    }
}

fn base_name(p: &str) -> &str {
    p.trim_end_matches('/').rsplit('/').next().unwrap_or(p)
}

fn files_path(name: &str, path: &str, mode: Option<u32>) -> String {
    let mut q = format!("/v1/vms/{}/files?path={}", seg(name), seg(path));
    if let Some(m) = mode {
        q.push_str(&format!("&mode={m}"));
    }
    q
}

fn tree_path(name: &str, path: &str, tree_name: Option<&str>) -> String {
    let mut q = format!("/v1/vms/{}/tree?path={}", seg(name), seg(path));
    if let Some(n) = tree_name {
        q.push_str(&format!("&name={}", seg(n)));
    }
    q
}

/// A local I/O error as an API error of the matching kind.
fn local_error(path: &Path, e: &std::io::Error) -> ApiError {
    let msg = io_message(path, e);
    match e.kind() {
        std::io::ErrorKind::NotFound => ApiError::not_found(msg),
        _ => ApiError::invalid(msg),
    }
}

pub async fn run(client: &Client, a: &CpArgs) -> Result<(), ApiError> {
    match (side(&a.src), side(&a.dst)) {
        (Side::Local(src), Side::Vm { name, path }) => {
            let meta = std::fs::metadata(&src).map_err(|e| local_error(&src, &e))?;
            // Before streaming: a daemon that refuses an upload answers
            // while the body is still being written, and the client may
            // then see only the broken write, not the daemon's reason.
            let vm: hangar_api::VmInfo = client.get(&format!("/v1/vms/{}", seg(&name))).await?;
            if vm.state != hangar_api::VmState::Running {
                return Err(ApiError::conflict(format!(
                    "VM {name:?} is {}; start it first with `hangar vm start {name}`",
                    vm.state
                )));
            }
            if meta.is_dir() {
                if !a.recursive {
                    return Err(ApiError::invalid(format!(
                        "{} is a directory: copy it with `hangar cp -r`",
                        src.display()
                    )));
                }
                return upload_tree(client, &src, &name, &path).await;
            }
            upload(client, &src, &name, &path).await
        }
        (Side::Vm { name, path }, Side::Local(dst)) if a.recursive => {
            download_tree(client, &name, &path, &dst).await
        }
        (Side::Vm { name, path }, Side::Local(dst)) => download(client, &name, &path, &dst).await,
        (Side::Vm { .. }, Side::Vm { .. }) => Err(ApiError::invalid(
            "both sides are VMs: copy through this machine (or run scp inside one of them)",
        )),
        (Side::Local(_), Side::Local(_)) => Err(ApiError::invalid(
            "neither side is a VM: write one side as VM:PATH",
        )),
    }
}

async fn upload(client: &Client, src: &Path, name: &str, path: &str) -> Result<(), ApiError> {
    let local = open_regular("file", src).map_err(|e| ApiError::invalid(e.to_string()))?;
    let mode = local
        .file
        .metadata()
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644);
    // `VM:dir/` or `VM:.` means "into that dir", as with cp.
    let file_name = src
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let target = if path.ends_with('/') || path == "." || path == "~" {
        format!("{}/{file_name}", path.trim_end_matches('/'))
    } else {
        path.to_string()
    };
    let progress = Progress::start(&format!("{} -> {name}:{target}", src.display()));
    let counter = progress.clone();
    let file = tokio::fs::File::from_std(local.file);
    let body = StreamBody::new(
        tokio_util::io::ReaderStream::with_capacity(file, 256 << 10).map(move |r| {
            if let Ok(b) = &r {
                counter.add(b.len() as u64);
            }
            r.map(Frame::data)
        }),
    );
    let written = client
        .send_stream::<GuestFileWritten, _>(
            Method::PUT,
            &files_path(name, &target, Some(mode)),
            "application/octet-stream",
            body,
        )
        .await;
    progress.finish(written.is_ok());
    let written = written?;
    if written.bytes != local.len {
        return Err(ApiError::internal(format!(
            "{} changed while it was copied ({} bytes sent, {} at the start)",
            src.display(),
            written.bytes,
            local.len
        )));
    }
    Ok(())
}

/// Where a download lands: inside `dst` when it is a dir, else `dst`,
/// whose directory must exist.
fn local_target(dst: &Path, remote: &str) -> Result<PathBuf, ApiError> {
    if dst.is_dir() {
        let base = base_name(remote);
        if base.is_empty() || base == "." || base == ".." {
            return Err(ApiError::invalid(format!(
                "cannot name the copy of {remote:?}: give a destination that does not exist yet"
            )));
        }
        return Ok(dst.join(base));
    }
    let parent = dst
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(ApiError::not_found(format!(
            "directory {} does not exist",
            parent.display()
        )));
    }
    Ok(dst.to_path_buf())
}

async fn download(client: &Client, name: &str, path: &str, dst: &Path) -> Result<(), ApiError> {
    let target = local_target(dst, path)?;
    let resp = client.get_stream(&files_path(name, path, None)).await?;
    let progress = Progress::start(&format!("{name}:{path} -> {}", target.display()));
    let counted = progress.clone();
    let resp = resp.map(|body| {
        use http_body_util::BodyExt;
        body.map_frame(move |f| {
            if let Some(d) = f.data_ref() {
                counted.add(d.len() as u64);
            }
            f
        })
    });
    let done = crate::download::body_to_file(resp, &target).await.map(drop);
    progress.finish(done.is_ok());
    done
}

async fn upload_tree(client: &Client, src: &Path, name: &str, path: &str) -> Result<(), ApiError> {
    // The tree's name in the VM: the source's own (of its real path for
    // `.` or `..`), as scp names it.
    let real = std::fs::canonicalize(src).map_err(|e| local_error(src, &e))?;
    let tree_name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "root".into());
    let progress = Progress::start(&format!("{} -> {name}:{path}", src.display()));
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let walk_src = src.to_path_buf();
    let walk_progress = progress.clone();
    let walker = tokio::task::spawn_blocking(move || {
        cp_tree::send_local_tree(&walk_src, &tx, &walk_progress)
    });
    let body = StreamBody::new(
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
            .map(|r| r.map(Frame::data)),
    );
    let sent = client
        .send_stream::<GuestTreeWritten, _>(
            Method::PUT,
            &tree_path(name, path, Some(&tree_name)),
            TREE_CONTENT_TYPE,
            body,
        )
        .await;
    let walked = walker
        .await
        .map_err(|e| ApiError::internal(format!("the local walk failed: {e}")))?;
    progress.finish(sent.is_ok() && walked.is_ok());
    // A local failure is the better message: the daemon only saw it end.
    if let Err(SendError::Local(m)) = walked {
        return Err(ApiError::invalid(m));
    }
    sent.map(drop)
}

async fn download_tree(
    client: &Client,
    name: &str,
    path: &str,
    dst: &Path,
) -> Result<(), ApiError> {
    let target = local_target(dst, path)?;
    let resp = client.get_stream(&tree_path(name, path, None)).await?;
    let body = BodyStream::new(resp.into_body()).filter_map(|f| async move {
        match f {
            Ok(frame) => frame.into_data().ok().map(Ok),
            Err(e) => Some(Err(std::io::Error::other(e))),
        }
    });
    let mut reader = tokio_util::io::StreamReader::new(Box::pin(body));
    let progress = Progress::start(&format!("{name}:{path} -> {}", target.display()));
    let got = async {
        let root = cp_tree::read_entry(&mut reader).await?;
        cp_tree::receive(&root, &mut reader, &target, &progress).await
    }
    .await;
    progress.finish(got.is_ok());
    got.map(drop).map_err(ApiError::invalid)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn vm_sides_are_name_colon_path_and_local_paths_may_hold_colons() {
        assert_eq!(
            side("dev:/etc/hosts"),
            Side::Vm {
                name: "dev".into(),
                path: "/etc/hosts".into()
            }
        );
        assert_eq!(
            side("dev:"),
            Side::Vm {
                name: "dev".into(),
                path: ".".into()
            }
        );
        assert_eq!(side("./a:b"), Side::Local(PathBuf::from("./a:b")));
        assert_eq!(side("/tmp/x"), Side::Local(PathBuf::from("/tmp/x")));
        assert_eq!(base_name("/var/log/"), "log");
    }

    #[test]
    fn tree_requests_name_the_source_and_encode_unicode() {
        assert_eq!(
            tree_path("dev", "/tmp/ü x", Some("src")),
            "/v1/vms/dev/tree?path=%2Ftmp%2F%C3%BC%20x&name=src"
        );
        assert_eq!(tree_path("dev", "d", None), "/v1/vms/dev/tree?path=d");
    }

    #[test]
    fn a_download_goes_into_an_existing_dir_or_to_a_new_path_whose_dir_exists() {
        let dir = tempfile::tempdir().unwrap();

        assert_eq!(
            local_target(dir.path(), "/var/log/").unwrap(),
            dir.path().join("log")
        );
        assert_eq!(
            local_target(&dir.path().join("new"), "/var/log").unwrap(),
            dir.path().join("new")
        );
        let missing = local_target(&dir.path().join("no/new"), "/var/log").unwrap_err();
        assert!(missing.message.contains("does not exist"), "{missing:?}");
        assert!(local_target(dir.path(), "/").is_err());
    }
}
