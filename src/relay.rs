//! Cluster mode's event relay: every node's events on every node's streams
//! (`GET /api/events`, `GET /api/ws`), through PostgreSQL's
//! `LISTEN`/`NOTIFY` on channel [`CHANNEL`].
//!
//! - Out: [`Outbound`] is one more [`Sink`] of the bus. It runs on the
//!   publisher's thread, so it only queues the event (at most [`QUEUE`];
//!   a full queue drops the event, counted and warned about at most once a
//!   minute; it never blocks an actor). The relay thread sends each queued
//!   event once, as its JSON ([`payload`]), with `pg_notify` on its own
//!   connection, one statement each (PostgreSQL folds identical payloads
//!   sent in one transaction into one). A send that fails is not retried.
//! - In: the same connection `LISTEN`s; each notification from another
//!   node (its [`Event::node`]; this node's own are skipped) goes to
//!   [`Events::relay`]: the streams only, never the webhook outbox, the
//!   counts or the alerts, which the origin node has done.
//! - The connection is this relay's alone (`application_name`
//!   `<node>/events`), never the store's, so the relay adds no wait to a
//!   store call. When it breaks (PostgreSQL restarted), the relay connects
//!   again with a backoff (250 ms doubling to 5 s, a quarter of jitter),
//!   logging once when it is lost (`events.relay_lost`) and once when it is
//!   back (`events.relay_recovered`).
//!
//! What a stream misses: `NOTIFY` reaches only the sessions listening at
//! that moment, so another node's events published while this node's
//! relay is reconnecting never reach this node's streams, and this node's
//! own events published while it has no connection are dropped (counted in
//! [`RelayCounts::dropped`]). Live streams are best-effort, as a
//! subscriber that lags is; the webhooks are the durable path.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use rand::Rng as _;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::events::{Event, Events, RelayCounts, Sink};
use crate::session_state::now_ms;
use crate::store::postgres::pg_error;
use crate::store::StoreError;

/// The `LISTEN`/`NOTIFY` channel.
pub const CHANNEL: &str = "wasup_events";

/// The longest payload sent, bytes: PostgreSQL refuses one of 8000 bytes or
/// more (`NOTIFY_PAYLOAD_MAX_LENGTH`, BLCKSZ − NAMEDATALEN − 128 with the
/// default 8 KiB pages; PostgreSQL's `NOTIFY` documentation).
pub const MAX_PAYLOAD: usize = 7999;

/// Events queued for the relay thread, at most.
pub const QUEUE: usize = 4096;

/// The first wait before connecting again.
const BACKOFF_MIN: Duration = Duration::from_millis(250);

/// The longest wait before connecting again.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Marks a value cut to fit [`MAX_PAYLOAD`].
const ELLIPSIS: &str = "…";

/// One event as sent with `NOTIFY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// The event's JSON, at most [`MAX_PAYLOAD`] bytes.
    pub text: String,
    /// It had to be cut.
    pub trimmed: bool,
}

/// The payload for `event`: its JSON as the streams show it, when that is
/// at most [`MAX_PAYLOAD`] bytes. A bigger one (a long `message.received`
/// body, say) is cut, never sent as a pointer: `detail` gets
/// `"trimmed": true` (a `detail` that is not an object becomes
/// `{"trimmed": true}`), and its longest strings are shortened, the
/// longest first, each ending in `…`, until the JSON fits; if it still
/// does not fit, `detail` becomes `{"trimmed": true}`. Every other field
/// is kept as it was. `None` when even that does not fit (names of more
/// than 7 KB; cannot happen with the API's limits).
pub fn payload(event: &Event) -> Option<Payload> {
    let text = serde_json::to_string(event).ok()?;
    if text.len() <= MAX_PAYLOAD {
        return Some(Payload { text, trimmed: false });
    }
    let mut cut = event.clone();
    if !cut.detail.is_object() {
        cut.detail = serde_json::json!({});
    }
    if let Some(detail) = cut.detail.as_object_mut() {
        detail.insert("trimmed".into(), serde_json::Value::Bool(true));
    }
    loop {
        let text = serde_json::to_string(&cut).ok()?;
        if text.len() <= MAX_PAYLOAD {
            return Some(Payload { text, trimmed: true });
        }
        let excess = text.len() - MAX_PAYLOAD;
        let Some(longest) = longest_string(&mut cut.detail).filter(|s| s.len() > ELLIPSIS.len()) else { break };
        // Characters off the end until their JSON makes up for the excess
        // and the ellipsis (at least one, so every round shortens it).
        let (mut keep, mut freed) = (longest.len(), 0);
        for (i, c) in longest.char_indices().rev() {
            keep = i;
            freed += json_len(c);
            if freed >= excess + ELLIPSIS.len() {
                break;
            }
        }
        longest.truncate(keep);
        longest.push_str(ELLIPSIS);
    }
    cut.detail = serde_json::json!({"trimmed": true});
    let text = serde_json::to_string(&cut).ok()?;
    (text.len() <= MAX_PAYLOAD).then_some(Payload { text, trimmed: true })
}

