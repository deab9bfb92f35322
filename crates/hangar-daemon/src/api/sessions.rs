//! `/v1/sessions` and `/v1/vms/{name}/sessions/…`: long-lived sessions
//! (docs/api.md, "Sessions"). Attach upgrades the connection to the
//! hangar-attach frame stream; logs are a streamed body.

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hangar_api::session::ATTACH_UPGRADE_PROTOCOL;
use hangar_api::stream::Frame;
use hangar_api::{
    ApiError, AttachQuery, SendSessionRequest, SessionInfo, SessionLogsQuery, StartSessionRequest,
    StopSessionRequest,
};
use hangar_guest::session_proto::Request as AgentRequest;
use hangar_guest::{SessionEvent, SessionStream};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, warn};

use super::openapi::{Conflict, Internal, Invalid, NotFound, Unavailable};
use super::{ApiResult, HttpError, JsonBody};
use crate::daemon::Daemon;

/// List the sessions of every VM
#[utoipa::path(get, path = "/v1/sessions", operation_id = "list_all_sessions", tag = "sessions",
    description = "Running VMs are asked through their guest agent; a stopped VM's sessions \
        are the last known ones, those that ran shown as `ended`.",
    responses(
        (status = 200, description = "All sessions", body = Vec<SessionInfo>),
        (status = 500, response = Internal),
    ))]
pub async fn list_all_sessions(State(d): State<Arc<Daemon>>) -> ApiResult<Json<Vec<SessionInfo>>> {
    Ok(Json(d.sessions.list(None).await?))
}

/// List a VM's sessions
#[utoipa::path(get, path = "/v1/vms/{name}/sessions", operation_id = "list_sessions", tag = "sessions",
    params(("name" = String, Path, description = "VM name")),
    responses(
        (status = 200, description = "The VM's sessions", body = Vec<SessionInfo>),
        (status = 404, response = NotFound),
        (status = 412, response = Unavailable),
        (status = 500, response = Internal),
    ))]
pub async fn list_sessions(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<SessionInfo>>> {
    Ok(Json(d.sessions.list(Some(&name)).await?))
}

/// Start a command in a new session
#[utoipa::path(post, path = "/v1/vms/{name}/sessions", operation_id = "start_session", tag = "sessions",
    description = "Returns once the command has started. A name is taken while its session \
        runs; starting a name whose session ended replaces it (its log too).",
    params(("name" = String, Path, description = "VM name")),
    request_body = StartSessionRequest,
    responses(
        (status = 201, description = "The session runs", body = SessionInfo),
        (status = 400, response = Invalid),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 412, response = Unavailable),
        (status = 500, response = Internal),
    ))]
pub async fn start_session(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<StartSessionRequest>,
) -> ApiResult<(StatusCode, Json<SessionInfo>)> {
    Ok((
        StatusCode::CREATED,
        Json(d.sessions.start(&name, req).await?),
    ))
}

/// Show one session
#[utoipa::path(get, path = "/v1/vms/{name}/sessions/{session}", operation_id = "show_session", tag = "sessions",
    params(("name" = String, Path, description = "VM name"), ("session" = String, Path, description = "Session name")),
    responses(
        (status = 200, description = "The session", body = SessionInfo),
        (status = 404, response = NotFound),
        (status = 412, response = Unavailable),
        (status = 500, response = Internal),
    ))]
pub async fn show_session(
    State(d): State<Arc<Daemon>>,
    Path((name, session)): Path<(String, String)>,
) -> ApiResult<Json<SessionInfo>> {
    Ok(Json(d.sessions.get(&name, &session).await?))
}

/// Forget a session that is no longer running (its record and log)
#[utoipa::path(delete, path = "/v1/vms/{name}/sessions/{session}", operation_id = "remove_session", tag = "sessions",
    params(("name" = String, Path, description = "VM name"), ("session" = String, Path, description = "Session name")),
    responses(
        (status = 200, description = "The session as it was", body = SessionInfo),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 412, response = Unavailable),
        (status = 500, response = Internal),
    ))]
