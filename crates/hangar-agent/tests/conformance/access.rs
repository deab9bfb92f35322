//! Who gets in and as whom: keys, unknown users, non-root users, the login grace time.

use super::*;

// ---------------------------------------------------------------- auth

pub(crate) fn auth_refuses_an_unknown_key_and_an_unknown_user(kind: Server) {
    let s = Running::start(kind);
    let stranger = s.keys.stranger_path.clone();
    let out = run(remote(s.ssh_with_key("root", &stranger), "true"), b"");
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("Permission denied (publickey)"),
        "{}",
        text(&out.stderr)
    );

    let out = run(remote(s.ssh("hangar-conf-no-such-user"), "true"), b"");
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("Permission denied (publickey)"),
        "{}",
        text(&out.stderr)
    );

    block_on(async {
        let key = hangar_guest::DaemonKey::load_or_generate(stranger.parent().unwrap()).unwrap();
        let r = GuestClient::connect(
            &hangar_guest::direct_connector(),
            &s.target("root"),
            &key,
            Duration::from_secs(10),
        )
        .await;
        assert!(matches!(r, Err(GuestError::AuthRejected { .. })), "{r:?}");
    });
    // And the right key still works afterwards.
    ok_output(&s, &run(remote(s.ssh("root"), "true"), b""));
}

/// The user's keys (`authorized_keys.LOGIN`) log in as that login only; the
/// daemon's (`authorized_keys`) as anyone. So a VM's user is not root
/// unless it was created that way (`vm create --ssh-user`).
pub(crate) fn a_login_key_logs_in_as_its_user_only(kind: Server) {
    let s = Running::start(kind);
    let tag = match kind {
        Server::OpenSsh => "ko",
        Server::Agent => "ka",
    };
    let user = TempUser::create(tag, "/bin/sh");
    let stranger = s.keys.stranger_path.clone();
    let stranger_pub = DaemonKey::load_or_generate(stranger.parent().unwrap())
        .unwrap()
        .public_openssh();
    let login_file = PathBuf::from(format!(
        "{}.{}",
        s.keys.authorized_keys_path.display(),
        user.name
    ));
    fs::write(&login_file, format!("{stranger_pub}\n")).unwrap();

    let out = run(remote(s.ssh_with_key(&user.name, &stranger), "id -un"), b"");
    assert_eq!(ok_output(&s, &out), format!("{}\n", user.name));
    for other in ["root", "nobody"] {
        let out = run(remote(s.ssh_with_key(other, &stranger), "id -un"), b"");
        assert_eq!(
            out.status.code(),
            Some(255),
            "{other}: {}",
            text(&out.stdout)
        );
        assert!(
            text(&out.stderr).contains("Permission denied (publickey)"),
            "{}",
            text(&out.stderr)
        );
    }
    // The any-user key still logs in as the user and as root.
    let out = run(remote(s.ssh(&user.name), "id -un"), b"");
    assert_eq!(ok_output(&s, &out), format!("{}\n", user.name));
    ok_output(&s, &run(remote(s.ssh("root"), "true"), b""));
    fs::remove_file(&login_file).unwrap();
}

// ----------------------------------------------------------- key types

pub(crate) fn rsa_and_ecdsa_keys_log_in_and_key_options_are_not_ignored(kind: Server) {
    let s = Running::start(kind);
    let keygen = |t: &str| {
        let k = s.keys.dir.path().join(format!("id_{t}"));
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", t, "-N", "", "-f"])
            .arg(&k)
            .status()
            .unwrap();
        assert!(st.success());
        let public = text(&fs::read(k.with_extension("pub")).unwrap());
        (k, public)
    };
    let append = |line: &str| {
        let mut ak = fs::OpenOptions::new()
            .append(true)
            .open(&s.keys.authorized_keys_path)
            .unwrap();
        ak.write_all(line.as_bytes()).unwrap();
    };
    for t in ["rsa", "ecdsa"] {
        let (k, public) = keygen(t);
        append(&public);
        let out = run(remote(s.ssh_with_key("root", &k), "echo in"), b"");
        assert_eq!(ok_output(&s, &out), "in\n", "{t} key");
    }

    // A key with options (here a forced command) in authorized_keys.
    let (k, public) = keygen("ed25519");
    append(&format!("command=\"echo forced\" {public}"));
    let out = run(remote(s.ssh_with_key("root", &k), "echo asked"), b"");
    match kind {
        Server::OpenSsh => assert_eq!(ok_output(&s, &out), "forced\n"),
        // Known difference, on purpose: the agent does not implement
        // authorized_keys options, and rather than grant such a key
        // without its restriction it refuses it.
        Server::Agent => {
            assert_eq!(out.status.code(), Some(255));
            assert!(text(&out.stderr).contains("Permission denied"));
        }
    }
}

