//! The `/v1` HTTP+JSON API. Handlers are thin: they parse, call one
//! `Daemon` method, and map errors to `ApiError` kinds ([`error`]) and
//! those to HTTP statuses.

pub mod conn_limit;
mod drain;
mod error;
mod exec;
mod files;
pub mod openapi;
pub mod peer;
pub mod serve;
mod sessions;
mod tcp;
mod tree;
mod upgrade;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hangar_api::image::CatalogEntry;
use hangar_api::vm::DeleteVmQuery;
use hangar_api::{
    ApiError, BundleQuery, CreateVmRequest, DaemonInfo, ImageInfo, ImportImageQuery, Operation,
    PromoteImageRequest, PullImageRequest, RegisterImageRequest, TagImageRequest, UploadImageQuery,
    VmInfo,
};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::daemon::Daemon;
use crate::error::DaemonError;
use openapi::{Conflict, Internal, Invalid, NotFound, Timeout, Unavailable};

/// An `ApiError` as an HTTP response.
pub struct HttpError(pub ApiError);

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> Self {
        HttpError(e)
    }
}

impl From<DaemonError> for HttpError {
    fn from(e: DaemonError) -> Self {
        HttpError(e.into())
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.kind.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.0)).into_response()
    }
}

type ApiResult<T> = Result<T, HttpError>;

pub fn router(daemon: Arc<Daemon>) -> Router {
    Router::new()
        .route("/v1/vms", get(list_vms).post(create_vm))
        .route("/v1/vms/{name}", get(show_vm).delete(delete_vm))
        .route("/v1/vms/{name}/start", post(start_vm))
        .route("/v1/vms/{name}/stop", post(stop_vm))
        .route("/v1/vms/{name}/restart", post(restart_vm))
        .route("/v1/vms/{name}/exec", post(exec::exec))
        .route("/v1/vms/{name}/tcp/{port}", post(tcp::connect_tcp))
        .route(
            "/v1/vms/{name}/files",
            get(files::read_guest_file).put(files::write_guest_file),
        )
        .route(
            "/v1/vms/{name}/tree",
            get(tree::read_guest_tree).put(tree::write_guest_tree),
        )
        .route("/v1/vms/{name}/console", get(console_log))
        .route("/v1/sessions", get(sessions::list_all_sessions))
        .route(
            "/v1/vms/{name}/sessions",
            get(sessions::list_sessions).post(sessions::start_session),
        )
        .route(
            "/v1/vms/{name}/sessions/{session}",
            get(sessions::show_session).delete(sessions::remove_session),
        )
        .route(
            "/v1/vms/{name}/sessions/{session}/send",
            post(sessions::send_session),
        )
        .route(
            "/v1/vms/{name}/sessions/{session}/stop",
            post(sessions::stop_session),
        )
        .route(
            "/v1/vms/{name}/sessions/{session}/logs",
            get(sessions::session_logs),
        )
        .route(
            "/v1/vms/{name}/sessions/{session}/attach",
            post(sessions::attach_session),
        )
        .route("/v1/images", get(list_images))
        .route("/v1/images/catalog", get(catalog))
        .route("/v1/images/pull", post(pull_image))
        .route("/v1/images/register", post(register_image))
        .route("/v1/images/upload", post(upload_image))
        .route("/v1/images/import", post(import_image))
        .route("/v1/images/promote", post(promote_image))
        .route("/v1/images/bundle", post(receive_bundle))
        .route("/v1/images/{name}/bundle", get(export_bundle))
        .route("/v1/images/{name}/tag", post(tag_image))
        .route("/v1/images/{name}", get(show_image).delete(delete_image))
        .route("/v1/operations", get(list_ops))
        .route("/v1/operations/{id}", get(show_op))
        .route("/v1/operations/{id}/cancel", post(cancel_op))
        .route("/v1/info", get(info))
        .route("/v1/openapi.json", get(openapi::openapi_json))
        .fallback(not_found)
        .with_state(daemon)
}

