//! The event bus: every decision and state change, with a stable dotted
//! name, for the live streams (`GET /api/events`, `GET /api/ws`) and the
//! metrics. Publishing never blocks: it is a tokio broadcast channel, and a
//! subscriber that falls behind loses the oldest events (and is told).
//!
//! What must not lose an event (the webhook outbox) is not a subscriber: it
//! is a [`Sink`] the bus calls synchronously in [`Events::publish`].
//!
//! In cluster mode every event carries the node that published it
//! ([`Event::node`], `cluster.node`), and the cluster's event relay
//! ([`crate::relay`]) is one more sink: it sends each event to the other
//! nodes, and hands their events to [`Events::relay`], which reaches the
//! stream subscribers only (no sink, no count, no tally: the origin node
//! delivered its webhooks, counted it and alerted already).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::session_state::{now_ms, SessionState};

/// An event's stable dotted name, as the streams, the metrics, the alerts
/// and the stored history show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventName {
    /// `session.status`: a session's state changed.
    SessionStatus,
    /// `session.qr`: a new QR to scan (the event never carries it).
    SessionQr,
    /// `session.restart_scheduled`: a restart after a backoff.
    SessionRestartScheduled,
    /// `session.health`: a health check failed (memory, key files).
    SessionHealth,
    /// `session.objective`: a session's objective went out of its target
    /// (uptime, reconnects, key files; `detail.met` false) or back within
    /// it (`met` true).
    SessionObjective,
    /// `campaign.status`: a campaign's state changed.
    CampaignStatus,
    /// `campaign.progress`: a campaign's counts after a send settled.
    CampaignProgress,
    /// `message.sent`: WhatsApp has a message.
    MessageSent,
    /// `message.failed`: a message will not be sent.
    MessageFailed,
    /// `message.ack`: a sent message's ack changed.
    MessageAck,
    /// `store.failing`: store writes fail; campaigns pause.
    StoreFailing,
    /// `store.recovered`: store writes succeed again.
    StoreRecovered,
    /// `message.received`: a contact's message reached the account.
    MessageReceived,
    /// `contact.opted_out`: a contact asked not to be messaged again.
    ContactOptedOut,
}

impl EventName {
    /// Every name.
    pub const ALL: [EventName; 14] = [
        Self::SessionStatus,
        Self::SessionQr,
        Self::SessionRestartScheduled,
        Self::SessionHealth,
        Self::SessionObjective,
        Self::CampaignStatus,
        Self::CampaignProgress,
        Self::MessageSent,
        Self::MessageFailed,
        Self::MessageAck,
        Self::StoreFailing,
        Self::StoreRecovered,
        Self::MessageReceived,
        Self::ContactOptedOut,
    ];

    /// The dotted name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SessionStatus => "session.status",
            Self::SessionQr => "session.qr",
            Self::SessionRestartScheduled => "session.restart_scheduled",
            Self::SessionHealth => "session.health",
            Self::SessionObjective => "session.objective",
            Self::CampaignStatus => "campaign.status",
            Self::CampaignProgress => "campaign.progress",
            Self::MessageSent => "message.sent",
            Self::MessageFailed => "message.failed",
            Self::MessageAck => "message.ack",
            Self::StoreFailing => "store.failing",
            Self::StoreRecovered => "store.recovered",
            Self::MessageReceived => "message.received",
            Self::ContactOptedOut => "contact.opted_out",
        }
    }

    /// Reads a stored name (history entries); `None` for one this version
    /// does not know.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == s)
    }

    /// About a session's life (the metrics tally these per session).
    pub fn is_session(self) -> bool {
        matches!(self, Self::SessionStatus | Self::SessionQr | Self::SessionRestartScheduled | Self::SessionHealth | Self::SessionObjective)
    }
}

impl std::fmt::Display for EventName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Reads a dotted name (an event relayed from another node); a name this
/// version does not know is an error.
impl<'de> Deserialize<'de> for EventName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Self::parse(&name).ok_or_else(|| serde::de::Error::custom(format!("unknown event {name:?}")))
    }
}

