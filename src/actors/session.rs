//! The Session actor: one WhatsApp account, one Chromium, one profile.
//!
//! It opens the page (through the [`Driver`]'s chromedriver) and hears
//! from the page adapter: with `whatsapp.events = "bidi"` the page pushes
//! each event over WebDriver BiDi as it happens and a classic `execute`
//! every `whatsapp.check_interval` drains the queue anyway and proves
//! browser and driver alive; with `"poll"` that `execute` runs every
//! `whatsapp.poll_interval`. It turns what it hears into a session state
//! ([`Observer`]) and reports every change to the [`Supervisor`]. When the page's run is over (browser gone,
//! logout, block) it closes the browser, reports [`SessionEnded`] with a
//! typed [`EndReason`] and stops: what happens next is the Supervisor's
//! decision. Sends run beside the polls (messages interleave), and a send
//! waits for its ack outside WebDriver, so neither ever blocks the other for
//! longer than one command.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::actors::driver::{Driver, GetDriverUrl};
use crate::actors::messages::{MessageAcked, MessageReceived, SessionEnded, SessionHealth, SessionStatus};
use crate::config::{Config, ConflictPolicy, EventMode};
use crate::policy::health::{self, Beat, Heartbeat};
use crate::policy::{Action, EndReason};
use crate::profile;
use crate::session_state::now_ms;
use crate::session_state::{Me, SessionState};
use crate::whatsapp::bidi::BidiEvent;
use crate::whatsapp::media::Media;
use crate::whatsapp::number::ChatId;
use crate::whatsapp::observe::{Observer, Seen};
use crate::whatsapp::page::{self, Page, PageError, PageEvent, PageEvents, Poll, SendRefused, SocketState};

/// [`profile::kill_browsers`] (a `/proc` scan and signals) on the blocking
/// pool; the number killed (0 if the pool could not run it).
async fn kill_browsers(profile: PathBuf) -> usize {
    tokio::task::spawn_blocking(move || profile::kill_browsers(&profile)).await.unwrap_or(0)
}

/// Sends a text, or a media message with `body` as its caption. Answered
/// once the server acked it (ack ≥ 1) or `whatsapp.ack_wait` passed (then
/// with ack 0, `PENDING`).
#[derive(Message)]
#[rtype(result = "Result<SendOutcome, SendError>")]
pub struct SendText {
    pub to: ChatId,
    /// The text, or the caption of `media` (may be empty then).
    pub body: String,
    /// A file to send as a media message (checked against `[media]` by the
    /// caller).
    pub media: Option<Media>,
    /// Key id chosen by the caller ([`crate::whatsapp::new_message_id`]).
    pub id: String,
    /// Show "typing…" this long before sending (zero: don't). The wait is
    /// outside WebDriver, so polls go on meanwhile.
    pub typing: Duration,
    /// Cluster mode: the node's leases, checked ([`Fences::may_send`])
    /// after the typing time, right before the page sends.
    ///
    /// [`Fences::may_send`]: crate::store::Fences::may_send
    pub fences: Option<Arc<crate::store::Fences>>,
}

/// A send the page took.
#[derive(Debug, Clone)]
pub struct SendOutcome {
    pub id: String,
    /// Chat id, `<digits>@c.us`.
    pub to: String,
    /// WhatsApp Web's ack number (0 pending, 1 server, 2 device, 3 read).
    pub ack: i8,
}

/// Why a send did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    #[error("session is {0}, not CONNECTED")]
    NotConnected(SessionState),
    #[error("{0}")]
    Refused(#[from] SendRefused),
    #[error("WhatsApp rejected the message{}", .code.map(|c| format!(" (error {c})")).unwrap_or_default())]
    Rejected { code: Option<i64> },
    #[error("the page failed to send: {0}")]
    Page(String),
    /// Cluster mode: this node no longer holds the session's lease (or has
    /// not renewed it in time); nothing was sent.
    #[error("this node does not hold the session's lease; nothing was sent")]
    NotLeased,
}

/// Looks a sent message up in the page by its key id: `Some(ack)` if the
/// page holds it. Only while `CONNECTED` (synced), so history sync has
/// brought back what WhatsApp accepted.
#[derive(Message)]
#[rtype(result = "Result<Option<i8>, SendError>")]
pub struct Lookup {
    pub to: ChatId,
    pub id: String,
}

/// Logs the device out from the page (`Socket.logout()`).
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct LogoutPage;

