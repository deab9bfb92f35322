//! Long-lived sessions (the `hangar-session` subsystem, docs/api.md
//! "Sessions in the guest agent"): commands on their own terminals that
//! outlive every connection, with a log on the VM's disk and any number of
//! attached clients. The registry lives in the SSH server process for the
//! whole boot; records and logs stay on disk after it.

mod channel;
mod record;
mod session;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use hangar_session_proto::{ErrorKind, ReplyError, SessionInfo, SessionState, StartRequest};

pub use channel::serve;
pub use record::DEFAULT_DIR;
use session::Session;

use crate::passwd;
use crate::server::launch::{Launch, What, WORKDIR_VAR};
use crate::server::pty;

pub struct Registry {
    dir: PathBuf,
    /// Where `/etc/passwd` is read from (`/` in a guest).
    root: PathBuf,
    /// A leaf lock: held only to look up or insert, never across I/O.
    sessions: Mutex<BTreeMap<String, Arc<Session>>>,
}

impl Registry {
    /// Opens the sessions directory and loads what earlier boots left.
    pub fn open(dir: &Path, root: &Path) -> Registry {
        let dir = record::prepare(dir);
        let sessions = record::load_all(&dir)
            .into_iter()
            .map(|info| (info.name.clone(), Session::from_record(&dir, info)))
            .collect();
        Registry {
            dir,
            root: root.to_path_buf(),
            sessions: Mutex::new(sessions),
        }
    }

    fn map(&self) -> MutexGuard<'_, BTreeMap<String, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, name: &str) -> Result<Arc<Session>, ReplyError> {
        self.map().get(name).cloned().ok_or_else(|| {
            ReplyError::new(
                ErrorKind::NotFound,
                format!("no session named {name:?} in this VM"),
            )
        })
    }

    pub fn list(&self) -> Vec<SessionInfo> {
        let all: Vec<Arc<Session>> = self.map().values().cloned().collect();
        all.iter().map(|s| s.info()).collect()
    }

    /// Starts a session; a name is taken while its session runs, and an
    /// ended session of that name is replaced (record and log).
    pub fn start(&self, req: StartRequest) -> Result<SessionInfo, ReplyError> {
        let invalid = |m: String| ReplyError::new(ErrorKind::Invalid, m);
        if let Some(p) = hangar_session_proto::name_problem(&req.name) {
            return Err(invalid(p));
        }
        if req.argv.is_empty() || req.argv[0].is_empty() {
            return Err(invalid("a session needs a command".into()));
        }
        let user_name = req.user.clone().unwrap_or_else(|| "root".into());
        let user = passwd::lookup(&self.root, &user_name)
            .ok_or_else(|| invalid(format!("no user {user_name:?} in the image's /etc/passwd")))?;
        if let Some(cwd) = &req.cwd {
            if !Path::new(cwd).is_absolute() || !Path::new(cwd).is_dir() {
                return Err(invalid(format!(
                    "working directory {cwd:?} is not a directory in the VM"
                )));
            }
        }
        let mut env: Vec<(String, String)> = vec![("HANGAR_SESSION".into(), req.name.clone())];
        env.extend(req.env.iter().cloned());
        if let Some(cwd) = &req.cwd {
            env.push((WORKDIR_VAR.into(), cwd.clone()));
        }
        let (cols, rows) = (req.cols.unwrap_or(80), req.rows.unwrap_or(24));
        let term = req.term.clone().unwrap_or_else(|| "xterm-256color".into());

        // Check and insert under one lock with nothing awaited between.
        let mut map = self.map();
        if let Some(old) = map.get(&req.name) {
            if old.is_running() {
                return Err(ReplyError::new(
                    ErrorKind::Conflict,
                    format!(
                        "a session named {:?} is already running in this VM",
                        req.name
                    ),
                ));
            }
        }
        let pair = pty::open(cols.into(), rows.into()).map_err(|e| {
            ReplyError::new(
                ErrorKind::Internal,
                format!("cannot allocate a terminal: {e}"),
            )
        })?;
        let what = What::Argv(req.argv.clone());
        let launch = Launch {
            user: &user,
            what: &what,
            env: &env,
            term: Some(&term),
            tty: Some(&pair.slave),
            tty_name: pair.name.as_deref(),
            agent_socket: None,
            connection: "",
            client: "",
        };
        let info = SessionInfo {
            name: req.name.clone(),
            argv: req.argv.clone(),
            cwd: req.cwd.clone(),
            user: user.name.clone(),
            state: SessionState::Running,
            exit_code: None,
            signal: None,
            end_reason: None,
            started_at: record::now(),
            ended_at: None,
            clients: 0,
            log_bytes: 0,
        };
        let session = Session::spawn(&self.dir, info, &launch, pair.master, cols, rows)?;
        drop(pair.slave); // the command has its copies
        let info = session.info();
        map.insert(req.name, session);
        tracing::info!(session = %info.name, argv = ?info.argv, user = %info.user, "session started");
        Ok(info)
    }

    /// Records every running session as ended for `reason` (the agent is
    /// about to exit: its terminals close with it).
    pub fn shutdown(&self, reason: &str) {
        let all: Vec<Arc<Session>> = self.map().values().cloned().collect();
        for s in all.iter().filter(|s| s.is_running()) {
            s.end_without_status(reason);
        }
    }

    /// Forgets an ended session and deletes its record and log.
    pub fn remove(&self, name: &str) -> Result<SessionInfo, ReplyError> {
        let mut map = self.map();
        let s = map.get(name).cloned().ok_or_else(|| {
            ReplyError::new(
                ErrorKind::NotFound,
                format!("no session named {name:?} in this VM"),
            )
        })?;
        if s.is_running() {
            return Err(ReplyError::new(
                ErrorKind::Conflict,
                format!("session {name:?} is running: stop it first"),
            ));
        }
        map.remove(name);
        record::remove(&self.dir, name);
        Ok(s.info())
    }
}
