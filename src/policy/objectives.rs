//! A session's objectives, as pure code: uptime, reconnects, recovery time
//! and key files against their targets, from the session's history.
//!
//! The targets are seed 004's (the `device_removed` post-mortem,
//! `004_device-removed-postmortem.ru.md`, section «Метрики и мониторинг»,
//! "key metrics to watch"): fewer than 100 files in the key store, at most
//! 10 reconnects a day, 99.9 % uptime, recovery under 5 minutes. That
//! incident (259 reconnects in 8 days, then WhatsApp revoked the device)
//! would have been caught days early by the reconnect figure.
//!
//! A [`Tracker`] per session is fed every history entry as it is recorded
//! (and the stored history at boot), keeps only what the figures need
//! (phase changes, restart times, recoveries, at most [`MAX_MARKS`] of each,
//! nothing older than 7 days), and answers [`Objectives`] for a time
//! `now_ms` in O(marks kept). [`objectives`] does the same for a history
//! slice in one call. Time is an argument; nothing here reads a clock.
//!
//! What the figures mean:
//! - **Uptime** (`uptime_24h`, `uptime_7d`): time `CONNECTED` over the time
//!   the session was meant to run, within the window. Not counted: time the
//!   operator stopped the session (`STOPPED` for any reason but a daemon
//!   stop), and an outage the operator caused (a stop, restart, recover or
//!   logout command) until the session is `CONNECTED` again or fails on its
//!   own (`RECONNECTING`, `LOGGED_OUT`, …). A daemon that was down
//!   (`STOPPED(daemon_shutdown)`, or `STOPPED(daemon_died)` recorded at the
//!   next boot from the store's liveness mark, at most 5 s before the
//!   crash: see [`daemon_died`]) counts as down. Not counted either: time
//!   before the session's first `CONNECTED` in the kept history (a session
//!   never connected has no uptime: its failure to come up is `FAILED`'s
//!   alert, not an uptime figure), and time before the first kept entry,
//!   which is unknown: **when the kept history is shorter than the window
//!   (the store keeps the newest [`crate::store::HISTORY_KEEP`] entries per
//!   session, this tracker at most [`MAX_MARKS`] phase changes), the figure
//!   is the ratio over the time known**. `null` when no time in the window
//!   counts (never connected, or stopped the whole window).
//! - **Reconnects** (`reconnects_24h`): restarts scheduled
//!   (`session.restart_scheduled`) in the last 24 h. A page that reconnects
//!   by itself (a network flap: `RECONNECTING` then `CONNECTED`, no browser
//!   restart) is not one.
//! - **Recovery** (`recovery_last_ms`, `recovery_p95_7d_ms`): from leaving
//!   `CONNECTED` for a reason that is not the operator's to `CONNECTED`
//!   again, ms. An outage still under way counts with its time so far (so a
//!   session down for an hour shows it before it is back). An operator
//!   command during the outage voids it. `last`: the outage under way, else
//!   the last one that ended within 7 days; `p95_7d`: the nearest-rank 95th
//!   percentile of those that ended within 7 days and the one under way.
//! - **Key files**: the last count of files under the key store.
//!
//! `met` is `value >= target` for uptime and `value <= target` for the
//! others; `value` and `met` are `null` while there is no data.

use std::collections::VecDeque;

use serde::Serialize;

use crate::session_state::SessionState;
use crate::store::HistoryEntry;

/// One day, ms.
pub const DAY_MS: u64 = 24 * 3600 * 1000;
/// Seven days, ms: the longest window.
pub const WEEK_MS: u64 = 7 * DAY_MS;
/// Phase changes, restarts and recoveries kept per session, each (16 bytes
/// apiece: at most 480 KiB for a session flapping all week). Past it the
/// oldest go first, and the known time starts later.
pub const MAX_MARKS: usize = 10_000;

/// The targets (`[objectives]`). Defaults: seed 004's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Targets {
    /// Least uptime ratio, 0..=1. Default 0.999.
    pub uptime: f64,
    /// Most restarts in 24 h. Default 10.
    pub reconnects_per_day: u64,
    /// Longest recovery, ms. Default 300,000 (5 min).
    pub recovery_ms: u64,
    /// Most key files. Default 100.
    pub key_files: u64,
}

