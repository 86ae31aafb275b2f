//! The Campaign actor: one per active campaign; the only writer of its
//! record and its recipients while it runs.
//!
//! It sends one recipient at a time through the Supervisor, paced by
//! [`crate::policy::pacing`]. Crash safety comes from the order of writes:
//! a recipient is stored as `SENDING` with the message id the daemon chose,
//! and flushed, before the send; it is stored as `SENT`, and flushed, after
//! the send. Any `SENDING` recipient found at start (or after a send whose
//! outcome is unknown) is resolved by looking its id up in the page once
//! the session is `CONNECTED` (synced): found → `SENT`; not found → sent
//! again, under a new id. So no recipient is messaged twice, and none is
//! dropped.
//!
//! The session's state reaches it as [`SessionChanged`] (pushed by the
//! Supervisor through the registry): lost → `PAUSED(waiting_for_session)`,
//! resumed when the session is back within `campaigns.resume_grace`, else
//! `FAILED(session_lost)`; logout, revocation or block → `FAILED` at once.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::actors::campaigns::{Campaigns, Finished, SessionChanged};
use crate::actors::session::SendError;
use crate::actors::supervisor::{GetSession, LookupMessage, SendMessage, Supervisor, SupervisorError};
use crate::campaign::{CampaignRecord, CampaignState, RecipientRecord, RecipientState, Tally};
use crate::config::Config;
use crate::events::{Event, Events};
use crate::policy::pacing::{Pacing, QuietHours};
use crate::session_state::{now_ms, SessionState};
use crate::store::Store;
use crate::whatsapp::number::ChatId;
use crate::whatsapp::page::SendRefused;
use crate::whatsapp::{ack_name, new_message_id};

/// An operator's command on a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CampaignCommand {
    Start,
    Pause,
    Resume,
    Cancel,
}

/// A command for a running Campaign actor; answers the record after it.
#[derive(Message)]
#[rtype(result = "Result<CampaignRecord, String>")]
pub struct Control(pub CampaignCommand);

/// A sent recipient's ack changed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Acked {
    pub idx: u32,
    pub ack: i8,
}

/// Stop at a safe point (the daemon is shutting down); the record keeps its
/// state, so the next start carries on.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Halt;

/// Builds the pacing a campaign runs under.
pub fn pacing_for(record: &CampaignRecord, config: &Config) -> Result<Pacing, String> {
    let c = &config.campaigns;
    let quiet = match record.pacing.quiet_hours.as_deref().filter(|q| !q.trim().is_empty()) {
        Some(q) => Some(q.parse::<QuietHours>()?),
        None if !c.quiet_hours.trim().is_empty() => Some(c.quiet_hours.parse::<QuietHours>()?),
        None => None,
    };
    Ok(Pacing {
        min_delay: record.pacing.min_delay,
        max_delay: record.pacing.max_delay,
        typing_per_char: record.pacing.typing.then_some(c.typing_per_char),
        typing_max: c.typing_max,
        daily_cap: (c.daily_cap > 0).then_some(c.daily_cap),
        quiet_hours: quiet,
        tz: c.tz()?,
    })
}

/// `ms` as a timestamp, clamped to the latest one jiff can hold (so a far
/// future stays in the future).
fn ts(ms: u64) -> jiff::Timestamp {
    let max = jiff::Timestamp::MAX.as_millisecond();
    jiff::Timestamp::from_millisecond(i64::try_from(ms).unwrap_or(max).min(max)).unwrap_or(jiff::Timestamp::MAX)
}

