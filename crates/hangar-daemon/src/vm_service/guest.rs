//! Reaching a VM's guest over SSH: from inside the VM network namespace
//! when one is configured, with the guest's host key pinned.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use hangar_guest::{ConnectFn, GuestClient, GuestTarget};
use hangar_store::VmRecord;

use super::VmService;
use crate::error::{DaemonError, Result};

impl VmService {
    /// A connector that opens TCP streams where the guests are reachable.
    pub fn guest_connector(&self) -> ConnectFn {
        let net = self.infra.net.clone();
        Arc::new(move |addr: SocketAddr| {
            let net = net.clone();
            async move { net.connect_tcp(addr, Duration::from_secs(2)).await }.boxed()
        })
    }

    pub fn guest_target(rec: &VmRecord) -> GuestTarget {
        GuestTarget {
            addr: SocketAddr::new(rec.ip.into(), 22),
            user: "root".into(),
            host_key_public: rec.host_key_public.clone(),
        }
    }

    /// An SSH connection to a running VM's guest: the cached one while it
    /// lives (each exec is then one channel, no new handshake), else a new
    /// one, cached for the next caller.
    pub async fn guest_client(&self, rec: &VmRecord) -> Result<Arc<GuestClient>> {
        if let Some(c) = self.guests.get(&rec.id) {
            if !c.is_closed() {
                return Ok(c);
            }
        }
        let client = Arc::new(self.connect_guest(rec).await?);
        self.guests.put(&rec.id, client.clone());
        Ok(client)
    }

    /// Opens a fresh SSH connection to a running VM's guest as `user` (the
    /// guest agent runs its sessions as that user of the image). Not
    /// cached: only root's connection is shared.
    pub async fn connect_guest_as(&self, rec: &VmRecord, user: &str) -> Result<GuestClient> {
        let target = GuestTarget {
            user: user.to_string(),
            ..Self::guest_target(rec)
        };
        GuestClient::connect(
            &self.guest_connector(),
            &target,
            &self.infra.key,
            Duration::from_secs(10),
        )
        .await
        .map_err(|source| match source {
            // The daemon's key is accepted for root, so a refusal here is
            // about the user.
            hangar_guest::GuestError::AuthRejected { .. } => DaemonError::invalid(format!(
                "VM {:?} has no user {user:?} that can log in (the guest agent looks users up in the image's /etc/passwd)",
                rec.name
            )),
            source => DaemonError::GuestUnreachable {
                context: format!("cannot reach VM {:?} over SSH as {user}", rec.name),
                source: Box::new(source),
            },
        })
    }

    /// Opens a fresh SSH connection to a running VM's guest.
    pub async fn connect_guest(&self, rec: &VmRecord) -> Result<GuestClient> {
        GuestClient::connect(
            &self.guest_connector(),
            &Self::guest_target(rec),
            &self.infra.key,
            Duration::from_secs(10),
        )
        .await
        .map_err(|source| DaemonError::GuestUnreachable {
            context: format!(
                "cannot reach VM {:?} over SSH (serial log: {})",
                rec.name,
                self.vm_dir(&rec.id).serial_log().display()
            ),
            source: Box::new(source),
        })
    }
}

/// Live SSH connections per VM id. A leaf lock: never held across I/O.
#[derive(Default)]
pub struct GuestClients(std::sync::Mutex<std::collections::HashMap<String, Arc<GuestClient>>>);

impl GuestClients {
    pub fn get(&self, id: &str) -> Option<Arc<GuestClient>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }
    pub fn put(&self, id: &str, c: Arc<GuestClient>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), c);
    }
    /// Forgets a VM's connection (it is closed when the last user drops it).
    pub fn forget(&self, id: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}