/// The record of a VM that is running, or a `conflict` saying what to do
/// (exec, TCP streams and file copies need a running guest).
fn running_vm(d: &Daemon, name: &str) -> Result<hangar_store::VmRecord, HttpError> {
    let rec = d.vms.find_vm(name)?;
    use hangar_api::VmState;
    if rec.state == VmState::Running && rec.runtime.is_some() {
        return Ok(rec);
    }
    let next = match rec.state {
        VmState::Creating | VmState::Starting | VmState::Stopping => {
            "wait for its operation to finish (`hangar op ls`)".to_string()
        }
        _ => format!("start it first with `hangar vm start {name}`"),
    };
    Err(HttpError(ApiError::conflict(format!(
        "VM {name:?} is {}; {next}",
        rec.state
    ))))
}

async fn not_found() -> HttpError {
    HttpError(ApiError::not_found(
        "no such API endpoint; the API lives under /v1 (see docs/api.md)",
    ))
}

/// A JSON body that failed to parse becomes an `invalid` error with the
/// parser's reason, instead of axum's plain-text rejection.
pub struct JsonBody<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for JsonBody<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = HttpError;
    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, HttpError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(JsonBody(v)),
            Err(e) => Err(HttpError(ApiError::invalid(format!(
                "invalid request body: {}",
                e.body_text()
            )))),
        }
    }
}

/// The daemon's version and chosen backends
#[utoipa::path(get, path = "/v1/info", operation_id = "info", tag = "daemon",
    responses((status = 200, description = "Version, driver, disk backend and why", body = DaemonInfo)))]
async fn info(State(d): State<Arc<Daemon>>) -> Json<DaemonInfo> {
    let config = &d.infra.config;
    Json(DaemonInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        driver: d.infra.driver.kind().to_string(),
        driver_reason: d.driver_reason.clone(),
        disk_backend: d.infra.disks.name().to_string(),
        disk_reason: d.disk_reason.clone(),
        netns: config.netns().map(str::to_string),
        subnet: config.network.subnet.to_string(),
        state_dir: config.state_dir.display().to_string(),
    })
}

/// List VMs
#[utoipa::path(get, path = "/v1/vms", operation_id = "list_vms", tag = "vms",
    responses(
        (status = 200, description = "Every VM", body = Vec<VmInfo>),
        (status = 500, response = Internal),
    ))]
async fn list_vms(State(d): State<Arc<Daemon>>) -> ApiResult<Json<Vec<VmInfo>>> {
    Ok(Json(d.vms.list_vm_infos()?))
}

/// Create a VM
///
/// Begins creating (and booting) a VM; follow the returned operation.
#[utoipa::path(post, path = "/v1/vms", operation_id = "create_vm", tag = "vms",
    request_body = CreateVmRequest,
    responses(
        (status = 202, description = "Creation began", body = Operation),
        (status = 400, response = Invalid),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 412, response = Unavailable),
        (status = 500, response = Internal),
    ))]
async fn create_vm(
    State(d): State<Arc<Daemon>>,
    JsonBody(req): JsonBody<CreateVmRequest>,
) -> ApiResult<(StatusCode, Json<Operation>)> {
    Ok((StatusCode::ACCEPTED, Json(d.vms.begin_create(req)?)))
}

/// Show a VM
#[utoipa::path(get, path = "/v1/vms/{name}", operation_id = "show_vm", tag = "vms",
    params(("name" = String, Path, description = "VM name")),
    responses(
        (status = 200, description = "The VM", body = VmInfo),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ))]
async fn show_vm(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
) -> ApiResult<Json<VmInfo>> {
    let rec = d.vms.find_vm(&name)?;
    Ok(Json(d.vms.vm_info_detailed(&rec)))
}

/// Remove a VM
#[utoipa::path(delete, path = "/v1/vms/{name}", operation_id = "delete_vm", tag = "vms",
    params(("name" = String, Path, description = "VM name"), DeleteVmQuery),
    responses(
        (status = 204, description = "Removed, with its disk, address and TAP"),
        (status = 400, description = "A malformed query string (axum's plain-text rejection, not an `ApiError`)",
            body = String, content_type = "text/plain"),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 500, response = Internal),
    ))]
