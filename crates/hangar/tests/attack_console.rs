//! Attack suite, the guest's console (`docs/security.md#the-guests-console`): a guest
//! writes what it likes to its serial console. It must not fill the host's
//! disk through it, nor drive the terminal of a user who reads it.
//!
//! Run as root, holding the boot lock:
//! `sudo cargo test -p hangar --test attack_console -- --include-ignored`

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Options, TestDaemon};

/// The console cap these tests configure (the smallest allowed).
const CAP: u64 = 64 << 10;

fn exec(d: &TestDaemon, vm: &str, script: &str) -> std::process::Output {
    d.hangar(&["exec", vm, "--", "sh", "-c", script])
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// The console stream's end offset, asked of the API directly (the offset
/// header of a 1-byte tail, plus that byte): every byte the guest has
/// written to its console this boot, rotated or not.
fn console_end(d: &TestDaemon, vm: &str) -> u64 {
    let out = Command::new("curl")
        .args(["-s", "-D", "-", "-o", "/dev/null", "--unix-socket"])
        .arg(d.socket())
        .arg(format!("http://hangar/v1/vms/{vm}/console?tail_bytes=1"))
        .output()
        .unwrap();
    let headers = String::from_utf8_lossy(&out.stdout);
    let offset = headers
        .lines()
        .find_map(|l| l.strip_prefix("x-hangar-console-offset: "))
        .unwrap_or_else(|| panic!("no offset header in {headers}"));
    offset.trim().parse::<u64>().unwrap() + 1
}

/// Runs `hangar vm logs VM [extra]` with its stdout on a terminal (a pty
/// made by `script`) and returns the bytes the terminal received.
fn logs_on_a_terminal(d: &TestDaemon, vm: &str, extra: &str) -> Vec<u8> {
    let cmd = format!(
        "{} --config {} vm logs {vm} {extra}",
        common::hangar_bin().display(),
        d.config.display()
    );
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// What the guest prints: a title change, a screen clear, a colour, an
/// 8-bit CSI (C1) and the bell, around a marker.
const ATTACK: &str =
    r"printf '\033]0;pwned\007\033[2J\033[31mHANGAR-ATTACK-MARK\302\233m\007\n' > /dev/console";
const RAW_ATTACK: &[u8] = b"\x1b]0;pwned\x07\x1b[2J\x1b[31mHANGAR-ATTACK-MARK\xc2\x9bm\x07";

#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn guest_escape_sequences_cannot_reach_the_users_terminal() {
    let _serial = common::serial();
    let d = TestDaemon::start("atk-esc");
    d.ok(&["vm", "create", "esc"]);
    let out = exec(&d, "esc", ATTACK);
    assert!(out.status.success(), "{out:?}");
    common::wait_until(
        "the attack to reach the console log",
        Duration::from_secs(30),
        || d.ok(&["vm", "logs", "esc"]).contains("HANGAR-ATTACK-MARK"),
    );

    // On a terminal: not one raw escape, control or C1 byte; the sequence
    // is shown escaped instead.
    let shown = logs_on_a_terminal(&d, "esc", "");
    let bad: Vec<u8> = shown
        .iter()
        .copied()
        .filter(|b| *b == 0x1b || *b == 0x07 || *b == 0x9b)
        .collect();
    assert!(
        bad.is_empty(),
        "raw control bytes {bad:x?} reached the terminal:\n{}",
        String::from_utf8_lossy(&shown)
    );
    assert!(
        contains(
            &shown,
            br"\x1b]0;pwned\x07\x1b[2J\x1b[31mHANGAR-ATTACK-MARK\u{9b}m\x07"
        ),
        "the guest's sequence is shown escaped:\n{}",
        String::from_utf8_lossy(&shown)
    );

    // Piped, and with --raw on a terminal: the guest's bytes as they are.
    let piped = d.hangar(&["vm", "logs", "esc"]).stdout;
    assert!(contains(&piped, RAW_ATTACK), "piped output is raw");
    let raw = logs_on_a_terminal(&d, "esc", "--raw");
    assert!(contains(&raw, RAW_ATTACK), "--raw is raw");

    // Nothing changed: the VM still runs and answers.
    assert_eq!(d.json(&["vm", "show", "esc"])["state"], "running");
    let out = exec(&d, "esc", "echo alive");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "alive\n");
    d.ok(&["vm", "rm", "--force", "esc"]);
    d.assert_nothing_left(1);
}

/// Samples the sizes of the two console files until `until` passes;
/// returns the largest size each reached.
fn watch_sizes(log: &Path, until: Instant) -> (u64, u64) {
    let older = PathBuf::from(format!("{}.1", log.display()));
    let (mut max_log, mut max_older) = (0, 0);
    while Instant::now() < until {
        max_log = max_log.max(size(log));
        max_older = max_older.max(size(&older));
        std::thread::sleep(Duration::from_millis(10));
    }
    (max_log, max_older)
}

