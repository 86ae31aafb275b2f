//! Pacing: when may a campaign send its next message? Pure: the time, the
//! counts and the random source are arguments.
//!
//! - A uniform random gap in `[min_delay, max_delay]` after the previous
//!   send (sending at a fixed rate is what gets numbers flagged).
//! - Quiet hours, in the configured time zone: no send starts inside them;
//!   a send due inside waits for their end.
//! - A daily cap per session, shared by all its campaigns, counted per
//!   calendar day in the configured time zone; past it, the next send waits
//!   for the next day.
//! - Optional typing time, scaled to the text's length and capped.

use std::time::Duration;

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan as _};
use rand::Rng;

/// Quiet hours: `start` to `end` local time; `end < start` spans midnight
/// (`22:00-08:00`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuietHours {
    pub start: Time,
    pub end: Time,
}

impl std::str::FromStr for QuietHours {
    type Err = String;

    /// Parses `"HH:MM-HH:MM"`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("quiet hours {s:?}: expected \"HH:MM-HH:MM\", e.g. \"22:00-08:00\"");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let parse = |t: &str| -> Result<Time, String> { Time::strptime("%H:%M", t.trim()).map_err(|_| bad()) };
        let (start, end) = (parse(a)?, parse(b)?);
        if start == end {
            return Err(format!("quiet hours {s:?}: start and end are the same"));
        }
        Ok(Self { start, end })
    }
}

impl QuietHours {
    /// Whether local time `t` is inside the quiet hours.
    pub fn contains(&self, t: Time) -> bool {
        if self.start < self.end {
            t >= self.start && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }
}

/// A campaign's pacing, with the session-wide settings it runs under.
#[derive(Debug, Clone)]
pub struct Pacing {
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Typing time per character of the text; `None`: no typing.
    pub typing_per_char: Option<Duration>,
    /// The longest typing time.
    pub typing_max: Duration,
    /// Sends per session per calendar day; `None`: no cap.
    pub daily_cap: Option<u32>,
    pub quiet_hours: Option<QuietHours>,
    /// The zone quiet hours and days are counted in.
    pub tz: TimeZone,
}

/// Why a send waits longer than its gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// The gap after the previous send.
    Gap,
    QuietHours,
    DailyCap,
}

/// When the next send may start, and what decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub at: Timestamp,
    pub hold: Hold,
}

impl Pacing {
    /// A uniform random gap in `[min_delay, max_delay]`.
    pub fn gap(&self, rng: &mut impl Rng) -> Duration {
        if self.max_delay <= self.min_delay {
            return self.min_delay;
        }
        let span = (self.max_delay - self.min_delay).as_millis() as u64;
        self.min_delay + Duration::from_millis(rng.gen_range(0..=span))
    }

    /// Typing time for a text of `chars` characters.
    pub fn typing(&self, chars: usize) -> Duration {
        match self.typing_per_char {
            Some(per) => per.saturating_mul(chars.min(u32::MAX as usize) as u32).min(self.typing_max),
            None => Duration::ZERO,
        }
    }

    /// The calendar day of `t` in the pacing's zone.
    pub fn day(&self, t: Timestamp) -> Date {
        t.to_zoned(self.tz.clone()).date()
    }

    /// When the next send may start. `earliest` is the previous send plus
    /// its [`Pacing::gap`] (or now, for the first send); `sent_on(day)` is
    /// how many messages the session has sent on that day.
    pub fn next(&self, now: Timestamp, earliest: Timestamp, sent_on: impl Fn(Date) -> u32) -> Slot {
        let mut at = earliest.max(now);
        let mut hold = Hold::Gap;
        // Each step moves `at` forward; a week of steps is more than any
        // combination of a cap and quiet hours can need.
        for _ in 0..16 {
            let zoned = at.to_zoned(self.tz.clone());
            if let Some(q) = &self.quiet_hours {
                if q.contains(zoned.time()) {
                    at = self.next_local(zoned.date(), q.end, at);
                    hold = Hold::QuietHours;
                    continue;
                }
            }
            if let Some(cap) = self.daily_cap {
                if sent_on(zoned.date()) >= cap {
                    let tomorrow = zoned.date().tomorrow().unwrap_or(zoned.date());
                    at = self.start_of(tomorrow).max(at);
                    hold = Hold::DailyCap;
                    continue;
                }
            }
            break;
        }
        Slot { at, hold }
    }

