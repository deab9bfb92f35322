//! The people of `docs/security.md`, played for real: the CLI run as a
//! non-root user who is in the daemon's `socket_group` (a *socket user*)
//! or who is not (a *stranger*). Both run as uid `nobody` with a home dir
//! of their own, so what they can reach is what the kernel lets `nobody`
//! reach, plus whatever Hangar hands them.
//!
//! A daemon that serves socket users is started with
//! [`TestDaemon::with_socket_group`]; the test's temp dir is opened just
//! enough (`0711`, config `0644`) for `nobody` to find the socket. The
//! group is made on first use; `scripts/test.sh` removes it at the end of
//! a run that made it.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::{hangar_bin, Options, TestDaemon};

/// The group the attack tests give socket access to (made on first use).
pub const TEST_SOCKET_GROUP: &str = "hangar-testers";
/// `nobody` on Debian.
pub const NOBODY: u32 = 65534;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Non-root, in `socket_group`: may use the API, nothing more.
    SocketUser,
    /// Non-root, not in the group: may use nothing of Hangar's.
    Stranger,
}

/// The gid of [`TEST_SOCKET_GROUP`], creating the group if needed.
pub fn test_socket_gid() -> u32 {
    if let Some(gid) = group_gid(TEST_SOCKET_GROUP) {
        return gid;
    }
    let st = Command::new("groupadd")
        .args(["--force", "--system", TEST_SOCKET_GROUP])
        .status()
        .expect("groupadd runs");
    assert!(st.success(), "groupadd {TEST_SOCKET_GROUP} failed: {st}");
    group_gid(TEST_SOCKET_GROUP).expect("group exists after groupadd")
}

fn group_gid(name: &str) -> Option<u32> {
    nix::unistd::Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

impl TestDaemon {
    /// A daemon whose socket is open to [`TEST_SOCKET_GROUP`], with a
    /// config `nobody` can read (the temp dir is already search-only for
    /// others: [`TestDaemon::with`]).
    pub fn with_socket_group(tag: &str, mut opts: Options) -> TestDaemon {
        test_socket_gid();
        opts.extra_config
            .push_str(&format!("\nsocket_group = \"{TEST_SOCKET_GROUP}\"\n"));
        let start = opts.start;
        opts.start = false;
        let mut d = TestDaemon::with(tag, opts);
        set_mode(&d.config, 0o644);
        if start {
            d.spawn();
        }
        d
    }

    /// A home dir for `role`'s user, owned by it (for `~/.ssh` and files
    /// the user passes to the CLI).
    pub fn home_of(&self, role: Role) -> PathBuf {
        let home = self
            .dir
            .path()
            .join(format!("home-{role:?}").to_lowercase());
        if !home.exists() {
            std::fs::create_dir(&home).unwrap();
            std::os::unix::fs::chown(&home, Some(NOBODY), Some(NOBODY)).unwrap();
            set_mode(&home, 0o700);
        }
        home
    }

    /// Runs the CLI as `role` (uid/gid `nobody`, supplementary groups set
    /// for the role) with `HOME` = [`Self::home_of`].
    pub fn hangar_as(&self, role: Role, args: &[&str]) -> Output {
        let mut cmd = Command::new(hangar_bin());
        cmd.arg("--config").arg(&self.config).args(args);
        self.run_as(role, cmd)
    }

    /// Runs any command as `role`, from its home dir.
    pub fn run_as(&self, role: Role, cmd: Command) -> Output {
        self.as_role(role, cmd).output().unwrap()
    }

    /// Starts any command as `role` (e.g. to kill it half way).
    pub fn spawn_as(&self, role: Role, cmd: Command) -> std::process::Child {
        let mut cmd = self.as_role(role, cmd);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.spawn().unwrap()
    }

    fn as_role(&self, role: Role, mut cmd: Command) -> Command {
        let groups: Vec<libc::gid_t> = match role {
            Role::SocketUser => vec![test_socket_gid()],
            Role::Stranger => Vec::new(),
        };
        let home = self.home_of(role);
        cmd.env("HOME", &home)
            .current_dir(&home)
            .stdin(Stdio::null());
        // All three here, in this order: std's `uid()` would run before a
        // `pre_exec` closure, and after it setgroups is not allowed.
        // SAFETY: `become_nobody` makes only async-signal-safe syscalls; it
        // runs in the child between fork and exec.
        unsafe {
            cmd.pre_exec(move || become_nobody(&groups));
        }
        cmd
    }
}

/// Drops a freshly forked child (still root) to uid/gid `nobody` with
/// exactly `groups` as its supplementary groups.
///
/// # Safety
/// Only in a child between fork and exec (or a child that never execs):
/// it changes the calling process's credentials for good.
pub unsafe fn become_nobody(groups: &[libc::gid_t]) -> std::io::Result<()> {
    // SAFETY: plain syscalls on a slice that outlives them.
    unsafe {
        if libc::setgroups(groups.len(), groups.as_ptr()) != 0
            || libc::setgid(NOBODY) != 0
            || libc::setuid(NOBODY) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}