/// How many bytes `c` takes inside a JSON string as serde_json writes it.
fn json_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// The longest string anywhere in `value` (ties: the first found).
fn longest_string(value: &mut serde_json::Value) -> Option<&mut String> {
    match value {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Array(items) => items.iter_mut().filter_map(longest_string).reduce(|a, b| if b.len() > a.len() { b } else { a }),
        serde_json::Value::Object(map) => map.values_mut().filter_map(longest_string).reduce(|a, b| if b.len() > a.len() { b } else { a }),
        _ => None,
    }
}

/// The bus's side of the relay; see the module docs.
pub struct Outbound {
    tx: mpsc::Sender<Event>,
    counts: Arc<RelayCounts>,
    /// When the last "queue full" warning was logged, Unix epoch ms.
    full_logged_ms: Mutex<u64>,
}

impl Sink for Outbound {
    fn accept(&self, event: &Event) {
        match self.tx.try_send(event.clone()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                let dropped = self.counts.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                let now = now_ms();
                let Ok(mut logged) = self.full_logged_ms.lock() else { return };
                // At most one line a minute: this runs for every event.
                if now.saturating_sub(*logged) >= 60_000 {
                    *logged = now;
                    tracing::warn!(
                        event = "events.relay_dropped",
                        dropped,
                        "the cluster event relay's queue is full; other nodes' streams miss this node's events"
                    );
                }
            }
            // The relay thread is gone (it could not start, or the daemon
            // stops): counted, nothing else to do.
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.counts.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The relay thread's end of the queue.
pub struct Inbound(mpsc::Receiver<Event>);

/// A relay's two ends: the sink for [`Events::with_sink`] and the queue
/// for [`start`]; `counts` is the bus's ([`Events::relay_counts`]).
pub fn channel(counts: Arc<RelayCounts>) -> (Arc<Outbound>, Inbound) {
    let (tx, rx) = mpsc::channel(QUEUE);
    (Arc::new(Outbound { tx, counts, full_logged_ms: Mutex::new(0) }), Inbound(rx))
}

/// Starts the relay thread (`wasup-events`) for node `node` on the database
/// at `url` (`store.url`); each connect and each `NOTIFY` waits at most
/// `timeout` (`store.timeout`). Other nodes' events go to `events`
/// ([`Events::relay`]). Nothing connects before the thread runs; a
/// database that is down only delays the relay.
///
/// Errors: the URL does not parse, or the thread cannot start.
pub fn start(url: &str, timeout: Duration, node: &str, events: Events, queue: Inbound) -> Result<(), StoreError> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| pg_error(&e))?;
    config.application_name(format!("{node}/events")).connect_timeout(timeout).keepalives_idle(Duration::from_secs(30));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StoreError::Postgres(format!("cannot start the event relay's runtime: {e}")))?;
    let relay = Relay { config, timeout, node: node.to_string(), counts: events.relay_counts(), events };
    std::thread::Builder::new()
        .name("wasup-events".into())
        .spawn(move || runtime.block_on(relay.run(queue.0)))
        .map_err(|e| StoreError::Postgres(format!("cannot start the event relay's thread: {e}")))?;
    Ok(())
}

struct Relay {
    config: tokio_postgres::Config,
    timeout: Duration,
    node: String,
    events: Events,
    counts: Arc<RelayCounts>,
}

/// Why [`Relay::serve`] returned.
enum Ended {
    /// The connection broke or a `NOTIFY` failed: connect again.
    Lost(String),
    /// The bus is gone (the daemon stops).
    Closed,
}

