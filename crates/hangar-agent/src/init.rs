//! PID 1 of a guest booted with the agent. Kept small and synchronous: it
//! starts the SSH server as a child (restarting it when it dies), reaps
//! every orphan, and on SIGTERM/SIGINT/SIGHUP (the `hangar-poweroff`
//! subsystem, `poweroff` from a shell, Ctrl-Alt-Del) stops everything,
//! syncs, remounts `/` read-only and powers off (SIGUSR1: reboot, which
//! also ends the VMM).
//!
//! The server is a separate process so that reaping with `waitpid(-1)`
//! here never steals the exit status of a command the server waits for.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::errno::Errno;
use nix::sys::reboot::{reboot, set_cad_enabled, RebootMode};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::args::CONFIG_DIR;

/// How long processes get to exit on SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Pause before restarting a server that died, so a crash loop does not
/// spin the guest's CPU.
const RESTART_DELAY: Duration = Duration::from_secs(1);

pub fn run() -> anyhow::Result<()> {
    if std::process::id() != 1 {
        anyhow::bail!("init must run as PID 1 (it powers the machine off); use `serve` to run only the SSH server");
    }
    // Ctrl-Alt-Del (Firecracker's SendCtrlAltDel) becomes SIGINT to us.
    if let Err(e) = set_cad_enabled(false) {
        say(&format!("cannot route Ctrl-Alt-Del to init: {e}"));
    }
    match crate::rng::reseed_from(&Path::new(CONFIG_DIR).join("random-seed")) {
        Ok(true) => say("kernel RNG reseeded from the config drive"),
        Ok(false) => {}
        Err(e) => say(&format!("cannot reseed the kernel RNG: {e}")),
    }
    run_rc_local();

    let mut signals = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGUSR1,
    ] {
        signals.add(s);
    }
    signals
        .thread_block()
        .context("cannot block signals in init")?;

    let mut server = start_server(&signals);
    say(&format!("ready, ssh server started at {}s", uptime()));
    loop {
        let sig = signals.wait().context("sigwait")?;
        match sig {
            Signal::SIGCHLD => {
                if reap_all().contains(&server_pid(&server)) {
                    say("the ssh server exited; restarting it");
                    std::thread::sleep(RESTART_DELAY);
                    server = start_server(&signals);
                }
            }
            Signal::SIGUSR1 => shutdown(RebootMode::RB_AUTOBOOT, server_pid(&server)),
            _ => shutdown(RebootMode::RB_POWER_OFF, server_pid(&server)),
        }
    }
}

fn server_pid(server: &Option<u32>) -> Pid {
    Pid::from_raw(server.map_or(-1, |p| p as i32))
}

/// Starts `hangar-agent serve --allow-poweroff`; its children get the
/// default signal mask back.
fn start_server(blocked: &SigSet) -> Option<u32> {
    let exe = std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into());
    let mask = *blocked;
    let mut cmd = Command::new(exe);
    cmd.args(["serve", "--allow-poweroff"]);
    // SAFETY: only sigprocmask between fork and exec (async-signal-safe).
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&mask), None)
                .map_err(std::io::Error::from)
        });
    }
    match cmd.spawn() {
        Ok(child) => Some(child.id()),
        Err(e) => {
            say(&format!("cannot start the ssh server: {e}"));
            None
        }
    }
}

/// Reaps every exited child; returns their pids.
fn reap_all() -> Vec<Pid> {
    let mut reaped = Vec::new();
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return reaped,
            Ok(status) => {
                if let Some(pid) = status.pid() {
                    reaped.push(pid);
                }
            }
        }
    }
}

/// `/etc/hangar/rc.local` of the image, if executable, before sessions.
fn run_rc_local() {
    let rc = Path::new("/etc/hangar/rc.local");
    if !rc.exists() {
        return;
    }
    match Command::new(rc).status() {
        Ok(s) if s.success() => {}
        Ok(s) => say(&format!("{} exited with {s}", rc.display())),
        Err(e) => say(&format!("cannot run {}: {e}", rc.display())),
    }
}

/// How long the SSH server gets to record its sessions as ended by the
/// shutdown before every process is stopped.
const SERVER_STOP_GRACE: Duration = Duration::from_secs(2);

/// Stops every process, flushes, remounts `/` read-only and powers off
/// (or reboots, which QEMU `-no-reboot` and Firecracker treat as exit).
/// The SSH server goes first, while the sessions' commands still run, so
/// it records them as ended by the shutdown (not as killed by SIGTERM).
fn shutdown(mode: RebootMode, server: Pid) -> ! {
    say("shutting down");
    if server.as_raw() > 0 && kill(server, Signal::SIGTERM).is_ok() {
        let deadline = Instant::now() + SERVER_STOP_GRACE;
        while Instant::now() < deadline {
            if matches!(
                waitpid(server, Some(WaitPidFlag::WNOHANG)),
                Ok(nix::sys::wait::WaitStatus::Exited(..)
                    | nix::sys::wait::WaitStatus::Signaled(..))
                    | Err(_)
            ) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        reap_all();
        if waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) == Err(Errno::ECHILD) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    reap_all();
    nix::unistd::sync();
    if let Err(e) = nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REMOUNT | nix::mount::MsFlags::MS_RDONLY,
        None::<&str>,
    ) {
        say(&format!("cannot remount / read-only: {e}"));
    }
    nix::unistd::sync();
    let _ = reboot(mode);
    // Unreachable unless reboot(2) failed: try the other way out.
    let _ = reboot(RebootMode::RB_AUTOBOOT);
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

fn uptime() -> String {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Init's messages go to the serial console (its stderr).
fn say(msg: &str) {
    eprintln!("hangar-agent: {msg}");
}
