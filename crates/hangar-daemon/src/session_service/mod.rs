//! Long-lived sessions (`hangar session …`, `/v1/…/sessions`): the guest
//! agent runs them and holds their live state (terminal, log, attached
//! clients); this service forwards each request to the VM's agent over the
//! daemon's SSH connection and keeps what it last heard in the store, so
//! sessions are listed while a VM is stopped and survive daemon restarts.
//!
//! Its only lock is the store's (a leaf, never held across guest I/O);
//! each attach or logs stream is its own SSH channel, driven by the API
//! task that serves it.

mod convert;

use std::sync::Arc;
use std::time::Duration;

use hangar_api::{SessionInfo, StartSessionRequest, VmState};
use hangar_guest::session_proto::{self as proto, Request};
use hangar_guest::{GuestClient, GuestError, SessionStream};
use hangar_store::{SessionRecord, VmRecord};
use tracing::warn;

use crate::error::{DaemonError, Result};
use crate::image_service::ImageService;
use crate::infra::Infra;
use crate::vm_service::VmService;

pub use convert::{start_request, to_api};

/// How long a one-shot request may take in the guest.
const CALL_LIMIT: Duration = Duration::from_secs(15);
/// Default grace between SIGTERM and SIGKILL for `stop`.
pub const DEFAULT_STOP_GRACE_SECS: u64 = 10;
/// The agent caps the grace at this.
const MAX_STOP_GRACE_SECS: u64 = 300;

pub struct SessionService {
    infra: Infra,
    vms: Arc<VmService>,
    images: Arc<ImageService>,
}

impl SessionService {
    pub fn new(infra: Infra, vms: Arc<VmService>, images: Arc<ImageService>) -> SessionService {
        SessionService { infra, vms, images }
    }

    /// Starts a session; the image's run settings (USER, Env, WorkingDir)
    /// are the defaults, as for exec.
    pub async fn start(&self, vm: &str, req: StartSessionRequest) -> Result<SessionInfo> {
        if let Some(p) = proto::name_problem(&req.name) {
            return Err(DaemonError::invalid(p));
        }
        if req.command.is_empty() || req.command[0].is_empty() {
            return Err(DaemonError::invalid(
                "a session needs a command: `hangar session start VM NAME -- COMMAND...`",
            ));
        }
        for (k, _) in &req.env {
            if !hangar_guest::is_shell_identifier(k) {
                return Err(DaemonError::invalid(format!(
                    "environment variable name {k:?} is not a valid name"
                )));
            }
        }
        if let Some(u) = &req.user {
            hangar_api::validate_user_name(u).map_err(DaemonError::invalid)?;
        }
        let rec = self.running(vm)?;
        let start = convert::start_request(req, self.images.run_config(&rec.image_digest));
        self.one_shot(&rec, Request::Start(start), CALL_LIMIT).await
    }

    /// Every session of one VM, or of all VMs. A running VM's agent is
    /// asked (and the store brought up to date); a stopped VM's sessions
    /// come from the store, and those it ran are shown as ended.
    pub async fn list(&self, vm: Option<&str>) -> Result<Vec<SessionInfo>> {
        let recs = match vm {
            Some(name) => vec![self.vms.find_vm(name)?],
            None => self.infra.store.list_vms()?,
        };
        let mut out = Vec::new();
        for rec in recs {
            match self.list_one(&rec).await {
                Ok(mut v) => out.append(&mut v),
                // One VM named: its error is the answer. All VMs: one that
                // does not answer shows what the store knows.
                Err(e) if vm.is_some() => return Err(e),
                Err(e) => {
                    warn!(vm = %rec.name, error = %e, "cannot list sessions; showing the last known state");
                    out.append(&mut self.stored(&rec, "the VM's agent did not answer"));
                }
            }
        }
        Ok(out)
    }