impl Default for Targets {
    fn default() -> Self {
        Self { uptime: 0.999, reconnects_per_day: 10, recovery_ms: 5 * 60 * 1000, key_files: 100 }
    }
}

/// A ratio objective (uptime).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = ObjectiveRatio)]
pub struct Ratio {
    /// 0..=1; `null` while nothing counts yet.
    pub value: Option<f64>,
    /// The least value that meets the objective.
    pub target: f64,
    /// `value >= target`; `null` with `value`.
    pub met: Option<bool>,
}

/// A count objective (reconnects, ms, files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = ObjectiveCount)]
pub struct Count {
    /// `null` while there is no data.
    pub value: Option<u64>,
    /// The most that meets the objective.
    pub target: u64,
    /// `value <= target`; `null` with `value`.
    pub met: Option<bool>,
}

impl Ratio {
    fn new(value: Option<f64>, target: f64) -> Self {
        Self { value, target, met: value.map(|v| v >= target) }
    }
}

impl Count {
    fn new(value: Option<u64>, target: u64) -> Self {
        Self { value, target, met: value.map(|v| v <= target) }
    }
}

/// A session's objectives, each `{value, target, met}` against its target
/// (`[objectives]`). Uptime is time `CONNECTED` over time the session was
/// meant to run (operator stops not counted), over the time known when the
/// kept history is shorter than the window; reconnects are restarts
/// scheduled; recovery is from leaving `CONNECTED` (not by the operator)
/// to `CONNECTED` again, an outage under way counted so far.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Objectives {
    /// Time connected over time meant to run, last 24 h.
    pub uptime_24h: Ratio,
    /// The same over the last 7 days (or the time known, if shorter).
    pub uptime_7d: Ratio,
    /// Restarts scheduled in the last 24 h.
    pub reconnects_24h: Count,
    /// The outage under way, else the last recovery that ended within 7
    /// days, ms.
    pub recovery_last_ms: Count,
    /// 95th percentile of recoveries in the last 7 days, ms.
    pub recovery_p95_7d_ms: Count,
    /// Files under the key store at the last count.
    pub key_files: Count,
}

impl Objectives {
    /// No data yet: every value `null`.
    pub fn unknown(targets: &Targets) -> Self {
        Self {
            uptime_24h: Ratio::new(None, targets.uptime),
            uptime_7d: Ratio::new(None, targets.uptime),
            reconnects_24h: Count::new(None, targets.reconnects_per_day),
            recovery_last_ms: Count::new(None, targets.recovery_ms),
            recovery_p95_7d_ms: Count::new(None, targets.recovery_ms),
            key_files: Count::new(None, targets.key_files),
        }
    }

    /// `met`, value and target of a watched objective.
    fn watched(&self, w: Watched) -> (Option<bool>, serde_json::Value, serde_json::Value) {
        match w {
            Watched::Uptime24h => (self.uptime_24h.met, self.uptime_24h.value.into(), self.uptime_24h.target.into()),
            Watched::Reconnects24h => (self.reconnects_24h.met, self.reconnects_24h.value.into(), self.reconnects_24h.target.into()),
            Watched::KeyFiles => (self.key_files.met, self.key_files.value.into(), self.key_files.target.into()),
        }
    }
}

/// The objectives whose crossing raises `session.objective` and an alert:
/// the ones seed 004's incident would have shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Watched {
    Uptime24h,
    Reconnects24h,
    KeyFiles,
}

impl Watched {
    pub const ALL: [Watched; 3] = [Self::Uptime24h, Self::Reconnects24h, Self::KeyFiles];

    /// The objective's key in [`Objectives`]' JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Uptime24h => "uptime_24h",
            Self::Reconnects24h => "reconnects_24h",
            Self::KeyFiles => "key_files",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.as_str() == s)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A watched objective went out of target (`met: false`) or back within it
/// (`met: true`).
#[derive(Debug, Clone, PartialEq)]
pub struct Crossing {
    pub objective: Watched,
    pub met: bool,
    /// The value (a number), as in the JSON.
    pub value: serde_json::Value,
    pub target: serde_json::Value,
}

impl Crossing {
    /// The event's `detail`: `{"objective", "value", "target", "met"}`.
    pub fn detail(&self) -> serde_json::Value {
        serde_json::json!({"objective": self.objective.as_str(), "value": self.value, "target": self.target, "met": self.met})
    }

