//! Shared by the conformance suite and the SSH fuzz: one SSH server on
//! 127.0.0.1 (OpenSSH's `sshd` as the reference, or `hangar-agent serve`),
//! started with the same temp host key and authorized_keys, and clients for
//! it (OpenSSH's `ssh`/`scp`/`sftp` with the host key pinned, and the
//! daemon's own [`GuestClient`]). Every process is killed by PID on drop.
//!
//! Needs root: sshd runs as root, and both servers switch users.

#![allow(dead_code)] // each test binary uses its own part

use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hangar_guest::{
    direct_connector, generate_host_key, wait_ready, DaemonKey, GuestClient, GuestTarget, HostKey,
};

pub const AGENT: &str = env!("CARGO_BIN_EXE_hangar-agent");
pub const READY_DEADLINE: Duration = Duration::from_secs(20);
/// Names the private sshd accepts in `env` requests (`AcceptEnv`), so the
/// reference passes them through like the agent does.
pub const ACCEPTED_ENV: &str = "HANGAR_CONF_*";

/// Which server a scenario runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// OpenSSH's sshd: the reference behaviour.
    OpenSsh,
    /// `hangar-agent serve`.
    Agent,
}

/// Key material for one test: host key, the authorized client key and a
/// second key that is not authorized. Files live in a dir that other users
/// can enter (sshd reads authorized_keys as the logging-in user).
pub struct Keys {
    pub dir: tempfile::TempDir,
    pub host: HostKey,
    pub client: DaemonKey,
    pub client_path: PathBuf,
    pub stranger_path: PathBuf,
    pub host_key_path: PathBuf,
    pub authorized_keys_path: PathBuf,
}

impl Keys {
    pub fn new() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let client_dir = dir.path().join("client");
        let client = DaemonKey::load_or_generate(&client_dir).unwrap();
        let stranger_dir = dir.path().join("stranger");
        DaemonKey::load_or_generate(&stranger_dir).unwrap();
        let host = generate_host_key().unwrap();
        let host_key_path = dir.path().join("ssh_host_ed25519_key");
        write_mode(&host_key_path, host.private_openssh.as_bytes(), 0o600);
        let authorized_keys_path = dir.path().join("authorized_keys");
        write_mode(
            &authorized_keys_path,
            format!("{}\n", client.public_openssh()).as_bytes(),
            0o644,
        );
        Keys {
            client_path: client_dir.join("id_ed25519"),
            stranger_path: stranger_dir.join("id_ed25519"),
            dir,
            host,
            client,
            host_key_path,
            authorized_keys_path,
        }
    }
}

pub fn write_mode(path: &Path, bytes: &[u8], mode: u32) {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// One running server; killed by PID on drop (after its per-connection
/// children are gone, so none lingers as a zombie).
pub struct Running {
    pub kind: Server,
    pub port: u16,
    pub keys: Keys,
    child: Option<Child>,
    log_path: PathBuf,
    known_hosts: PathBuf,
}

/// How a server is configured beyond the common setup.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// LoginGraceTime / `--login-grace-time`, in seconds (default: each
    /// server's own, 120 for both).
    pub login_grace_secs: Option<u64>,
    /// The agent's `--sessions-dir` (default: one in the test's temp dir),
    /// to start a second agent on the first one's sessions.
    pub sessions_dir: Option<&'static Path>,
    /// MaxStartups / `--max-startups` (default: 10:30:100 for both).
    pub max_startups: Option<&'static str>,
}

impl Running {
    pub fn start(kind: Server) -> Running {
        Running::start_with(kind, Options::default())
    }

