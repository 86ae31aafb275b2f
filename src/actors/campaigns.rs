//! The Campaigns actor: the registry of Campaign actors.
//!
//! It creates campaigns (storing them before anything runs), starts a
//! [`Campaign`] actor for each campaign that is `RUNNING` or `PAUSED`
//! (again at boot: a campaign that was running when the daemon stopped
//! carries on), routes operator commands, forwards the Supervisor's session
//! changes to the campaigns of that session, and routes acks to the campaign
//! whose recipient the message belongs to.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use futures_util::future::LocalBoxFuture;

use crate::actors::campaign::{pacing_for, Acked, Campaign, CampaignCommand, Control, Halt, Replied};
use crate::actors::messages::{AdoptSession, DropSession, Finished, MessageAcked, MessageReceived, SessionChanged};
use crate::actors::supervisor::{GetSession, Supervisor, SupervisorError};
use crate::attachments::Attachments;
use crate::campaign::{CampaignRecord, CampaignState, RecipientRecord, Tally};
use crate::config::{Config, ConflictPolicy};
use crate::events::{Event, EventName, Events};
use crate::policy::campaign::{ack_applies, start_refusal, transition, Change, Command as Cmd, CommandError};
use crate::session_state::now_ms;
use crate::store::{OptOut, Store};
use crate::whatsapp::media::Media;

/// Why a campaign request failed; the HTTP layer maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    #[error("no campaign {0:?}")]
    NotFound(String),
    #[error("no session named {0:?}")]
    NoSession(String),
    #[error("{0}")]
    WrongState(String),
    /// The store failed (nothing was changed that a retry would repeat).
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    /// An operator's command the store did not take; nothing changed.
    #[error("{0}")]
    Unrecorded(String),
    /// A new campaign's attachment could not be written; nothing was
    /// created.
    #[error("storing the attachment: {0}; nothing was created")]
    Attachment(std::io::Error),
    #[error("{0}")]
    Internal(String),
}

/// Stores a new campaign (its attachment first, durably, then its record
/// and recipients) and starts it if `start`.
#[derive(Message)]
#[rtype(result = "Result<CampaignRecord, CampaignError>")]
pub struct CreateCampaign {
    pub record: CampaignRecord,
    pub recipients: Vec<RecipientRecord>,
    pub start: bool,
    /// The file sent to every recipient, the rendered text its caption
    /// (checked by the API: type, `[media]` limit, content).
    pub attachment: Option<Media>,
}

/// An operator's command on a campaign.
#[derive(Message)]
#[rtype(result = "Result<CampaignRecord, CampaignError>")]
pub struct Command {
    pub id: String,
    pub command: CampaignCommand,
}

/// Cancels every campaign of a session that has not ended; answers how many.
#[derive(Message)]
#[rtype(result = "Result<u32, CampaignError>")]
pub struct ClearQueue {
    pub session: String,
}

/// Stops every Campaign at a safe point, keeping their states (shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct HaltAll;

/// The registry. See the module docs.
pub struct Campaigns {
    config: Arc<Config>,
    store: Store,
    supervisor: Addr<Supervisor>,
    events: Events,
    tally: Tally,
    running: HashMap<String, (String, Addr<Campaign>)>,
}

impl Campaigns {
    pub fn new(config: Arc<Config>, store: Store, supervisor: Addr<Supervisor>, events: Events, tally: Tally) -> Self {
        Self { config, store, supervisor, events, tally, running: HashMap::new() }
    }

    /// Whether campaigns of `session` run on this node: always on one node;
    /// in cluster mode while it holds the session's lease.
    fn runs_here(&self, session: &str) -> bool {
        self.store.fences().is_none_or(|f| f.generation(session).is_some())
    }

    /// Starts the campaign's actor, here if its session runs here; else
    /// the session's owner starts it when it takes the session (cluster).
    fn spawn(&mut self, record: CampaignRecord, ctx: &mut Context<Self>) -> Result<(), CampaignError> {
        if !self.runs_here(&record.session) || self.running.contains_key(&record.id) {
            return Ok(());
        }
        let pacing = pacing_for(&record, &self.config).map_err(CampaignError::Internal)?;
        let (id, session) = (record.id.clone(), record.session.clone());
        let actor = Campaign::new(
            record,
            self.config.clone(),
            pacing,
            self.store.clone(),
            self.supervisor.clone(),
            ctx.address().recipient(),
            self.events.clone(),
            self.tally.clone(),
        );
        self.running.insert(id, (session, actor.start()));
        Ok(())
    }

    fn stored(&self, id: &str) -> Result<CampaignRecord, CampaignError> {
        self.store.campaign(id)?.ok_or_else(|| CampaignError::NotFound(id.to_string()))
    }
}

