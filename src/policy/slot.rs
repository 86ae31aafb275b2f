//! One session's slot in the Supervisor, as pure code: its record and state
//! bookkeeping (restart accounting on connect and disconnect), the restart
//! policy's plan for the end of a run, the plan for an operator's command,
//! and the verdicts on health reports.
//! Time and randomness are arguments. The Supervisor owns one per session
//! and carries out what these return: store writes, events, alerts, timers,
//! Session actors.

use std::collections::VecDeque;
use std::time::Duration;

use rand::Rng;
use serde::Serialize;

use crate::config::EventMode;
use crate::policy::objectives::{Crossing, Objectives, Targets, Tracker};
use crate::policy::{health, Decision, EndReason, Policy, Restarts};
use crate::session_state::{Me, SessionState};
use crate::store::{Desired, HistoryEntry, SessionRecord};

/// A session as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
    /// Restart attempts since the session was last healthy for
    /// `restart.reset_after`.
    pub attempt: u32,
    /// When the next restart is due (while `RECONNECTING`), Unix epoch ms.
    pub next_attempt_ms: Option<u64>,
    /// Restarts within `restart.window`; at `restart.max_restarts` the next
    /// failure makes the session `FAILED`.
    pub restarts_in_window: u32,
    /// Last healthy heartbeat, Unix epoch ms.
    pub last_heartbeat_ms: Option<u64>,
    /// Files under the key store at the last count.
    pub key_files: Option<u64>,
    /// PSS of the browser's process tree at the last reading, bytes.
    pub browser_pss_bytes: Option<u64>,
    /// How the page's events reach the daemon: `bidi` (pushed) or `poll`
    /// (`poll` also when `whatsapp.events = "bidi"` but chromedriver
    /// offered no BiDi, or after `whatsapp.bidi_fallback_after` `bidi_lost`
    /// ends within `restart.window`). Absent while no page is open.
    pub events: Option<EventMode>,
    /// Uptime, reconnects, recovery time and key files against their
    /// targets (`[objectives]`, seed 004's by default), figured at most 5 s
    /// ago.
    pub objectives: Objectives,
    /// Cluster mode: the node holding the session's live lease, where its
    /// browser runs (`cluster.node`); `null` on one node (sled) and while
    /// no node holds it. Set by the HTTP layer from the `leases` table.
    pub node: Option<String>,
}

/// One session's state and bookkeeping.
#[derive(Debug, Clone)]
pub struct SessionSlot {
    pub record: SessionRecord,
    /// Bumped at every start and stop: reports of an older Session are void.
    pub generation: u64,
    /// The QR string while `SCAN_QR`. A secret: memory only, never logged.
    pub qr: Option<String>,
    pub restarts: Restarts,
    /// When the next restart is due, epoch ms.
    pub next_attempt_ms: Option<u64>,
    pub last_heartbeat_ms: Option<u64>,
    pub key_files: Option<u64>,
    /// The key-file count is over its threshold (alerted once per crossing).
    key_files_over: bool,
    pub browser_pss_bytes: Option<u64>,
    /// How the running page's events arrive (see [`SessionView::events`]).
    pub events: Option<EventMode>,
    /// When each `bidi_lost` end within `restart.window` happened, epoch ms.
    bidi_lost: VecDeque<u64>,
    /// `whatsapp.bidi_fallback_after` such ends came within the window: the
    /// session's next runs poll their page ([`SessionSlot::poll_fallback`]).
    poll_fallback: bool,
    /// The history's marks the objectives are figured from.
    tracker: Tracker,
    targets: Targets,
    /// The objectives at the last [`SessionSlot::refresh_objectives`].
    objectives: Objectives,
}

/// A state change to record.
#[derive(Debug, Clone, PartialEq)]
pub struct Changed {
    pub entry: HistoryEntry,
    /// `LOGGED_OUT`, `FAILED` or `BLOCKED`: a human is needed; alert.
    pub alert: bool,
}

/// What the end of a Session's run leads to (from the restart policy).
#[derive(Debug, Clone, PartialEq)]
pub enum EndPlan {
    /// `RECONNECTING`; start again after `delay` (at `at_ms`).
    Restart { delay: Duration, at_ms: u64, attempt: u32 },
    /// The restart budget is spent: `FAILED(restart_budget_spent)`.
    GiveUp { detail: String },
    /// The credentials are void: wipe the profile, `LOGGED_OUT`, a new QR.
    Relink,
    /// Enter this state (`CONFLICT`, `BLOCKED`, `FAILED`), no restart.
    Enter(SessionState),
}

