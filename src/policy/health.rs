//! Health verdicts: is this session healthy? Pure; the Session actor reads
//! the page, the profile and `/proc`, and asks these functions.
//!
//! - Heartbeat: every `heartbeat.interval` the page's connection state is
//!   read; `heartbeat.failures` misses in a row are one failure, and a single
//!   odd read never is (the seeds' 30 s heartbeat, "reconnect after 3
//!   failures").
//! - Key files: more than `health.key_files.max` files under the session's
//!   key store means stale keys are piling up; the `device_removed`
//!   post-mortem saw WhatsApp revoke a device after that (> 100 files).
//! - Memory: the browser's process tree PSS over `health.memory.max`
//!   recycles the browser (PM2's `max_memory_restart`).

use crate::whatsapp::page::SocketState;

/// What one heartbeat shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    Healthy,
    /// A miss, `in_a_row` counting this one, below the failure threshold.
    Missed {
        in_a_row: u32,
    },
    /// `failures` misses in a row: one failure. The counter starts again.
    Failed,
}

/// Counts heartbeat misses in a row.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    failures: u32,
    misses: u32,
}

impl Heartbeat {
    /// `failures`: misses in a row that make one failure (at least 1).
    pub fn new(failures: u32) -> Self {
        Self { failures: failures.max(1), misses: 0 }
    }

    /// Records one heartbeat: `healthy` is whether the page answered and
    /// its state is a settled one ([`settled`]).
    pub fn beat(&mut self, healthy: bool) -> Beat {
        if healthy {
            self.misses = 0;
            return Beat::Healthy;
        }
        self.misses += 1;
        if self.misses >= self.failures {
            self.misses = 0;
            Beat::Failed
        } else {
            Beat::Missed { in_a_row: self.misses }
        }
    }
}

/// Whether a page connection state (`Socket.state`) is settled: connected,
/// or waiting for a human (a QR, a conflict). `OPENING`, `PAIRING`,
/// `TIMEOUT` and `UNLAUNCHED` are on the way somewhere; seen at heartbeat
/// after heartbeat, they mean the page is not getting there by itself.
pub fn settled(state: &SocketState) -> bool {
    matches!(state, SocketState::Connected | SocketState::Unpaired | SocketState::UnpairedIdle | SocketState::Conflict)
}

/// The key-file count against its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFiles {
    Ok,
    Over { count: u64, max: u64 },
}

pub fn key_files(count: u64, max: u64) -> KeyFiles {
    if count > max {
        KeyFiles::Over { count, max }
    } else {
        KeyFiles::Ok
    }
}

/// Whether the browser's PSS (bytes) is over the limit (bytes).
pub fn memory_over(pss_bytes: u64, max_bytes: u64) -> bool {
    pss_bytes > max_bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_odd_read_never_fails() {
        let mut h = Heartbeat::new(3);
        assert_eq!(h.beat(false), Beat::Missed { in_a_row: 1 });
        assert_eq!(h.beat(true), Beat::Healthy);
        assert_eq!(h.beat(false), Beat::Missed { in_a_row: 1 });
        assert_eq!(h.beat(false), Beat::Missed { in_a_row: 2 });
        assert_eq!(h.beat(false), Beat::Failed);
        assert_eq!(h.beat(false), Beat::Missed { in_a_row: 1 }, "counting starts again");
    }

    proptest! {
        #[test]
        fn a_failure_needs_exactly_failures_misses_in_a_row(failures in 1u32..10, beats in proptest::collection::vec(any::<bool>(), 0..100)) {
            let mut h = Heartbeat::new(failures);
            let mut run = 0;
            for healthy in beats {
                let b = h.beat(healthy);
                run = if healthy { 0 } else { run + 1 };
                if run == failures {
                    prop_assert_eq!(b, Beat::Failed);
                    run = 0;
                } else {
                    prop_assert_ne!(b, Beat::Failed);
                }
            }
        }
    }

    #[test]
    fn verdicts() {
        assert_eq!(key_files(100, 100), KeyFiles::Ok);
        assert_eq!(key_files(101, 100), KeyFiles::Over { count: 101, max: 100 });
        assert!(memory_over(2, 1) && !memory_over(1, 1));
        let s = |name: &str| settled(&SocketState::from(name));
        assert!(s("CONNECTED") && s("UNPAIRED_IDLE") && !s("TIMEOUT") && !s("OPENING") && !s("SOMETHING_NEW"));
    }
}