/// `d` in ms, saturating.
fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How often a campaign paused by a store failure checks whether the store
/// takes writes again.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// The Campaign actor. See the module docs.
pub struct Campaign {
    record: CampaignRecord,
    config: Arc<Config>,
    pacing: Pacing,
    store: Store,
    supervisor: Addr<Supervisor>,
    registry: Addr<Campaigns>,
    /// PENDING recipients in order.
    pending: VecDeque<u32>,
    /// SENDING recipients (each to be resolved by a lookup when idle).
    sending: std::collections::BTreeSet<u32>,
    /// Recipients per state, kept in step with every write.
    counts: HashMap<RecipientState, u32>,
    /// Earliest retry time of recipients whose send failed for a passing
    /// reason, epoch ms.
    not_before: HashMap<u32, u64>,
    session_state: SessionState,
    /// The gap chosen after the last send.
    gap: Duration,
    busy: bool,
    timer: Option<SpawnHandle>,
    grace_timer: Option<SpawnHandle>,
    halted: bool,
    events: Events,
    /// Shared recipient counts, for views and metrics.
    tally: Tally,
    /// A write failed: the next step pauses with `store_error`.
    store_fault: Option<String>,
    store_timer: Option<SpawnHandle>,
    /// The recipients were read (see [`Self::load`]).
    loaded: bool,
}

