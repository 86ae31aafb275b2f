//! The restart policy: what a session's end means and when to try again.
//!
//! Every way a session can end is an [`EndReason`]; [`EndReason::action`]
//! says what to do about it, and [`backoff`] says how long to wait before a
//! retry (capped exponential backoff with full jitter, as in AWS's
//! "Exponential Backoff And Jitter", 2015). [`Restarts`] keeps one session's
//! attempts and its restart budget (Erlang/OTP's restart intensity: at most
//! `max_restarts` within `window`), and resets the attempts after the session
//! has been connected for `reset_after` (as Kubernetes does after 10 min).
//! Time is passed in as Unix epoch ms and randomness as an `Rng`.

use std::collections::VecDeque;
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Why a session stopped being usable. Typed, so callers branch on the
/// variant rather than on substrings of error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The page lost WhatsApp's servers (`TIMEOUT`) and did not come back.
    ConnectionLost,
    /// The renderer crashed ("session deleted because of page crash").
    PageCrashed,
    /// Chromium went away (`invalid session id`, process gone).
    BrowserDied,
    /// chromedriver went away (connection refused).
    DriverDied,
    /// The WebDriver BiDi connection the page pushes its events through
    /// dropped while browser and chromedriver still answered.
    BidiLost,
    /// Too many heartbeats in a row went unanswered.
    HeartbeatMissed,
    /// A health check failed (the browser's memory over `health.memory.max`).
    HealthCheckFailed,
    /// The Session actor itself died (a panic closed its mailbox).
    ActorDied,
    /// The page did not load or never reached a known state in time.
    StartFailed,
    /// The phone logged this device out.
    PhoneLogout,
    /// WhatsApp revoked the device (`401 device_removed`).
    DeviceRemoved,
    /// The account was opened in another WhatsApp Web (`CONFLICT`).
    Conflict,
    /// Terms-of-service block (`TOS_BLOCK`, `SMB_TOS_BLOCK`, `PROXYBLOCK`).
    TosBlock,
    /// Reach-out timelock (error 463): stop sending to new chats.
    Timelock,
    /// WhatsApp refuses this client version (`DEPRECATED_VERSION`).
    DeprecatedVersion,
}

/// What the supervisor does about an [`EndReason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Something that can heal: restart the browser on the same profile
    /// after a [`backoff`] delay.
    RestartWithBackoff,
    /// The credentials are void: never retry them. Wipe the profile, go
    /// `LOGGED_OUT`, then offer a fresh QR.
    Relink,
    /// Opened elsewhere: stay in `CONFLICT` (or take over, per config).
    Conflict,
    /// A human must act: `BLOCKED`, no retries.
    Block,
    /// A human must act: `FAILED`, no retries.
    Fail,
}

impl EndReason {
    /// The action this reason calls for.
    pub fn action(self) -> Action {
        use EndReason::*;
        match self {
            ConnectionLost | PageCrashed | BrowserDied | DriverDied | BidiLost | HeartbeatMissed | HealthCheckFailed | ActorDied
            | StartFailed => Action::RestartWithBackoff,
            PhoneLogout | DeviceRemoved => Action::Relink,
            Conflict => Action::Conflict,
            TosBlock | Timelock => Action::Block,
            DeprecatedVersion => Action::Fail,
        }
    }

    /// The snake_case name used in history, logs and the API's `reason`.
    pub fn as_str(self) -> &'static str {
        use EndReason::*;
        match self {
            ConnectionLost => "connection_lost",
            PageCrashed => "page_crashed",
            BrowserDied => "browser_died",
            DriverDied => "driver_died",
            BidiLost => "bidi_lost",
            HeartbeatMissed => "heartbeat_missed",
            HealthCheckFailed => "health_check_failed",
            ActorDied => "actor_died",
            StartFailed => "start_failed",
            PhoneLogout => "phone_logout",
            DeviceRemoved => "device_removed",
            Conflict => "conflict",
            TosBlock => "tos_block",
            Timelock => "timelock",
            DeprecatedVersion => "deprecated_version",
        }
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The restart policy's settings (`[restart]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// Restarts allowed within `window`; one more makes the session `FAILED`.
    pub max_restarts: u32,
    pub window: Duration,
    /// Connected this long, the attempts start again from 0.
    pub reset_after: Duration,
}

/// What the supervisor does after an end, decided by [`Restarts::on_end`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Restart after `delay`; this is retry number `attempt` (1-based).
    Restart { delay: Duration, attempt: u32 },
    /// The budget is spent: `FAILED`, no more automatic restarts.
    GiveUp,
    /// Wipe the credentials, `LOGGED_OUT`, offer a new QR.
    Relink,
    /// Stay in `CONFLICT` (or take over, per config).
    Conflict,
    /// `BLOCKED`, no retries.
    Block,
    /// `FAILED`, no retries.
    Fail,
}

