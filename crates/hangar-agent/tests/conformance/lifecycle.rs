//! How sessions end: client disconnects, background jobs, signal requests.

use super::*;

// -------------------------------------------------- client disconnects

/// What happens to a command without a PTY whose client goes away.
pub(crate) fn client_disconnect_and_the_remote_command(kind: Server) {
    let s = Running::start(kind);
    let dir = work_dir(&s, "hup");
    let marker = dir.join("pid");
    let mut cmd = s.ssh("root");
    cmd.arg(format!("echo $$ > {}; exec sleep 30", marker.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let ssh = Background(cmd.spawn().unwrap());
    let until = Instant::now() + Duration::from_secs(10);
    let pid: i32 = loop {
        if let Some(p) = fs::read_to_string(&marker)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            break p;
        }
        assert!(Instant::now() < until, "the command never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(ssh); // SIGKILL: the TCP connection just closes
    let gone = |limit: Duration| {
        let until = Instant::now() + limit;
        loop {
            if !Path::new(&format!("/proc/{pid}")).exists()
                || fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| s.contains(") Z "))
                    .unwrap_or(true)
            {
                return true;
            }
            if Instant::now() > until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    match kind {
        // OpenSSH leaves a command without a PTY running when its client
        // disappears (it only closes the pipes).
        Server::OpenSsh => {
            assert!(!gone(Duration::from_secs(2)), "sshd ended the command");
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // Known difference, on purpose: the agent hangs the session up
        // (SIGHUP to its process group), so a daemon-side `hangar exec`
        // that is cancelled does not leave work running in the guest.
        Server::Agent => assert!(
            gone(Duration::from_secs(5)),
            "the command outlived its client"
        ),
    }
}

// --------------------------------------------------- background jobs

/// `cmd &` patterns people use to start daemons over ssh.
pub(crate) fn background_jobs_and_the_end_of_a_session(kind: Server) {
    let s = Running::start(kind);
    // A job with its output redirected does not hold the session open and
    // keeps running after it.
    let started = Instant::now();
    let out = run(
        remote(
            s.ssh("root"),
            "sleep 30 >/dev/null 2>&1 </dev/null & echo $!",
        ),
        b"",
    );
    let pid = ok_output(&s, &out).trim().to_string();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(alive(&pid), "the detached job {pid} was killed");
    kill_pid(&pid);

    // A job that still holds stdout keeps the session until it closes it.
    let started = Instant::now();
    let out = run(remote(s.ssh("root"), "sleep 2 & echo started"), b"");
    assert_eq!(ok_output(&s, &out), "started\n");
    assert!(started.elapsed() >= Duration::from_millis(1900));

    // With a PTY the session ends with the command; a plain job is hung
    // up with it, a job in its own session keeps running.
    let started = Instant::now();
    let mut cmd = s.ssh("root");
    cmd.arg("-tt");
    let out = run(remote(cmd, "sleep 30 & echo $!"), b"");
    let hung_up = ok_output(&s, &out).trim().to_string();
    let mut cmd = s.ssh("root");
    cmd.arg("-tt");
    // The pause lets the job leave the session before the hang-up.
    let out = run(remote(cmd, "setsid sleep 30 & echo $!; sleep 0.5"), b"");
    let detached = ok_output(&s, &out).trim().to_string();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let until = Instant::now() + Duration::from_secs(5);
    while alive(&hung_up) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (hung_up_alive, detached_alive) = (alive(&hung_up), alive(&detached));
    kill_pid(&hung_up);
    kill_pid(&detached);
    assert!(!hung_up_alive, "the PTY job {hung_up} outlived its session");
    assert!(detached_alive, "the setsid job {detached} was killed");
}

// -------------------------------------------------------------- signals

/// Accepts only the test's host key.
struct Pinned(russh::keys::PublicKey);

impl russh::client::Handler for Pinned {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(match key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => {
                key.key_data() == self.0.key_data()
            }
            russh::keys::PublicKeyOrCertificate::Certificate(_) => false,
        })
    }
}

/// A bare russh client session as root (the OpenSSH client cannot send
/// `signal` requests, and GuestClient has no API for them).
async fn raw_session(s: &Running) -> russh::client::Handle<Pinned> {
    let pinned = russh::keys::PublicKey::from_openssh(&s.keys.host.public_openssh).unwrap();
    let config = std::sync::Arc::new(russh::client::Config::default());
    let mut h = russh::client::connect(config, s.addr(), Pinned(pinned))
        .await
        .unwrap();
    let key = russh::keys::load_secret_key(&s.keys.client_path, None).unwrap();
    let auth = h
        .authenticate_publickey(
            "root",
            russh::keys::PrivateKeyWithHashAlg::new(std::sync::Arc::new(key), None),
        )
        .await
        .unwrap();
    assert!(auth.success());
    h
}

/// What became of a signalled command.
struct Signalled {
    out: String,
    status: Option<u32>,
    signal: Option<russh::Sig>,
    /// False when it still ran 3 s after the signal (then its channel was
    /// closed).
    ended: bool,
}

/// Runs `command`, waits for `ready` in its output and sends `sig`.
async fn signal_command(
    h: &russh::client::Handle<Pinned>,
    command: &str,
    sig: russh::Sig,
) -> Signalled {
    use russh::ChannelMsg;
    let mut ch = h.channel_open_session().await.unwrap();
    ch.exec(true, command).await.unwrap();
    let mut r = Signalled {
        out: String::new(),
        status: None,
        signal: None,
        ended: false,
    };
    let mut out = Vec::new();
    let mut sent: Option<Instant> = None;
    loop {
        let limit = match sent {
            Some(at) => (at + Duration::from_secs(3)).saturating_duration_since(Instant::now()),
            None => Duration::from_secs(20),
        };
        let Ok(msg) = tokio::time::timeout(limit, ch.wait()).await else {
            assert!(sent.is_some(), "never ready: {:?}", text(&out));
            let _ = ch.close().await;
            break;
        };
        match msg {
            Some(ChannelMsg::Data { data }) => {
                out.extend_from_slice(&data);
                if sent.is_none() && text(&out).contains("ready") {
                    ch.signal(sig.clone()).await.unwrap();
                    sent = Some(Instant::now());
                }
            }
            Some(ChannelMsg::ExitStatus { exit_status }) => r.status = Some(exit_status),
            Some(ChannelMsg::ExitSignal { signal_name, .. }) => r.signal = Some(signal_name),
            Some(ChannelMsg::Close) | None => {
                r.ended = true;
                break;
            }
            Some(_) => {}
        }
    }
    r.out = text(&out);
    r
}

pub(crate) fn signal_requests_reach_the_session(kind: Server) {
    let s = Running::start(kind);
    block_on(async {
        let h = raw_session(&s).await;
        let trapped = signal_command(
            &h,
            "trap 'echo got-usr1; exit 3' USR1; echo ready; while :; do sleep 0.05; done",
            russh::Sig::USR1,
        )
        .await;
        let grouped = signal_command(
            &h,
            "sleep 30 >/dev/null 2>&1 & echo \"ready $!\"; wait",
            russh::Sig::TERM,
        )
        .await;
        let child = grouped
            .out
            .trim()
            .strip_prefix("ready ")
            .unwrap()
            .to_string();
        let until = Instant::now() + Duration::from_secs(5);
        while kind == Server::Agent && alive(&child) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        let child_survived = alive(&child);
        kill_pid(&child);
        let _ = h
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
        match kind {
            // Known difference: Debian's sshd 9.2 refuses `signal`
            // requests here ("session signalling requires privilege
            // separation" in its log) and the command runs on.
            Server::OpenSsh => {
                assert!(!trapped.ended && !grouped.ended);
                assert!(s.log().contains("session signalling requires"));
                assert!(child_survived);
            }
            // The agent delivers them as sshd's code means to: to the
            // session's process group (killpg), so the command's
            // children get them too; the shell's trap runs.
            Server::Agent => {
                assert_eq!(
                    (trapped.out.as_str(), trapped.status),
                    ("ready\ngot-usr1\n", Some(3))
                );
                assert!(
                    grouped.ended
                        && grouped.status.is_none()
                        && matches!(grouped.signal, Some(russh::Sig::TERM)),
                    "{:?} {:?} {}",
                    grouped.status,
                    grouped.signal,
                    grouped.out
                );
                assert!(
                    !child_survived,
                    "the command's child {child} missed the signal"
                );
            }
        }
    });
}
