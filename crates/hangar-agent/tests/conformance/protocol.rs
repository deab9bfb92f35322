//! The protocol around sessions: requests beyond the basics, transport features and algorithms.

use super::*;

// ------------------------------------------- requests beyond the basics

/// Remote forwarding (`ssh -R`), X11 forwarding, an unknown subsystem and
/// a PTY of unknown size (`ssh -tt` without a local terminal).
pub(crate) fn requests_beyond_the_basics(kind: Server) {
    let s = Running::start(kind);
    let echo = echo_server();
    let mut cmd = s.ssh("root");
    cmd.arg("-o")
        .arg("ExitOnForwardFailure=yes")
        .arg("-R")
        .arg(format!("127.0.0.1:0:127.0.0.1:{echo}"));
    let out = run(remote(cmd, "echo ran"), b"");
    match kind {
        Server::OpenSsh => assert_eq!(ok_output(&s, &out), "ran\n"),
        // Known difference: the agent serves no remote forwarding
        // (tcpip-forward); it refuses the request, so the client says so.
        Server::Agent => {
            assert_eq!(out.status.code(), Some(255));
            assert!(
                text(&out.stderr).contains("remote port forwarding failed"),
                "{}",
                text(&out.stderr)
            );
        }
    }

    // X11 forwarding is refused (sshd: X11Forwarding no); the command runs.
    let mut cmd = s.ssh("root");
    cmd.arg("-X").env("DISPLAY", ":99");
    let out = run(remote(cmd, "echo \"ran [${DISPLAY-}]\""), b"");
    assert_eq!(ok_output(&s, &out), "ran []\n");
    assert!(
        text(&out.stderr).contains("X11 forwarding request failed"),
        "{:?}",
        text(&out.stderr)
    );

    let mut cmd = s.ssh("root");
    cmd.arg("-s");
    let out = run(remote(cmd, "no-such-subsystem"), b"");
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("subsystem request failed"),
        "{}",
        text(&out.stderr)
    );

    // Without a local terminal `ssh -tt` asks for a 0x0 PTY.
    let mut cmd = s.ssh("root");
    cmd.arg("-tt");
    let out = run(remote(cmd, "stty size"), b"");
    let size = ok_output(&s, &out);
    // The last line: root's shell startup files on a developer machine
    // may print to the terminal first (pyenv's rehash warnings seen here).
    let size = size.lines().last().unwrap_or_default();
    match kind {
        Server::OpenSsh => assert_eq!(size, "0 0"),
        // Known difference, on purpose: the agent gives a PTY asked for
        // with zero rows or columns the classic 24x80, so full-screen
        // programs have a usable size.
        Server::Agent => assert_eq!(size, "24 80"),
    }

    // An empty command line runs the shell on stdin, like no command.
    let out = run(remote(s.ssh("root"), ""), b"echo via-empty\n");
    assert_eq!(ok_output(&s, &out), "via-empty\n");
}

// ------------------------------------------------------------ transport

/// Algorithms the agent (russh's safe defaults) negotiates like sshd.
const COMMON_ALGORITHMS: &[(&str, &str)] = &[
    ("Ciphers", "chacha20-poly1305@openssh.com"),
    ("Ciphers", "aes256-gcm@openssh.com"),
    ("Ciphers", "aes128-ctr"),
    ("Ciphers", "aes256-ctr"),
    ("KexAlgorithms", "curve25519-sha256"),
    ("KexAlgorithms", "curve25519-sha256@libssh.org"),
    ("KexAlgorithms", "diffie-hellman-group14-sha256"),
    ("KexAlgorithms", "diffie-hellman-group16-sha512"),
    ("KexAlgorithms", "diffie-hellman-group-exchange-sha256"),
    ("MACs", "hmac-sha2-256-etm@openssh.com"),
    ("MACs", "hmac-sha2-512"),
];

/// Algorithms sshd offers and the agent does not (russh leaves them out
/// of its defaults or lacks them); OpenSSH clients never need them, as
/// they all offer the common ones above.
const OPENSSH_ONLY_ALGORITHMS: &[(&str, &str)] = &[
    ("Ciphers", "aes128-gcm@openssh.com"),
    ("KexAlgorithms", "ecdh-sha2-nistp256"),
    ("KexAlgorithms", "sntrup761x25519-sha512@openssh.com"),
    ("MACs", "umac-128-etm@openssh.com"),
    ("MACs", "hmac-sha1"),
];

/// `ssh` limited to one algorithm (with a MAC, a cipher that uses one:
/// AEAD ciphers ignore the MAC).
fn with_algorithm(s: &Running, opt: &str, alg: &str) -> Command {
    let mut cmd = s.ssh("root");
    cmd.arg("-o").arg(format!("{opt}={alg}"));
    if opt == "MACs" {
        cmd.arg("-c").arg("aes128-ctr");
    }
    cmd
}

pub(crate) fn transport_keepalive_rekey_compression_and_algorithms(kind: Server) {
    let s = Running::start(kind);
    // keepalive@openssh.com requests are answered (else the client gives
    // up after ServerAliveCountMax unanswered ones).
    let mut cmd = s.ssh("root");
    cmd.args(["-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=1"]);
    let out = run(remote(cmd, "sleep 3; echo ok"), b"");
    assert_eq!(ok_output(&s, &out), "ok\n");

    // Rekeying every MiB and compression keep the stream intact.
    let data = pseudo_random(5_000_000, 7);
    let file = work_dir(&s, "transport").join("data");
    fs::write(&file, &data).unwrap();
    for opts in [&["-o", "RekeyLimit=1M"][..], &["-C"][..]] {
        let mut cmd = s.ssh("root");
        cmd.args(opts);
        let out = run(remote(cmd, &format!("cat {}", file.display())), b"");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{opts:?}: {}",
            text(&out.stderr)
        );
        assert!(out.stdout == data, "{opts:?}: the stream differs");
    }

    for (opt, alg) in COMMON_ALGORITHMS {
        let out = run(remote(with_algorithm(&s, opt, alg), "echo ok"), b"");
        assert_eq!(ok_output(&s, &out), "ok\n", "{opt}={alg}");
    }
    for (opt, alg) in OPENSSH_ONLY_ALGORITHMS {
        let out = run(remote(with_algorithm(&s, opt, alg), "echo ok"), b"");
        match kind {
            Server::OpenSsh => assert_eq!(ok_output(&s, &out), "ok\n", "{opt}={alg}"),
            // Known difference (see OPENSSH_ONLY_ALGORITHMS).
            Server::Agent => assert_eq!(out.status.code(), Some(255), "{opt}={alg}"),
        }
    }
}
