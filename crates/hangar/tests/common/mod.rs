//! Test infrastructure: a real `hangar daemon` in a temp dir, with its VM
//! network inside a network namespace the test creates and removes, driven
//! through the real CLI binary. Dropping a `TestDaemon` stops the daemon,
//! kills any VMM process it left (and says so), and removes the namespace.
//!
//! # Tests with needs (the convention for every test in the repo)
//!
//! No test passes without running. A test that needs something a plain
//! `cargo test` may not have is marked, and its need is checked once more
//! when it runs, failing with a message that names it:
//!
//! - **Root** (a daemon, namespaces, TAPs, mounts, loop devices):
//!   `#[ignore = "needs root: <what for>"]`. Every fixture here that needs
//!   root (`TestDaemon`, `Netns`, `TmpfsMount`) calls [`require_root`], so
//!   the marker is all a new test adds:
//!   ```ignore
//!   #[test]
//!   #[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
//!   fn rm_force_cancels_a_create() {
//!       let _serial = common::serial(); // tests that boot guests
//!       let d = TestDaemon::start("rmforce");
//!       // …
//!   }
//!   ```
//!   `scripts/test.sh` runs as root and includes these (`--include-ignored`).
//! - **Anything else** (a Firecracker binary, device-mapper, a quiet machine
//!   for a benchmark): `#[ignore = "needs <it>: …"]` *and* a marker in the
//!   test's path (`real_firecracker`, `dm_snapshot`, `bench_`) listed in
//!   the NEEDS table of `scripts/test.sh` with the check that says whether
//!   this machine has it; where it does not, the script skips the marker
//!   and reports those tests as ignored, with their reasons.
//! - Check a need inside the test with `hangar_testsupport`
//!   (`require_root`, `require_env_file`) or an `assert!` naming it, never
//!   `if !available { return; }`.
//! - Reference files from `../shared/` are read through
//!   `hangar_testsupport::shared_path`, which names what is missing.
//! - No sleeping to wait for something: wait on the thing itself (a
//!   channel, a line in a log, a file) or poll it with a deadline
//!   ([`wait_until`]). A sleep that is the behaviour under test is fine.
//!
//! Run as root: `cargo test -p hangar --test e2e_vm -- --include-ignored
//! NAME`; the whole suite: `scripts/test.sh`.

#![allow(dead_code)]

pub mod oci;
pub mod roles;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Tests that boot guests take this so that only one boots at a time on
/// the 2-core machines (the lock survives a failed test).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where built images are cached between runs (keyed by recipe), shared by
/// every test daemon so the default image is built once per machine.
pub const IMAGE_CACHE: &str = "/var/cache/hangar/images";

pub fn hangar_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hangar"))
}

/// Fails (naming the need) unless root: every fixture here that needs root
/// calls it, so a test that uses one needs `#[ignore = "needs root: …"]`.
pub fn require_root() {
    hangar_testsupport::require_root("the daemon: network namespaces, TAP devices, mounts");
}

pub struct Netns {
    pub name: String,
}

/// What a test run killed by SIGKILL (or a machine restart) left behind:
/// its Drop guards never ran. Namespaces are named `hgt-TAG-PID-N` and temp
/// dirs `hangar-test-TAG-PID-…`; those of a PID that no longer exists are
/// removed, once per test process, before a test makes its own. A dir
/// with a mount still under it is left alone (and named).
fn sweep_leftovers_of_dead_runs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let dead = |pid: &str| {
            pid.parse::<u32>().is_ok_and(|p| {
                p != std::process::id() && !Path::new(&format!("/proc/{p}")).exists()
            })
        };
        // hgt-TAG-PID-N: the PID is the second-to-last part.
        let netns_pid = |name: &str| {
            name.strip_prefix("hgt-")?
                .rsplit('-')
                .nth(1)
                .map(str::to_string)
        };
        for e in std::fs::read_dir("/run/netns")
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if netns_pid(&name).is_some_and(|p| dead(&p)) {
                eprintln!("removing network namespace {name} left by a killed test run");
                let _ = Command::new("ip").args(["netns", "del", &name]).status();
            }
        }
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        for e in std::fs::read_dir(std::env::temp_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            // hangar-test-TAG-PID-RANDOM: the PID is the second-to-last part.
            let Some(pid) = name
                .strip_prefix("hangar-test-")
                .and_then(|r| r.rsplit('-').nth(1))
            else {
                continue;
            };
            if !dead(pid) {
                continue;
            }
            let path = e.path();
            if mounts.contains(&format!(" {}/", path.display())) {
                eprintln!(
                    "leaving {} of a killed test run: something is mounted under it",
                    path.display()
                );
                continue;
            }
            eprintln!("removing {} left by a killed test run", path.display());
            let _ = std::fs::remove_dir_all(&path);
        }
    });
}

