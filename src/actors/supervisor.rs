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
//!
//! This file holds the lifecycle: boot, start, stop, the end of a run,
//! relink, rebuilding a dead Session, shutdown. Beside it, in
//! `supervisor/`: `session_reports.rs` (the handlers of a Session's
//! reports), `commands.rs` (create, and the operator's commands as
//! [`SessionSlot::command`] plans them), `routing.rs` (views, the QR, sends
//! and lookups passed on to a Session), `reporter.rs` (store, history,
//! events, logs, alerts, the campaigns' news: everything the Supervisor
//! tells) and `faults.rs` (fault injection for tests, debug builds only).

mod cluster;
mod commands;
#[cfg(debug_assertions)]
mod faults;
mod reporter;
mod routing;
mod session_reports;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

pub use self::cluster::{Acquire, Known, Release, ReleaseReason};
pub use self::commands::{CreateSession, SessionCommand};
#[cfg(debug_assertions)]
pub use self::faults::{InjectPageFault, InjectPanic, Wedge};
pub use self::routing::{GetQr, GetSession, ListSessions, LookupMessage, SendMessage};
use crate::actors::driver::Driver;
use crate::actors::messages::CampaignLinks;
use crate::actors::notifier::Notifier;
use crate::actors::session::{self, Reports, Session};
use crate::config::{Config, EventMode};
use crate::events::{EventName, Events};
use crate::policy::objectives::{self, Targets, Watched};
pub use crate::policy::slot::{Command, SessionView};
use crate::policy::slot::{EndPlan, SessionSlot};
use crate::policy::{EndReason, Policy};
use crate::profile;
use crate::session_state::{now_ms, validate_name, SessionState};
use crate::store::{Desired, SessionRecord, Store, StoreError};
use reporter::Reporter;

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
    /// Cluster mode: what was asked needs the session's browser, and no
    /// node runs the session now (the API answers 503 with `Retry-After:
    /// retry_after_s`, [`crate::cluster::retry_after_s`]).
    #[error("no node runs session {name:?} now; try again in {retry_after_s} s")]
    NoOwner { name: String, retry_after_s: u64 },
    #[error("{0}")]
    Internal(String),
}

type Reply<T> = Result<T, SupervisorError>;

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
    /// The session runs on this node: always on one node; in cluster mode
    /// while this node holds its lease (else the record is another node's,
    /// read from the store).
    owned: bool,
}

impl Slot {
    fn new(record: SessionRecord, targets: Targets) -> Self {
        Self { session: SessionSlot::new(record, targets), addr: None, timer: None, owned: true }
    }
}

/// How often every session's objectives are figured again (uptime drifts
/// with time alone, and reconnects age out of their 24 h) and the store's
/// liveness mark is written.
const OBJECTIVES_EVERY: Duration = Duration::from_secs(5);

/// How long past its close bound a Session may take to answer
/// `Shutdown` (the `/proc` scan and kills after the close) before the
/// Supervisor kills what is left on the profile itself.
const SHUTDOWN_SLACK: Duration = Duration::from_secs(2);

