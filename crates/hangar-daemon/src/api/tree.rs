//! `GET` and `PUT /v1/vms/{name}/tree?path=…`: a whole directory (modes,
//! symlinks) of a running guest as a tree stream (`hangar_api::tree`),
//! through its `sftp` subsystem; `hangar cp -r`. The CLI reads and writes
//! the user's side as the user; the daemon only touches the guest's files.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hangar_api::tree::{Entry, TREE_CONTENT_TYPE};
use hangar_api::{ApiError, GuestTreeQuery, GuestTreeWritten};
use hangar_guest::TreeFail;
use tokio_util::io::StreamReader;

use super::files::{check_path, idle_limited, open_files, IDLE_LIMIT};
use super::openapi::{Conflict, Invalid, NotFound, Unavailable};
use super::HttpError;
use crate::daemon::Daemon;

/// Pieces of a stream in flight at once (each at most 256 KiB): the
/// memory a download takes, whatever the tree's size.
const IN_FLIGHT: usize = 8;

fn api_error(name: &str, e: TreeFail) -> HttpError {
    HttpError(match e {
        TreeFail::NotFound(m) => ApiError::not_found(format!("VM {name:?}: {m}")),
        TreeFail::Exists(m) => ApiError::conflict(format!("VM {name:?}: {m}")),
        TreeFail::Invalid(m) => ApiError::invalid(format!("VM {name:?}: {m}")),
        TreeFail::Closed => ApiError::invalid("the client went away"),
        TreeFail::Guest(g) => ApiError::invalid(format!("VM {name:?}: {g}")),
    })
}

/// Read a directory (or file) of a running VM as a tree stream
#[utoipa::path(get, path = "/v1/vms/{name}/tree", operation_id = "read_guest_tree", tag = "vms",
    description = "The tree at `path` (symlinks in it stay links; sockets, FIFOs and devices are \
        left out) as a tree stream (docs/api.md, \"Trees in a guest\"). An error after the \
        answer started is sent as the stream's error entry.",
    params(("name" = String, Path, description = "VM name"), GuestTreeQuery),
    responses(
        (status = 200, description = "The tree stream", body = Vec<u8>,
            content_type = "application/vnd.hangar.tree"),
        (status = 400, response = Invalid),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 412, response = Unavailable),
    ))]
pub async fn read_guest_tree(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    Query(q): Query<GuestTreeQuery>,
) -> Result<Response, HttpError> {
    check_path(&q.path)?;
    let files = open_files(&d, &name).await?;
    let root = files
        .tree_root(&q.path)
        .await
        .map_err(|e| api_error(&name, e))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(IN_FLIGHT);
    tokio::spawn(async move {
        let end = match files.send_tree(&q.path, root, &tx).await {
            Ok(()) => Entry::end(),
            Err(TreeFail::Closed) => return,
            Err(e) => {
                tracing::info!(vm = %name, path = %q.path, "cp -r from the guest failed: {e}");
                Entry::error(&e.to_string())
            }
        };
        let _ = tx.send(end.encode()).await;
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::io::Error>(bytes::Bytes::from(b)), rx))
    });
    let mut resp = Body::from_stream(stream).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(TREE_CONTENT_TYPE),
    );
    Ok(resp)
}

/// Write a directory into a running VM from a tree stream
#[utoipa::path(put, path = "/v1/vms/{name}/tree", operation_id = "write_guest_tree", tag = "vms",
    description = "The body is a tree stream (docs/api.md, \"Trees in a guest\"). It is built \
        in a new directory beside the target and renamed into place once complete: a failed, \
        dropped or idle (60 s) upload leaves nothing. A target that exists is refused.",
    params(("name" = String, Path, description = "VM name"), GuestTreeQuery),
    request_body(content = Vec<u8>, content_type = "application/vnd.hangar.tree"),
    responses(
        (status = 200, description = "Written", body = GuestTreeWritten),
        (status = 400, response = Invalid),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 412, response = Unavailable),
    ))]
pub async fn write_guest_tree(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    Query(q): Query<GuestTreeQuery>,
    body: Body,
) -> Result<Json<GuestTreeWritten>, HttpError> {
    check_path(&q.path)?;
    let files = open_files(&d, &name).await?;
    let target = files
        .tree_target(&q.path, q.name.as_deref())
        .await
        .map_err(|e| api_error(&name, e))?;
    let mut reader = StreamReader::new(Box::pin(idle_limited(body, IDLE_LIMIT)));
    let w = files
        .receive_tree(&target, &mut reader)
        .await
        .map_err(|e| api_error(&name, e))?;
    Ok(Json(GuestTreeWritten {
        path: target,
        files: w.files,
        dirs: w.dirs,
        symlinks: w.symlinks,
        bytes: w.bytes,
    }))
}
