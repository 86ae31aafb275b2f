//! The Supervisor actor: owns the set of sessions and applies the restart
//! policy to them.
//!
//! It is the only writer of session records and status history. It starts a
//! [`Session`] actor per session that should run (staggered at boot), turns
//! a Session's [`SessionEnded`] into the action [`EndReason::action`] calls
//! for (backoff and restart, wipe and relink, block), and answers the HTTP
//! layer's requests. Each Session carries a generation number; reports from
//! an older generation (a Session that was already replaced) are ignored.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;

use crate::actors::driver::Driver;
use crate::actors::session::{self, LogoutPage, SendOutcome, SendText, Session};
use crate::config::Config;
use crate::policy::{restart, Action, EndReason};
use crate::profile;
use crate::session_state::{now_ms, validate_name, Me, SessionState};
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
    #[error("session {name:?} is {state}, {needed}")]
    WrongState { name: String, state: SessionState, needed: &'static str },
    #[error(transparent)]
    Send(#[from] session::SendError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

/// A session as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SessionView {
    pub name: String,
    /// Upper-case state name (`CONNECTED`, `SCAN_QR`, …).
    pub state: SessionState,
    pub reason: Option<String>,
    /// When `state` was entered, Unix epoch ms.
    pub since_ms: u64,
    pub me: Option<Me>,
    /// `running` or `stopped`: what the operator asked for.
    pub desired: Desired,
    /// Restart attempts since the session was last connected.
    pub attempt: u32,
    /// When the next restart is due (while `RECONNECTING`), Unix epoch ms.
    pub next_attempt_ms: Option<u64>,
}

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

/// Sends a text through a session.
#[derive(Message)]
#[rtype(result = "Reply<SendOutcome>")]
pub struct SendMessage {
    pub name: String,
    pub to: ChatId,
    pub text: String,
}

/// From a Session: what it shows now.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SessionStatus {
    pub name: String,
    pub generation: u64,
    pub state: SessionState,
    pub reason: Option<String>,
    pub me: Option<Me>,
    /// The QR string while `SCAN_QR`. Kept in memory only, never logged.
    pub qr: Option<String>,
}

/// From a Session: its page's run is over; it has closed its browser.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SessionEnded {
    pub name: String,
    pub generation: u64,
    pub reason: EndReason,
    pub detail: String,
}

/// Stops every session (browsers closed, profiles and desired states kept)
/// and flushes the store: the daemon is shutting down.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ShutdownAll;

struct Slot {
    record: SessionRecord,
    addr: Option<Addr<Session>>,
    generation: u64,
    qr: Option<String>,
    attempt: u32,
    next_attempt_ms: Option<u64>,
    timer: Option<SpawnHandle>,
}

impl Slot {
    fn view(&self) -> SessionView {
        SessionView {
            name: self.record.name.clone(),
            state: self.record.state,
            reason: self.record.reason.clone(),
            since_ms: self.record.since_ms,
            me: self.record.me.clone(),
            desired: self.record.desired,
            attempt: self.attempt,
            next_attempt_ms: self.next_attempt_ms,
        }
    }
}

/// The Supervisor. See the module docs.
pub struct Supervisor {
    config: Arc<Config>,
    store: Store,
    driver: Addr<Driver>,
    slots: BTreeMap<String, Slot>,
}

impl Supervisor {
    pub fn new(config: Arc<Config>, store: Store, driver: Addr<Driver>) -> Self {
        Self { config, store, driver, slots: BTreeMap::new() }
    }