async fn delete_vm(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    Query(q): Query<DeleteVmQuery>,
) -> ApiResult<StatusCode> {
    d.vms.delete_vm(&name, q.force).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Start a stopped VM
#[utoipa::path(post, path = "/v1/vms/{name}/start", operation_id = "start_vm", tag = "vms",
    params(("name" = String, Path, description = "VM name")),
    responses(
        (status = 202, description = "The start began", body = Operation),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 412, response = Unavailable),
        (status = 500, response = Internal),
    ))]
async fn start_vm(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<Operation>)> {
    Ok((StatusCode::ACCEPTED, Json(d.vms.begin_start(&name)?)))
}

/// Stop a VM (ACPI shutdown, then kill)
#[utoipa::path(post, path = "/v1/vms/{name}/stop", operation_id = "stop_vm", tag = "vms",
    params(("name" = String, Path, description = "VM name")),
    responses(
        (status = 202, description = "The stop began", body = Operation),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 412, response = Unavailable),
        (status = 500, response = Internal),
    ))]
async fn stop_vm(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<Operation>)> {
    Ok((StatusCode::ACCEPTED, Json(d.vms.begin_stop(&name)?)))
}

/// Restart a VM
#[utoipa::path(post, path = "/v1/vms/{name}/restart", operation_id = "restart_vm", tag = "vms",
    params(("name" = String, Path, description = "VM name")),
    responses(
        (status = 202, description = "The restart began", body = Operation),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 412, response = Unavailable),
        (status = 500, response = Internal),
    ))]
async fn restart_vm(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<Operation>)> {
    Ok((StatusCode::ACCEPTED, Json(d.vms.begin_restart(&name)?)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ConsoleQuery {
    /// Only the last this many bytes.
    #[serde(default)]
    tail_bytes: Option<u64>,
    /// Start at this byte (for following: the previous answer's offset
    /// plus its length). Offsets count from the log's first byte and
    /// survive rotations; one past the end starts over at the oldest byte
    /// kept, one already rotated away starts at the oldest byte kept.
    #[serde(default)]
    offset: Option<u64>,
    /// The file id of the previous answer: when the VM rebooted since
    /// (a new log), `offset` is ignored and the answer starts at the
    /// beginning of the new log.
    #[serde(default)]
    file: Option<u64>,
}

/// Most bytes one console request returns.
const CONSOLE_CHUNK: u64 = 16 << 20;
/// The size of the pieces a console answer is streamed in.
const CONSOLE_PIECE: usize = 64 << 10;

/// The guest's serial console log of the current (or last) boot: raw
/// bytes, with the offset they start at in
/// [`hangar_api::vm::CONSOLE_OFFSET_HEADER`]. The files are read off the
/// async runtime and streamed, never held whole.
#[utoipa::path(get, path = "/v1/vms/{name}/console", operation_id = "console_log", tag = "vms",
    summary = "Read the serial console log",
    description = "At most 16 MiB of the log of the current (or last) boot, as raw bytes, \
        across rotations (the older part `serial.log.1`, then `serial.log`). \
        Follow it by asking again with `offset` = the offset header + body length and `file` = \
        the file header (see docs/api.md).",
    params(("name" = String, Path, description = "VM name"), ConsoleQuery),
    responses(
        (status = 200, description = "Console bytes (empty before the first boot)",
            body = String, content_type = "text/plain; charset=utf-8",
            headers(
                ("x-hangar-console-offset" = u64, description = "Offset in the log where the body starts"),
                ("x-hangar-console-file" = u64, description = "Id of the log file; each boot starts a new one"),
            )),
        (status = 400, description = "A malformed query string (axum's plain-text rejection, not an `ApiError`)",
            body = String, content_type = "text/plain"),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ))]
async fn console_log(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    Query(q): Query<ConsoleQuery>,
) -> ApiResult<Response> {
    let rec = d.vms.find_vm(&name)?;
    let path = d.vms.vm_dir(&rec.id).serial_log();
    let logs = d.vms.console_logs().clone();
    let cannot_read = |path: &std::path::Path, e: std::io::Error| {
        DaemonError::io(format!("cannot read {}", path.display()), e)
    };
    let opened = {
        let log = path.clone();
        tokio::task::spawn_blocking(move || {
            let view = logs.view(&log)?;
            let start = view.answer_start(q.offset, q.file, q.tail_bytes);
            let file_id = view.file_id;
            Ok::<_, std::io::Error>((start, file_id, view.into_reader(start, CONSOLE_CHUNK)?))
        })
        .await
        .map_err(|e| cannot_read(&path, std::io::Error::other(e)))?
    };
    let (start, file_id, reader) = opened.map_err(|e| cannot_read(&path, e))?;
    let body = futures::stream::try_unfold(reader, |mut reader| async move {
        let (reader, piece) = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut piece = vec![0u8; CONSOLE_PIECE];
            let n = reader.read(&mut piece)?;
            piece.truncate(n);
            Ok::<_, std::io::Error>((reader, piece))
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok::<_, std::io::Error>((!piece.is_empty()).then(|| (bytes::Bytes::from(piece), reader)))
    });
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
            (
                axum::http::HeaderName::from_static(hangar_api::vm::CONSOLE_OFFSET_HEADER),
                start.to_string(),
            ),
            (
                axum::http::HeaderName::from_static(hangar_api::vm::CONSOLE_FILE_HEADER),
                file_id.to_string(),
            ),
        ],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

/// List local images
#[utoipa::path(get, path = "/v1/images", operation_id = "list_images", tag = "images",
    responses(
        (status = 200, description = "Every local image", body = Vec<ImageInfo>),
        (status = 500, response = Internal),
    ))]
