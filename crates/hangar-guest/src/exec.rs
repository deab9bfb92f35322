//! Running commands on a guest over an SSH session channel: separate stdout
//! and stderr streams, stdin with EOF, an optional PTY with resizes, and the
//! exit status (128 + signal number when the command was killed).

use std::collections::VecDeque;
use std::sync::Arc;

use russh::client::Msg;
use russh::{ChannelMsg, ChannelWriteHalf};
use tokio::sync::mpsc;

use crate::client::GuestClient;
use crate::error::GuestError;
use crate::signal::exit_code_for_signal;
use hangar_host::quote::shell_quote;

/// What to run and how.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecSpec {
    /// Empty = the user's login shell. One element = a raw shell string
    /// (what `ssh host 'a; b'` sends). Several elements = argv, joined with
    /// [`shell_quote`] so the guest sees exactly these words.
    pub command: Vec<String>,
    /// Allocate a PTY (stdout and stderr then arrive merged on stdout).
    pub tty: bool,
    /// TERM for the PTY; empty means `xterm-256color`.
    pub term: String,
    pub cols: u16,
    pub rows: u16,
    /// Extra environment. Sent as SSH `env` requests, which Hangar's guest
    /// agent honours (and images without a shell need); a server that
    /// refuses them (OpenSSH without a matching AcceptEnv) gets them
    /// exported by its shell before the command instead.
    pub env: Vec<(String, String)>,
}

impl ExecSpec {
    /// A non-interactive command from argv.
    pub fn argv<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> ExecSpec {
        let argv: Vec<String> = argv.into_iter().map(Into::into).collect();
        ExecSpec {
            command: vec![shell_quote(&argv)],
            ..ExecSpec::default()
        }
    }

    /// A non-interactive raw shell string.
    pub fn shell(script: impl Into<String>) -> ExecSpec {
        ExecSpec {
            command: vec![script.into()],
            ..ExecSpec::default()
        }
    }
}

/// What the caller feeds into a running command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Data(Vec<u8>),
    /// No more stdin; data sent afterwards is dropped.
    Eof,
    /// Terminal size changed (forwarded as window-change; ignored by sshd
    /// when there is no PTY).
    Resize {
        cols: u16,
        rows: u16,
    },
}

/// Bytes the command wrote, in order within each stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

/// Result of [`GuestClient::run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Exit status; 128 + signal number when killed by a signal.
    pub code: i32,
}

const DEFAULT_TERM: &str = "xterm-256color";
/// SSH extended data type code for stderr (RFC 4254 §5.2).
const SSH_EXTENDED_DATA_STDERR: u32 = 1;

type WriteHalf = ChannelWriteHalf<Msg>;

/// Longest a guest may take to open a channel on a live connection. A
/// healthy guest answers in milliseconds even under TCG; longer means its
/// SSH server is stopped or wedged, and the caller should hear that
/// instead of waiting for TCP keepalives.
const CHANNEL_OPEN_LIMIT: std::time::Duration = std::time::Duration::from_secs(15);

impl GuestClient {
    /// Opens a session channel, within [`CHANNEL_OPEN_LIMIT`].
    pub(crate) async fn open_session(&self) -> Result<russh::Channel<Msg>, GuestError> {
        tokio::time::timeout(CHANNEL_OPEN_LIMIT, self.handle.channel_open_session())
            .await
            .map_err(|_| GuestError::Unresponsive {
                addr: self.addr,
                limit: CHANNEL_OPEN_LIMIT,
            })?
            .map_err(|source| GuestError::Channel {
                action: "open a session",
                source,
            })
    }

    /// Runs a command (argv joined with proper shell quoting, or a raw shell
    /// string) and streams I/O. Returns the exit status (128+signal number
    /// when killed by a signal).
    ///
    /// Returns only after the guest closed the channel, so every byte the
    /// command wrote has been sent to `output` by then. When `input` closes,
    /// EOF is sent to the command's stdin.
    pub async fn exec(
        &self,
        req: ExecSpec,
        input: mpsc::Receiver<Input>,
        output: mpsc::Sender<Output>,
    ) -> Result<i32, GuestError> {
        check_env_names(&req.env)?;
        let channel = self.open_session().await?;
        let (mut read, write) = channel.split();
        let write = Arc::new(write);
        // Closes the channel if this future is dropped or fails half way,
        // so the remote command does not linger.
        let mut guard = CloseOnDrop(Some(Arc::clone(&write)));

        let env_accepted = send_env(&mut read, &write, &req.env).await?;
        let remote = if env_accepted {
            plain_command(&req)
        } else {
            remote_command(&req)?
        };
        let mut pending: VecDeque<&'static str> = VecDeque::new();
        if req.tty {
            let term = if req.term.is_empty() {
                DEFAULT_TERM
            } else {
                req.term.as_str()
            };
            write
                .request_pty(true, term, req.cols.into(), req.rows.into(), 0, 0, &[])
                .await
                .map_err(|source| GuestError::Channel {
                    action: "request a PTY",
                    source,
                })?;
            pending.push_back("PTY");
        }
        match &remote {
            Some(command) => {
                write
                    .exec(true, command.as_bytes())
                    .await
                    .map_err(|source| GuestError::Channel {
                        action: "start the command",
                        source,
                    })?;
                pending.push_back("exec");
            }
            None => {
                write
                    .request_shell(true)
                    .await
                    .map_err(|source| GuestError::Channel {
                        action: "start a login shell",
                        source,
                    })?;
                pending.push_back("shell");
            }
        }

        let input_task = tokio::spawn(forward_input(input, Arc::clone(&write)));
        let result = pump_output(&mut read, &mut pending, &output).await;
        input_task.abort();
        match result {
            Ok(code) => {
                // The guest closed the channel and russh answered the close.
                guard.disarm();
                Ok(code)
            }
            Err(err) => Err(err), // guard closes the channel
        }
    }

