//! The Campaign actor: one per active campaign, the shell of its
//! [`Machine`] (`src/policy/campaign.rs`, where every decision and the
//! crash-safety argument live). It feeds the machine what happens (session
//! changes from the Supervisor, send and lookup outcomes, acks, operator
//! commands, timers) and carries out what the machine asks: sled reads and
//! writes (their result goes back at once), sends and lookups through the
//! Supervisor, timers, events and logs, and the shared recipient counts. It
//! is the only writer of its campaign's record and recipients while it
//! runs.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::actors::messages::{Finished, SessionChanged};
use crate::actors::session::{SendError, SendOutcome};
use crate::actors::supervisor::{GetSession, LookupMessage, SendMessage, Supervisor, SupervisorError};
use crate::campaign::{CampaignRecord, CampaignState, Counts, RecipientRecord, RecipientState, Tally};
use crate::config::Config;
use crate::events::{Event, EventName, Events};
use crate::policy::campaign::{
    Change, CommandError, Entry, Input, LookupResult, Machine, Note, RecipientReason, SendResult, Settings, Shell, Timer,
};
use crate::policy::pacing::{Pacing, QuietHours};
use crate::session_state::now_ms;
use crate::store::Store;
use crate::whatsapp::number::ChatId;
use crate::whatsapp::page::SendRefused;

/// An operator's command on a campaign.
pub use crate::policy::campaign::Command as CampaignCommand;

/// A command for a running Campaign actor; answers the record once the
/// command took effect (a cancel waits for the send in flight).
#[derive(Message)]
#[rtype(result = "Result<CampaignRecord, CommandError>")]
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

/// The machine's settings from `[campaigns]`.
pub fn settings_for(config: &Config) -> Settings {
    let c = &config.campaigns;
    Settings {
        send_attempts: c.send_attempts,
        retry_base: c.retry_base,
        resume_grace: c.resume_grace,
        timelock_cooldown: c.timelock_cooldown,
        store_retry: Duration::from_secs(1),
        lookup_retry: Duration::from_secs(2),
    }
}

/// What a send's answer from the Supervisor means for the campaign: the one
/// place errors are told apart (`None`: no answer in time).
fn send_result(answer: Option<Result<SendOutcome, SupervisorError>>) -> SendResult {
    match answer {
        Some(Ok(outcome)) => SendResult::Sent { ack: outcome.ack },
        Some(Err(SupervisorError::WrongState { .. } | SupervisorError::Send(SendError::NotConnected(_)))) => SendResult::NotConnected,
        Some(Err(SupervisorError::NotFound(_))) => SendResult::SessionDeleted,
        Some(Err(SupervisorError::Send(SendError::Refused(refused)))) => {
            let (state, reason) = match refused {
                SendRefused::NotOnWhatsApp(_) => (RecipientState::Skipped, RecipientReason::NotOnWhatsApp),
                SendRefused::InvalidWid(m) => (RecipientState::Failed, RecipientReason::InvalidNumber(m)),
                SendRefused::Other(m) => (RecipientState::Failed, RecipientReason::Other(m)),
            };
            SendResult::Refused { state, reason }
        }
        // WhatsApp's reach-out timelock.
        Some(Err(SupervisorError::Send(SendError::Rejected { code: Some(463) }))) => SendResult::Timelock,
        Some(Err(SupervisorError::Send(SendError::Rejected { code }))) => SendResult::Rejected(code),
        Some(Err(e)) => SendResult::Unknown(e.to_string()),
        None => SendResult::Unknown("no answer within the send timeout".into()),
    }
}

/// What a lookup's answer means.
fn lookup_result(answer: Result<Result<Option<i8>, SupervisorError>, MailboxError>) -> LookupResult {
    match answer {
        Ok(Ok(Some(ack))) => LookupResult::Found { ack },
        Ok(Ok(None)) => LookupResult::NotFound,
        Ok(Err(SupervisorError::WrongState { .. } | SupervisorError::Send(SendError::NotConnected(_)))) => LookupResult::NotConnected,
        _ => LookupResult::Failed,
    }
}

/// What the machine asked for that needs the actor's context.
enum Action {
    Send { idx: u32, message_id: String, typing: Duration },
    Lookup { idx: u32, message_id: String },
    AskSession,
    Schedule(Timer, u64),
    Cancel(Timer),
    Finished(Box<CampaignRecord>),
}

/// The machine's [`Shell`] over sled: writes and reads happen at once;
/// the rest is queued as [`Action`]s for the actor.
struct Io {
    id: String,
    session: String,
    store: Store,
    events: Events,
    tally: Tally,
    /// The recipient last written (event payloads name its phone and id).
    last: Option<RecipientRecord>,
    actions: VecDeque<Action>,
}

