//! `POST /v1/vms/{name}/exec` with `Upgrade: hangar-exec`: the JSON body is
//! an `ExecRequest`; after `101 Switching Protocols` the connection carries
//! `hangar_api::stream::Frame`s both ways until the command exits.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::Response;
use hangar_api::stream::{Frame, UPGRADE_PROTOCOL};
use hangar_api::{ApiError, ExecRequest};
use hangar_guest::{ExecSpec, Input, Output};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::openapi::{Conflict, Internal, Invalid, NotFound, Timeout, Unavailable};
use super::HttpError;
use crate::daemon::Daemon;

/// Run a command (or a shell) in a running VM
#[utoipa::path(post, path = "/v1/vms/{name}/exec", operation_id = "exec", tag = "vms",
    description = "Upgrades the connection: the request carries `Connection: Upgrade` and \
        `Upgrade: hangar-exec` and an `ExecRequest` body (an empty body runs the login shell). \
        After `101 Switching Protocols` the connection is no longer HTTP: it carries \
        hangar-exec frames both ways (one type byte, a big-endian u32 length, the payload) \
        until the daemon sends an exit or error frame. The framing is specified in \
        docs/api.md (\"The exec stream\") and crates/hangar-api/src/stream.rs.",
    params(
        ("name" = String, Path, description = "VM name"),
        ("Upgrade" = String, Header, description = "Must be `hangar-exec`"),
        ("Connection" = String, Header, description = "Must be `Upgrade`"),
    ),
    request_body(content = Option<ExecRequest>, description = "The command; an empty body means the login shell"),
    responses(
        (status = 101, description = "Switched to the hangar-exec frame stream. It is not an HTTP body and the daemon sends no Content-Type: the media type here only names the stream (see docs/api.md)",
            content_type = "application/vnd.hangar.exec-stream",
            headers(
                ("Upgrade" = String, description = "`hangar-exec`"),
                ("Connection" = String, description = "`upgrade`"),
            )),
        (status = 400, response = Invalid),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 412, response = Unavailable),
        (status = 500, response = Internal),
        (status = 504, response = Timeout),
    ))]
pub async fn exec(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    mut req: Request,
) -> Result<Response, HttpError> {
    let pending = super::upgrade::take(&mut req, UPGRADE_PROTOCOL, "hangar exec")?;
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .map_err(|e| HttpError(ApiError::invalid(format!("cannot read request body: {e}"))))?;
    let spec: ExecRequest = if body.is_empty() {
        ExecRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| HttpError(ApiError::invalid(format!("invalid exec request: {e}"))))?
    };
    let rec = super::running_vm(&d, &name)?;
    let spec = match d.images.run_config(&rec.image_digest) {
        Some(run) => with_image_run(spec, &run),
        None => spec,
    };
    // Connect before switching protocols so an unreachable guest (or an
    // unknown user) is a plain HTTP error.
    let client = match spec.user.as_deref() {
        None | Some("root") => d.vms.guest_client(&rec).await?,
        Some(user) => {
            hangar_api::validate_user_name(user).map_err(|e| HttpError(ApiError::invalid(e)))?;
            Arc::new(d.vms.connect_guest_as(&rec, user).await?)
        }
    };
    // The upgraded stream outlives the HTTP connection: it keeps the
    // connection's slot, so exec streams count against the user's cap.
    tokio::spawn(async move {
        let _slot = pending.slot;
        match pending.on_upgrade.await {
            Ok(upgraded) => {
                if let Err(e) = bridge(TokioIo::new(upgraded), client, spec).await {
                    debug!(error = %e, "exec stream ended with an error");
                }
            }
            Err(e) => warn!(error = %e, "exec upgrade failed"),
        }
    });
    Ok(super::upgrade::switching(UPGRADE_PROTOCOL))
}

/// An OCI image's run settings as the defaults of an exec: its user
/// (unless the request names one), its environment (the request's own
/// variables win) and its working directory (`HANGAR_WORKDIR`, which the
/// guest agent takes as the command's directory).
fn with_image_run(mut spec: ExecRequest, run: &hangar_image::sources::RunConfig) -> ExecRequest {
    if spec.user.is_none() {
        spec.user = run.default_user();
    }
    let mut own = std::mem::take(&mut spec.env);
    if let Some(wd) = &run.working_dir {
        // Before the request's own variables, so a request's wins.
        own.insert(0, ("HANGAR_WORKDIR".to_string(), wd.clone()));
    }
    spec.env = run.env_with(own);
    spec
}

