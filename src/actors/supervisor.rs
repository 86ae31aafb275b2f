//! The Supervisor actor: owns the set of sessions and applies the restart
//! policy to them.
//!
//! It is the only writer of session records and status history. It starts a
//! [`Session`] actor per session that should run (staggered at boot), turns
//! a Session's [`SessionEnded`] into the decision of the pure restart policy
//! ([`Restarts::on_end`]: backoff and restart, give up as `FAILED` when the
//! budget is spent, wipe and relink, block), judges the health measurements
//! Sessions report ([`SessionHealth`]), raises alerts through the
//! [`Notifier`], and answers the HTTP layer's requests. Each Session carries
//! a generation number; reports from an older generation (a Session that was
//! already replaced) are ignored. Once a second it checks that every running
//! Session's mailbox is still open: a Session that panicked is rebuilt.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::actors::driver::Driver;
use crate::actors::messages::{CampaignLinks, SessionChanged, SessionEnded, SessionHealth, SessionStatus};
use crate::actors::notifier::{Alert, Notifier};
use crate::actors::session::{self, LogoutPage, Reports, SendOutcome, SendText, Session};
use crate::config::{Config, KeyFilesAction};
use crate::events::{Event, EventName, Events};
use crate::policy::slot::{EndPlan, HealthLimits, SessionSlot};
use crate::policy::{EndReason, Policy};
use crate::profile;
use crate::session_state::{now_ms, validate_name, SessionState};
use crate::store::{Desired, HistoryEntry, SessionRecord, Store, StoreError};
use crate::whatsapp::number::ChatId;

/// Why a request to the Supervisor failed. The HTTP layer maps each variant
/// to a status code.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("{0}")]
    InvalidName(String),
    #[error("no session named {0:?}")]
    NotFound(String),
    #[error("a session named {0:?} already exists")]
    Exists(String),
    /// A bound of `[limits]` was reached; the message names it.
    #[error("{0}")]
    TooMany(String),
    #[error("session {name:?} is {state}, {needed}")]
    WrongState { name: String, state: SessionState, needed: &'static str },
    #[error(transparent)]
    Send(#[from] session::SendError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

pub use crate::policy::slot::SessionView;

type Reply<T> = Result<T, SupervisorError>;

/// Creates a session; starts it if `start`.
#[derive(Message)]
#[rtype(result = "Reply<SessionView>")]
pub struct CreateSession {
    pub name: String,
    pub start: bool,
}

/// An operator's command on one session.
#[derive(Message, Clone, Copy, Debug, PartialEq, Eq)]
#[rtype(result = "Reply<SessionView>")]
pub enum Command {
    Start,
    Stop,
    Restart,
    Logout,
    Delete,
    /// Clear the restart budget and restart a `FAILED` or `BLOCKED` session.
    Recover,
}

/// A command addressed to a session by name.
#[derive(Message)]
#[rtype(result = "Reply<SessionView>")]
pub struct SessionCommand {
    pub name: String,
    pub command: Command,
}

#[derive(Message)]
#[rtype(result = "Reply<SessionView>")]
pub struct GetSession {
    pub name: String,
}

#[derive(Message)]
#[rtype(result = "Vec<SessionView>")]
pub struct ListSessions;

/// The current QR string; fails unless the session is `SCAN_QR`.
#[derive(Message)]
#[rtype(result = "Reply<String>")]
pub struct GetQr {
    pub name: String,
}

/// Sends a text, or a media message, through a session.
#[derive(Message)]
#[rtype(result = "Reply<SendOutcome>")]
pub struct SendMessage {
    pub name: String,
    pub to: ChatId,
    pub text: String,
    /// The key id to use; a fresh one when `None`. Campaigns choose it
    /// themselves and store it before the send.
    pub id: Option<String>,
    /// "typing…" time before the send.
    pub typing: Duration,
    /// A file to send as a media message, `text` its caption.
    pub media: Option<crate::whatsapp::media::Media>,
}

/// Looks a sent message up in a session's page (see [`session::Lookup`]).
#[derive(Message)]
#[rtype(result = "Reply<Option<i8>>")]
pub struct LookupMessage {
    pub name: String,
    pub to: ChatId,
    pub id: String,
}

/// Fault injection for tests (debug builds only): makes the session's
/// actor panic.
#[cfg(debug_assertions)]
#[derive(Message)]
#[rtype(result = "Reply<()>")]
pub struct InjectPanic {
    pub name: String,
}

#[cfg(debug_assertions)]
impl Handler<InjectPanic> for Supervisor {
    type Result = Reply<()>;

    fn handle(&mut self, msg: InjectPanic, _ctx: &mut Self::Context) -> Self::Result {
        let addr = self.slot(&msg.name)?.addr.clone();
        let addr = addr.ok_or_else(|| SupervisorError::Internal("session is not running".into()))?;
        addr.do_send(session::InjectPanic);
        Ok(())
    }
}

/// Fault injection for tests (debug builds only): the Supervisor blocks
/// its thread for `seconds`, as a deadlock would.
#[cfg(debug_assertions)]
#[derive(Message)]
#[rtype(result = "()")]
pub struct Wedge {
    pub seconds: u64,
}

#[cfg(debug_assertions)]
impl Handler<Wedge> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: Wedge, _ctx: &mut Self::Context) {
        tracing::warn!(seconds = msg.seconds, "fault injection: the supervisor is wedged");
        std::thread::sleep(std::time::Duration::from_secs(msg.seconds.min(60)));
    }
}