    /// One line for the alert and the log.
    pub fn message(&self, session: &str) -> String {
        let side = match (self.objective, self.met) {
            (_, true) => "back within",
            (Watched::Uptime24h, false) => "under",
            (_, false) => "over",
        };
        format!("session {session}: {} is {}, {side} its target {}", self.objective.as_str(), self.value, self.target)
    }
}

/// What a stretch of time counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `CONNECTED`.
    Up,
    /// Meant to run and not connected, not the operator's doing.
    Down,
    /// Stopped by the operator, or an outage the operator caused: not
    /// counted.
    Off,
}

/// What a status change means for the figures.
fn phase(state: SessionState, reason: Option<&str>, before: Option<Phase>) -> Phase {
    let off_stays_off = if before == Some(Phase::Off) { Phase::Off } else { Phase::Down };
    match (state, reason) {
        (SessionState::Connected, _) => Phase::Up,
        // The daemon was down; a session the operator had stopped stays so.
        (SessionState::Stopped, Some("daemon_shutdown" | "daemon_died")) => off_stays_off,
        (SessionState::Stopped, _) => Phase::Off,
        (SessionState::LoggedOut, Some("operator_logout")) => Phase::Off,
        // Coming up after an operator's command is still the operator's
        // outage; after anything else it is downtime.
        (SessionState::Starting | SessionState::ScanQr, _) => off_stays_off,
        _ => Phase::Down,
    }
}

/// One session's marks (see the module docs). Cheap to keep: at most
/// [`MAX_MARKS`] of each kind.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    /// Phase changes, oldest first: `(at_ms, phase)`; the first one kept
    /// may be older than 7 days (it says what the window starts in).
    phases: VecDeque<(u64, Phase)>,
    /// Restarts scheduled in the last 24 h, ms.
    restarts: VecDeque<u64>,
    /// Recoveries that ended in the last 7 days: `(ended_ms, took_ms)`.
    recoveries: VecDeque<(u64, u64)>,
    /// When the outage under way began (left `CONNECTED`, not by the
    /// operator).
    outage_since: Option<u64>,
    /// The latest time noted: time never runs backwards here.
    last_ms: u64,
    /// The session was `CONNECTED` at some point noted: downtime counts
    /// from then on.
    been_up: bool,
    /// Anything was noted (a session with no history has no figures).
    noted: bool,
    /// Watched objectives out of target (alerted), by [`Watched::index`].
    missed: [bool; 3],
}

impl Tracker {
    /// A tracker seeded from a stored history, oldest first.
    pub fn from_history(history: &[HistoryEntry]) -> Self {
        let mut t = Self::default();
        for entry in history {
            t.note(entry);
        }
        t
    }

    /// Notes one history entry: a status change, a restart scheduled, or a
    /// `session.objective` event (which says whether the objective was
    /// already alerted: a restart of the daemon does not alert again).
    pub fn note(&mut self, entry: &HistoryEntry) {
        let at = entry.at_ms.max(self.last_ms);
        self.last_ms = at;
        self.noted = true;
        match entry.event.as_str() {
            "session.status" => self.status(entry.state, entry.reason.as_deref(), at),
            "session.restart_scheduled" => self.restart(at),
            "session.objective" => {
                let detail = entry.detail.as_ref();
                let objective = detail.and_then(|d| d["objective"].as_str()).and_then(Watched::parse);
                let met = detail.and_then(|d| d["met"].as_bool());
                if let (Some(objective), Some(met)) = (objective, met) {
                    self.missed[objective.index()] = !met;
                }
            }
            _ => {}
        }
        self.prune(at);
    }

    /// A restart was scheduled at `at_ms`.
    pub fn restart(&mut self, at_ms: u64) {
        let at = at_ms.max(self.last_ms);
        self.last_ms = at;
        self.noted = true;
        self.restarts.push_back(at);
        self.prune(at);
    }

    fn status(&mut self, state: SessionState, reason: Option<&str>, at: u64) {
        let before = self.phases.back().map(|&(_, p)| p);
        let next = match phase(state, reason, before) {
            Phase::Down if !self.been_up => Phase::Off,
            next => next,
        };
        self.been_up |= next == Phase::Up;
        match (before, next) {
            (Some(Phase::Up), Phase::Down) => self.outage_since = Some(at),
            (_, Phase::Off) => self.outage_since = None,
            (_, Phase::Up) => {
                if let Some(since) = self.outage_since.take() {
                    self.recoveries.push_back((at, at - since));
                }
            }
            _ => {}
        }
        if before != Some(next) {
            self.phases.push_back((at, next));
        }
    }