pub async fn remove_session(
    State(d): State<Arc<Daemon>>,
    Path((name, session)): Path<(String, String)>,
) -> ApiResult<Json<SessionInfo>> {
    Ok(Json(d.sessions.remove(&name, &session).await?))
}

/// Type into a session without attaching
#[utoipa::path(post, path = "/v1/vms/{name}/sessions/{session}/send", operation_id = "send_session", tag = "sessions",
    params(("name" = String, Path, description = "VM name"), ("session" = String, Path, description = "Session name")),
    request_body = SendSessionRequest,
    responses(
        (status = 200, description = "Written to the session's terminal", body = SessionInfo),
        (status = 400, response = Invalid),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 412, response = Unavailable),
        (status = 500, response = Internal),
    ))]
pub async fn send_session(
    State(d): State<Arc<Daemon>>,
    Path((name, session)): Path<(String, String)>,
    JsonBody(req): JsonBody<SendSessionRequest>,
) -> ApiResult<Json<SessionInfo>> {
    Ok(Json(d.sessions.send(&name, &session, req.data).await?))
}

/// Stop a session (SIGTERM, SIGKILL after the timeout)
#[utoipa::path(post, path = "/v1/vms/{name}/sessions/{session}/stop", operation_id = "stop_session", tag = "sessions",
    description = "Returns once the command is done, with its exit status. Stopping an \
        ended session returns it as it is.",
    params(("name" = String, Path, description = "VM name"), ("session" = String, Path, description = "Session name")),
    request_body(content = Option<StopSessionRequest>),
    responses(
        (status = 200, description = "The ended session", body = SessionInfo),
        (status = 400, response = Invalid),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 412, response = Unavailable),
        (status = 500, response = Internal),
    ))]
pub async fn stop_session(
    State(d): State<Arc<Daemon>>,
    Path((name, session)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Json<SessionInfo>> {
    let req: StopSessionRequest = if body.is_empty() {
        StopSessionRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| HttpError(ApiError::invalid(format!("invalid request body: {e}"))))?
    };
    Ok(Json(
        d.sessions.stop(&name, &session, req.timeout_secs).await?,
    ))
}

/// Everything a session printed
#[utoipa::path(get, path = "/v1/vms/{name}/sessions/{session}/logs", operation_id = "session_logs", tag = "sessions",
    description = "The session's log in the guest, as raw terminal bytes (escape sequences \
        included), streamed; with `follow`, new output until the command is done.",
    params(("name" = String, Path, description = "VM name"), ("session" = String, Path, description = "Session name"), SessionLogsQuery),
    responses(
        (status = 200, description = "The log", body = String, content_type = "application/octet-stream"),
        (status = 400, description = "A malformed query string (axum's plain-text rejection, not an `ApiError`)",
            body = String, content_type = "text/plain"),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 412, response = Unavailable),
        (status = 500, response = Internal),
    ))]
