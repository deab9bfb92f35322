//! Forwarding: ssh -L and -W (direct-tcpip) and ssh -A (agent).

use super::*;

// ---------------------------------------------------------- forwarding

pub(crate) fn local_forward_carries_bytes_both_ways(kind: Server) {
    let s = Running::start(kind);
    let echo = echo_server();
    let local_port = common::free_port();
    let mut cmd = s.ssh("root");
    cmd.arg("-N")
        .arg("-o")
        .arg("ExitOnForwardFailure=yes")
        .arg("-L")
        .arg(format!("127.0.0.1:{local_port}:127.0.0.1:{echo}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _ssh = Background(cmd.spawn().unwrap());
    let until = Instant::now() + Duration::from_secs(15);
    let mut conn = loop {
        match TcpStream::connect(("127.0.0.1", local_port)) {
            Ok(c) => break c,
            Err(_) if Instant::now() < until => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("ssh -L never listened: {e}\n{}", s.log()),
        }
    };
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // Two connections at once through the same forward.
    let mut second = TcpStream::connect(("127.0.0.1", local_port)).unwrap();
    second
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let data = pseudo_random(256 * 1024, 5);
    let writer = {
        let mut w = conn.try_clone().unwrap();
        let d = data.clone();
        std::thread::spawn(move || w.write_all(&d).unwrap())
    };
    let mut back = vec![0u8; data.len()];
    conn.read_exact(&mut back).unwrap();
    writer.join().unwrap();
    assert!(back == data, "bytes through ssh -L differ");
    second.write_all(b"second").unwrap();
    let mut b2 = [0u8; 6];
    second.read_exact(&mut b2).unwrap();
    assert_eq!(&b2, b"second");
    // A half-closed connection still carries the answer back.
    let responder = eof_responder();
    let local_port2 = common::free_port();
    let mut cmd = s.ssh("root");
    cmd.arg("-N")
        .arg("-o")
        .arg("ExitOnForwardFailure=yes")
        .arg("-L")
        .arg(format!("127.0.0.1:{local_port2}:127.0.0.1:{responder}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _ssh2 = Background(cmd.spawn().unwrap());
    let until = Instant::now() + Duration::from_secs(15);
    let mut half = loop {
        match TcpStream::connect(("127.0.0.1", local_port2)) {
            Ok(c) => break c,
            Err(_) if Instant::now() < until => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("the second ssh -L never listened: {e}"),
        }
    };
    half.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    half.write_all(&data[..10_000]).unwrap();
    half.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    half.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "got 10000");

    // Closing our side is seen at the far end, which closes back.
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

pub(crate) fn stdio_forward_carries_bytes_and_refuses_a_closed_port(kind: Server) {
    let s = Running::start(kind);
    let echo = echo_server();
    let data = pseudo_random(100_000, 6);
    let mut cmd = s.ssh("root");
    cmd.arg("-W").arg(format!("127.0.0.1:{echo}"));
    let out = run(cmd, &data);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stdout == data, "bytes through ssh -W differ");

    let closed = common::free_port();
    let mut cmd = s.ssh("root");
    cmd.arg("-W").arg(format!("127.0.0.1:{closed}"));
    let out = run(cmd, b"");
    assert_eq!(out.status.code(), Some(255));
    let err = text(&out.stderr);
    assert!(err.contains("stdio forwarding failed"), "{err}");
}

pub(crate) fn agent_forwarding_lists_the_forwarded_key(kind: Server) {
    let s = Running::start(kind);
    let agent = start_ssh_agent();
    let added = Command::new("ssh-add")
        .arg(&s.keys.stranger_path)
        .env("SSH_AUTH_SOCK", &agent.socket)
        .output()
        .unwrap();
    assert!(added.status.success(), "{}", text(&added.stderr));

    let mut cmd = s.ssh("root");
    cmd.arg("-A").env("SSH_AUTH_SOCK", &agent.socket);
    let out = run(remote(cmd, "ssh-add -l; echo \"sock=$SSH_AUTH_SOCK\""), b"");
    let got = ok_output(&s, &out);
    let fp = fingerprint(&s.keys.stranger_path);
    assert!(got.contains(&fp), "{fp} not in {got:?}");
    let sock = got
        .lines()
        .find_map(|l| l.strip_prefix("sock="))
        .unwrap()
        .to_string();
    assert!(sock.starts_with("/tmp/"), "{sock}");
    // The socket (and its private dir) are gone once the session ends.
    let until = Instant::now() + Duration::from_secs(5);
    while Path::new(&sock).exists() {
        assert!(Instant::now() < until, "{sock} outlived its session");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Without -A there is no agent in the session.
    let out = run(remote(s.ssh("root"), "echo \"[${SSH_AUTH_SOCK-}]\""), b"");
    assert_eq!(ok_output(&s, &out), "[]\n");
}
