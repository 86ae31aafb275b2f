//! Pacing: when may a campaign send its next message? Pure: the time, the
//! counts and the random source are arguments.
//!
//! Two levels, both enforced before every send:
//! - **The number** (the session; [`NumberRules`], shared by all its
//!   campaigns): a uniform random gap in `[min_delay, max_delay]` after its
//!   previous send *ended*, a daily cap, a warm-up ramp ([`Warmup`]), a cap
//!   on first-contact messages per day, quiet hours. Its state
//!   ([`NumberRecord`]) is stored, so a restart keeps the gap and the ramp.
//! - **The campaign**: its own random gap after its own previous send, its
//!   own quiet hours, and "typing…" time. A campaign can only slow the
//!   number down further, never speed it up.
//!
//! Sending at a fixed rate, in bursts, or at full rate from a new number is
//! what gets numbers flagged (the ban reports behind issue "pacing per
//! number": fixed intervals, bursts, new numbers, unanswered first contacts).
//!
//! Quiet hours and days are counted in the configured time zone; past a
//! day's cap, the next send waits for the next local day.

use std::time::Duration;

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan as _};
use rand::Rng;
use serde::{Deserialize, Serialize};

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

/// A campaign's pacing, with the number's rules it runs under.
#[derive(Debug, Clone)]
pub struct Pacing {
    /// The campaign's own gap after its own previous send.
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Typing time per character of the text; `None`: no typing.
    pub typing_per_char: Option<Duration>,
    /// The longest typing time.
    pub typing_max: Duration,
    /// The number's and the campaign's quiet hours: no send starts inside
    /// any of them.
    pub quiet_hours: Vec<QuietHours>,
    /// The zone quiet hours and days are counted in.
    pub tz: TimeZone,
    /// The session's rules, shared by all its campaigns.
    pub number: NumberRules,
}

/// What one number (session) may send, whichever campaign sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct NumberRules {
    /// The gap after the number's previous send ended: uniform in
    /// `[min_delay, max_delay]`.
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Sends per calendar day; `None`: no cap.
    pub daily_cap: Option<u32>,
    /// The warm-up ramp; `None`: none.
    pub warmup: Option<Warmup>,
    /// Sends per calendar day to numbers that never wrote to this account;
    /// `None`: no cap.
    pub first_contact_cap: Option<u32>,
}

impl NumberRules {
    /// No gap, no cap, no ramp.
    pub fn unlimited() -> Self {
        Self { min_delay: Duration::ZERO, max_delay: Duration::ZERO, daily_cap: None, warmup: None, first_contact_cap: None }
    }
}

/// A warm-up ramp: on the first day a number sends, its cap is `start`;
/// each further day it sends (a day with a message WhatsApp got), the cap
/// grows by `growth` (rounded down), up to the daily cap. A number idle for
/// more than `idle_reset_days` whole days starts the ramp again.
///
/// Defaults (`campaigns.warmup`): 20 a day, growing 1.5× per sending day,
/// reset after 14 idle days. Sources: community-reported thresholds that
/// new accounts sending more than 20–30 messages a day in their first week
/// get reviewed (MoltFlow, "Avoid WhatsApp bans with anti-spam rules"), and
/// Whapi.Cloud's "How to avoid a WhatsApp ban" (2026): never start a new
/// number above 50 a day, wait 3–5 days before scaling.
#[derive(Debug, Clone, PartialEq)]
pub struct Warmup {
    /// The first day's cap.
    pub start: u32,
    /// Growth per sending day (≥ 1).
    pub growth: f64,
    /// Days without a send after which the ramp starts again.
    pub idle_reset_days: u32,
}

impl Warmup {
    /// The cap on the ramp's `n`th sending day (0: the first).
    pub fn cap(&self, n: u32) -> u32 {
        let c = f64::from(self.start) * self.growth.max(1.0).powi(i32::try_from(n.min(1000)).unwrap_or(1000));
        if c >= f64::from(u32::MAX) {
            u32::MAX
        } else {
            c as u32
        }
    }
}