impl Netns {
    pub fn create(tag: &str) -> Netns {
        require_root();
        sweep_leftovers_of_dead_runs();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("hgt-{tag}-{}-{n}", std::process::id());
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(st.success(), "ip netns add {name} failed");
        Netns { name }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub struct TestDaemon {
    pub dir: tempfile::TempDir,
    pub state: PathBuf,
    pub config: PathBuf,
    pub child: Option<Child>,
    pub netns: Netns,
    daemon_in_netns: bool,
}

pub struct Options {
    pub extra_config: String,
    pub vmm_extra: String,
    pub boot_timeout_secs: u64,
    pub accel: &'static str,
    /// Put the state dir here instead of inside the temp dir.
    pub state_dir: Option<PathBuf>,
    pub start: bool,
    /// Root-namespace mode, safely: the daemon itself runs inside the
    /// test's namespace (`ip netns exec`) with `netns = ""` and NAT on, so
    /// its "host" bridge, NAT table and IP forwarding all live there.
    pub daemon_in_netns: bool,
    /// `[network] vm_to_vm`: guests reach each other over the bridge.
    pub vm_to_vm: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            extra_config: String::new(),
            vmm_extra: String::new(),
            boot_timeout_secs: 90,
            accel: "tcg",
            state_dir: None,
            start: true,
            daemon_in_netns: false,
            vm_to_vm: false,
        }
    }
}

impl TestDaemon {
    pub fn start(tag: &str) -> TestDaemon {
        Self::with(tag, Options::default())
    }