pub async fn session_logs(
    State(d): State<Arc<Daemon>>,
    Path((name, session)): Path<(String, String)>,
    Query(q): Query<SessionLogsQuery>,
) -> ApiResult<Response> {
    let (_, stream) = d
        .sessions
        .stream(
            &name,
            AgentRequest::Logs {
                name: session,
                tail_lines: q.tail,
                follow: q.follow,
            },
        )
        .await?;
    let body = futures::stream::unfold(stream, |mut s| async move {
        match s.next().await {
            SessionEvent::Output(b) => Some((Ok::<_, std::io::Error>(b), s)),
            SessionEvent::Exit(_) => None,
            // The log was cut short: fail the body, so the client sees an
            // incomplete transfer rather than a clean end.
            SessionEvent::Closed => Some((
                Err(std::io::Error::other(
                    "the guest closed the log stream early",
                )),
                s,
            )),
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

/// Attach to a session's terminal
#[utoipa::path(post, path = "/v1/vms/{name}/sessions/{session}/attach", operation_id = "attach_session", tag = "sessions",
    description = "Upgrades the connection: the request carries `Connection: Upgrade` and \
        `Upgrade: hangar-attach`. After `101 Switching Protocols` the connection carries \
        hangar-exec frames (docs/api.md, \"The exec stream\"): the daemon sends the screen as \
        it is, then `stdout` frames with the session's output, then `exit` when the command \
        is done (or `error`); the client sends `stdin` and `resize` frames. Closing the \
        connection detaches; the session goes on. Several clients may attach at once: all \
        see the same output, all can type, the latest size wins.",
    params(
        ("name" = String, Path, description = "VM name"),
        ("session" = String, Path, description = "Session name"),
        AttachQuery,
        ("Upgrade" = String, Header, description = "Must be `hangar-attach`"),
        ("Connection" = String, Header, description = "Must be `Upgrade`"),
    ),
    responses(
        (status = 101, description = "Switched to the frame stream. It is not an HTTP body and the daemon sends no Content-Type: the media type here only names the stream (see docs/api.md)",
            content_type = "application/vnd.hangar.exec-stream",
            headers(
                ("Upgrade" = String, description = "`hangar-attach`"),
                ("Connection" = String, description = "`upgrade`"),
            )),
        (status = 400, response = Invalid),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 412, response = Unavailable),
        (status = 500, response = Internal),
    ))]
pub async fn attach_session(
    State(d): State<Arc<Daemon>>,
    Path((name, session)): Path<(String, String)>,
    Query(q): Query<AttachQuery>,
    mut req: Request,
) -> Result<Response, HttpError> {
    let pending = super::upgrade::take(&mut req, ATTACH_UPGRADE_PROTOCOL, "hangar session attach")?;
    // Attach in the guest before switching protocols, so an unknown or
    // ended session is a plain HTTP error.
    let (_, stream) = d
        .sessions
        .stream(
            &name,
            AgentRequest::Attach {
                name: session,
                cols: q.cols.unwrap_or(80),
                rows: q.rows.unwrap_or(24),
            },
        )
        .await?;
    tokio::spawn(async move {
        // Counts against the user's connection cap like any open request.
        let _slot = pending.slot;
        match pending.on_upgrade.await {
            Ok(upgraded) => {
                if let Err(e) = bridge(TokioIo::new(upgraded), stream).await {
                    debug!(error = %e, "attach stream ended with an error");
                }
            }
            Err(e) => warn!(error = %e, "attach upgrade failed"),
        }
    });
    Ok(super::upgrade::switching(ATTACH_UPGRADE_PROTOCOL))
}

/// One attached client: frames from it become keystrokes and resizes in
/// the guest; the session's output becomes frames to it. Either side
/// ending ends the bridge; the client leaving only detaches.
async fn bridge<S>(stream: S, mut session: SessionStream) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let input = session.input();
    let to_guest = input.clone();
    let mut reader = tokio::spawn(async move {
        let mut buf = Vec::with_capacity(64 * 1024);
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            loop {
                match Frame::decode(&buf) {
                    Ok(Some((frame, used))) => {
                        buf.drain(..used);
                        let sent = match frame {
                            Frame::Stdin(b) => to_guest.send(b).await,
                            Frame::Resize(c, r) => to_guest.resize(c, r).await,
                            _ => Ok(()),
                        };
                        if sent.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    });
    let last = loop {
        tokio::select! {
            ev = session.next() => match ev {
                SessionEvent::Output(b) => {
                    if let Err(e) = wr.write_all(&Frame::Stdout(b.to_vec()).encode()).await {
                        reader.abort();
                        input.close().await;
                        return Err(e);
                    }
                }
                SessionEvent::Exit(code) => break Frame::Exit(code as i32),
                SessionEvent::Closed => {
                    break Frame::Error("the connection to the guest agent dropped; the session may still run (`hangar session ls`)".into())
                }
            },
            _ = &mut reader => {
                // The client went away: detach.
                input.close().await;
                return Ok(());
            }
        }
    };
    reader.abort();
    wr.write_all(&last.encode()).await?;
    wr.flush().await?;
    wr.shutdown().await
}