/// A number's stored pacing state (one per session).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NumberRecord {
    /// When its last send ended (or started, if its end was not recorded),
    /// Unix epoch ms.
    pub last_send_ms: Option<u64>,
    /// The gap drawn for after the last send, ms.
    pub gap_ms: u64,
    /// A send is under way until then (its start plus the send timeout),
    /// epoch ms; cleared when it ends.
    pub busy_until_ms: Option<u64>,
    /// The daemon run (`boot` of [`NumberRecord::sending`]) whose send that
    /// is: a send of an earlier run was abandoned when it stopped, so it
    /// holds nothing.
    pub busy_boot: u64,
    /// The ramp's sending day of `last_day` (0: the first).
    pub ramp_day: u32,
    /// The local date of the last send, `YYYY-MM-DD`.
    pub last_day: Option<String>,
}

impl NumberRecord {
    /// The earliest time the number may send again after its last send,
    /// epoch ms (a send under way aside: [`NumberRecord::busy`]).
    pub fn earliest_ms(&self) -> u64 {
        self.last_send_ms.map_or(0, |l| l.saturating_add(self.gap_ms))
    }

    /// Until when a send of this daemon run (`boot`) holds the number, if
    /// one does at `now_ms`.
    pub fn busy(&self, now_ms: u64, boot: u64) -> Option<u64> {
        self.busy_until_ms.filter(|until| *until > now_ms && self.busy_boot == boot)
    }

    /// The ramp's sending day if the number sends on `day`.
    pub fn ramp_day_on(&self, day: Date, warmup: &Warmup) -> u32 {
        let Some(last) = self.last_day.as_deref().and_then(|d| d.parse::<Date>().ok()) else { return 0 };
        if last == day {
            return self.ramp_day;
        }
        // Days between the two sending days without a send.
        let idle = last.until(day).ok().map_or(0, |span| span.get_days().max(1) - 1) as u32;
        if idle > warmup.idle_reset_days {
            0
        } else {
            self.ramp_day.saturating_add(1)
        }
    }

    /// This record after a send of daemon run `boot` starts at `now_ms`,
    /// with the next `gap` drawn and the send under way for at most
    /// `busy_for` (its mark: the new `busy_until_ms`).
    pub fn sending(&self, now_ms: u64, gap: Duration, busy_for: Duration, boot: u64) -> Self {
        Self {
            last_send_ms: Some(now_ms),
            gap_ms: u64::try_from(gap.as_millis()).unwrap_or(u64::MAX),
            busy_until_ms: Some(now_ms.saturating_add(u64::try_from(busy_for.as_millis()).unwrap_or(u64::MAX))),
            busy_boot: boot,
            ..self.clone()
        }
    }

    /// This record after the send marked `mark` (its `busy_until_ms`)
    /// ended at `now_ms`: the gap counts from now, and its busy mark (only
    /// its own) is cleared.
    pub fn ended(&self, now_ms: u64, mark: Option<u64>) -> Self {
        let busy_until_ms = if self.busy_until_ms == mark { None } else { self.busy_until_ms };
        Self { last_send_ms: Some(now_ms.max(self.last_send_ms.unwrap_or(0))), busy_until_ms, ..self.clone() }
    }

    /// This record after a message reached WhatsApp on `day`: the warm-up
    /// ramp counts the day (only delivered sends make a sending day).
    pub fn delivered(&self, day: Date, rules: &NumberRules) -> Self {
        let ramp_day = rules.warmup.as_ref().map_or(0, |w| self.ramp_day_on(day, w));
        Self { ramp_day, last_day: Some(day.to_string()), ..self.clone() }
    }
}

/// A number's sends on one day, as the store counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DayCount {
    /// Every send.
    pub sent: u32,
    /// Sends to numbers that never wrote to the account.
    pub first_contacts: u32,
}

/// Why a send waits longer than its gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// The gap after the campaign's or the number's previous send.
    Gap,
    QuietHours,
    /// The number's daily cap.
    DailyCap,
    /// The number's warm-up cap for the day.
    Warmup,
    /// The number's cap on first-contact messages for the day.
    FirstContactCap,
}

impl Hold {
    /// As views show it: `gap`, `quiet_hours`, `daily_cap`, `warmup`,
    /// `first_contact_cap`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gap => "gap",
            Self::QuietHours => "quiet_hours",
            Self::DailyCap => "daily_cap",
            Self::Warmup => "warmup",
            Self::FirstContactCap => "first_contact_cap",
        }
    }
}