    /// Records a state change: store (flushed), history, log.
    fn set_state(&mut self, name: &str, state: SessionState, reason: Option<String>) {
        let Some(slot) = self.slots.get_mut(name) else { return };
        if slot.record.state == state && slot.record.reason == reason {
            return;
        }
        let at_ms = now_ms();
        slot.record.state = state;
        slot.record.reason = reason.clone();
        slot.record.since_ms = at_ms;
        if state != SessionState::Reconnecting {
            slot.next_attempt_ms = None;
        }
        if state != SessionState::ScanQr {
            slot.qr = None;
        }
        let entry = HistoryEntry { state, reason: reason.clone(), at_ms };
        if let Err(e) = self.store.put_session(&slot.record).and_then(|_| self.store.append_history(name, &entry)) {
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
    }

    fn save(&self, name: &str) {
        if let Some(slot) = self.slots.get(name) {
            if let Err(e) = self.store.put_session(&slot.record) {
                tracing::error!(session = %name, error = %e, "cannot store session");
            }
        }
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
        slot.generation += 1;
        let linked = slot.record.me.is_some();
        let session = Session::new(
            name.to_string(),
            slot.generation,
            self.config.clone(),
            self.driver.clone(),
            ctx.address(),
            linked,
        );
        slot.addr = Some(session.start());
        self.set_state(name, SessionState::Starting, None);
    }

    /// Stops the Session actor (if any) and waits for its browser to close.
    fn stop_actor(&mut self, name: &str, ctx: &mut Context<Self>) -> impl std::future::Future<Output = ()> {
        let addr = self.slots.get_mut(name).and_then(|slot| {
            slot.generation += 1; // Reports of the old actor are void now.
            if let Some(timer) = slot.timer.take() {
                ctx.cancel_future(timer);
            }
            slot.next_attempt_ms = None;
            slot.addr.take()
        });
        async move {
            if let Some(addr) = addr {
                let _ = tokio::time::timeout(Duration::from_secs(20), addr.send(session::Shutdown)).await;
            }
        }
    }

    fn schedule_restart(&mut self, name: &str, reason: EndReason, ctx: &mut Context<Self>) {
        let Some(slot) = self.slots.get_mut(name) else { return };
        let restart = &self.config.restart;
        let delay = restart::backoff(slot.attempt, restart.backoff_base, restart.backoff_cap, &mut rand::thread_rng());
        slot.attempt = slot.attempt.saturating_add(1);
        slot.next_attempt_ms = Some(now_ms() + delay.as_millis() as u64);
        let generation = slot.generation;
        let attempt = slot.attempt;
        let owned = name.to_string();
        slot.timer = Some(ctx.run_later(delay, move |act, ctx| {
            let due = act.slots.get(&owned).is_some_and(|s| {
                s.generation == generation && s.addr.is_none() && s.record.desired == Desired::Running
            });
            if due {
                act.start_session(&owned, ctx);
            }
        }));
        tracing::info!(
            session = %name,
            event = "session.restart_scheduled",
            attempt,
            delay_ms = delay.as_millis() as u64,
            reason = %reason,
            "restart in {delay:?}"
        );
        self.set_state(name, SessionState::Reconnecting, Some(reason.as_str().to_string()));
    }

    fn slot(&self, name: &str) -> Result<&Slot, SupervisorError> {
        validate_name(name).map_err(SupervisorError::InvalidName)?;
        self.slots.get(name).ok_or_else(|| SupervisorError::NotFound(name.to_string()))
    }

    fn view(&self, name: &str) -> Reply<SessionView> {
        Ok(self.slot(name)?.view())
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
            self.slots.insert(
                name.clone(),
                Slot { record, addr: None, generation: 0, qr: None, attempt: 0, next_attempt_ms: None, timer: None },
            );
            match desired {
                Desired::Running => to_start.push(name),
                Desired::Stopped => self.set_state(&name, SessionState::Stopped, None),
            }
        }
        // Staggered, so a daemon with many sessions does not start every
        // browser at once.
        for (i, name) in to_start.into_iter().enumerate() {
            let delay = self.config.restart.boot_stagger * i as u32;
            ctx.run_later(delay, move |act, ctx| {
                if act.slots.get(&name).is_some_and(|s| s.record.desired == Desired::Running) {
                    act.start_session(&name, ctx);
                }
            });
        }
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
        if self.slots.contains_key(&msg.name) || !self.store.create_session(&record)? {
            return Err(SupervisorError::Exists(msg.name));
        }
        self.store.append_history(&msg.name, &HistoryEntry { state: SessionState::Stopped, reason: Some("created".into()), at_ms: now })?;
        tracing::info!(session = %msg.name, event = "session.created", "session created");
        self.slots.insert(
            msg.name.clone(),
            Slot { record, addr: None, generation: 0, qr: None, attempt: 0, next_attempt_ms: None, timer: None },
        );
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
            Command::Start => {
                if let Some(slot) = self.slots.get_mut(&name) {
                    slot.record.desired = Desired::Running;
                    slot.attempt = 0;
                }
                self.save(&name);
                let running = self.slots.get(&name).is_some_and(|s| s.addr.is_some());
                if !running {
                    self.start_session(&name, ctx);
                }
                Box::pin(fut::ready(self.view(&name)))
            }
            Command::Stop | Command::Restart | Command::Delete => {
                if command != Command::Restart {
                    if let Some(slot) = self.slots.get_mut(&name) {
                        slot.record.desired = Desired::Stopped;
                    }
                    self.save(&name);
                }
                let stopping = self.stop_actor(&name, ctx);
                Box::pin(stopping.into_actor(self).map(move |_, act, ctx| {
                    match command {
                        Command::Restart => {
                            if let Some(slot) = act.slots.get_mut(&name) {
                                slot.record.desired = Desired::Running;
                                slot.attempt = 0;
                            }
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
        slot.record.me = None;
        slot.attempt = 0;
        let desired = slot.record.desired;
        let profile = profile::path(&self.config.state.dir, name);
        if let Err(e) = profile::wipe(&profile) {
            tracing::error!(session = %name, error = %e, "cannot wipe the profile");
        }
        self.set_state(name, SessionState::LoggedOut, Some(reason.to_string()));
        if desired == Desired::Running {
            self.start_session(name, ctx);
        }
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
        MessageResult(self.slots.values().map(Slot::view).collect())
    }
}

impl Handler<GetQr> for Supervisor {
    type Result = Reply<String>;

    fn handle(&mut self, msg: GetQr, _ctx: &mut Self::Context) -> Self::Result {
        let slot = self.slot(&msg.name)?;
        match (&slot.qr, slot.record.state) {
            (Some(qr), SessionState::ScanQr) => Ok(qr.clone()),
            (_, state) => Err(SupervisorError::WrongState {
                name: msg.name,
                state,
                needed: "no QR to scan (a QR is offered only in SCAN_QR)",
            }),
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
        let (state, addr) = (slot.record.state, slot.addr.clone());
        let addr = match addr {
            Some(addr) if state == SessionState::Connected => addr,
            _ => {
                let name = msg.name;
                return Box::pin(async move {
                    Err(SupervisorError::WrongState { name, state, needed: "not CONNECTED" })
                });
            }
        };
        let id = crate::whatsapp::new_message_id();
        Box::pin(async move {
            addr.send(SendText { to: msg.to, body: msg.text, id })
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
        if slot.generation != msg.generation {
            return;
        }
        slot.qr = msg.qr;
        if msg.me.is_some() && slot.record.me != msg.me {
            slot.record.me = msg.me;
            self.save(&msg.name);
        }
        if msg.state == SessionState::Connected {
            if let Some(slot) = self.slots.get_mut(&msg.name) {
                slot.attempt = 0;
            }
        }
        self.set_state(&msg.name, msg.state, msg.reason);
    }
}

impl Handler<SessionEnded> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: SessionEnded, ctx: &mut Self::Context) {
        let Some(slot) = self.slots.get_mut(&msg.name) else { return };
        if slot.generation != msg.generation {
            return;
        }
        slot.addr = None;
        let reason = msg.reason;
        tracing::info!(session = %msg.name, reason = %reason, detail = %msg.detail, "session's page run is over");
        match reason.action() {
            Action::RestartWithBackoff => self.schedule_restart(&msg.name, reason, ctx),
            Action::Relink => self.relink(&msg.name, reason.as_str(), ctx),
            Action::Conflict => self.set_state(&msg.name, SessionState::Conflict, Some(reason.as_str().into())),
            Action::Block => self.set_state(&msg.name, SessionState::Blocked, Some(reason.as_str().into())),
            Action::Fail => self.set_state(&msg.name, SessionState::Failed, Some(reason.as_str().into())),
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
                let running = act.slots.get(name).is_some_and(|s| s.record.state != SessionState::Stopped);
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
