//! Model-based test of the campaign core (`wasup::policy::campaign`), no
//! browser: random runs of session changes, send and lookup outcomes that
//! arrive late, in any order or never, duplicate acks, failing store writes,
//! operator commands and crashes (all memory dropped; the store keeps what
//! was flushed, and maybe some of what was not), then a healing phase with
//! a sound store and a connected session. Checked on every step:
//! - no send unless its recipient was flushed `SENDING` with that id, and
//!   the day's count flushed;
//! - no recipient reaches WhatsApp twice;
//! - no send inside quiet hours, or over the daily, warm-up or
//!   first-contact cap, or sooner than the number's gap after its previous
//!   send;
//! - no send to a contact on the opt-out list;
//! - a final campaign state only with nothing in flight;
//! - a session only a person can bring back (`SCAN_QR`, `LOGGED_OUT`,
//!   `BLOCKED`, `FAILED`, `CONFLICT` without takeover) fails the campaign
//!   at once (an operator's pause survives a relink); one that comes back
//!   by itself never fails it.
//!
//! And at the end: the campaign completes, and every recipient is `SENT`
//! (delivered exactly once, under the id stored) or `FAILED`/`SKIPPED` with
//! a reason (and never delivered).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use proptest::prelude::*;
use rand::{rngs::StdRng, Rng, SeedableRng};
use wasup::campaign::{CampaignRecord, CampaignState, Counts, PacingSpec, RecipientRecord, RecipientState};
use wasup::policy::campaign::{
    outlook, Change, Command, CommandError, Contact, Entry, Input, LookupResult, Machine, Note, Reason, RecipientReason, SendResult,
    SessionOutlook, Settings, Shell, Timer,
};
use wasup::policy::pacing::{DayCount, NumberRecord, NumberRules, Pacing, QuietHours, Warmup};
use wasup::session_state::SessionState;

/// A send or lookup the machine is waiting for.
#[derive(Debug, Clone)]
enum Outstanding {
    Send { idx: u32, id: String },
    Lookup { idx: u32, id: String },
    Ask,
}

/// The store (flushed and unflushed layers), the phone, and the checks.
struct World {
    durable: BTreeMap<u32, RecipientRecord>,
    volatile: BTreeMap<u32, RecipientRecord>,
    durable_campaign: CampaignRecord,
    volatile_campaign: Option<CampaignRecord>,
    durable_days: BTreeMap<String, u32>,
    volatile_days: BTreeMap<String, u32>,
    durable_number: NumberRecord,
    volatile_number: Option<NumberRecord>,
    /// Recipients on the opt-out list (stored at once, as the registry does).
    opted_out: BTreeSet<u32>,
    /// Recipients whose contact wrote to the account.
    wrote: BTreeSet<u32>,
    /// Replies fed, per recipient: (when it was sent-or-not at the time).
    replies_to_sent: BTreeSet<u32>,
    /// The number's rules, to check against.
    rules: NumberRules,
    /// Days a send was counted on, in order (the warm-up ramp's days).
    counted_days: Vec<String>,
    /// Sends to first contacts started, per day.
    first_contacts_on: BTreeMap<String, u32>,
    /// Writes fail while set.
    failing: bool,
    /// A write failed since the last flush that succeeded.
    failed_since_flush: bool,
    /// Message ids WhatsApp has, per recipient.
    delivered: BTreeMap<u32, Vec<String>>,
    /// Sends started, per day.
    sends_on: BTreeMap<String, u32>,
    outstanding: Vec<Outstanding>,
    timers: BTreeMap<Timer, u64>,
    session: SessionState,
    finished: bool,
    now: u64,
    cap: Option<u32>,
    quiet: Option<QuietHours>,
    /// The shortest gap between two sends, ms.
    min_gap_ms: u64,
    last_send_at: Option<u64>,
    /// When a lookup last answered "the page could not answer".
    lookup_failed_at: Option<u64>,
    lookup_retry_ms: u64,
    /// `finished()` calls by the current machine.
    finished_calls: u32,
    /// The machine entered CANCELLED (an operator was told so).
    cancelled: bool,
    /// The daemon is stopping (`Halt`): a waiting cancel is entered with
    /// its send abandoned.
    halting: bool,
    violations: Vec<String>,
}

