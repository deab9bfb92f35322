use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::*;

fn sh(script: &str) -> Tool {
    Tool::new("sh").arg("-c").arg(script)
}

/// A script that starts `sleep 60` in the background, writes its pid to
/// `pidfile` and waits: a tool with a child of its own.
fn with_grandchild(pidfile: &Path) -> Tool {
    sh(&format!(
        "sleep 60 & echo $! > {}.tmp; mv {0}.tmp {0}; wait",
        pidfile.display()
    ))
}

fn read_pid(pidfile: &Path) -> i32 {
    std::fs::read_to_string(pidfile)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid")
}

/// Waits for `pidfile` to appear (the tool has started its child).
async fn pid_when_written(pidfile: &Path) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pidfile.exists() {
        assert!(Instant::now() < deadline, "the tool never wrote its pid");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    read_pid(pidfile)
}

/// True once `pid` is gone or a zombie, waiting up to 5 s for the kill to
/// land.
fn dies(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false);
        if !alive {
            return true;
        }
        if Instant::now() > deadline {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test]
async fn run_captures_stdout_and_stderr_apart() {
    let out = sh("echo out; echo err >&2").run().await.unwrap();

    assert!(out.status.success());
    assert_eq!(out.stdout, "out\n");
    assert_eq!(out.stderr, "err\n");
}

#[tokio::test]
async fn run_failure_carries_command_status_and_trimmed_stderr() {
    let err = sh("echo nope >&2; exit 2").run().await.unwrap_err();

    assert_eq!(
        err.to_string(),
        "Command `sh -c echo nope >&2; exit 2` failed (exit status: 2): nope"
    );
    assert_eq!(err.output(), Some("nope"));
}

#[tokio::test]
async fn run_accepts_listed_nonzero_codes_only() {
    assert!(sh("exit 1").ok_codes(&[0, 1]).run().await.is_ok());
    assert!(sh("exit 4").ok_codes(&[0, 1]).run().await.is_err());
}

#[tokio::test]
async fn run_feeds_stdin_larger_than_a_pipe_buffer() {
    let input = "x".repeat(1 << 20);

    let out = Tool::new("cat").stdin(input.clone()).run().await.unwrap();

    assert_eq!(out.stdout, input);
}

#[tokio::test]
async fn run_passes_the_environment() {
    let out = sh("echo $HANGAR_T")
        .env("HANGAR_T", "v")
        .run()
        .await
        .unwrap();

    assert_eq!(out.stdout, "v\n");
}

#[tokio::test]
async fn run_of_a_missing_binary_is_a_spawn_error_naming_it() {
    let err = Tool::new("/nonexistent/tool")
        .arg("-x")
        .run()
        .await
        .unwrap_err();

    assert!(err.is_spawn());
    assert_eq!(err.to_string(), "Cannot run `/nonexistent/tool -x`");
}

#[tokio::test]
async fn run_past_its_time_limit_kills_the_tool_and_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");

    let err = with_grandchild(&pidfile)
        .timeout(Duration::from_millis(300))
        .run()
        .await
        .unwrap_err();

    assert!(matches!(err, ToolError::TimedOut { .. }), "{err}");
    assert!(dies(read_pid(&pidfile)), "the tool's child survived");
}

#[tokio::test]
async fn run_cancelled_kills_the_tool_and_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let cancel = CancellationToken::new();
    let run = with_grandchild(&pidfile).cancel_on(&cancel).run();
    let cancel_once_started = async {
        let pid = pid_when_written(&pidfile).await;
        cancel.cancel();
        pid
    };

    let (result, pid) = tokio::join!(run, cancel_once_started);

    assert!(matches!(result, Err(ToolError::Cancelled { .. })));
    assert!(dies(pid), "the tool's child survived");
}

#[tokio::test]
async fn dropping_a_run_kills_the_tool_and_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let run = with_grandchild(&pidfile).run();

    let pid = tokio::select! {
        _ = run => panic!("the tool ended by itself"),
        pid = pid_when_written(&pidfile) => pid,
    };

    assert!(dies(pid), "the tool's child survived");
}