impl Campaign {
    // Each argument is a distinct handle the actor owns; a struct to carry
    // them would only rename the list.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        record: CampaignRecord,
        config: Arc<Config>,
        pacing: Pacing,
        store: Store,
        supervisor: Addr<Supervisor>,
        registry: Addr<Campaigns>,
        events: Events,
        tally: Tally,
    ) -> Self {
        Self {
            record,
            config,
            pacing,
            store,
            supervisor,
            registry,
            pending: VecDeque::new(),
            sending: std::collections::BTreeSet::new(),
            counts: HashMap::new(),
            not_before: HashMap::new(),
            session_state: SessionState::Stopped,
            gap: Duration::ZERO,
            busy: false,
            timer: None,
            grace_timer: None,
            halted: false,
            events,
            tally,
            store_fault: None,
            store_timer: None,
            loaded: false,
        }
    }

    /// Reads the recipients into the pending queue, the SENDING set and
    /// the counts. On a read error nothing is loaded and the campaign
    /// pauses with `store_error` (an empty list would read as "completed").
    fn load(&mut self) -> bool {
        let recipients = match self.store.recipients(&self.record.id) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(campaign = %self.record.id, error = %e, "cannot read recipients; pausing");
                self.store_fault = Some(e.to_string());
                return false;
            }
        };
        self.pending.clear();
        self.sending.clear();
        self.counts.clear();
        for r in recipients {
            *self.counts.entry(r.state).or_default() += 1;
            match r.state {
                RecipientState::Pending => self.pending.push_back(r.idx),
                RecipientState::Sending => {
                    self.sending.insert(r.idx);
                }
                _ => {}
            }
        }
        self.loaded = true;
        self.publish_counts();
        true
    }

    /// Writes a recipient whose state may have changed from `was`; true
    /// when the write (and the flush, if asked) succeeded.
    ///
    /// The in-memory sets and counts mirror what was stored: on a failure
    /// they keep `was`, and the next [`Self::step`] pauses the campaign with
    /// `store_error`. That is safe in both directions: a failed SENDING
    /// write means no send; a failed SENT write leaves the recipient
    /// SENDING, which a lookup resolves once the store takes writes again.
    fn put(&mut self, was: RecipientState, r: &RecipientRecord, flush: bool) -> bool {
        if let Err(e) = self.store.put_recipient(&self.record.id, r, flush) {
            tracing::error!(campaign = %self.record.id, recipient = r.idx, error = %e, "cannot store a recipient; pausing");
            self.store_fault = Some(e.to_string());
            return false;
        }
        self.moved(r.idx, was, r.state);
        true
    }

    /// Keeps the counts and the SENDING set in step with a recipient that
    /// went from `was` to `now` in the store.
    fn moved(&mut self, idx: u32, was: RecipientState, now: RecipientState) {
        if was != now {
            if let Some(n) = self.counts.get_mut(&was) {
                *n = n.saturating_sub(1);
            }
            *self.counts.entry(now).or_default() += 1;
            self.publish_counts();
        }
        if now == RecipientState::Sending {
            self.sending.insert(idx);
        } else {
            self.sending.remove(&idx);
        }
    }

    fn publish_counts(&self) {
        let mut c = crate::campaign::Counts::default();
        for (state, n) in &self.counts {
            c[state.index()] = *n;
        }
        self.tally.set(&self.record.id, c);
    }

    fn save(&mut self, flush: bool) {
        self.record.updated_ms = now_ms();
        let result = if flush { self.store.put_campaign(&self.record) } else { self.store.put_campaign_unflushed(&self.record) };
        if let Err(e) = result {
            // The record's state is bookkeeping (after a crash the campaign
            // restarts from RUNNING/PAUSED and resolves SENDING recipients),
            // but a failing store must stop sends: pause at the next step.
            tracing::error!(campaign = %self.record.id, error = %e, "cannot store the campaign; pausing");
            self.store_fault = Some(e.to_string());
        }
    }

    fn set_state(&mut self, state: CampaignState, reason: Option<&str>, ctx: &mut Context<Self>) {
        if self.record.state == state && self.record.reason.as_deref() == reason {
            return;
        }
        self.record.state = state;
        self.record.reason = reason.map(str::to_string);
        if state != CampaignState::Paused {
            self.record.waiting_since_ms = None;
            self.record.resume_at_ms = None;
        }
        self.save(true);
        let (id, session) = (&self.record.id, &self.record.session);
        self.events.publish(Event::campaign("campaign.status", id, session).state(state, reason));
        let reason = reason.unwrap_or("");
        match state {
            CampaignState::Failed => {
                tracing::error!(campaign = %id, session = %session, event = "campaign.status", state = %state, reason, "campaign {state}")
            }
            CampaignState::Paused => {
                tracing::warn!(campaign = %id, session = %session, event = "campaign.status", state = %state, reason, "campaign {state}")
            }
            _ => tracing::info!(campaign = %id, session = %session, event = "campaign.status", state = %state, reason, "campaign {state}"),
        }
        if state.is_final() {
            self.cancel_timers(ctx);
            self.registry.do_send(Finished { id: self.record.id.clone() });
            ctx.stop();
        }
    }

    fn cancel_timers(&mut self, ctx: &mut Context<Self>) {
        if let Some(t) = self.timer.take() {
            ctx.cancel_future(t);
        }
        if let Some(t) = self.grace_timer.take() {
            ctx.cancel_future(t);
        }
        if let Some(t) = self.store_timer.take() {
            ctx.cancel_future(t);
        }
    }

    /// A write failed: pause with `store_error` and resume once the store
    /// takes writes again (the daemon's store watcher probes and reopens
    /// it; this only watches its health).
    fn pause_for_store(&mut self, ctx: &mut Context<Self>) {
        let error = self.store_fault.take().unwrap_or_default();
        if let Some(t) = self.timer.take() {
            ctx.cancel_future(t);
        }
        tracing::warn!(campaign = %self.record.id, session = %self.record.session, error = %error, "store writes fail: no sends until they succeed again");
        self.set_state(CampaignState::Paused, Some("store_error"), ctx);
        // The pause itself may not have been stored; that is fine: the
        // state in memory is what stops the sends.
        self.store_fault = None;
        self.watch_store(ctx);
    }

    fn watch_store(&mut self, ctx: &mut Context<Self>) {
        if let Some(t) = self.store_timer.take() {
            ctx.cancel_future(t);
        }
        self.store_timer = Some(ctx.run_later(STORE_RETRY, |act, ctx| {
            act.store_timer = None;
            let paused_for_store = act.record.state == CampaignState::Paused && act.record.reason.as_deref() == Some("store_error");
            if !paused_for_store {
                return;
            }
            if act.store.failure().is_some() {
                return act.watch_store(ctx);
            }
            tracing::info!(campaign = %act.record.id, session = %act.record.session, "store writes succeed again: resuming");
            act.set_state(CampaignState::Running, None, ctx);
            act.step(ctx);
        }));
    }

    fn schedule(&mut self, after: Duration, ctx: &mut Context<Self>) {
        if let Some(t) = self.timer.take() {
            ctx.cancel_future(t);
        }
        self.timer = Some(ctx.run_later(after, |act, ctx| {
            act.timer = None;
            act.step(ctx);
        }));
    }

    /// The session is not usable: pause and start the grace period.
    fn wait_for_session(&mut self, ctx: &mut Context<Self>) {
        if self.record.state != CampaignState::Running {
            return;
        }
        self.record.waiting_since_ms = Some(now_ms());
        self.set_state(CampaignState::Paused, Some("waiting_for_session"), ctx);
        let grace = self.config.campaigns.resume_grace;
        if let Some(t) = self.grace_timer.take() {
            ctx.cancel_future(t);
        }
        self.grace_timer = Some(ctx.run_later(grace, |act, ctx| {
            act.grace_timer = None;
            if act.record.state == CampaignState::Paused && act.record.reason.as_deref() == Some("waiting_for_session") {
                act.set_state(CampaignState::Failed, Some("session_lost"), ctx);
            }
        }));
    }

    /// Decides what to do next: resolve, wait, send, or complete.
    fn step(&mut self, ctx: &mut Context<Self>) {
        if self.busy || self.halted || self.record.state != CampaignState::Running {
            return;
        }
        if self.store_fault.is_some() || self.store.failure().is_some() {
            self.store_fault.get_or_insert_with(|| "the store is failing".into());
            return self.pause_for_store(ctx);
        }
        if !self.loaded && !self.load() {
            return self.pause_for_store(ctx);
        }
        if self.session_state != SessionState::Connected {
            return self.wait_for_session(ctx);
        }
        if let Some(&idx) = self.sending.iter().next() {
            return self.resolve(idx, ctx);
        }
        let now = now_ms();
        let Some(&idx) = self.pending.front() else {
            self.record.next_send_ms = None;
            return self.set_state(CampaignState::Completed, None, ctx);
        };
        if let Some(&t) = self.not_before.get(&idx) {
            if t > now {
                return self.schedule(Duration::from_millis(t - now), ctx);
            }
        }
        let earliest = self.record.last_send_ms.map_or(now, |last| last.saturating_add(ms(self.gap)));
        let (store, session) = (self.store.clone(), self.record.session.clone());
        // An unreadable count reads as "cap reached" (u32::MAX): a failing
        // store must never let the cap be exceeded.
        let slot = self.pacing.next(ts(now), ts(earliest), |day| store.sent_on(&session, &day.to_string()).unwrap_or(u32::MAX));
        let at = slot.at.as_millisecond().max(0) as u64;
        if at > now {
            if self.record.next_send_ms != Some(at) {
                self.record.next_send_ms = Some(at);
                self.save(false);
            }
            return self.schedule(Duration::from_millis(at - now), ctx);
        }
        self.send(idx, ctx);
    }

    fn send(&mut self, idx: u32, ctx: &mut Context<Self>) {
        let mut r = match self.store.recipient(&self.record.id, idx) {
            Ok(Some(r)) => r,
            Ok(None) => {
                // No such recipient (cannot happen with a sound store): skip.
                self.pending.pop_front();
                return self.step(ctx);
            }
            Err(e) => {
                // Unreadable: it stays pending; pause until the store is sound.
                self.store_fault = Some(e.to_string());
                return self.step(ctx);
            }
        };
        let now = now_ms();
        if let Some(scheduled) = self.record.next_send_ms {
            // How late the pacing clock fired (the bench reads this).
            tracing::debug!(campaign = %self.record.id, scheduled_ms = scheduled, late_ms = now as i64 - scheduled as i64, "pacing: send starts");
        }
        let id = new_message_id();
        r.state = RecipientState::Sending;
        r.message_id = Some(id.clone());
        r.attempts += 1;
        r.updated_ms = now;
        let day = self.pacing.day(ts(now)).to_string();
        // Both writes must reach the disk before the send, or there is no
        // send: the recipient stays PENDING and the campaign pauses. A day
        // counted without its send only makes the cap stricter; a SENDING
        // record that reached sled without its flush is resolved by a
        // lookup as "not sent". Neither can cause a second send.
        if let Err(e) = self.store.count_send(&self.record.session, &day) {
            tracing::error!(campaign = %self.record.id, error = %e, "cannot count the send; not sending");
            self.store_fault = Some(e.to_string());
            return self.step(ctx);
        }
        // Flushed before the send: after a crash this id is looked up.
        if !self.put(RecipientState::Pending, &r, true) {
            return self.step(ctx);
        }
        self.pending.pop_front();
        self.not_before.remove(&idx);
        self.record.last_send_ms = Some(now);
        self.record.next_send_ms = None;
        self.gap = self.pacing.gap(&mut rand::thread_rng());
        self.save(false);
        self.busy = true;
        let typing = self.pacing.typing(r.text.chars().count());
        let send = SendMessage {
            name: self.record.session.clone(),
            to: ChatId::from_trusted(r.chat_id.clone()),
            text: r.text.clone(),
            id: Some(id),
            typing,
        };
        let supervisor = self.supervisor.clone();
        let limit = self.config.whatsapp.send_timeout + typing + Duration::from_secs(10);
        ctx.spawn(
            async move {
                match tokio::time::timeout(limit, supervisor.send(send)).await {
                    Ok(Ok(result)) => Some(result),
                    _ => None,
                }
            }
            .into_actor(self)
            .map(move |result, act, ctx| {
                act.busy = false;
                act.sent(r, result, ctx);
                act.step(ctx);
            }),
        );
    }

    /// Applies a send's outcome. `None`: unknown (timed out, actor gone).
    fn sent(
        &mut self,
        mut r: RecipientRecord,
        result: Option<Result<crate::actors::session::SendOutcome, SupervisorError>>,
        ctx: &mut Context<Self>,
    ) {
        let (id, session) = (self.record.id.clone(), self.record.session.clone());
        let now = now_ms();
        r.updated_ms = now;
        let message_id = r.message_id.clone().unwrap_or_default();
        match result {
            Some(Ok(outcome)) => {
                r.state = RecipientState::Sent;
                r.ack = Some(ack_name(outcome.ack).to_string());
                r.sent_at_ms = Some(now);
                r.reason = None;
                // If this write fails the recipient stays SENDING (in memory
                // as on disk) and a lookup settles it after the pause.
                if self.put(RecipientState::Sending, &r, true) {
                    tracing::info!(campaign = %id, session = %session, event = "message.sent", message_id = %message_id, recipient = r.idx, "message sent");
                    self.message_event("message.sent", &r);
                    self.progress();
                }
            }
            Some(Err(SupervisorError::WrongState { .. } | SupervisorError::Send(SendError::NotConnected(_)))) => {
                // Refused before it reached the page: not sent.
                self.back_to_pending(r, None);
                self.wait_for_session(ctx);
            }
            Some(Err(SupervisorError::NotFound(_))) => {
                self.back_to_pending(r, None);
                self.set_state(CampaignState::Failed, Some("session_deleted"), ctx);
            }
            Some(Err(SupervisorError::Send(SendError::Refused(refused)))) => {
                let (state, reason) = match refused {
                    SendRefused::NotOnWhatsApp(_) => (RecipientState::Skipped, "not_on_whatsapp".to_string()),
                    SendRefused::InvalidWid(m) => (RecipientState::Failed, format!("invalid_number: {m}")),
                    SendRefused::Other(m) => (RecipientState::Failed, m),
                };
                r.state = state;
                r.reason = Some(reason.clone());
                if !self.put(RecipientState::Sending, &r, true) {
                    return;
                }
                tracing::warn!(campaign = %id, session = %session, event = "message.failed", message_id = %message_id, recipient = r.idx, reason = %reason, "recipient {}", state.as_str());
                self.message_event("message.failed", &r);
                self.progress();
            }
            Some(Err(SupervisorError::Send(SendError::Rejected { code: Some(463) }))) => {
                // Reach-out timelock: not delivered; cool down, no retry storm.
                self.back_to_pending(r, None);
                let until = now.saturating_add(ms(self.config.campaigns.timelock_cooldown));
                self.record.resume_at_ms = Some(until);
                self.set_state(CampaignState::Paused, Some("timelock"), ctx);
                self.schedule_resume(until, ctx);
            }
            Some(Err(SupervisorError::Send(SendError::Rejected { code }))) => {
                r.state = RecipientState::Failed;
                r.reason = Some(format!("rejected by WhatsApp{}", code.map(|c| format!(" (error {c})")).unwrap_or_default()));
                if !self.put(RecipientState::Sending, &r, true) {
                    return;
                }
                tracing::warn!(campaign = %id, session = %session, event = "message.failed", message_id = %message_id, recipient = r.idx, "recipient FAILED");
                self.message_event("message.failed", &r);
                self.progress();
            }
            other => {
                // Unknown: it may or may not have reached WhatsApp. It stays
                // SENDING and is resolved by a lookup.
                let why = match other {
                    Some(Err(e)) => e.to_string(),
                    _ => "no answer within the send timeout".into(),
                };
                tracing::warn!(campaign = %id, session = %session, message_id = %message_id, recipient = r.idx, error = %why, "send outcome unknown; resolving by lookup");
                r.reason = Some(format!("unknown: {why}"));
                // Failing or not, it stays SENDING: harmless either way.
                self.put(RecipientState::Sending, &r, true);
            }
        }
    }

    /// Puts a recipient whose send did not happen back in line. If the
    /// write fails it stays SENDING (memory mirrors the store) and a lookup
    /// sends it again after the pause.
    fn back_to_pending(&mut self, mut r: RecipientRecord, retry_at: Option<u64>) {
        let was = r.state;
        r.state = RecipientState::Pending;
        r.message_id = None;
        if !self.put(was, &r, true) {
            return;
        }
        if let Some(t) = retry_at {
            self.not_before.insert(r.idx, t);
        }
        // Keep the order: a recipient goes back where it was.
        let pos = self.pending.iter().position(|&i| i > r.idx).unwrap_or(self.pending.len());
        self.pending.insert(pos, r.idx);
    }

    fn schedule_resume(&mut self, at_ms: u64, ctx: &mut Context<Self>) {
        let wait = Duration::from_millis(at_ms.saturating_sub(now_ms()));
        if let Some(t) = self.grace_timer.take() {
            ctx.cancel_future(t);
        }
        self.grace_timer = Some(ctx.run_later(wait, |act, ctx| {
            act.grace_timer = None;
            if act.record.state == CampaignState::Paused && act.record.reason.as_deref() == Some("timelock") {
                act.set_state(CampaignState::Running, None, ctx);
                act.step(ctx);
            }
        }));
    }

    /// Looks a SENDING recipient up in the page; `step` calls it for each.
    fn resolve(&mut self, idx: u32, ctx: &mut Context<Self>) {
        let r = match self.store.recipient(&self.record.id, idx) {
            Ok(Some(r)) if r.state == RecipientState::Sending => r,
            Ok(Some(r)) => {
                // The store settled it already (a write whose flush failed
                // still reached sled): follow it.
                self.moved(idx, RecipientState::Sending, r.state);
                return self.step(ctx);
            }
            Ok(None) => {
                self.moved(idx, RecipientState::Sending, RecipientState::Failed);
                return self.step(ctx);
            }
            Err(e) => {
                self.store_fault = Some(e.to_string());
                return self.step(ctx);
            }
        };
        let Some(message_id) = r.message_id.clone() else {
            self.back_to_pending(r, None);
            return self.step(ctx);
        };
        self.busy = true;
        let lookup =
            LookupMessage { name: self.record.session.clone(), to: ChatId::from_trusted(r.chat_id.clone()), id: message_id.clone() };
        let supervisor = self.supervisor.clone();
        ctx.spawn(async move { supervisor.send(lookup).await }.into_actor(self).map(move |result, act, ctx| {
            act.busy = false;
            let (id, session) = (act.record.id.clone(), act.record.session.clone());
            match result {
                Ok(Ok(Some(ack))) => {
                    let mut r = r;
                    r.state = RecipientState::Sent;
                    r.ack = Some(ack_name(ack).to_string());
                    r.sent_at_ms.get_or_insert(now_ms());
                    r.reason = None;
                    if act.put(RecipientState::Sending, &r, true) {
                        tracing::info!(campaign = %id, session = %session, event = "message.sent", message_id = %message_id, recipient = r.idx, "resolved: the page holds the message");
                        act.progress();
                    }
                    act.step(ctx);
                }
                Ok(Ok(None)) => {
                    tracing::info!(campaign = %id, session = %session, message_id = %message_id, recipient = r.idx, "resolved: not sent; sending again");
                    if r.attempts >= act.config.campaigns.send_attempts {
                        let mut r = r;
                        r.state = RecipientState::Failed;
                        r.reason = Some("send_failed: no attempt reached WhatsApp".into());
                        if act.put(RecipientState::Sending, &r, true) {
                            act.progress();
                        }
                    } else {
                        let delay = act.config.campaigns.retry_base.saturating_mul(1 << r.attempts.saturating_sub(1).min(10));
                        let retry_at = (r.reason.as_deref().is_some_and(|x| x.starts_with("unknown"))).then(|| now_ms().saturating_add(ms(delay)));
                        act.back_to_pending(r, retry_at);
                    }
                    act.step(ctx);
                }
                Ok(Err(SupervisorError::WrongState { .. } | SupervisorError::Send(SendError::NotConnected(_)))) => {
                    act.wait_for_session(ctx);
                }
                _ => {
                    // The page could not answer now; try again shortly.
                    act.schedule(Duration::from_secs(2), ctx);
                }
            }
        }));
    }

    fn message_event(&self, event: &'static str, r: &RecipientRecord) {
        let e = Event::campaign(event, &self.record.id, &self.record.session)
            .state(r.state.as_str(), r.reason.as_deref())
            .detail(serde_json::json!({"recipient": r.idx, "phone": r.phone, "message_id": r.message_id, "ack": r.ack}));
        self.events.publish(e);
    }

    fn progress(&self) {
        let count = |s| self.counts.get(&s).copied().unwrap_or(0);
        let detail: serde_json::Map<String, serde_json::Value> =
            RecipientState::ALL.iter().map(|s| (s.as_str().to_string(), count(*s).into())).collect();
        self.events.publish(Event::campaign("campaign.progress", &self.record.id, &self.record.session).detail(detail.into()));
        tracing::info!(
            campaign = %self.record.id,
            session = %self.record.session,
            event = "campaign.progress",
            sent = count(RecipientState::Sent),
            failed = count(RecipientState::Failed),
            skipped = count(RecipientState::Skipped),
            pending = count(RecipientState::Pending),
            total = self.record.total,
            "campaign progress"
        );
    }
}