fn day_of(ms: u64) -> jiff::civil::Date {
    jiff::Timestamp::from_millisecond(ms as i64).unwrap().to_zoned(jiff::tz::TimeZone::UTC).date()
}

impl World {
    /// A day counter as the store reads it (unflushed over flushed).
    fn day_value(&self, key: &str) -> u32 {
        self.volatile_days.get(key).or_else(|| self.durable_days.get(key)).copied().unwrap_or(0)
    }

    fn view(&self, idx: u32) -> Option<RecipientRecord> {
        self.volatile.get(&idx).or_else(|| self.durable.get(&idx)).cloned()
    }

    fn flush(&mut self) {
        self.durable.append(&mut self.volatile);
        if let Some(c) = self.volatile_campaign.take() {
            self.durable_campaign = c;
        }
        for (d, n) in std::mem::take(&mut self.volatile_days) {
            self.durable_days.insert(d, n);
        }
        if let Some(n) = self.volatile_number.take() {
            self.durable_number = n;
        }
        self.failed_since_flush = false;
    }

    fn write_fails(&mut self) -> bool {
        if self.failing {
            self.failed_since_flush = true;
        }
        self.failing
    }

    /// A crash: memory is gone; unflushed writes survive or not (sled may
    /// have written them); sends under way reached WhatsApp or not.
    fn crash(&mut self, rng: &mut StdRng) {
        if rng.gen_bool(0.5) {
            self.flush();
        } else {
            self.volatile.clear();
            self.volatile_campaign = None;
            self.volatile_days.clear();
            self.volatile_number = None;
        }
        for o in std::mem::take(&mut self.outstanding) {
            if let Outstanding::Send { idx, id } = o {
                if rng.gen_bool(0.5) {
                    self.deliver(idx, id);
                }
            }
        }
        self.timers.clear();
        self.finished = false;
        self.finished_calls = 0;
        // A restart starts a fresh gap only after the stored last send.
        self.lookup_failed_at = None;
        self.failed_since_flush = self.failing;
    }

    fn deliver(&mut self, idx: u32, id: String) {
        let ids = self.delivered.entry(idx).or_default();
        if !ids.contains(&id) {
            ids.push(id);
        }
        if ids.len() > 1 {
            self.violations.push(format!("recipient {idx} reached WhatsApp twice: {ids:?}"));
        }
    }
}

struct Io<'a>(&'a mut World);