/// One event.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    /// `session.status`, `session.qr`, `session.restart_scheduled`,
    /// `session.health`, `session.objective` (`detail`: `{"objective",
    /// "value", "target", "met"}`), `campaign.status`, `campaign.progress`,
    /// `message.sent`, `message.failed`, `message.ack`, `message.received`
    /// (`detail`: `{"from", "id", "type", "body", "at_ms"}`), …
    #[schema(value_type = String)]
    pub event: EventName,
    /// Unix epoch ms.
    pub at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Event-specific fields.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    #[schema(value_type = Object, required = false)]
    pub detail: serde_json::Value,
    /// The node that published it (`cluster.node`), in cluster mode
    /// (`[store] backend = "postgres"`); absent on a single node. Set by
    /// the bus ([`Events::with_node`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "node-a")]
    pub node: Option<String>,
    /// `state` of a session event, typed (the tallies read it).
    #[serde(skip)]
    #[schema(ignore)]
    pub session_state: Option<SessionState>,
}

impl Event {
    /// An event about a session.
    pub fn session(event: EventName, session: &str) -> Self {
        Self {
            event,
            session_state: None,
            at_ms: now_ms(),
            session: Some(session.to_string()),
            campaign: None,
            state: None,
            reason: None,
            detail: serde_json::Value::Null,
            node: None,
        }
    }

    /// An event about a campaign (on `session`).
    pub fn campaign(event: EventName, campaign: &str, session: &str) -> Self {
        Self { campaign: Some(campaign.to_string()), ..Self::session(event, session) }
    }

    pub fn state(mut self, state: impl ToString, reason: Option<&str>) -> Self {
        self.state = Some(state.to_string());
        self.reason = reason.map(str::to_string);
        self
    }

    /// A session's state and reason.
    pub fn session_state(mut self, state: SessionState, reason: Option<&str>) -> Self {
        self.session_state = Some(state);
        self.state(state, reason)
    }

    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }
}

/// Events kept for a subscriber that falls behind.
const BACKLOG: usize = 1024;

/// Takes every published event, synchronously, before the broadcast
/// subscribers see it: unlike a subscriber it cannot lag and lose events.
/// Called on the publisher's thread (actors, HTTP workers), so it must not
/// block: hand the event on and return.
pub trait Sink: Send + Sync {
    fn accept(&self, event: &Event);
}

/// The bus; cheap to clone.
#[derive(Clone)]
pub struct Events {
    tx: broadcast::Sender<Event>,
    /// How many of each event were published, by name and (for messages)
    /// result, for the metrics.
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
    /// Restarts and reconnects per session, for the metrics.
    sessions: Arc<Mutex<BTreeMap<String, SessionTally>>>,
    /// Get every published event first, in order (the webhook outbox, then
    /// in cluster mode the relay to the other nodes).
    sinks: Vec<Arc<dyn Sink>>,
    /// `cluster.node`, written on every published event (cluster mode).
    node: Option<String>,
    /// The cluster relay's counts (all 0 on a single node).
    relay: Arc<RelayCounts>,
}

/// What the cluster's event relay ([`crate::relay`]) did since the daemon
/// started, for the metrics (`wasup_events_relay_total{result}`).
#[derive(Debug, Default)]
pub struct RelayCounts {
    /// This node's events sent to the other nodes (`NOTIFY`).
    pub sent: AtomicU64,
    /// Of `sent`, those cut to fit PostgreSQL's payload limit.
    pub trimmed: AtomicU64,
    /// Other nodes' events put on this node's streams.
    pub received: AtomicU64,
    /// This node's events not sent: the relay's queue was full, or it had
    /// no connection to PostgreSQL.
    pub dropped: AtomicU64,
}

/// One day, ms.
const DAY_MS: u64 = 24 * 3600 * 1000;

/// A session's restarts (`session.restart_scheduled`) and reconnects
/// (`session.status` → `RECONNECTING`): totals, and the times of those in
/// the last 24 h. Kept as events are published, seeded from the stored
/// history at boot, so the metrics never scan the history.
#[derive(Debug, Clone, Default)]
pub struct SessionTally {
    pub restarts_total: u64,
    pub reconnects_total: u64,
    restarts: std::collections::VecDeque<u64>,
    reconnects: std::collections::VecDeque<u64>,
}

