//! The Campaign actor: one per active campaign, the shell of its
//! [`Machine`] (`src/policy/campaign.rs`, where every decision and the
//! crash-safety argument live). It feeds the machine what happens (session
//! changes from the Supervisor, send and lookup outcomes, acks, operator
//! commands, timers) and carries out what the machine asks: sled reads and
//! writes (their result goes back at once), sends and lookups through the
//! Supervisor, timers, events and logs, and the shared recipient counts. It
//! is the only writer of its campaign's record and recipients while it
//! runs.
//!
//! Beside this file, in `campaign/`: `shell.rs` (the machine's `Shell`: the
//! action queue, and what the Supervisor's answers mean), `records.rs` (the
//! shell's store I/O) and `report.rs` (notes → events and log lines).

mod records;
mod report;
mod shell;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use self::records::Records;
use self::report::Report;
use self::shell::{lookup_result, send_result, session_input, Action, Io};
use crate::actors::messages::{Finished, SessionChanged};
use crate::actors::supervisor::{GetSession, LookupMessage, SendMessage, Supervisor};
use crate::attachments::Attachments;
use crate::campaign::{CampaignRecord, Tally};
use crate::config::Config;
use crate::events::Events;
use crate::policy::campaign::{CommandError, Input, LookupResult, Machine, SendResult, Settings, Timer};
use crate::policy::pacing::{Pacing, QuietHours};
use crate::session_state::now_ms;
use crate::store::Store;
use crate::whatsapp::media::Media;
use crate::whatsapp::number::ChatId;

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
    // The number's pacing, slowed down by the campaign's own: its gap, its
    // typing, and its quiet hours besides the number's.
    let mut pacing = config.number_pacing()?;
    if let Some(q) = record.pacing.quiet_hours.as_deref().filter(|q| !q.trim().is_empty()) {
        pacing.quiet_hours.push(q.parse::<QuietHours>()?);
    }
    pacing.min_delay = record.pacing.min_delay;
    pacing.max_delay = record.pacing.max_delay;
    pacing.typing_per_char = record.pacing.typing.then_some(config.campaigns.typing_per_char);
    Ok(pacing)
}

/// The longest a send of this campaign may take, "typing…" excluded: the
/// page's commands (one for a text; for an attachment, one per piece the
/// file is copied into the page in, and the send), each bounded by
/// `whatsapp.send_timeout`, then the wait for the ack, plus 10 s. The actor
/// waits this long for a send's answer: one given up on while the Session
/// still copies the file would be looked up before it can have arrived,
/// and sent again.
pub fn send_bound(config: &Config, record: &CampaignRecord) -> Duration {
    let commands = record.attachment.as_ref().map_or(1, |a| crate::whatsapp::page::media_send_commands(a.size));
    config.whatsapp.send_timeout.saturating_mul(commands) + config.whatsapp.ack_wait + Duration::from_secs(10)
}