impl Shell for Io<'_> {
    fn load(&mut self) -> Result<Vec<(u32, Entry)>, String> {
        if self.0.failing {
            return Err("read failed".into());
        }
        let ids: BTreeSet<u32> = self.0.durable.keys().chain(self.0.volatile.keys()).copied().collect();
        Ok(ids.into_iter().filter_map(|i| self.0.view(i).map(|r| (i, Entry::of(&r)))).collect())
    }

    fn write_recipient(&mut self, idx: u32, change: &Change, now_ms: u64, flush: bool) -> Result<(), String> {
        if self.0.write_fails() {
            return Err("No space left on device".into());
        }
        let mut r = self.0.view(idx).ok_or("no such recipient")?;
        change.apply(&mut r, now_ms);
        self.0.volatile.insert(idx, r);
        if flush {
            self.0.flush();
        }
        Ok(())
    }

    fn write_campaign(&mut self, record: &CampaignRecord, flush: bool) -> Result<(), String> {
        if self.0.write_fails() {
            return Err("No space left on device".into());
        }
        self.0.volatile_campaign = Some(record.clone());
        if flush {
            self.0.flush();
        }
        Ok(())
    }

    fn count_send(&mut self, day: &str, number: &NumberRecord, first_contact: bool) -> Result<(), String> {
        if self.0.write_fails() {
            return Err("No space left on device".into());
        }
        let (sent, first_contacts) = (self.0.day_value(day), self.0.day_value(&format!("{day}:first")));
        self.0.volatile_days.insert(day.to_string(), sent + 1);
        if first_contact {
            self.0.volatile_days.insert(format!("{day}:first"), first_contacts + 1);
        }
        self.0.volatile_number = Some(number.clone());
        if self.0.counted_days.last().map(String::as_str) != Some(day) {
            self.0.counted_days.push(day.to_string());
        }
        self.0.flush();
        Ok(())
    }

    fn day_count(&self, day: &str) -> Result<DayCount, String> {
        if self.0.failing {
            return Err("read failed".into());
        }
        Ok(DayCount { sent: self.0.day_value(day), first_contacts: self.0.day_value(&format!("{day}:first")) })
    }

    fn number(&self) -> Result<NumberRecord, String> {
        if self.0.failing {
            return Err("read failed".into());
        }
        Ok(self.0.volatile_number.clone().unwrap_or_else(|| self.0.durable_number.clone()))
    }

    fn number_ended(&mut self, number: &NumberRecord) -> bool {
        if self.0.write_fails() {
            return false;
        }
        self.0.volatile_number = Some(number.clone());
        true
    }

    fn contact(&self, idx: u32) -> Result<Contact, String> {
        if self.0.failing {
            return Err("read failed".into());
        }
        Ok(Contact { opted_out: self.0.opted_out.contains(&idx), first_contact: !self.0.wrote.contains(&idx) })
    }

    fn store_ok(&self) -> bool {
        !self.0.failed_since_flush
    }

    fn send(&mut self, idx: u32, message_id: &str, _typing: Duration) {
        let w = &mut *self.0;
        let stored = w.durable.get(&idx);
        if stored.map(|r| (r.state, r.message_id.as_deref())) != Some((RecipientState::Sending, Some(message_id))) {
            w.violations.push(format!("send of {idx} ({message_id}) without a flushed SENDING record: {stored:?}"));
        }
        let day = day_of(w.now).to_string();
        let n = w.sends_on.entry(day.clone()).or_default();
        *n += 1;
        let n = *n;
        if w.durable_days.get(&day).copied().unwrap_or(0) < n {
            w.violations.push(format!("send of {idx} on {day} not counted in the store first"));
        }
        if let Some(cap) = w.cap.filter(|c| n > *c) {
            w.violations.push(format!("send {n} on {day} over the daily cap {cap}"));
        }
        if let Some(warmup) = &w.rules.warmup {
            // The ramp's day: sending days counted before this one.
            let ramp = w.counted_days.iter().position(|d| *d == day).unwrap_or(w.counted_days.len()) as u32;
            if n > warmup.cap(ramp) {
                w.violations.push(format!("send {n} on {day} over the warm-up cap {} of ramp day {ramp}", warmup.cap(ramp)));
            }
        }
        if w.opted_out.contains(&idx) {
            w.violations.push(format!("send of {idx}, which is on the opt-out list"));
        }
        if !w.wrote.contains(&idx) {
            let f = w.first_contacts_on.entry(day.clone()).or_default();
            *f += 1;
            if let Some(cap) = w.rules.first_contact_cap.filter(|c| *f > *c) {
                w.violations.push(format!("first contact {f} on {day} over the cap {cap}"));
            }
        }
        let time = jiff::Timestamp::from_millisecond(w.now as i64).unwrap().to_zoned(jiff::tz::TimeZone::UTC).time();
        if w.quiet.as_ref().is_some_and(|q| q.contains(time)) {
            w.violations.push(format!("send of {idx} at {time}, inside quiet hours"));
        }
        if w.outstanding.iter().any(|o| !matches!(o, Outstanding::Ask)) {
            w.violations.push(format!("send of {idx} while another send or lookup is in flight"));
        }
        let min_gap = w.min_gap_ms.max(w.rules.min_delay.as_millis() as u64);
        if let Some(last) = w.last_send_at.filter(|last| w.now < last + min_gap) {
            w.violations.push(format!("send of {idx} {} ms after the previous one; at least {min_gap} ms", w.now - last));
        }
        w.last_send_at = Some(w.now);
        if w.finished_calls > 0 {
            w.violations.push(format!("send of {idx} after the machine finished"));
        }
        w.outstanding.push(Outstanding::Send { idx, id: message_id.to_string() });
    }

    fn lookup(&mut self, idx: u32, message_id: &str) {
        let w = &mut *self.0;
        if let Some(t) = w.lookup_failed_at.filter(|t| w.now < t + w.lookup_retry_ms) {
            w.violations.push(format!("lookup of {idx} {} ms after the page could not answer", w.now - t));
        }
        self.0.outstanding.push(Outstanding::Lookup { idx, id: message_id.to_string() });
    }

    fn ask_session(&mut self) {
        self.0.outstanding.push(Outstanding::Ask);
    }

    fn schedule(&mut self, timer: Timer, at_ms: u64) {
        self.0.timers.insert(timer, at_ms);
    }

    fn cancel(&mut self, timer: Timer) {
        self.0.timers.remove(&timer);
    }

    fn note(&mut self, note: Note, _record: &CampaignRecord) {
        if self.0.finished_calls > 0 {
            self.0.violations.push(format!("{note:?} after the machine finished"));
        }
        if let Note::Status { state, .. } = note {
            self.0.cancelled |= state == CampaignState::Cancelled;
            let halting_cancel = self.0.halting && state == CampaignState::Cancelled;
            if state.is_final() && !halting_cancel && self.0.outstanding.iter().any(|o| !matches!(o, Outstanding::Ask)) {
                self.0.violations.push(format!("campaign {state} with a send or lookup in flight"));
            }
        }
    }

    fn counts(&mut self, _counts: Counts) {}

    fn finished(&mut self, _record: &CampaignRecord) {
        self.0.finished = true;
        self.0.finished_calls += 1;
        if self.0.finished_calls > 1 {
            self.0.violations.push("finished() called twice".into());
        }
    }
}