/// An operator's command on one session (`POST /api/sessions/{name}/…`,
/// `DELETE /api/sessions/{name}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Start,
    Stop,
    Restart,
    Logout,
    Delete,
    /// Clear the restart budget and restart a `FAILED` or `BLOCKED` session.
    Recover,
}

/// How the Supervisor carries out an operator's command, step by step in
/// field order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandPlan {
    /// Store this desired state first; if the write fails, the command fails
    /// and nothing else happens (so a restart never brings back what the
    /// operator was told is gone).
    pub desired: Option<Desired>,
    /// Clear the restart budget (once the desired state is stored).
    pub clear_restarts: bool,
    /// Ask the page to log out first (best effort: the profile is wiped
    /// regardless).
    pub logout_page: bool,
    /// Stop the Session actor and wait for its browser to close.
    pub stop: bool,
    /// What follows.
    pub then: Then,
}

/// The last step of a [`CommandPlan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Start a Session unless one runs.
    Start,
    /// Enter `STOPPED(reason)`; start again if `start`.
    Stopped { reason: &'static str, start: bool },
    /// The credentials are void: wipe the profile, `LOGGED_OUT(reason)`, and
    /// start afresh if the session should run.
    Relink(&'static str),
    /// Wipe the profile and forget the session, in memory and in the store.
    Delete,
}

/// Health limits (from `[health]`).
#[derive(Debug, Clone, Copy)]
pub struct HealthLimits {
    /// Browser PSS over this recycles it, bytes.
    pub memory_max: u64,
    /// More key files than this is a warning (the `device_removed`
    /// post-mortem).
    pub key_files_max: u64,
    /// Purge a linked session's keys (relink) when over.
    pub key_files_cleanup: bool,
}

/// What a health report asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthPlan {
    /// The browser is over its memory limit: `(pss, max)`; recycle it.
    pub recycle: Option<(u64, u64)>,
    /// The key files just crossed their threshold: `(count, max)`; record
    /// and alert.
    pub key_files_crossed: Option<(u64, u64)>,
    /// The key files just went back within their threshold: `(count,
    /// max)`; record (so that a restart knows the next crossing is new).
    pub key_files_back: Option<(u64, u64)>,
    /// Purge the keys (stop and relink): over the threshold, cleanup
    /// configured, and the session is linked (an unpaired profile would be
    /// purged forever).
    pub purge: bool,
}

impl SessionSlot {
    /// A slot with no history yet ([`SessionSlot::seed`] gives it the
    /// stored one); its objectives are measured against `targets`.
    pub fn new(record: SessionRecord, targets: Targets) -> Self {
        Self {
            record,
            generation: 0,
            qr: None,
            restarts: Restarts::default(),
            next_attempt_ms: None,
            last_heartbeat_ms: None,
            key_files: None,
            key_files_over: false,
            browser_pss_bytes: None,
            events: None,
            bidi_lost: VecDeque::new(),
            poll_fallback: false,
            tracker: Tracker::default(),
            targets,
            objectives: Objectives::unknown(&targets),
        }
    }

    /// The session's stored history, oldest first (at boot). The last
    /// key-file crossing recorded (`session.health`, reason `key_files`) is
    /// still under way unless a return within the threshold (the same
    /// event with `detail.over` false) or a wiped profile (`LOGGED_OUT`)
    /// came after it; one under way is not alerted again. (Once the
    /// crossing has left the kept history, `crate::store::HISTORY_KEEP`
    /// entries, a restart alerts it again.)
    pub fn seed(&mut self, history: &[HistoryEntry]) {
        self.tracker = Tracker::from_history(history);
        self.key_files_over = history
            .iter()
            .rev()
            .find_map(|e| {
                if e.event == "session.health" && e.reason.as_deref() == Some("key_files") {
                    Some(e.detail.as_ref().and_then(|d| d.get("over")) != Some(&serde_json::Value::Bool(false)))
                } else if e.event == "session.status" && e.state == SessionState::LoggedOut {
                    Some(false)
                } else {
                    None
                }
            })
            .unwrap_or(false);
    }

    /// A history entry recorded outside [`SessionSlot::set_state`] and
    /// [`SessionSlot::on_end`] (the session's creation, a daemon that died).
    pub fn note(&mut self, entry: &HistoryEntry) {
        self.tracker.note(entry);
    }