async fn list_images(State(d): State<Arc<Daemon>>) -> ApiResult<Json<Vec<ImageInfo>>> {
    Ok(Json(d.images.list_image_infos()?))
}

/// List the image catalog
#[utoipa::path(get, path = "/v1/images/catalog", operation_id = "catalog", tag = "images",
    responses((status = 200, description = "Images hangar can pull or build", body = Vec<CatalogEntry>)))]
async fn catalog(State(d): State<Arc<Daemon>>) -> Json<Vec<CatalogEntry>> {
    d.images.reload_catalogs().await;
    Json(d.images.catalog_entries())
}

/// Show a local image
#[utoipa::path(get, path = "/v1/images/{name}", operation_id = "show_image", tag = "images",
    params(("name" = String, Path, description = "Image name or digest")),
    responses(
        (status = 200, description = "The image", body = ImageInfo),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ))]
async fn show_image(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
) -> ApiResult<Json<ImageInfo>> {
    let rec = d.images.get(&name)?;
    Ok(Json(d.images.image_info(&rec)?))
}

/// Give an image another name
///
/// The new name names the same image (same digest, same files). A name
/// that already names this image changes nothing; one that names another
/// image is refused (409).
#[utoipa::path(post, path = "/v1/images/{name}/tag", operation_id = "tag_image", tag = "images",
    params(("name" = String, Path, description = "Image name or digest")),
    request_body = TagImageRequest,
    responses(
        (status = 200, description = "The image, shown by its new name", body = ImageInfo),
        (status = 400, response = Invalid),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 500, response = Internal),
    ))]
async fn tag_image(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<TagImageRequest>,
) -> ApiResult<Json<ImageInfo>> {
    Ok(Json(d.images.tag_image(&name, &req.name).await?))
}

/// Remove an image name
///
/// While the image has other names, only this name goes. With its last
/// name (or named by digest, which is refused while it has several names)
/// the image goes: its files, boot snapshots and caches; refused (409,
/// naming the VMs) while a VM uses it.
#[utoipa::path(delete, path = "/v1/images/{name}", operation_id = "delete_image", tag = "images",
    params(("name" = String, Path, description = "Image name or digest")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 500, response = Internal),
    ))]
async fn delete_image(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    d.images.remove_image(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Pull or build a catalog image
#[utoipa::path(post, path = "/v1/images/pull", operation_id = "pull_image", tag = "images",
    request_body = PullImageRequest,
    responses(
        (status = 202, description = "The pull began", body = Operation),
        (status = 400, response = Invalid),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 500, response = Internal),
    ))]