/// When the next send may start, and what decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub at: Timestamp,
    pub hold: Hold,
}

/// `ms` (Unix epoch ms) as a timestamp, clamped to the latest one jiff
/// holds.
pub fn timestamp(ms: u64) -> Timestamp {
    let max = Timestamp::MAX.as_millisecond();
    Timestamp::from_millisecond(i64::try_from(ms).unwrap_or(max).min(max)).unwrap_or(Timestamp::MAX)
}

/// A uniform random duration in `[min, max]` (`min` if `max <= min`).
pub fn uniform(min: Duration, max: Duration, rng: &mut impl Rng) -> Duration {
    if max <= min {
        return min;
    }
    let span = u64::try_from((max - min).as_millis()).unwrap_or(u64::MAX);
    min + Duration::from_millis(rng.gen_range(0..=span))
}

impl NumberRules {
    /// A gap for after one of the number's sends.
    pub fn gap(&self, rng: &mut impl Rng) -> Duration {
        uniform(self.min_delay, self.max_delay, rng)
    }

    /// Whether the number may still send on `day`, given what it sent that
    /// day and whether this send is a first contact: `Some(hold)` if not.
    pub fn day_full(&self, day: Date, count: DayCount, first_contact: bool, record: &NumberRecord) -> Option<Hold> {
        if self.daily_cap.is_some_and(|cap| count.sent >= cap) {
            return Some(Hold::DailyCap);
        }
        if let Some(w) = &self.warmup {
            if count.sent >= w.cap(record.ramp_day_on(day, w)) {
                return Some(Hold::Warmup);
            }
        }
        if first_contact && self.first_contact_cap.is_some_and(|cap| count.first_contacts >= cap) {
            return Some(Hold::FirstContactCap);
        }
        None
    }
}

impl Pacing {
    /// A uniform random gap in the campaign's `[min_delay, max_delay]`.
    pub fn gap(&self, rng: &mut impl Rng) -> Duration {
        uniform(self.min_delay, self.max_delay, rng)
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

    /// When the next send may start. `earliest` is the later of the
    /// campaign's and the number's previous send plus their gaps (or now);
    /// `full(day)` says whether, and why, the number may send no more on
    /// that day ([`NumberRules::day_full`]).
    pub fn next(&self, now: Timestamp, earliest: Timestamp, full: impl Fn(Date) -> Option<Hold>) -> Slot {
        let mut at = earliest.max(now);
        let mut hold = Hold::Gap;
        // Each step moves `at` forward; a week of steps is more than any
        // combination of caps and quiet hours can need.
        for _ in 0..32 {
            let zoned = at.to_zoned(self.tz.clone());
            if let Some(q) = self.quiet_hours.iter().find(|q| q.contains(zoned.time())) {
                at = self.next_local(zoned.date(), q.end, at);
                hold = Hold::QuietHours;
                continue;
            }
            if let Some(why) = full(zoned.date()) {
                let tomorrow = zoned.date().tomorrow().unwrap_or(zoned.date());
                at = self.start_of(tomorrow).max(at);
                hold = why;
                continue;
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
            quiet_hours: Vec::new(),
            tz: TimeZone::get("Europe/Berlin").unwrap(),
            number: NumberRules::unlimited(),
        }
    }

    fn capped<'a>(p: &'a Pacing, sent: u32, record: &NumberRecord) -> impl Fn(Date) -> Option<Hold> + 'a {
        let record = record.clone();
        move |d| p.number.day_full(d, DayCount { sent, first_contacts: 0 }, false, &record)
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
            p.quiet_hours = vec!["22:00-08:00".parse().unwrap(), "12:00-13:00".parse().unwrap()];
            let now = at("2026-03-01T00:00:00Z").checked_add(minute.minutes()).unwrap();
            let slot = p.next(now, now, |_| None);
            let local = slot.at.to_zoned(p.tz.clone()).time();
            prop_assert!(!p.quiet_hours.iter().any(|q| q.contains(local)), "{}", slot.at);
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
        p.quiet_hours = vec!["22:00-08:00".parse().unwrap()];
        // 23:30 in Berlin (CET, UTC+1) is 22:30Z; the end is 08:00 CET = 07:00Z.
        let slot = p.next(at("2026-01-10T22:30:00Z"), at("2026-01-10T22:30:00Z"), |_| None);
        assert_eq!(slot, Slot { at: at("2026-01-11T07:00:00Z"), hold: Hold::QuietHours });
    }

