//! VMM process handling shared by every driver: spawning detached from the
//! daemon (own session, optional network namespace), identifying a process
//! by pid *and* start time (pids get reused), reaping our own children,
//! polling adopted ones, and SIGTERM→SIGKILL.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::Command;
use tokio::sync::watch;

use crate::error::VmmError;
use crate::VmmHandle;

/// How often adopted (non-child) processes are polled in /proc.
const POLL: Duration = Duration::from_millis(20);
/// How often the reaper task checks its child without waiting for SIGCHLD.
const REAP_POLL: Duration = Duration::from_millis(100);
/// How long `terminate` waits after SIGTERM before SIGKILL.
pub(crate) const TERM_GRACE: Duration = Duration::from_secs(3);

/// Start time (field 22 of /proc/<pid>/stat, clock ticks since boot) of a
/// live, non-zombie process; `None` if there is no such process.
pub fn proc_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).and_then(|(state, start)| (state != 'Z' && state != 'X').then_some(start))
}

/// Parses (state, starttime) from a /proc/<pid>/stat line. The command name
/// (field 2) may contain spaces and parentheses, so split after the last ')'.
fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); field 22 is index 19.
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// True iff `pid` is alive with exactly `start_time`.
pub fn is_same_process_alive(pid: u32, start_time: u64) -> bool {
    proc_start_time(pid) == Some(start_time)
}

/// Opens /run/netns/<name> before forking, so the child only has to call
/// setns (async-signal-safe) between fork and exec.
pub(crate) fn open_netns(name: &str) -> Result<OwnedFd, VmmError> {
    File::open(format!("/run/netns/{name}"))
        .map(OwnedFd::from)
        .map_err(|source| VmmError::Netns {
            name: name.to_string(),
            source,
        })
}

/// Makes whatever the VMM itself creates (its QMP or API socket, QEMU's
/// pid file) private to its owner, whatever umask the daemon was started
/// with. Not for the jailer: it builds a chroot that its unprivileged
/// user must traverse, and sets those modes itself.
pub(crate) fn private_umask(cmd: &mut Command) {
    // SAFETY: runs between fork and exec; umask is async-signal-safe and
    // cannot fail.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0o077);
            Ok(())
        });
    }
}

