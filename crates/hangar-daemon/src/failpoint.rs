//! Crash points for the fault suite (`crates/hangar/tests/faults.rs`).
//!
//! `crash_point!("create.after_tap")` marks a step of a long operation. In
//! a build with the `failpoints` feature, a daemon started with
//! `FAILPOINTS=create.after_tap=return` SIGKILLs itself when it gets
//! there: a real `kill -9` at that step, so the next daemon's recovery is
//! tested against exactly what a crash leaves. Without the feature the
//! macro expands to nothing and `FAILPOINTS` is never read.

/// Sets up the points named in `FAILPOINTS` (feature `failpoints` only).
/// Held for the daemon's life.
#[cfg(feature = "failpoints")]
pub fn setup() -> Option<fail::FailScenario<'static>> {
    let scenario = fail::FailScenario::setup();
    let points = fail::list();
    if !points.is_empty() {
        tracing::warn!(?points, "crash points armed (FAILPOINTS)");
    }
    Some(scenario)
}

/// Without the feature there is nothing to set up.
#[cfg(not(feature = "failpoints"))]
pub fn setup() -> Option<()> {
    None
}

/// Whether the crash point `name` is armed.
#[cfg(feature = "failpoints")]
pub fn armed(name: &str) -> bool {
    fail::eval(name, |_| ()).is_some()
}

/// Kills this process with SIGKILL: nothing runs after it (no drop, no
/// undo, no flush beyond what the kernel already has), as with `kill -9`.
#[cfg(feature = "failpoints")]
pub fn crash(name: &str) -> ! {
    tracing::error!(point = name, "crash point reached: SIGKILL");
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    // SIGKILL cannot be caught; should raise fail, still never go on.
    std::process::abort()
}

/// Marks a step where the fault suite kills the daemon (`kill -9`) when
/// the point is armed. A no-op unless built with `failpoints`.
#[macro_export]
macro_rules! crash_point {
    ($name:expr) => {{
        #[cfg(feature = "failpoints")]
        {
            if $crate::failpoint::armed($name) {
                $crate::failpoint::crash($name);
            }
        }
    }};
}

/// How long the pause point `name` waits, when armed (`return(MS)`;
/// 3000 ms without an argument).
#[cfg(feature = "failpoints")]
pub fn pause_ms(name: &str) -> Option<u64> {
    fail::eval(name, |arg| arg.and_then(|a| a.parse().ok()).unwrap_or(3000))
}

/// Marks a place where a race test holds one request back: armed with
/// `FAILPOINTS=<name>=1*return(MS)`, the first request to get there logs
/// `pause point reached` and waits MS ms (without blocking the runtime).
/// A no-op unless built with `failpoints`.
#[macro_export]
macro_rules! pause_point {
    ($name:literal) => {{
        #[cfg(feature = "failpoints")]
        {
            if let Some(ms) = $crate::failpoint::pause_ms($name) {
                tracing::warn!(point = $name, ms, "pause point reached");
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
        }
    }};
}