/// Stops every session (browsers closed, profiles and desired states kept)
/// and flushes the store: the daemon is shutting down.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ShutdownAll;

/// A session: its pure state ([`SessionSlot`]) and its actor parts.
struct Slot {
    session: SessionSlot,
    addr: Option<Addr<Session>>,
    /// The scheduled restart.
    timer: Option<SpawnHandle>,
}

impl Slot {
    fn new(record: SessionRecord) -> Self {
        Self { session: SessionSlot::new(record), addr: None, timer: None }
    }
}

/// The Supervisor. See the module docs.
pub struct Supervisor {
    config: Arc<Config>,
    policy: Policy,
    store: Store,
    driver: Addr<Driver>,
    notifier: Addr<Notifier>,
    /// Where session state changes go, and where Sessions send acks and
    /// incoming messages (the Campaigns registry).
    campaigns: CampaignLinks,
    events: Events,
    slots: BTreeMap<String, Slot>,
}

impl Supervisor {
    /// `campaigns` leads to the Campaigns registry (which needs the
    /// Supervisor's address in turn: see `daemon::run`).
    pub fn new(
        config: Arc<Config>,
        store: Store,
        driver: Addr<Driver>,
        notifier: Addr<Notifier>,
        events: Events,
        campaigns: CampaignLinks,
    ) -> Self {
        Self { policy: config.restart.policy(), config, store, driver, notifier, campaigns, events, slots: BTreeMap::new() }
    }

    /// Appends a decision event to the session's history.
    fn record_event(&self, name: &str, event: EventName, reason: Option<String>, detail: serde_json::Value) {
        let Some(slot) = self.slots.get(name) else { return };
        let entry = HistoryEntry {
            state: slot.session.record.state,
            reason,
            at_ms: now_ms(),
            event: event.as_str().to_string(),
            detail: Some(detail),
        };
        // Harmless if it fails: history is a record no decision reads, and
        // the store's health (503 /health, paused campaigns) reports it.
        if let Err(e) = self.store.append_history(name, &entry) {
            tracing::error!(session = %name, error = %e, "cannot store session history");
        }
        self.events.publish(
            Event::session(event, name).session_state(entry.state, entry.reason.as_deref()).detail(entry.detail.unwrap_or_default()),
        );
    }

    fn alert(&self, name: &str, event: EventName, message: String, detail: serde_json::Value) {
        let Some(slot) = self.slots.get(name) else { return };
        self.notifier.do_send(Alert {
            event,
            session: name.to_string(),
            state: Some(slot.session.record.state.as_str().to_string()),
            reason: slot.session.record.reason.clone(),
            message,
            at_ms: now_ms(),
            detail,
        });
    }