/// Fault injection for tests (debug builds only): the actor panics, as a
/// bug would make it, so the Supervisor's rebuild of dead Sessions can be
/// tested for real.
#[cfg(debug_assertions)]
#[derive(Message)]
#[rtype(result = "()")]
pub struct InjectPanic;

#[cfg(debug_assertions)]
impl Handler<InjectPanic> for Session {
    type Result = ();

    fn handle(&mut self, _msg: InjectPanic, _ctx: &mut Self::Context) {
        panic!("fault injection: session {} panics", self.name);
    }
}

/// A fault the tests inject into a running page (debug builds only).
#[cfg(debug_assertions)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PageFault {
    /// The page's BiDi connection is closed, as a network fault would close
    /// it.
    BidiDrop,
    /// A second tab in the session's browser crashes its renderer; the
    /// page's own tab is untouched.
    OtherTabCrash,
    /// The page's own renderer crashes alone (chromedriver's BiDi mapper,
    /// in another tab, lives on).
    OwnTabCrash,
}

/// Fault injection for tests (debug builds only). Answers false if the
/// fault could not be made (a polled page has no BiDi connection).
#[cfg(debug_assertions)]
#[derive(Message)]
#[rtype(result = "bool")]
pub struct InjectPageFault(pub PageFault);

#[cfg(debug_assertions)]
impl Handler<InjectPageFault> for Session {
    type Result = ResponseFuture<bool>;

    fn handle(&mut self, InjectPageFault(fault): InjectPageFault, _ctx: &mut Self::Context) -> Self::Result {
        tracing::warn!(session = %self.name, ?fault, "fault injection");
        let page = self.page.clone();
        Box::pin(async move {
            let Some(page) = page else { return false };
            match fault {
                PageFault::BidiDrop => page.drop_bidi(),
                PageFault::OtherTabCrash => page.crash_tab(false).await,
                PageFault::OwnTabCrash => page.crash_tab(true).await,
            }
        })
    }
}

/// Closes the browser (profile kept) and stops the actor without reporting
/// an end: the Supervisor asked for it. The browser gets `close_within` to
/// close through WebDriver; then every process left on the profile is
/// SIGKILLed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown {
    pub close_within: Duration,
}

impl Shutdown {
    /// How long a browser may take to close when nothing hurries it.
    pub const CLOSE: Duration = Duration::from_secs(10);
}

/// Where a Session reports: its parent (the Supervisor) for its status,
/// end and health, and the campaigns for acks. `Recipient`s, so the
/// Session knows no actor type above it.
#[derive(Clone)]
pub struct Reports {
    pub status: Recipient<SessionStatus>,
    pub ended: Recipient<SessionEnded>,
    pub health: Recipient<SessionHealth>,
    pub acks: Recipient<MessageAcked>,
    pub incoming: Recipient<MessageReceived>,
}

/// The Session actor. See the module docs.
pub struct Session {
    name: String,
    generation: u64,
    config: Arc<Config>,
    profile: PathBuf,
    driver: Addr<Driver>,
    reports: Reports,
    page: Option<Page>,
    observer: Observer,
    polling: bool,
    reported: Option<(SessionState, Option<&'static str>)>,
    state: SessionState,
    qr: Option<String>,
    me: Option<Me>,
    loading_since: Option<Instant>,
    ended: bool,
    waiting: HashMap<String, oneshot::Sender<Result<i8, SendError>>>,
    /// Acks seen recently, for sends whose ack arrived before they waited.
    recent_acks: VecDeque<(String, Result<i8, SendError>)>,
    /// A fast-poll loop runs (while sends wait for their acks).
    fast_polling: bool,
    heartbeat: Heartbeat,
    /// A poll got an answer since the last heartbeat.
    answered: bool,
    /// The page's `Socket.state` at the last poll (`LOADING` while loading).
    page_state: SocketState,
    takeover_pending: bool,
    /// Event ids handled lately (an event can arrive pushed and drained).
    seen: Seen,
    /// The newest snapshot applied.
    applied: Option<page::Snapshot>,
    /// How this run asks to hear from its page (the page may still poll:
    /// chromedriver without BiDi).
    events: EventMode,
}

/// Poll period while a send waits for its ack: the ack is seen within a few
/// ms instead of a whole `poll_interval`, and each poll is one short
/// `execute` (~1.3 ms), so WebDriver is never held.
const FAST_POLL: Duration = Duration::from_millis(5);

impl Session {
    /// `linked`: the store says this profile holds credentials. `events`:
    /// how this run hears from its page (`whatsapp.events`, or `poll` after
    /// repeated `bidi_lost`: see `whatsapp.bidi_fallback_after`).
    pub fn new(
        name: String,
        generation: u64,
        config: Arc<Config>,
        driver: Addr<Driver>,
        reports: Reports,
        linked: bool,
        events: EventMode,
    ) -> Self {
        let profile = profile::path(&config.state.profiles(), &name);
        Self {
            name,
            generation,
            profile,
            driver,
            reports,
            page: None,
            observer: Observer::new(linked),
            polling: false,
            reported: None,
            state: SessionState::Starting,
            qr: None,
            me: None,
            loading_since: None,
            ended: false,
            waiting: HashMap::new(),
            recent_acks: VecDeque::new(),
            fast_polling: false,
            heartbeat: Heartbeat::new(config.heartbeat.failures),
            answered: false,
            page_state: SocketState::Loading,
            takeover_pending: false,
            seen: Seen::default(),
            applied: None,
            events,
            config,
        }
    }