    /// Figures the objectives at `now_ms` (kept for the view); returns the
    /// watched ones that crossed their target since the last call, each
    /// once per crossing.
    pub fn refresh_objectives(&mut self, now_ms: u64) -> Vec<Crossing> {
        let (objectives, crossings) = self.tracker.refresh(now_ms, self.key_files, &self.targets);
        self.objectives = objectives;
        crossings
    }

    /// Enters `state` for `reason` at `now_ms`; `None` if that is the state
    /// already. Keeps the restart accounting: connected resets the healthy
    /// clock, leaving `CONNECTED` starts the budget window.
    pub fn set_state(&mut self, policy: &Policy, state: SessionState, reason: Option<String>, now_ms: u64) -> Option<Changed> {
        if self.record.state == state && self.record.reason == reason {
            return None;
        }
        if state == SessionState::Connected {
            self.restarts.on_connected(now_ms);
        } else if self.record.state == SessionState::Connected {
            self.restarts.on_disconnected(policy, now_ms);
        }
        self.record.state = state;
        self.record.reason = reason.clone();
        self.record.since_ms = now_ms;
        if state != SessionState::Reconnecting {
            self.next_attempt_ms = None;
        }
        if state != SessionState::ScanQr {
            self.qr = None;
        }
        let alert = matches!(state, SessionState::LoggedOut | SessionState::Failed | SessionState::Blocked);
        let entry = HistoryEntry::status(state, reason, now_ms);
        self.tracker.note(&entry);
        Some(Changed { entry, alert })
    }

    /// The Session's run ended for `reason` at `now_ms`: the restart
    /// policy's plan.
    pub fn on_end(&mut self, policy: &Policy, reason: EndReason, now_ms: u64, rng: &mut impl Rng) -> EndPlan {
        match self.restarts.on_end(policy, reason, now_ms, rng) {
            Decision::Restart { delay, attempt } => {
                let at_ms = now_ms.saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
                self.next_attempt_ms = Some(at_ms);
                self.tracker.restart(now_ms);
                EndPlan::Restart { delay, at_ms, attempt }
            }
            Decision::GiveUp => EndPlan::GiveUp {
                detail: format!("restart budget spent: {} restarts within {:?}; last end: {reason}", policy.max_restarts, policy.window),
            },
            Decision::Relink => EndPlan::Relink,
            Decision::Conflict => EndPlan::Enter(SessionState::Conflict),
            Decision::Block => EndPlan::Enter(SessionState::Blocked),
            Decision::Fail => EndPlan::Enter(SessionState::Failed),
        }
    }

    /// A run ended with `bidi_lost` at `now_ms`. The `after`-th such end
    /// within `window` (`restart.window`) switches the session's next runs
    /// to polling: then `Some(count)`, once (`None` otherwise, and always
    /// with `after` 0, which never falls back).
    pub fn on_bidi_lost(&mut self, window: Duration, after: u32, now_ms: u64) -> Option<u32> {
        crate::policy::restart::forget_outside(&mut self.bidi_lost, window, now_ms);
        self.bidi_lost.push_back(now_ms);
        let count = u32::try_from(self.bidi_lost.len()).unwrap_or(u32::MAX);
        if after == 0 || self.poll_fallback || count < after {
            return None;
        }
        self.poll_fallback = true;
        Some(count)
    }

    /// Whether the session's next runs poll their page after repeated
    /// `bidi_lost` ([`SessionSlot::on_bidi_lost`]), until
    /// [`SessionSlot::retry_bidi`]; memory only (a daemon restart, or the
    /// session moving to another node in cluster mode, starts afresh).
    pub fn poll_fallback(&self) -> bool {
        self.poll_fallback
    }

    /// An operator's command left the session with no run (stop, restart,
    /// recover, logout, or a start of a session not running): its next run
    /// tries pushed events again, with no `bidi_lost` counted.
    pub fn retry_bidi(&mut self) {
        self.bidi_lost.clear();
        self.poll_fallback = false;
    }

    /// A Session's report: its QR and account. Returns `(new_qr,
    /// me_changed)`: a new QR to announce; an account to store.
    pub fn on_status(&mut self, qr: Option<String>, me: Option<Me>) -> (bool, bool) {
        let new_qr = qr.is_some() && qr != self.qr;
        self.qr = qr;
        let me_changed = me.is_some() && self.record.me != me;
        if me_changed {
            self.record.me = me;
        }
        (new_qr, me_changed)
    }