/// The machine's settings from `[campaigns]` (and the campaign's send
/// bound, [`send_bound`]).
pub fn settings_for(config: &Config, record: &CampaignRecord) -> Settings {
    let c = &config.campaigns;
    Settings {
        send_attempts: c.send_attempts,
        retry_base: c.retry_base,
        resume_grace: c.resume_grace,
        timelock_cooldown: c.timelock_cooldown,
        store_retry: Duration::from_secs(1),
        lookup_retry: Duration::from_secs(2),
        // At least as long as the actor waits for a send's answer (see
        // `Campaign::send`), so the number's busy mark never ends first.
        send_timeout: send_bound(config, record) + c.typing_max,
        max_opt_out_rate: c.max_opt_out_rate,
        opt_out_min_sent: c.opt_out_min_sent,
        boot: crate::session_state::boot_id(),
        conflict_takeover: config.restart.conflict == crate::config::ConflictPolicy::Takeover,
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
    /// Where the campaign's attachment is kept.
    attachments: Attachments,
    /// The attachment, read and checked at the first send of this actor's
    /// run and kept (one copy, shared with every send) until it stops;
    /// `None` before, and for a campaign without one.
    attachment: Option<Media>,
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
        let io = Io { records: Records::new(&record, store), report: Report::new(&record, events), tally, actions: VecDeque::new() };
        let machine = Machine::new(record.clone(), pacing, settings_for(&config, &record));
        let attachments = Attachments::of(&config);
        Self {
            machine,
            io,
            config,
            supervisor,
            registry,
            timers: HashMap::new(),
            waiters: Vec::new(),
            inputs: VecDeque::new(),
            attachments,
            attachment: None,
        }
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
                    let ask = GetSession { name: self.io.records.session.clone() };
                    let supervisor = self.supervisor.clone();
                    ctx.spawn(
                        actix::fut::wrap_future::<_, Self>(async move { supervisor.send(ask).await })
                            .map(|answer, act, ctx| act.feed(session_input(answer), ctx)),
                    );
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

    /// Sends recipient `idx` (already stored `SENDING` under `message_id`):
    /// its text, or the attachment with the text as its caption. The
    /// attachment is read first if this run has not read it yet; if it
    /// cannot be read as uploaded, nothing is sent
    /// ([`SendResult::AttachmentUnreadable`]).
    fn send(&mut self, idx: u32, message_id: String, typing: Duration, ctx: &mut Context<Self>) {
        let r = match self.io.records.for_send(idx, &message_id) {
            Ok(r) => r,
            Err(e) => return self.inputs.push_back(Input::Sent { idx, result: SendResult::NotSent(e) }),
        };
        let send = SendMessage {
            name: self.io.records.session.clone(),
            to: ChatId::from_trusted(r.chat_id),
            text: r.text,
            id: Some(message_id),
            typing,
            media: self.attachment.clone(),
        };
        let Some(meta) = self.machine.record().attachment.clone().filter(|_| self.attachment.is_none()) else {
            return self.dispatch(idx, send, ctx);
        };
        // Read on the blocking pool (up to 100 MB, and its SHA-256); the
        // machine waits for this send's outcome meanwhile.
        let (attachments, id) = (self.attachments.clone(), self.io.records.id.clone());
        let read = async move { tokio::task::spawn_blocking(move || attachments.read(&id, &meta)).await };
        ctx.spawn(actix::fut::wrap_future::<_, Self>(read).map(move |read, act, ctx| {
            if act.machine.is_done() {
                // Halted meanwhile: the recipient stays SENDING, and the
                // next start's lookup finds it was not sent.
                return;
            }
            match read {
                Ok(Ok(media)) => {
                    act.attachment = Some(media.clone());
                    act.dispatch(idx, SendMessage { media: Some(media), ..send }, ctx);
                }
                Ok(Err(e)) => {
                    tracing::error!(campaign = %act.io.records.id, recipient = idx, error = %e, "attachment unreadable: nothing sent");
                    act.feed(Input::Sent { idx, result: SendResult::AttachmentUnreadable(e.to_string()) }, ctx);
                }
                Err(e) => {
                    let e = format!("reading the attachment: {e}");
                    act.feed(Input::Sent { idx, result: SendResult::AttachmentUnreadable(e) }, ctx);
                }
            }
        }));
    }

    /// Hands a send to the Supervisor; its answer is the machine's input.
    fn dispatch(&mut self, idx: u32, send: SendMessage, ctx: &mut Context<Self>) {
        let supervisor = self.supervisor.clone();
        let limit = send_bound(&self.config, self.machine.record()) + send.typing;
        let answer = async move { tokio::time::timeout(limit, supervisor.send(send)).await.ok().and_then(Result::ok) };
        ctx.spawn(actix::fut::wrap_future::<_, Self>(answer).map(move |answer, act, ctx| {
            act.feed(Input::Sent { idx, result: send_result(answer) }, ctx);
        }));
    }

    fn lookup(&mut self, idx: u32, message_id: String, ctx: &mut Context<Self>) {
        let Ok(r) = self.io.records.read(idx) else {
            return self.inputs.push_back(Input::LookedUp { idx, result: LookupResult::Failed });
        };
        let lookup = LookupMessage { name: self.io.records.session.clone(), to: ChatId::from_trusted(r.chat_id), id: message_id };
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

/// A contact of the campaign's session wrote to the account.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct Replied {
    /// E.164 digits, no `+`.
    pub phone: String,
    pub at_ms: u64,
    /// The text was an opt-out keyword (the opt-out list has the number).
    pub opted_out: bool,
}

impl Handler<Replied> for Campaign {
    type Result = ();

    fn handle(&mut self, msg: Replied, ctx: &mut Self::Context) {
        if let Some(&idx) = self.io.records.by_phone.get(&msg.phone) {
            self.feed(Input::Reply { idx, at_ms: msg.at_ms, opted_out: msg.opted_out }, ctx);
        }
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
