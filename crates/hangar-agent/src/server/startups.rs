//! A cap on connections that have not logged in yet (OpenSSH's
//! `MaxStartups START:RATE:FULL`, same default 10:30:100). Below START
//! every connection is taken; from START on, a new one is dropped with a
//! probability that rises from RATE% to 100% at FULL. So a flood of idle
//! handshakes (each held up to the login grace time) cannot exhaust the
//! guest's memory and file descriptors, and a real client still has a
//! chance to get in during one.

use std::hash::{BuildHasher, Hasher};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxStartups {
    pub start: usize,
    /// Percent, 1-100.
    pub rate: u32,
    pub full: usize,
}

impl Default for MaxStartups {
    fn default() -> Self {
        MaxStartups {
            start: 10,
            rate: 30,
            full: 100,
        }
    }
}

impl FromStr for MaxStartups {
    type Err = String;

    /// `START:RATE:FULL`, or a bare number N meaning N:100:N (sshd's forms).
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not START:RATE:FULL (e.g. 10:30:100) or a number");
        let nums: Vec<usize> = s
            .split(':')
            .map(|p| p.parse::<usize>().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        let m = match nums[..] {
            [n] => MaxStartups {
                start: n,
                rate: 100,
                full: n,
            },
            [start, rate, full] => MaxStartups {
                start,
                rate: u32::try_from(rate).map_err(|_| bad())?,
                full,
            },
            _ => return Err(bad()),
        };
        if m.start == 0 || m.full < m.start || !(1..=100).contains(&m.rate) {
            return Err(format!(
                "{s:?}: START must be at least 1, FULL at least START, RATE 1-100"
            ));
        }
        Ok(m)
    }
}

/// The count of connections not logged in yet.
#[derive(Debug)]
pub struct Startups {
    limits: MaxStartups,
    pending: AtomicUsize,
}

/// One connection's place among the pending ones; dropping it (at login,
/// or when the connection ends) frees the place.
#[derive(Debug)]
pub struct Slot(Arc<Startups>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Startups {
    pub fn new(limits: MaxStartups) -> Arc<Startups> {
        Arc::new(Startups {
            limits,
            pending: AtomicUsize::new(0),
        })
    }

    /// A slot for a new connection, or `None` to drop it. `roll` is a
    /// uniform number in 0..100.
    pub fn admit_with(self: &Arc<Self>, roll: u32) -> Option<Slot> {
        let n = self.pending.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(Arc::clone(self));
        let MaxStartups { start, rate, full } = self.limits;
        if n < start {
            return Some(slot);
        }
        if n >= full {
            return None;
        }
        // Linear from `rate` at START to 100 at FULL.
        let span = (full - start) as u64;
        let p = u64::from(rate) + (100 - u64::from(rate)) * (n - start) as u64 / span.max(1);
        (u64::from(roll) >= p).then_some(slot)
    }

    pub fn admit(self: &Arc<Self>) -> Option<Slot> {
        // Not security sensitive: it only spreads drops; std's random
        // hasher keys are enough.
        let roll = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
            % 100;
        self.admit_with(roll as u32)
    }

    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_sshds_forms_and_refuses_nonsense() {
        assert_eq!("10:30:100".parse(), Ok(MaxStartups::default()));
        assert_eq!(
            "3".parse(),
            Ok(MaxStartups {
                start: 3,
                rate: 100,
                full: 3
            })
        );
        for bad in [
            "",
            "0",
            "5:30",
            "10:0:100",
            "10:101:100",
            "10:30:5",
            "a:b:c",
        ] {
            assert!(bad.parse::<MaxStartups>().is_err(), "{bad}");
        }
    }

    #[test]
    fn below_start_all_are_taken_at_full_none_and_slots_free_their_place() {
        let s = Startups::new("2:50:4".parse().unwrap());
        let a = s.admit_with(0).unwrap();
        let _b = s.admit_with(0).unwrap();
        // Third: p = 50%: a roll of 49 is dropped, 50 taken.
        assert!(s.admit_with(49).is_none());
        assert_eq!(s.pending(), 2, "a dropped connection holds nothing");
        let _c = s.admit_with(50).unwrap();
        // Fourth: p = 75%.
        assert!(s.admit_with(74).is_none());
        let _d = s.admit_with(75).unwrap();
        // At FULL, even the luckiest roll is dropped.
        assert!(s.admit_with(99).is_none());
        drop(a);
        assert_eq!(s.pending(), 3);
        assert!(s.admit_with(99).is_some());
    }
}
