//! Conformance: the same scenarios against OpenSSH's sshd (the reference)
//! and against `hangar-agent serve`, both on 127.0.0.1 with the same temp
//! host key and authorized_keys, driven by OpenSSH's own clients (`ssh`,
//! `scp`, `sftp`, `ssh-agent`, `ssh-add`, host key pinned) and by the
//! daemon's `GuestClient`. Each scenario is one function taking the
//! [`Server`]; the `conformance!` macro makes one test per pair, named
//! `openssh::SCENARIO` and `agent::SCENARIO`, so a run shows what ran
//! where.
//!
//! A difference between the two servers is a bug unless it is written down
//! here: where the agent differs, the scenario asserts each server's own
//! behaviour under a `match kind` with a comment saying why. The known
//! differences:
//!
//! - env requests: the agent passes every valid name (sshd: `AcceptEnv`).
//! - a client that disappears: the agent hangs up a command without a PTY
//!   (SIGHUP to its process group); sshd leaves it running.
//! - remote forwarding (`ssh -R`) is not served by the agent.
//! - a PTY asked for as 0x0 (`ssh -tt` without a terminal) is 24x80.
//! - algorithms: the agent lacks aes128-gcm, ecdh-sha2-nistp*,
//!   sntrup761x25519, umac and hmac-sha1 (russh's defaults).
//! - authorized_keys lines with options are refused, not honoured.
//! - a nologin/false login shell falls back to /bin/sh.
//! - a home that does not exist: the agent starts in / without a word
//!   (sshd prints "Could not chdir to home directory").
//! - `signal` requests are delivered (Debian's sshd 9.2 refuses them here).
//!
//! Needs root (sshd, user switching): run with `--include-ignored` as root.

#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{block_on, run, text, Running, Server, TempUser};
use hangar_guest::{DaemonKey, ExecSpec, GuestClient, GuestError, Input, Output};
use tokio::sync::mpsc;

#[path = "conformance/access.rs"]
mod access;
#[path = "conformance/exec.rs"]
mod exec;
#[path = "conformance/files.rs"]
mod files;
#[path = "conformance/forwarding.rs"]
mod forwarding;
#[path = "conformance/lifecycle.rs"]
mod lifecycle;
#[path = "conformance/protocol.rs"]
mod protocol;
#[path = "conformance/pty.rs"]
mod pty;

/// `conformance!(module::scenario, …)`: one test per scenario and server.
macro_rules! conformance {
    ($($module:ident :: $scenario:ident),* $(,)?) => {
        mod openssh {
            $(
                #[test]
                #[ignore = "needs root: a private sshd and user switching"]
                fn $scenario() {
                    super::$module::$scenario(super::Server::OpenSsh)
                }
            )*
        }
        mod agent {
            $(
                #[test]
                #[ignore = "needs root: a private sshd and user switching"]
                fn $scenario() {
                    super::$module::$scenario(super::Server::Agent)
                }
            )*
        }
    };
}

conformance!(
    exec::exec_separates_streams_and_reports_the_exit_status,
    exec::exec_stdin_reaches_the_command_until_eof,
    exec::exec_large_output_and_input_arrive_intact,
    exec::exec_killed_by_a_signal_reports_it,
    exec::exec_env_requests_reach_the_command,
    exec::exec_environment_names_the_user_and_connection,
    exec::stdin_the_command_does_not_read_is_dropped,
    exec::measure_login_and_throughput,
    pty::pty_gives_a_terminal_of_the_requested_size,
    pty::pty_window_change_is_seen_by_the_command,
    pty::shell_runs_commands_from_stdin,
    files::sftp_batch_changes_the_disk,
    files::scp_recursive_preserves_tree_and_modes,
    files::scp_legacy_protocol_preserves_tree_and_modes,
    forwarding::local_forward_carries_bytes_both_ways,
    forwarding::stdio_forward_carries_bytes_and_refuses_a_closed_port,
    forwarding::agent_forwarding_lists_the_forwarded_key,
    access::auth_refuses_an_unknown_key_and_an_unknown_user,
    access::a_login_key_logs_in_as_its_user_only,
    access::rsa_and_ecdsa_keys_log_in_and_key_options_are_not_ignored,
    access::non_root_user_runs_as_itself_and_cannot_write_root_files,
    access::a_connection_that_does_not_log_in_is_dropped_after_the_grace_time,
    access::connections_not_logged_in_are_capped,
    lifecycle::client_disconnect_and_the_remote_command,
    lifecycle::background_jobs_and_the_end_of_a_session,
    lifecycle::signal_requests_reach_the_session,
    protocol::requests_beyond_the_basics,
    protocol::transport_keepalive_rekey_compression_and_algorithms,
);

/// `cmd` with the remote command line appended.
fn remote(mut cmd: Command, line: &str) -> Command {
    cmd.arg(line);
    cmd
}

fn ok_output(s: &Running, out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{:?}: {} (stderr {:?})\nserver log:\n{}",
        s.kind,
        out.status,
        text(&out.stderr),
        s.log()
    );
    text(&out.stdout)
}

/// Deterministic bytes (splitmix64), so a failure replays exactly.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A dir both servers' users can reach (the temp key dir is 0755).
fn work_dir(s: &Running, name: &str) -> PathBuf {
    let d = s.keys.dir.path().join(name);
    fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `spec` through the daemon's client with the given input, then
/// collects (status, stdout, stderr).
async fn exec_collect(
    client: &GuestClient,
    spec: ExecSpec,
    input: Vec<Input>,
) -> (Result<i32, GuestError>, Vec<u8>, Vec<u8>) {
    let (in_tx, in_rx) = mpsc::channel(16);
    let (out_tx, mut out_rx) = mpsc::channel(16);
    let feed = async move {
        for i in input {
            in_tx.send(i).await.unwrap();
        }
        drop(in_tx);
    };
    let collect = async {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        while let Some(chunk) = out_rx.recv().await {
            match chunk {
                Output::Stdout(b) => out.extend_from_slice(&b),
                Output::Stderr(b) => err.extend_from_slice(&b),
            }
        }
        (out, err)
    };
    let (code, (), (out, err)) = tokio::join!(client.exec(spec, in_rx, out_tx), feed, collect);
    (code, out, err)
}

// ------------------------------------------------ helpers of several

/// A TCP echo server on 127.0.0.1 (one thread per connection; echoes
/// until EOF, then closes). Lives as long as the test process.
fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 16384];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if conn.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    port
}

/// A TCP server that reads until EOF and only then answers with the
/// number of bytes it got (a half-closed connection must still carry the
/// answer back).
fn eof_responder() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut got = Vec::new();
                if conn.read_to_end(&mut got).is_ok() {
                    let _ = conn.write_all(format!("got {}", got.len()).as_bytes());
                }
            });
        }
    });
    port
}

/// A client process killed by PID on drop.
struct Background(std::process::Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct SshAgent {
    /// Killed (by PID) with this.
    _child: Background,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

fn start_ssh_agent() -> SshAgent {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let child = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = Background(child);
    let until = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < until, "ssh-agent made no socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    SshAgent {
        _child: child,
        socket,
        _dir: dir,
    }
}

fn fingerprint(private_key: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-l")
        .arg("-f")
        .arg(private_key)
        .output()
        .unwrap();
    text(&out.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

fn alive(pid: &str) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

fn kill_pid(pid: &str) {
    if let Ok(p) = pid.parse::<i32>() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}