    /// Records a state change: store (flushed), history, log, restart
    /// bookkeeping and alerts.
    fn set_state(&mut self, name: &str, state: SessionState, reason: Option<String>) {
        let policy = self.policy;
        let Some(slot) = self.slots.get_mut(name) else { return };
        let Some(changed) = slot.session.set_state(&policy, state, reason.clone(), now_ms()) else { return };
        // Harmless if it fails: the record in memory is what supervision
        // acts on, and at boot every session starts from STARTING(queued)
        // whatever state was stored. The store's health reports the failure.
        if let Err(e) = self.store.put_session(&slot.session.record).and_then(|_| self.store.append_history(name, &changed.entry)) {
            tracing::error!(session = %name, error = %e, "cannot store session status");
        }
        let reason = reason.as_deref().unwrap_or("");
        match state {
            SessionState::LoggedOut | SessionState::Conflict => {
                tracing::warn!(session = %name, event = "session.status", state = %state, reason, "session {state}")
            }
            SessionState::Blocked | SessionState::Failed => {
                tracing::error!(session = %name, event = "session.status", state = %state, reason, "session {state}")
            }
            _ => tracing::info!(session = %name, event = "session.status", state = %state, reason, "session {state}"),
        }
        self.events.publish(Event::session(EventName::SessionStatus, name).session_state(state, Some(reason).filter(|r| !r.is_empty())));
        self.campaigns.changes.do_send(SessionChanged { name: name.to_string(), state, reason: reason.to_string() });
        if changed.alert {
            let message = format!("session {name} is {state} ({reason})");
            self.alert(name, EventName::SessionStatus, message, serde_json::Value::Null);
        }
    }

    /// Stores a session's record (the linked account, `me`). Harmless if it
    /// fails: memory is what supervision acts on, a profile that reconnects
    /// reports `me` again, and the store's health reports the failure.
    fn save(&self, name: &str) {
        if let Some(slot) = self.slots.get(name) {
            if let Err(e) = self.store.put_session(&slot.session.record) {
                tracing::error!(session = %name, error = %e, "cannot store session");
            }
        }
    }

    /// Records what the operator asked for before acting on it. Errors: the
    /// write failed; memory is left as it was and the command fails (503),
    /// so a restart never brings back what the operator was told is gone.
    fn set_desired(&mut self, name: &str, desired: Desired) -> Result<(), SupervisorError> {
        let slot = self.slots.get_mut(name).ok_or_else(|| SupervisorError::NotFound(name.to_string()))?;
        let before = slot.session.record.desired;
        slot.session.record.desired = desired;
        if let Err(e) = self.store.put_session(&slot.session.record) {
            slot.session.record.desired = before;
            tracing::error!(session = %name, error = %e, "cannot store the operator's command; nothing was done");
            return Err(e.into());
        }
        Ok(())
    }

    /// Starts a Session actor unless one runs.
    fn start_session(&mut self, name: &str, ctx: &mut Context<Self>) {
        let Some(slot) = self.slots.get_mut(name) else { return };
        if slot.addr.is_some() {
            return;
        }
        if let Some(timer) = slot.timer.take() {
            ctx.cancel_future(timer);
        }
        slot.session.generation += 1;
        let linked = slot.session.record.me.is_some();
        let reports = Reports {
            status: ctx.address().recipient(),
            ended: ctx.address().recipient(),
            health: ctx.address().recipient(),
            acks: self.campaigns.acks.clone(),
            incoming: self.campaigns.incoming.clone(),
        };
        let session = Session::new(name.to_string(), slot.session.generation, self.config.clone(), self.driver.clone(), reports, linked);
        slot.addr = Some(session.start());
        self.set_state(name, SessionState::Starting, None);
    }

    /// Stops the Session actor (if any) and waits for its browser to close.
    fn stop_actor(&mut self, name: &str, ctx: &mut Context<Self>) -> impl std::future::Future<Output = ()> {
        let addr = self.slots.get_mut(name).and_then(|slot| {
            slot.session.generation += 1; // Reports of the old actor are void now.
            if let Some(timer) = slot.timer.take() {
                ctx.cancel_future(timer);
            }
            slot.session.next_attempt_ms = None;
            slot.addr.take()
        });
        async move {
            if let Some(addr) = addr {
                let _ = tokio::time::timeout(Duration::from_secs(20), addr.send(session::Shutdown)).await;
            }
        }
    }