// ----------------------------------------------------- non-root users

pub(crate) fn non_root_user_runs_as_itself_and_cannot_write_root_files(kind: Server) {
    let s = Running::start(kind);
    let tag = match kind {
        Server::OpenSsh => "o",
        Server::Agent => "a",
    };
    let user = TempUser::create(tag, "/bin/bash");
    let home = user.home.display().to_string();
    // bash reads ~/.bashrc for `ssh host command` when SSH_CLIENT is set.
    fs::write(
        user.home.join(".bashrc"),
        "export HANGAR_CONF_BASHRC=read\n",
    )
    .unwrap();

    let out = run(
        remote(
            s.ssh(&user.name),
            "id -u; echo \"$HOME\"; pwd; echo \"$USER $LOGNAME\"; id -G; echo \"$SHELL $HANGAR_CONF_BASHRC\"",
        ),
        b"",
    );
    let got = ok_output(&s, &out);
    let expected_groups = text(
        &Command::new("id")
            .arg("-G")
            .arg(&user.name)
            .output()
            .unwrap()
            .stdout,
    );
    assert_eq!(
        got,
        format!(
            "{uid}\n{home}\n{home}\n{name} {name}\n{expected_groups}/bin/bash read\n",
            uid = user.uid,
            name = user.name
        )
    );

    // sftp writes as the user: a file in the home is the user's, /root is
    // refused and stays untouched.
    let local = work_dir(&s, "local");
    fs::write(local.join("f"), b"mine\n").unwrap();
    let forbidden = PathBuf::from(format!("/root/hangar-conf-{}-{tag}", std::process::id()));
    let batch = format!(
        "put {0}/f {home}/f\n-put {0}/f {1}\n",
        local.display(),
        forbidden.display()
    );
    fs::write(local.join("batch"), batch).unwrap();
    let mut cmd = s.file_client("sftp");
    cmd.arg("-b")
        .arg(local.join("batch"))
        .arg(format!("{}@127.0.0.1", user.name));
    let out = run(cmd, b"");
    ok_output(&s, &out);
    assert!(
        text(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out.stderr)
    );
    let meta = fs::metadata(user.home.join("f")).unwrap();
    assert_eq!(meta.uid(), user.uid);
    assert!(!forbidden.exists(), "{} was written", forbidden.display());

    // exec as the user cannot write there either; a file it makes is its own.
    let out = run(
        remote(
            s.ssh(&user.name),
            &format!("echo hi > ~/made; touch {}", forbidden.display()),
        ),
        b"",
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(!forbidden.exists());
    assert_eq!(
        fs::metadata(user.home.join("made")).unwrap().uid(),
        user.uid
    );

    // sftp starts in the user's home.
    fs::write(local.join("pwd"), "pwd\n").unwrap();
    let mut cmd = s.file_client("sftp");
    cmd.arg("-b")
        .arg(local.join("pwd"))
        .arg(format!("{}@127.0.0.1", user.name));
    let out = run(cmd, b"");
    assert!(
        ok_output(&s, &out).contains(&format!("Remote working directory: {home}\n")),
        "{}",
        text(&out.stdout)
    );

    // Agent forwarding works for the user (the socket is the user's).
    let agent = start_ssh_agent();
    let added = Command::new("ssh-add")
        .arg(&s.keys.stranger_path)
        .env("SSH_AUTH_SOCK", &agent.socket)
        .output()
        .unwrap();
    assert!(added.status.success(), "{}", text(&added.stderr));
    let mut cmd = s.ssh(&user.name);
    cmd.arg("-A").env("SSH_AUTH_SOCK", &agent.socket);
    let out = run(remote(cmd, "ssh-add -l"), b"");
    let fp = fingerprint(&s.keys.stranger_path);
    assert!(ok_output(&s, &out).contains(&fp), "{}", text(&out.stdout));
    drop(agent);

    // A user whose login shell is nologin.
    let locked = TempUser::create(&format!("{tag}n"), "/usr/sbin/nologin");
    let out = run(remote(s.ssh(&locked.name), "id -u"), b"");
    match kind {
        // sshd runs the command through nologin, which refuses.
        Server::OpenSsh => {
            assert_eq!(out.status.code(), Some(1));
            assert!(
                text(&out.stdout).contains("not available"),
                "{}",
                text(&out.stdout)
            );
        }
        // Known difference, on purpose (passwd.rs): the agent treats
        // nologin/false as "no usable shell" and falls back to /bin/sh, so
        // `hangar exec --user www-data` works; only holders of the VM's
        // authorized keys (who can log in as root anyway) get there.
        Server::Agent => assert_eq!(ok_output(&s, &out), format!("{}\n", locked.uid)),
    }

    // A user whose home does not exist starts in /.
    let missing = PathBuf::from(format!("/nonexistent-hangar-conf-{}", std::process::id()));
    let homeless = TempUser::create_with_home(&format!("{tag}h"), "/bin/sh", Some(&missing));
    let out = run(remote(s.ssh(&homeless.name), "pwd; echo \"$HOME\""), b"");
    assert_eq!(ok_output(&s, &out), format!("/\n{}\n", missing.display()));
    match kind {
        Server::OpenSsh => assert!(
            text(&out.stderr).contains("Could not chdir to home directory"),
            "{}",
            text(&out.stderr)
        ),
        // Known difference, on purpose: the agent says nothing (the
        // stderr of `hangar exec` is the command's alone).
        Server::Agent => assert_eq!(text(&out.stderr), ""),
    }
}

// ------------------------------------------------- login grace time

/// Stalled handshakes (nothing sent; only the banner, so the server waits
/// in its key exchange) are dropped once the login grace time passes,
/// while a logged-in session outlives it.
pub(crate) fn a_connection_that_does_not_log_in_is_dropped_after_the_grace_time(kind: Server) {
    let s = Running::start_with(
        kind,
        common::Options {
            login_grace_secs: Some(2),
            ..Default::default()
        },
    );
    let started = Instant::now();
    let stalls: Vec<&[u8]> = vec![b"", b"SSH-2.0-stalled\r\n"];
    let waiters: Vec<_> = stalls
        .into_iter()
        .map(|sent| {
            let mut c = TcpStream::connect(s.addr()).unwrap();
            c.write_all(sent).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
            std::thread::spawn(move || {
                // Read (the server's banner and KEXINIT) until it closes.
                let mut buf = [0u8; 4096];
                loop {
                    match c.read(&mut buf) {
                        Ok(0) => return Ok(Instant::now()),
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                            return Ok(Instant::now())
                        }
                        Err(e) => return Err(e),
                    }
                }
            })
        })
        .collect();
    // A session that logged in stays past the grace time.
    let out = run(remote(s.ssh("root"), "sleep 3; echo still"), b"");
    assert_eq!(ok_output(&s, &out), "still\n");
    for w in waiters {
        let closed = w.join().unwrap().unwrap_or_else(|e| {
            panic!("{kind:?} kept a stalled connection open: {e}\n{}", s.log())
        });
        let after = closed - started;
        assert!(
            after >= Duration::from_millis(1500) && after < Duration::from_secs(10),
            "closed after {after:?}"
        );
    }
}