/// The Supervisor. See the module docs.
pub struct Supervisor {
    config: Arc<Config>,
    policy: Policy,
    /// `[objectives]`.
    targets: Targets,
    store: Store,
    driver: Addr<Driver>,
    /// Where Sessions send acks and incoming messages (the Campaigns
    /// registry; state changes go there through the reporter).
    campaigns: CampaignLinks,
    reporter: Reporter,
    slots: BTreeMap<String, Slot>,
    /// Cluster mode (the store has fences): sessions run only once the
    /// Cluster actor acquired them ([`Acquire`]).
    cluster: bool,
    /// The daemon is stopping: nothing more starts.
    stopping: bool,
    /// When the next acquired session may start (staggered).
    next_start: std::time::Instant,
    /// Cluster mode: sessions created here or learned of ([`Supervisor::learn`])
    /// since the last [`Known`], and when; a `Known` read before that keeps
    /// them.
    learned: HashMap<String, std::time::Instant>,
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
        let reporter = Reporter::new(store.clone(), events, notifier, campaigns.changes.clone());
        let cluster = store.fences().is_some();
        Self {
            policy: config.restart.policy(),
            targets: config.objectives.targets(),
            config,
            store,
            driver,
            campaigns,
            reporter,
            slots: BTreeMap::new(),
            cluster,
            stopping: false,
            next_start: std::time::Instant::now(),
            learned: HashMap::new(),
        }
    }

    /// Enters `state` (unless it is the state already) and reports it.
    fn set_state(&mut self, name: &str, state: SessionState, reason: Option<String>) {
        let Some(slot) = self.slots.get_mut(name) else { return };
        if let Some(changed) = slot.session.set_state(&self.policy, state, reason, now_ms()) {
            self.reporter.state(&slot.session.record, &changed);
            self.objectives(name);
        }
    }

    /// Figures the session's objectives now and reports each crossing
    /// (`session.objective`, once per crossing).
    fn objectives(&mut self, name: &str) {
        // A key-file count over the objective is over `health.key_files.max`
        // too when that is not higher (as by default: both 100), and that
        // check has alerted already: one alert per crossing, not two.
        let key_files_alerted = self.config.health.key_files.max <= self.targets.key_files;
        let Some(slot) = self.slots.get_mut(name) else { return };
        for crossing in slot.session.refresh_objectives(now_ms()) {
            let alert = !(crossing.objective == Watched::KeyFiles && key_files_alerted);
            self.reporter.objective(&slot.session.record, &crossing, alert);
        }
    }

    /// Every session's objectives, and the liveness mark (one node: in
    /// cluster mode the next owner takes over a dead node's sessions, and
    /// only the sessions this node runs are its to figure).
    fn check_objectives(&mut self) {
        if !self.cluster {
            self.store.mark_alive(now_ms());
        }
        let names: Vec<String> = self.slots.iter().filter(|(_, s)| s.owned).map(|(n, _)| n.clone()).collect();
        for name in names {
            self.objectives(&name);
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
        let events = if slot.session.poll_fallback() { EventMode::Poll } else { self.config.whatsapp.events };
        let session =
            Session::new(name.to_string(), slot.session.generation, self.config.clone(), self.driver.clone(), reports, linked, events);
        slot.addr = Some(session.start());
        self.set_state(name, SessionState::Starting, None);
    }

    /// Stops the Session actor (if any) and waits for its browser to close.
    fn stop_actor(&mut self, name: &str, ctx: &mut Context<Self>) -> impl std::future::Future<Output = ()> {
        self.stop_actor_within(name, session::Shutdown::CLOSE, ctx)
    }

    /// [`Supervisor::stop_actor`], the browser given `close_within` to
    /// close before it is killed (by the Session, or here if the Session
    /// has not answered [`SHUTDOWN_SLACK`] later).
    fn stop_actor_within(&mut self, name: &str, close_within: Duration, ctx: &mut Context<Self>) -> impl std::future::Future<Output = ()> {
        let addr = self.slots.get_mut(name).and_then(|slot| {
            slot.session.generation += 1; // Reports of the old actor are void now.
            if let Some(timer) = slot.timer.take() {
                ctx.cancel_future(timer);
            }
            slot.session.next_attempt_ms = None;
            slot.session.events = None;
            slot.addr.take()
        });
        let profile = profile::path(&self.config.state.profiles(), name);
        async move {
            let Some(addr) = addr else { return };
            // The Session may be busy ending by itself (its own close runs
            // first): past the bound, whatever runs on the profile is killed
            // here, so the answer "closed" holds either way.
            let answered = tokio::time::timeout(close_within + SHUTDOWN_SLACK, addr.send(session::Shutdown { close_within })).await;
            if !matches!(answered, Ok(Ok(()))) {
                let killed = tokio::task::spawn_blocking(move || profile::kill_browsers(&profile)).await.unwrap_or(0);
                tracing::warn!(killed, "the session did not close its browser in time; killed what was left on its profile");
            }
        }
    }

    /// The Session's run is over for `reason` (it has stopped, or is being
    /// stopped): ask the policy and carry out its decision.
    fn on_end(&mut self, name: &str, reason: EndReason, ctx: &mut Context<Self>) {
        let Some(slot) = self.slots.get_mut(name) else { return };
        slot.addr = None;
        slot.session.events = None;
        let now = now_ms();
        let plan = slot.session.on_end(&self.policy, reason, now, &mut rand::thread_rng());
        // Counted only when the policy restarts: a session that gave up
        // (FAILED) has no next run to poll.
        let mut fallback = None;
        if reason == EndReason::BidiLost && matches!(plan, EndPlan::Restart { .. }) {
            fallback = slot.session.on_bidi_lost(self.policy.window, self.config.whatsapp.bidi_fallback_after, now);
        }
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
                let detail = serde_json::json!({"attempt": attempt, "delay_ms": delay_ms});
                self.report_event(name, EventName::SessionRestartScheduled, text, detail);
                // The Session may have reported RECONNECTING already (no
                // change above): the restart counts now all the same.
                self.objectives(name);
            }
            EndPlan::GiveUp { detail } => {
                tracing::error!(session = %name, reason = %reason, "{detail}");
                self.set_state(name, SessionState::Failed, Some("restart_budget_spent".into()));
            }
            EndPlan::Relink => self.relink(name, reason.as_str(), ctx),
            EndPlan::Enter(state) => self.set_state(name, state, text),
        }
        // After the decision: the slot is free to report through.
        if let Some(count) = fallback {
            let window = self.policy.window;
            tracing::warn!(
                session = %name, event = "session.health", bidi_lost = count, "the BiDi connection dropped {count} times within {window:?}; the page is polled from the next run on"
            );
            let detail = serde_json::json!({"bidi_lost": count, "within_ms": u64::try_from(window.as_millis()).unwrap_or(u64::MAX), "events": "poll"});
            self.report_event(name, EventName::SessionHealth, Some("bidi_fallback".into()), detail);
        }
    }

    /// A decision event in a session's history and on the bus.
    fn report_event(&self, name: &str, event: EventName, reason: Option<String>, detail: serde_json::Value) {
        if let Some(slot) = self.slots.get(name) {
            self.reporter.event(&slot.session.record, event, reason, detail);
        }
    }

    /// Stops a running Session for `reason` (a failed health check) and
    /// handles it as its end.
    fn end_session(&mut self, name: &str, reason: EndReason, ctx: &mut Context<Self>) {
        let stopping = self.stop_actor(name, ctx);
        let owned = name.to_string();
        ctx.spawn(stopping.into_actor(self).map(move |_, act, ctx| act.on_end(&owned, reason, ctx)));
    }

    /// Rebuilds Sessions whose mailbox closed (the actor panicked). The dead
    /// actor's browser is killed first (a /proc scan, on the blocking pool).
    fn check_alive(&mut self, ctx: &mut Context<Self>) {
        let dead: Vec<String> =
            self.slots.iter().filter(|(_, s)| s.addr.as_ref().is_some_and(|a| !a.connected())).map(|(n, _)| n.clone()).collect();
        for name in dead {
            tracing::error!(session = %name, "session actor died; rebuilding it");
            if let Some(slot) = self.slots.get_mut(&name) {
                slot.session.generation += 1;
                slot.addr = None;
            }
            let profile = profile::path(&self.config.state.profiles(), &name);
            Self::blocking(ctx, move || profile::kill_browsers(&profile), move |_, act, ctx| act.on_end(&name, EndReason::ActorDied, ctx));
        }
    }

    /// The credentials are void: wipe the profile, go `LOGGED_OUT`, and (if
    /// the session should run) start afresh to offer a new QR.
    fn relink(&mut self, name: &str, reason: &str, ctx: &mut Context<Self>) {
        let Some(slot) = self.slots.get_mut(name) else { return };
        slot.session.relinked();
        let desired = slot.session.record.desired;
        let profile = profile::path(&self.config.state.profiles(), name);
        self.set_state(name, SessionState::LoggedOut, Some(reason.to_string()));
        let name = name.to_string();
        Self::blocking(
            ctx,
            move || profile::wipe(&profile),
            move |wiped, act, ctx| {
                if let Some(e) = failure(wiped) {
                    tracing::error!(session = %name, error = %e, "cannot wipe the profile");
                }
                if desired == Desired::Running && act.slots.get(&name).is_some_and(|s| s.session.record.desired == Desired::Running) {
                    act.start_session(&name, ctx);
                }
            },
        );
    }

    /// Runs `job` on the blocking pool, then `then` on the actor. The
    /// Supervisor takes no other message until both are done (`ctx.wait`),
    /// so no start can see a profile being wiped or a browser being killed.
    fn blocking<T: Send + 'static>(
        ctx: &mut Context<Self>,
        job: impl FnOnce() -> T + Send + 'static,
        then: impl FnOnce(Result<T, tokio::task::JoinError>, &mut Self, &mut Context<Self>) + 'static,
    ) {
        ctx.wait(actix::fut::wrap_future::<_, Self>(tokio::task::spawn_blocking(job)).map(then));
    }

    fn slot(&self, name: &str) -> Result<&Slot, SupervisorError> {
        validate_name(name).map_err(SupervisorError::InvalidName)?;
        self.slots.get(name).ok_or_else(|| SupervisorError::NotFound(name.to_string()))
    }

    fn view(&self, name: &str) -> Reply<SessionView> {
        let slot = self.slot(name)?;
        if slot.owned {
            return Ok(slot.session.view(&self.policy, now_ms()));
        }
        // Another node's session (cluster mode): its record as that node
        // last stored it.
        match self.store.session(name)? {
            Some(record) => Ok(SessionSlot::new(record, self.targets).view(&self.policy, now_ms())),
            None => Err(SupervisorError::NotFound(name.to_string())),
        }
    }
}