    pub fn with(tag: &str, opts: Options) -> TestDaemon {
        let netns = Netns::create(tag);
        let dir = tempfile::Builder::new()
            .prefix(&format!("hangar-test-{tag}-{}-", std::process::id()))
            .tempdir()
            .unwrap();
        // Search-only for others, like /var/lib: confined VMMs (their own
        // uids) reach their VM dirs through it by path.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o711),
        )
        .unwrap();
        let config = dir.path().join("config.toml");
        let text = format!(
            r#"state_dir = "{state}"
runtime_dir = "{run}"
image_cache_dir = "{cache}"
log_level = "info,hangar_daemon=debug"
{extra}
[network]
netns = "{ns}"
nat = {nat}
bridge = "hgbr0"
subnet = "10.213.7.0/24"
tap_pool_size = 1
vm_to_vm = {vm_to_vm}

[vmm]
driver = "qemu"
accel = "{accel}"
boot_timeout_secs = {boot_timeout}
stop_timeout_secs = 10
{vmm_extra}

[defaults]
cpus = 2
memory_mib = 512
"#,
            state = opts
                .state_dir
                .clone()
                .unwrap_or_else(|| dir.path().join("state"))
                .display(),
            run = dir.path().join("run").display(),
            cache = IMAGE_CACHE,
            extra = opts.extra_config,
            ns = if opts.daemon_in_netns {
                ""
            } else {
                netns.name.as_str()
            },
            nat = opts.daemon_in_netns,
            vm_to_vm = opts.vm_to_vm,
            vmm_extra = opts.vmm_extra,
            boot_timeout = opts.boot_timeout_secs,
            accel = opts.accel,
        );
        std::fs::write(&config, text).unwrap();
        let state = opts
            .state_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("state"));
        let mut d = TestDaemon {
            dir,
            state,
            config,
            child: None,
            netns,
            daemon_in_netns: opts.daemon_in_netns,
        };
        if opts.start {
            d.spawn();
        }
        d
    }

    pub fn state_dir(&self) -> PathBuf {
        self.state.clone()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("run").join("hangar.sock")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts the daemon and waits until its socket answers.
    pub fn spawn(&mut self) {
        self.spawn_with_env(&[]);
    }

    /// [`TestDaemon::spawn`] with extra environment variables (e.g.
    /// `FAILPOINTS` for the fault suite).
    pub fn spawn_with_env(&mut self, envs: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut cmd = if self.daemon_in_netns {
            // `ip netns exec` execs the daemon in place: same pid.
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &self.netns.name])
                .arg(hangar_bin());
            c
        } else {
            Command::new(hangar_bin())
        };
        let child = cmd
            .args(["daemon", "--config"])
            .arg(&self.config)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.hangar(&["vm", "ls"]).status.success() {
                return;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("daemon exited early ({st}); log:\n{}", self.log());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("daemon did not answer within 30s; log:\n{}", self.log());
    }

    /// SIGTERM and wait (the graceful path; VMs keep running).
    pub fn stop_daemon(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child by pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    panic!(
                        "daemon did not stop within 60s of SIGTERM; log:\n{}",
                        self.log()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Waits for the daemon to die by SIGKILL (a crash point it reached)
    /// and forgets it; fails if it lives on past `timeout` or exits
    /// otherwise.
    pub fn wait_killed(&mut self, timeout: Duration) {
        use std::os::unix::process::ExitStatusExt;
        let mut c = self.child.take().expect("no daemon running");
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(st) = c.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "daemon was not killed within {timeout:?}; log tail:\n{}",
                    tail(&self.log(), 30)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "daemon ended with {status}, not SIGKILL; log tail:\n{}",
            tail(&self.log(), 30)
        );
    }

    /// Mount points under the state dir (`/proc/self/mountinfo`).
    pub fn mounts_under_state(&self) -> Vec<String> {
        let state = self.state_dir().display().to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&state))
            .map(str::to_string)
            .collect()
    }

    /// Loop devices whose backing file is under the state dir.
    pub fn loop_devices_on_state(&self) -> Vec<String> {
        let state = self.state_dir().display().to_string();
        let Ok(entries) = std::fs::read_dir("/sys/block") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let backing = std::fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
                backing
                    .starts_with(&state)
                    .then(|| format!("{}: {}", e.file_name().to_string_lossy(), backing.trim()))
            })
            .collect()
    }

    /// The names `image ls` lists, in its order.
    pub fn image_names(&self) -> Vec<String> {
        self.json(&["image", "ls"])
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_string())
            .collect()
    }

    /// Asserts nothing is left under `images/` but stored images. A
    /// finished pull's tree (`…-tree`) is deleted in the background, so
    /// only those may take a while to go; anything else fails at once.
    pub fn assert_no_image_leftovers(&self) {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let left = self.image_leftovers();
            if left.is_empty() {
                return;
            }
            let only_finished_trees = left.iter().all(|l| l.ends_with("-tree"));
            assert!(
                only_finished_trees && Instant::now() < until,
                "left under images/: {left:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Dirs under `images/` that are not a stored image: work dirs of
    /// pulls and registrations (`.pull-*`, `.register-*`) and image dirs
    /// no store row points at.
    pub fn image_leftovers(&self) -> Vec<String> {
        let stored: Vec<String> = self
            .json(&["image", "ls"])
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                i["digest"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("sha256:")
                    .to_string()
            })
            .collect();
        std::fs::read_dir(self.state_dir().join("images"))
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !stored.contains(n))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// SIGKILL: a daemon crash (nothing is cleaned up).
    pub fn crash_daemon(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn hangar(&self, args: &[&str]) -> Output {
        Command::new(hangar_bin())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `hangar ARGS…` with `body` on its standard input (written from a
    /// thread, so a large body cannot dead-lock with the output pipes).
    pub fn hangar_with_stdin(&self, args: &[&str], body: &[u8]) -> Output {
        use std::io::Write;
        let mut c = Command::new(hangar_bin())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = c.stdin.take().unwrap();
        let body = body.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&body);
        });
        let out = c.wait_with_output().unwrap();
        writer.join().unwrap();
        out
    }

    /// `hangar exec VM -- CMD…`, stdin empty.
    pub fn exec(&self, vm: &str, cmd: &[&str]) -> Output {
        let mut args = vec!["exec", vm, "--"];
        args.extend_from_slice(cmd);
        self.hangar(&args)
    }

    /// Runs and asserts success, returning stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.hangar(args);
        assert!(
            out.status.success(),
            "hangar {args:?} failed ({}):\nstdout: {}\nstderr: {}\ndaemon log tail:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log(), 40)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs and asserts failure, returning stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.hangar(args);
        assert!(
            !out.status.success(),
            "hangar {args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    /// Processes whose command line mentions this test's state dir (VMMs).
    pub fn vmm_pids(&self) -> Vec<i32> {
        let needle = self.state_dir().display().to_string();
        let mut pids = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(&needle) && !cmd.contains(" daemon ") {
                pids.push(pid);
            }
        }
        pids
    }

    /// TAP devices in the test namespace.
    pub fn taps(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["-n", &self.netns.name, "-o", "link", "show", "type", "tun"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|s| s.split('@').next().unwrap_or(s).to_string())
            .collect()
    }

    /// The dir of VM `name` (state/vms/<id>).
    pub fn vm_dir(&self, name: &str) -> PathBuf {
        let id = self.json(&["vm", "show", name])["id"]
            .as_str()
            .unwrap()
            .to_string();
        self.state_dir().join("vms").join(id)
    }

    /// Boot snapshot files that are not whole (`*.state`): a save that did
    /// not finish.
    pub fn partial_snapshot_files(&self) -> Vec<PathBuf> {
        self.snapshot_files()
            .into_iter()
            .filter(|p| !p.to_string_lossy().ends_with(".state"))
            .collect()
    }

    /// Entries of state/vms (one dir per VM).
    pub fn vm_dirs(&self) -> Vec<String> {
        std::fs::read_dir(self.state_dir().join("vms"))
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Rows of a store table, read with the real SQLite CLI-free path: the
    /// daemon's own API (`vm ls`) plus the leases via sqlite3 if present.
    pub fn lease_count(&self) -> usize {
        let db = self.state_dir().join("state.db");
        let out = Command::new("sqlite3")
            .arg(&db)
            .arg("SELECT count(*) FROM ip_leases;")
            .output();
        match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse()
                .unwrap_or(0),
            _ => panic!("sqlite3 failed to read {}", db.display()),
        }
    }

    /// Files under state/snapshots/<image>/ (boot snapshots).
    pub fn snapshot_files(&self) -> Vec<PathBuf> {
        let Ok(images) = std::fs::read_dir(self.state_dir().join("snapshots")) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = images
            .flatten()
            .filter_map(|d| std::fs::read_dir(d.path()).ok())
            .flat_map(|r| r.flatten().map(|e| e.path()))
            .collect();
        files.sort();
        files
    }

    /// Asserts that no VM resources are left: VMM processes, disks/dirs,
    /// leases, rows, TAPs beyond the idle pool, half-written snapshots,
    /// mounts under the state dir, loop devices backed by its files, and
    /// image dirs that are not a stored image.
    pub fn assert_nothing_left(&self, pool: usize) {
        assert_eq!(
            self.mounts_under_state(),
            Vec::<String>::new(),
            "mounts left under the state dir"
        );
        assert_eq!(
            self.loop_devices_on_state(),
            Vec::<String>::new(),
            "loop devices left on the state dir's files"
        );
        assert_eq!(
            self.image_leftovers(),
            Vec::<String>::new(),
            "image dirs left that are not a stored image"
        );
        assert_eq!(
            self.partial_snapshot_files(),
            Vec::<PathBuf>::new(),
            "partial snapshot files left"
        );
        assert_eq!(self.vmm_pids(), Vec::<i32>::new(), "VMM processes left");
        assert_eq!(self.vm_dirs(), Vec::<String>::new(), "VM dirs left");
        assert_eq!(self.lease_count(), 0, "IP leases left");
        let vms = self.json(&["vm", "ls"]);
        assert_eq!(
            vms.as_array().map(|a| a.len()),
            Some(0),
            "VM rows left: {vms}"
        );
        assert!(
            self.taps().len() <= pool,
            "TAPs beyond the pool: {:?}",
            self.taps()
        );
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child by pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let leftovers = self.vmm_pids();
        for pid in &leftovers {
            // SAFETY: these processes were started by this test's daemon.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        if !leftovers.is_empty() {
            eprintln!("killed VMM processes left by the test: {leftovers:?}");
            // Let them go before the namespace is removed (Netns drops next).
            let gone = poll_until(Duration::from_secs(5), || self.vmm_pids().is_empty());
            if !gone {
                eprintln!(
                    "VMM processes still there after SIGKILL: {:?}",
                    self.vmm_pids()
                );
            }
        }
    }
}

/// Polls `done` every 20 ms until it holds (true) or `timeout` passes
/// (false): waiting on a condition, never a fixed sleep.
pub fn poll_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`poll_until`], failing the test naming `what` on timeout.
pub fn wait_until(what: &str, timeout: Duration, done: impl FnMut() -> bool) {
    assert!(
        poll_until(timeout, done),
        "timed out after {timeout:?} waiting for {what}"
    );
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// A tmpfs of a given size, unmounted (and its dir removed) on drop.
pub struct TmpfsMount {
    pub dir: tempfile::TempDir,
}

impl TmpfsMount {
    pub fn new(size: &str) -> TmpfsMount {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("hangar-tmpfs-")
            .tempdir()
            .unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs failed");
        TmpfsMount { dir }
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// tmux session running a command, killed on drop.
pub struct Tmux {
    pub name: String,
}

impl Tmux {
    pub fn start(cmd: &str, cols: u16, rows: u16) -> Tmux {
        let name = format!(
            "hgt{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let st = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                &name,
                "-x",
                &cols.to_string(),
                "-y",
                &rows.to_string(),
                cmd,
            ])
            .status()
            .unwrap();
        assert!(st.success(), "tmux new-session failed");
        Tmux { name }
    }

    pub fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.name];
        args.extend_from_slice(keys);
        assert!(Command::new("tmux").args(&args).status().unwrap().success());
    }

    pub fn resize(&self, cols: u16, rows: u16) {
        let st = Command::new("tmux")
            .args([
                "resize-window",
                "-t",
                &self.name,
                "-x",
                &cols.to_string(),
                "-y",
                &rows.to_string(),
            ])
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Waits until the screen contains `needle`.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> String {
        self.wait_until(&format!("{needle:?}"), timeout, |s| s.contains(needle))
    }

    /// Waits until `done` accepts the screen; `what` names it in the failure.
    pub fn wait_until(&self, what: &str, timeout: Duration, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.screen();
            if done(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "screen never showed {what}:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .status();
    }
}

/// Debian's static busybox, which image tests copy into their trees.
pub fn static_busybox() -> PathBuf {
    let p = PathBuf::from("/bin/busybox");
    let out = Command::new("file")
        .arg("-L")
        .arg(&p)
        .output()
        .expect("file(1)");
    let desc = String::from_utf8_lossy(&out.stdout);
    assert!(
        desc.contains("statically linked") || desc.contains("static-pie"),
        "/bin/busybox must be static (apt-get install busybox-static): {desc}"
    );
    p
}