/// One step of a run.
#[derive(Debug, Clone)]
enum Op {
    /// Fire the earliest timer (time jumps to it).
    Timer,
    /// Settle an outstanding send/lookup/question (which one, how).
    Settle(usize, u8),
    /// The session changes.
    Session(u8),
    /// An ack for a delivered recipient.
    Ack(u32, i8),
    /// Store writes start or stop failing.
    Store(bool),
    Crash,
    /// The daemon stops gracefully (`Halt`) and starts again.
    Halt,
    /// The session is deleted.
    SessionDeleted,
    Command(u8),
    /// Time passes (ms).
    Wait(u32),
    /// Recipient `.0`'s contact writes; `.1`: an opt-out keyword.
    Reply(u32, bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => Just(Op::Timer),
        8 => (0usize..4, any::<u8>()).prop_map(|(i, how)| Op::Settle(i, how)),
        2 => any::<u8>().prop_map(Op::Session),
        2 => (0u32..12, -1i8..5).prop_map(|(i, a)| Op::Ack(i, a)),
        1 => any::<bool>().prop_map(Op::Store),
        1 => Just(Op::Crash),
        1 => Just(Op::Halt),
        1 => Just(Op::SessionDeleted),
        2 => any::<u8>().prop_map(Op::Command),
        2 => (0u32..120_000).prop_map(Op::Wait),
        2 => (0u32..12, any::<bool>()).prop_map(|(i, stop)| Op::Reply(i, stop)),
    ]
}

struct Run {
    world: World,
    machine: Machine,
    rng: StdRng,
    pacing: Pacing,
    settings: Settings,
}