async fn pull_image(
    State(d): State<Arc<Daemon>>,
    JsonBody(req): JsonBody<PullImageRequest>,
) -> ApiResult<(StatusCode, Json<Operation>)> {
    Ok((StatusCode::ACCEPTED, Json(d.images.begin_pull(req)?)))
}

/// Register an image from files on the host (root only)
///
/// The daemon opens the paths with its own rights, so only root clients
/// (by the socket's `SO_PEERCRED`) may use this form; anyone else gets
/// `invalid` and uploads the files with `POST /v1/images/upload`.
#[utoipa::path(post, path = "/v1/images/register", operation_id = "register_image", tag = "images",
    request_body = RegisterImageRequest,
    responses(
        (status = 201, description = "Registered", body = ImageInfo),
        (status = 400, response = Invalid),
        (status = 409, response = Conflict),
        (status = 412, response = Unavailable),
        (status = 500, response = Internal),
    ))]
async fn register_image(
    State(d): State<Arc<Daemon>>,
    ConnectInfo(peer): ConnectInfo<peer::PeerCred>,
    JsonBody(req): JsonBody<RegisterImageRequest>,
) -> ApiResult<(StatusCode, Json<ImageInfo>)> {
    Ok((
        StatusCode::CREATED,
        Json(d.images.register_image(req, peer).await?),
    ))
}

/// Register an image by uploading its files
///
/// The body carries each file (kernel, then initrd if `initrd_bytes` is
/// given, then rootfs): exactly its declared bytes followed by the 32-byte
/// sha256 of them. Sizes over the `[images]` limits are refused before any
/// byte is read; a body that breaks off, stalls, runs long or carries a
/// wrong sha256 registers nothing and leaves no file.
#[utoipa::path(post, path = "/v1/images/upload", operation_id = "upload_image", tag = "images",
    params(UploadImageQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "per part: its bytes, then their 32-byte sha256"),
    responses(
        (status = 201, description = "Registered", body = ImageInfo),
        (status = 400, response = Invalid),
        (status = 409, response = Conflict),
        (status = 500, response = Internal),
        (status = 504, response = Timeout),
    ))]
async fn upload_image(
    State(d): State<Arc<Daemon>>,
    Query(q): Query<UploadImageQuery>,
    body: axum::body::Body,
) -> ApiResult<(StatusCode, Json<ImageInfo>)> {
    Ok((
        StatusCode::CREATED,
        Json(d.images.register_upload(q, drain::on_drop(body)).await?),
    ))
}

/// Import an image from an archive
///
/// The body is a `docker save` archive (docker-archive) or an OCI image
/// layout as a tar (`buildah push IMG oci-archive:F`, `skopeo copy …
/// oci-archive:F`), plain or gzip/zstd compressed. The archive is received
/// with the request (a body that breaks off, stalls or is not an image is
/// refused and leaves nothing); its layers are then applied and the image
/// finalized as an operation.
#[utoipa::path(post, path = "/v1/images/import", operation_id = "import_image", tag = "images",
    params(ImportImageQuery),
    request_body(content = Vec<u8>, content_type = "application/x-tar",
        description = "the image archive"),
    responses(
        (status = 202, description = "Received; the import runs as this operation", body = Operation),
        (status = 400, response = Invalid),
        (status = 409, response = Conflict),
        (status = 500, response = Internal),
        (status = 504, response = Timeout),
    ))]
async fn import_image(
    State(d): State<Arc<Daemon>>,
    Query(q): Query<ImportImageQuery>,
    body: axum::body::Body,
) -> ApiResult<(StatusCode, Json<Operation>)> {
    Ok((
        StatusCode::ACCEPTED,
        Json(d.images.begin_import(q, drain::on_drop(body)).await?),
    ))
}

/// Promote a VM's disk to an image
///
/// The VM's current disk becomes a new image with the parent's kernel,
/// initrd and run settings, and its lineage (parent image, VM, time). A
/// running VM is refused (409) unless `stop` is set, which stops it for the
/// copy and starts it again after.
#[utoipa::path(post, path = "/v1/images/promote", operation_id = "promote_image", tag = "images",
    request_body = PromoteImageRequest,
    responses(
        (status = 202, description = "The promotion began", body = Operation),
        (status = 400, response = Invalid),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 500, response = Internal),
    ))]
