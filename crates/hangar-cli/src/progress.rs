//! A byte counter for copies (`hangar cp`): on a terminal, a line with the
//! bytes so far and the rate, redrawn in place, then a summary; nothing
//! when standard error is not a terminal.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

/// Copies shorter than this print no summary line.
const QUIET_BELOW: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Progress {
    bar: ProgressBar,
    started: Instant,
}

impl Progress {
    pub fn start(what: &str) -> Progress {
        let bar = if std::io::stderr().is_terminal() {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{spinner} {msg} {bytes} ({bytes_per_sec})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b.set_message(what.to_string());
            b.enable_steady_tick(Duration::from_millis(200));
            b
        } else {
            ProgressBar::hidden()
        };
        Progress {
            bar,
            started: Instant::now(),
        }
    }

    pub fn add(&self, n: u64) {
        self.bar.inc(n);
    }

    /// Clears the line; after a long copy, leaves a summary in its place.
    pub fn finish(&self, ok: bool) {
        if self.bar.is_hidden() {
            return;
        }
        self.bar.finish_and_clear();
        let took = self.started.elapsed();
        if ok && took >= QUIET_BELOW {
            let bytes = self.bar.position();
            let rate = bytes as f64 / took.as_secs_f64().max(1e-3);
            eprintln!(
                "copied {} in {:.1} s ({}/s)",
                HumanBytes(bytes),
                took.as_secs_f64(),
                HumanBytes(rate as u64)
            );
        }
    }
}