impl Actor for Campaigns {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let records = match self.store.campaigns() {
            Ok(records) => {
                // Before any creation can run (this actor creates them):
                // attachments a crash left without their record. A few
                // directory entries, so on this thread.
                let known = records.iter().map(|r| r.id.clone()).collect();
                match Attachments::of(&self.config).sweep(&known, Attachments::orphan_age(&self.config)) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(removed = n, "removed attachments of campaigns that were never created"),
                    // Harmless: the orphans only take disk space.
                    Err(e) => tracing::warn!(error = %e, "cannot sweep campaign attachments"),
                }
                records
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read campaigns from the store");
                Vec::new()
            }
        };
        // In cluster mode a session's campaigns start with its lease
        // (`AdoptSession`), and `runs_here` holds none yet.
        for record in records {
            if matches!(record.state, CampaignState::Running | CampaignState::Paused) && self.runs_here(&record.session) {
                tracing::info!(campaign = %record.id, session = %record.session, state = %record.state, "restoring campaign");
                let id = record.id.clone();
                if let Err(e) = self.spawn(record, ctx) {
                    tracing::error!(campaign = %id, error = %e, "cannot restore campaign");
                }
            }
        }
    }
}

impl Handler<CreateCampaign> for Campaigns {
    type Result = ResponseActFuture<Self, Result<CampaignRecord, CampaignError>>;

    fn handle(&mut self, msg: CreateCampaign, _ctx: &mut Self::Context) -> Self::Result {
        let (supervisor, store, config, tally) = (self.supervisor.clone(), self.store.clone(), self.config.clone(), self.tally.clone());
        Box::pin(
            async move {
                let session = match supervisor.send(GetSession { name: msg.record.session.clone() }).await {
                    Ok(Ok(view)) => view,
                    Ok(Err(SupervisorError::NotFound(name) | SupervisorError::InvalidName(name))) => {
                        return Err(CampaignError::NoSession(name))
                    }
                    Ok(Err(e)) => return Err(CampaignError::Internal(e.to_string())),
                    Err(e) => return Err(CampaignError::Internal(e.to_string())),
                };
                // A start that waiting cannot help is refused before
                // anything is stored: nothing is created.
                let takeover = config.restart.conflict == ConflictPolicy::Takeover;
                if msg.start {
                    if let Some(refused) = start_refusal(&session.name, session.state, takeover, Cmd::Start) {
                        return Err(CampaignError::WrongState(refused));
                    }
                }
                let mut record = msg.record;
                pacing_for(&record, &config).map_err(CampaignError::WrongState)?;
                if msg.start {
                    record.state = CampaignState::Running;
                }
                // On the blocking pool: a 100,000-recipient write takes
                // seconds, and this actor's thread also runs the Supervisor.
                let (recipients, attachment) = (msg.recipients, msg.attachment);
                let attachments = Attachments::of(&config);
                tokio::task::spawn_blocking(move || {
                    // The file is on disk before the record that names it:
                    // no campaign ever has an attachment it cannot find
                    // (unless the file is lost later, which its send
                    // detects).
                    if let Some(media) = attachment {
                        record.attachment = Some(attachments.write(&record.id, &media).map_err(CampaignError::Attachment)?);
                    }
                    // The counts go in before the record is stored, so no
                    // view or `/metrics` ever finds a campaign it must
                    // count itself.
                    tally.set(&record.id, Tally::count(&recipients));
                    let stored = store.create_campaign(&record, &recipients);
                    if stored.is_err() {
                        tally.remove(&record.id);
                        // The attachment stays: the record may be in the
                        // store even so (a failed flush after the insert)
                        // and would come back without its file. The next
                        // start's sweep removes a file no record names.
                    }
                    drop(recipients);
                    crate::procfs::release_free_memory();
                    stored.map(|()| record).map_err(CampaignError::Store)
                })
                .await
                .map_err(|e| CampaignError::Internal(format!("storing the campaign: {e}")))?
            }
            .into_actor(self)
            .map(move |stored, act, ctx| {
                let record = stored?;
                tracing::info!(campaign = %record.id, session = %record.session, event = "campaign.status", state = %record.state, recipients = record.total, duplicates = record.duplicates, "campaign created");
                if record.state == CampaignState::Running {
                    act.spawn(record.clone(), ctx)?;
                }
                Ok(record)
            }),
        )
    }
}

impl Handler<Command> for Campaigns {
    type Result = ResponseActFuture<Self, Result<CampaignRecord, CampaignError>>;

