//! Long-lived sessions in `hangar-agent serve` on 127.0.0.1, driven by the
//! daemon's own client (`GuestClient::session_call`/`session_stream`):
//! start, several attached clients that all see and type, send, logs,
//! stop, the errors, and an agent restart that leaves ended records.
//!
//! Needs root (the agent switches users; the fixture is the conformance
//! suite's).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{block_on, Options, Running, Server};
use hangar_guest::session_proto::{ErrorKind, Request, SessionInfo, SessionState, StartRequest};
use hangar_guest::{GuestClient, GuestError, SessionEvent, SessionStream};

fn start_req(name: &str, argv: &[&str]) -> Request {
    Request::Start(StartRequest {
        name: name.into(),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
}

async fn call(c: &GuestClient, req: Request) -> Result<SessionInfo, GuestError> {
    c.session_call::<SessionInfo>(&req).await
}

fn kind(e: GuestError) -> ErrorKind {
    match e {
        GuestError::Session(r) => r.kind,
        other => panic!("not a session error: {other}"),
    }
}

/// Reads the stream until its output contains `needle`; returns it all.
async fn read_until(s: &mut SessionStream, needle: &str) -> String {
    let mut seen = String::new();
    let r = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match s.next().await {
                SessionEvent::Output(b) => {
                    seen.push_str(&String::from_utf8_lossy(&b));
                    if seen.contains(needle) {
                        return;
                    }
                }
                other => panic!("stream ended ({other:?}) before {needle:?}; saw {seen:?}"),
            }
        }
    })
    .await;
    assert!(r.is_ok(), "no {needle:?} within 20 s; saw {seen:?}");
    seen
}

async fn exit_of(s: &mut SessionStream) -> SessionEvent {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match s.next().await {
                SessionEvent::Output(_) => {}
                other => return other,
            }
        }
    })
    .await
    .expect("the stream did not end")
}

const ECHO_LOOP: &[&str] = &[
    "/bin/sh",
    "-c",
    "echo ready; n=0; while read l; do n=$((n+1)); echo \"got$n:$l\"; done; exit 7",
];

