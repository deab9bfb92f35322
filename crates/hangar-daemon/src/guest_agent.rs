//! Finding Hangar's guest agent at start (`[guest] agent`) and choosing the
//! initrd each boot uses: an image built with Hangar's initramfs gets the
//! agent appended ([`hangar_image::GuestAgent::boot_initrd`]); other images
//! boot their own initrd untouched.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use hangar_image::{AgentLookup, GuestAgent, ImageManifest};
use tracing::{info, warn};

use crate::error::{DaemonError, Result};

/// Resolves `[guest] agent` ([`hangar_image::find_agent`]): a named agent
/// that is not usable stops the daemon; `auto` finding none logs a warning
/// (`hangar doctor` says it too) and guests start their image's sshd.
pub fn load(setting: &str) -> anyhow::Result<Option<Arc<GuestAgent>>> {
    let exe = std::env::current_exe().ok();
    let found = hangar_image::find_agent(setting, exe.as_deref())
        .with_context(|| format!("[guest] agent = {setting:?}"))?;
    match found {
        AgentLookup::Off => {
            info!("guest agent off ([guest] agent = \"off\"): guests start their image's sshd");
            Ok(None)
        }
        AgentLookup::Missing {
            looked_in,
            unusable,
        } => {
            warn!(?looked_in, ?unusable, "no guest agent found: guests start their image's own sshd; build it with scripts/build-agent.sh");
            Ok(None)
        }
        AgentLookup::Found(agent) => {
            info!(path = %agent.path().display(), bytes = agent.size(), version = agent.short_digest(), "guest agent");
            Ok(Some(Arc::new(agent)))
        }
    }
}

/// The initrd a VM of this image boots with (made on the blocking pool:
/// the first boot after an agent change writes a few MiB).
pub async fn boot_initrd_for(
    agent: Option<Arc<GuestAgent>>,
    image_dir: PathBuf,
    manifest: ImageManifest,
) -> Result<Option<PathBuf>> {
    crate::blocking::off_runtime("boot initrd", move || {
        boot_initrd(agent.as_deref(), &image_dir, &manifest)
    })
    .await?
}

fn boot_initrd(
    agent: Option<&GuestAgent>,
    image_dir: &Path,
    manifest: &ImageManifest,
) -> Result<Option<PathBuf>> {
    let Some(initrd) = &manifest.initrd else {
        return Ok(None);
    };
    match agent {
        // Only Hangar's own initramfs runs the agent (`boot_snapshots` marks
        // it); a registered image's initrd is its own business.
        Some(agent) if manifest.boot_snapshots => agent
            .boot_initrd(image_dir, initrd)
            .map(Some)
            .map_err(|e| DaemonError::image("cannot add the guest agent to the image's initrd", e)),
        _ => Ok(Some(image_dir.join(initrd))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_agent_that_is_not_static_stops_the_daemon_with_the_fix() {
        let me = std::env::current_exe().expect("exe");
        let err = load(&me.display().to_string()).expect_err("must fail");
        assert!(format!("{err:#}").contains("musl"), "{err:#}");
        assert!(load("off").expect("off").is_none());
    }
}