impl Run {
    fn new(seed: u64, n: u32, cap: Option<u32>, quiet: bool, max_gap_ms: u64, rules: NumberRules) -> Run {
        let now = 1_800_000_000_000 + seed % 86_400_000;
        let quiet_hours: Option<QuietHours> = quiet.then(|| "22:00-06:00".parse().unwrap());
        let pacing = Pacing {
            min_delay: Duration::from_millis(max_gap_ms / 2),
            max_delay: Duration::from_millis(max_gap_ms),
            typing_per_char: None,
            typing_max: Duration::ZERO,
            quiet_hours: quiet_hours.iter().cloned().collect(),
            tz: jiff::tz::TimeZone::UTC,
            number: NumberRules { daily_cap: cap, ..rules.clone() },
        };
        let settings = Settings {
            send_attempts: 3,
            retry_base: Duration::from_secs(5),
            resume_grace: Duration::from_secs(120),
            timelock_cooldown: Duration::from_secs(3600),
            store_retry: Duration::from_secs(1),
            lookup_retry: Duration::from_secs(2),
            send_timeout: Duration::from_secs(120),
            // Low, so that short runs reach it.
            max_opt_out_rate: 0.2,
            opt_out_min_sent: 2,
            boot: 1,
            conflict_takeover: seed % 2 == 0,
        };
        let record = CampaignRecord {
            state: CampaignState::Running,
            total: n,
            ..CampaignRecord::draft("c1".into(), "model".into(), "s".into(), "Hi".into(), PacingSpec::default(), now)
        };
        let durable = (0..n)
            .map(|idx| {
                let r = RecipientRecord {
                    idx,
                    line: idx + 2,
                    phone: format!("+49151{:08}", idx),
                    chat_id: format!("49151{:08}@c.us", idx),
                    vars: BTreeMap::new(),
                    text: "Hi".into(),
                    state: RecipientState::Pending,
                    reason: None,
                    message_id: None,
                    ack: None,
                    attempts: 0,
                    sent_at_ms: None,
                    updated_ms: now,
                    replied_at_ms: None,
                    opted_out_at_ms: None,
                };
                (idx, r)
            })
            .collect();
        let world = World {
            durable,
            volatile: BTreeMap::new(),
            durable_campaign: record.clone(),
            volatile_campaign: None,
            durable_days: BTreeMap::new(),
            volatile_days: BTreeMap::new(),
            durable_number: NumberRecord::default(),
            volatile_number: None,
            opted_out: BTreeSet::new(),
            wrote: BTreeSet::new(),
            replies_to_sent: BTreeSet::new(),
            rules,
            counted_days: Vec::new(),
            first_contacts_on: BTreeMap::new(),
            failing: false,
            failed_since_flush: false,
            delivered: BTreeMap::new(),
            sends_on: BTreeMap::new(),
            outstanding: Vec::new(),
            timers: BTreeMap::new(),
            session: SessionState::Connected,
            finished: false,
            now,
            cap,
            quiet: quiet_hours,
            min_gap_ms: max_gap_ms / 2,
            last_send_at: None,
            lookup_failed_at: None,
            lookup_retry_ms: 2000,
            finished_calls: 0,
            cancelled: false,
            halting: false,
            violations: Vec::new(),
        };
        let machine = Machine::new(record, pacing.clone(), settings.clone());
        let mut run = Run { world, machine, rng: StdRng::seed_from_u64(seed), pacing, settings };
        run.machine.start(now, &mut run.rng, &mut Io(&mut run.world));
        run
    }

    fn feed(&mut self, input: Input) {
        let now = self.world.now;
        self.machine.handle(input, now, &mut self.rng, &mut Io(&mut self.world));
    }

    /// Restarts from the store, as the daemon does after a crash.
    fn restart(&mut self) {
        self.world.crash(&mut self.rng);
        let record = self.world.durable_campaign.clone();
        // A new daemon run.
        self.settings.boot += 1;
        self.machine = Machine::new(record.clone(), self.pacing.clone(), self.settings.clone());
        if record.state.is_final() || record.state == CampaignState::Draft {
            self.world.finished = true;
            return;
        }
        let now = self.world.now;
        self.machine.start(now, &mut self.rng, &mut Io(&mut self.world));
    }

    fn fire_next_timer(&mut self) -> bool {
        let Some((&timer, &at)) = self.world.timers.iter().min_by_key(|(_, at)| **at) else { return false };
        self.world.timers.remove(&timer);
        self.world.now = self.world.now.max(at);
        self.feed(Input::Fired(timer));
        true
    }