impl SessionTally {
    fn note(&mut self, event: Option<EventName>, state: Option<SessionState>, at_ms: u64) {
        let list = match (event, state) {
            (Some(EventName::SessionRestartScheduled), _) => {
                self.restarts_total += 1;
                &mut self.restarts
            }
            (Some(EventName::SessionStatus), Some(SessionState::Reconnecting)) => {
                self.reconnects_total += 1;
                &mut self.reconnects
            }
            _ => return,
        };
        list.push_back(at_ms);
        let cutoff = now_ms().saturating_sub(DAY_MS);
        while list.front().is_some_and(|&t| t < cutoff) || list.len() > 100_000 {
            list.pop_front();
        }
    }

    /// Restarts in the last 24 h.
    pub fn restarts_24h(&self) -> usize {
        let cutoff = now_ms().saturating_sub(DAY_MS);
        self.restarts.iter().filter(|&&t| t >= cutoff).count()
    }

    /// Reconnects in the last 24 h.
    pub fn reconnects_24h(&self) -> usize {
        let cutoff = now_ms().saturating_sub(DAY_MS);
        self.reconnects.iter().filter(|&&t| t >= cutoff).count()
    }
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl Events {
    pub fn new() -> Self {
        Self {
            tx: broadcast::channel(BACKLOG).0,
            counts: Arc::default(),
            sessions: Arc::default(),
            sinks: Vec::new(),
            node: None,
            relay: Arc::default(),
        }
    }

    /// The same bus, handing every published event to `sink` (after the
    /// sinks given before) before broadcasting it. Clones made earlier do
    /// not have it.
    pub fn with_sink(mut self, sink: Arc<dyn Sink>) -> Self {
        self.sinks.push(sink);
        self
    }

    /// The same bus, writing `node` (`cluster.node`) into every event it
    /// publishes ([`Event::node`]). Clones made earlier do not.
    pub fn with_node(mut self, node: &str) -> Self {
        self.node = Some(node.to_string());
        self
    }

    /// The node this bus writes into its events, in cluster mode.
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// The cluster relay's counts (shared by every clone).
    pub fn relay_counts(&self) -> Arc<RelayCounts> {
        self.relay.clone()
    }

    /// Seeds a session's tally from its stored history (at boot).
    pub fn seed(&self, session: &str, history: &[crate::store::HistoryEntry]) {
        if let Ok(mut sessions) = self.sessions.lock() {
            let tally = sessions.entry(session.to_string()).or_default();
            for h in history {
                tally.note(EventName::parse(&h.event), Some(h.state), h.at_ms);
            }
        }
    }

    /// A session's restart and reconnect tally.
    pub fn session_tally(&self, session: &str) -> SessionTally {
        self.sessions.lock().ok().and_then(|s| s.get(session).cloned()).unwrap_or_default()
    }

    /// Publishes an event of this node's: counted, tallied, given to the
    /// sinks, then to the stream subscribers (to nobody, if nobody listens).
    pub fn publish(&self, mut event: Event) {
        if event.node.is_none() {
            event.node.clone_from(&self.node);
        }
        if let Ok(mut counts) = self.counts.lock() {
            *counts.entry(event.event.as_str().to_string()).or_default() += 1;
        }
        if let (Some(session), true) = (&event.session, event.event.is_session()) {
            if let Ok(mut sessions) = self.sessions.lock() {
                sessions.entry(session.clone()).or_default().note(Some(event.event), event.session_state, event.at_ms);
            }
        }
        for sink in &self.sinks {
            sink.accept(&event);
        }
        // Harmless when it fails: it only fails when nobody listens.
        let _ = self.tx.send(event);
    }

    /// Puts another node's event (its [`Event::node`] says which) on this
    /// node's streams only: not counted, not tallied, not given to the
    /// sinks (no webhook delivery, no relay back). Never blocks.
    pub fn relay(&self, event: Event) {
        // Harmless when it fails: it only fails when nobody listens.
        let _ = self.tx.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// Events published so far, by name.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

/// A stream filter: `?session=` and/or `?campaign=`.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Only events of this session.
    #[param(example = "acme")]
    pub session: Option<String>,
    /// Only events of this campaign.
    #[param(example = "cmp_0123456789abcdef")]
    pub campaign: Option<String>,
}

impl Filter {
    pub fn accepts(&self, e: &Event) -> bool {
        self.session.as_ref().is_none_or(|s| e.session.as_ref() == Some(s))
            && self.campaign.as_ref().is_none_or(|c| e.campaign.as_ref() == Some(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_get_events_and_counts_add_up() {
        let bus = Events::new();
        let mut rx = bus.subscribe();
        bus.publish(Event::session(EventName::SessionStatus, "acme").session_state(SessionState::Connected, None));
        bus.publish(Event::campaign(EventName::MessageSent, "cmp_1", "acme"));
        let e = rx.recv().await.unwrap();
        assert_eq!((e.event, e.state.as_deref()), (EventName::SessionStatus, Some("CONNECTED")));
        assert_eq!(bus.counts().get("message.sent"), Some(&1));
        let f = Filter { session: Some("acme".into()), campaign: Some("cmp_1".into()) };
        assert!(!f.accepts(&e));
        assert!(f.accepts(&rx.recv().await.unwrap()));
        let json = serde_json::to_value(Event::session(EventName::SessionQr, "a")).unwrap();
        assert_eq!(json, serde_json::json!({"event": "session.qr", "at_ms": json["at_ms"], "session": "a"}));
    }

    #[test]
    fn the_sink_gets_every_event_even_without_subscribers() {
        struct Collect(Mutex<Vec<EventName>>);
        impl Sink for Collect {
            fn accept(&self, event: &Event) {
                self.0.lock().unwrap().push(event.event);
            }
        }
        let sink = Arc::new(Collect(Mutex::new(Vec::new())));
        let bus = Events::new().with_sink(sink.clone());
        for _ in 0..(BACKLOG + 10) {
            bus.publish(Event::session(EventName::SessionStatus, "acme"));
        }
        bus.publish(Event::session(EventName::SessionQr, "acme"));
        let got = sink.0.lock().unwrap();
        assert_eq!(got.len(), BACKLOG + 11);
        assert_eq!(got.last(), Some(&EventName::SessionQr));
        let json = serde_json::to_value(Event::session(EventName::SessionQr, "a")).unwrap();
        assert_eq!(json, serde_json::json!({"event": "session.qr", "at_ms": json["at_ms"], "session": "a"}));
    }

    /// Cluster mode: this node's events carry its name and reach the sinks;
    /// another node's, relayed, reach the streams only (no webhook, no
    /// count, no tally), and read back as they were sent.
    #[tokio::test]
    async fn relayed_events_reach_the_streams_only() {
        struct Collect(Mutex<Vec<Event>>);
        impl Sink for Collect {
            fn accept(&self, event: &Event) {
                self.0.lock().unwrap().push(event.clone());
            }
        }
        let sink = Arc::new(Collect(Mutex::new(Vec::new())));
        let bus = Events::new().with_sink(sink.clone()).with_node("node-a");
        let mut rx = bus.subscribe();
        bus.publish(Event::session(EventName::SessionRestartScheduled, "mine"));
        let theirs = Event::session(EventName::SessionRestartScheduled, "theirs");
        let text = serde_json::to_string(&Event { node: Some("node-b".into()), ..theirs }).unwrap();
        let back: Event = serde_json::from_str(&text).unwrap();
        bus.relay(back);
        let (first, second) = (rx.recv().await.unwrap(), rx.recv().await.unwrap());
        assert_eq!((first.session.as_deref(), first.node.as_deref()), (Some("mine"), Some("node-a")));
        assert_eq!((second.session.as_deref(), second.node.as_deref()), (Some("theirs"), Some("node-b")));
        assert_eq!(serde_json::to_string(&second).unwrap(), text, "a relayed event reads back as sent");
        let sunk = sink.0.lock().unwrap();
        assert_eq!(sunk.len(), 1, "only this node's event reaches the sink: {sunk:?}");
        assert_eq!(sunk[0].node.as_deref(), Some("node-a"));
        assert_eq!(bus.counts().get("session.restart_scheduled"), Some(&1));
        assert_eq!((bus.session_tally("mine").restarts_total, bus.session_tally("theirs").restarts_total), (1, 0));
        assert!(serde_json::from_str::<Event>(r#"{"event": "session.future", "at_ms": 1}"#).is_err(), "an unknown name is refused");
    }
}