    /// The page's run is over: close the browser, report, stop.
    fn end(&mut self, reason: EndReason, detail: String, ctx: &mut Context<Self>) {
        if self.ended {
            return;
        }
        self.ended = true;
        tracing::warn!(session = %self.name, event = "session.ended", reason = %reason, detail = %detail, "session ended");
        // An end the policy restarts is recorded now, not after the browser
        // has closed (about 170 ms): campaigns pause at once and detection
        // is the event's own latency. The Supervisor's restart records the
        // same state and reason, so the history holds it once; when the
        // restart budget is spent, FAILED(restart_budget_spent) follows it.
        if reason.action() == Action::RestartWithBackoff {
            self.report(SessionState::Reconnecting, Some(reason.as_str()), false, false);
        }
        for (_, waiter) in self.waiting.drain() {
            let _ = waiter.send(Err(SendError::Page(format!("session ended: {reason}"))));
        }
        let page = self.page.take();
        let ended = self.reports.ended.clone();
        let (name, generation, profile) = (self.name.clone(), self.generation, self.profile.clone());
        ctx.wait(
            async move {
                if let Some(page) = page {
                    page.close(Duration::from_secs(10)).await;
                }
                // Whatever closing left behind must not hold the profile
                // (a /proc scan: on the blocking pool).
                kill_browsers(profile).await;
                ended.do_send(SessionEnded { name, generation, reason, detail });
            }
            .into_actor(self)
            .map(|_, _, ctx| ctx.stop()),
        );
    }

    fn report(&mut self, state: SessionState, reason: Option<&'static str>, qr_changed: bool, me_changed: bool) {
        self.state = state;
        if self.reported == Some((state, reason)) && !qr_changed && !me_changed {
            return;
        }
        self.reported = Some((state, reason));
        self.reports.status.do_send(SessionStatus {
            name: self.name.clone(),
            generation: self.generation,
            state,
            reason: reason.map(str::to_string),
            me: self.me.clone(),
            qr: if state == SessionState::ScanQr { self.qr.clone() } else { None },
            events: self.page.as_ref().map(Page::events),
        });
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.polling || self.ended {
            return;
        }
        let Some(page) = self.page.clone() else { return };
        self.polling = true;
        ctx.spawn(async move { page.poll().await }.into_actor(self).map(|result, act, ctx| {
            act.polling = false;
            act.on_poll(result, ctx);
        }));
    }