    /// Convenience: run a command to completion collecting stdout/stderr
    /// (used for guest setup and graceful shutdown). stdin is empty.
    pub async fn run(&self, command: &str) -> Result<CommandOutput, GuestError> {
        let (input_tx, input_rx) = mpsc::channel(1);
        drop(input_tx);
        let (output_tx, mut output_rx) = mpsc::channel(64);
        let collect = async {
            let mut stdout = Vec::new();
            let mut stderr = Vec::new();
            while let Some(chunk) = output_rx.recv().await {
                match chunk {
                    Output::Stdout(b) => stdout.extend_from_slice(&b),
                    Output::Stderr(b) => stderr.extend_from_slice(&b),
                }
            }
            (stdout, stderr)
        };
        let (code, (stdout, stderr)) = tokio::join!(
            self.exec(ExecSpec::shell(command), input_rx, output_tx),
            collect
        );
        Ok(CommandOutput {
            stdout,
            stderr,
            code: code?,
        })
    }
}

/// Sends each variable as an `env` request and waits for the answers;
/// true when the server took them all (nothing to send is "all").
async fn send_env(
    read: &mut russh::ChannelReadHalf,
    write: &WriteHalf,
    env: &[(String, String)],
) -> Result<bool, GuestError> {
    for (name, value) in env {
        write
            .set_env(true, name.as_str(), value.as_str())
            .await
            .map_err(|source| GuestError::Channel {
                action: "send an environment variable",
                source,
            })?;
    }
    let mut all = true;
    let mut answered = 0;
    while answered < env.len() {
        match read.wait().await {
            Some(ChannelMsg::Success) => answered += 1,
            Some(ChannelMsg::Failure) => {
                answered += 1;
                all = false;
            }
            Some(ChannelMsg::Close) | None => {
                return Err(GuestError::RequestRefused {
                    request: "environment (the channel closed)",
                })
            }
            Some(_) => {}
        }
    }
    Ok(all)
}

fn check_env_names(env: &[(String, String)]) -> Result<(), GuestError> {
    match env.iter().find(|(name, _)| !is_shell_identifier(name)) {
        Some((name, _)) => Err(GuestError::InvalidEnvName { name: name.clone() }),
        None => Ok(()),
    }
}

/// The command without exports (the environment went as `env` requests).
fn plain_command(req: &ExecSpec) -> Option<String> {
    match req.command.len() {
        0 => None,
        1 => Some(req.command[0].clone()),
        _ => Some(shell_quote(&req.command)),
    }
}

/// The string handed to the guest's shell, with the environment exported
/// first, or `None` for a login shell.
fn remote_command(req: &ExecSpec) -> Result<Option<String>, GuestError> {
    let body = plain_command(req);
    if req.env.is_empty() {
        return Ok(body);
    }
    let mut exports = Vec::with_capacity(req.env.len() + 1);
    exports.push("export".to_string());
    for (name, value) in &req.env {
        if !is_shell_identifier(name) {
            return Err(GuestError::InvalidEnvName { name: name.clone() });
        }
        exports.push(format!(
            "{name}={}",
            shell_quote(std::slice::from_ref(value))
        ));
    }
    let exports = exports.join(" ");
    Ok(Some(match body {
        Some(body) => format!("{exports}; {body}"),
        // With extra env there is no way to ask sshd for a login shell, so
        // start one by hand.
        None => format!("{exports}; exec \"${{SHELL:-/bin/sh}}\" -l"),
    }))
}

