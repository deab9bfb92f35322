//! Tests against a real OpenSSH server. Each test starts its own
//! `/usr/sbin/sshd -D -e` on 127.0.0.1 with a fresh host key from
//! `generate_host_key()` and kills it by PID when done. Requires root and
//! the openssh-server package (the system sshd service is never touched).

use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hangar_guest::{
    direct_connector, generate_host_key, wait_ready, ConnectFn, DaemonKey, ExecSpec, GuestClient,
    GuestError, GuestTarget, HostKey, Input, Output,
};
use tokio::sync::mpsc;

use hangar_testsupport::sshd;
const READY_DEADLINE: Duration = Duration::from_secs(15);

/// One private sshd; killed by PID on drop.
struct TestSshd {
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl TestSshd {
    fn start(port: u16, host_key: &HostKey, authorized_key: &str) -> TestSshd {
        hangar_testsupport::require_root("a private sshd that logs in as root");
        let dir = tempfile::tempdir().expect("tempdir");
        let host_key_path = dir.path().join("ssh_host_ed25519_key");
        write_mode(&host_key_path, host_key.private_openssh.as_bytes(), 0o600);
        let auth_path = dir.path().join("authorized_keys");
        write_mode(&auth_path, format!("{authorized_key}\n").as_bytes(), 0o600);
        let config_path = dir.path().join("sshd_config");
        let config = sshd::base_config(&host_key_path, &auth_path);
        write_mode(&config_path, config.as_bytes(), 0o600);
        let log = fs::File::create(dir.path().join("sshd.log")).expect("log file");
        let child = sshd::command(&config_path, port)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn sshd");
        TestSshd {
            child: Some(child),
            dir,
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for TestSshd {
    /// Waits (briefly) for the per-connection sshd processes to finish
    /// before killing the listener: killed first, the listener could not
    /// reap them and they would linger as zombies. Clients must therefore be
    /// dropped before the server (declare them after it).
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            sshd::stop_after_its_children(child);
        }
    }
}

fn write_mode(path: &PathBuf, bytes: &[u8], mode: u32) {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .expect("create file");
    f.write_all(bytes).expect("write file");
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn daemon_key() -> (tempfile::TempDir, DaemonKey) {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = DaemonKey::load_or_generate(dir.path()).expect("daemon key");
    (dir, key)
}

fn target(port: u16, host_key: &HostKey) -> GuestTarget {
    GuestTarget {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        user: "root".into(),
        host_key_public: host_key.public_openssh.clone(),
    }
}

/// A running sshd plus an authenticated client.
struct Fixture {
    // Field order is drop order: the client disconnects before the server
    // is stopped.
    client: GuestClient,
    sshd: TestSshd,
    _key_dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let (key_dir, key) = daemon_key();
    let host_key = generate_host_key().expect("host key");
    let port = free_port();
    let sshd = TestSshd::start(port, &host_key, &key.public_openssh());
    let client = match wait_ready(
        &direct_connector(),
        &target(port, &host_key),
        &key,
        READY_DEADLINE,
    )
    .await
    {
        Ok(c) => c,
        Err(err) => panic!("sshd never became ready: {err}\nsshd log:\n{}", sshd.log()),
    };
    Fixture {
        sshd,
        client,
        _key_dir: key_dir,
    }
}

/// Runs `spec` with the given stdin chunks (then EOF) and collects output.
async fn exec_collect(
    client: &GuestClient,
    spec: ExecSpec,
    stdin: Vec<Vec<u8>>,
) -> (Result<i32, GuestError>, Vec<u8>, Vec<u8>) {
    let (in_tx, in_rx) = mpsc::channel(16);
    let (out_tx, mut out_rx) = mpsc::channel(16);
    let feed = async move {
        for chunk in stdin {
            in_tx.send(Input::Data(chunk)).await.expect("send stdin");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: a private sshd that logs in as root"]
async fn wait_ready_succeeds_once_server_starts_later() {
    let (_dir, key) = daemon_key();
    let host_key = generate_host_key().expect("host key");
    let port = free_port();
    let public = key.public_openssh();
    let hk = host_key.clone();
    let starter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        TestSshd::start(port, &hk, &public)
    });

    let started = Instant::now();
    let result = wait_ready(
        &direct_connector(),
        &target(port, &host_key),
        &key,
        READY_DEADLINE,
    )
    .await;
    let elapsed = started.elapsed();

    let sshd = starter.await.expect("starter");
    let client = match result {
        Ok(c) => c,
        Err(err) => panic!("wait_ready failed: {err}\nsshd log:\n{}", sshd.log()),
    };
    assert!(
        elapsed >= Duration::from_millis(300),
        "ready before the server existed: {elapsed:?}"
    );
    let out = client.run("true").await.expect("run true");
    assert_eq!(out.code, 0);
    eprintln!("wait_ready took {elapsed:?} with the server starting at 300 ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: a private sshd that logs in as root"]
async fn wrong_pinned_host_key_is_refused_naming_both_fingerprints() {
    let (_dir, key) = daemon_key();
    let real_host_key = generate_host_key().expect("host key");
    let pinned_host_key = generate_host_key().expect("other host key");
    let port = free_port();
    let sshd = TestSshd::start(port, &real_host_key, &key.public_openssh());
    // Make sure the server is up so the error is about the key, not the port.
    let ok = wait_ready(
        &direct_connector(),
        &target(port, &real_host_key),
        &key,
        READY_DEADLINE,
    )
    .await;
    assert!(
        ok.is_ok(),
        "server not ready: {:?}\n{}",
        ok.err(),
        sshd.log()
    );

    let started = Instant::now();
    let result = wait_ready(
        &direct_connector(),
        &target(port, &pinned_host_key),
        &key,
        READY_DEADLINE,
    )
    .await;

    let err = result.expect_err("mismatched host key must be refused");
    let msg = err.to_string();
    let real_fp = fingerprint(&real_host_key.public_openssh);
    let pinned_fp = fingerprint(&pinned_host_key.public_openssh);
    assert!(matches!(err, GuestError::HostKeyMismatch { .. }), "{msg}");
    assert!(msg.contains(&real_fp), "{msg} lacks presented {real_fp}");
    assert!(msg.contains(&pinned_fp), "{msg} lacks pinned {pinned_fp}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a mismatch must not be retried until the deadline"
    );
}

fn fingerprint(public_openssh: &str) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-l")
        .arg("-E")
        .arg("sha256")
        .arg("-f")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(public_openssh.as_bytes())?;
            child.wait_with_output()
        })
        .expect("ssh-keygen");
    String::from_utf8(out.stdout)
        .expect("utf8")
        .split_whitespace()
        .nth(1)
        .expect("fingerprint field")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: a private sshd that logs in as root"]
async fn unauthorized_daemon_key_is_rejected_with_clear_error() {
    let (_dir, key) = daemon_key();
    let (_other_dir, authorized_key) = daemon_key();
    let host_key = generate_host_key().expect("host key");
    let port = free_port();
    let sshd = TestSshd::start(port, &host_key, &authorized_key.public_openssh());
    let tgt = target(port, &host_key);
    // Wait for the port with the authorized key first.
    let ok = wait_ready(&direct_connector(), &tgt, &authorized_key, READY_DEADLINE).await;
    assert!(
        ok.is_ok(),
        "server not ready: {:?}\n{}",
        ok.err(),
        sshd.log()
    );

    let result =
        GuestClient::connect(&direct_connector(), &tgt, &key, Duration::from_secs(10)).await;

    let err = result.expect_err("unauthorized key must be rejected");
    let msg = err.to_string();
    assert!(matches!(err, GuestError::AuthRejected { .. }), "{msg}");
    assert!(msg.contains(&key.fingerprint()), "{msg}");
    assert!(msg.contains("authorized_keys"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: a private sshd that logs in as root"]
async fn exec_separates_streams_and_returns_exit_code() {
    let fx = fixture().await;

    let (code, out, err) = exec_collect(
        &fx.client,
        ExecSpec::shell("echo out; echo err >&2; exit 7"),
        vec![],
    )
    .await;

    assert_eq!(code.expect("exec"), 7, "{}", fx.sshd.log());
    assert_eq!(out, b"out\n");
    assert_eq!(err, b"err\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: a private sshd that logs in as root"]
async fn exec_argv_is_quoted() {
    let fx = fixture().await;

    let (code, out, _) = exec_collect(
        &fx.client,
        ExecSpec {
            command: vec!["printf".into(), "[%s]".into(), "a b".into(), "$HOME".into()],
            ..ExecSpec::default()
        },
        vec![],
    )
    .await;

    assert_eq!(code.expect("exec"), 0);
    assert_eq!(out, b"[a b][$HOME]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: a private sshd that logs in as root"]
async fn exec_env_reaches_the_command() {
    let fx = fixture().await;

    let (code, out, _) = exec_collect(
        &fx.client,
        ExecSpec {
            command: vec!["printf %s \"$HG_TEST\"".into()],
            env: vec![("HG_TEST".into(), "it's here".into())],
            ..ExecSpec::default()
        },
        vec![],
    )
    .await;

    assert_eq!(code.expect("exec"), 0);
    assert_eq!(out, b"it's here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: a private sshd that logs in as root"]
async fn stdin_is_forwarded_and_closing_input_sends_eof() {
    let fx = fixture().await;

    let (code, out, _) = exec_collect(
        &fx.client,
        ExecSpec::shell("cat"),
        vec![b"hello\n".to_vec(), b"world".to_vec()],
    )
    .await;

    assert_eq!(code.expect("exec"), 0);
    assert_eq!(out, b"hello\nworld");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: a private sshd that logs in as root"]
async fn explicit_eof_ends_stdin_while_input_stays_open() {
    let fx = fixture().await;
    let (in_tx, in_rx) = mpsc::channel(4);
    let (out_tx, mut out_rx) = mpsc::channel(4);
    in_tx
        .send(Input::Data(b"abc".to_vec()))
        .await
        .expect("send");
    in_tx.send(Input::Eof).await.expect("send");

    let code = fx
        .client
        .exec(ExecSpec::shell("wc -c"), in_rx, out_tx)
        .await;

    let mut out = Vec::new();
    while let Some(Output::Stdout(b)) = out_rx.recv().await {
        out.extend_from_slice(&b);
    }
    assert_eq!(code.expect("exec"), 0);
    assert_eq!(String::from_utf8_lossy(&out).trim(), "3");
    drop(in_tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: a private sshd that logs in as root"]
async fn large_output_arrives_completely() {
    let fx = fixture().await;
    let (in_tx, in_rx) = mpsc::channel(1);
    drop(in_tx);
    let (out_tx, mut out_rx) = mpsc::channel(16);
    let count = async {
        let (mut n, mut zeros) = (0usize, true);
        while let Some(chunk) = out_rx.recv().await {
            if let Output::Stdout(b) = chunk {
                n += b.len();
                zeros &= b.iter().all(|x| *x == 0);
            }
        }
        (n, zeros)
    };

    let (code, (n, zeros)) = tokio::join!(
        fx.client.exec(
            ExecSpec::shell("head -c 5000000 /dev/zero; echo done >&2"),
            in_rx,
            out_tx
        ),
        count
    );

    assert_eq!(code.expect("exec"), 0);
    assert_eq!(n, 5_000_000);
    assert!(zeros);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: a private sshd that logs in as root"]
async fn tty_mode_gives_a_pts_with_the_requested_size() {
    let fx = fixture().await;
    let spec = |cmd: &str| ExecSpec {
        command: vec![cmd.into()],
        tty: true,
        term: "xterm".into(),
        cols: 100,
        rows: 30,
        env: vec![],
    };

    let (code_tty, out_tty, _) = exec_collect(&fx.client, spec("tty"), vec![]).await;
    let (code_size, out_size, _) = exec_collect(&fx.client, spec("stty size"), vec![]).await;
    let (code_term, out_term, _) = exec_collect(&fx.client, spec("echo $TERM"), vec![]).await;

    assert_eq!(code_tty.expect("tty"), 0);
    assert!(
        String::from_utf8_lossy(&out_tty).starts_with("/dev/pts/"),
        "{:?}",
        String::from_utf8_lossy(&out_tty)
    );
    assert_eq!(code_size.expect("stty"), 0);
    assert_eq!(String::from_utf8_lossy(&out_size).trim(), "30 100");
    assert_eq!(code_term.expect("term"), 0);
    assert_eq!(String::from_utf8_lossy(&out_term).trim(), "xterm");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: a private sshd that logs in as root"]
async fn resize_changes_the_pty_size() {
    let fx = fixture().await;
    let (in_tx, in_rx) = mpsc::channel(4);
    let (out_tx, mut out_rx) = mpsc::channel(16);
    let spec = ExecSpec {
        command: vec!["sh -c 'stty size; read x; stty size'".into()],
        tty: true,
        term: "xterm".into(),
        cols: 80,
        rows: 24,
        env: vec![],
    };
    let drive = async move {
        let mut seen = Vec::new();
        // Wait for the first size before resizing, so the two reads differ.
        while !String::from_utf8_lossy(&seen).contains("24 80") {
            match tokio::time::timeout(Duration::from_secs(10), out_rx.recv()).await {
                Ok(Some(Output::Stdout(b) | Output::Stderr(b))) => seen.extend_from_slice(&b),
                other => panic!("no first size line: {other:?}, seen {seen:?}"),
            }
        }
        in_tx
            .send(Input::Resize {
                cols: 132,
                rows: 43,
            })
            .await
            .expect("resize");
        in_tx
            .send(Input::Data(b"go\r".to_vec()))
            .await
            .expect("line");
        while let Some(Output::Stdout(b) | Output::Stderr(b)) = out_rx.recv().await {
            seen.extend_from_slice(&b);
        }
        drop(in_tx);
        String::from_utf8_lossy(&seen).into_owned()
    };

    let (code, seen) = tokio::join!(fx.client.exec(spec, in_rx, out_tx), drive);

    assert_eq!(code.expect("exec"), 0);
    let sizes: Vec<&str> = seen
        .lines()
        .map(str::trim)
        .filter(|l| l.contains(' ') && l.chars().all(|c| c.is_ascii_digit() || c == ' '))
        .collect();
    assert_eq!(sizes, vec!["24 80", "43 132"], "output was {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: a private sshd that logs in as root"]
async fn command_killed_by_signal_reports_128_plus_signum() {
    let fx = fixture().await;

    let killed = fx.client.run("kill -KILL $$").await.expect("run kill");
    let custom = fx.client.run("kill -USR2 $$").await.expect("run usr2");

    assert_eq!(killed.code, 128 + 9);
    assert_eq!(custom.code, 128 + 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: a private sshd that logs in as root"]
async fn run_collects_both_streams() {
    let fx = fixture().await;

    let out = fx
        .client
        .run("echo a; echo b >&2; exit 3")
        .await
        .expect("run");

    assert_eq!(out.stdout, b"a\n");
    assert_eq!(out.stderr, b"b\n");
    assert_eq!(out.code, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: a private sshd that logs in as root"]
async fn concurrent_execs_share_one_client_across_tasks() {
    let fx = fixture().await;
    let client = Arc::new(fx.client);
    let (c1, c2) = (Arc::clone(&client), Arc::clone(&client));

    let a = tokio::spawn(async move { c1.run("sleep 0.3; echo a").await });
    let b = tokio::spawn(async move { c2.run("sleep 0.3; echo b").await });

    assert_eq!(a.await.expect("join a").expect("a").stdout, b"a\n");
    assert_eq!(b.await.expect("join b").expect("b").stdout, b"b\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_ready_times_out_against_closed_port_with_clear_error() {
    let (_dir, key) = daemon_key();
    let host_key = generate_host_key().expect("host key");
    let port = free_port(); // nothing listens there any more

    let started = Instant::now();
    let result = wait_ready(
        &direct_connector(),
        &target(port, &host_key),
        &key,
        Duration::from_millis(700),
    )
    .await;
    let elapsed = started.elapsed();

    let err = result.expect_err("nothing listens");
    let msg = err.to_string();
    assert!(matches!(err, GuestError::NotReady { .. }), "{msg}");
    assert!(msg.contains("after waiting 7"), "{msg}");
    assert!(msg.to_lowercase().contains("refused"), "{msg}");
    assert!(
        elapsed >= Duration::from_millis(700) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: a private sshd that logs in as root"]
async fn connect_dials_through_the_given_connector() {
    let (_dir, key) = daemon_key();
    let host_key = generate_host_key().expect("host key");
    let port = free_port();
    let sshd = TestSshd::start(port, &host_key, &key.public_openssh());
    let real = SocketAddr::from(([127, 0, 0, 1], port));
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    // Stands in for "dial from inside the VM's network namespace": the
    // target address is not reachable directly, only via the connector.
    let connector: ConnectFn = Arc::new(move |_unreachable| {
        counted.fetch_add(1, Ordering::SeqCst);
        Box::pin(tokio::net::TcpStream::connect(real))
    });
    let tgt = GuestTarget {
        addr: SocketAddr::from(([127, 0, 0, 1], 1)),
        ..target(port, &host_key)
    };

    let result = wait_ready(&connector, &tgt, &key, READY_DEADLINE).await;

    let client = match result {
        Ok(c) => c,
        Err(err) => panic!("{err}\n{}", sshd.log()),
    };
    assert_eq!(client.run("echo hi").await.expect("run").stdout, b"hi\n");
    assert!(calls.load(Ordering::SeqCst) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_pinned_host_key_fails_before_dialing() {
    let (_dir, key) = daemon_key();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let connector: ConnectFn = Arc::new(move |a| {
        counted.fetch_add(1, Ordering::SeqCst);
        Box::pin(tokio::net::TcpStream::connect(a))
    });
    let tgt = GuestTarget {
        addr: SocketAddr::from(([127, 0, 0, 1], 1)),
        user: "root".into(),
        host_key_public: "ssh-ed25519 garbage".into(),
    };

    let result = wait_ready(&connector, &tgt, &key, Duration::from_secs(5)).await;

    assert!(
        matches!(result, Err(GuestError::InvalidPinnedHostKey { .. })),
        "{result:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

/// Measures connect + auth + `true`, median of 10. Prints the numbers; run
/// with `--nocapture` to see them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: a private sshd that logs in as root"]
async fn measure_connect_auth_true_median_of_10() {
    let (key_dir, key) = daemon_key();
    let host_key = generate_host_key().expect("host key");
    let port = free_port();
    let sshd = TestSshd::start(port, &host_key, &key.public_openssh());
    let tgt = target(port, &host_key);
    let warm = wait_ready(&direct_connector(), &tgt, &key, READY_DEADLINE).await;
    assert!(warm.is_ok(), "{:?}\n{}", warm.err(), sshd.log());

    let mut times = Vec::new();
    let mut connects = Vec::new();
    for _ in 0..10 {
        let started = Instant::now();
        let client = GuestClient::connect(&direct_connector(), &tgt, &key, Duration::from_secs(10))
            .await
            .expect("connect");
        connects.push(started.elapsed());
        let out = client.run("true").await.expect("run true");
        times.push(started.elapsed());
        assert_eq!(out.code, 0);
        client.close().await;
    }

    // Baseline: the OpenSSH client doing the same against the same server.
    let known_hosts = key_dir.path().join("known_hosts");
    fs::write(
        &known_hosts,
        format!("[127.0.0.1]:{port} {}\n", host_key.public_openssh),
    )
    .expect("known_hosts");
    let mut openssh = Vec::new();
    for _ in 0..10 {
        let started = Instant::now();
        let status = Command::new("ssh")
            .args([
                "-F",
                "/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
            ])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .arg("-i")
            .arg(key_dir.path().join("id_ed25519"))
            .args(["-p", &port.to_string(), "root@127.0.0.1", "true"])
            .stdin(Stdio::null())
            .status()
            .expect("run ssh");
        openssh.push(started.elapsed());
        assert!(status.success());
    }

    times.sort();
    connects.sort();
    openssh.sort();
    eprintln!(
        "connect+auth+true: median {:?}, min {:?}, max {:?}; connect+auth alone: median {:?}; \
         OpenSSH client `ssh true` median {:?}",
        times[5], times[0], times[9], connects[5], openssh[5]
    );
}