#[tokio::test]
async fn run_returns_when_a_child_keeps_the_pipes_open() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let began = Instant::now();

    let out = sh(&format!(
        "sleep 60 & echo $! > {}; echo done",
        pidfile.display()
    ))
    .run()
    .await
    .unwrap();

    assert_eq!(out.stdout, "done\n");
    assert!(began.elapsed() < Duration::from_secs(30));
    let pid = read_pid(&pidfile);
    let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
}

#[test]
fn blocking_run_captures_and_feeds_stdin() {
    let out = Tool::new("cat").stdin("abc").run_blocking().unwrap();

    assert_eq!(out.stdout, "abc");
}

#[test]
fn blocking_failure_carries_command_status_and_trimmed_stderr() {
    let err = sh("echo boom >&2; exit 3").run_blocking().unwrap_err();

    assert_eq!(
        err.to_string(),
        "Command `sh -c echo boom >&2; exit 3` failed (exit status: 3): boom"
    );
}

#[test]
fn blocking_run_past_its_time_limit_kills_the_tool_and_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");

    let err = with_grandchild(&pidfile)
        .timeout(Duration::from_millis(300))
        .run_blocking()
        .unwrap_err();

    assert!(matches!(err, ToolError::TimedOut { .. }), "{err}");
    assert!(dies(read_pid(&pidfile)), "the tool's child survived");
}

#[test]
fn blocking_run_cancelled_kills_the_tool_and_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let cancel = CancellationToken::new();
    let canceller = {
        let (cancel, pidfile) = (cancel.clone(), pidfile.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            rt.block_on(pid_when_written(&pidfile));
            cancel.cancel();
        })
    };

    let err = with_grandchild(&pidfile)
        .cancel_on(&cancel)
        .run_blocking()
        .unwrap_err();

    canceller.join().unwrap();
    assert!(matches!(err, ToolError::Cancelled { .. }), "{err}");
    assert!(dies(read_pid(&pidfile)), "the tool's child survived");
}

#[test]
fn capture_returns_stdout_then_stderr_whatever_the_exit_status() {
    let out = capture_blocking(
        Path::new("sh"),
        &["-c", "echo out; echo err >&2; exit 3"],
        Duration::from_secs(5),
    )
    .unwrap();

    assert_eq!(out, "out\nerr\n");
}

#[test]
fn capture_of_a_missing_binary_names_it() {
    let e =
        capture_blocking(Path::new("/nonexistent/tool"), &[], Duration::from_secs(1)).unwrap_err();

    assert_eq!(e.to_string(), "Cannot run `/nonexistent/tool`");
}

#[tokio::test]
async fn streaming_reports_each_trimmed_line_of_both_pipes() {
    let seen = Mutex::new(Vec::new());
    let note = |l: &str| seen.lock().unwrap().push(l.to_string());

    sh("echo '  one '; echo two >&2; echo; printf three")
        .run_streaming(&note)
        .await
        .unwrap();

    let mut seen = seen.into_inner().unwrap();
    seen.sort();
    assert_eq!(seen, ["one", "three", "two"]);
}

#[tokio::test]
async fn streaming_failure_reports_the_last_lines() {
    let err = sh("for i in $(seq 1 20); do echo l$i; done; exit 3")
        .run_streaming(&|_| {})
        .await
        .unwrap_err();

    assert_eq!(
        err.output(),
        Some("l13 | l14 | l15 | l16 | l17 | l18 | l19 | l20")
    );
}

#[tokio::test]
async fn streaming_cancelled_kills_the_tool_and_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let cancel = CancellationToken::new();
    let run = with_grandchild(&pidfile)
        .cancel_on(&cancel)
        .run_streaming(&|_| {});
    let cancel_once_started = async {
        let pid = pid_when_written(&pidfile).await;
        cancel.cancel();
        pid
    };

    let (result, pid) = tokio::join!(run, cancel_once_started);

    assert!(matches!(result, Err(ToolError::Cancelled { .. })));
    assert!(dies(pid), "the tool's child survived");
}

#[test]
fn command_line_joins_program_and_arguments() {
    let t = Tool::new("ip").args(["-n", "ns"]).arg("link");

    assert_eq!(t.command_line(), "ip -n ns link");
}
