//! End-to-end: long-lived sessions in a real guest (qemu, TCG), driven
//! through the CLI, with attached clients in real terminals (tmux on the
//! host): several clients typing and seeing the same output, detach, a
//! client killed with SIGKILL, a daemon restart, send, logs, stop, a VM
//! restart, and the errors.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{TestDaemon, Tmux};

const WAIT: Duration = Duration::from_secs(60);

/// Prints a counter every second and echoes what is typed; `quit` exits 3.
// The counter runs beside a plain `read` loop: a `read -t` that times out
// mid-line (a slow guest under load) would drop what was typed.
const COUNTER: &str = "(n=0; while :; do n=$((n+1)); echo \"count $n\"; sleep 1; done) & c=$!; \
    while read line; do echo \"typed:$line\"; [ \"$line\" = quit ] && { kill $c; exit 3; }; done";

fn attach_cmd(d: &TestDaemon, vm: &str, name: &str, exec: bool) -> String {
    let hangar = format!(
        "{} --config {} session attach {vm} {name}",
        common::hangar_bin().display(),
        d.config.display()
    );
    if exec {
        format!("exec {hangar}")
    } else {
        format!("{hangar}; echo attach-exited-$?; sleep 120")
    }
}

fn pane_pid(t: &Tmux) -> i32 {
    let out = std::process::Command::new("tmux")
        .args(["display-message", "-p", "-t", &t.name, "#{pane_pid}"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn session<'a>(list: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no session {name} in {list}"))
}

#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn sessions_outlive_their_clients_and_the_daemon_and_end_with_the_vm() {
    let _serial = common::serial();
    let mut d = TestDaemon::start("sessions");
    d.ok(&["vm", "create", "dev"]);
    let out = d.ok(&[
        "session", "start", "dev", "counter", "--", "bash", "-c", COUNTER,
    ]);
    assert!(out.contains("started session counter"), "{out}");

    // The name is taken while it runs; nothing changes.
    let err = d.fails(&["session", "start", "dev", "counter", "--", "true"]);
    assert!(err.contains("already running"), "{err}");

    // Two clients in real terminals: what one types, both see.
    let a = Tmux::start(&attach_cmd(&d, "dev", "counter", true), 100, 30);
    let b = Tmux::start(&attach_cmd(&d, "dev", "counter", false), 100, 30);
    a.wait_for("count ", WAIT);
    b.wait_for("count ", WAIT);
    a.keys(&["hello-from-a", "Enter"]);
    a.wait_for("typed:hello-from-a", WAIT);
    b.wait_for("typed:hello-from-a", WAIT);
    b.keys(&["from-b", "Enter"]);
    a.wait_for("typed:from-b", WAIT);
    let list = d.json(&["session", "ls", "dev"]);
    assert_eq!(session(&list, "counter")["clients"], 2, "{list}");

    // B detaches with Ctrl-\ (exit 0); A is killed with SIGKILL.
    b.keys(&["C-\\"]);
    b.wait_for("attach-exited-0", WAIT);
    // SAFETY: the pane's process is this test's `hangar session attach`.
    unsafe { libc::kill(pane_pid(&a), libc::SIGKILL) };
    drop(a);
    drop(b);
    common::wait_until("both clients gone", WAIT, || {
        let list = d.json(&["session", "ls", "dev"]);
        session(&list, "counter")["clients"] == 0
    });

    // The daemon restarts; the session runs on and is found again.
    d.stop_daemon();
    d.spawn();
    let list = d.json(&["session", "ls"]);
    let s = session(&list, "counter");
    assert_eq!(
        (s["vm"].as_str(), s["state"].as_str()),
        (Some("dev"), Some("running")),
        "{list}"
    );
    let table = d.ok(&["session", "ls"]);
    assert!(
        table.contains("counter") && table.contains("running"),
        "{table}"
    );

    // send types without attaching; the log has everything from the start.
    d.ok(&[
        "session",
        "send",
        "dev",
        "counter",
        "--keys",
        "after-restart",
        "Enter",
    ]);
    let sent = Instant::now();
    while !d
        .ok(&["session", "logs", "dev", "counter"])
        .contains("typed:after-restart")
    {
        assert!(
            sent.elapsed() < WAIT,
            "the sent line never reached the log; its tail:\n{}\nsessions: {}\ndaemon log tail:\n{}",
            common::tail(&d.ok(&["session", "logs", "dev", "counter", "--raw"]), 15),
            d.json(&["session", "ls"]),
            common::tail(&d.log(), 30)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let log = d.ok(&["session", "logs", "dev", "counter"]);
    for want in [
        "count 1\r\n",
        "typed:hello-from-a",
        "typed:from-b",
        "typed:after-restart",
    ] {
        assert!(log.contains(want), "{want:?} missing from the log:\n{log}");
    }
    let last = d.ok(&["session", "logs", "dev", "counter", "--tail", "1"]);
    assert_eq!(last.lines().count(), 1, "{last:?}");

    // A new client; `quit` ends the command: the client exits with its code.
    let c = Tmux::start(&attach_cmd(&d, "dev", "counter", false), 80, 24);
    c.wait_for("count ", WAIT);
    c.keys(&["quit", "Enter"]);
    c.wait_for("attach-exited-3", WAIT);
    drop(c);
    let list = d.json(&["session", "ls", "dev"]);
    let s = session(&list, "counter");
    assert_eq!(
        (s["state"].as_str(), s["exit_code"].as_i64()),
        (Some("exited"), Some(3)),
        "{list}"
    );

    // Bad input: clear errors, nothing changed.
    for (args, needle) in [
        (
            vec!["session", "attach", "dev", "counter"],
            "exited with code 3",
        ),
        (
            vec!["session", "attach", "dev", "nope"],
            "no session named \"nope\"",
        ),
        (vec!["session", "logs", "nope", "counter"], "no VM"),
        (
            vec!["session", "stop", "dev", "nope"],
            "no session named \"nope\"",
        ),
        (
            vec!["session", "start", "dev", "bad/name", "--", "true"],
            "letters, digits",
        ),
        (
            vec!["session", "start", "dev", "x", "--", "no-such-program"],
            "command not found",
        ),
        (
            vec![
                "session", "start", "dev", "x", "--cwd", "/no/such", "--", "true",
            ],
            "not a directory",
        ),
        (vec!["session", "rm", "dev", "nope"], "no session named"),
    ] {
        let out = d.hangar(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let list = d.json(&["session", "ls", "dev"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");

    // Stop: SIGTERM and the status; a `logs -f` follower ends with it.
    d.ok(&[
        "session",
        "start",
        "dev",
        "sleeper",
        "--",
        "sh",
        "-c",
        "echo sleeping; exec sleep 1000",
    ]);
    common::wait_until("the sleeper to print", WAIT, || {
        d.ok(&["session", "logs", "dev", "sleeper"])
            .contains("sleeping")
    });
    let follower = std::process::Command::new(common::hangar_bin())
        .arg("--config")
        .arg(&d.config)
        .args(["session", "logs", "-f", "dev", "sleeper"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = d.ok(&["session", "stop", "dev", "sleeper"]);
    assert!(out.contains("killed (SIGTERM)"), "{out}");
    let followed = follower.wait_with_output().unwrap();
    assert!(followed.status.success(), "{followed:?}");
    assert!(String::from_utf8_lossy(&followed.stdout).contains("sleeping"));

    // After a VM restart, a session that ran is shown ended, not lost.
    d.ok(&["session", "start", "dev", "long", "--", "sleep", "1000"]);
    d.ok(&["vm", "stop", "dev"]);
    let list = d.json(&["session", "ls", "dev"]);
    assert_eq!(session(&list, "long")["state"], "ended", "{list}");
    d.ok(&["vm", "start", "dev"]);
    let list = d.json(&["session", "ls", "dev"]);
    let long = session(&list, "long");
    assert_eq!(long["state"], "ended", "{list}");
    assert!(
        long["end_reason"].as_str().unwrap().contains("shut down"),
        "{list}"
    );
    assert_eq!(session(&list, "counter")["exit_code"], 3, "{list}");
    d.ok(&["session", "rm", "dev", "long"]);
    let list = d.json(&["session", "ls", "dev"]);
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");

    d.ok(&["vm", "rm", "--force", "dev"]);
    assert_eq!(d.json(&["session", "ls"]), serde_json::json!([]));
    d.assert_nothing_left(1);
}
