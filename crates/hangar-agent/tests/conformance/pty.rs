//! Terminals: PTY allocation and size, window changes, the login shell.

use super::*;

// ----------------------------------------------------------------- PTY

pub(crate) fn pty_gives_a_terminal_of_the_requested_size(kind: Server) {
    let s = Running::start(kind);
    let mut cmd = s.ssh("root");
    cmd.arg("-tt").env("TERM", "vt100");
    let out = run(
        remote(cmd, "tty; echo \"[$TERM] [${SSH_TTY-}]\"; echo err >&2"),
        b"",
    );
    let got = ok_output(&s, &out);
    let lines: Vec<&str> = got.lines().map(str::trim_end).collect();
    assert!(lines[0].starts_with("/dev/pts/"), "{got:?}");
    // TERM comes from the pty request, SSH_TTY names the terminal.
    assert_eq!(lines[1], format!("[vt100] [{}]", lines[0]), "{got:?}");
    // The PTY merges stderr into stdout.
    assert_eq!(lines[2], "err", "{got:?}");
    assert_eq!(text(&out.stderr), "");

    // Output still in the terminal when the command exits is not lost.
    let mut cmd = s.ssh("root");
    cmd.arg("-tt");
    let out = run(remote(cmd, "seq 1 300000"), b"");
    let got = ok_output(&s, &out);
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines.len(), 300_000);
    assert_eq!(lines.last().map(|l| l.trim_end()), Some("300000"));

    block_on(async {
        let c = s.guest_client().await;
        let spec = |cmd: &str| ExecSpec {
            command: vec![cmd.into()],
            tty: true,
            term: "xterm".into(),
            cols: 100,
            rows: 30,
            env: vec![],
        };
        let (code, out, _) = exec_collect(&c, spec("stty size; echo $TERM"), vec![]).await;
        assert_eq!(code.unwrap(), 0);
        assert_eq!(text(&out).replace('\r', ""), "30 100\nxterm\n");
        let (code, out, _) = exec_collect(&c, spec("tty"), vec![]).await;
        assert_eq!(code.unwrap(), 0);
        assert!(text(&out).starts_with("/dev/pts/"), "{:?}", text(&out));
        c.close().await;
    });
}

pub(crate) fn pty_window_change_is_seen_by_the_command(kind: Server) {
    let s = Running::start(kind);
    block_on(async {
        let c = s.guest_client().await;
        let (in_tx, in_rx) = mpsc::channel(4);
        let (out_tx, mut out_rx) = mpsc::channel(16);
        let spec = ExecSpec {
            command: vec!["stty size; read x; stty size".into()],
            tty: true,
            term: "xterm".into(),
            cols: 80,
            rows: 24,
            env: vec![],
        };
        let drive = async move {
            let mut seen = Vec::new();
            while !text(&seen).contains("24 80") {
                match tokio::time::timeout(Duration::from_secs(10), out_rx.recv()).await {
                    Ok(Some(Output::Stdout(b) | Output::Stderr(b))) => seen.extend_from_slice(&b),
                    other => panic!("no first size: {other:?}, seen {seen:?}"),
                }
            }
            in_tx
                .send(Input::Resize {
                    cols: 132,
                    rows: 43,
                })
                .await
                .unwrap();
            in_tx.send(Input::Data(b"go\r".to_vec())).await.unwrap();
            while let Some(Output::Stdout(b) | Output::Stderr(b)) = out_rx.recv().await {
                seen.extend_from_slice(&b);
            }
            drop(in_tx);
            text(&seen)
        };
        let (code, seen) = tokio::join!(c.exec(spec, in_rx, out_tx), drive);
        assert_eq!(code.unwrap(), 0);
        let sizes: Vec<&str> = seen
            .lines()
            .map(str::trim)
            .filter(|l| l.contains(' ') && l.chars().all(|c| c.is_ascii_digit() || c == ' '))
            .collect();
        assert_eq!(sizes, vec!["24 80", "43 132"], "output was {seen:?}");
        c.close().await;
    });
}

pub(crate) fn shell_runs_commands_from_stdin(kind: Server) {
    let s = Running::start(kind);
    // No PTY: the login shell reads commands from the channel.
    let mut cmd = s.ssh("root");
    cmd.arg("-T");
    let out = run(cmd, b"echo $((6*7)); echo \"$0\"; exit 4\n");
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    // A login shell: argv[0] starts with '-'.
    assert_eq!(text(&out.stdout), "42\n-bash\n");

    // With a PTY the shell is interactive; the exit status still arrives.
    let mut cmd = s.ssh("root");
    cmd.arg("-tt");
    let out = run(cmd, b"exit 5\n");
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
}
