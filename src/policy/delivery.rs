//! The webhook delivery policy: what one attempt's answer means for a
//! delivery, and when to try it again.
//!
//! - A 2xx answer delivers it.
//! - A 4xx other than 408 (Request Timeout) and 429 (Too Many Requests)
//!   means the receiver refuses this body: retrying the same bytes cannot
//!   help, so it goes straight to the dead letters.
//! - Anything else (no answer, a timeout, 408, 429, 5xx, an unexpected 1xx
//!   or 3xx) is retried after a capped exponential backoff with full jitter,
//!   `random(0, min(cap, base · 2^(attempts − 1)))` (the same curve as the
//!   restart policy, [`super::restart::backoff`]), but never sooner than a
//!   `Retry-After` the receiver sent, and never later than the end of
//!   `retry_for`, counted from when the delivery was made. The last attempt
//!   is at that end; if it fails too, the delivery goes to the dead letters.
//!
//! Pure: the elapsed time and the randomness are arguments.

use std::time::Duration;

use rand::Rng;

/// `[webhook_delivery]`'s retry settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// How long after its first attempt a delivery is still retried.
    pub retry_for: Duration,
    /// The first retry waits up to this long.
    pub backoff_base: Duration,
    /// No retry waits longer than this (a `Retry-After` aside).
    pub backoff_cap: Duration,
}

/// What one attempt got back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// An HTTP status, with the `Retry-After` it came with, if any.
    Status { code: u16, retry_after: Option<Duration> },
    /// No HTTP answer: refused connection, DNS failure, timeout, reset.
    NoAnswer,
}

/// Why a delivery went to the dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadReason {
    /// The receiver answered this 4xx (not 408 or 429).
    Refused(u16),
    /// `retry_for` passed without a 2xx.
    Expired,
}

/// What to do with a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Done: remove it from the outbox.
    Delivered,
    /// Try again after `delay`.
    Retry { delay: Duration },
    /// Give up: move it to the dead letters.
    Dead(DeadReason),
}

/// How a status is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Success,
    /// The receiver refuses the body: no retry.
    Permanent,
    /// May work later.
    Transient,
}

/// The class of an HTTP status (see the module docs).
pub fn classify(code: u16) -> Class {
    match code {
        200..=299 => Class::Success,
        408 | 429 => Class::Transient,
        400..=499 => Class::Permanent,
        _ => Class::Transient,
    }
}

/// The verdict after an attempt that got `answer`, when `attempts` attempts
/// (this one included, so at least 1) have been made and `elapsed` has
/// passed since the first.
pub fn decide(policy: &RetryPolicy, answer: Answer, attempts: u32, elapsed: Duration, rng: &mut impl Rng) -> Verdict {
    let retry_after = match answer {
        Answer::Status { code, retry_after } => match classify(code) {
            Class::Success => return Verdict::Delivered,
            Class::Permanent => return Verdict::Dead(DeadReason::Refused(code)),
            Class::Transient => retry_after,
        },
        Answer::NoAnswer => None,
    };
    let Some(left) = policy.retry_for.checked_sub(elapsed).filter(|left| !left.is_zero()) else {
        return Verdict::Dead(DeadReason::Expired);
    };
    let jittered = super::restart::backoff(attempts.saturating_sub(1), policy.backoff_base, policy.backoff_cap, rng);
    let delay = jittered.max(retry_after.unwrap_or_default()).min(left);
    Verdict::Retry { delay }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    const POLICY: RetryPolicy =
        RetryPolicy { retry_for: Duration::from_secs(3600), backoff_base: Duration::from_secs(1), backoff_cap: Duration::from_secs(60) };

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(7)
    }

    fn status(code: u16) -> Answer {
        Answer::Status { code, retry_after: None }
    }

    #[test]
    fn statuses_are_classified() {
        for code in [200, 201, 202, 204, 299] {
            assert_eq!(classify(code), Class::Success, "{code}");
        }
        for code in [400, 401, 403, 404, 410, 413, 422, 499] {
            assert_eq!(classify(code), Class::Permanent, "{code}");
        }
        for code in [408, 429, 500, 502, 503, 504, 100, 301, 302, 307] {
            assert_eq!(classify(code), Class::Transient, "{code}");
        }
    }

    #[test]
    fn a_2xx_delivers_and_a_4xx_is_dead_at_once() {
        let mut r = rng();
        assert_eq!(decide(&POLICY, status(204), 1, Duration::ZERO, &mut r), Verdict::Delivered);
        assert_eq!(decide(&POLICY, status(400), 1, Duration::ZERO, &mut r), Verdict::Dead(DeadReason::Refused(400)));
        assert_eq!(decide(&POLICY, status(410), 7, Duration::from_secs(5), &mut r), Verdict::Dead(DeadReason::Refused(410)));
        for answer in [status(408), status(429), status(500), status(503), Answer::NoAnswer] {
            assert!(matches!(decide(&POLICY, answer, 1, Duration::ZERO, &mut r), Verdict::Retry { .. }), "{answer:?}");
        }
    }

    #[test]
    fn retry_after_is_a_floor_but_never_past_the_end() {
        let mut r = rng();
        let answer = Answer::Status { code: 429, retry_after: Some(Duration::from_secs(120)) };
        assert_eq!(decide(&POLICY, answer, 1, Duration::ZERO, &mut r), Verdict::Retry { delay: Duration::from_secs(120) });
        assert_eq!(decide(&POLICY, answer, 1, Duration::from_secs(3590), &mut r), Verdict::Retry { delay: Duration::from_secs(10) });
    }

    #[test]
    fn after_retry_for_it_is_dead() {
        let mut r = rng();
        assert_eq!(decide(&POLICY, Answer::NoAnswer, 30, Duration::from_secs(3600), &mut r), Verdict::Dead(DeadReason::Expired));
        assert_eq!(decide(&POLICY, status(503), 30, Duration::from_secs(9999), &mut r), Verdict::Dead(DeadReason::Expired));
        // Just before the end: one last attempt, at the end.
        let Verdict::Retry { delay } = decide(&POLICY, Answer::NoAnswer, 30, Duration::from_millis(3_599_500), &mut r) else {
            panic!("not a retry")
        };
        assert!(delay <= Duration::from_millis(500), "{delay:?}");
    }

    proptest! {
        /// Full jitter under the doubling ceiling, which the cap bounds.
        #[test]
        fn retries_wait_at_most_the_capped_doubling(attempts in 1u32..100, elapsed_s in 0u64..3599, seed: u64) {
            let mut r = rand::rngs::StdRng::seed_from_u64(seed);
            let Verdict::Retry { delay } = decide(&POLICY, Answer::NoAnswer, attempts, Duration::from_secs(elapsed_s), &mut r) else {
                panic!("not a retry");
            };
            let ceiling = super::super::restart::ceiling(attempts - 1, POLICY.backoff_base, POLICY.backoff_cap);
            prop_assert!(delay <= ceiling);
            prop_assert!(delay <= POLICY.backoff_cap);
            prop_assert!(delay <= Duration::from_secs(3600 - elapsed_s));
        }
    }
}
