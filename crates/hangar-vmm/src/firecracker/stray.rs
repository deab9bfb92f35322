//! A jailed Firecracker nobody recorded. A daemon killed between spawning
//! the jailer and storing the VM's runtime leaves a process whose command
//! line names no VM directory (the jailer execs `/firecracker` inside its
//! chroot) and whose pid file is not written yet. It is found through what
//! is made *before* the spawn: the VM dir's API socket symlink, which
//! points into the VM's jail. Every process whose root is that jail (the
//! jailed Firecracker), or the jailer still building it (its `--id` and
//! `--chroot-base-dir`), is killed; then the jail and its cgroups go.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::jailer::{self, Jail, JailerConfig};
use super::API_SOCKET;

/// How long to wait for a killed process (not our child: init reaps it)
/// to go before its jail is removed.
const GONE_WAIT: Duration = Duration::from_secs(5);

/// Kills the jailed Firecracker of `vm_dir` (found through its socket
/// symlink, only under `cfg`'s chroot base), removes its jail, cgroups and
/// the symlink. Returns whether a process was killed.
pub(crate) fn kill_stray_jailed(cfg: &JailerConfig, vm_dir: &Path) -> bool {
    let link = vm_dir.join(API_SOCKET);
    let Ok(target) = std::fs::read_link(&link) else {
        return false;
    };
    let Some(jail) = Jail::from_api_socket(&target).filter(|j| j.dir.starts_with(&cfg.chroot_base))
    else {
        return false;
    };
    let pids = processes_of_jail(cfg, &jail);
    for pid in &pids {
        tracing::warn!(jail = %jail.dir.display(), pid, "killing a jailed Firecracker the store never recorded");
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    let began = Instant::now();
    // A zombie counts as gone (`proc_start_time` is None for it).
    while pids
        .iter()
        .any(|p| crate::process::proc_start_time(*p as u32).is_some())
    {
        if began.elapsed() > GONE_WAIT {
            // Its jail stays for the next start to try again.
            tracing::warn!(jail = %jail.dir.display(), "a killed jailed Firecracker is still there; jail kept");
            return !pids.is_empty();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    jailer::remove_jail(&jail);
    jailer::remove_cgroups(&jailer::cgroup_dirs(cfg, &jail));
    let _ = std::fs::remove_file(&link);
    !pids.is_empty()
}

/// Pids running inside `jail` (their root is the jail's root) or of the
/// jailer building it.
fn processes_of_jail(cfg: &JailerConfig, jail: &Jail) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
            let rooted = std::fs::read_link(e.path().join("root")).is_ok_and(|r| r == jail.root);
            let building = || {
                let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                is_jailer_of(&cmdline, cfg, jail)
            };
            (rooted || building()).then_some(pid)
        })
        .collect()
}

/// Whether a NUL-separated command line is a jailer's for `jail`: it has
/// `--id <id>` and `--chroot-base-dir <base>` as whole arguments.
fn is_jailer_of(cmdline: &[u8], cfg: &JailerConfig, jail: &Jail) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Some(id) = jail.id() else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let has = |flag: &[u8], value: &[u8]| args.windows(2).any(|w| w[0] == flag && w[1] == value);
    has(b"--id", id.as_bytes()) && has(b"--chroot-base-dir", cfg.chroot_base.as_os_str().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jailer_command_line_is_matched_by_its_id_and_chroot_base() {
        let cfg = JailerConfig::new("/usr/bin/jailer", 1, 1, "/s/jail");
        let jail = Jail::new(
            Path::new("/s/jail"),
            Path::new("/usr/bin/firecracker"),
            "abc",
        );
        let line =
            b"jailer\0--id\0abc\0--exec-file\0/usr/bin/firecracker\0--chroot-base-dir\0/s/jail\0";
        assert!(is_jailer_of(line, &cfg, &jail));
        let other_id = b"jailer\0--id\0abcd\0--chroot-base-dir\0/s/jail\0";
        assert!(!is_jailer_of(other_id, &cfg, &jail));
        let other_base = b"jailer\0--id\0abc\0--chroot-base-dir\0/t/jail\0";
        assert!(!is_jailer_of(other_base, &cfg, &jail));
    }
}