impl Io {
    fn recipient_event(&self, event: EventName, idx: u32) -> Event {
        let e = Event::campaign(event, &self.id, &self.session);
        match self.last.as_ref().filter(|r| r.idx == idx) {
            Some(r) => e
                .state(r.state.as_str(), r.reason.as_deref())
                .detail(serde_json::json!({"recipient": r.idx, "phone": r.phone, "message_id": r.message_id, "ack": r.ack})),
            None => e.detail(serde_json::json!({"recipient": idx})),
        }
    }
}

impl Shell for Io {
    fn load(&mut self) -> Result<Vec<(u32, Entry)>, String> {
        let recipients = self.store.recipients(&self.id).map_err(|e| e.to_string())?;
        Ok(recipients.iter().map(|r| (r.idx, Entry::of(r))).collect())
    }

    fn write_recipient(&mut self, idx: u32, change: &Change, now_ms: u64, flush: bool) -> Result<(), String> {
        let mut r = self
            .store
            .recipient(&self.id, idx)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("recipient {idx} is not in the store"))?;
        change.apply(&mut r, now_ms);
        self.store.put_recipient(&self.id, &r, flush).map_err(|e| e.to_string())?;
        self.last = Some(r);
        Ok(())
    }

    fn write_campaign(&mut self, record: &CampaignRecord, flush: bool) -> Result<(), String> {
        let written = if flush { self.store.put_campaign(record) } else { self.store.put_campaign_unflushed(record) };
        written.map_err(|e| e.to_string())
    }

    fn count_send(&mut self, day: &str) -> Result<(), String> {
        self.store.count_send(&self.session, day).map(drop).map_err(|e| e.to_string())
    }

    fn sent_on(&self, day: &str) -> u32 {
        self.store.sent_on(&self.session, day).unwrap_or(u32::MAX)
    }

    fn store_ok(&self) -> bool {
        self.store.failure().is_none()
    }

    fn send(&mut self, idx: u32, message_id: &str, typing: Duration) {
        self.actions.push_back(Action::Send { idx, message_id: message_id.to_string(), typing });
    }

    fn lookup(&mut self, idx: u32, message_id: &str) {
        self.actions.push_back(Action::Lookup { idx, message_id: message_id.to_string() });
    }

    fn ask_session(&mut self) {
        self.actions.push_back(Action::AskSession);
    }

    fn schedule(&mut self, timer: Timer, at_ms: u64) {
        self.actions.push_back(Action::Schedule(timer, at_ms));
    }

    fn cancel(&mut self, timer: Timer) {
        self.actions.push_back(Action::Cancel(timer));
    }

    fn note(&mut self, note: Note, record: &CampaignRecord) {
        let (id, session) = (&self.id, &self.session);
        match note {
            Note::Status { state, reason } => {
                let reason = reason.map(|r| r.as_string());
                self.events.publish(Event::campaign(EventName::CampaignStatus, id, session).state(state, reason.as_deref()));
                let reason = reason.unwrap_or_default();
                match state {
                    CampaignState::Failed => {
                        tracing::error!(campaign = %id, session = %session, event = "campaign.status", state = %state, reason, "campaign {state}")
                    }
                    CampaignState::Paused => {
                        tracing::warn!(campaign = %id, session = %session, event = "campaign.status", state = %state, reason, "campaign {state}")
                    }
                    _ => {
                        tracing::info!(campaign = %id, session = %session, event = "campaign.status", state = %state, reason, "campaign {state}")
                    }
                }
            }
            Note::Progress(counts) => {
                let detail: serde_json::Map<String, serde_json::Value> =
                    RecipientState::ALL.iter().map(|s| (s.as_str().to_string(), counts[s.index()].into())).collect();
                self.events.publish(Event::campaign(EventName::CampaignProgress, id, session).detail(detail.into()));
                let n = |s: RecipientState| counts[s.index()];
                tracing::info!(
                    campaign = %id,
                    session = %session,
                    event = "campaign.progress",
                    sent = n(RecipientState::Sent),
                    failed = n(RecipientState::Failed),
                    skipped = n(RecipientState::Skipped),
                    pending = n(RecipientState::Pending),
                    total = record.total,
                    "campaign progress"
                );
            }
            Note::Sent { idx, resolved } => {
                let message_id = self.last.as_ref().and_then(|r| r.message_id.clone()).unwrap_or_default();
                let how = if resolved { "resolved: the page holds the message" } else { "message sent" };
                tracing::info!(campaign = %id, session = %session, event = "message.sent", message_id = %message_id, recipient = idx, "{how}");
                self.events.publish(self.recipient_event(EventName::MessageSent, idx));
            }
            Note::Failed { idx } => {
                let (state, reason) =
                    self.last.as_ref().map_or(("FAILED", String::new()), |r| (r.state.as_str(), r.reason.clone().unwrap_or_default()));
                tracing::warn!(campaign = %id, session = %session, event = "message.failed", recipient = idx, reason = %reason, "recipient {state}");
                self.events.publish(self.recipient_event(EventName::MessageFailed, idx));
            }
            Note::Acked { idx } => {
                let e = self.recipient_event(EventName::MessageAck, idx);
                let ack = self.last.as_ref().and_then(|r| r.ack.clone()).unwrap_or_default();
                tracing::info!(campaign = %id, event = "message.ack", recipient = idx, ack = %ack, "ack");
                self.events.publish(e);
            }
            Note::SendStarts { idx, late_ms } => {
                // How late the pacing clock fired (the bench reads this).
                let scheduled = record.next_send_ms.unwrap_or_default();
                tracing::debug!(campaign = %id, recipient = idx, scheduled_ms = scheduled, late_ms, "pacing: send starts");
            }
            Note::Unresolved { idx, why } => {
                tracing::warn!(campaign = %id, session = %session, recipient = idx, error = %why, "send outcome unknown; resolving by lookup")
            }
            Note::NotSent { idx } => {
                tracing::info!(campaign = %id, session = %session, recipient = idx, "resolved: not sent; sending again")
            }
            Note::StoreFailed { error } => {
                tracing::error!(campaign = %id, session = %session, error = %error, "store write failed: no sends until writes succeed again")
            }
        }
    }

    fn counts(&mut self, counts: Counts) {
        self.tally.set(&self.id, counts);
    }

    fn finished(&mut self, record: &CampaignRecord) {
        self.actions.push_back(Action::Finished(Box::new(record.clone())));
    }
}