    #[test]
    fn the_daily_cap_defers_to_the_next_local_day() {
        let mut p = pacing();
        p.number.daily_cap = Some(3);
        let now = at("2026-01-10T12:00:00Z");
        let today = p.day(now);
        let r = NumberRecord::default();
        let slot =
            p.next(now, now, |d| p.number.day_full(d, DayCount { sent: if d == today { 3 } else { 0 }, first_contacts: 0 }, false, &r));
        // Midnight in Berlin is 23:00Z.
        assert_eq!(slot, Slot { at: at("2026-01-10T23:00:00Z"), hold: Hold::DailyCap });
        let slot = p.next(now, now, capped(&p, 2, &r));
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

    /// The warm-up ramp with a fixed clock: a number sending every day as
    /// much as it may sends 20, 30, 45, 67, 101 … up to the daily cap; after
    /// an idle spell longer than `idle_reset_days` it starts at 20 again.
    #[test]
    fn warmup_caps_follow_the_ramp_day_by_day() {
        let mut p = pacing();
        p.number.daily_cap = Some(200);
        p.number.warmup = Some(Warmup { start: 20, growth: 1.5, idle_reset_days: 14 });
        let mut record = NumberRecord::default();
        let mut day: Date = "2026-03-02".parse().unwrap();
        let mut caps = Vec::new();
        for _ in 0..9 {
            // Send until the day is full, as the machine would.
            let mut sent = 0;
            while p.number.day_full(day, DayCount { sent, first_contacts: 0 }, false, &record).is_none() {
                record = record.sending(1, Duration::ZERO, Duration::ZERO, 7).delivered(day, &p.number);
                sent += 1;
            }
            let why = p.number.day_full(day, DayCount { sent, first_contacts: 0 }, false, &record);
            caps.push((sent, why));
            day = day.tomorrow().unwrap();
        }
        let w = Some(Hold::Warmup);
        let c = Some(Hold::DailyCap);
        assert_eq!(caps, vec![(20, w), (30, w), (45, w), (67, w), (101, w), (151, w), (200, c), (200, c), (200, c)]);
        // A day off does not reset the ramp; 15 idle days do.
        let after_one_idle = day.tomorrow().unwrap();
        assert!(record.ramp_day_on(after_one_idle, p.number.warmup.as_ref().unwrap()) == record.ramp_day + 1);
        let after_15_idle = day.checked_add(15.days()).unwrap();
        assert_eq!(record.ramp_day_on(after_15_idle, p.number.warmup.as_ref().unwrap()), 0);
        let after_14_idle = day.checked_add(14.days()).unwrap();
        assert_eq!(record.ramp_day_on(after_14_idle, p.number.warmup.as_ref().unwrap()), record.ramp_day + 1);
    }

    #[test]
    fn first_contacts_have_their_own_cap_and_the_number_its_own_gap() {
        let mut p = pacing();
        p.number.first_contact_cap = Some(15);
        let day: Date = "2026-03-02".parse().unwrap();
        let r = NumberRecord::default();
        let count = DayCount { sent: 40, first_contacts: 15 };
        assert_eq!(p.number.day_full(day, count, true, &r), Some(Hold::FirstContactCap));
        assert_eq!(p.number.day_full(day, count, false, &r), None);
        // The gap counts from the end of the previous send, and a send under
        // way holds the number.
        let _ = day;
        let r = NumberRecord::default().sending(1_000, Duration::from_secs(20), Duration::from_secs(120), 7);
        assert_eq!((r.earliest_ms(), r.busy(2_000, 7)), (21_000, Some(121_000)));
        // A send of an earlier daemon run was abandoned: it holds nothing.
        assert_eq!(r.busy(2_000, 8), None);
        let ended = r.ended(5_000, Some(121_000));
        assert_eq!((ended.earliest_ms(), ended.busy(6_000, 7)), (25_000, None));
        // A send's end clears only its own mark.
        let other = r.sending(3_000, Duration::from_secs(20), Duration::from_secs(120), 7);
        assert_eq!(other.ended(5_000, Some(121_000)).busy(6_000, 7), Some(123_000));
    }
}