    fn on_poll(&mut self, result: Result<Poll, PageError>, ctx: &mut Context<Self>) {
        if self.ended {
            return;
        }
        let now = Instant::now();
        match result {
            Err(e) => {
                if let Some(reason) = e.end_reason() {
                    return self.end(reason, e.to_string(), ctx);
                }
                tracing::debug!(session = %self.name, error = %e, "poll failed; retrying");
            }
            Ok(Poll::Loading { logout }) => {
                self.answered = true;
                self.page_state = SocketState::Loading;
                if let Some(reason) = self.observer.loading(logout) {
                    self.logged_out_now(SessionState::LoggedOut, reason);
                    self.state = SessionState::LoggedOut;
                    return self.end(reason, "logout queued by the page being left".into(), ctx);
                }
                let since = *self.loading_since.get_or_insert(now);
                if since.elapsed() > self.config.whatsapp.load_timeout {
                    let detail = format!("page not loaded within {:?}", self.config.whatsapp.load_timeout);
                    self.end(EndReason::StartFailed, detail, ctx);
                }
            }
            Ok(Poll::Ready { events, snap, injected }) => {
                self.answered = true;
                let all = events.len();
                let events: Vec<PageEvent> =
                    events.into_iter().filter(|e| e.n.as_deref().is_none_or(|n| self.seen.first(n))).map(|e| e.event).collect();
                if events.len() < all {
                    tracing::debug!(session = %self.name, again = all - events.len(), "events handled already (pushed before, or replayed after a reload)");
                }
                // A drain answered after later pushes (even the next
                // document's): its events count if new, its state is out
                // of date, so the newest state applied stands in for it.
                let snap = match &self.applied {
                    Some(newer) if snap.older_than(newer) => {
                        if events.is_empty() {
                            return;
                        }
                        newer.clone()
                    }
                    _ => {
                        self.applied = Some(snap.clone());
                        snap
                    }
                };
                self.page_state = snap.state.clone();
                self.loading_since = None;
                if injected {
                    tracing::debug!(session = %self.name, "page adapter injected");
                }
                for event in &events {
                    match event {
                        PageEvent::Ack { id, ack } => {
                            self.ack(id, Ok(*ack));
                            self.reports.acks.do_send(MessageAcked { id: id.clone(), ack: *ack });
                        }
                        PageEvent::SendError { id, code, .. } => self.ack(id, Err(SendError::Rejected { code: *code })),
                        PageEvent::Incoming { id, from, kind, body, t } => {
                            tracing::info!(session = %self.name, event = "message.received", id = %id, kind = %kind, "message received");
                            self.reports.incoming.do_send(MessageReceived {
                                session: self.name.clone(),
                                from: from.clone(),
                                id: id.clone(),
                                kind: kind.clone(),
                                body: body.clone(),
                                at_ms: u64::try_from(*t).unwrap_or(0).saturating_mul(1000),
                            });
                        }
                        _ => {}
                    }
                }
                let verdict = self.observer.observe(&events, &snap);
                let me = snap.me.clone().map(|wid| Me { wid, pushname: snap.pushname.clone() });
                let me_changed = me.is_some() && me != self.me;
                if me_changed {
                    self.me = me;
                }
                let qr_changed = snap.qr != self.qr;
                self.qr = snap.qr;
                if let Some(reason) = verdict.end {
                    self.logged_out_now(verdict.state, reason);
                    self.state = verdict.state;
                    return self.end(reason, format!("page state {}", snap.state), ctx);
                }
                if verdict.state == SessionState::Conflict {
                    self.schedule_takeover(ctx);
                }
                if verdict.refresh_qr {
                    if let Some(page) = self.page.clone() {
                        ctx.spawn(async move { page.action("refreshQR").await }.into_actor(self).map(|_, _, _| ()));
                    }
                }
                self.report(verdict.state, verdict.reason, qr_changed, me_changed);
            }
        }
    }

    /// A logout or a revoked device is reported the moment it is seen, not
    /// after the browser has closed: campaigns stop sending to it at once,
    /// and the Supervisor's relink later records the same state (so once).
    fn logged_out_now(&mut self, state: SessionState, reason: EndReason) {
        if state == SessionState::LoggedOut {
            self.report(state, Some(reason.as_str()), false, false);
        }
    }

    /// Every `heartbeat.interval`: did the page answer, and is its state
    /// settled? `heartbeat.failures` misses in a row end the page's run.
    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        if self.ended {
            return;
        }
        let healthy = self.answered && health::settled(&self.page_state);
        self.answered = false;
        let at_ms = now_ms();
        match self.heartbeat.beat(healthy) {
            Beat::Healthy => {}
            Beat::Missed { in_a_row } => {
                tracing::info!(session = %self.name, page_state = %self.page_state, in_a_row, "heartbeat missed");
            }
            Beat::Failed => {
                let reason = if self.page_state == SocketState::Timeout { EndReason::ConnectionLost } else { EndReason::HeartbeatMissed };
                let detail = format!("{} heartbeats missed; page state {:?}", self.config.heartbeat.failures, self.page_state);
                return self.end(reason, detail, ctx);
            }
        }
        self.reports.health.do_send(SessionHealth::heartbeat(&self.name, self.generation, at_ms, healthy));
    }