#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn guest_flooding_its_console_cannot_fill_the_host_disk() {
    let _serial = common::serial();
    let mut d = TestDaemon::with(
        "atk-flood",
        Options {
            vmm_extra: format!("console_log_max_bytes = {CAP}"),
            ..Default::default()
        },
    );
    d.ok(&["vm", "create", "flood"]);
    let dir = d.vm_dir("flood");
    let log = dir.join("serial.log");
    let older = dir.join("serial.log.1");

    // The guest writes 64-byte lines to its console as fast as it can.
    let secs = 15;
    let line = "x".repeat(63);
    let flood = format!("timeout {secs} sh -c 'while :; do echo {line}; done' > /dev/console");
    let before = console_end(&d, "flood");
    let began = Instant::now();
    let mut guest = Command::new(common::hangar_bin())
        .arg("--config")
        .arg(&d.config)
        .args(["exec", "flood", "--", "sh", "-c", &flood])
        .spawn()
        .unwrap();
    let (max_log, max_older) = watch_sizes(&log, began + Duration::from_secs(secs));
    guest.wait().unwrap();
    let written = console_end(&d, "flood") - before;
    let rate = written as f64 / began.elapsed().as_secs_f64();
    let overshoot = max_log.saturating_sub(CAP);
    eprintln!(
        "console flood: {written} bytes in {:.1} s = {:.0} B/s; largest serial.log {max_log} \
         (cap {CAP}, overshoot {overshoot}); largest serial.log.1 {max_older}",
        began.elapsed().as_secs_f64(),
        rate
    );
    // The keeper looks every 250 ms: overshoot is what the guest writes
    // meanwhile. Allow 1 s of it, for a loaded machine.
    let bound = rate as u64;
    assert!(
        written > 4 * (CAP + bound),
        "the flood wrote {written} bytes: too little to tell a cap from none"
    );
    assert!(
        max_log <= CAP + bound,
        "serial.log reached {max_log} bytes (cap {CAP} + bound {bound})"
    );
    assert!(max_older <= CAP, "serial.log.1 reached {max_older} bytes");

    // `vm logs` still shows the newest lines, and the whole log is bounded.
    let out = exec(&d, "flood", "echo HANGAR-AFTER-FLOOD > /dev/console");
    assert!(out.status.success(), "{out:?}");
    common::wait_until("the marker in vm logs", Duration::from_secs(10), || {
        d.ok(&["vm", "logs", "flood"])
            .trim_end()
            .ends_with("HANGAR-AFTER-FLOOD")
    });
    let all = d.ok(&["vm", "logs", "flood"]);
    assert!(all.contains(&line), "the flood's last lines are shown");
    assert!(
        (all.len() as u64) <= 2 * CAP + bound,
        "vm logs printed {} bytes",
        all.len()
    );

    // VMs outlive the daemon: a log that grew while no daemon ran is cut
    // back as soon as a new daemon runs, and the guest's writes go on.
    let background = format!(
        "setsid sh -c 'sleep 1; timeout 6 sh -c \"while :; do echo {line}; done\"; \
         echo HANGAR-AFTER-RESTART' > /dev/console 2>&1 < /dev/null &"
    );
    let out = exec(&d, "flood", &background);
    assert!(out.status.success(), "{out:?}");
    d.stop_daemon();
    common::wait_until(
        "the log to grow past the cap with no daemon",
        Duration::from_secs(30),
        || size(&log) > 2 * CAP,
    );
    d.spawn();
    common::wait_until(
        "the new daemon to cut the log back",
        Duration::from_secs(5),
        || size(&log) <= CAP + bound,
    );
    common::wait_until(
        "the marker written after the flood",
        Duration::from_secs(30),
        || {
            d.ok(&["vm", "logs", "flood"])
                .contains("HANGAR-AFTER-RESTART")
        },
    );
    assert!(size(&log) <= CAP + bound, "serial.log: {}", size(&log));
    assert!(size(&older) <= CAP, "serial.log.1: {}", size(&older));
    d.ok(&["vm", "rm", "--force", "flood"]);
    d.assert_nothing_left(1);
}

#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn failed_creates_cannot_pile_up_console_logs() {
    let _serial = common::serial();
    let d = TestDaemon::with(
        "atk-prune",
        Options {
            boot_timeout_secs: 1,
            // Cold boots only: a restore can beat a 1 s timeout.
            vmm_extra: "failed_console_logs_kept = 1\nboot_snapshots = false".into(),
            ..Default::default()
        },
    );
    // The image first, so that the timeouts hit the boots.
    d.ok(&["image", "pull", "debian-12"]);
    let logs = d.state_dir().join("logs");
    let kept = || -> Vec<PathBuf> {
        std::fs::read_dir(&logs)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect()
    };
    let first = d.fails(&["vm", "create", "slow1"]);
    assert!(first.contains("did not answer SSH"), "{first}");
    assert_eq!(kept().len(), 1, "{:?}", kept());
    let second = d.fails(&["vm", "create", "slow2"]);
    assert!(second.contains("did not answer SSH"), "{second}");
    // Only the newest is kept, and the error points at it.
    let left = kept();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        left[0].to_string_lossy().contains("slow2-"),
        "the newest log is kept: {left:?}"
    );
    assert!(second.contains(&left[0].display().to_string()), "{second}");
    d.assert_nothing_left(1);
}
