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
    ($name:literal) => {{
        #[cfg(feature = "failpoints")]
        {
            if $crate::failpoint::armed($name) {
                $crate::failpoint::crash($name);
            }
        }
    }};
}
