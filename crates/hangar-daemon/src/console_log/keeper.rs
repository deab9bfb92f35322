//! The task that keeps every VM's console log under the cap.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::ConsoleLogs;

/// How often the logs are looked at. A log overshoots the cap by at most
/// what a guest writes in this time (see docs/security.md#the-guests-console for the
/// measured rate); a look is one `stat` per VM.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(250);

impl ConsoleLogs {
    /// Rotates the console logs under `vms_dir/*/` that are past the cap,
    /// every [`CHECK_INTERVAL`] until `shutdown`.
    pub fn spawn_keeper(
        self: &Arc<Self>,
        vms_dir: PathBuf,
        log_name: &'static str,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let pass = {
                    let this = this.clone();
                    let vms_dir = vms_dir.clone();
                    tokio::task::spawn_blocking(move || this.keep_all(&vms_dir, log_name))
                };
                if let Err(e) = pass.await {
                    warn!(error = %e, "the console log keeper failed a pass");
                }
                tokio::select! {
                    _ = tokio::time::sleep(CHECK_INTERVAL) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        })
    }

    /// One pass over every VM dir.
    pub fn keep_all(&self, vms_dir: &Path, log_name: &str) {
        let Ok(dirs) = std::fs::read_dir(vms_dir) else {
            return; // no VM made yet
        };
        for dir in dirs.flatten() {
            let log = dir.path().join(log_name);
            let result = self.rotate_if_over(&log);
            // Said once per log until it works again: a log that keeps
            // failing (e.g. a link put in its place) must not flood the
            // daemon's own log four times a second.
            let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
            match result {
                Ok(_) => {
                    failing.remove(&log);
                }
                Err(e) => {
                    if failing.insert(log.clone()) {
                        warn!(log = %log.display(), error = %e, "cannot rotate the console log");
                    }
                }
            }
        }
        self.forget_missing();
    }
}