#[test]
#[ignore = "needs root: the agent switches users"]
fn sessions_are_shared_by_attached_clients_logged_and_stopped() {
    let agent = Running::start(Server::Agent);
    block_on(async {
        let c = agent.guest_client().await;
        let info = call(&c, start_req("loop", ECHO_LOOP)).await.unwrap();
        assert_eq!(info.state, SessionState::Running);
        assert_eq!(info.user, "root");

        // The name is taken while it runs.
        let e = call(&c, start_req("loop", &["true"])).await.unwrap_err();
        assert_eq!(kind(e), ErrorKind::Conflict);

        // Two clients; what one types both see.
        let attach = Request::Attach {
            name: "loop".into(),
            cols: 100,
            rows: 30,
        };
        let (_, mut a) = c.session_stream(&attach).await.unwrap();
        let (_, mut b) = c.session_stream(&attach).await.unwrap();
        // The second one's screen already shows "ready".
        read_until(&mut b, "ready").await;
        a.input().send(b"hello\n".to_vec()).await.unwrap();
        read_until(&mut a, "got1:hello").await;
        read_until(&mut b, "got1:hello").await;
        let listed = c
            .session_call::<Vec<SessionInfo>>(&Request::List)
            .await
            .unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].clients, 2);

        // One detaches; the session goes on. `send` types without attaching.
        a.input().close().await;
        drop(a);
        call(
            &c,
            Request::Send {
                name: "loop".into(),
                data: "world\n".into(),
            },
        )
        .await
        .unwrap();
        read_until(&mut b, "got2:world").await;

        // Ctrl-D ends the loop: the attached client gets the exit code.
        b.input().send(vec![4]).await.unwrap();
        assert_eq!(exit_of(&mut b).await, SessionEvent::Exit(7));
        let info = call(
            &c,
            Request::Info {
                name: "loop".into(),
            },
        )
        .await
        .unwrap();
        assert_eq!(
            (info.state, info.exit_code),
            (SessionState::Exited, Some(7))
        );

        // The whole output is in the log; --tail.
        let (_, mut logs) = c
            .session_stream(&Request::Logs {
                name: "loop".into(),
                tail_lines: None,
                follow: false,
            })
            .await
            .unwrap();
        let all = read_until(&mut logs, "got2:world").await;
        assert!(all.starts_with("ready"), "{all:?}");
        assert_eq!(exit_of(&mut logs).await, SessionEvent::Exit(0));
        let (_, mut tail) = c
            .session_stream(&Request::Logs {
                name: "loop".into(),
                tail_lines: Some(1),
                follow: false,
            })
            .await
            .unwrap();
        let mut last = String::new();
        while let SessionEvent::Output(b) = tail.next().await {
            last.push_str(&String::from_utf8_lossy(&b));
        }
        assert_eq!(last, "got2:world\r\n");

        // Errors: attach to an ended one, unknown names, bad starts.
        let e = c.session_stream(&attach).await.err().unwrap();
        assert!(e.to_string().contains("exited with code 7"), "{e}");
        assert_eq!(kind(e), ErrorKind::Conflict);
        let e = call(
            &c,
            Request::Info {
                name: "nope".into(),
            },
        )
        .await
        .unwrap_err();
        assert_eq!(kind(e), ErrorKind::NotFound);
        for (req, needle) in [
            (
                start_req("x", &["no-such-program-xyz"]),
                "command not found",
            ),
            (start_req("../x", &["true"]), "letters, digits"),
            (
                Request::Start(StartRequest {
                    name: "x".into(),
                    argv: vec!["true".into()],
                    cwd: Some("/no/such/dir".into()),
                    ..Default::default()
                }),
                "not a directory",
            ),
            (
                Request::Start(StartRequest {
                    name: "x".into(),
                    argv: vec!["true".into()],
                    user: Some("no-such-user".into()),
                    ..Default::default()
                }),
                "no user",
            ),
        ] {
            let e = call(&c, req).await.unwrap_err();
            assert!(e.to_string().contains(needle), "{e}");
            assert_eq!(kind(e), ErrorKind::Invalid);
        }
        // A failed start under an ended session's name keeps its log.
        let e = call(&c, start_req("loop", &["no-such-program-xyz"]))
            .await
            .unwrap_err();
        assert_eq!(kind(e), ErrorKind::Invalid);
        let (_, mut logs) = c
            .session_stream(&Request::Logs {
                name: "loop".into(),
                tail_lines: None,
                follow: false,
            })
            .await
            .unwrap();
        read_until(&mut logs, "got2:world").await;
        // Nothing was left of the failed starts.
        let listed = c
            .session_call::<Vec<SessionInfo>>(&Request::List)
            .await
            .unwrap();
        assert_eq!(
            listed.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["loop"]
        );

        // Stop: SIGTERM, the status recorded; a follower of the logs ends.
        let info = call(
            &c,
            Request::Start(StartRequest {
                name: "sleeper".into(),
                argv: vec![
                    "sh".into(),
                    "-c".into(),
                    "echo \"$HANGAR_SESSION in $PWD\"; exec sleep 1000".into(),
                ],
                cwd: Some("/tmp".into()),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
        assert_eq!(info.cwd.as_deref(), Some("/tmp"));
        let (_, mut follow) = c
            .session_stream(&Request::Logs {
                name: "sleeper".into(),
                tail_lines: None,
                follow: true,
            })
            .await
            .unwrap();
        read_until(&mut follow, "sleeper in /tmp").await;
        let e = call(
            &c,
            Request::Remove {
                name: "sleeper".into(),
            },
        )
        .await
        .unwrap_err();
        assert_eq!(kind(e), ErrorKind::Conflict);
        let info = call(
            &c,
            Request::Stop {
                name: "sleeper".into(),
                timeout_secs: 5,
            },
        )
        .await
        .unwrap();
        assert_eq!(info.state, SessionState::Exited);
        assert_eq!(info.signal.as_deref(), Some("TERM"));
        assert_eq!(info.exit_code, Some(143));
        assert_eq!(exit_of(&mut follow).await, SessionEvent::Exit(0));

        // An ended name can be reused; remove forgets one.
        call(&c, start_req("sleeper", &["true"])).await.unwrap();
        call(
            &c,
            Request::Remove {
                name: "loop".into(),
            },
        )
        .await
        .unwrap();
        let e = call(
            &c,
            Request::Info {
                name: "loop".into(),
            },
        )
        .await
        .unwrap_err();
        assert_eq!(kind(e), ErrorKind::NotFound);
    });
}

#[test]
#[ignore = "needs root: the agent switches users"]
fn a_restarted_agent_shows_the_old_sessions_as_ended_with_their_logs() {
    let dir = tempfile::tempdir().unwrap();
    let sessions: &'static Path = Box::leak(dir.path().join("sessions").into_boxed_path());
    let opts = Options {
        sessions_dir: Some(sessions),
        ..Default::default()
    };
    let first = Running::start_with(Server::Agent, opts);
    block_on(async {
        let c = first.guest_client().await;
        call(
            &c,
            start_req(
                "long",
                &["sh", "-c", "echo before-restart; exec sleep 1000"],
            ),
        )
        .await
        .unwrap();
        let (_, mut logs) = c
            .session_stream(&Request::Logs {
                name: "long".into(),
                tail_lines: None,
                follow: true,
            })
            .await
            .unwrap();
        read_until(&mut logs, "before-restart").await;
    });
    drop(first); // kills the agent; its terminals close
    let second = Running::start_with(Server::Agent, opts);
    block_on(async {
        let c = second.guest_client().await;
        let info = call(
            &c,
            Request::Info {
                name: "long".into(),
            },
        )
        .await
        .unwrap();
        assert_eq!(info.state, SessionState::Ended);
        assert!(info.end_reason.unwrap().contains("restarted"));
        let (_, mut logs) = c
            .session_stream(&Request::Logs {
                name: "long".into(),
                tail_lines: None,
                follow: true,
            })
            .await
            .unwrap();
        read_until(&mut logs, "before-restart").await;
        assert_eq!(exit_of(&mut logs).await, SessionEvent::Exit(0));
    });
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(sessions).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
#[ignore = "needs root: the agent switches users"]
fn sigterm_records_running_sessions_as_ended_by_the_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let sessions: &'static Path = Box::leak(dir.path().join("sessions").into_boxed_path());
    let opts = Options {
        sessions_dir: Some(sessions),
        ..Default::default()
    };
    let mut first = Running::start_with(Server::Agent, opts);
    block_on(async {
        let c = first.guest_client().await;
        call(&c, start_req("long", &["sleep", "1000"]))
            .await
            .unwrap();
        call(&c, start_req("done", &["true"])).await.unwrap();
    });
    // What the guest's PID 1 does first when the VM shuts down.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while first.alive() {
        assert!(
            std::time::Instant::now() < until,
            "the agent ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(first);
    let second = Running::start_with(Server::Agent, opts);
    block_on(async {
        let c = second.guest_client().await;
        let long = call(
            &c,
            Request::Info {
                name: "long".into(),
            },
        )
        .await
        .unwrap();
        assert_eq!(long.state, SessionState::Ended);
        assert_eq!(
            long.end_reason.as_deref(),
            Some("the VM shut down while it ran")
        );
        let done = call(
            &c,
            Request::Info {
                name: "done".into(),
            },
        )
        .await
        .unwrap();
        assert_eq!(
            (done.state, done.exit_code),
            (SessionState::Exited, Some(0))
        );
    });
}