/// A name the guest accepts for an environment variable (a shell
/// identifier).
pub fn is_shell_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// Forwards caller input to the channel; closing `input` means EOF.
async fn forward_input(mut input: mpsc::Receiver<Input>, write: Arc<WriteHalf>) {
    let mut eof_sent = false;
    while let Some(msg) = input.recv().await {
        let sent = match msg {
            Input::Data(_) if eof_sent => {
                tracing::debug!("dropping stdin data sent after EOF");
                Ok(())
            }
            Input::Data(bytes) => write.data_bytes(bytes).await,
            Input::Eof if eof_sent => Ok(()),
            Input::Eof => {
                eof_sent = true;
                write.eof().await
            }
            Input::Resize { cols, rows } => {
                write.window_change(cols.into(), rows.into(), 0, 0).await
            }
        };
        if let Err(err) = sent {
            // The command has usually just exited; its status is what
            // matters, so this is not an error of the exec.
            tracing::debug!(error = %err, "stopped forwarding stdin");
            return;
        }
    }
    if !eof_sent {
        if let Err(err) = write.eof().await {
            tracing::debug!(error = %err, "cannot send stdin EOF");
        }
    }
}

/// Reads channel messages until the guest closes the channel; returns the
/// exit status.
async fn pump_output(
    read: &mut russh::ChannelReadHalf,
    pending: &mut VecDeque<&'static str>,
    output: &mpsc::Sender<Output>,
) -> Result<i32, GuestError> {
    let mut status: Option<i32> = None;
    while let Some(msg) = read.wait().await {
        match msg {
            ChannelMsg::Data { data } => send(output, Output::Stdout(data.to_vec())).await?,
            ChannelMsg::ExtendedData { data, ext } => {
                if ext != SSH_EXTENDED_DATA_STDERR {
                    tracing::debug!(ext, "treating unknown extended data as stderr");
                }
                send(output, Output::Stderr(data.to_vec())).await?
            }
            ChannelMsg::ExitStatus { exit_status } => {
                status = Some(i32::try_from(exit_status).unwrap_or(i32::MAX));
            }
            ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                error_message,
                ..
            } => {
                tracing::debug!(signal = ?signal_name, core_dumped, %error_message, "command killed by a signal");
                status = Some(exit_code_for_signal(&signal_name));
            }
            ChannelMsg::Success => {
                pending.pop_front();
            }
            ChannelMsg::Failure => {
                let request = pending.pop_front().unwrap_or("channel");
                return Err(GuestError::RequestRefused { request });
            }
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    status.ok_or(GuestError::NoExitStatus)
}

async fn send(output: &mpsc::Sender<Output>, chunk: Output) -> Result<(), GuestError> {
    output
        .send(chunk)
        .await
        .map_err(|_| GuestError::OutputClosed)
}

/// Sends a channel close when dropped while armed. Drop cannot await, so
/// the close goes out from a spawned task.
struct CloseOnDrop(Option<Arc<WriteHalf>>);

impl CloseOnDrop {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if let Some(write) = self.0.take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = write.close().await;
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(command: &[&str], env: &[(&str, &str)]) -> ExecSpec {
        ExecSpec {
            command: command.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..ExecSpec::default()
        }
    }

    #[test]
    fn empty_command_without_env_requests_login_shell() {
        let remote = remote_command(&spec(&[], &[])).expect("ok");

        assert_eq!(remote, None);
    }

    #[test]
    fn single_element_is_passed_as_raw_shell_string() {
        let remote = remote_command(&spec(&["echo a; echo b"], &[])).expect("ok");

        assert_eq!(remote.as_deref(), Some("echo a; echo b"));
    }

    #[test]
    fn several_elements_are_quoted_as_argv() {
        let remote = remote_command(&spec(&["echo", "a; b"], &[])).expect("ok");

        assert_eq!(remote.as_deref(), Some("echo 'a; b'"));
    }

    #[test]
    fn env_is_exported_before_the_command() {
        let remote = remote_command(&spec(&["env"], &[("FOO", "a b")])).expect("ok");

        assert_eq!(remote.as_deref(), Some("export FOO='a b'; env"));
    }

    #[test]
    fn env_with_login_shell_execs_the_shell() {
        let remote = remote_command(&spec(&[], &[("A", "1")])).expect("ok");

        assert_eq!(
            remote.as_deref(),
            Some("export A=1; exec \"${SHELL:-/bin/sh}\" -l")
        );
    }

    #[test]
    fn invalid_env_name_is_rejected() {
        let err = remote_command(&spec(&["true"], &[("A=B; rm", "x")])).expect_err("must fail");

        assert!(matches!(err, GuestError::InvalidEnvName { .. }), "{err}");
    }

    #[test]
    fn argv_constructor_survives_the_single_element_rule() {
        let spec = ExecSpec::argv(["printf", "%s", "a b"]);

        let remote = remote_command(&spec).expect("ok");

        assert_eq!(remote.as_deref(), Some("printf %s 'a b'"));
    }
}
