//! How a session's process is started: as the logged-in user, in its own
//! session (process group), with a clean environment, through the user's
//! shell when the image has one and directly (argv split like a shell
//! would) when it has none.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

use crate::passwd::User;

/// What the client asked to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// `shell` request: the user's login shell.
    Shell,
    /// `exec` request: the command string.
    Exec(String),
    /// `subsystem sftp`: the agent's own sftp server as the user.
    Sftp,
    /// A long-lived session's command (`hangar-session`): program and
    /// arguments run directly, no shell, PATH looked up.
    Argv(Vec<String>),
}

/// The environment request that sets a command's working directory.
pub const WORKDIR_VAR: &str = "HANGAR_WORKDIR";

/// Everything about the session that shapes the process.
pub struct Launch<'a> {
    pub user: &'a User,
    pub what: &'a What,
    /// Variables from `env` requests, applied last.
    pub env: &'a [(String, String)],
    /// TERM when a PTY was requested.
    pub term: Option<&'a str>,
    /// The PTY slave, when there is one: stdio and controlling terminal.
    pub tty: Option<&'a OwnedFd>,
    /// The PTY slave's path (`SSH_TTY`), when there is one.
    pub tty_name: Option<&'a Path>,
    pub agent_socket: Option<&'a Path>,
    /// `SSH_CONNECTION`: "client_ip client_port server_ip server_port".
    pub connection: &'a str,
    /// `SSH_CLIENT`: "client_ip client_port server_port". Besides scripts
    /// that read it, bash uses it to tell it was started by an SSH server
    /// and then reads ~/.bashrc for commands, as under OpenSSH.
    pub client: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("this image has no shell (no {0} and no /bin/sh): run a program directly, e.g. `hangar exec VM -- /path/to/program args`")]
    NoShell(String),
    #[error("cannot parse the command without a shell (the image has none): {0}")]
    Unparsable(String),
    #[error("empty command")]
    Empty,
    #[error("{0}: command not found")]
    NotFound(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl LaunchError {
    /// Exit status to report, as a shell would.
    pub fn exit_status(&self) -> u32 {
        match self {
            LaunchError::NotFound(_) => 127,
            LaunchError::Io(e) if e.kind() == std::io::ErrorKind::PermissionDenied => 126,
            _ => 1,
        }
    }
}

const ROOT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const USER_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Builds the command, ready to spawn.
pub fn command(l: &Launch<'_>) -> Result<Command, LaunchError> {
    let path_var = if l.user.uid == 0 {
        ROOT_PATH
    } else {
        USER_PATH
    };
    let shell_name = l
        .user
        .shell
        .as_ref()
        .map(|s| s.display().to_string())
        .unwrap_or_default();
    let mut cmd = match (l.what, &l.user.shell) {
        (What::Shell, Some(shell)) => {
            let mut c = Command::new(shell);
            let base = shell.file_name().and_then(|n| n.to_str()).unwrap_or("sh");
            // A leading '-' in argv[0] makes it a login shell.
            c.arg0(format!("-{base}"));
            c
        }
        (What::Shell, None) => return Err(LaunchError::NoShell(shell_name)),
        (What::Exec(line), Some(shell)) => {
            let mut c = Command::new(shell);
            c.arg("-c").arg(line);
            c
        }
        (What::Exec(line), None) => {
            let argv =
                shell_words::split(line).map_err(|e| LaunchError::Unparsable(e.to_string()))?;
            let (program, args) = argv.split_first().ok_or(LaunchError::Empty)?;
            let mut c = Command::new(resolve(program, path_var)?);
            c.args(args);
            c
        }
        (What::Argv(argv), _) => {
            let (program, args) = argv.split_first().ok_or(LaunchError::Empty)?;
            let path = l
                .env
                .iter()
                .rev()
                .find(|(k, _)| k == "PATH")
                .map_or(path_var, |(_, v)| v.as_str());
            let mut c = Command::new(resolve(program, path)?);
            c.arg0(program).args(args);
            c
        }
        (What::Sftp, _) => {
            let mut c = Command::new(std::env::current_exe()?);
            c.arg("sftp-server");
            c
        }
    };
    cmd.env_clear()
        .env("HOME", &l.user.home)
        .env("USER", &l.user.name)
        .env("LOGNAME", &l.user.name)
        .env("PATH", path_var)
        .env("MAIL", Path::new("/var/mail").join(&l.user.name))
        .env(
            "SHELL",
            l.user.shell.as_deref().unwrap_or(Path::new("/bin/sh")),
        );
    // Empty for a session's command: no SSH connection started it.
    if !l.connection.is_empty() {
        cmd.env("SSH_CONNECTION", l.connection)
            .env("SSH_CLIENT", l.client);
    }
    if let Some(term) = l.term {
        cmd.env("TERM", term);
    }
    if let Some(name) = l.tty_name {
        cmd.env("SSH_TTY", name);
    }
    if let Some(sock) = l.agent_socket {
        cmd.env("SSH_AUTH_SOCK", sock);
    }
    // `HANGAR_WORKDIR` is not exported: it asks for the command's working
    // directory (the image's WorkingDir; docs/api.md, "Guest agent
    // protocol"). One that is not a directory falls back to the home.
    let mut workdir = None;
    for (k, v) in l.env {
        if k == WORKDIR_VAR {
            workdir = Some(PathBuf::from(v));
        } else {
            cmd.env(k, v);
        }
    }
    let cwd = match workdir {
        Some(w) if w.is_absolute() && w.is_dir() => w,
        _ if l.user.home.is_dir() => l.user.home.clone(),
        _ => PathBuf::from("/"),
    };
    cmd.current_dir(cwd);
    match l.tty {
        Some(slave) => {
            cmd.stdin(Stdio::from(slave.try_clone()?))
                .stdout(Stdio::from(slave.try_clone()?))
                .stderr(Stdio::from(slave.try_clone()?));
        }
        None => {
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
        }
    }
    let with_tty = l.tty.is_some();
    let ids = Ids::of(l.user)?;
    // SAFETY: between fork and exec only async-signal-safe calls: setsid,
    // ioctl, setgroups, setgid, setuid (no allocation: `groups` is ready).
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            if with_tty && libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            ids.apply()
        });
    }
    cmd.kill_on_drop(false);
    Ok(cmd)
}