impl Relay {
    async fn run(self, mut queue: mpsc::Receiver<Event>) {
        let mut backoff = BACKOFF_MIN;
        // Since when the relay has had no connection (logged once).
        let mut down: Option<Instant> = None;
        loop {
            match self.connect().await {
                Ok((client, ended)) => {
                    if let Some(since) = down.take() {
                        tracing::info!(
                            event = "events.relay_recovered",
                            down_ms = since.elapsed().as_millis() as u64,
                            "the cluster event relay is connected again"
                        );
                    } else {
                        tracing::debug!("the cluster event relay is connected");
                    }
                    backoff = BACKOFF_MIN;
                    match self.serve(&client, ended, &mut queue).await {
                        Ended::Closed => return,
                        Ended::Lost(why) => {
                            tracing::warn!(event = "events.relay_lost", error = %why, "the cluster event relay lost PostgreSQL; other nodes' events are missing from this node's streams until it is back");
                            down = Some(Instant::now());
                        }
                    }
                }
                Err(why) if down.is_none() => {
                    tracing::warn!(event = "events.relay_lost", error = %why, "the cluster event relay cannot reach PostgreSQL; other nodes' events are missing from this node's streams until it can");
                    down = Some(Instant::now());
                }
                Err(why) => tracing::debug!(error = %why, "the cluster event relay still cannot reach PostgreSQL"),
            }
            // This node's events meanwhile reach no other node: dropped
            // (counted) rather than sent late in a burst.
            let jitter = rand::thread_rng().gen_range(0..=backoff.as_millis() as u64 / 4);
            let until = tokio::time::Instant::now() + backoff + Duration::from_millis(jitter);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => break,
                    next = queue.recv() => match next {
                        Some(_) => {
                            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                        None => return,
                    },
                }
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Connects, `LISTEN`s, and starts the task that drives the connection
    /// and relays what it hears; the receiver resolves when the connection
    /// ends.
    async fn connect(&self) -> Result<(tokio_postgres::Client, tokio::sync::oneshot::Receiver<String>), String> {
        let text = |e: tokio_postgres::Error| match pg_error(&e) {
            StoreError::Postgres(m) => m,
            other => other.to_string(),
        };
        let (client, mut connection) = match tokio::time::timeout(self.timeout, self.config.connect(NoTls)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(text(e)),
            Err(_) => return Err(format!("no connection within {:?}", self.timeout)),
        };
        let (ended_tx, ended) = tokio::sync::oneshot::channel();
        // This connection's backend: its own notifications are skipped
        // before they are read.
        let own_pid = Arc::new(AtomicI32::new(0));
        let (events, node, counts, pid) = (self.events.clone(), self.node.clone(), self.counts.clone(), own_pid.clone());
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            let why = loop {
                match messages.next().await {
                    Some(Ok(AsyncMessage::Notification(n))) => {
                        if n.channel() != CHANNEL || n.process_id() == pid.load(Ordering::Relaxed) {
                            continue;
                        }
                        match serde_json::from_str::<Event>(n.payload()) {
                            Ok(e) if e.node.as_deref() != Some(node.as_str()) => {
                                counts.received.fetch_add(1, Ordering::Relaxed);
                                events.relay(e);
                            }
                            Ok(_) => {}
                            // A newer node's event this version does not
                            // know: it cannot be shown as an Event.
                            Err(e) => tracing::debug!(error = %e, "an event from another node that this version cannot read"),
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break text(e),
                    None => break "the connection closed".to_string(),
                }
            };
            // Harmless if it fails: the relay dropped this connection already.
            let _ = ended_tx.send(why);
        });
        let setup = async {
            client.batch_execute(&format!("SET statement_timeout = {}; LISTEN {CHANNEL}", self.timeout.as_millis().max(100))).await?;
            client.query_one("SELECT pg_backend_pid()", &[]).await?.try_get::<_, i32>(0)
        };
        match tokio::time::timeout(self.timeout, setup).await {
            Ok(Ok(pid)) => own_pid.store(pid, Ordering::Relaxed),
            Ok(Err(e)) => return Err(text(e)),
            Err(_) => return Err(format!("LISTEN not answered within {:?}", self.timeout)),
        }
        Ok((client, ended))
    }

    /// Sends queued events until the connection ends or the bus is gone.
    async fn serve(
        &self,
        client: &tokio_postgres::Client,
        mut ended: tokio::sync::oneshot::Receiver<String>,
        queue: &mut mpsc::Receiver<Event>,
    ) -> Ended {
        let notify = match tokio::time::timeout(self.timeout, client.prepare("SELECT pg_notify($1, $2)")).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Ended::Lost(e.to_string()),
            Err(_) => return Ended::Lost(format!("no answer within {:?}", self.timeout)),
        };
        loop {
            let event = tokio::select! {
                why = &mut ended => return Ended::Lost(why.unwrap_or_else(|_| "the connection closed".into())),
                next = queue.recv() => match next {
                    Some(e) => e,
                    None => return Ended::Closed,
                },
            };
            let Some(p) = payload(&event) else {
                self.counts.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(event = "events.relay_dropped", name = %event.event, "an event too big for NOTIFY even without its detail; not sent to the other nodes");
                continue;
            };
            match tokio::time::timeout(self.timeout, client.execute(&notify, &[&CHANNEL, &p.text])).await {
                Ok(Ok(_)) => {
                    self.counts.sent.fetch_add(1, Ordering::Relaxed);
                    if p.trimmed {
                        self.counts.trimmed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                // Not sent again: the other nodes may have it already (a
                // lost answer), and once is the promise.
                Ok(Err(e)) => {
                    self.counts.dropped.fetch_add(1, Ordering::Relaxed);
                    return Ended::Lost(e.to_string());
                }
                Err(_) => {
                    self.counts.dropped.fetch_add(1, Ordering::Relaxed);
                    return Ended::Lost(format!("NOTIFY not answered within {:?}", self.timeout));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventName;

    #[test]
    fn small_events_go_whole_and_big_ones_are_cut_to_fit() {
        let small = Event { node: Some("node-a".into()), ..Event::session(EventName::SessionStatus, "acme").state("CONNECTED", None) };
        let p = payload(&small).unwrap();
        assert_eq!(p, Payload { text: serde_json::to_string(&small).unwrap(), trimmed: false });

        // Multi-byte characters, quotes and control characters (escaped
        // longer than their UTF-8) in a 20,000-character body.
        let body: String = "é\"\u{1}😀ab".chars().cycle().take(20_000).collect();
        let detail = serde_json::json!({"from": "+4915112345678", "id": "3EB0AA", "type": "chat", "body": body, "at_ms": 1});
        let big = Event { node: Some("node-a".into()), ..Event::session(EventName::MessageReceived, "acme").detail(detail) };
        let p = payload(&big).unwrap();
        assert!(p.trimmed && p.text.len() <= MAX_PAYLOAD, "{} bytes", p.text.len());
        assert!(p.text.len() > MAX_PAYLOAD - 16, "cut no more than needed: {} bytes", p.text.len());
        let back: Event = serde_json::from_str(&p.text).unwrap();
        assert_eq!(
            (back.event, back.session.as_deref(), back.node.as_deref(), back.at_ms),
            (EventName::MessageReceived, Some("acme"), Some("node-a"), big.at_ms)
        );
        assert_eq!(back.detail["trimmed"], true);
        assert_eq!(
            (&back.detail["from"], &back.detail["id"], &back.detail["at_ms"]),
            (&big.detail["from"], &big.detail["id"], &big.detail["at_ms"])
        );
        let cut = back.detail["body"].as_str().unwrap();
        let kept = cut.strip_suffix(ELLIPSIS).expect("a cut string ends in …");
        assert!(body.starts_with(kept) && kept.len() > 3000, "the body keeps its start: {} bytes", kept.len());

        // Many strings, none long enough alone: the longest go first.
        let many: serde_json::Map<String, serde_json::Value> = (0..40).map(|i| (format!("k{i}"), "x".repeat(300 + i).into())).collect();
        let p = payload(&Event::session(EventName::SessionHealth, "acme").detail(many.into())).unwrap();
        assert!(p.trimmed && p.text.len() <= MAX_PAYLOAD);
        let back: Event = serde_json::from_str(&p.text).unwrap();
        assert_eq!(back.detail["k0"].as_str().unwrap().len(), 300, "a short string is kept: {}", back.detail);

        // A detail that is no object: replaced.
        let list = serde_json::Value::Array(vec!["y".repeat(9000).into()]);
        let p = payload(&Event::session(EventName::SessionHealth, "acme").detail(list)).unwrap();
        let back: Event = serde_json::from_str(&p.text).unwrap();
        assert!(p.trimmed);
        assert_eq!(back.detail, serde_json::json!({"trimmed": true}));

        // Too big without any detail: not sent.
        assert_eq!(payload(&Event::session(EventName::SessionStatus, &"n".repeat(9000))), None);
    }
}