    /// The first instant at or after `after` whose local time is `time`,
    /// starting the search on `date`.
    fn next_local(&self, date: Date, time: Time, after: Timestamp) -> Timestamp {
        let mut d = date;
        for _ in 0..3 {
            if let Ok(z) = d.to_datetime(time).to_zoned(self.tz.clone()) {
                if z.timestamp() > after {
                    return z.timestamp();
                }
            }
            d = d.tomorrow().unwrap_or(d);
        }
        after.checked_add(1.hour()).unwrap_or(after)
    }

    fn start_of(&self, date: Date) -> Timestamp {
        date.to_zoned(self.tz.clone()).map(|z| z.timestamp()).unwrap_or(Timestamp::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    fn pacing() -> Pacing {
        Pacing {
            min_delay: Duration::from_secs(20),
            max_delay: Duration::from_secs(45),
            typing_per_char: None,
            typing_max: Duration::from_secs(10),
            daily_cap: None,
            quiet_hours: None,
            tz: TimeZone::get("Europe/Berlin").unwrap(),
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    proptest! {
        #[test]
        fn gaps_lie_within_min_and_max(seed: u64, min_ms in 0u64..100_000, extra_ms in 0u64..100_000) {
            let mut p = pacing();
            p.min_delay = Duration::from_millis(min_ms);
            p.max_delay = Duration::from_millis(min_ms + extra_ms);
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let g = p.gap(&mut rng);
            prop_assert!(g >= p.min_delay && g <= p.max_delay);
        }

        #[test]
        fn no_send_starts_in_quiet_hours(minute in 0i64..(7 * 24 * 60)) {
            let mut p = pacing();
            p.quiet_hours = Some("22:00-08:00".parse().unwrap());
            let now = at("2026-03-01T00:00:00Z").checked_add(minute.minutes()).unwrap();
            let slot = p.next(now, now, |_| 0);
            let local = slot.at.to_zoned(p.tz.clone()).time();
            prop_assert!(!p.quiet_hours.as_ref().unwrap().contains(local), "{}", slot.at);
            prop_assert!(slot.at >= now);
            // It waits no longer than the quiet hours last.
            prop_assert!(slot.at.duration_since(now).as_secs() <= 10 * 3600);
        }
    }

    #[test]
    fn quiet_hours_parse_and_span_midnight() {
        let q: QuietHours = "22:00-08:00".parse().unwrap();
        assert!(q.contains(Time::constant(23, 0, 0, 0)) && q.contains(Time::constant(7, 59, 0, 0)));
        assert!(!q.contains(Time::constant(8, 0, 0, 0)) && !q.contains(Time::constant(21, 59, 0, 0)));
        let day: QuietHours = "12:00-13:00".parse().unwrap();
        assert!(day.contains(Time::constant(12, 30, 0, 0)) && !day.contains(Time::constant(13, 0, 0, 0)));
        assert!("22-08".parse::<QuietHours>().is_err() && "10:00-10:00".parse::<QuietHours>().is_err());
    }

    #[test]
    fn a_send_due_in_quiet_hours_waits_for_their_end() {
        let mut p = pacing();
        p.quiet_hours = Some("22:00-08:00".parse().unwrap());
        // 23:30 in Berlin (CET, UTC+1) is 22:30Z; the end is 08:00 CET = 07:00Z.
        let slot = p.next(at("2026-01-10T22:30:00Z"), at("2026-01-10T22:30:00Z"), |_| 0);
        assert_eq!(slot, Slot { at: at("2026-01-11T07:00:00Z"), hold: Hold::QuietHours });
    }

    #[test]
    fn the_daily_cap_defers_to_the_next_local_day() {
        let mut p = pacing();
        p.daily_cap = Some(3);
        let now = at("2026-01-10T12:00:00Z");
        let today = p.day(now);
        let slot = p.next(now, now, |d| if d == today { 3 } else { 0 });
        // Midnight in Berlin is 23:00Z.
        assert_eq!(slot, Slot { at: at("2026-01-10T23:00:00Z"), hold: Hold::DailyCap });
        let slot = p.next(now, now, |_| 2);
        assert_eq!(slot.at, now);
    }

    #[test]
    fn typing_scales_and_is_capped() {
        let mut p = pacing();
        assert_eq!(p.typing(100), Duration::ZERO);
        p.typing_per_char = Some(Duration::from_millis(50));
        assert_eq!(p.typing(20), Duration::from_secs(1));
        assert_eq!(p.typing(10_000), Duration::from_secs(10));
    }
}
