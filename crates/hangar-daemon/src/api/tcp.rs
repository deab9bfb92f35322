//! `POST /v1/vms/{name}/tcp/{port}` with `Upgrade: hangar-tcp`: after `101
//! Switching Protocols` the connection carries one TCP connection to the
//! guest's port, to the guest's address from the VM network namespace or
//! else from inside the guest over SSH (so loopback-only servers are
//! reached, as with `ssh -L`). `hangar proxy` and `hangar port-forward`
//! are its clients, so the user's own OpenSSH reaches a guest with
//! `ProxyCommand`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::response::Response;
use hangar_api::stream::TCP_UPGRADE_PROTOCOL;
use hangar_api::ApiError;
use hangar_guest::{GuestClient, GuestError, GuestTcpStream};
use hangar_store::VmRecord;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::either::Either;
use tracing::debug;

use super::openapi::{Conflict, Invalid, NotFound, Unavailable};
use super::HttpError;
use crate::daemon::Daemon;

/// How long the daemon waits for the guest to accept a connection on its
/// address.
const CONNECT_LIMIT: Duration = Duration::from_secs(5);

/// A connection to the guest's port, and for a tunnelled one the SSH
/// connection it rides on (kept while the stream lives, even if the VM's
/// cache lets go of it).
type Opened = (Either<TcpStream, GuestTcpStream>, Option<Arc<GuestClient>>);

/// Opens the connection. First to the guest's address from the VM network
/// namespace: a server listening on all addresses (the common case) needs
/// nothing more, and a closed port answers at once. Only when that fails,
/// over SSH to the guest's loopback (127.0.0.1, then ::1) with the agent's
/// `direct-tcpip`, as `ssh -L` does, so servers bound to loopback only are
/// reached too; those streams share one SSH connection per VM, where a
/// reader that stalls holds up the others (russh stops reading a
/// connection while one channel lags), so only they pay that. Port 22 is
/// the guest's SSH server itself: never tunnelled (no SSH inside SSH).
async fn open(d: &Daemon, rec: &VmRecord, port: u16) -> Result<Opened, String> {
    let addr = SocketAddr::new(rec.ip.into(), port);
    let direct = match d.infra.net.connect_tcp(addr, CONNECT_LIMIT).await {
        Ok(tcp) => {
            let _ = tcp.set_nodelay(true);
            return Ok((Either::Left(tcp), None));
        }
        Err(e) => format!("{addr} ({e})"),
    };
    let hint = format!(
        "is a server listening? (`hangar exec {} -- ss -ltn`)",
        rec.name
    );
    if port == 22 {
        return Err(format!("nothing accepts on {direct}; {hint}"));
    }
    let client = d.vms.tcp_client(rec).await.map_err(|e| {
        format!("nothing accepts on {direct}, and the guest's loopback cannot be tried: {e}")
    })?;
    let mut refused = Vec::new();
    for host in ["127.0.0.1", "::1"] {
        match client.connect_tcp(host, port).await {
            Ok(s) => {
                debug!(vm = %rec.name, port, host, direct = %direct, "tcp: through the guest's loopback");
                return Ok((Either::Right(s), Some(client)));
            }
            Err(e @ GuestError::TcpRefused { .. }) => refused.push(e.to_string()),
            Err(e) => {
                // No answer: that connection may be held up by a stalled
                // stream; the next stream gets a fresh one.
                if matches!(e, GuestError::TcpOpenTimedOut { .. }) {
                    d.vms.drop_tcp_client(rec, &client);
                }
                refused.push(e.to_string());
                break;
            }
        }
    }
    Err(format!(
        "nothing accepts on {direct}, and {}; {hint}",
        refused.join(", ")
    ))
}

/// Connect to a TCP port of a running VM
#[utoipa::path(post, path = "/v1/vms/{name}/tcp/{port}", operation_id = "connect_tcp", tag = "vms",
    description = "Upgrades the connection: the request carries `Connection: Upgrade` and \
        `Upgrade: hangar-tcp` and no body. The daemon connects to the guest's address:PORT \
        first; when nothing accepts there, to 127.0.0.1:PORT and then [::1]:PORT inside the \
        guest (over its SSH connection to the guest, a `direct-tcpip` channel), so servers \
        that listen only on the guest's loopback are reached too. Port 22 (the guest's SSH \
        server) is only tried on the guest's address. After `101 Switching Protocols` the \
        connection carries that TCP connection's bytes both ways until either side closes. \
        Nothing accepting on either is a 412 before the upgrade. `hangar proxy VM` (an \
        OpenSSH `ProxyCommand`) and `hangar port-forward` are the clients.",
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
    let (mut stream, ssh) = open(&d, &rec, port).await.map_err(|why| {
        HttpError(ApiError::unavailable(format!(
            "cannot connect to port {port} of VM {name:?}: {why}"
        )))
    })?;
    tokio::spawn(async move {
        // The stream keeps its connection's slot: it counts against the
        // user's connection cap like any open request.
        let _slot = pending.slot;
        let _ssh = ssh;
        match pending.on_upgrade.await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut stream).await {
                    debug!(vm = %name, port, error = %e, "tcp stream ended");
                }
            }
            Err(e) => debug!(error = %e, "tcp upgrade failed"),
        }
    });
    Ok(super::upgrade::switching(TCP_UPGRADE_PROTOCOL))
}