    /// The Session's run is over for `reason` (it has stopped, or is being
    /// stopped): ask the policy and carry out its decision.
    fn on_end(&mut self, name: &str, reason: EndReason, ctx: &mut Context<Self>) {
        let policy = self.policy;
        let Some(slot) = self.slots.get_mut(name) else { return };
        slot.addr = None;
        let plan = slot.session.on_end(&policy, reason, now_ms(), &mut rand::thread_rng());
        let text = Some(reason.as_str().to_string());
        match plan {
            EndPlan::Restart { delay, at_ms: _, attempt } => {
                let generation = slot.session.generation;
                let owned = name.to_string();
                slot.timer = Some(ctx.run_later(delay, move |act, ctx| {
                    let due = act.slots.get(&owned).is_some_and(|s| {
                        s.session.generation == generation && s.addr.is_none() && s.session.record.desired == Desired::Running
                    });
                    if due {
                        act.start_session(&owned, ctx);
                    }
                }));
                let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                self.set_state(name, SessionState::Reconnecting, text.clone());
                tracing::info!(session = %name, event = "session.restart_scheduled", attempt, delay_ms, reason = %reason, "restart in {delay:?}");
                self.record_event(
                    name,
                    EventName::SessionRestartScheduled,
                    text,
                    serde_json::json!({"attempt": attempt, "delay_ms": delay_ms}),
                );
            }
            EndPlan::GiveUp { detail } => {
                tracing::error!(session = %name, reason = %reason, "{detail}");
                self.set_state(name, SessionState::Failed, Some("restart_budget_spent".into()));
            }
            EndPlan::Relink => self.relink(name, reason.as_str(), ctx),
            EndPlan::Enter(state) => self.set_state(name, state, text),
        }
    }

    /// Stops a running Session for `reason` (a failed health check) and
    /// handles it as its end.
    fn end_session(&mut self, name: &str, reason: EndReason, ctx: &mut Context<Self>) {
        let stopping = self.stop_actor(name, ctx);
        let owned = name.to_string();
        ctx.spawn(stopping.into_actor(self).map(move |_, act, ctx| act.on_end(&owned, reason, ctx)));
    }

    /// Rebuilds Sessions whose mailbox closed (the actor panicked).
    fn check_alive(&mut self, ctx: &mut Context<Self>) {
        let dead: Vec<String> =
            self.slots.iter().filter(|(_, s)| s.addr.as_ref().is_some_and(|a| !a.connected())).map(|(n, _)| n.clone()).collect();
        for name in dead {
            tracing::error!(session = %name, "session actor died; rebuilding it");
            if let Some(slot) = self.slots.get_mut(&name) {
                slot.session.generation += 1;
                slot.addr = None;
            }
            // The dead actor's browser is killed on the blocking pool (a
            // /proc scan); the Supervisor takes no other message until it
            // is gone, so the restart cannot start a browser it would hit.
            let profile = profile::path(&self.config.state.dir, &name);
            let kill = tokio::task::spawn_blocking(move || profile::kill_browsers(&profile));
            ctx.wait(actix::fut::wrap_future::<_, Self>(kill).map(move |_, act, ctx| act.on_end(&name, EndReason::ActorDied, ctx)));
        }
    }

    fn slot(&self, name: &str) -> Result<&Slot, SupervisorError> {
        validate_name(name).map_err(SupervisorError::InvalidName)?;
        self.slots.get(name).ok_or_else(|| SupervisorError::NotFound(name.to_string()))
    }

    fn view(&self, name: &str) -> Reply<SessionView> {
        Ok(self.slot(name)?.session.view(&self.policy, now_ms()))
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let records = match self.store.sessions() {
            Ok(records) => records,
            Err(e) => {
                tracing::error!(error = %e, "cannot read sessions from the store; starting with none");
                Vec::new()
            }
        };
        let mut to_start = Vec::new();
        for record in records {
            let name = record.name.clone();
            let desired = record.desired;
            self.slots.insert(name.clone(), Slot::new(record));
            match desired {
                Desired::Running => {
                    // What the store says is stale after a crash (it may say
                    // CONNECTED); nobody may act on it until the start.
                    self.set_state(&name, SessionState::Starting, Some("queued".into()));
                    to_start.push(name)
                }
                Desired::Stopped => self.set_state(&name, SessionState::Stopped, None),
            }
        }
        // Staggered, so a daemon with many sessions does not start every
        // browser at once.
        for (i, name) in to_start.into_iter().enumerate() {
            let delay = self.config.restart.boot_stagger * i as u32;
            ctx.run_later(delay, move |act, ctx| {
                if act.slots.get(&name).is_some_and(|s| s.session.record.desired == Desired::Running) {
                    act.start_session(&name, ctx);
                }
            });
        }
        ctx.run_interval(Duration::from_secs(1), |act, ctx| act.check_alive(ctx));
    }
}

