//! `POST /v1/vms/{name}/tcp/{port}` with `Upgrade: hangar-tcp`: after `101
//! Switching Protocols` the connection carries one TCP connection to the
//! guest's port, opened from inside the guest over SSH (so loopback-only
//! servers are reached, as with `ssh -L`) or else to the guest's address
//! from the VM network namespace. `hangar proxy` and `hangar port-forward`
//! are its clients, so the user's own OpenSSH reaches a guest with
//! `ProxyCommand`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::response::Response;
use hangar_api::stream::TCP_UPGRADE_PROTOCOL;
use hangar_api::ApiError;
use hangar_guest::GuestClient;
use hangar_store::VmRecord;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use super::openapi::{Conflict, Invalid, NotFound, Unavailable};
use super::HttpError;
use crate::daemon::Daemon;

/// How long the daemon waits for the guest to accept a connection on its
/// address.
const CONNECT_LIMIT: Duration = Duration::from_secs(5);

/// A connection to the guest's port, whichever way it was made.
trait GuestStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> GuestStream for T {}

/// A stream and, for a tunnelled one, the SSH connection it rides on (kept
/// while the stream lives, even if the VM's cache lets go of it).
type Opened = (Box<dyn GuestStream>, Option<Arc<GuestClient>>);

/// Opens the connection: over SSH to 127.0.0.1:PORT inside the guest (the
/// guest agent's `direct-tcpip`, as `ssh -L` does), so servers bound to
/// the guest's loopback only are reached; else to the guest's address from
/// the VM network namespace, which reaches servers bound only to that
/// address and works when the guest's SSH server forwards nothing (an
/// image's own sshd with `AllowTcpForwarding no`). Port 22 always takes
/// the direct way: it is the SSH server itself (the agent listens on all
/// addresses), and SSH inside SSH would decrypt every byte twice in the
/// guest and share the tunnel connection with every other stream.
async fn open(d: &Daemon, rec: &VmRecord, port: u16) -> Result<Opened, String> {
    let addr = SocketAddr::new(rec.ip.into(), port);
    let direct = || async move {
        let tcp = d.infra.net.connect_tcp(addr, CONNECT_LIMIT).await?;
        let _ = tcp.set_nodelay(true);
        Ok::<_, std::io::Error>(tcp)
    };
    if port == 22 {
        return match direct().await {
            Ok(tcp) => Ok((Box::new(tcp) as Box<dyn GuestStream>, None)),
            Err(e) => Err(format!("{addr}: {e}")),
        };
    }
    let tunnel = async {
        let client = d.vms.tcp_client(rec).await.map_err(|e| e.to_string())?;
        match client.connect_tcp("127.0.0.1", port).await {
            Ok(s) => Ok((s, client)),
            Err(e) => Err(e.to_string()),
        }
    };
    let refused = match tunnel.await {
        Ok((s, client)) => return Ok((Box::new(s) as Box<dyn GuestStream>, Some(client))),
        Err(e) => e,
    };
    match direct().await {
        Ok(tcp) => {
            debug!(vm = %rec.name, port, tunnel = %refused, "tcp: reached the guest address directly");
            Ok((Box::new(tcp) as Box<dyn GuestStream>, None))
        }
        Err(e) => Err(format!("{refused}; nor at {addr}: {e}")),
    }
}

/// Connect to a TCP port of a running VM
#[utoipa::path(post, path = "/v1/vms/{name}/tcp/{port}", operation_id = "connect_tcp", tag = "vms",
    description = "Upgrades the connection: the request carries `Connection: Upgrade` and \
        `Upgrade: hangar-tcp` and no body. The daemon connects to 127.0.0.1:PORT inside the \
        guest (over its SSH connection to the guest, a `direct-tcpip` channel), so servers \
        that listen only on the guest's loopback are reached; when that is refused, to the \
        guest's address:PORT (servers bound to that address only). Port 22 always goes to the \
        guest's address: it is the guest's SSH server. After `101 Switching Protocols` the \
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
