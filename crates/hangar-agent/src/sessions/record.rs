//! Sessions on disk in the guest: `NAME.json` (the record, rewritten at
//! start and end) and `NAME.log` (everything the command printed), in a
//! private directory on the VM's disk, so ended sessions and their logs
//! outlive the agent and a VM restart.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use hangar_session_proto::{SessionInfo, SessionState};

/// Where sessions are kept unless `serve --sessions-dir` says otherwise.
pub const DEFAULT_DIR: &str = "/var/lib/hangar/sessions";

pub fn log_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.log"))
}

fn record_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.json"))
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Makes the directory (0700); a read-only image falls back to a
/// directory under /run, so sessions work but do not outlive the boot.
pub fn prepare(dir: &Path) -> PathBuf {
    let make = |d: &Path| {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(d)
            .and_then(|()| {
                // Probe that it is writable.
                let probe = d.join(".probe");
                std::fs::write(&probe, b"")?;
                std::fs::remove_file(&probe)
            })
    };
    match make(dir) {
        Ok(()) => dir.to_path_buf(),
        Err(e) => {
            let fallback = PathBuf::from("/run/hangar-sessions");
            tracing::warn!(dir = %dir.display(), error = %e, fallback = %fallback.display(),
                "cannot keep sessions on the disk; they will not outlive this boot");
            let _ = make(&fallback);
            fallback
        }
    }
}

/// Writes the record atomically (temp file, rename), mode 0600.
pub fn save(dir: &Path, info: &SessionInfo) -> std::io::Result<()> {
    let mut live = info.clone();
    live.clients = 0;
    let body = serde_json::to_vec(&live).map_err(std::io::Error::other)?;
    let tmp = dir.join(format!(".{}.json.tmp", info.name));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&body)?;
    f.sync_data()?;
    std::fs::rename(&tmp, record_path(dir, &info.name))
}

pub fn remove(dir: &Path, name: &str) {
    let _ = std::fs::remove_file(record_path(dir, name));
    let _ = std::fs::remove_file(log_path(dir, name));
}

/// Every record in `dir`. One that says running belongs to an agent that
/// is gone (the VM or the agent restarted): it is ended, without a status.
pub fn load_all(dir: &Path) -> Vec<SessionInfo> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(name) = file.to_str().and_then(|f| f.strip_suffix(".json")) else {
            continue;
        };
        if hangar_session_proto::name_problem(name).is_some() {
            continue;
        }
        let Ok(body) = std::fs::read(e.path()) else {
            continue;
        };
        let Ok(mut info) = serde_json::from_slice::<SessionInfo>(&body) else {
            tracing::warn!(file = %e.path().display(), "unreadable session record: ignored");
            continue;
        };
        if info.name != name {
            continue;
        }
        if info.state == SessionState::Running {
            info.state = SessionState::Ended;
            info.end_reason = Some("the VM or its agent restarted while it ran".into());
            let _ = save(dir, &info);
        }
        out.push(info);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn info(name: &str, state: SessionState) -> SessionInfo {
        SessionInfo {
            name: name.into(),
            argv: vec!["top".into()],
            cwd: None,
            user: "root".into(),
            state,
            exit_code: None,
            signal: None,
            end_reason: None,
            started_at: 1,
            ended_at: None,
            clients: 3,
            log_bytes: 0,
        }
    }

    #[test]
    fn records_round_trip_and_running_ones_come_back_ended() {
        let d = tempfile::tempdir().unwrap();
        save(d.path(), &info("a", SessionState::Running)).unwrap();
        let mut done = info("b", SessionState::Exited);
        done.exit_code = Some(3);
        save(d.path(), &done).unwrap();
        std::fs::write(d.path().join("junk.json"), b"{").unwrap();
        std::fs::write(d.path().join(".x.json"), b"{}").unwrap();

        let mut all = load_all(d.path());
        all.sort_by(|a, b| a.name.cmp(&b.name));

        assert_eq!(all.len(), 2);
        assert_eq!(all[0].state, SessionState::Ended);
        assert!(all[0].end_reason.as_deref().unwrap().contains("restarted"));
        assert_eq!(all[0].clients, 0);
        assert_eq!(all[1].exit_code, Some(3));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.path().join("b.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // The correction is saved: a second load agrees.
        assert_eq!(
            load_all(d.path())
                .iter()
                .filter(|i| i.state == SessionState::Ended)
                .count(),
            1
        );
    }
}