/// The error of a blocking job that failed or did not run to its end.
fn failure<E: std::fmt::Display>(done: Result<Result<(), E>, tokio::task::JoinError>) -> Option<String> {
    match done {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(e) => Some(e.to_string()),
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
        if self.cluster {
            // Every session is known (views, limits), none runs until the
            // Cluster actor acquires its lease; nothing is written for a
            // session this node does not hold.
            for record in records {
                let mut slot = Slot::new(record, self.targets);
                slot.owned = false;
                self.slots.insert(slot.session.record.name.clone(), slot);
            }
            ctx.run_interval(Duration::from_secs(1), |act, ctx| act.check_alive(ctx));
            ctx.run_interval(OBJECTIVES_EVERY, |act, _| act.check_objectives());
            return;
        }
        // When the daemon was last known alive: a session whose last status
        // is not STOPPED was cut off by a crash then.
        let alive_ms = self.store.alive_ms();
        let mut to_start = Vec::new();
        for record in records {
            let name = record.name.clone();
            let desired = record.desired;
            let mut slot = Slot::new(record, self.targets);
            slot.session.seed(&self.boot_history(&name, alive_ms));
            self.slots.insert(name.clone(), slot);
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
        self.check_objectives();
        ctx.run_interval(OBJECTIVES_EVERY, |act, _| act.check_objectives());
    }
}

impl Supervisor {
    /// A session's stored history at boot, with `STOPPED(daemon_died)`
    /// recorded at the last liveness mark if the daemon died without
    /// recording its stop ([`objectives::daemon_died`]).
    fn boot_history(&self, name: &str, alive_ms: Option<u64>) -> Vec<crate::store::HistoryEntry> {
        let mut history = self.store.history(name).unwrap_or_else(|e| {
            // The objectives then start from now; the history itself is
            // a record no decision reads.
            tracing::warn!(session = %name, error = %e, "cannot read the session's history; its objectives start from now");
            Vec::new()
        });
        if let Some(died) = objectives::daemon_died(&history, alive_ms) {
            tracing::info!(session = %name, at_ms = died.at_ms, "the daemon stopped without recording it; recording STOPPED(daemon_died) at its last liveness mark");
            // Harmless if it fails: memory has the entry for the
            // objectives, and the store's health reports the failure.
            if let Err(e) = self.store.append_history(name, &died) {
                tracing::error!(session = %name, error = %e, "cannot store session history");
            }
            history.push(died);
        }
        history
    }
}

impl Handler<ShutdownAll> for Supervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _msg: ShutdownAll, ctx: &mut Self::Context) -> Self::Result {
        self.stopping = true;
        let names: Vec<String> = self.slots.iter().filter(|(_, s)| s.owned).map(|(n, _)| n.clone()).collect();
        let stops: Vec<_> = names.iter().map(|name| self.stop_actor(name, ctx)).collect();
        Box::pin(futures_util::future::join_all(stops).into_actor(self).map(move |_, act, _| {
            for name in &names {
                let running = act.slots.get(name).is_some_and(|s| s.session.record.state != SessionState::Stopped);
                if running && act.cluster {
                    // Cluster mode: another node takes it over once this
                    // one releases the lease (still held: the write is
                    // fenced and allowed).
                    act.set_state(name, SessionState::Reconnecting, Some("node_shutdown".into()));
                } else if running {
                    act.set_state(name, SessionState::Stopped, Some("daemon_shutdown".into()));
                }
            }
            if let Err(e) = act.store.flush() {
                tracing::error!(error = %e, "cannot flush the store");
            }
        }))
    }
}