/// Pumps frames between the client and the guest command.
async fn bridge<S>(
    stream: S,
    client: std::sync::Arc<hangar_guest::GuestClient>,
    req: ExecRequest,
) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (in_tx, in_rx) = mpsc::channel::<Input>(64);
    let (out_tx, mut out_rx) = mpsc::channel::<Output>(64);

    // Client → guest. Resolves to true when the client went away (its
    // connection closed without the command having ended).
    let mut reader = tokio::spawn(async move {
        let mut buf = Vec::with_capacity(256 * 1024);
        let mut chunk = vec![0u8; 256 * 1024];
        loop {
            loop {
                match Frame::decode(&buf) {
                    Ok(Some((frame, used))) => {
                        buf.drain(..used);
                        let input = match frame {
                            Frame::Stdin(b) => Input::Data(b),
                            Frame::StdinEof => Input::Eof,
                            Frame::Resize(cols, rows) => Input::Resize { cols, rows },
                            _ => continue,
                        };
                        if in_tx.send(input).await.is_err() {
                            return false;
                        }
                    }
                    Ok(None) => break,
                    Err(_) => return true,
                }
            }
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    });

    let spec = ExecSpec {
        command: req.command,
        tty: req.tty,
        term: req.term.unwrap_or_else(|| "xterm-256color".into()),
        cols: req.cols.unwrap_or(80),
        rows: req.rows.unwrap_or(24),
        env: req.env,
    };
    let run = tokio::spawn(async move { client.exec(spec, in_rx, out_tx).await });

    // Guest → client, until the output channel closes. A client that goes
    // away ends the command: dropping the exec closes its SSH channel.
    let mut reader_done = false;
    loop {
        tokio::select! {
            out = out_rx.recv() => {
                let Some(out) = out else { break };
                let frame = match out {
                    Output::Stdout(b) => Frame::Stdout(b),
                    Output::Stderr(b) => Frame::Stderr(b),
                };
                if let Err(e) = wr.write_all(&frame.encode()).await {
                    run.abort();
                    return Err(e);
                }
            }
            gone = &mut reader, if !reader_done => {
                reader_done = true;
                if gone.unwrap_or(true) {
                    debug!("exec client went away; closing the guest command");
                    run.abort();
                    return Ok(());
                }
            }
        }
    }
    let last = match run.await {
        Ok(Ok(code)) => Frame::Exit(code),
        Ok(Err(e)) => Frame::Error(crate::error::error_chain(
            &crate::error::DaemonError::Guest {
                context: "exec failed".into(),
                source: Box::new(e),
            },
        )),
        Err(e) => Frame::Error(format!("exec task failed: {e}")),
    };
    wr.write_all(&last.encode()).await?;
    wr.flush().await?;
    wr.shutdown().await?;
    if !reader_done {
        reader.abort();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_run_config_fills_user_env_and_workdir_but_the_request_wins() {
        let run = hangar_image::sources::RunConfig {
            env: vec!["PATH=/opt/bin:/bin".into(), "MODE=image".into()],
            user: Some("app:app".into()),
            working_dir: Some("/srv".into()),
            ..Default::default()
        };
        let spec = ExecRequest {
            env: vec![("MODE".into(), "request".into())],
            ..Default::default()
        };

        let out = with_image_run(spec, &run);

        assert_eq!(out.user.as_deref(), Some("app"));
        assert_eq!(
            out.env,
            vec![
                ("PATH".to_string(), "/opt/bin:/bin".to_string()),
                ("HANGAR_WORKDIR".to_string(), "/srv".to_string()),
                ("MODE".to_string(), "request".to_string()),
            ]
        );
        let asked = ExecRequest {
            user: Some("root".into()),
            ..Default::default()
        };
        assert_eq!(with_image_run(asked, &run).user.as_deref(), Some("root"));
    }
}