    /// A health report (any part may be absent).
    pub fn on_health(&mut self, heartbeat_ms: Option<u64>, pss: Option<u64>, key_files: Option<u64>, limits: HealthLimits) -> HealthPlan {
        let mut plan = HealthPlan::default();
        if heartbeat_ms.is_some() {
            self.last_heartbeat_ms = heartbeat_ms;
        }
        if let Some(pss) = pss {
            self.browser_pss_bytes = Some(pss);
            if health::memory_over(pss, limits.memory_max) {
                plan.recycle = Some((pss, limits.memory_max));
                return plan;
            }
        }
        if let Some(count) = key_files {
            self.key_files = Some(count);
            match health::key_files(count, limits.key_files_max) {
                health::KeyFiles::Ok => {
                    if self.key_files_over {
                        plan.key_files_back = Some((count, limits.key_files_max));
                    }
                    self.key_files_over = false;
                }
                health::KeyFiles::Over { count, max } => {
                    if !self.key_files_over {
                        plan.key_files_crossed = Some((count, max));
                    }
                    self.key_files_over = true;
                    plan.purge = limits.key_files_cleanup && self.record.me.is_some();
                }
            }
        }
        plan
    }

    /// The plan for an operator's `command`. Errors: the command does not
    /// apply to the session's state; the text says what it needs.
    pub fn command(&self, command: Command) -> Result<CommandPlan, &'static str> {
        let plan = |desired, then| CommandPlan { desired: Some(desired), clear_restarts: false, logout_page: false, stop: true, then };
        Ok(match command {
            Command::Start => CommandPlan { stop: false, ..plan(Desired::Running, Then::Start) },
            Command::Stop => plan(Desired::Stopped, Then::Stopped { reason: "operator", start: false }),
            Command::Restart => plan(Desired::Running, Then::Stopped { reason: "restart", start: true }),
            Command::Recover => {
                if !matches!(self.record.state, SessionState::Failed | SessionState::Blocked) {
                    return Err("recover is for FAILED or BLOCKED sessions");
                }
                CommandPlan { clear_restarts: true, ..plan(Desired::Running, Then::Stopped { reason: "recover", start: true }) }
            }
            Command::Delete => plan(Desired::Stopped, Then::Delete),
            // What the operator wants does not change: a running session
            // comes back with a new QR.
            Command::Logout => CommandPlan { desired: None, logout_page: true, ..plan(Desired::Running, Then::Relink("operator_logout")) },
        })
    }

    /// The profile was wiped: no account, no key-file warning pending.
    pub fn relinked(&mut self) {
        self.record.me = None;
        self.key_files_over = false;
    }

    pub fn view(&self, policy: &Policy, now_ms: u64) -> SessionView {
        SessionView {
            name: self.record.name.clone(),
            state: self.record.state,
            reason: self.record.reason.clone(),
            since_ms: self.record.since_ms,
            me: self.record.me.clone(),
            desired: self.record.desired,
            attempt: self.restarts.attempt(),
            next_attempt_ms: self.next_attempt_ms,
            restarts_in_window: self.restarts.in_window(policy, now_ms),
            last_heartbeat_ms: self.last_heartbeat_ms,
            key_files: self.key_files,
            browser_pss_bytes: self.browser_pss_bytes,
            events: self.events,
            objectives: self.objectives,
            node: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn slot() -> SessionSlot {
        SessionSlot::new(
            SessionRecord {
                name: "acme".into(),
                desired: Desired::Running,
                state: SessionState::Stopped,
                reason: None,
                since_ms: 0,
                me: None,
                created_ms: 0,
            },
            Targets::default(),
        )
    }

    fn policy() -> Policy {
        Policy {
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(30),
            max_restarts: 10,
            window: Duration::from_secs(3600),
            reset_after: Duration::from_secs(600),
        }
    }

    const LIMITS: HealthLimits = HealthLimits { memory_max: 1000, key_files_max: 100, key_files_cleanup: true };

    #[test]
    fn a_state_change_is_recorded_once_and_alerts_when_a_human_is_needed() {
        let policy = policy();
        let mut s = slot();
        let c = s.set_state(&policy, SessionState::Connected, None, 10).expect("changed");
        assert!(!c.alert);
        assert_eq!(s.set_state(&policy, SessionState::Connected, None, 11), None);
        let c = s.set_state(&policy, SessionState::LoggedOut, Some("phone_logout".into()), 12).expect("changed");
        assert!(c.alert);
        assert_eq!((c.entry.state, c.entry.at_ms), (SessionState::LoggedOut, 12));
        assert_eq!(s.record.since_ms, 12);
    }

    #[test]
    fn repeated_bidi_losses_within_the_window_fall_back_to_polling_once() {
        let window = Duration::from_secs(3600);
        let mut s = slot();
        assert_eq!(s.on_bidi_lost(window, 3, 1_000), None);
        assert_eq!(s.on_bidi_lost(window, 3, 2_000), None);
        // The first loss leaves the window before the third comes.
        assert_eq!(s.on_bidi_lost(window, 3, 3_601_000), None);
        assert!(!s.poll_fallback());
        assert_eq!(s.on_bidi_lost(window, 3, 3_601_500), Some(3));
        assert!(s.poll_fallback());
        // Once: further losses change nothing.
        assert_eq!(s.on_bidi_lost(window, 3, 3_603_000), None);
        // An operator's stop tries BiDi again, counting from zero.
        s.retry_bidi();
        assert!(!s.poll_fallback());
        assert_eq!(s.on_bidi_lost(window, 3, 3_604_000), None);
        // 0: never.
        let mut never = slot();
        for at in 1..10 {
            assert_eq!(never.on_bidi_lost(window, 0, at), None);
        }
        assert!(!never.poll_fallback());
    }

    #[test]
    fn ends_follow_the_restart_policy() {
        let policy = policy();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut s = slot();
        match s.on_end(&policy, EndReason::BrowserDied, 1_000, &mut rng) {
            EndPlan::Restart { at_ms, attempt, .. } => {
                assert_eq!(attempt, 1);
                assert_eq!(s.next_attempt_ms, Some(at_ms));
                assert!(at_ms > 1_000);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.on_end(&policy, EndReason::DeviceRemoved, 2_000, &mut rng), EndPlan::Relink);
        assert_eq!(s.on_end(&policy, EndReason::TosBlock, 3_000, &mut rng), EndPlan::Enter(SessionState::Blocked));
        // Leaving RECONNECTING forgets the due time.
        s.set_state(&policy, SessionState::Starting, None, 4_000);
        assert_eq!(s.next_attempt_ms, None);
    }

    #[test]
    fn health_verdicts() {
        let mut s = slot();
        assert_eq!(s.on_health(Some(5), Some(2000), None, LIMITS).recycle, Some((2000, 1000)));
        assert_eq!(s.last_heartbeat_ms, Some(5));
        // Over the key-file threshold: crossed once, purged only if linked.
        let p = s.on_health(None, None, Some(150), LIMITS);
        assert_eq!((p.key_files_crossed, p.purge), (Some((150, 100)), false));
        assert_eq!(s.on_health(None, None, Some(160), LIMITS).key_files_crossed, None);
        s.on_status(None, Some(Me { wid: "4915112345678@c.us".into(), pushname: None }));
        assert!(s.on_health(None, None, Some(170), LIMITS).purge);
        let back = s.on_health(None, None, Some(10), LIMITS);
        assert_eq!(back, HealthPlan { key_files_back: Some((10, 100)), ..HealthPlan::default() });
        assert_eq!(s.on_health(None, None, Some(11), LIMITS), HealthPlan::default());
        assert_eq!(s.on_health(None, None, Some(150), LIMITS).key_files_crossed, Some((150, 100)));
    }

    #[test]
    fn a_key_file_crossing_under_way_at_boot_is_not_alerted_again() {
        let health = |over: bool, at_ms| HistoryEntry {
            state: SessionState::Connected,
            reason: Some("key_files".into()),
            at_ms,
            event: "session.health".into(),
            detail: Some(serde_json::json!({"key_files": 150, "max": 100, "over": over})),
        };
        let connected = HistoryEntry::status(SessionState::Connected, None, 1);
        let crossings = |s: &mut SessionSlot| s.on_health(None, None, Some(150), LIMITS).key_files_crossed;
        // Crossed, not back: still under way.
        let mut s = slot();
        s.seed(&[connected.clone(), health(true, 2), HistoryEntry::status(SessionState::Stopped, Some("daemon_shutdown".into()), 3)]);
        assert_eq!(crossings(&mut s), None);
        // Back within the threshold, or the profile wiped since: a new crossing.
        let mut s = slot();
        s.seed(&[connected.clone(), health(true, 2), health(false, 3)]);
        assert_eq!(crossings(&mut s), Some((150, 100)));
        let mut s = slot();
        s.seed(&[health(true, 2), HistoryEntry::status(SessionState::LoggedOut, Some("key_files_cleanup".into()), 3)]);
        assert_eq!(crossings(&mut s), Some((150, 100)));
        // An older event without `over` was a crossing.
        let mut s = slot();
        let mut old = health(true, 2);
        old.detail = Some(serde_json::json!({"key_files": 150, "max": 100}));
        s.seed(&[old]);
        assert_eq!(crossings(&mut s), None);
    }

    #[test]
    fn an_operators_command_stores_what_the_operator_wants_before_it_acts() {
        let s = slot();
        let start = s.command(Command::Start).expect("start applies");
        assert_eq!((start.desired, start.stop, start.then), (Some(Desired::Running), false, Then::Start));
        let stop = s.command(Command::Stop).expect("stop applies");
        assert_eq!((stop.desired, stop.stop), (Some(Desired::Stopped), true));
        assert_eq!(stop.then, Then::Stopped { reason: "operator", start: false });
        assert_eq!(
            s.command(Command::Restart).map(|p| (p.desired, p.then)),
            Ok((Some(Desired::Running), Then::Stopped { reason: "restart", start: true }))
        );
        let delete = s.command(Command::Delete).expect("delete applies");
        assert_eq!((delete.desired, delete.stop, delete.then), (Some(Desired::Stopped), true, Then::Delete));
        // A logout keeps the desired state and asks the page first.
        let logout = s.command(Command::Logout).expect("logout applies");
        assert_eq!((logout.desired, logout.logout_page, logout.stop), (None, true, true));
        assert_eq!(logout.then, Then::Relink("operator_logout"));
        // Only stop-like plans ask the page to log out or clear the budget.
        for command in [Command::Start, Command::Stop, Command::Restart, Command::Delete] {
            let p = s.command(command).expect("applies");
            assert!(!p.logout_page && !p.clear_restarts, "{command:?}");
        }
    }

    #[test]
    fn recover_is_only_for_failed_or_blocked_sessions_and_clears_the_budget() {
        let policy = policy();
        let mut s = slot();
        for state in [SessionState::Stopped, SessionState::Connected, SessionState::Reconnecting, SessionState::LoggedOut] {
            s.set_state(&policy, state, None, 1);
            assert_eq!(s.command(Command::Recover), Err("recover is for FAILED or BLOCKED sessions"), "{state}");
        }
        for state in [SessionState::Failed, SessionState::Blocked] {
            s.set_state(&policy, state, None, 2);
            let p = s.command(Command::Recover).expect("recover applies");
            assert_eq!((p.desired, p.clear_restarts, p.stop), (Some(Desired::Running), true, true));
            assert_eq!(p.then, Then::Stopped { reason: "recover", start: true });
        }
    }

    #[test]
    fn state_changes_and_restarts_feed_the_objectives() {
        let policy = Policy { max_restarts: 20, ..policy() };
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let mut s = slot();
        assert_eq!(s.view(&policy, 0).objectives.reconnects_24h.value, None);
        s.set_state(&policy, SessionState::Connected, None, 1_000);
        for i in 0..11u64 {
            let at = 2_000 + i * 1_000;
            assert!(matches!(s.on_end(&policy, EndReason::BidiLost, at, &mut rng), EndPlan::Restart { .. }));
            s.set_state(&policy, SessionState::Reconnecting, Some("bidi_lost".into()), at);
            s.set_state(&policy, SessionState::Connected, None, at + 100);
        }
        let crossings = s.refresh_objectives(20_000);
        let o = s.view(&policy, 20_000).objectives;
        assert_eq!((o.reconnects_24h.value, o.reconnects_24h.met), (Some(11), Some(false)));
        assert_eq!(o.recovery_last_ms.value, Some(100));
        assert!(crossings.iter().any(|c| c.objective == crate::policy::objectives::Watched::Reconnects24h && !c.met));
        assert!(s.refresh_objectives(21_000).is_empty(), "once per crossing");
    }

    #[test]
    fn a_new_qr_is_announced_once_and_cleared_off_scan_qr() {
        let policy = policy();
        let mut s = slot();
        assert_eq!(s.on_status(Some("ref1".into()), None), (true, false));
        assert_eq!(s.on_status(Some("ref1".into()), None), (false, false));
        s.set_state(&policy, SessionState::ScanQr, None, 1);
        assert!(s.qr.is_some());
        s.set_state(&policy, SessionState::Connected, None, 2);
        assert!(s.qr.is_none());
    }
}