    pub fn start_with(kind: Server, opts: Options) -> Running {
        hangar_testsupport::require_root("a private sshd and user switching");
        let keys = Keys::new();
        let port = free_port();
        let log_path = keys.dir.path().join(format!("{kind:?}.log"));
        let log = fs::File::create(&log_path).unwrap();
        let mut cmd = match kind {
            Server::OpenSsh => sshd_command(&keys, port, opts),
            Server::Agent => {
                let mut c = Command::new(AGENT);
                c.arg("serve")
                    .arg("--listen")
                    .arg(format!("127.0.0.1:{port}"))
                    .arg("--host-key")
                    .arg(&keys.host_key_path)
                    .arg("--authorized-keys")
                    .arg(&keys.authorized_keys_path)
                    // Never the host's /var/lib/hangar: the test's own dir.
                    .arg("--sessions-dir")
                    .arg(
                        opts.sessions_dir
                            .map(Path::to_path_buf)
                            .unwrap_or_else(|| keys.dir.path().join("sessions")),
                    )
                    .env("HANGAR_AGENT_LOG", "debug");
                if let Some(secs) = opts.login_grace_secs {
                    c.arg("--login-grace-time").arg(secs.to_string());
                }
                if let Some(m) = opts.max_startups {
                    c.arg("--max-startups").arg(m);
                }
                c
            }
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let known_hosts = keys.dir.path().join("known_hosts");
        fs::write(
            &known_hosts,
            format!("[127.0.0.1]:{port} {}\n", keys.host.public_openssh),
        )
        .unwrap();
        let running = Running {
            kind,
            port,
            keys,
            child: Some(child),
            log_path,
            known_hosts,
        };
        running.wait_listening();
        running
    }

    fn wait_listening(&self) {
        let until = Instant::now() + READY_DEADLINE;
        while TcpStream::connect(self.addr()).is_err() {
            assert!(
                Instant::now() < until,
                "{:?} never listened on {}:\n{}",
                self.kind,
                self.addr(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// True while the server process has not exited.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `ssh` with the host key pinned, no config, no agent and only the
    /// given identity; add the remote command (and options) after.
    pub fn ssh(&self, user: &str) -> Command {
        self.ssh_with_key(user, &self.keys.client_path)
    }

    pub fn ssh_with_key(&self, user: &str, key: &Path) -> Command {
        let mut c = Command::new("ssh");
        self.common_options(&mut c, key, "-p");
        c.arg(format!("{user}@127.0.0.1"));
        c
    }

    /// `scp` or `sftp` (they share the options; port is `-P`).
    pub fn file_client(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        self.common_options(&mut c, &self.keys.client_path, "-P");
        c
    }

    fn common_options(&self, c: &mut Command, key: &Path, port_flag: &str) {
        c.arg("-F")
            .arg("/dev/null")
            .arg("-o")
            .arg("BatchMode=yes")
            .arg("-o")
            .arg("StrictHostKeyChecking=yes")
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .arg("-o")
            .arg("GlobalKnownHostsFile=/dev/null")
            .arg("-o")
            .arg("IdentitiesOnly=yes")
            .arg("-o")
            .arg("ConnectTimeout=10")
            .arg("-o")
            .arg("LogLevel=ERROR")
            .arg("-i")
            .arg(key)
            .arg(port_flag)
            .arg(self.port.to_string())
            .env_remove("SSH_AUTH_SOCK");
    }

    pub fn target(&self, user: &str) -> GuestTarget {
        GuestTarget {
            addr: self.addr(),
            user: user.into(),
            host_key_public: self.keys.host.public_openssh.clone(),
        }
    }

    /// The daemon's client, logged in as root.
    pub async fn guest_client(&self) -> GuestClient {
        match wait_ready(
            &direct_connector(),
            &self.target("root"),
            &self.keys.client,
            READY_DEADLINE,
        )
        .await
        {
            Ok(c) => c,
            Err(e) => panic!("{:?}: no login: {e}\n{}", self.kind, self.log()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            hangar_testsupport::sshd::stop_after_its_children(child);
        }
    }
}

fn sshd_command(keys: &Keys, port: u16, opts: Options) -> Command {
    let config_path = keys.dir.path().join("sshd_config");
    let mut config =
        hangar_testsupport::sshd::base_config(&keys.host_key_path, &keys.authorized_keys_path);
    config.push_str(&format!(
        "AcceptEnv {ACCEPTED_ENV}\nSubsystem sftp /usr/lib/openssh/sftp-server\n"
    ));
    if let Some(secs) = opts.login_grace_secs {
        config.push_str(&format!("LoginGraceTime {secs}\n"));
    }
    if let Some(m) = opts.max_startups {
        config.push_str(&format!("MaxStartups {m}\n"));
    }
    write_mode(&config_path, config.as_bytes(), 0o600);
    hangar_testsupport::sshd::command(&config_path, port)
}

/// Runs a client command with `stdin`, with a time limit.
pub fn run(mut cmd: Command, stdin: &[u8]) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let pid = child.id();
    let watchdog = Watchdog::arm(pid, Duration::from_secs(60));
    let out = child.wait_with_output().unwrap();
    drop(watchdog);
    feeder.join().unwrap();
    out
}

/// Kills a client that hangs (by PID) so a broken server fails the test
/// instead of stalling the suite.
struct Watchdog(Option<std::sync::mpsc::Sender<()>>);

impl Watchdog {
    fn arm(pid: u32, limit: Duration) -> Watchdog {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                eprintln!("watchdog: killing client pid {pid} after {limit:?}");
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        });
        Watchdog(Some(tx))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Serializes useradd/userdel (they lock /etc/passwd and fail when busy).
static USERS: Mutex<()> = Mutex::new(());

/// A temporary system user with a home and the given shell; removed (with its
/// home) on drop, also when the test panics.
pub struct TempUser {
    pub name: String,
    pub uid: u32,
    pub home: PathBuf,
}

impl TempUser {
    pub fn create(tag: &str, shell: &str) -> TempUser {
        TempUser::create_with_home(tag, shell, None)
    }

    /// `home`: a home dir that is not made (it need not exist).
    pub fn create_with_home(tag: &str, shell: &str, home: Option<&Path>) -> TempUser {
        let name = format!("hangar-conf-{}-{tag}", std::process::id());
        let _lock = USERS.lock().unwrap_or_else(|e| e.into_inner());
        // '*' (not the default '!'): an account with a locked password is
        // refused by OpenSSH even for publickey logins.
        let ok = retry(|| {
            let mut c = Command::new("useradd");
            c.args(["--system", "--shell", shell, "--password", "*"]);
            match home {
                Some(h) => c.arg("--no-create-home").arg("--home-dir").arg(h),
                None => c.arg("--create-home"),
            };
            c.arg(&name).status().unwrap().success()
        });
        assert!(ok, "useradd {name} failed");
        let user = nix::unistd::User::from_name(&name).unwrap().unwrap();
        TempUser {
            uid: user.uid.as_raw(),
            home: user.dir,
            name,
        }
    }
}

impl Drop for TempUser {
    fn drop(&mut self) {
        let _lock = USERS.lock().unwrap_or_else(|e| e.into_inner());
        let name = self.name.clone();
        let removed = retry(|| {
            // userdel fails on a home that never existed yet removes the
            // user: what counts is that the user is gone.
            let _ = Command::new("userdel")
                .args(["--remove", "--force"])
                .arg(&name)
                .stderr(Stdio::null())
                .status();
            matches!(nix::unistd::User::from_name(&name), Ok(None))
        });
        if !removed {
            eprintln!("could not remove the test user {name}: remove it by hand");
        }
    }
}

fn retry(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..20 {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    false
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Resident memory of a process in KiB (VmRSS in /proc/PID/status).
pub fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}