impl Handler<CreateSession> for Supervisor {
    type Result = Reply<SessionView>;

    fn handle(&mut self, msg: CreateSession, ctx: &mut Self::Context) -> Self::Result {
        validate_name(&msg.name).map_err(SupervisorError::InvalidName)?;
        let now = now_ms();
        let record = SessionRecord {
            name: msg.name.clone(),
            desired: if msg.start { Desired::Running } else { Desired::Stopped },
            state: SessionState::Stopped,
            reason: None,
            since_ms: now,
            me: None,
            created_ms: now,
        };
        if self.slots.contains_key(&msg.name) {
            return Err(SupervisorError::Exists(msg.name));
        }
        let max = self.config.limits.sessions;
        if self.slots.len() >= max {
            return Err(SupervisorError::TooMany(format!("there are {max} sessions already; at most {max} (limits.sessions)")));
        }
        if !self.store.create_session(&record)? {
            return Err(SupervisorError::Exists(msg.name));
        }
        // Harmless if it fails: history is a record, and the store's health
        // already reports the failure; the session itself was stored.
        let _ = self.store.append_history(&msg.name, &HistoryEntry::status(SessionState::Stopped, Some("created".into()), now));
        tracing::info!(session = %msg.name, event = "session.created", "session created");
        self.slots.insert(msg.name.clone(), Slot::new(record));
        if msg.start {
            self.start_session(&msg.name, ctx);
        }
        self.view(&msg.name)
    }
}

impl Handler<SessionCommand> for Supervisor {
    type Result = ResponseActFuture<Self, Reply<SessionView>>;

    fn handle(&mut self, msg: SessionCommand, ctx: &mut Self::Context) -> Self::Result {
        let SessionCommand { name, command } = msg;
        if let Err(e) = self.slot(&name) {
            return Box::pin(fut::ready(Err(e)));
        }
        tracing::info!(session = %name, command = ?command, "operator command");
        match command {
            Command::Recover => {
                let state = self.slots.get(&name).map(|s| s.session.record.state);
                if !matches!(state, Some(SessionState::Failed | SessionState::Blocked)) {
                    let state = state.unwrap_or(SessionState::Stopped);
                    let needed = "recover is for FAILED or BLOCKED sessions";
                    return Box::pin(fut::ready(Err(SupervisorError::WrongState { name, state, needed })));
                }
                if let Err(e) = self.set_desired(&name, Desired::Running) {
                    return Box::pin(fut::ready(Err(e)));
                }
                if let Some(slot) = self.slots.get_mut(&name) {
                    slot.session.restarts.clear();
                }
                let stopping = self.stop_actor(&name, ctx);
                Box::pin(stopping.into_actor(self).map(move |_, act, ctx| {
                    act.set_state(&name, SessionState::Stopped, Some("recover".into()));
                    act.start_session(&name, ctx);
                    act.view(&name)
                }))
            }
            Command::Start => {
                if let Err(e) = self.set_desired(&name, Desired::Running) {
                    return Box::pin(fut::ready(Err(e)));
                }
                let running = self.slots.get(&name).is_some_and(|s| s.addr.is_some());
                if !running {
                    self.start_session(&name, ctx);
                }
                Box::pin(fut::ready(self.view(&name)))
            }
            Command::Stop | Command::Restart | Command::Delete => {
                let desired = if command == Command::Restart { Desired::Running } else { Desired::Stopped };
                if let Err(e) = self.set_desired(&name, desired) {
                    return Box::pin(fut::ready(Err(e)));
                }
                let stopping = self.stop_actor(&name, ctx);
                Box::pin(stopping.into_actor(self).map(move |_, act, ctx| match command {
                    Command::Restart => {
                        act.set_state(&name, SessionState::Stopped, Some("restart".into()));
                        act.start_session(&name, ctx);
                        act.view(&name)
                    }
                    Command::Delete => {
                        let view = act.view(&name);
                        let profile = profile::path(&act.config.state.dir, &name);
                        if let Err(e) = profile::wipe(&profile) {
                            tracing::error!(session = %name, error = %e, "cannot delete the profile");
                        }
                        act.slots.remove(&name);
                        act.store.delete_session(&name)?;
                        tracing::info!(session = %name, event = "session.deleted", "session deleted");
                        view
                    }
                    _ => {
                        act.set_state(&name, SessionState::Stopped, Some("operator".into()));
                        act.view(&name)
                    }
                }))
            }
            Command::Logout => {
                let addr = self.slots.get(&name).and_then(|s| s.addr.clone());
                Box::pin(
                    async move {
                        if let Some(addr) = addr {
                            // Best effort: tell WhatsApp; the profile is wiped regardless.
                            let _ = tokio::time::timeout(Duration::from_secs(10), addr.send(LogoutPage)).await;
                        }
                    }
                    .into_actor(self)
                    .then(move |_, act, ctx| {
                        let stopping = act.stop_actor(&name, ctx);
                        stopping.into_actor(act).map(move |_, act, ctx| {
                            act.relink(&name, "operator_logout", ctx);
                            act.view(&name)
                        })
                    }),
                )
            }
        }
    }
}