/// One session's restart history: attempts since it was last healthy and
/// the restarts inside the budget window.
#[derive(Debug, Clone, Default)]
pub struct Restarts {
    attempt: u32,
    /// When each restart of the current window was scheduled, epoch ms.
    recent: VecDeque<u64>,
    connected_since_ms: Option<u64>,
}

impl Restarts {
    /// Attempts since the session was last healthy for `reset_after`.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Restarts scheduled within `window` before `now_ms`.
    pub fn in_window(&self, policy: &Policy, now_ms: u64) -> u32 {
        self.recent.iter().filter(|&&t| inside(policy.window, t, now_ms)).count() as u32
    }

    /// The session reached `CONNECTED` at `now_ms`.
    pub fn on_connected(&mut self, now_ms: u64) {
        self.connected_since_ms.get_or_insert(now_ms);
    }

    /// The session is no longer connected (any other state) at `now_ms`.
    /// A connection that lasted `reset_after` resets the attempts.
    pub fn on_disconnected(&mut self, policy: &Policy, now_ms: u64) {
        if let Some(since) = self.connected_since_ms.take() {
            if now_ms.saturating_sub(since) >= policy.reset_after.as_millis() as u64 {
                self.attempt = 0;
            }
        }
    }

    /// The session ended for `reason` at `now_ms`: what to do.
    pub fn on_end(&mut self, policy: &Policy, reason: EndReason, now_ms: u64, rng: &mut impl Rng) -> Decision {
        self.on_disconnected(policy, now_ms);
        match reason.action() {
            Action::RestartWithBackoff => {
                forget_outside(&mut self.recent, policy.window, now_ms);
                if self.recent.len() as u32 >= policy.max_restarts {
                    return Decision::GiveUp;
                }
                self.recent.push_back(now_ms);
                let delay = backoff(self.attempt, policy.backoff_base, policy.backoff_cap, rng);
                self.attempt = self.attempt.saturating_add(1);
                Decision::Restart { delay, attempt: self.attempt }
            }
            Action::Relink => {
                self.attempt = 0;
                Decision::Relink
            }
            Action::Conflict => Decision::Conflict,
            Action::Block => Decision::Block,
            Action::Fail => Decision::Fail,
        }
    }

