//! `hangar cp SRC DST`: one file between this machine and a VM, one side
//! written `VM:PATH` (like scp). The local side is opened here, as the
//! user; the daemon moves the bytes through the guest's sftp subsystem
//! (`GET`/`PUT /v1/vms/{name}/files`), so images without a shell work too.
//! Directories: `scp -r` through `hangar proxy`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use hangar_api::{ApiError, GuestFileWritten};
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper::Method;

use super::seg;
use crate::args::CpArgs;
use crate::client::Client;
use crate::local_file::open_regular;

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

pub async fn run(client: &Client, a: &CpArgs) -> Result<(), ApiError> {
    match (side(&a.src), side(&a.dst)) {
        (Side::Local(src), Side::Vm { name, path }) => upload(client, &src, &name, &path).await,
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
    let file = tokio::fs::File::from_std(local.file);
    let body = StreamBody::new(
        tokio_util::io::ReaderStream::with_capacity(file, 256 << 10).map(|r| r.map(Frame::data)),
    );
    let written: GuestFileWritten = client
        .send_stream(
            Method::PUT,
            &files_path(name, &target, Some(mode)),
            "application/octet-stream",
            body,
        )
        .await?;
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

async fn download(client: &Client, name: &str, path: &str, dst: &Path) -> Result<(), ApiError> {
    let target = if dst.is_dir() {
        dst.join(base_name(path))
    } else {
        dst.to_path_buf()
    };
    let resp = client.get_stream(&files_path(name, path, None)).await?;
    crate::download::body_to_file(resp, &target).await.map(drop)
}

#[cfg(test)]
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
}
