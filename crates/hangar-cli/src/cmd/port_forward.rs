//! `hangar port-forward VM [LOCAL:]REMOTE...`: listens on 127.0.0.1 (only)
//! and carries each connection to the VM's port as its own
//! `POST /v1/vms/{name}/tcp/{port}` upgrade (as `hangar proxy` does), until
//! Ctrl-C.

use std::sync::Arc;

use hangar_api::{ApiError, VmInfo, VmState};
use tokio::net::{TcpListener, TcpStream};

use super::seg;
use crate::args::PortForwardArgs;
use crate::client::Client;

/// One `[LOCAL:]REMOTE`: LOCAL 0 takes any free port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub local: u16,
    pub remote: u16,
}

pub fn parse_forward(spec: &str) -> Result<Forward, ApiError> {
    let bad = |why: &str| {
        ApiError::invalid(format!(
            "forward {spec:?}: {why}; write [LOCAL:]REMOTE, e.g. 8080:80 (LOCAL 0: any free port)"
        ))
    };
    let port = |s: &str| {
        s.parse::<u16>()
            .map_err(|_| bad(&format!("{s:?} is not a port")))
    };
    let (local, remote) = match spec.split_once(':') {
        Some((l, r)) => (port(l)?, port(r)?),
        None => {
            let p = port(spec)?;
            (p, p)
        }
    };
    if remote == 0 {
        return Err(bad("the VM's port cannot be 0"));
    }
    Ok(Forward { local, remote })
}

async fn listen(vm: &str, f: Forward) -> Result<TcpListener, ApiError> {
    TcpListener::bind(("127.0.0.1", f.local)).await.map_err(|e| {
        ApiError::invalid(match e.kind() {
            std::io::ErrorKind::AddrInUse => format!(
                "local port {} is already in use on 127.0.0.1 (another program or forward holds it): \
                 pick another local port, e.g. `hangar port-forward {vm} {}:{}`, or 0:{} for any free one",
                f.local,
                f.local.wrapping_add(10000).max(1024),
                f.remote,
                f.remote
            ),
            std::io::ErrorKind::PermissionDenied => format!(
                "local port {} needs privileges to listen on: pick one above 1023, e.g. `hangar port-forward {vm} 1{:04}:{}`",
                f.local, f.local, f.remote
            ),
            _ => format!("cannot listen on 127.0.0.1:{}: {e}", f.local),
        })
    })
}

/// Carries one accepted connection to the VM's port.
async fn carry(client: Arc<Client>, vm: String, remote: u16, mut conn: TcpStream) {
    let _ = conn.set_nodelay(true);
    let path = format!("/v1/vms/{}/tcp/{remote}", seg(&vm));
    let stream = match client.upgrade_tcp(&path).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("port-forward to {vm}:{remote}: {}", e.message);
            return;
        }
    };
    let mut stream = stream;
    if let Err(e) = tokio::io::copy_bidirectional(&mut conn, &mut stream).await {
        tracing::debug!("port-forward to {vm}:{remote} ended: {e}");
    }
}

pub async fn run(client: &Client, a: &PortForwardArgs) -> Result<(), ApiError> {
    let forwards = a
        .forwards
        .iter()
        .map(|s| parse_forward(s))
        .collect::<Result<Vec<_>, _>>()?;
    // Fail before listening when the VM is unknown or not running.
    let vm: VmInfo = client.get(&format!("/v1/vms/{}", seg(&a.name))).await?;
    if vm.state != VmState::Running {
        return Err(ApiError::conflict(format!(
            "VM {:?} is {}; start it first with `hangar vm start {}`",
            vm.name, vm.state, vm.name
        )));
    }
    let mut listeners = Vec::new();
    for f in &forwards {
        listeners.push((listen(&vm.name, *f).await?, *f));
    }
    let shared = Arc::new(Client::new(client.socket()));
    for (listener, f) in listeners {
        let local = listener
            .local_addr()
            .map_err(|e| ApiError::internal(format!("listener address: {e}")))?;
        println!("Forwarding {local} -> {}:{}", vm.name, f.remote);
        let client = shared.clone();
        let name = vm.name.clone();
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((conn, _)) => {
                        tokio::spawn(carry(client.clone(), name.clone(), f.remote, conn));
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: wait, retry.
                        eprintln!("port-forward: accept on {local} failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            }
        });
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tokio::signal::ctrl_c()
        .await
        .map_err(|e| ApiError::internal(format!("cannot wait for Ctrl-C: {e}")))?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn forwards_are_remote_or_local_colon_remote() {
        assert_eq!(
            parse_forward("80").unwrap(),
            Forward {
                local: 80,
                remote: 80
            }
        );
        assert_eq!(
            parse_forward("8080:80").unwrap(),
            Forward {
                local: 8080,
                remote: 80
            }
        );
        assert_eq!(
            parse_forward("0:22").unwrap(),
            Forward {
                local: 0,
                remote: 22
            }
        );
    }

    #[test]
    fn bad_forwards_say_how_to_write_one() {
        for bad in [
            "",
            "x",
            "80:",
            ":80",
            "1:2:3",
            "70000",
            "8080:0",
            "127.0.0.1:80:80",
        ] {
            let e = parse_forward(bad).unwrap_err();
            assert!(e.message.contains("[LOCAL:]REMOTE"), "{bad:?}: {e:?}");
        }
    }

    #[tokio::test]
    async fn a_taken_local_port_is_named_with_what_to_do() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();

        let e = listen(
            "dev",
            Forward {
                local: port,
                remote: 80,
            },
        )
        .await
        .unwrap_err();

        assert!(
            e.message
                .contains(&format!("local port {port} is already in use")),
            "{e:?}"
        );
        assert!(e.message.contains("0:80"), "{e:?}");
    }
}