impl Supervisor {
    /// The credentials are void: wipe the profile, go `LOGGED_OUT`, and (if
    /// the session should run) start afresh to offer a new QR.
    fn relink(&mut self, name: &str, reason: &str, ctx: &mut Context<Self>) {
        let Some(slot) = self.slots.get_mut(name) else { return };
        slot.session.relinked();
        let desired = slot.session.record.desired;
        let profile = profile::path(&self.config.state.dir, name);
        self.set_state(name, SessionState::LoggedOut, Some(reason.to_string()));
        // The wipe runs on the blocking pool; the Supervisor takes no other
        // message until it is done, so no start can see the old profile.
        let name = name.to_string();
        let wipe = tokio::task::spawn_blocking(move || profile::wipe(&profile));
        ctx.wait(actix::fut::wrap_future::<_, Self>(wipe).map(move |wiped, act, ctx| {
            match wiped {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(session = %name, error = %e, "cannot wipe the profile"),
                Err(e) => tracing::error!(session = %name, error = %e, "cannot wipe the profile"),
            }
            if desired == Desired::Running && act.slots.get(&name).is_some_and(|s| s.session.record.desired == Desired::Running) {
                act.start_session(&name, ctx);
            }
        }));
    }
}

impl Handler<GetSession> for Supervisor {
    type Result = Reply<SessionView>;

    fn handle(&mut self, msg: GetSession, _ctx: &mut Self::Context) -> Self::Result {
        self.view(&msg.name)
    }
}

impl Handler<ListSessions> for Supervisor {
    type Result = MessageResult<ListSessions>;

    fn handle(&mut self, _msg: ListSessions, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.slots.values().map(|s| s.session.view(&self.policy, now_ms())).collect())
    }
}

impl Handler<GetQr> for Supervisor {
    type Result = Reply<String>;

    fn handle(&mut self, msg: GetQr, _ctx: &mut Self::Context) -> Self::Result {
        let slot = self.slot(&msg.name)?;
        match (&slot.session.qr, slot.session.record.state) {
            (Some(qr), SessionState::ScanQr) => Ok(qr.clone()),
            (_, state) => {
                Err(SupervisorError::WrongState { name: msg.name, state, needed: "no QR to scan (a QR is offered only in SCAN_QR)" })
            }
        }
    }
}

impl Handler<SendMessage> for Supervisor {
    type Result = ResponseFuture<Reply<SendOutcome>>;

    fn handle(&mut self, msg: SendMessage, _ctx: &mut Self::Context) -> Self::Result {
        let slot = match self.slot(&msg.name) {
            Ok(slot) => slot,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let (state, addr) = (slot.session.record.state, slot.addr.clone());
        let addr = match addr {
            Some(addr) if state == SessionState::Connected => addr,
            _ => {
                let name = msg.name;
                return Box::pin(async move { Err(SupervisorError::WrongState { name, state, needed: "not CONNECTED" }) });
            }
        };
        let id = msg.id.unwrap_or_else(crate::whatsapp::new_message_id);
        Box::pin(async move {
            addr.send(SendText { to: msg.to, body: msg.text, media: msg.media, id, typing: msg.typing })
                .await
                .map_err(|e| SupervisorError::Internal(format!("session actor unavailable: {e}")))?
                .map_err(SupervisorError::from)
        })
    }
}

impl Handler<LookupMessage> for Supervisor {
    type Result = ResponseFuture<Reply<Option<i8>>>;