    /// A start or resume first asks the Supervisor for the session's
    /// state: one that only a person can mend (or a stopped one) refuses
    /// the command ([`start_refusal`]: 409, nothing changed). A command
    /// the campaign's state does not allow is refused first, with its own
    /// message.
    fn handle(&mut self, msg: Command, ctx: &mut Self::Context) -> Self::Result {
        if !matches!(msg.command, Cmd::Start | Cmd::Resume) {
            return Box::pin(self.command(msg, ctx).into_actor(self));
        }
        let session = match self.running.get(&msg.id) {
            Some((session, _)) => session.clone(),
            None => {
                let checked = self.stored(&msg.id).and_then(|r| {
                    transition(r.state, msg.command).map_err(CampaignError::WrongState)?;
                    Ok(r.session)
                });
                match checked {
                    Ok(session) => session,
                    Err(e) => return Box::pin(fut::ready(Err(e))),
                }
            }
        };
        let supervisor = self.supervisor.clone();
        let takeover = self.config.restart.conflict == ConflictPolicy::Takeover;
        let ask = GetSession { name: session.clone() };
        Box::pin(async move { supervisor.send(ask).await }.into_actor(self).then(move |answer, act, ctx| {
            let refused = match answer {
                Ok(Ok(view)) => start_refusal(&session, view.state, takeover, msg.command).map(CampaignError::WrongState),
                Ok(Err(SupervisorError::NotFound(_))) => Some(CampaignError::WrongState(format!(
                    "session {session} no longer exists: create the campaign again on a session that does"
                ))),
                Ok(Err(e)) => Some(CampaignError::Internal(e.to_string())),
                Err(e) => Some(CampaignError::Internal(e.to_string())),
            };
            let done: actix::fut::LocalBoxActorFuture<Self, _> = match refused {
                Some(e) => Box::pin(fut::ready(Err(e))),
                None => Box::pin(act.command(msg, ctx).into_actor(act)),
            };
            done
        }))
    }
}

impl Campaigns {
    /// Carries out an operator's command: through the campaign's actor if
    /// it runs, else on the stored record (one that starts gets an actor).
    fn command(&mut self, msg: Command, ctx: &mut Context<Self>) -> LocalBoxFuture<'static, Result<CampaignRecord, CampaignError>> {
        if let Some((_, addr)) = self.running.get(&msg.id) {
            let addr = addr.clone();
            return Box::pin(async move {
                addr.send(Control(msg.command))
                    .await
                    .map_err(|e| CampaignError::Internal(format!("campaign actor unavailable: {e}")))?
                    .map_err(|e| match e {
                        CommandError::Refused(m) => CampaignError::WrongState(m),
                        CommandError::Unrecorded(m) => CampaignError::Unrecorded(m),
                    })
            });
        }
        let result = (|| {
            let record = self.stored(&msg.id)?;
            let (state, reason) = transition(record.state, msg.command).map_err(CampaignError::WrongState)?;
            let record = record.entering(state, reason.map(|r| r.as_string()), now_ms());
            self.store.put_campaign(&record)?;
            tracing::info!(campaign = %record.id, session = %record.session, event = "campaign.status", state = %state, reason = record.reason.as_deref().unwrap_or(""), "campaign {state}");
            if state == CampaignState::Running {
                self.spawn(record.clone(), ctx)?;
            }
            Ok(record)
        })();
        Box::pin(async move { result })
    }
}

impl Handler<ClearQueue> for Campaigns {
    type Result = ResponseActFuture<Self, Result<u32, CampaignError>>;

    fn handle(&mut self, msg: ClearQueue, ctx: &mut Self::Context) -> Self::Result {
        let records = match self.store.campaigns() {
            Ok(r) => r,
            Err(e) => return Box::pin(fut::ready(Err(CampaignError::Store(e)))),
        };
        let ids: Vec<String> = records.into_iter().filter(|r| r.session == msg.session && !r.state.is_final()).map(|r| r.id).collect();
        let me = ctx.address();
        Box::pin(
            async move {
                let mut n = 0;
                for id in ids {
                    if let Ok(Ok(_)) = me.send(Command { id, command: CampaignCommand::Cancel }).await {
                        n += 1;
                    }
                }
                Ok(n)
            }
            .into_actor(self),
        )
    }
}

impl Handler<SessionChanged> for Campaigns {
    type Result = ();

    fn handle(&mut self, msg: SessionChanged, _ctx: &mut Self::Context) {
        for (session, addr) in self.running.values() {
            if *session == msg.name {
                addr.do_send(msg.clone());
            }
        }
    }
}

impl Handler<MessageAcked> for Campaigns {
    type Result = ();

    fn handle(&mut self, msg: MessageAcked, _ctx: &mut Self::Context) {
        let Ok(Some((campaign, idx))) = self.store.message_owner(&msg.id) else { return };
        match self.running.get(&campaign) {
            Some((_, addr)) => addr.do_send(Acked { idx, ack: msg.ack }),
            None => {
                // Finished campaigns still learn their acks. Harmless if the
                // write fails: an ack is a record no send depends on.
                if let Ok(Some(mut r)) = self.store.recipient(&campaign, idx) {
                    if ack_applies(&r, msg.ack) {
                        Change::Ack { ack: msg.ack }.apply(&mut r, now_ms());
                        let _ = self.store.put_recipient(&campaign, &r, false);
                    }
                }
            }
        }
    }
}

