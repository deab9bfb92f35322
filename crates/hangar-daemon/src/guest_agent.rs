//! Finding Hangar's guest agent at start (`[guest] agent`) and choosing the
//! initrd each boot uses: an image built with Hangar's initramfs gets the
//! agent appended ([`hangar_image::GuestAgent::boot_initrd`]); other images
//! boot their own initrd untouched.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use hangar_image::{GuestAgent, ImageManifest};
use tracing::{info, warn};

use crate::error::{DaemonError, Result};

/// The file name of the agent wherever it is installed.
pub const AGENT_BINARY: &str = "hangar-agent";

/// Where `auto` looks, in order: cargo's musl build in the checkout the
/// running `hangar` was built in (`target/<profile>/hangar` finds
/// `target/x86_64-unknown-linux-musl/agent/hangar-agent`; the plain
/// `target/<profile>/hangar-agent` beside it is the host build, which is
/// not static), beside the running `hangar`, then the system install dirs.
pub fn candidates(exe: Option<&Path>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(dir) = exe.and_then(Path::parent) {
        if let Some(target) = dir.parent() {
            out.push(
                target
                    .join("x86_64-unknown-linux-musl/agent")
                    .join(AGENT_BINARY),
            );
        }
        out.push(dir.join(AGENT_BINARY));
    }
    out.push(PathBuf::from("/usr/local/lib/hangar").join(AGENT_BINARY));
    out.push(PathBuf::from("/usr/lib/hangar").join(AGENT_BINARY));
    out
}

/// Resolves `[guest] agent`: `off` → none; a path → that agent or an error;
/// `auto` → the first candidate that is a usable agent (others are logged
/// with the reason), else none with a warning (`hangar doctor` says it).
pub fn load(setting: &str) -> anyhow::Result<Option<Arc<GuestAgent>>> {
    let agent = match setting {
        "off" => {
            info!("guest agent off ([guest] agent = \"off\"): guests start their image's sshd");
            return Ok(None);
        }
        "auto" => {
            let exe = std::env::current_exe().ok();
            let found = candidates(exe.as_deref())
                .into_iter()
                .filter(|p| p.is_file())
                .find_map(|p| match GuestAgent::load(&p) {
                    Ok(a) => Some(a),
                    Err(e) => {
                        info!(path = %p.display(), reason = %e, "not a usable guest agent; looking further");
                        None
                    }
                });
            match found {
                Some(a) => a,
                None => {
                    warn!(
                        looked_in = ?candidates(exe.as_deref()),
                        "no guest agent found: guests start their image's own sshd; build it with scripts/build-agent.sh"
                    );
                    return Ok(None);
                }
            }
        }
        path => GuestAgent::load(Path::new(path))
            .with_context(|| format!("[guest] agent = {setting:?}"))?,
    };
    info!(path = %agent.path().display(), bytes = agent.size(), version = agent.short_digest(), "guest agent");
    Ok(Some(Arc::new(agent)))
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
    fn auto_looks_in_the_cargo_musl_dir_then_beside_the_binary_then_system_dirs() {
        let c = candidates(Some(Path::new("/src/hangar/target/debug/hangar")));
        assert_eq!(
            c,
            vec![
                PathBuf::from("/src/hangar/target/x86_64-unknown-linux-musl/agent/hangar-agent"),
                PathBuf::from("/src/hangar/target/debug/hangar-agent"),
                PathBuf::from("/usr/local/lib/hangar/hangar-agent"),
                PathBuf::from("/usr/lib/hangar/hangar-agent"),
            ]
        );
    }

    #[test]
    fn a_named_agent_that_is_not_static_stops_the_daemon_with_the_fix() {
        let me = std::env::current_exe().expect("exe");
        let err = load(&me.display().to_string()).expect_err("must fail");
        assert!(format!("{err:#}").contains("musl"), "{err:#}");
        assert!(load("off").expect("off").is_none());
    }
}