    fn handle(&mut self, msg: LookupMessage, _ctx: &mut Self::Context) -> Self::Result {
        let addr = match self.slot(&msg.name) {
            Ok(slot) => slot.addr.clone(),
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let state = self.slots.get(&msg.name).map_or(SessionState::Stopped, |s| s.session.record.state);
        Box::pin(async move {
            let addr = addr.ok_or(SupervisorError::Send(session::SendError::NotConnected(state)))?;
            addr.send(session::Lookup { to: msg.to, id: msg.id })
                .await
                .map_err(|e| SupervisorError::Internal(format!("session actor unavailable: {e}")))?
                .map_err(SupervisorError::from)
        })
    }
}

impl Handler<SessionStatus> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: SessionStatus, _ctx: &mut Self::Context) {
        let Some(slot) = self.slots.get_mut(&msg.name) else { return };
        if slot.session.generation != msg.generation {
            return;
        }
        let (new_qr, me_changed) = slot.session.on_status(msg.qr, msg.me);
        if new_qr {
            // A new QR to scan; the event never carries the QR itself.
            self.events.publish(Event::session(EventName::SessionQr, &msg.name));
        }
        if me_changed {
            self.save(&msg.name);
        }
        self.set_state(&msg.name, msg.state, msg.reason);
    }
}

impl Handler<SessionEnded> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: SessionEnded, ctx: &mut Self::Context) {
        let Some(slot) = self.slots.get_mut(&msg.name) else { return };
        if slot.session.generation != msg.generation {
            return;
        }
        tracing::info!(session = %msg.name, reason = %msg.reason, detail = %msg.detail, "session's page run is over");
        self.on_end(&msg.name, msg.reason, ctx);
    }
}

impl Handler<SessionHealth> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: SessionHealth, ctx: &mut Self::Context) {
        let limits = HealthLimits {
            memory_max: self.config.health.memory.max.as_u64(),
            key_files_max: self.config.health.key_files.max,
            key_files_cleanup: self.config.health.key_files.action == KeyFilesAction::Cleanup,
        };
        let Some(slot) = self.slots.get_mut(&msg.name) else { return };
        if slot.session.generation != msg.generation {
            return;
        }
        let plan = slot.session.on_health(msg.last_heartbeat_ms, msg.browser_pss_bytes, msg.key_files, limits);
        if let Some((pss, max)) = plan.recycle {
            tracing::warn!(session = %msg.name, event = "session.health", browser_pss_bytes = pss, max, "browser memory over the limit; recycling it");
            let detail = serde_json::json!({"browser_pss_bytes": pss, "max": max});
            self.record_event(&msg.name, EventName::SessionHealth, Some("memory".into()), detail);
            return self.end_session(&msg.name, EndReason::HealthCheckFailed, ctx);
        }
        if let Some((count, max)) = plan.key_files_crossed {
            let detail = serde_json::json!({"key_files": count, "max": max});
            tracing::warn!(session = %msg.name, event = "session.health", key_files = count, max, "key files over the threshold");
            self.record_event(&msg.name, EventName::SessionHealth, Some("key_files".into()), detail.clone());
            let message = format!("session {} has {count} key files (threshold {max})", msg.name);
            self.alert(&msg.name, EventName::SessionHealth, message, detail);
        }
        if plan.purge {
            let stopping = self.stop_actor(&msg.name, ctx);
            let name = msg.name.clone();
            ctx.spawn(stopping.into_actor(self).map(move |_, act, ctx| act.relink(&name, "key_files_cleanup", ctx)));
        }
    }
}

impl Handler<ShutdownAll> for Supervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _msg: ShutdownAll, ctx: &mut Self::Context) -> Self::Result {
        let names: Vec<String> = self.slots.keys().cloned().collect();
        let stops: Vec<_> = names.iter().map(|name| self.stop_actor(name, ctx)).collect();
        Box::pin(futures_util::future::join_all(stops).into_actor(self).map(move |_, act, _| {
            for name in &names {
                let running = act.slots.get(name).is_some_and(|s| s.session.record.state != SessionState::Stopped);
                if running {
                    act.set_state(name, SessionState::Stopped, Some("daemon_shutdown".into()));
                }
            }
            if let Err(e) = act.store.flush() {
                tracing::error!(error = %e, "cannot flush the store");
            }
        }))
    }
}