    /// Drops what no window needs any more, and anything past [`MAX_MARKS`].
    fn prune(&mut self, now: u64) {
        let week = now.saturating_sub(WEEK_MS);
        while self.phases.len() > MAX_MARKS || self.phases.get(1).is_some_and(|&(at, _)| at <= week) {
            self.phases.pop_front();
        }
        let day = now.saturating_sub(DAY_MS);
        while self.restarts.len() > MAX_MARKS || self.restarts.front().is_some_and(|&at| at < day) {
            self.restarts.pop_front();
        }
        while self.recoveries.len() > MAX_MARKS || self.recoveries.front().is_some_and(|&(at, _)| at < week) {
            self.recoveries.pop_front();
        }
    }

    /// The objectives at `now_ms`, with the last key-file count.
    pub fn objectives(&self, now_ms: u64, key_files: Option<u64>, targets: &Targets) -> Objectives {
        let now = now_ms.max(self.last_ms);
        let day = now.saturating_sub(DAY_MS);
        let reconnects = self.noted.then(|| self.restarts.iter().filter(|&&at| at >= day).count() as u64);
        let week = now.saturating_sub(WEEK_MS);
        let ongoing = self.outage_since.map(|since| now - since);
        let mut took: Vec<u64> = self.recoveries.iter().filter(|&&(at, _)| at >= week).map(|&(_, took)| took).collect();
        let last = ongoing.or_else(|| took.last().copied());
        took.extend(ongoing);
        took.sort_unstable();
        // Nearest rank: the smallest value with at least 95 % at or under it.
        let p95 = (!took.is_empty()).then(|| took[(took.len() * 95).div_ceil(100) - 1]);
        let (uptime_24h, uptime_7d) = self.uptimes(now);
        Objectives {
            uptime_24h: Ratio::new(uptime_24h, targets.uptime),
            uptime_7d: Ratio::new(uptime_7d, targets.uptime),
            reconnects_24h: Count::new(reconnects, targets.reconnects_per_day),
            recovery_last_ms: Count::new(last, targets.recovery_ms),
            recovery_p95_7d_ms: Count::new(p95, targets.recovery_ms),
            key_files: Count::new(key_files, targets.key_files),
        }
    }

    /// Time up over time counted within the last 24 h and the last 7 days,
    /// in one pass over the phases.
    fn uptimes(&self, now: u64) -> (Option<f64>, Option<f64>) {
        let (day, week) = (now.saturating_sub(DAY_MS), now.saturating_sub(WEEK_MS));
        // (up, counted) per window, ms.
        let (mut d, mut w) = ((0u64, 0u64), (0u64, 0u64));
        for (i, &(at, phase)) in self.phases.iter().enumerate() {
            let end = self.phases.get(i + 1).map_or(now, |&(next, _)| next).min(now);
            let up = u64::from(phase == Phase::Up);
            if phase == Phase::Off {
                continue;
            }
            let (in_day, in_week) = (end.saturating_sub(at.max(day)), end.saturating_sub(at.max(week)));
            d = (d.0 + up * in_day, d.1 + in_day);
            w = (w.0 + up * in_week, w.1 + in_week);
        }
        let ratio = |(up, counted): (u64, u64)| (counted > 0).then(|| up as f64 / counted as f64);
        (ratio(d), ratio(w))
    }

    /// The objectives at `now_ms`, and the watched ones that crossed their
    /// target since the last call (each once per crossing: out of target,
    /// then not again until it was back within and went out again).
    pub fn refresh(&mut self, now_ms: u64, key_files: Option<u64>, targets: &Targets) -> (Objectives, Vec<Crossing>) {
        self.prune(now_ms.max(self.last_ms));
        let objectives = self.objectives(now_ms, key_files, targets);
        let mut crossings = Vec::new();
        for objective in Watched::ALL {
            let (met, value, target) = objectives.watched(objective);
            let Some(met) = met else { continue };
            let missed = &mut self.missed[objective.index()];
            if *missed == met {
                *missed = !met;
                crossings.push(Crossing { objective, met, value, target });
            }
        }
        (objectives, crossings)
    }
}