// ------------------------------------------------------- MaxStartups

/// Connections that have not logged in are capped (MaxStartups 2: the
/// third is dropped at once), a logged-in one no longer counts, and a
/// place frees when a pending connection goes.
pub(crate) fn connections_not_logged_in_are_capped(kind: Server) {
    let s = Running::start_with(
        kind,
        common::Options {
            max_startups: Some("2"),
            ..Default::default()
        },
    );
    // A logged-in session first: it must not count against the cap.
    let mut master = remote(s.ssh("root"), "echo up; sleep 30");
    master
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null());
    let mut logged_in = master.spawn().unwrap();
    let mut up = [0u8; 3];
    logged_in
        .stdout
        .take()
        .unwrap()
        .read_exact(&mut up)
        .unwrap();
    assert_eq!(&up, b"up\n");

    let idle: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(s.addr()).unwrap())
        .collect();
    // sshd counts a connection once its child reports in: give both a moment.
    std::thread::sleep(Duration::from_millis(500));
    let out = run(remote(s.ssh("root"), "echo in"), b"");
    assert_eq!(
        out.status.code(),
        Some(255),
        "a third pending connection got in"
    );
    assert!(
        text(&out.stderr).contains("Connection closed")
            || text(&out.stderr).contains("Connection reset"),
        "{}",
        text(&out.stderr)
    );

    drop(idle);
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let out = run(remote(s.ssh("root"), "echo in"), b"");
        if out.status.success() {
            assert_eq!(text(&out.stdout), "in\n");
            break;
        }
        assert!(
            Instant::now() < until,
            "no place freed after the idle connections closed: {}\n{}",
            text(&out.stderr),
            s.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = logged_in.kill();
    let _ = logged_in.wait();
}
