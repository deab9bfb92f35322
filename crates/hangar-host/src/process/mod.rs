//! Running host tools (`ip`, `nft`, `dmsetup`, `mkfs.ext4`, `cpio`...): the
//! one runner every crate uses.
//!
//! A [`Tool`] describes one run: program, arguments, environment, optional
//! stdin, an optional time limit and an optional cancellation token. It runs
//! in one of three ways:
//! - [`Tool::run`] (async): captures stdout and stderr;
//! - [`Tool::run_blocking`]: the same for code already on a blocking thread;
//! - [`Tool::run_streaming`] (async): hands each output line to a callback,
//!   for long builds whose output is progress.
//!
//! Every run puts the tool in its own process group. A timeout, a cancel, a
//! dropped future and a failed exit kill the whole group, so a tool's own
//! children never outlive it. Failures are [`ToolError`]s that carry the
//! command line, the exit status and the tool's trimmed stderr.

mod blocking;
mod error;
mod run;
mod stream;

use std::ffi::{OsStr, OsString};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio_util::sync::CancellationToken;

pub use error::ToolError;

/// After a tool exits, how long its output pipes may stay open (held by a
/// grandchild that inherited them) before the runner stops reading.
const DRAIN_GRACE: Duration = Duration::from_millis(500);
/// How many of the last output lines a failed streaming run reports.
const TAIL_LINES: usize = 8;

/// One run of a host tool. Build it, then call one of the `run` methods.
#[derive(Debug, Clone)]
pub struct Tool {
    program: OsString,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    stdin: Option<Vec<u8>>,
    timeout: Option<Duration>,
    cancel: Option<CancellationToken>,
    accept: Accept,
}

/// Which exit statuses count as success.
#[derive(Debug, Clone)]
enum Accept {
    Zero,
    Codes(Vec<i32>),
    Any,
}

/// What a finished run printed. Output is decoded lossily as UTF-8.
#[derive(Debug, Clone)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Tool {
    /// A run of `program` (a bare name is looked up on `PATH` by the OS).
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Tool {
            program: program.as_ref().to_os_string(),
            args: Vec::new(),
            envs: Vec::new(),
            stdin: None,
            timeout: None,
            cancel: None,
            accept: Accept::Zero,
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Sets one environment variable (the rest is inherited).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((key.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    /// Feeds `data` to the tool's stdin (otherwise stdin is `/dev/null`).
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    /// Kills the tool (and its process group) if it runs longer than `limit`.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// Kills the tool (and its process group) when `token` is cancelled.
    pub fn cancel_on(mut self, token: &CancellationToken) -> Self {
        self.cancel = Some(token.clone());
        self
    }

    /// Exit codes that count as success (default: only 0). e2fsck, for
    /// one, exits 1 when it fixed something.
    pub fn ok_codes(mut self, codes: &[i32]) -> Self {
        self.accept = Accept::Codes(codes.to_vec());
        self
    }

    /// Every exit status counts as success; the caller reads
    /// [`Output::status`] (version and usage texts often exit non-zero).
    pub fn any_status(mut self) -> Self {
        self.accept = Accept::Any;
        self
    }

    /// The command line as it appears in logs and errors: the program and
    /// its arguments separated by spaces.
    pub fn command_line(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs the tool and captures its output (async).
    pub async fn run(self) -> Result<Output, ToolError> {
        run::capture(self).await
    }

    /// Runs the tool and captures its output, blocking this thread. For
    /// code that already runs on a blocking thread (`spawn_blocking`).
    pub fn run_blocking(self) -> Result<Output, ToolError> {
        blocking::capture(self)
    }

    /// Runs the tool, handing each non-empty output line (stdout and
    /// stderr, trimmed) to `on_line` as it arrives. A failure reports the
    /// last lines as its output.
    pub async fn run_streaming(
        self,
        on_line: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<ExitStatus, ToolError> {
        stream::run(self, on_line).await
    }

    /// `Ok` if `status` counts as success, else the failure with `output`.
    fn check(&self, status: ExitStatus, output: &str) -> Result<(), ToolError> {
        let ok = match &self.accept {
            Accept::Zero => status.success(),
            Accept::Codes(codes) => status.code().is_some_and(|c| codes.contains(&c)),
            Accept::Any => true,
        };
        if ok {
            Ok(())
        } else {
            Err(ToolError::Failed {
                command: self.command_line(),
                status,
                output: output.trim().to_string(),
            })
        }
    }

    /// The command both runners spawn: the tool's program, arguments and
    /// environment in a process group of its own (so [`Group`] can kill
    /// what it starts), output piped, stdin piped only when there is input.
    fn command(&self, with_stdin: bool) -> std::process::Command {
        let mut command = std::process::Command::new(&self.program);
        command
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(if with_stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        command
    }

    /// The end of a capture both runners share: a status that does not
    /// count as success is the failure (with stderr); otherwise the group's
    /// leftovers are let live and the output is answered.
    fn finish(
        &self,
        mut group: Group,
        status: ExitStatus,
        stdout: String,
        stderr: String,
    ) -> Result<Output, ToolError> {
        self.check(status, &stderr)?;
        group.release();
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }

    fn is_cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(|c| c.is_cancelled())
    }
}

/// Runs `program args`, returning stdout followed by stderr whatever the
/// exit status (usage and version texts often exit non-zero). The process
/// group is killed after `timeout`.
pub fn capture_blocking(
    program: &Path,
    args: &[&str],
    timeout: Duration,
) -> Result<String, ToolError> {
    let out = Tool::new(program)
        .args(args)
        .timeout(timeout)
        .any_status()
        .run_blocking()?;
    Ok(out.stdout + &out.stderr)
}

/// The process group of a running tool. Dropping it kills the group unless
/// [`Group::release`] was called: a run that ends any other way than a
/// clean exit (an error, a panic, a dropped future) takes the tool's
/// children with it.
struct Group(Option<Pid>);

impl Group {
    /// The group led by `pid` (the tool runs with `process_group(0)`).
    fn led_by(pid: Option<u32>) -> Self {
        Group(pid.and_then(|p| i32::try_from(p).ok()).map(Pid::from_raw))
    }

    fn kill(&mut self) {
        if let Some(pgid) = self.0.take() {
            // ESRCH: the whole group is already gone.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }

    /// The tool exited as it should; leave whatever it started alone.
    fn release(&mut self) {
        self.0 = None;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests;