/// The ids to switch to, checked before fork.
#[derive(Clone)]
struct Ids {
    switch: bool,
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
}

impl Ids {
    fn of(user: &User) -> Result<Ids, LaunchError> {
        let me = nix::unistd::geteuid().as_raw();
        if me != 0 && me != user.uid {
            return Err(LaunchError::Io(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "the agent runs as uid {me} and cannot start a session as {}",
                    user.name
                ),
            )));
        }
        let mut groups = vec![user.gid];
        groups.extend(&user.groups);
        Ok(Ids {
            switch: me == 0,
            uid: user.uid,
            gid: user.gid,
            groups,
        })
    }

    fn apply(&self) -> std::io::Result<()> {
        if !self.switch {
            return Ok(());
        }
        // SAFETY: plain syscalls on values owned by self.
        unsafe {
            if libc::setgroups(self.groups.len(), self.groups.as_ptr()) != 0
                || libc::setgid(self.gid) != 0
                || libc::setuid(self.uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// Finds a program like a shell would: a name with a slash as is, else
/// the first executable file of that name in PATH.
fn resolve(program: &str, path_var: &str) -> Result<PathBuf, LaunchError> {
    use std::os::unix::fs::PermissionsExt;
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    path_var
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| LaunchError::NotFound(program.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn user(shell: Option<&str>) -> User {
        let me = nix::unistd::geteuid().as_raw();
        User {
            name: "tester".into(),
            uid: me,
            gid: nix::unistd::getegid().as_raw(),
            groups: vec![],
            home: std::env::temp_dir(),
            shell: shell.map(PathBuf::from),
        }
    }

    async fn run(u: &User, what: What, env: &[(String, String)]) -> (String, String, i32) {
        let l = Launch {
            user: u,
            what: &what,
            env,
            term: None,
            tty: None,
            tty_name: None,
            agent_socket: None,
            connection: "10.0.0.1 5000 10.0.0.2 22",
            client: "10.0.0.1 5000 22",
        };
        let out = command(&l).unwrap().output().await.unwrap();
        (
            String::from_utf8_lossy(&out.stdout).into(),
            String::from_utf8_lossy(&out.stderr).into(),
            out.status.code().unwrap_or(-1),
        )
    }

    #[tokio::test]
    async fn with_a_shell_the_command_line_is_the_shells_and_env_is_clean() {
        let u = user(Some("/bin/sh"));
        let env = vec![("GREETING".to_string(), "hi there".to_string())];
        let (out, _, code) = run(
            &u,
            What::Exec(
                "echo \"$GREETING\" $SSH_CONNECTION \"[$SSH_CLIENT]\" $MAIL; env | grep -c CARGO; exit 3"
                    .into(),
            ),
            &env,
        )
        .await;
        assert_eq!(code, 3);
        assert_eq!(
            out,
            "hi there 10.0.0.1 5000 10.0.0.2 22 [10.0.0.1 5000 22] /var/mail/tester\n0\n"
        );
    }

    #[tokio::test]
    async fn hangar_workdir_sets_the_directory_and_is_not_exported() {
        let u = user(Some("/bin/sh"));
        let d = tempfile::tempdir().unwrap();
        let wd = d.path().to_str().unwrap().to_string();
        let env = vec![(WORKDIR_VAR.to_string(), wd.clone())];
        let (out, _, _) = run(
            &u,
            What::Exec("pwd; echo \"[$HANGAR_WORKDIR]\"".into()),
            &env,
        )
        .await;
        assert_eq!(out, format!("{wd}\n[]\n"));
        // Not a directory: the home, as without it.
        let env = vec![(WORKDIR_VAR.to_string(), "/no/such/dir".to_string())];
        let (out, _, _) = run(&u, What::Exec("pwd".into()), &env).await;
        assert_eq!(out.trim_end(), std::env::temp_dir().to_str().unwrap());
    }

    #[tokio::test]
    async fn without_a_shell_argv_is_split_and_run_directly() {
        let u = user(None);
        let (out, _, code) = run(&u, What::Exec("printf '%s|' 'a b' \"c\"".into()), &[]).await;
        assert_eq!((out.as_str(), code), ("a b|c|", 0));
        let l = Launch {
            user: &u,
            what: &What::Exec("no-such-program-xyz".into()),
            env: &[],
            term: None,
            tty: None,
            tty_name: None,
            agent_socket: None,
            connection: "",
            client: "",
        };
        let err = command(&l).unwrap_err();
        assert_eq!(err.exit_status(), 127);
        assert!(err.to_string().contains("command not found"), "{err}");
        let l = Launch {
            what: &What::Shell,
            ..l
        };
        assert!(command(&l).unwrap_err().to_string().contains("no shell"));
    }
}
