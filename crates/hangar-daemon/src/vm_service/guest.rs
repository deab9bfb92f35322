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
        self.cached_client(rec, Purpose::Control).await
    }

    /// The SSH connection that carries a VM's TCP streams (`hangar proxy`,
    /// `hangar port-forward`): cached like [`Self::guest_client`] but its
    /// own. russh stops reading a connection while one channel's reader is
    /// behind, so a user's stalled stream may stall this connection, and
    /// must never stall exec, cp and sessions on the control connection.
    pub async fn tcp_client(&self, rec: &VmRecord) -> Result<Arc<GuestClient>> {
        self.cached_client(rec, Purpose::Tcp).await
    }

    async fn cached_client(&self, rec: &VmRecord, purpose: Purpose) -> Result<Arc<GuestClient>> {
        if let Some(c) = self.guests.live(&rec.id, purpose) {
            return Ok(c);
        }
        // One connect at a time per VM and purpose: twenty forwarded
        // connections arriving together make one SSH handshake, not twenty.
        let _connecting = self.guests.gates(purpose).lock(&rec.id).await;
        if let Some(c) = self.guests.live(&rec.id, purpose) {
            return Ok(c);
        }
        let client = Arc::new(self.connect_guest(rec).await?);
        self.guests.put(&rec.id, purpose, client.clone());
        Ok(client)
    }

    /// Lets go of a VM's TCP-streams connection if it is still `client`
    /// (one that stopped answering): the next stream makes a new one, and
    /// this one closes when its last stream ends.
    pub fn drop_tcp_client(&self, rec: &VmRecord, client: &Arc<GuestClient>) {
        self.guests.remove_if(&rec.id, Purpose::Tcp, client);
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

/// What a cached connection carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Purpose {
    /// exec, cp, sessions, power: the daemon's own work.
    Control,
    /// Users' TCP streams.
    Tcp,
}

/// Live SSH connections per VM id and purpose (a leaf lock: never held
/// across I/O), and per purpose the gates that let one caller at a time
/// make a new one (held while connecting).
#[derive(Default)]
pub struct GuestClients {
    clients: std::sync::Mutex<std::collections::HashMap<(String, Purpose), Arc<GuestClient>>>,
    control_gates: super::locks::VmLocks,
    tcp_gates: super::locks::VmLocks,
}

impl GuestClients {
    fn clients(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<(String, Purpose), Arc<GuestClient>>>
    {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn gates(&self, purpose: Purpose) -> &super::locks::VmLocks {
        match purpose {
            Purpose::Control => &self.control_gates,
            Purpose::Tcp => &self.tcp_gates,
        }
    }
    /// The cached connection, unless it is gone.
    fn live(&self, id: &str, purpose: Purpose) -> Option<Arc<GuestClient>> {
        self.clients()
            .get(&(id.to_string(), purpose))
            .filter(|c| !c.is_closed())
            .cloned()
    }
    fn put(&self, id: &str, purpose: Purpose, c: Arc<GuestClient>) {
        self.clients().insert((id.to_string(), purpose), c);
    }
    /// Caches the connection a boot made (it proved the guest is up).
    pub fn put_control(&self, id: &str, c: Arc<GuestClient>) {
        self.put(id, Purpose::Control, c);
    }
    fn remove_if(&self, id: &str, purpose: Purpose, c: &Arc<GuestClient>) {
        let mut clients = self.clients();
        let key = (id.to_string(), purpose);
        if clients
            .get(&key)
            .is_some_and(|cached| Arc::ptr_eq(cached, c))
        {
            clients.remove(&key);
        }
    }
    /// Forgets a VM's connections (each is closed when its last user drops
    /// it).
    pub fn forget(&self, id: &str) {
        self.clients().retain(|(vm, _), _| vm != id);
        self.control_gates.forget(id);
        self.tcp_gates.forget(id);
    }
}