    /// An operator recovered the session: budget and attempts start afresh.
    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

/// Whether a time `t_ms` is inside the `window` that ends at `now_ms`
/// (epoch ms).
fn inside(window: Duration, t_ms: u64, now_ms: u64) -> bool {
    match now_ms.checked_sub(u64::try_from(window.as_millis()).unwrap_or(u64::MAX)) {
        Some(cutoff) => t_ms > cutoff,
        None => true,
    }
}

/// Drops from the front of `times` (epoch ms, oldest first) those no longer
/// inside the `window` that ends at `now_ms`.
pub(crate) fn forget_outside(times: &mut VecDeque<u64>, window: Duration, now_ms: u64) {
    while times.front().is_some_and(|&t| !inside(window, t, now_ms)) {
        times.pop_front();
    }
}

/// The most a retry after `attempt` earlier failures may wait:
/// `min(cap, base · 2^attempt)`, saturating.
pub fn ceiling(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(cap).min(cap)
}

/// Full-jitter backoff: a uniform random delay in `[0, ceiling(attempt)]`.
pub fn backoff(attempt: u32, base: Duration, cap: Duration, rng: &mut impl Rng) -> Duration {
    let ceil = ceiling(attempt, base, cap);
    Duration::from_nanos(rng.gen_range(0..=ceil.as_nanos().min(u64::MAX as u128) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    const BASE: Duration = Duration::from_secs(5);
    const CAP: Duration = Duration::from_secs(300);

    #[test]
    fn ceiling_doubles_until_the_cap() {
        let c: Vec<_> = (0..8).map(|a| ceiling(a, BASE, CAP).as_secs()).collect();
        assert_eq!(c, [5, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(ceiling(u32::MAX, BASE, CAP), CAP);
    }

    #[test]
    fn credentials_are_never_retried() {
        assert_eq!(EndReason::PhoneLogout.action(), Action::Relink);
        assert_eq!(EndReason::DeviceRemoved.action(), Action::Relink);
        assert_eq!(EndReason::TosBlock.action(), Action::Block);
        assert_eq!(EndReason::BrowserDied.action(), Action::RestartWithBackoff);
    }

    fn policy(max_restarts: u32) -> Policy {
        Policy {
            backoff_base: BASE,
            backoff_cap: CAP,
            max_restarts,
            window: Duration::from_secs(3600),
            reset_after: Duration::from_secs(600),
        }
    }

    const ALL: [EndReason; 14] = [
        EndReason::ConnectionLost,
        EndReason::PageCrashed,
        EndReason::BrowserDied,
        EndReason::DriverDied,
        EndReason::HeartbeatMissed,
        EndReason::HealthCheckFailed,
        EndReason::ActorDied,
        EndReason::StartFailed,
        EndReason::PhoneLogout,
        EndReason::DeviceRemoved,
        EndReason::Conflict,
        EndReason::TosBlock,
        EndReason::Timelock,
        EndReason::DeprecatedVersion,
    ];

    proptest! {
        #[test]
        fn every_delay_is_within_zero_and_the_ceiling(attempt in 0u32..100, seed: u64) {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let d = backoff(attempt, BASE, CAP, &mut rng);
            prop_assert!(d <= ceiling(attempt, BASE, CAP));
            prop_assert!(d <= CAP);
        }

        #[test]
        fn the_ceiling_doubles_until_the_cap(base_ms in 1u64..10_000, cap_factor in 1u64..1000, attempt in 0u32..40) {
            let base = Duration::from_millis(base_ms);
            let cap = base * cap_factor as u32;
            let c = ceiling(attempt, base, cap);
            let next = ceiling(attempt + 1, base, cap);
            prop_assert!(c <= cap);
            prop_assert!(next == cap || next == c * 2);
        }

        #[test]
        fn the_budget_trips_exactly_at_max_restarts_plus_one(max in 1u32..20, gap_ms in 0u64..(3_600_000 / 21), seed: u64) {
            let p = policy(max);
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut r = Restarts::default();
            for i in 0..max {
                let d = r.on_end(&p, EndReason::BrowserDied, 1_000_000 + i as u64 * gap_ms, &mut rng);
                let is_restart = matches!(d, Decision::Restart { .. });
                prop_assert!(is_restart, "end {} of {}: {:?}", i + 1, max, d);
            }
            let d = r.on_end(&p, EndReason::BrowserDied, 1_000_000 + max as u64 * gap_ms, &mut rng);
            prop_assert_eq!(d, Decision::GiveUp);
        }

        #[test]
        fn the_budget_does_not_trip_across_windows(max in 1u32..10, ends in 1usize..60, seed: u64) {
            // One end per window-and-a-bit: never more than one in a window.
            let p = policy(max);
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut r = Restarts::default();
            for i in 0..ends {
                let now = i as u64 * (p.window.as_millis() as u64 + 1);
                let d = r.on_end(&p, EndReason::ConnectionLost, now, &mut rng);
                let is_restart = matches!(d, Decision::Restart { .. });
                prop_assert!(is_restart, "end {}: {:?}", i, d);
                prop_assert_eq!(r.in_window(&p, now), 1);
            }
        }

        #[test]
        fn attempts_reset_after_a_healthy_period(fails in 1u32..8, healthy_ms in 0u64..1_200_000, seed: u64) {
            let p = policy(100);
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut r = Restarts::default();
            let mut now = 0;
            for _ in 0..fails {
                now += 1000;
                r.on_end(&p, EndReason::BrowserDied, now, &mut rng);
            }
            prop_assert_eq!(r.attempt(), fails);
            r.on_connected(now);
            now += healthy_ms;
            let d = r.on_end(&p, EndReason::BrowserDied, now, &mut rng);
            let expected = if healthy_ms >= 600_000 { 1 } else { fails + 1 };
            prop_assert_eq!(d.clone_attempt(), Some(expected));
            if healthy_ms >= 600_000 {
                let ceiling_after_reset = ceiling(0, BASE, CAP);
                let within = matches!(d, Decision::Restart { delay, .. } if delay <= ceiling_after_reset);
                prop_assert!(within, "delay after reset above the first ceiling: {:?}", d);
            }
        }

        #[test]
        fn terminal_reasons_never_schedule_a_restart(i in 8usize..14, earlier in 0u32..5, seed: u64) {
            let p = policy(10);
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut r = Restarts::default();
            for k in 0..earlier {
                r.on_end(&p, EndReason::BrowserDied, k as u64, &mut rng);
            }
            let d = r.on_end(&p, ALL[i], 10_000, &mut rng);
            let scheduled = matches!(d, Decision::Restart { .. } | Decision::GiveUp);
            prop_assert!(!scheduled, "{:?} -> {:?}", ALL[i], d);
            prop_assert_eq!(r.in_window(&p, 10_000), earlier, "no restart was counted");
        }
    }

    impl Decision {
        fn clone_attempt(&self) -> Option<u32> {
            match self {
                Decision::Restart { attempt, .. } => Some(*attempt),
                _ => None,
            }
        }
    }

    #[test]
    fn recover_clears_the_budget() {
        let p = policy(2);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut r = Restarts::default();
        r.on_end(&p, EndReason::BrowserDied, 1, &mut rng);
        r.on_end(&p, EndReason::BrowserDied, 2, &mut rng);
        assert_eq!(r.on_end(&p, EndReason::BrowserDied, 3, &mut rng), Decision::GiveUp);
        r.clear();
        assert!(matches!(r.on_end(&p, EndReason::BrowserDied, 4, &mut rng), Decision::Restart { attempt: 1, .. }));
    }
}