impl Actor for Campaign {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // A failure here pauses the campaign at its first step.
        self.load();
        // The first gap after a restart: the one a send would have had.
        self.gap = self.pacing.gap(&mut rand::thread_rng());
        if let (CampaignState::Paused, Some("timelock"), Some(at)) =
            (self.record.state, self.record.reason.as_deref(), self.record.resume_at_ms)
        {
            self.schedule_resume(at, ctx);
        }
        let ask = GetSession { name: self.record.session.clone() };
        let supervisor = self.supervisor.clone();
        ctx.spawn(async move { supervisor.send(ask).await }.into_actor(self).map(|result, act, ctx| match result {
            Ok(Ok(view)) => {
                act.session_state = view.state;
                act.on_session(view.state, view.reason.unwrap_or_default(), ctx);
            }
            Ok(Err(SupervisorError::NotFound(_))) => act.set_state(CampaignState::Failed, Some("session_deleted"), ctx),
            _ => act.schedule(Duration::from_secs(1), ctx),
        }));
    }
}

impl Campaign {
    fn on_session(&mut self, state: SessionState, reason: String, ctx: &mut Context<Self>) {
        self.session_state = state;
        if self.record.state.is_final() || self.record.state == CampaignState::Draft {
            return;
        }
        match state {
            SessionState::Connected => {
                let waiting = self.record.state == CampaignState::Paused && self.record.reason.as_deref() == Some("waiting_for_session");
                if waiting {
                    if let Some(t) = self.grace_timer.take() {
                        ctx.cancel_future(t);
                    }
                    self.set_state(CampaignState::Running, None, ctx);
                }
                self.step(ctx);
            }
            SessionState::LoggedOut | SessionState::Blocked | SessionState::Failed => {
                let paused_by_operator = self.record.state == CampaignState::Paused && self.record.reason.as_deref() == Some("operator");
                if !paused_by_operator || state != SessionState::LoggedOut {
                    let why = format!("session_{}: {reason}", state.as_str().to_ascii_lowercase());
                    self.set_state(CampaignState::Failed, Some(&why), ctx);
                }
            }
            _ => {
                if self.record.state == CampaignState::Running {
                    self.wait_for_session(ctx);
                }
            }
        }
    }
}

