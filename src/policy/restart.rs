//! The restart policy: what a session's end means and when to try again.
//!
//! Every way a session can end is an [`EndReason`]; [`EndReason::action`]
//! says what to do about it, and [`backoff`] says how long to wait before a
//! retry (capped exponential backoff with full jitter, as in AWS's
//! "Exponential Backoff And Jitter", 2015).

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
    /// Too many heartbeats in a row went unanswered.
    HeartbeatMissed,
    /// A health check (key files, memory) failed.
    HealthCheckFailed,
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
            ConnectionLost | PageCrashed | BrowserDied | DriverDied | HeartbeatMissed
            | HealthCheckFailed | StartFailed => Action::RestartWithBackoff,
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
            HeartbeatMissed => "heartbeat_missed",
            HealthCheckFailed => "health_check_failed",
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

    proptest! {
        #[test]
        fn every_delay_is_within_zero_and_the_ceiling(attempt in 0u32..100, seed: u64) {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let d = backoff(attempt, BASE, CAP, &mut rng);
            prop_assert!(d <= ceiling(attempt, BASE, CAP));
            prop_assert!(d <= CAP);
        }
    }
}