/// The Campaign actor. See the module docs.
pub struct Campaign {
    machine: Machine,
    io: Io,
    config: Arc<Config>,
    supervisor: Addr<Supervisor>,
    /// The registry (the parent): told when the machine is done.
    registry: Recipient<Finished>,
    timers: HashMap<Timer, SpawnHandle>,
    /// Commands that answer once a final state is entered.
    waiters: Vec<tokio::sync::oneshot::Sender<CampaignRecord>>,
    /// Outcomes known at once (a recipient the shell could not read), fed
    /// after the current actions: never a call back into the machine from
    /// inside one.
    inputs: VecDeque<Input>,
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
        registry: Recipient<Finished>,
        events: Events,
        tally: Tally,
    ) -> Self {
        let io = Io { id: record.id.clone(), session: record.session.clone(), store, events, tally, last: None, actions: VecDeque::new() };
        let machine = Machine::new(record, pacing, settings_for(&config));
        Self { machine, io, config, supervisor, registry, timers: HashMap::new(), waiters: Vec::new(), inputs: VecDeque::new() }
    }

    /// Feeds the machine one input, then carries out what it asked.
    fn feed(&mut self, input: Input, ctx: &mut Context<Self>) {
        self.machine.handle(input, now_ms(), &mut rand::thread_rng(), &mut self.io);
        self.perform(ctx);
    }

    fn perform(&mut self, ctx: &mut Context<Self>) {
        loop {
            self.perform_actions(ctx);
            if self.machine.is_done() && self.io.actions.is_empty() {
                self.inputs.clear();
            }
            let Some(input) = self.inputs.pop_front() else { return };
            self.machine.handle(input, now_ms(), &mut rand::thread_rng(), &mut self.io);
        }
    }

    fn perform_actions(&mut self, ctx: &mut Context<Self>) {
        while let Some(action) = self.io.actions.pop_front() {
            match action {
                Action::Send { idx, message_id, typing } => self.send(idx, message_id, typing, ctx),
                Action::Lookup { idx, message_id } => self.lookup(idx, message_id, ctx),
                Action::AskSession => {
                    let ask = GetSession { name: self.io.session.clone() };
                    let supervisor = self.supervisor.clone();
                    ctx.spawn(actix::fut::wrap_future::<_, Self>(async move { supervisor.send(ask).await }).map(|answer, act, ctx| {
                        let input = match answer {
                            Ok(Ok(view)) => Input::Session { state: view.state, detail: view.reason.unwrap_or_default() },
                            Ok(Err(SupervisorError::NotFound(_))) => Input::SessionDeleted,
                            _ => Input::SessionUnknown,
                        };
                        act.feed(input, ctx);
                    }));
                }
                Action::Schedule(timer, at_ms) => {
                    if let Some(t) = self.timers.remove(&timer) {
                        ctx.cancel_future(t);
                    }
                    let wait = Duration::from_millis(at_ms.saturating_sub(now_ms()));
                    let handle = ctx.run_later(wait, move |act, ctx| {
                        act.timers.remove(&timer);
                        act.feed(Input::Fired(timer), ctx);
                    });
                    self.timers.insert(timer, handle);
                }
                Action::Cancel(timer) => {
                    if let Some(t) = self.timers.remove(&timer) {
                        ctx.cancel_future(t);
                    }
                }
                Action::Finished(record) => {
                    for waiter in self.waiters.drain(..) {
                        // Harmless if the caller is gone.
                        let _ = waiter.send((*record).clone());
                    }
                    self.registry.do_send(Finished { id: record.id.clone() });
                    ctx.stop();
                    return;
                }
            }
        }
    }

    fn send(&mut self, idx: u32, message_id: String, typing: Duration, ctx: &mut Context<Self>) {
        // The machine has just written this recipient SENDING: that write
        // left the record here, so the store is not read again.
        let written = self.io.last.take().filter(|r| r.idx == idx && r.message_id.as_deref() == Some(message_id.as_str()));
        let read = || self.io.store.recipient(&self.io.id, idx);
        let r = match written.map(|r| Ok(Some(r))).unwrap_or_else(read) {
            Ok(Some(r)) => r,
            Ok(None) => {
                return self
                    .inputs
                    .push_back(Input::Sent { idx, result: SendResult::NotSent(format!("recipient {idx} is not in the store")) })
            }
            Err(e) => return self.inputs.push_back(Input::Sent { idx, result: SendResult::NotSent(e.to_string()) }),
        };
        let send = SendMessage {
            name: self.io.session.clone(),
            to: ChatId::from_trusted(r.chat_id),
            text: r.text,
            id: Some(message_id),
            typing,
            media: None,
        };
        let supervisor = self.supervisor.clone();
        let limit = self.config.whatsapp.send_timeout + typing + Duration::from_secs(10);
        let answer = async move { tokio::time::timeout(limit, supervisor.send(send)).await.ok().and_then(Result::ok) };
        ctx.spawn(actix::fut::wrap_future::<_, Self>(answer).map(move |answer, act, ctx| {
            act.feed(Input::Sent { idx, result: send_result(answer) }, ctx);
        }));
    }

    fn lookup(&mut self, idx: u32, message_id: String, ctx: &mut Context<Self>) {
        let r = match self.io.store.recipient(&self.io.id, idx) {
            Ok(Some(r)) => r,
            _ => return self.inputs.push_back(Input::LookedUp { idx, result: LookupResult::Failed }),
        };
        let lookup = LookupMessage { name: self.io.session.clone(), to: ChatId::from_trusted(r.chat_id), id: message_id };
        let supervisor = self.supervisor.clone();
        ctx.spawn(actix::fut::wrap_future::<_, Self>(async move { supervisor.send(lookup).await }).map(move |answer, act, ctx| {
            act.feed(Input::LookedUp { idx, result: lookup_result(answer) }, ctx);
        }));
    }
}