async fn promote_image(
    State(d): State<Arc<Daemon>>,
    JsonBody(req): JsonBody<PromoteImageRequest>,
) -> ApiResult<(StatusCode, Json<Operation>)> {
    Ok((StatusCode::ACCEPTED, Json(d.vms.begin_promote(req)?)))
}

/// Import a bundle the client streams
///
/// The body is a Hangar bundle (`image export` output) the client read;
/// with `sha256` the whole body must have that sha256. It is verified and
/// stored in one pass; a mismatch keeps nothing.
#[utoipa::path(post, path = "/v1/images/bundle", operation_id = "receive_bundle", tag = "images",
    params(BundleQuery),
    request_body(content = Vec<u8>, content_type = "application/zstd",
        description = "the bundle file"),
    responses(
        (status = 201, description = "Imported", body = ImageInfo),
        (status = 400, response = Invalid),
        (status = 409, response = Conflict),
        (status = 500, response = Internal),
        (status = 504, response = Timeout),
    ))]
async fn receive_bundle(
    State(d): State<Arc<Daemon>>,
    Query(q): Query<BundleQuery>,
    body: axum::body::Body,
) -> ApiResult<(StatusCode, Json<ImageInfo>)> {
    Ok((
        StatusCode::CREATED,
        Json(d.images.receive_bundle(q, drain::on_drop(body)).await?),
    ))
}

/// Export an image as a bundle
///
/// Streams the image as a portable Hangar bundle (`application/zstd`: a
/// zstd tar of `hangar-bundle.json` with each part's sha256, then the
/// kernel, initrd and rootfs). A transfer that breaks off ends with an
/// error, never as a short body that looks whole.
#[utoipa::path(get, path = "/v1/images/{name}/bundle", operation_id = "export_bundle", tag = "images",
    params(("name" = String, Path, description = "Image name or digest")),
    responses(
        (status = 200, description = "The bundle", content_type = "application/zstd", body = Vec<u8>),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ))]
async fn export_bundle(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let body = d.images.export_bundle(&name)?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/zstd")],
        body,
    )
        .into_response())
}

/// List operations
#[utoipa::path(get, path = "/v1/operations", operation_id = "list_ops", tag = "operations",
    responses((status = 200, description = "Running and recently finished operations", body = Vec<Operation>)))]
async fn list_ops(State(d): State<Arc<Daemon>>) -> Json<Vec<Operation>> {
    Json(d.infra.ops.list())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct WaitQuery {
    /// Long-poll: wait up to this many milliseconds for the op to finish.
    #[serde(default)]
    wait_ms: Option<u64>,
}

/// Show an operation, optionally waiting for it to finish
#[utoipa::path(get, path = "/v1/operations/{id}", operation_id = "show_op", tag = "operations",
    params(("id" = String, Path, description = "Operation id"), WaitQuery),
    responses(
        (status = 200, description = "The operation (still running when the wait ran out)", body = Operation),
        (status = 400, description = "A malformed query string (axum's plain-text rejection, not an `ApiError`)",
            body = String, content_type = "text/plain"),
        (status = 404, response = NotFound),
    ))]
async fn show_op(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
) -> ApiResult<Json<Operation>> {
    let op = match q.wait_ms {
        Some(ms) => {
            d.infra
                .ops
                .wait(&id, Duration::from_millis(ms.min(60_000)))
                .await?
        }
        None => d.infra.ops.get(&id)?,
    };
    Ok(Json(op))
}

/// Cancel an operation
#[utoipa::path(post, path = "/v1/operations/{id}/cancel", operation_id = "cancel_op", tag = "operations",
    params(("id" = String, Path, description = "Operation id")),
    responses(
        (status = 200, description = "The operation, cancelling or cancelled", body = Operation),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    ))]
async fn cancel_op(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Operation>> {
    Ok(Json(d.infra.ops.cancel(&id)?))
}
