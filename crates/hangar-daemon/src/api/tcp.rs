//! `POST /v1/vms/{name}/tcp/{port}` with `Upgrade: hangar-tcp`: after `101
//! Switching Protocols` the connection carries one TCP connection to the
//! guest's port, opened by the daemon where guests are reachable (inside
//! the VM network namespace). `hangar proxy` is its client, so the user's
//! own OpenSSH reaches a guest with `ProxyCommand`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::response::Response;
use hangar_api::stream::TCP_UPGRADE_PROTOCOL;
use hangar_api::ApiError;
use hyper_util::rt::TokioIo;
use tracing::debug;

use super::openapi::{Conflict, Invalid, NotFound, Unavailable};
use super::HttpError;
use crate::daemon::Daemon;

/// How long the daemon waits for the guest to accept the connection.
const CONNECT_LIMIT: Duration = Duration::from_secs(5);

/// Connect to a TCP port of a running VM
#[utoipa::path(post, path = "/v1/vms/{name}/tcp/{port}", operation_id = "connect_tcp", tag = "vms",
    description = "Upgrades the connection: the request carries `Connection: Upgrade` and \
        `Upgrade: hangar-tcp` and no body. The daemon connects to the port from where guests \
        are reachable; after `101 Switching Protocols` the connection carries that TCP \
        connection's bytes both ways until either side closes. `hangar proxy VM` is the client \
        (an OpenSSH `ProxyCommand`).",
    params(
        ("name" = String, Path, description = "VM name"),
        ("port" = u16, Path, description = "TCP port in the guest (22: its SSH server)"),
        ("Upgrade" = String, Header, description = "Must be `hangar-tcp`"),
        ("Connection" = String, Header, description = "Must be `Upgrade`"),
    ),
    responses(
        (status = 101, description = "Switched to the raw TCP byte stream",
            content_type = "application/octet-stream",
            headers(
                ("Upgrade" = String, description = "`hangar-tcp`"),
                ("Connection" = String, description = "`upgrade`"),
            )),
        (status = 400, response = Invalid),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 412, response = Unavailable),
    ))]
pub async fn connect_tcp(
    State(d): State<Arc<Daemon>>,
    Path((name, port)): Path<(String, String)>,
    mut req: Request,
) -> Result<Response, HttpError> {
    let port: u16 = match port.parse() {
        Ok(p) if p > 0 => p,
        _ => {
            return Err(HttpError(ApiError::invalid(format!(
                "port {port:?} is not a TCP port (1-65535)"
            ))))
        }
    };
    let pending = super::upgrade::take(&mut req, TCP_UPGRADE_PROTOCOL, "hangar proxy")?;
    let rec = super::running_vm(&d, &name)?;
    // Connect before switching protocols, so a closed port is an HTTP error.
    let addr = SocketAddr::new(rec.ip.into(), port);
    let mut tcp = d
        .infra
        .net
        .connect_tcp(addr, CONNECT_LIMIT)
        .await
        .map_err(|e| {
            HttpError(ApiError::unavailable(format!(
                "cannot connect to port {port} of VM {name:?} ({addr}): {e}"
            )))
        })?;
    let _ = tcp.set_nodelay(true);
    tokio::spawn(async move {
        // The stream keeps its connection's slot: it counts against the
        // user's connection cap like any open request.
        let _slot = pending.slot;
        match pending.on_upgrade.await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut tcp).await {
                    debug!(vm = %name, port, error = %e, "tcp stream ended");
                }
            }
            Err(e) => debug!(error = %e, "tcp upgrade failed"),
        }
    });
    Ok(super::upgrade::switching(TCP_UPGRADE_PROTOCOL))
}