impl Handler<SessionChanged> for Campaign {
    type Result = ();

    fn handle(&mut self, msg: SessionChanged, ctx: &mut Self::Context) {
        self.on_session(msg.state, msg.reason, ctx);
    }
}

impl Handler<Acked> for Campaign {
    type Result = ();

    fn handle(&mut self, msg: Acked, _ctx: &mut Self::Context) {
        let Ok(Some(mut r)) = self.store.recipient(&self.record.id, msg.idx) else { return };
        let was = r.state;
        let name = ack_name(msg.ack).to_string();
        if r.state == RecipientState::Sent && r.ack.as_deref() != Some(name.as_str()) && msg.ack > 0 {
            tracing::info!(campaign = %self.record.id, event = "message.ack", recipient = r.idx, ack = %name, "ack");
            let e = Event::campaign("message.ack", &self.record.id, &self.record.session)
                .detail(serde_json::json!({"recipient": r.idx, "message_id": r.message_id, "ack": name}));
            self.events.publish(e);
            r.ack = Some(name);
            r.updated_ms = now_ms();
            // Harmless if it fails: the ack is a record (no send depends on
            // it) and the store's own health already reports the failure.
            let _ = self.store.put_recipient(&self.record.id, &r, false);
            debug_assert_eq!(was, r.state);
        }
    }
}