    async fn list_one(&self, rec: &VmRecord) -> Result<Vec<SessionInfo>> {
        if !is_running(rec) {
            return Ok(self.stored(rec, "the VM is not running"));
        }
        let client = self.client(rec).await?;
        let mut all: Vec<proto::SessionInfo> =
            call(rec, &client, &Request::List, CALL_LIMIT).await?;
        // The guest is untrusted: a name that could not have been started
        // (control characters, paths) is not passed on to a terminal.
        all.retain(|i| proto::name_problem(&i.name).is_none());
        let rows: Vec<SessionRecord> = all.iter().filter_map(|i| record(rec, i)).collect();
        if let Err(e) = self.infra.store.replace_sessions(&rec.id, &rows) {
            warn!(vm = %rec.name, error = %e, "cannot store the VM's sessions");
        }
        let mut v: Vec<SessionInfo> = all.into_iter().map(|i| to_api(&rec.name, i)).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    /// The store's sessions of a VM whose agent is not asked; ones that
    /// were running are shown as ended, with `why`.
    fn stored(&self, rec: &VmRecord, why: &str) -> Vec<SessionInfo> {
        let rows = self.infra.store.list_sessions(&rec.id).unwrap_or_default();
        rows.iter()
            .filter_map(|r| serde_json::from_str::<proto::SessionInfo>(&r.info_json).ok())
            .filter(|i| proto::name_problem(&i.name).is_none())
            .map(|mut i| {
                if i.state == proto::SessionState::Running {
                    i.state = proto::SessionState::Ended;
                    i.end_reason = Some(why.to_string());
                    i.clients = 0;
                }
                to_api(&rec.name, i)
            })
            .collect()
    }

    pub async fn get(&self, vm: &str, name: &str) -> Result<SessionInfo> {
        let rec = self.vms.find_vm(vm)?;
        if !is_running(&rec) {
            return self
                .stored(&rec, "the VM is not running")
                .into_iter()
                .find(|s| s.name == name)
                .ok_or_else(|| no_session(vm, name));
        }
        self.one_shot(&rec, Request::Info { name: name.into() }, CALL_LIMIT)
            .await
    }

    /// Types `data` into the session.
    pub async fn send(&self, vm: &str, name: &str, data: String) -> Result<SessionInfo> {
        if data.is_empty() {
            return Err(DaemonError::invalid("nothing to send"));
        }
        let rec = self.running(vm)?;
        self.one_shot(
            &rec,
            Request::Send {
                name: name.into(),
                data,
            },
            CALL_LIMIT,
        )
        .await
    }

    /// SIGTERM, then SIGKILL after the grace; returns the ended session.
    pub async fn stop(&self, vm: &str, name: &str, grace_secs: Option<u64>) -> Result<SessionInfo> {
        let grace = grace_secs.unwrap_or(DEFAULT_STOP_GRACE_SECS);
        if grace > MAX_STOP_GRACE_SECS {
            return Err(DaemonError::invalid(format!(
                "a stop timeout of {grace} s is longer than the {MAX_STOP_GRACE_SECS} s allowed"
            )));
        }
        let rec = self.running(vm)?;
        let limit = CALL_LIMIT + Duration::from_secs(grace);
        self.one_shot(
            &rec,
            Request::Stop {
                name: name.into(),
                timeout_secs: grace,
            },
            limit,
        )
        .await
    }

    /// Forgets an ended session: its record and log in the guest, its row
    /// here. While the VM is stopped, only the row goes.
    pub async fn remove(&self, vm: &str, name: &str) -> Result<SessionInfo> {
        let rec = self.vms.find_vm(vm)?;
        if !is_running(&rec) {
            let info = self
                .stored(&rec, "the VM is not running")
                .into_iter()
                .find(|s| s.name == name)
                .ok_or_else(|| no_session(vm, name))?;
            self.infra.store.delete_session(&rec.id, name)?;
            return Ok(info);
        }
        let info = self
            .about_one(&rec, &Request::Remove { name: name.into() }, CALL_LIMIT)
            .await?;
        self.infra.store.delete_session(&rec.id, name)?;
        Ok(to_api(&rec.name, info))
    }

    /// An attach or logs stream on its own SSH channel.
    pub async fn stream(&self, vm: &str, req: Request) -> Result<(SessionInfo, SessionStream)> {
        let rec = self.running(vm)?;
        let client = self.client(&rec).await?;
        let (info, stream) = tokio::time::timeout(CALL_LIMIT, client.session_stream(&req))
            .await
            .map_err(|_| too_slow(&rec))?
            .map_err(|e| guest_error(&rec, e))?;
        same_session(&rec, &req, &info)?;
        self.remember(&rec, &info);
        Ok((to_api(&rec.name, info), stream))
    }

    /// A request about one session, remembered and answered.
    async fn one_shot(&self, rec: &VmRecord, req: Request, limit: Duration) -> Result<SessionInfo> {
        let info = self.about_one(rec, &req, limit).await?;
        self.remember(rec, &info);
        Ok(to_api(&rec.name, info))
    }

    /// The agent's answer to a request about one session.
    async fn about_one(
        &self,
        rec: &VmRecord,
        req: &Request,
        limit: Duration,
    ) -> Result<proto::SessionInfo> {
        let client = self.client(rec).await?;
        let info: proto::SessionInfo = call(rec, &client, req, limit).await?;
        same_session(rec, req, &info)?;
        Ok(info)
    }

    fn remember(&self, rec: &VmRecord, info: &proto::SessionInfo) {
        if let Some(row) = record(rec, info) {
            if let Err(e) = self.infra.store.upsert_session(&row) {
                warn!(vm = %rec.name, session = %info.name, error = %e, "cannot store the session");
            }
        }
    }

    fn running(&self, vm: &str) -> Result<VmRecord> {
        let rec = self.vms.find_vm(vm)?;
        if is_running(&rec) {
            return Ok(rec);
        }
        Err(DaemonError::conflict(format!(
            "VM {vm:?} is {}; sessions run in a running VM: `hangar vm start {vm}`",
            rec.state
        )))
    }

    async fn client(&self, rec: &VmRecord) -> Result<Arc<GuestClient>> {
        self.vms.guest_client(rec).await
    }
}

fn is_running(rec: &VmRecord) -> bool {
    rec.state == VmState::Running && rec.runtime.is_some()
}

fn record(rec: &VmRecord, info: &proto::SessionInfo) -> Option<SessionRecord> {
    let mut stored = info.clone();
    stored.clients = 0;
    Some(SessionRecord {
        vm_id: rec.id.clone(),
        name: info.name.clone(),
        info_json: serde_json::to_string(&stored).ok()?,
        updated_at: hangar_host::time::now_utc(),
    })
}

async fn call<T: serde::de::DeserializeOwned>(
    rec: &VmRecord,
    client: &GuestClient,
    req: &Request,
    limit: Duration,
) -> Result<T> {
    tokio::time::timeout(limit, client.session_call::<T>(req))
        .await
        .map_err(|_| too_slow(rec))?
        .map_err(|e| guest_error(rec, e))
}

/// The guest is untrusted: an answer about another session than the one
/// asked for is refused, so it can neither overwrite another session's row
/// nor bring a name of its own (terminal escapes, paths) to a client.
fn same_session(rec: &VmRecord, req: &Request, info: &proto::SessionInfo) -> Result<()> {
    match req.session_name() {
        Some(asked) if asked != info.name => Err(DaemonError::Guest {
            context: format!(
                "VM {:?}'s guest agent answered about another session than {asked:?}",
                rec.name
            ),
            source: Box::new(GuestError::SessionProtocol(
                "wrong session in the reply".into(),
            )),
        }),
        _ => Ok(()),
    }
}

fn too_slow(rec: &VmRecord) -> DaemonError {
    DaemonError::unavailable(format!(
        "VM {:?}'s guest agent did not answer the session request in time",
        rec.name
    ))
}

fn no_session(vm: &str, name: &str) -> DaemonError {
    DaemonError::not_found(format!("no session named {name:?} in VM {vm:?}"))
}

/// The agent's answer keeps its meaning: not found, conflict, invalid.
pub(crate) fn guest_error(rec: &VmRecord, e: GuestError) -> DaemonError {
    match e {
        GuestError::Session(r) => match r.kind {
            proto::ErrorKind::NotFound => DaemonError::not_found(format!(
                "{} (VM {:?}; `hangar session ls {}` lists them)",
                r.message, rec.name, rec.name
            )),
            proto::ErrorKind::Conflict => DaemonError::conflict(r.message),
            proto::ErrorKind::Invalid => DaemonError::invalid(r.message),
            proto::ErrorKind::Internal => DaemonError::Guest {
                context: format!("the session request failed in VM {:?}", rec.name),
                source: Box::new(GuestError::Session(r)),
            },
        },
        GuestError::SessionsUnsupported => DaemonError::unavailable(e.to_string()),
        other => DaemonError::GuestUnreachable {
            context: format!("cannot reach VM {:?}'s guest agent", rec.name),
            source: Box::new(other),
        },
    }
}