    /// Counts the key files and reads the browser's memory (off the actor's
    /// thread) and reports them; the Supervisor judges.
    fn measure(&mut self, key_files: bool, memory: bool, ctx: &mut Context<Self>) {
        if self.ended || self.page.is_none() {
            return;
        }
        let dir = self.profile.join(&self.config.health.key_files.path);
        let profile = self.profile.clone();
        let (name, generation) = (self.name.clone(), self.generation);
        let health = self.reports.health.clone();
        ctx.spawn(
            async move {
                let measured = tokio::task::spawn_blocking(move || {
                    let files = key_files.then(|| profile::count_files(&dir));
                    let pss = if memory { crate::procfs::browser_pss_bytes(&profile) } else { None };
                    (files, pss)
                })
                .await;
                if let Ok((key_files, browser_pss_bytes)) = measured {
                    health.do_send(SessionHealth { name, generation, last_heartbeat_ms: None, key_files, browser_pss_bytes });
                }
            }
            .into_actor(self),
        );
    }

    /// `restart.conflict = "takeover"`: take the account back after
    /// `restart.takeover_after` if the page is still in `CONFLICT`.
    fn schedule_takeover(&mut self, ctx: &mut Context<Self>) {
        if self.config.restart.conflict != ConflictPolicy::Takeover || self.takeover_pending {
            return;
        }
        self.takeover_pending = true;
        ctx.run_later(self.config.restart.takeover_after, |act, ctx| {
            act.takeover_pending = false;
            if act.state != SessionState::Conflict || act.ended {
                return;
            }
            if let Some(page) = act.page.clone() {
                tracing::warn!(session = %act.name, event = "session.takeover", "taking the account back from the other WhatsApp Web");
                ctx.spawn(async move { page.action("takeover").await }.into_actor(act).map(|_, _, _| ()));
            }
        });
    }

    /// Polls every [`FAST_POLL`] while any send waits for its ack (a page
    /// that pushes its acks needs no polling).
    fn fast_poll(&mut self, ctx: &mut Context<Self>) {
        if self.fast_polling || self.page.as_ref().is_some_and(|p| p.events() == EventMode::Bidi) {
            return;
        }
        self.fast_polling = true;
        ctx.run_later(FAST_POLL, |act, ctx| {
            act.fast_polling = false;
            if !act.waiting.is_empty() && !act.ended {
                act.tick(ctx);
                act.fast_poll(ctx);
            }
        });
    }

    fn ack(&mut self, id: &str, ack: Result<i8, SendError>) {
        let settled = !matches!(ack, Ok(0));
        if settled {
            if let Some(waiter) = self.waiting.remove(id) {
                let _ = waiter.send(ack);
                return;
            }
        }
        self.recent_acks.push_back((id.to_string(), ack));
        while self.recent_acks.len() > 1024 {
            self.recent_acks.pop_front();
        }
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.report(SessionState::Starting, Some("opening browser"), false, false);
        let driver = self.driver.clone();
        let profile = self.profile.clone();
        let config = self.config.clone();
        let events = self.events;
        ctx.spawn(
            async move {
                let url = driver
                    .send(GetDriverUrl)
                    .await
                    .map_err(|e| (EndReason::DriverDied, e.to_string()))?
                    .map_err(|e| (EndReason::DriverDied, e.to_string()))?;
                let killed = kill_browsers(profile.clone()).await;
                if killed > 0 {
                    tracing::warn!(profile = %profile.display(), killed, "killed stale browser processes on the profile");
                }
                profile::prepare(&profile).map_err(|e| (EndReason::StartFailed, format!("profile dir: {e}")))?;
                Page::open(&url, &profile, &config, events)
                    .await
                    .map_err(|e| (e.end_reason().unwrap_or(EndReason::StartFailed), e.to_string()))
            }
            .into_actor(self)
            .map(|result, act, ctx| match result {
                Ok((page, events)) => {
                    if act.ended {
                        ctx.spawn(async move { page.close(Duration::from_secs(10)).await }.into_actor(act));
                        return;
                    }
                    let mode = page.events();
                    act.page = Some(page);
                    act.loading_since = Some(Instant::now());
                    act.report(SessionState::Starting, Some("loading page"), false, false);
                    let every = if let Some(events) = events {
                        ctx.add_stream(pushed(events));
                        act.config.whatsapp.check_interval
                    } else {
                        act.config.whatsapp.poll_interval
                    };
                    tracing::info!(session = %act.name, events = mode.as_str(), "page opened");
                    act.tick(ctx);
                    ctx.run_interval(every, |act, ctx| act.tick(ctx));
                    ctx.run_interval(act.config.heartbeat.interval, |act, ctx| act.heartbeat(ctx));
                    ctx.run_interval(act.config.health.key_files.interval, |act, ctx| act.measure(true, false, ctx));
                    ctx.run_interval(act.config.health.memory.interval, |act, ctx| act.measure(false, true, ctx));
                }
                Err((reason, detail)) => act.end(reason, detail, ctx),
            }),
        );
    }
}

