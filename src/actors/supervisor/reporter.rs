//! What the Supervisor tells the world about its sessions, in one place: the
//! store (session records and history), the log, the event bus, the
//! Campaigns registry (state changes) and the Notifier (alerts). Nothing
//! here decides anything; every write here is a record, so a failed one is
//! logged and shows in the store's health while memory stays authoritative.

use actix::prelude::*;

use crate::actors::messages::SessionChanged;
use crate::actors::notifier::{Alert, Notifier};
use crate::events::{Event, EventName, Events};
use crate::policy::objectives::Crossing;
use crate::policy::slot::Changed;
use crate::session_state::{now_ms, SessionState};
use crate::store::{HistoryEntry, SessionRecord, Store};

/// The Supervisor's outputs for a session (see the module docs).
pub(super) struct Reporter {
    store: Store,
    events: Events,
    notifier: Addr<Notifier>,
    changes: Recipient<SessionChanged>,
}

impl Reporter {
    pub(super) fn new(store: Store, events: Events, notifier: Addr<Notifier>, changes: Recipient<SessionChanged>) -> Self {
        Self { store, events, notifier, changes }
    }

    /// A state change, already made in `record`: stored (flushed) with its
    /// history entry, logged, published as `session.status`, told to the
    /// campaigns, and alerted if a human is needed.
    pub(super) fn state(&self, record: &SessionRecord, changed: &Changed) {
        let (name, state) = (record.name.as_str(), changed.entry.state);
        // Harmless if it fails: the record in memory is what supervision
        // acts on, and at boot every session starts from STARTING(queued)
        // whatever state was stored. The store's health reports the failure;
        // a fenced write (cluster: the lease is gone) stops the session here
        // through the store's fences.
        // The history entry first: the record's flush takes it to disk too,
        // so a crash right after loses neither (the objectives read it).
        let history = self.store.append_history_owned(name, &changed.entry);
        if let Err(e) = history.and(self.store.put_session_owned(record)) {
            tracing::error!(session = %name, error = %e, "cannot store session status");
        }
        let reason = changed.entry.reason.as_deref().unwrap_or("");
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
        self.changes.do_send(SessionChanged { name: name.to_string(), state, reason: reason.to_string() });
        if changed.alert {
            let message = format!("session {name} is {state} ({reason})");
            self.alert(record, EventName::SessionStatus, message, serde_json::Value::Null);
        }
    }

    /// A decision (`session.restart_scheduled`, `session.health`,
    /// `session.objective`): appended
    /// to the session's history and published.
    pub(super) fn event(&self, record: &SessionRecord, event: EventName, reason: Option<String>, detail: serde_json::Value) {
        let entry = HistoryEntry { state: record.state, reason, at_ms: now_ms(), event: event.as_str().to_string(), detail: Some(detail) };
        // Harmless if it fails: history is a record no decision reads, and
        // the store's health (503 /health, paused campaigns) reports it.
        if let Err(e) = self.store.append_history_owned(&record.name, &entry) {
            tracing::error!(session = %record.name, error = %e, "cannot store session history");
        }
        self.events.publish(
            Event::session(event, &record.name)
                .session_state(entry.state, entry.reason.as_deref())
                .detail(entry.detail.unwrap_or_default()),
        );
    }

    /// An alert to the Notifier (never awaited: it delivers on its own).
    pub(super) fn alert(&self, record: &SessionRecord, event: EventName, message: String, detail: serde_json::Value) {
        self.notifier.do_send(Alert {
            event,
            session: record.name.clone(),
            state: Some(record.state.as_str().to_string()),
            reason: record.reason.clone(),
            message,
            at_ms: now_ms(),
            detail,
        });
    }

    /// A new QR to scan (`session.qr`); the event never carries the QR.
    pub(super) fn new_qr(&self, name: &str) {
        self.events.publish(Event::session(EventName::SessionQr, name));
    }

    /// Stores a session's record (the linked account, `me`). Harmless if it
    /// fails: memory is what supervision acts on, a profile that reconnects
    /// reports `me` again, and the store's health reports the failure.
    pub(super) fn save(&self, record: &SessionRecord) {
        if let Err(e) = self.store.put_session_owned(record) {
            tracing::error!(session = %record.name, error = %e, "cannot store session");
        }
    }

    /// A session was created (and stored): its first history entry, which
    /// is returned.
    pub(super) fn created(&self, record: &SessionRecord) -> HistoryEntry {
        let entry = HistoryEntry::status(SessionState::Stopped, Some("created".into()), record.created_ms);
        // Harmless if it fails: history is a record, and the store's health
        // already reports the failure; the session itself was stored.
        let _ = self.store.append_history(&record.name, &entry);
        tracing::info!(session = %record.name, event = "session.created", "session created");
        entry
    }

    /// A watched objective crossed its target: logged (a warning when it
    /// went out of target), stored in the history and published as
    /// `session.objective` (`reason`: the objective; `detail`: `{"objective",
    /// "value", "target", "met"}`), and alerted when it went out of target
    /// and `alert` (false: another check alerted for the same crossing).
    pub(super) fn objective(&self, record: &SessionRecord, crossing: &Crossing, alert: bool) {
        let (name, objective) = (record.name.as_str(), crossing.objective.as_str());
        let message = crossing.message(name);
        let (value, target) = (&crossing.value, &crossing.target);
        if crossing.met {
            tracing::info!(session = %name, event = "session.objective", objective, %value, %target, met = true, "{message}");
        } else {
            tracing::warn!(session = %name, event = "session.objective", objective, %value, %target, met = false, "{message}");
        }
        let detail = crossing.detail();
        self.event(record, EventName::SessionObjective, Some(objective.to_string()), detail.clone());
        if !crossing.met && alert {
            self.alert(record, EventName::SessionObjective, message, detail);
        }
    }
}