impl Actor for Campaign {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.machine.start(now_ms(), &mut rand::thread_rng(), &mut self.io);
        self.perform(ctx);
    }
}

impl Handler<SessionChanged> for Campaign {
    type Result = ();

    fn handle(&mut self, msg: SessionChanged, ctx: &mut Self::Context) {
        self.feed(Input::Session { state: msg.state, detail: msg.reason }, ctx);
    }
}

impl Handler<Acked> for Campaign {
    type Result = ();

    fn handle(&mut self, msg: Acked, ctx: &mut Self::Context) {
        self.feed(Input::Ack { idx: msg.idx, ack: msg.ack }, ctx);
    }
}

impl Handler<Control> for Campaign {
    type Result = ResponseFuture<Result<CampaignRecord, CommandError>>;

    fn handle(&mut self, msg: Control, ctx: &mut Self::Context) -> Self::Result {
        let result = self.machine.command(msg.0, now_ms(), &mut rand::thread_rng(), &mut self.io);
        let record = self.machine.record().clone();
        let waiting = match result {
            Ok(false) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                self.waiters.push(tx);
                Some(rx)
            }
            _ => None,
        };
        self.perform(ctx);
        Box::pin(async move {
            result?;
            match waiting {
                Some(rx) => rx.await.map_err(|_| CommandError::Unrecorded("the campaign stopped before the command took effect".into())),
                None => Ok(record),
            }
        })
    }
}

impl Handler<Halt> for Campaign {
    type Result = ();

    fn handle(&mut self, _msg: Halt, ctx: &mut Self::Context) {
        self.feed(Input::Halt, ctx);
    }
}
