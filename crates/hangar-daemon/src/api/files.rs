//! `GET` and `PUT /v1/vms/{name}/files?path=…`: one file in a running
//! guest, through its `sftp` subsystem (so images without a shell or `cat`
//! work too). The CLI (`hangar cp`) reads and writes the user's side as the
//! user; the daemon only ever touches the guest's files.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::TryStreamExt;
use hangar_api::{ApiError, GuestFileQuery, GuestFileWritten};
use hangar_guest::GuestFiles;
use tokio_util::io::{ReaderStream, StreamReader};

use super::openapi::{Conflict, Invalid, NotFound, Unavailable};
use super::HttpError;
use crate::daemon::Daemon;

/// A body that sends nothing for this long is dropped (and so is the
/// half-written file in the guest).
pub(super) const IDLE_LIMIT: Duration = Duration::from_secs(60);

pub(super) async fn open_files(d: &Daemon, name: &str) -> Result<GuestFiles, HttpError> {
    let rec = super::running_vm(d, name)?;
    let client = d.vms.guest_client(&rec).await?;
    client
        .files()
        .await
        .map_err(|e| HttpError(ApiError::unavailable(format!("VM {name:?}: {e}"))))
}

pub(super) fn check_path(path: &str) -> Result<(), HttpError> {
    if path.is_empty() || path.contains('\0') {
        return Err(HttpError(ApiError::invalid(
            "path must be a non-empty guest path",
        )));
    }
    Ok(())
}

/// Read a file of a running VM
#[utoipa::path(get, path = "/v1/vms/{name}/files", operation_id = "read_guest_file", tag = "vms",
    params(("name" = String, Path, description = "VM name"), GuestFileQuery),
    responses(
        (status = 200, description = "The file's bytes (Content-Length is its size)",
            body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 400, response = Invalid),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 412, response = Unavailable),
    ))]
pub async fn read_guest_file(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    Query(q): Query<GuestFileQuery>,
) -> Result<Response, HttpError> {
    check_path(&q.path)?;
    let files = open_files(&d, &name).await?;
    let info = files
        .stat(&q.path)
        .await
        .map_err(|e| HttpError(ApiError::not_found(format!("{}: {e}", q.path))))?;
    if info.is_dir {
        return Err(HttpError(ApiError::invalid(format!(
            "{} is a directory in VM {name:?}: copy directories with `hangar cp -r`",
            q.path
        ))));
    }
    if !info.is_regular {
        return Err(HttpError(ApiError::invalid(format!(
            "{} is not a regular file",
            q.path
        ))));
    }
    let file = files
        .open_read(&q.path)
        .await
        .map_err(|e| HttpError(ApiError::not_found(format!("{}: {e}", q.path))))?;
    // The session must live as long as the body streams.
    let stream = ReaderStream::with_capacity(file, 256 << 10).map_ok(move |b| {
        let _keep = &files;
        b
    });
    let mut resp = Body::from_stream(stream).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(info.len));
    Ok(resp)
}

/// Write a file into a running VM
#[utoipa::path(put, path = "/v1/vms/{name}/files", operation_id = "write_guest_file", tag = "vms",
    description = "The body is the file's bytes. They go to a new file beside the target, which \
        is renamed over it once complete: a failed or dropped upload leaves the target as it was.",
    params(("name" = String, Path, description = "VM name"), GuestFileQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "Written", body = GuestFileWritten),
        (status = 400, response = Invalid),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 412, response = Unavailable),
    ))]
pub async fn write_guest_file(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    Query(q): Query<GuestFileQuery>,
    body: Body,
) -> Result<Json<GuestFileWritten>, HttpError> {
    check_path(&q.path)?;
    let mode = q.mode.unwrap_or(0o644);
    if mode > 0o7777 {
        return Err(HttpError(ApiError::invalid(format!(
            "mode {mode:o} is not a permission mode (at most 7777 octal)"
        ))));
    }
    let files = open_files(&d, &name).await?;
    let mut reader = StreamReader::new(Box::pin(idle_limited(body, IDLE_LIMIT)));
    let bytes = files
        .write_replacing(&q.path, mode, &mut reader)
        .await
        .map_err(|e| HttpError(ApiError::invalid(format!("{}: {e}", q.path))))?;
    Ok(Json(GuestFileWritten {
        path: q.path,
        bytes,
    }))
}

/// The body's data, failing when no frame arrives for `limit` (as image
/// uploads do, `image_service/upload.rs`).
pub(super) fn idle_limited(
    body: Body,
    limit: Duration,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> {
    use http_body_util::BodyExt;
    futures::stream::unfold(body, move |mut body| async move {
        loop {
            return match tokio::time::timeout(limit, body.frame()).await {
                Err(_) => Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("the upload sent nothing for {} s", limit.as_secs()),
                    )),
                    body,
                )),
                Ok(None) => None,
                Ok(Some(Err(e))) => Some((Err(std::io::Error::other(e)), body)),
                Ok(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => Some((Ok(data), body)),
                    Err(_) => continue, // trailers
                },
            };
        }
    })
}