/// The page's pushed events as a stream the actor's context can take.
fn pushed(mut events: PageEvents) -> impl futures_util::Stream<Item = BidiEvent> {
    futures_util::stream::poll_fn(move |cx| events.poll_recv(cx))
}

impl StreamHandler<BidiEvent> for Session {
    fn handle(&mut self, event: BidiEvent, ctx: &mut Self::Context) {
        if self.ended {
            return;
        }
        match event {
            BidiEvent::Page(text) => match page::pushed(&text) {
                Ok(poll) => self.on_poll(Ok(poll), ctx),
                // A message this build cannot read: the classic drain will
                // read the same events from the queue.
                Err(e) => tracing::debug!(session = %self.name, error = %e, "unreadable pushed message"),
            },
            BidiEvent::Crashed(target) => {
                if self.page.as_ref().is_some_and(|p| p.own_crash(target.as_deref())) {
                    return self.end(EndReason::PageCrashed, "the renderer crashed (Inspector.targetCrashed)".into(), ctx);
                }
                // Another tab's renderer (one the page opened): the page's
                // own run goes on, and the classic check would notice if
                // the page went with it.
                tracing::warn!(session = %self.name, "a renderer of another tab in the session's browser crashed; the page is unaffected");
            }
            BidiEvent::Navigation(url) => {
                // The preload script reports the new document; this only
                // tells the journal that the page navigated (the URL may
                // hold a token: only its length is logged).
                tracing::debug!(session = %self.name, url_len = url.len(), "page navigating");
            }
            BidiEvent::Closed(why) => self.bidi_closed(why, ctx),
        }
    }

    /// The stream ends after [`BidiEvent::Closed`]; the actor goes on (the
    /// default would stop it).
    fn finished(&mut self, _ctx: &mut Self::Context) {}
}

impl Session {
    /// The BiDi connection is gone: a classic round trip tells whether
    /// browser or chromedriver went with it (their reason) or the
    /// connection alone dropped ([`EndReason::BidiLost`]). Either way this
    /// page's run is over: without the connection nothing is pushed.
    fn bidi_closed(&mut self, why: String, ctx: &mut Context<Self>) {
        let Some(page) = self.page.clone() else { return };
        tracing::warn!(session = %self.name, error = %why, "the BiDi connection dropped");
        ctx.spawn(async move { tokio::time::timeout(Duration::from_secs(5), page.probe()).await }.into_actor(self).map(
            move |probe, act, ctx| {
                // A probe that answers, fails transiently or times out
                // leaves the connection alone to blame.
                let (reason, detail) = match probe.ok().and_then(Result::err).and_then(|e| Some((e.end_reason()?, e.to_string()))) {
                    Some(gone) => gone,
                    None => (EndReason::BidiLost, why),
                };
                act.end(reason, detail, ctx);
            },
        ));
    }
}

impl Handler<SendText> for Session {
    type Result = ResponseActFuture<Self, Result<SendOutcome, SendError>>;