impl Handler<Control> for Campaign {
    type Result = Result<CampaignRecord, String>;

    fn handle(&mut self, msg: Control, ctx: &mut Self::Context) -> Self::Result {
        let state = self.record.state;
        match msg.0 {
            CampaignCommand::Pause if state == CampaignState::Running || state == CampaignState::Paused => {
                if let Some(t) = self.timer.take() {
                    ctx.cancel_future(t);
                }
                if let Some(t) = self.grace_timer.take() {
                    ctx.cancel_future(t);
                }
                self.set_state(CampaignState::Paused, Some("operator"), ctx);
            }
            CampaignCommand::Resume | CampaignCommand::Start if state == CampaignState::Paused => {
                self.set_state(CampaignState::Running, None, ctx);
                self.step(ctx);
            }
            CampaignCommand::Cancel => {
                self.set_state(CampaignState::Cancelled, Some("operator"), ctx);
            }
            command => return Err(format!("cannot {command:?} a campaign that is {state}").to_lowercase()),
        }
        Ok(self.record.clone())
    }
}

impl Handler<Halt> for Campaign {
    type Result = ();

    fn handle(&mut self, _msg: Halt, ctx: &mut Self::Context) {
        // A send under way is abandoned here; its recipient stays SENDING
        // and is resolved by lookup at the next start.
        self.halted = true;
        self.cancel_timers(ctx);
        self.save(true);
        ctx.stop();
    }
}