    /// Settles outstanding item `i % len`; `how` picks the outcome
    /// (`truthful` = what a connected, healthy session would answer).
    fn settle(&mut self, i: usize, how: u8, truthful: bool) -> bool {
        if self.world.outstanding.is_empty() {
            return false;
        }
        let o = self.world.outstanding.remove(i % self.world.outstanding.len());
        let connected = self.world.session == SessionState::Connected;
        let input = match o {
            Outstanding::Ask => Input::Session { state: self.world.session, detail: "model".into() },
            Outstanding::Send { idx, id } => {
                let result = if truthful || connected && how % 8 < 4 {
                    self.world.deliver(idx, id);
                    SendResult::Sent { ack: 1 }
                } else {
                    match how % 8 {
                        0..=3 => SendResult::NotConnected,
                        4 => {
                            // Reached WhatsApp, but the answer was lost.
                            self.world.deliver(idx, id);
                            SendResult::Unknown("no answer within the send timeout".into())
                        }
                        5 if how % 3 == 0 => SendResult::NotSent("read failed".into()),
                        5 if how % 3 == 1 => SendResult::SessionDeleted,
                        5 => SendResult::Unknown("page crashed".into()),
                        // The attachment could not be read: nothing left.
                        6 if how % 4 == 0 => SendResult::AttachmentUnreadable("the attachment file is missing".into()),
                        6 => SendResult::Refused { state: RecipientState::Skipped, reason: RecipientReason::NotOnWhatsApp },
                        _ => {
                            if how % 3 == 0 {
                                SendResult::Timelock
                            } else {
                                SendResult::Rejected(Some(479))
                            }
                        }
                    }
                };
                Input::Sent { idx, result }
            }
            Outstanding::Lookup { idx, id } => {
                let found = self.world.delivered.get(&idx).is_some_and(|ids| ids.contains(&id));
                let result = if truthful || connected && how % 4 != 0 {
                    if found {
                        LookupResult::Found { ack: 2 }
                    } else {
                        LookupResult::NotFound
                    }
                } else if how % 2 == 0 {
                    LookupResult::NotConnected
                } else {
                    self.world.lookup_failed_at = Some(self.world.now);
                    LookupResult::Failed
                };
                Input::LookedUp { idx, result }
            }
        };
        self.feed(input);
        true
    }