/// The objectives of a whole history at `now_ms` (what a [`Tracker`] fed
/// the same entries answers).
pub fn objectives(history: &[HistoryEntry], now_ms: u64, key_files: Option<u64>, targets: &Targets) -> Objectives {
    Tracker::from_history(history).objectives(now_ms, key_files, targets)
}

/// The entry to record at boot for a daemon that died without recording
/// its stop: `STOPPED(daemon_died)` when the session's last status was not
/// `STOPPED`, at the later of the store's last liveness mark `alive_ms`
/// (written every few seconds while the daemon runs) and the last entry
/// (the daemon was alive then too). `None` otherwise: a clean stop
/// recorded `STOPPED(daemon_shutdown)`; with no mark at all (an older
/// store) the time until the boot counts as the last recorded state.
pub fn daemon_died(history: &[HistoryEntry], alive_ms: Option<u64>) -> Option<HistoryEntry> {
    let alive_ms = alive_ms?;
    let last_at = history.last().map_or(0, |e| e.at_ms);
    let last_status = history.iter().rev().find(|e| e.event == "session.status")?;
    (last_status.state != SessionState::Stopped)
        .then(|| HistoryEntry::status(SessionState::Stopped, Some("daemon_died".into()), alive_ms.max(last_at)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use SessionState::*;

    const T: Targets = Targets { uptime: 0.999, reconnects_per_day: 10, recovery_ms: 300_000, key_files: 100 };
    const H: u64 = 3600 * 1000;

    fn status(state: SessionState, reason: Option<&str>, at_ms: u64) -> HistoryEntry {
        HistoryEntry::status(state, reason.map(str::to_string), at_ms)
    }

    fn restart(at_ms: u64) -> HistoryEntry {
        HistoryEntry {
            state: Reconnecting,
            reason: None,
            at_ms,
            event: "session.restart_scheduled".into(),
            detail: Some(serde_json::json!({"attempt": 1, "delay_ms": 100})),
        }
    }

    /// A restart at `at`: `RECONNECTING`, the restart, `STARTING`, and
    /// `CONNECTED` again `took` ms later.
    fn reconnect(at: u64, took: u64) -> Vec<HistoryEntry> {
        vec![status(Reconnecting, Some("bidi_lost"), at), restart(at), status(Starting, None, at + 1), status(Connected, None, at + took)]
    }

    #[test]
    fn a_new_session_has_no_figures_yet() {
        let o = objectives(&[], 10 * H, None, &T);
        assert_eq!(o, Objectives::unknown(&T));
        assert_eq!((o.uptime_24h.value, o.uptime_24h.met), (None, None));
        // Created and waiting for its first scan: the operator's doing, not
        // downtime; no restarts.
        let h = [status(Stopped, Some("created"), 0), status(Starting, None, 1), status(ScanQr, None, 2)];
        let o = objectives(&h, 2 * H, None, &T);
        assert_eq!(o.uptime_24h.value, None);
        assert_eq!((o.reconnects_24h.value, o.reconnects_24h.met), (Some(0), Some(true)));
        assert_eq!(o.recovery_last_ms.value, None);
    }

    #[test]
    fn a_session_never_connected_has_no_uptime_until_it_is() {
        let h = [
            status(Stopped, Some("created"), 0),
            status(Starting, None, 1),
            status(Reconnecting, Some("start_failed"), 1000),
            restart(1000),
            status(Starting, None, 2000),
            status(Failed, Some("restart_budget_spent"), 3000),
        ];
        let o = objectives(&h, H, None, &T);
        assert_eq!((o.uptime_24h.value, o.uptime_7d.value), (None, None));
        assert_eq!(o.reconnects_24h.value, Some(1));
        // Connected at last: from then on downtime counts.
        let mut h = h.to_vec();
        h.extend([status(Stopped, Some("recover"), H), status(Starting, None, H), status(Connected, None, H + 1000)]);
        h.push(status(Reconnecting, Some("connection_lost"), 2 * H));
        let o = objectives(&h, 3 * H, None, &T);
        assert_eq!(o.uptime_24h.value, Some((H - 1000) as f64 / (2 * H - 1000) as f64));
    }

    #[test]
    fn uptime_is_connected_time_over_time_meant_to_run() {
        let mut h = vec![status(Stopped, Some("created"), 0), status(Starting, None, 0), status(Connected, None, H)];
        // Up 10 h, a 36 s outage of its own (it counts), up again.
        h.extend(reconnect(11 * H, 36_000));
        let o = objectives(&h, 21 * H, None, &T);
        let up = 20 * H - 36_000;
        assert_eq!(o.uptime_24h.value, Some(up as f64 / (20 * H) as f64));
        assert_eq!(o.uptime_24h.value, o.uptime_7d.value, "all the history is inside both windows");
        assert_eq!(o.uptime_24h.met, Some(true), "0.9995 >= 0.999");
        assert_eq!((o.reconnects_24h.value, o.recovery_last_ms.value), (Some(1), Some(36_000)));
        // The 24 h window starts inside the first stretch.
        let o = objectives(&h, 30 * H, None, &T);
        assert_eq!(o.uptime_24h.value, Some((24 * H - 36_000) as f64 / (24 * H) as f64));
    }

    #[test]
    fn the_operators_stops_and_commands_do_not_count() {
        let h = [
            status(Connected, None, 0),
            status(Stopped, Some("operator"), H),
            // Stopped for 5 h, started, 1 h coming up and waiting: the
            // operator's outage.
            status(Starting, None, 6 * H),
            status(ScanQr, None, 6 * H + 1),
            status(Connected, None, 7 * H),
            // An operator restart, then a start that fails on its own: that
            // part is downtime.
            status(Stopped, Some("restart"), 8 * H),
            status(Starting, None, 8 * H),
            status(Reconnecting, Some("start_failed"), 8 * H + 1000),
            status(Starting, None, 8 * H + 2000),
            status(Connected, None, 8 * H + 3000),
            // The operator logs it out: not downtime, and no recovery.
            status(LoggedOut, Some("operator_logout"), 9 * H),
            status(Starting, None, 9 * H),
            status(ScanQr, None, 9 * H),
            status(Connected, None, 10 * H),
        ];
        let o = objectives(&h, 11 * H, None, &T);
        // Up: 1 h + 1 h + (1 h - 3 s) + 1 h; down: 2 s.
        let up = 4 * H - 3000;
        assert_eq!(o.uptime_24h.value, Some(up as f64 / (up + 2000) as f64));
        assert_eq!(o.recovery_last_ms.value, None, "no outage began with a connected session failing");
    }

    #[test]
    fn a_daemon_that_was_down_counts_as_down_and_as_an_outage() {
        let h = [
            status(Connected, None, 0),
            status(Stopped, Some("daemon_shutdown"), 10 * H),
            status(Starting, Some("queued"), 10 * H + 60_000),
            status(Connected, None, 10 * H + 70_000),
        ];
        let o = objectives(&h, 11 * H, None, &T);
        assert_eq!(o.uptime_24h.value, Some((11 * H - 70_000) as f64 / (11 * H) as f64));
        assert_eq!(o.recovery_last_ms.value, Some(70_000));
        // A stopped session stays stopped across daemon restarts.
        let h = [status(Stopped, Some("operator"), 0), status(Stopped, Some("daemon_died"), H), status(Stopped, None, 2 * H)];
        assert_eq!(objectives(&h, 3 * H, None, &T).uptime_7d.value, None);
    }

    #[test]
    fn a_crash_is_recorded_at_the_last_liveness_mark() {
        let h = [status(Connected, None, 0), restart(5)];
        assert_eq!(daemon_died(&h, Some(H)), Some(status(Stopped, Some("daemon_died"), H)));
        assert_eq!(daemon_died(&h, Some(3)), Some(status(Stopped, Some("daemon_died"), 5)), "alive at the last entry too");
        assert_eq!(daemon_died(&h, None), None, "no mark: an older store");
        let clean = [status(Connected, None, 0), status(Stopped, Some("daemon_shutdown"), 5)];
        assert_eq!(daemon_died(&clean, Some(H)), None);
        assert_eq!(daemon_died(&[], Some(H)), None);
    }

    #[test]
    fn recovery_counts_the_outage_under_way_and_its_p95_covers_a_week() {
        let mut h = vec![status(Connected, None, 0)];
        for (i, took) in (1..=20u64).enumerate() {
            h.extend(reconnect((i as u64 + 1) * H, took * 1000));
        }
        let o = objectives(&h, 22 * H, None, &T);
        assert_eq!(o.recovery_last_ms.value, Some(20_000));
        // Nearest rank of 20 samples: the 19th.
        assert_eq!(o.recovery_p95_7d_ms.value, Some(19_000));
        assert_eq!(o.reconnects_24h.value, Some(20));
        assert_eq!(o.reconnects_24h.met, Some(false));
        // Down for 10 min now: the outage so far is the last recovery.
        h.push(status(Reconnecting, Some("connection_lost"), 23 * H));
        let o = objectives(&h, 23 * H + 600_000, None, &T);
        assert_eq!((o.recovery_last_ms.value, o.recovery_last_ms.met), (Some(600_000), Some(false)));
        assert_eq!(o.recovery_p95_7d_ms.value, Some(20_000), "the 20th of 21");
        // A week later only the restarts' 24 h and the recoveries' 7 days
        // have passed.
        let o = objectives(&h[..h.len() - 1], 8 * 24 * H, None, &T);
        assert_eq!((o.reconnects_24h.value, o.recovery_last_ms.value), (Some(0), None));
        assert_eq!(o.uptime_7d.value, Some(1.0));
    }

    #[test]
    fn a_crossing_is_reported_once_until_it_is_back_within_target() {
        let targets = Targets { reconnects_per_day: 2, ..T };
        let mut t = Tracker::from_history(&[status(Connected, None, 0)]);
        let mut crossings = Vec::new();
        for i in 1..=5 {
            for e in reconnect(i * 1000, 10) {
                t.note(&e);
                crossings.extend(t.refresh(i * 1000 + 10, None, &targets).1);
            }
        }
        let reconnects: Vec<_> = crossings.iter().filter(|c| c.objective == Watched::Reconnects24h).collect();
        assert_eq!(reconnects.len(), 1, "{crossings:?}");
        assert_eq!((reconnects[0].met, &reconnects[0].value, &reconnects[0].target), (false, &serde_json::json!(3), &serde_json::json!(2)));
        assert_eq!(reconnects[0].message("acme"), "session acme: reconnects_24h is 3, over its target 2");
        // A day later they have aged out: back within, reported once.
        let (_, back) = t.refresh(DAY_MS + 10 * 1000, None, &targets);
        let back: Vec<_> = back.into_iter().filter(|c| c.objective == Watched::Reconnects24h).collect();
        assert_eq!(back.len(), 1);
        assert!(back[0].met);
        assert!(t.refresh(DAY_MS + 20 * 1000, None, &targets).1.iter().all(|c| c.objective != Watched::Reconnects24h));
        // Key files: over, once; no count, no change.
        let (_, c) = t.refresh(DAY_MS + 30_000, Some(150), &targets);
        assert_eq!(c.iter().filter(|c| c.objective == Watched::KeyFiles).count(), 1);
        assert!(t.refresh(DAY_MS + 40_000, Some(160), &targets).1.is_empty());
        assert!(t.refresh(DAY_MS + 50_000, None, &targets).1.is_empty());
    }

    #[test]
    fn an_alert_already_raised_before_a_daemon_restart_is_not_raised_again() {
        let targets = Targets { reconnects_per_day: 2, ..T };
        let mut h = vec![status(Connected, None, 0)];
        for i in 1..=3 {
            h.extend(reconnect(i * 1000, 10));
        }
        let alerted = HistoryEntry {
            state: Connected,
            reason: Some("reconnects_24h".into()),
            at_ms: 3100,
            event: "session.objective".into(),
            detail: Some(Crossing { objective: Watched::Reconnects24h, met: false, value: 3.into(), target: 2.into() }.detail()),
        };
        let reconnects = |c: Vec<Crossing>| c.into_iter().filter(|c| c.objective == Watched::Reconnects24h).count();
        let (_, c) = Tracker::from_history(&h).refresh(4000, None, &targets);
        assert_eq!(reconnects(c), 1, "without the stored event it is a new crossing");
        h.push(alerted);
        let (o, c) = Tracker::from_history(&h).refresh(4000, None, &targets);
        assert_eq!(o.reconnects_24h.met, Some(false));
        assert_eq!(reconnects(c), 0);
    }

    #[test]
    fn marks_are_bounded_and_the_known_time_starts_later() {
        let mut t = Tracker::default();
        for i in 0..(MAX_MARKS as u64 + 50) {
            let state = if i % 2 == 0 { Connected } else { Reconnecting };
            t.note(&status(state, None, i * 10));
            t.restart(i * 10);
        }
        assert_eq!((t.phases.len(), t.restarts.len()), (MAX_MARKS, MAX_MARKS));
        assert!(t.recoveries.len() <= MAX_MARKS);
        let o = t.objectives(MAX_MARKS as u64 * 10 + 500, None, &T);
        let v = o.uptime_7d.value.expect("known");
        assert!((0.4..0.6).contains(&v), "{v}");
    }

    #[test]
    fn time_never_runs_backwards() {
        let h = [status(Connected, None, 10 * H), status(Reconnecting, None, 5 * H), status(Connected, None, 11 * H)];
        let o = objectives(&h, H, None, &T);
        for r in [o.uptime_24h, o.uptime_7d] {
            assert!(r.value.is_none_or(|v| (0.0..=1.0).contains(&v)), "{r:?}");
        }
        assert_eq!(o.recovery_last_ms.value, Some(H));
    }

    fn any_state() -> impl Strategy<Value = SessionState> {
        proptest::sample::select(SessionState::ALL.to_vec())
    }

    fn any_reason() -> impl Strategy<Value = Option<&'static str>> {
        proptest::sample::select(vec![None, Some("operator"), Some("daemon_shutdown"), Some("operator_logout"), Some("bidi_lost")])
    }

    /// A history: statuses and restarts at increasing times.
    fn any_history() -> impl Strategy<Value = Vec<HistoryEntry>> {
        proptest::collection::vec((any_state(), any_reason(), 0u64..3 * H, any::<bool>()), 0..80).prop_map(|steps| {
            let mut at = 0;
            steps
                .into_iter()
                .map(|(state, reason, gap, is_restart)| {
                    at += gap;
                    if is_restart {
                        restart(at)
                    } else {
                        status(state, reason, at)
                    }
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn uptime_is_a_ratio_and_the_figures_agree(history in any_history(), later in 0u64..(10 * 24 * H)) {
            let now = history.last().map_or(0, |e| e.at_ms) + later;
            let o = objectives(&history, now, Some(7), &T);
            for r in [o.uptime_24h, o.uptime_7d] {
                if let Some(v) = r.value {
                    prop_assert!((0.0..=1.0).contains(&v), "{:?}", r);
                }
                prop_assert_eq!(r.met, r.value.map(|v| v >= T.uptime));
            }
            for c in [o.reconnects_24h, o.recovery_last_ms, o.recovery_p95_7d_ms, o.key_files] {
                prop_assert_eq!(c.met, c.value.map(|v| v <= c.target));
            }
            let restarts = history.iter().filter(|e| e.event == "session.restart_scheduled" && e.at_ms + DAY_MS >= now).count() as u64;
            prop_assert_eq!(o.reconnects_24h.value.unwrap_or(0), restarts);
            // Fed one entry at a time with refreshes in between: the same.
            let mut t = Tracker::default();
            for e in &history {
                t.note(e);
                t.refresh(e.at_ms, Some(7), &T);
            }
            prop_assert_eq!(t.refresh(now, Some(7), &T).0, o);
        }

        #[test]
        fn a_session_always_connected_has_uptime_one(start in 0u64..1_000_000, flaps in proptest::collection::vec(1u64..H, 0..20), later in 1u64..(10 * 24 * H)) {
            // Connected from the start; stops by the operator in between do
            // not lower it.
            let mut h = vec![status(Connected, None, start)];
            let mut at = start;
            for gap in flaps {
                at += gap;
                h.push(status(Stopped, Some("operator"), at));
                at += gap;
                h.push(status(Starting, None, at));
                h.push(status(Connected, None, at));
            }
            let o = objectives(&h, at + later, None, &T);
            prop_assert_eq!(o.uptime_7d.value, Some(1.0));
            prop_assert_eq!(o.uptime_7d.met, Some(true));
            prop_assert_eq!(o.recovery_last_ms.value, None);
        }
    }
}
