//! The console logs of failed creates (`state_dir/logs/`): kept so the
//! user can read why a boot failed, but only the newest few.

use std::path::Path;
use std::time::SystemTime;

/// The file name ending of a failed create's console log.
pub const FAILED_LOG_SUFFIX: &str = ".serial.log";

/// Removes all but the `keep` newest (by modification time) failed-create
/// console logs in `logs_dir`. Returns how many it removed.
pub fn prune_failed_logs(logs_dir: &Path, keep: usize) -> usize {
    let Ok(entries) = std::fs::read_dir(logs_dir) else {
        return 0;
    };
    let mut logs: Vec<(SystemTime, std::path::PathBuf)> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(FAILED_LOG_SUFFIX))
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            meta.is_file()
                .then(|| (meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), e.path()))
        })
        .collect();
    logs.sort_by_key(|l| std::cmp::Reverse(l.0));
    let mut removed = 0;
    for (_, path) in logs.into_iter().skip(keep) {
        match std::fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove an old console log")
            }
        }
    }
    removed
}