impl Handler<MessageReceived> for Campaigns {
    type Result = ();

    /// A contact wrote: `message.received`; the contact is noted as one
    /// that wrote (its next campaign message is no first contact); an
    /// opt-out keyword puts it on the session's opt-out list
    /// (`contact.opted_out`); running campaigns of the session learn of
    /// the reply.
    fn handle(&mut self, msg: MessageReceived, _ctx: &mut Self::Context) {
        let detail = serde_json::json!({"from": msg.from, "id": msg.id, "type": msg.kind, "body": msg.body, "at_ms": msg.at_ms});
        self.events.publish(Event::session(EventName::MessageReceived, &msg.session).detail(detail));
        // Harmless if it fails: the contact's next message counts as a
        // first contact, which only makes the cap stricter.
        let _ = self.store.note_contact(&msg.session, &msg.from, msg.at_ms);
        let opted_out = crate::optout::is_opt_out(&msg.body, &self.config.opt_outs.keywords);
        if opted_out {
            let entry = OptOut { phone: msg.from.clone(), at_ms: msg.at_ms, source: "reply".into() };
            let mut detail = serde_json::json!({"phone": msg.from, "at_ms": msg.at_ms, "source": "reply", "message_id": msg.id});
            match self.store.add_opt_outs(&msg.session, std::slice::from_ref(&entry)) {
                Ok(_) => tracing::info!(session = %msg.session, event = "contact.opted_out", phone = %msg.from, "contact opted out"),
                Err(e) => {
                    // Not on disk yet, but on the list: the store keeps it in
                    // memory, checks it before every send like a stored one,
                    // and writes it before the next campaign send (no send
                    // happens while writes fail). Only a daemon stop before
                    // then loses it, so the operator is told.
                    tracing::error!(session = %msg.session, phone = %msg.from, error = %e, "an opt-out is not on disk yet (kept in memory until the store takes it); if the daemon stops first, add it with POST /api/sessions/{{name}}/opt-outs");
                    detail["stored"] = serde_json::Value::Bool(false);
                }
            }
            self.events.publish(Event::session(EventName::ContactOptedOut, &msg.session).detail(detail));
        }
        let replied = Replied { phone: msg.from.clone(), at_ms: msg.at_ms, opted_out };
        for (session, addr) in self.running.values() {
            if *session == msg.session {
                addr.do_send(replied.clone());
            }
        }
    }
}

impl Handler<Finished> for Campaigns {
    type Result = ();

    fn handle(&mut self, msg: Finished, _ctx: &mut Self::Context) {
        self.running.remove(&msg.id);
    }
}

impl Handler<AdoptSession> for Campaigns {
    type Result = ();

    fn handle(&mut self, msg: AdoptSession, ctx: &mut Self::Context) {
        let records = match self.store.campaigns() {
            Ok(records) => records,
            Err(e) => {
                // The session runs without its campaigns until the store
                // answers: the next acquisition (after a release) or a
                // restart restores them; nothing is sent meanwhile.
                tracing::error!(session = %msg.session, error = %e, "cannot read the session's campaigns from the store");
                return;
            }
        };
        for record in records {
            if record.session == msg.session && matches!(record.state, CampaignState::Running | CampaignState::Paused) {
                tracing::info!(campaign = %record.id, session = %record.session, state = %record.state, "taking over campaign");
                let id = record.id.clone();
                if let Err(e) = self.spawn(record, ctx) {
                    tracing::error!(campaign = %id, error = %e, "cannot restore campaign");
                }
            }
        }
    }
}

impl Handler<DropSession> for Campaigns {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: DropSession, _ctx: &mut Self::Context) -> Self::Result {
        let ids: Vec<String> = self.running.iter().filter(|(_, (s, _))| *s == msg.session).map(|(id, _)| id.clone()).collect();
        let addrs: Vec<_> = ids.iter().filter_map(|id| self.running.remove(id)).map(|(_, a)| a).collect();
        Box::pin(
            async move {
                for a in addrs {
                    // Harmless if it fails: the actor is gone already.
                    let _ = a.send(Halt).await;
                }
            }
            .into_actor(self),
        )
    }
}

impl Handler<HaltAll> for Campaigns {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _msg: HaltAll, _ctx: &mut Self::Context) -> Self::Result {
        let addrs: Vec<_> = self.running.drain().map(|(_, (_, a))| a).collect();
        Box::pin(
            async move {
                for a in addrs {
                    let _ = a.send(Halt).await;
                }
            }
            .into_actor(self),
        )
    }
}