    fn handle(&mut self, msg: SendText, _ctx: &mut Self::Context) -> Self::Result {
        let page = match (&self.page, self.state) {
            (Some(page), SessionState::Connected) if !self.ended => page.clone(),
            _ => return Box::pin(fut::ready(Err(SendError::NotConnected(self.state)))),
        };
        let ack_wait = self.config.whatsapp.ack_wait;
        let SendText { to, body, media, id, typing, fences } = msg;
        let name = self.name.clone();
        Box::pin(
            async move {
                if !typing.is_zero() {
                    if let Err(e) = page.composing(to.as_str()).await {
                        return Some(Err(e));
                    }
                    tokio::time::sleep(typing).await;
                }
                // Cluster mode: the last check before the page sends. A
                // node stopped (SIGSTOP) mid-send wakes up past it.
                if fences.as_ref().is_some_and(|f| !f.may_send(&name)) {
                    return None;
                }
                let started = Instant::now();
                let result = match &media {
                    Some(media) => page.send_media(to.as_str(), &body, &id, media).await,
                    None => page.send(to.as_str(), &body, &id).await,
                };
                let result = result.map(|r| (r, id));
                tracing::debug!(took_ms = started.elapsed().as_secs_f64() * 1000.0, "send in page");
                Some(result)
            }
            .into_actor(self)
            .then(move |result, act, ctx| {
                let (sent, waiter) = match result {
                    None => (Err(SendError::NotLeased), None),
                    Some(Err(e)) => (Err(SendError::Page(e.to_string())), None),
                    Some(Ok((Err(refused), _))) => (Err(SendError::Refused(refused)), None),
                    Some(Ok((Ok(sent), id))) if sent.ack != 0 => {
                        let ack = sent.ack;
                        (Ok(sent), (ack < 0).then(|| (id, None)))
                    }
                    Some(Ok((Ok(sent), id))) => {
                        // Its ack may have been drained already.
                        let seen = act.recent_acks.iter().rev().find(|(i, _)| *i == id).map(|(_, a)| a.clone());
                        match seen {
                            Some(ack) => {
                                let (tx, rx) = oneshot::channel();
                                let _ = tx.send(ack);
                                (Ok(sent), Some((id, Some(rx))))
                            }
                            None => {
                                let (tx, rx) = oneshot::channel();
                                act.waiting.insert(id.clone(), tx);
                                act.fast_poll(ctx);
                                (Ok(sent), Some((id, Some(rx))))
                            }
                        }
                    }
                };
                let session = act.name.clone();
                fut::wrap_future::<_, Self>(async move {
                    let sent = sent?;
                    let mut ack = sent.ack;
                    if let Some((_, Some(rx))) = waiter {
                        match tokio::time::timeout(ack_wait, rx).await {
                            Ok(Ok(Ok(a))) => ack = a,
                            Ok(Ok(Err(e))) => return Err(e),
                            _ => {}
                        }
                    }
                    if ack < 0 {
                        return Err(SendError::Rejected { code: None });
                    }
                    tracing::info!(session = %session, event = "message.sent", id = %sent.id, ack, "message sent");
                    Ok(SendOutcome { id: sent.id, to: sent.to, ack })
                })
                .map(|result, act: &mut Self, _| {
                    if let Err(SendError::Rejected { .. }) | Err(SendError::Page(_)) = &result {
                        tracing::warn!(session = %act.name, event = "message.failed", "send failed");
                    }
                    result
                })
            }),
        )
    }
}

impl Handler<Lookup> for Session {
    type Result = ResponseFuture<Result<Option<i8>, SendError>>;

    fn handle(&mut self, msg: Lookup, _ctx: &mut Self::Context) -> Self::Result {
        let page = match (&self.page, self.state) {
            (Some(page), SessionState::Connected) if !self.ended => page.clone(),
            _ => {
                let state = self.state;
                return Box::pin(async move { Err(SendError::NotConnected(state)) });
            }
        };
        Box::pin(async move { page.lookup(msg.to.as_str(), &msg.id).await.map_err(|e| SendError::Page(e.to_string())) })
    }
}

impl Handler<LogoutPage> for Session {
    type Result = ResponseFuture<Result<(), String>>;

    fn handle(&mut self, _msg: LogoutPage, _ctx: &mut Self::Context) -> Self::Result {
        let page = self.page.clone();
        Box::pin(async move {
            match page {
                Some(page) => page.action("logout").await.map_err(|e| e.to_string()),
                None => Err("no page is open".into()),
            }
        })
    }
}

impl Handler<Shutdown> for Session {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: Shutdown, _ctx: &mut Self::Context) -> Self::Result {
        self.ended = true;
        for (_, waiter) in self.waiting.drain() {
            let _ = waiter.send(Err(SendError::Page("session is stopping".into())));
        }
        let page = self.page.take();
        let profile = self.profile.clone();
        Box::pin(
            async move {
                if let Some(page) = page {
                    page.close(msg.close_within).await;
                }
                kill_browsers(profile).await;
            }
            .into_actor(self)
            .map(|_, _, ctx| ctx.stop()),
        )
    }
}
