//! `vm create --run-entrypoint`: at every boot, once the guest answers,
//! the image's Entrypoint + Cmd starts as the session `entrypoint` (with
//! the image's user, Env and WorkingDir), like a container's main process.
//! A boot whose entrypoint cannot start fails like any other boot step.

use hangar_api::StartSessionRequest;
use hangar_guest::session_proto::{self as proto, Request};
use hangar_guest::GuestClient;
use hangar_store::VmRecord;
use tracing::info;

use super::VmService;
use crate::error::{DaemonError, Result};
use crate::session_service;

/// The session the entrypoint runs in.
pub const ENTRYPOINT_SESSION: &str = "entrypoint";

impl VmService {
    pub(crate) async fn start_entrypoint(
        &self,
        rec: &VmRecord,
        client: &GuestClient,
    ) -> Result<()> {
        if !self.vm_dir(&rec.id).run_entrypoint().exists() {
            return Ok(());
        }
        let run = self
            .images
            .run_config(&rec.image_digest)
            .unwrap_or_default();
        let command = run.command();
        if command.is_empty() {
            return Err(DaemonError::invalid(format!(
                "VM {:?} was created with --run-entrypoint, but its image {:?} has no Entrypoint or Cmd",
                rec.name, rec.image_name
            )));
        }
        let req = StartSessionRequest {
            name: ENTRYPOINT_SESSION.into(),
            command,
            ..Default::default()
        };
        let start = session_service::start_request(req, Some(run));
        let started: proto::SessionInfo = client
            .session_call(&Request::Start(start))
            .await
            .map_err(|e| session_service::guest_error(rec, e))
            .map_err(|e| match e {
                DaemonError::Invalid(m) | DaemonError::Conflict(m) => {
                    DaemonError::invalid(format!(
                        "cannot start the image's entrypoint in VM {:?}: {m}",
                        rec.name
                    ))
                }
                other => other,
            })?;
        info!(vm = %rec.name, argv = ?started.argv, "entrypoint started as session {ENTRYPOINT_SESSION:?}");
        Ok(())
    }
}