    fn apply(&mut self, op: Op) {
        if self.world.finished {
            return;
        }
        match op {
            Op::Timer => {
                self.fire_next_timer();
            }
            Op::Settle(i, how) => {
                self.settle(i, how, false);
            }
            Op::Session(s) => {
                let state = match s % 12 {
                    0..=4 => SessionState::Connected,
                    5 | 6 => SessionState::Reconnecting,
                    7 => SessionState::Starting,
                    8 => SessionState::ScanQr,
                    9 => SessionState::Stopped,
                    10 => SessionState::Conflict,
                    _ => [SessionState::LoggedOut, SessionState::Blocked, SessionState::Failed][usize::from(s / 12 % 3)],
                };
                self.world.session = state;
                let (before, reason) = (self.machine.record().state, self.machine.reason().cloned());
                self.feed(Input::Session { state, detail: "model".into() });
                self.check_session_outlook(state, before, reason);
            }
            Op::Ack(i, ack) => {
                let in_flight = self.world.outstanding.iter().any(|o| matches!(o, Outstanding::Send { idx, .. } if *idx == i));
                if self.world.delivered.contains_key(&i) || in_flight {
                    self.feed(Input::Ack { idx: i, ack });
                    self.feed(Input::Ack { idx: i, ack });
                }
            }
            Op::Store(failing) => {
                self.world.failing = failing;
                if !failing {
                    // The daemon's store watcher probes: a write and a flush.
                    self.world.flush();
                }
            }
            Op::Crash => self.restart(),
            Op::Halt => {
                self.world.halting = true;
                self.feed(Input::Halt);
                self.world.halting = false;
                // A graceful stop flushes what it wrote; sends under way are
                // abandoned (they may have reached WhatsApp).
                self.world.flush();
                self.restart();
            }
            Op::SessionDeleted => self.feed(Input::SessionDeleted),
            Op::Command(c) => {
                let command = match c % 10 {
                    0..=3 => Command::Pause,
                    4..=7 => Command::Resume,
                    8 => Command::Start,
                    _ => Command::Cancel,
                };
                let now = self.world.now;
                let before = self.world.durable_campaign.state;
                match self.machine.command(command, now, &mut self.rng, &mut Io(&mut self.world)) {
                    Ok(done) => {
                        if !done && command != Command::Cancel {
                            self.world.violations.push(format!("{command:?} was deferred"));
                        }
                    }
                    Err(CommandError::Unrecorded(_)) => {
                        if self.world.durable_campaign.state != before {
                            self.world.violations.push(format!("{command:?} refused, yet the stored state changed"));
                        }
                    }
                    Err(CommandError::Refused(_)) => {}
                }
            }
            Op::Wait(ms) => self.world.now += u64::from(ms),
            Op::Reply(i, stop) => {
                if !self.world.durable.contains_key(&i) {
                    return;
                }
                // As the registry does: the contact is noted, an opt-out
                // stored, then the running campaign told.
                self.world.wrote.insert(i);
                if stop {
                    self.world.opted_out.insert(i);
                }
                if self.world.delivered.contains_key(&i) {
                    self.world.replies_to_sent.insert(i);
                }
                let now = self.world.now;
                self.feed(Input::Reply { idx: i, at_ms: now, opted_out: stop });
            }
        }
    }

    /// After the session entered `state` (the campaign was `before`, for
    /// `reason`): one that only a person can mend fails a campaign that has
    /// not ended at once (entered, or waiting for its flight or the store),
    /// except an operator's pause across a relink; one that comes back
    /// never fails it.
    fn check_session_outlook(&mut self, state: SessionState, before: CampaignState, reason: Option<Reason>) {
        if before.is_final() || self.world.finished {
            return;
        }
        let now = self.machine.record().state;
        let failing = now == CampaignState::Failed || self.machine.finishing().is_some();
        let relink_while_paused = matches!(state, SessionState::LoggedOut | SessionState::ScanQr)
            && before == CampaignState::Paused
            && reason == Some(Reason::Operator);
        match outlook(state, self.settings.conflict_takeover) {
            SessionOutlook::NeedsHuman if !failing && !relink_while_paused => {
                self.world.violations.push(format!("session {state}: the campaign is {now:?}, not FAILED at once"));
            }
            SessionOutlook::Returns | SessionOutlook::Ready if now == CampaignState::Failed && before != CampaignState::Failed => {
                self.world.violations.push(format!("session {state}, which comes back: the campaign FAILED ({:?})", self.machine.reason()));
            }
            _ => {}
        }
    }

    /// A sound store and a connected session, until the campaign ends.
    /// The session's change is pushed once, as the Supervisor does; from
    /// then on only outstanding answers and timers move the campaign, so a
    /// campaign with nothing armed is reported stuck.
    fn heal(&mut self) {
        self.world.failing = false;
        self.world.flush();
        let was = self.world.session;
        self.world.session = SessionState::Connected;
        if was != SessionState::Connected && !self.world.finished {
            self.feed(Input::Session { state: SessionState::Connected, detail: "healed".into() });
        }
        for _ in 0..100_000 {
            if self.world.finished {
                let state = self.world.durable_campaign.state;
                if state == CampaignState::Completed || state == CampaignState::Cancelled {
                    return;
                }
                // The daemon restarts a halted one; an operator resumes one
                // its session ended (the registry's transition for stored
                // campaigns).
                let mut record = self.world.durable_campaign.clone();
                if record.state.is_final() {
                    let (next, _) = wasup::policy::campaign::transition(record.state, Command::Resume).expect("a failed campaign resumes");
                    record.state = next;
                    record.reason = None;
                    self.world.durable_campaign = record;
                }
                self.restart();
                continue;
            }
            if self.settle(0, 0, true) {
                continue;
            }
            if self.machine.record().state == CampaignState::Paused
                && matches!(self.machine.reason(), Some(Reason::Operator | Reason::OptOutRate | Reason::AttachmentUnreadable(_)))
                && self.machine.finishing().is_none()
            {
                let now = self.world.now;
                let _ = self.machine.command(Command::Resume, now, &mut self.rng, &mut Io(&mut self.world));
                continue;
            }
            if self.fire_next_timer() {
                continue;
            }
            panic!("stuck: {:?} {:?}, nothing in flight, no timer", self.machine.record().state, self.machine.reason());
        }
        panic!("did not finish: {:?} {:?}", self.machine.record().state, self.machine.reason());
    }

