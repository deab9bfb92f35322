//! Attack suite, the API's resources: a socket user tries to exhaust the
//! daemon (connections, slow requests) so that nobody else can use it
//! (`docs/security.md#load-the-api-cannot-be-exhausted-and-boots-queue-instead-of-failing`).

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::roles::{test_socket_gid, Role};
use common::{hangar_bin, Options, TestDaemon};

/// The soft open-files limit services and shells get by default: the test
/// daemon starts with it, as a daemon started by systemd or a shell would.
const DEFAULT_SOFT_NOFILE: u64 = 1024;

fn set_soft_nofile(soft: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = soft.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
}

/// A process of the socket user (uid `nobody`, in the socket group) that
/// holds `n` connections to the API socket open, sending nothing on half
/// of them and half a request head on the others. Killed on drop.
struct ConnectionHog {
    pid: libc::pid_t,
    /// How many connections it got (the kernel queues them even when the
    /// daemon does not accept).
    opened: u32,
}

impl ConnectionHog {
    fn start(socket: &Path, n: u32) -> ConnectionHog {
        let gid = test_socket_gid();
        let path = socket.as_os_str().as_encoded_bytes();
        // SAFETY: zeroed sockaddr_un is valid; the path fits (checked).
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        assert!(path.len() < addr.sun_path.len(), "socket path too long");
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (d, s) in addr.sun_path.iter_mut().zip(path) {
            *d = *s as libc::c_char;
        }
        let half_head = b"GET /v1/vms HTTP/1.1\r\nhost: hangar\r\n";
        let mut fds = [0; 2];
        // SAFETY: pipe into a local array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the child makes only async-signal-safe syscalls on
        // memory prepared before the fork, then waits to be killed.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            unsafe {
                if common::roles::become_nobody(&[gid]).is_err() {
                    libc::_exit(1);
                }
                let mut lim = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
                lim.rlim_cur = lim.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
                let mut opened: u32 = 0;
                for i in 0..n {
                    let fd =
                        libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
                    if fd < 0 {
                        break;
                    }
                    let r = libc::connect(
                        fd,
                        std::ptr::addr_of!(addr).cast(),
                        std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
                    );
                    if r != 0 {
                        // The backlog is full: the daemon stopped accepting.
                        libc::close(fd);
                        continue;
                    }
                    opened += 1;
                    if i % 2 == 1 {
                        libc::write(fd, half_head.as_ptr().cast(), half_head.len());
                    }
                }
                let b = opened.to_ne_bytes();
                libc::write(fds[1], b.as_ptr().cast(), 4);
                loop {
                    libc::pause();
                }
            }
        }
        // SAFETY: closing our copy of the write end, reading 4 bytes.
        unsafe { libc::close(fds[1]) };
        let mut reader = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[0]) };
        let mut b = [0u8; 4];
        reader
            .read_exact(&mut b)
            .expect("the connection hog reports how many it opened");
        ConnectionHog {
            pid,
            opened: u32::from_ne_bytes(b),
        }
    }
}

impl Drop for ConnectionHog {
    fn drop(&mut self) {
        // SAFETY: our own child, by pid.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

/// Runs `hangar --json vm ls` as root, giving up after `limit`; returns
/// whether it answered `[]` in time and how long it took.
fn root_vm_ls_within(d: &TestDaemon, limit: Duration) -> (bool, Duration, String) {
    let began = Instant::now();
    let mut child = Command::new(hangar_bin())
        .arg("--config")
        .arg(&d.config)
        .args(["--json", "vm", "ls"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while began.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).trim().to_string()
                + &String::from_utf8_lossy(&out.stderr);
            return (out.status.success() && text == "[]", began.elapsed(), text);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    (false, began.elapsed(), "no answer".into())
}

#[test]
#[ignore = "needs root: runs the daemon and plays other users (setuid, groupadd)"]
fn socket_user_cannot_starve_the_api_with_thousands_of_idle_connections() {
    set_soft_nofile(DEFAULT_SOFT_NOFILE);
    let d = TestDaemon::with_socket_group(
        "atk-idle",
        Options {
            // Long enough that the hog's connections are not cut while the
            // test looks.
            extra_config: "api.header_read_timeout_secs = 60\n".into(),
            ..Options::default()
        },
    );
    let hog = ConnectionHog::start(&d.socket(), 5000);
    assert!(
        hog.opened >= 1000,
        "the hog opened only {} connections",
        hog.opened
    );

    let (answered, took, text) = root_vm_ls_within(&d, Duration::from_secs(3));
    assert!(
        answered,
        "`vm ls` did not answer within 3 s while a socket user held {} idle connections ({took:?}): {text}\n{}",
        hog.opened,
        common::tail(&d.log(), 20)
    );

    // The hog's own further connections are refused at once. They are
    // told why as soon as the daemon has a refusal slot free: right after
    // the flood all 32 may still be waiting on the hog's silent
    // connections, and then a refused connection is closed unanswered.
    let began = Instant::now();
    let mut said_why = String::new();
    while began.elapsed() < Duration::from_secs(5) {
        let out = d.hangar_as(Role::SocketUser, &["vm", "ls"]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "the hog got past its cap: {stderr}");
        if stderr.contains("max_connections_per_user") {
            said_why = stderr;
            break;
        }
    }
    assert!(
        !said_why.is_empty(),
        "within 5 s no refusal said why (max_connections_per_user)"
    );

    // Nothing changed, and once the hog is gone the user is served again.
    drop(hog);
    assert_eq!(d.ok(&["--json", "vm", "ls"]).trim(), "[]");
    common::wait_until(
        "the socket user is served again",
        Duration::from_secs(10),
        || {
            d.hangar_as(Role::SocketUser, &["vm", "ls"])
                .status
                .success()
        },
    );
}

#[test]
#[ignore = "needs root: runs the daemon and plays other users (setuid, groupadd)"]
fn slowloris_client_is_cut_after_the_header_timeout() {
    let d = TestDaemon::with_socket_group(
        "atk-slow",
        Options {
            extra_config: "api.header_read_timeout_secs = 2\n".into(),
            ..Options::default()
        },
    );
    let mut s = UnixStream::connect(d.socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let began = Instant::now();
    // One header byte a second: never a whole head.
    s.write_all(b"GET /v1/vms HTTP/1.1\r\nhost: hangar\r\nx-slow: ")
        .unwrap();
    let mut cut = false;
    while began.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(500));
        if s.write_all(b"a").is_err() {
            cut = true;
            break;
        }
        let mut buf = [0u8; 256];
        s.set_nonblocking(true).unwrap();
        let r = s.read(&mut buf);
        s.set_nonblocking(false).unwrap();
        if matches!(r, Ok(0)) || matches!(&r, Ok(n) if *n > 0) {
            cut = true;
            break;
        }
    }
    let took = began.elapsed();
    assert!(cut, "a slowloris client was still connected after {took:?}");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(6),
        "cut after {took:?}, expected about the 2 s header timeout"
    );
    assert_eq!(d.ok(&["--json", "vm", "ls"]).trim(), "[]");
}