/// Makes `cmd` start in its own session (signals to the daemon's process
/// group never reach it), with stdin from /dev/null, optionally inside the
/// network namespace `netns`. The fd must stay open until spawn returns.
pub(crate) fn detach(cmd: &mut Command, netns: Option<&OwnedFd>) {
    cmd.stdin(Stdio::null());
    cmd.kill_on_drop(false);
    let ns_fd = netns.map(|fd| fd.as_raw_fd());
    // SAFETY: the closure runs between fork and exec and calls only
    // async-signal-safe functions (setns, setsid); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fd) = ns_fd {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Hands `file` to the child as fd `target` (open across `exec`). The
/// caller keeps `file` open until the child is spawned.
pub(crate) fn inherit_fd(cmd: &mut Command, file: &impl AsRawFd, target: RawFd) {
    let src = file.as_raw_fd();
    // SAFETY: the closure runs between fork and exec and calls only
    // async-signal-safe functions (dup2, fcntl); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if src == target {
                // dup2 onto itself would keep close-on-exec set.
                let flags = libc::fcntl(src, libc::F_GETFD);
                if flags < 0 || libc::fcntl(src, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(src, target) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Exit state published by the reaper task: `None` while running.
type ExitRx = watch::Receiver<Option<ExitStatus>>;

/// Children this driver spawned. Each has a background task that waits on
/// it (so it never lingers as a zombie) and publishes its exit status.
#[derive(Clone, Default)]
pub(crate) struct Children {
    inner: Arc<Mutex<HashMap<u32, ExitRx>>>,
}

impl Children {
    /// Spawns `cmd`, registers the child and returns its pid and start time.
    pub(crate) fn spawn(
        &self,
        cmd: &mut Command,
        kind: &'static str,
        binary: &Path,
    ) -> Result<(u32, u64), VmmError> {
        let mut child = cmd.spawn().map_err(|source| VmmError::Spawn {
            kind,
            path: binary.to_path_buf(),
            source,
        })?;
        let pid = child.id().ok_or_else(|| VmmError::Spawn {
            kind,
            path: binary.to_path_buf(),
            source: std::io::Error::other("child exited before its pid was read"),
        })?;
        // Read the start time now: the child cannot have been reaped yet
        // (only the task below reaps it), so /proc/<pid> is this process.
        let start_time = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| parse_stat(&s))
            .map(|(_, t)| t)
            .unwrap_or(0);
        let (tx, rx) = watch::channel(None);
        self.lock().insert(pid, rx);
        // The entry stays until `forget`, so the exit status can still be
        // read after the process was reaped.
        tokio::spawn(async move {
            // `wait()` relies on SIGCHLD reaching this runtime's signal
            // driver; with several runtimes in one process (tests, or a
            // runtime shut down) a wake-up can be missed, so also poll
            // `try_wait` (waitpid WNOHANG) now and then.
            let status = loop {
                tokio::select! {
                    s = child.wait() => break s,
                    _ = tokio::time::sleep(REAP_POLL) => {
                        match child.try_wait() {
                            Ok(Some(s)) => break Ok(s),
                            Ok(None) => {}
                            Err(e) => break Err(e),
                        }
                    }
                }
            };
            let status = status.unwrap_or_else(|_| ExitStatus::from_raw(-1));
            tracing::debug!(pid, %status, "VMM process exited");
            let _ = tx.send(Some(status));
        });
        Ok((pid, start_time))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, ExitRx>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn receiver(&self, pid: u32) -> Option<ExitRx> {
        self.lock().get(&pid).cloned()
    }

    /// Drops the record of an exited child (called once the driver is done
    /// with it, so the map does not grow).
    pub(crate) fn forget(&self, pid: u32) {
        let mut map = self.lock();
        if map.get(&pid).is_some_and(|rx| rx.borrow().is_some()) {
            map.remove(&pid);
        }
    }

    /// Exit status if `pid` is our child and has exited.
    pub(crate) fn exit_status(&self, pid: u32) -> Option<ExitStatus> {
        self.receiver(pid).and_then(|rx| *rx.borrow())
    }

    /// If our child `pid` has exited during start-up: the error saying so,
    /// with the end of `log` written since `log_offset`.
    pub(crate) fn early_exit(
        &self,
        pid: u32,
        kind: &'static str,
        log: &Path,
        log_offset: u64,
    ) -> Option<VmmError> {
        self.exit_status(pid).map(|status| VmmError::EarlyExit {
            kind,
            status: describe_status(&status),
            log_tail: log_tail(log, log_offset, 2000),
        })
    }

    /// Waits up to `timeout` for the process to be gone. Our children are
    /// awaited through their reaper task (so `true` means reaped); other
    /// processes are polled in /proc by pid and start time.
    pub(crate) async fn wait_gone(&self, h: &VmmHandle, timeout: Duration) -> bool {
        if let Some(mut rx) = self.receiver(h.pid) {
            let waited = tokio::time::timeout(timeout, rx.wait_for(|s| s.is_some()))
                .await
                .is_ok();
            // `wait_for` also ends (with Err) if the sender is gone, which
            // happens only after it published the status.
            return waited || rx.borrow().is_some();
        }
        let deadline = Instant::now() + timeout;
        loop {
            if !is_same_process_alive(h.pid, h.start_time) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// [`Children::wait_gone`], then drops the record of a child that is
    /// gone (the driver is done with it).
    pub(crate) async fn wait_exit(&self, h: &VmmHandle, timeout: Duration) -> bool {
        let gone = self.wait_gone(h, timeout).await;
        if gone {
            self.forget(h.pid);
        }
        gone
    }

    /// [`term_then_kill`] with `grace` after SIGTERM, waiting through the
    /// reaper (or /proc for an adopted process); drops the record of the
    /// process once it is gone.
    pub(crate) async fn terminate(&self, h: &VmmHandle, grace: Duration) -> Result<(), VmmError> {
        let ended = term_then_kill(h, grace, KILL_WAIT, |timeout| async move {
            Ok(self.wait_gone(h, timeout).await)
        })
        .await?;
        tracing::debug!(pid = h.pid, ?ended, "VMM process gone");
        self.forget(h.pid);
        Ok(())
    }
}

/// How long [`Children::terminate`] waits after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// What ended a process in [`term_then_kill`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// It exited after SIGTERM (or was already gone).
    Term,
    /// It ignored SIGTERM and died of SIGKILL.
    Kill,
}

/// The one SIGTERM→SIGKILL escalation: SIGTERM, wait up to `term_wait`,
/// then SIGKILL, wait up to `kill_wait`. `gone_within(t)` waits up to `t`
/// and says whether the process is gone. Signals go only to the same
/// process (pid and start time), so a reused pid is never hit.
pub(crate) async fn term_then_kill<F, Fut>(
    h: &VmmHandle,
    term_wait: Duration,
    kill_wait: Duration,
    mut gone_within: F,
) -> Result<Ended, VmmError>
where
    F: FnMut(Duration) -> Fut,
    Fut: std::future::Future<Output = Result<bool, VmmError>>,
{
    for (signal, wait, ended) in [
        (Signal::SIGTERM, term_wait, Ended::Term),
        (Signal::SIGKILL, kill_wait, Ended::Kill),
    ] {
        send_signal(h, signal)?;
        if gone_within(wait).await? {
            return Ok(ended);
        }
        tracing::warn!(
            pid = h.pid,
            signal = signal.as_str(),
            "VMM process still alive after signal"
        );
    }
    Err(VmmError::Unkillable { pid: h.pid })
}

/// Sends `signal` to the VMM if it is still the same process (pid and
/// start time); a process that is gone is not an error.
pub(crate) fn send_signal(h: &VmmHandle, signal: Signal) -> Result<(), VmmError> {
    if !is_same_process_alive(h.pid, h.start_time) {
        return Ok(());
    }
    match kill(Pid::from_raw(h.pid as i32), signal) {
        Ok(()) | Err(nix::Error::ESRCH) => Ok(()),
        Err(source) => Err(VmmError::Signal {
            signal: signal.as_str(),
            pid: h.pid,
            source,
        }),
    }
}

/// Kills the process named by `dir/vmm.pid` if its command line names
/// `dir` (a VMM started for that VM directory), so a pid reused by an
/// unrelated process is never touched. For VMMs nobody recorded: a daemon
/// killed between spawning a VMM and storing its handle leaves a process
/// only the pid file knows. Returns whether a process was signalled.
pub fn kill_stray_vmm(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join(crate::PID_FILE)) else {
        return false;
    };
    let Some(pid) = text.trim().parse::<i32>().ok().filter(|p| *p > 0) else {
        return false;
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if !hangar_host::sweep::cmdline_names_dir(&cmdline, dir) {
        return false;
    }
    tracing::warn!(dir = %dir.display(), pid, "killing a VMM the store never recorded");
    kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok()
}

/// Removes a file, ignoring "not found".
pub(crate) fn remove_if_exists(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot remove file"),
    }
}

/// The last `max` bytes of `path` starting at byte `from` (control bytes
/// escaped, see `hangar_host::sanitize`), for
/// error messages that show what the VMM printed before it died.
pub(crate) fn log_tail(path: &Path, from: u64, max: usize) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let from = usize::try_from(from).unwrap_or(0).min(bytes.len());
    let new = &bytes[from..];
    let start = new.len().saturating_sub(max);
    // The console is the guest's: its escape sequences must not reach a
    // terminal through this error message.
    let text = hangar_host::sanitize::escape_controls(&new[start..])
        .trim()
        .to_string();
    if text.is_empty() {
        "(no output)".to_string()
    } else {
        text
    }
}

/// Opens `path` for appending, creating it (and nothing else) private:
/// mode 0600, as every VM file (logs may hold the guest's secrets).
pub(crate) fn open_append(path: &Path) -> Result<File, VmmError> {
    hangar_host::private::append_private_file(path).map_err(|source| VmmError::Io {
        action: "open for appending",
        path: path.to_path_buf(),
        source,
    })
}

/// Formats an exit status for messages ("exit code 1", "signal 9").
pub(crate) fn describe_status(s: &ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_stat_handles_spaces_and_parens_in_comm() {
        let line = "1234 (qemu (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 3 0 987654 1000 10";
        assert_eq!(parse_stat(line), Some(('S', 987654)));
    }

    #[test]
    fn parse_stat_with_truncated_line_returns_none() {
        assert_eq!(parse_stat("1 (init) S 0 1"), None);
    }

    #[test]
    fn proc_start_time_of_self_is_some() {
        assert!(proc_start_time(std::process::id()).is_some());
    }

    #[test]
    fn is_same_process_alive_with_wrong_start_time_is_false() {
        let pid = std::process::id();
        let start = proc_start_time(pid).unwrap();
        assert!(!is_same_process_alive(pid, start + 1));
    }

    #[test]
    fn log_tail_escapes_what_the_guest_printed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("serial.log");
        std::fs::write(&p, "panic \x1b]0;pwned\x07\x1b[2J\n").unwrap();
        let tail = log_tail(&p, 0, 100);
        assert_eq!(tail, "panic \\x1b]0;pwned\\x07\\x1b[2J");
    }

    #[test]
    fn log_tail_returns_only_bytes_after_offset() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        std::fs::write(&p, "old line\nnew line\n").unwrap();
        assert_eq!(log_tail(&p, 9, 100), "new line");
    }

    /// A shell blocked reading its stdin, whose command line ends with
    /// `arg0` (`sh -c CMD ARG0`), with its pid in `dir/vmm.pid`.
    fn sleeper_naming(dir: &Path, arg0: &str) -> std::process::Child {
        let child = std::process::Command::new("/bin/sh")
            .args(["-c", "read line", arg0])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::fs::write(dir.join(crate::PID_FILE), format!("{}\n", child.id())).unwrap();
        // `spawn` returns once exec has begun, which can be a moment before
        // the new command line is in place: wait for it.
        let cmdline = format!("/proc/{}/cmdline", child.id());
        let deadline = Instant::now() + Duration::from_secs(10);
        while !String::from_utf8_lossy(&std::fs::read(&cmdline).unwrap_or_default()).contains(arg0)
        {
            assert!(Instant::now() < deadline, "{cmdline} never named {arg0}");
            std::thread::yield_now();
        }
        child
    }

    #[test]
    fn kill_stray_vmm_kills_the_process_that_names_its_dir() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = sleeper_naming(dir.path(), &dir.path().display().to_string());

        let killed = kill_stray_vmm(dir.path());

        let status = child.wait().unwrap();
        assert!(killed);
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn kill_stray_vmm_leaves_a_process_that_does_not_name_its_dir() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = sleeper_naming(dir.path(), "unrelated");

        let killed = kill_stray_vmm(dir.path());

        assert!(!killed);
        assert_eq!(child.try_wait().unwrap(), None, "the process must live");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn kill_stray_vmm_without_a_pid_file_does_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!kill_stray_vmm(dir.path()));
    }

    #[tokio::test]
    async fn spawned_child_is_reaped_and_wait_gone_returns_true() {
        let children = Children::default();
        let mut cmd = Command::new("/bin/true");
        detach(&mut cmd, None);
        let (pid, start_time) = children
            .spawn(&mut cmd, "test", Path::new("/bin/true"))
            .unwrap();
        let h = VmmHandle {
            pid,
            start_time,
            api_socket: "/nonexistent".into(),
        };
        assert!(children.wait_gone(&h, Duration::from_secs(5)).await);
        assert_eq!(
            proc_start_time(pid),
            None,
            "child must not linger as a zombie"
        );
    }

    fn spawn_detached(children: &Children, script: &str) -> VmmHandle {
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", script]);
        detach(&mut cmd, None);
        let (pid, start_time) = children
            .spawn(&mut cmd, "test", Path::new("/bin/sh"))
            .unwrap();
        VmmHandle {
            pid,
            start_time,
            api_socket: "/nonexistent".into(),
        }
    }

    #[tokio::test]
    async fn term_then_kill_of_a_process_that_honours_sigterm_ends_at_term() {
        let children = Children::default();
        let h = spawn_detached(&children, "exec sleep 30");

        let ended = term_then_kill(&h, Duration::from_secs(5), Duration::from_secs(5), |t| {
            let children = children.clone();
            let h = h.clone();
            async move { Ok(children.wait_gone(&h, t).await) }
        })
        .await
        .unwrap();

        assert_eq!(ended, Ended::Term);
    }

    #[tokio::test]
    async fn term_then_kill_of_a_process_ignoring_sigterm_ends_at_kill() {
        let children = Children::default();
        // The shell announces (by a file) that its trap is set.
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("ready");
        let h = spawn_detached(
            &children,
            &format!(
                "trap '' TERM; touch {}; while :; do sleep 1; done",
                ready.display()
            ),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready.exists() {
            assert!(Instant::now() < deadline, "the trap was never set");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        let ended = term_then_kill(
            &h,
            Duration::from_millis(200),
            Duration::from_secs(5),
            |t| {
                let children = children.clone();
                let h = h.clone();
                async move { Ok(children.wait_gone(&h, t).await) }
            },
        )
        .await
        .unwrap();

        assert_eq!(ended, Ended::Kill);
        assert!(!is_same_process_alive(h.pid, h.start_time));
    }

    #[tokio::test]
    async fn detached_child_runs_in_its_own_session() {
        let children = Children::default();
        let mut cmd = Command::new("/bin/sleep");
        cmd.arg("30");
        detach(&mut cmd, None);
        let (pid, start_time) = children
            .spawn(&mut cmd, "test", Path::new("/bin/sleep"))
            .unwrap();
        let sid = nix::unistd::getsid(Some(Pid::from_raw(pid as i32))).unwrap();
        let h = VmmHandle {
            pid,
            start_time,
            api_socket: "/nonexistent".into(),
        };
        children
            .terminate(&h, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(sid.as_raw(), pid as i32);
        assert!(!is_same_process_alive(pid, start_time));
    }
}