    fn check_end(&self) {
        assert!(self.world.violations.is_empty(), "{:#?}", self.world.violations);
        let end = self.world.durable_campaign.state;
        let replies = self.world.durable_campaign.replies;
        assert!(replies as usize <= self.world.replies_to_sent.len(), "{replies} replies counted, {:?} fed", self.world.replies_to_sent);
        if self.world.cancelled {
            // The operator was told CANCELLED: the store says so too, and no
            // send happened after (checked by `send`).
            assert_eq!(end, CampaignState::Cancelled, "a cancelled campaign ended {end:?}");
        } else {
            assert_eq!(end, CampaignState::Completed);
        }
        for (idx, r) in &self.world.durable {
            let delivered = self.world.delivered.get(idx).map_or(&[][..], |v| &v[..]);
            match r.state {
                RecipientState::Sent => {
                    assert_eq!(delivered.len(), 1, "recipient {idx} SENT but delivered {delivered:?}");
                    assert_eq!(r.message_id.as_deref(), Some(delivered[0].as_str()), "recipient {idx}: stored id is not the delivered one");
                }
                RecipientState::Failed | RecipientState::Skipped => {
                    assert!(r.reason.as_deref().is_some_and(|x| !x.is_empty()), "recipient {idx} {:?} without a reason", r.state);
                    assert!(delivered.is_empty(), "recipient {idx} {:?} yet delivered {delivered:?}", r.state);
                    if r.reason.as_deref() == Some("opted_out") {
                        assert!(self.world.opted_out.contains(idx), "recipient {idx} skipped as opted out, but it did not opt out");
                    }
                }
                other if end == CampaignState::Cancelled => {
                    // Left behind by the cancel; never delivered twice.
                    assert!(delivered.len() <= 1, "recipient {idx} {other:?} delivered {delivered:?}");
                }
                other => panic!("recipient {idx} left {other:?} in a COMPLETED campaign"),
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn no_recipient_is_sent_twice_or_dropped(
        seed in any::<u64>(),
        n in 1u32..12,
        cap in prop_oneof![Just(None), (2u32..8).prop_map(Some)],
        quiet in any::<bool>(),
        max_gap_ms in 0u64..5_000,
        warmup in prop_oneof![Just(None), (1u32..4).prop_map(Some)],
        first_contact_cap in prop_oneof![Just(None), (1u32..4).prop_map(Some)],
        number_gap_ms in prop_oneof![Just(0u64), 0u64..8_000],
        ops in prop::collection::vec(op(), 0..120),
    ) {
        let rules = NumberRules {
            min_delay: Duration::from_millis(number_gap_ms / 2),
            max_delay: Duration::from_millis(number_gap_ms),
            daily_cap: None,
            warmup: warmup.map(|start| Warmup { start, growth: 1.5, idle_reset_days: 14 }),
            first_contact_cap,
        };
        let mut run = Run::new(seed, n, cap, quiet, max_gap_ms, rules);
        for op in ops {
            run.apply(op);
            prop_assert!(run.world.violations.is_empty(), "{:#?}", run.world.violations);
        }
        run.heal();
        run.check_end();
    }
}
