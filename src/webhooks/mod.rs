//! Durable, signed webhooks: `[[webhooks]]` subscribe to events,
//! `[[alerts.webhooks]]` get the alerts, and both are delivered at least
//! once, across daemon restarts, through an outbox in the store.
//!
//! The path of one event:
//! 1. [`Events::publish`](crate::events::Events::publish) hands it,
//!    synchronously, to the [`outbox::Outbox`] sink, which only checks that
//!    some hook wants it and queues it for the writer thread (publishing
//!    never blocks).
//! 2. The writer thread makes one [`Delivery`] per hook that wants it (a new
//!    id, the JSON body that will be signed), stores a batch of them in the
//!    `outbox` tree and flushes, then hands them to the worker. Nothing is
//!    attempted before it is on disk. If the store does not take the batch
//!    (a full disk), the deliveries are attempted from memory anyway: an
//!    alert about the full disk must still go out.
//! 3. The worker thread ([`worker`]) POSTs due deliveries, at most
//!    `webhook_delivery.concurrency` per hook at once (one while the hook
//!    fails), each within `webhook_delivery.timeout`, and applies
//!    [`crate::policy::delivery::decide`]: delivered deliveries leave the
//!    outbox, failed ones are rescheduled, refused or expired ones are moved
//!    to the `dead_letters` tree. At start it resumes the stored outbox.
//!
//! Requests carry `Content-Type: application/json`, `X-Wasup-Delivery` (the
//! delivery's id, the same on every attempt and after a replay: receivers
//! de-duplicate on it), `X-Wasup-Event` (the dotted name) and
//! `X-Wasup-Signature: sha256=<hex HMAC-SHA256 of the body, keyed with the
//! hook's secret>` ([`crate::actors::notifier::signature`]).
//!
//! The window: an event published less than one writer batch (a sled batch
//! and a flush, a few ms) before a SIGKILL or power loss can be lost.
//! Logs name hooks by id (`wh_…`), never by URL or secret.
//!
//! Cluster mode (`[store] backend = "postgres"`): the nodes share the
//! outbox and the dead letters, and each delivery belongs to one node
//! ([`Delivery::node`]), the one whose writer made it: only that node's
//! worker resumes and POSTs it, so a webhook configured on every node gets
//! each event once (another node's events reach this node's bus through
//! the relay, which never hands them to the outbox: [`crate::relay`]).
//! A dead node's pending deliveries are adopted by a live one
//! ([`adopt`]): every `cluster.lease_ttl / 2` each node takes over, one
//! compare-and-set write each, the deliveries of nodes whose heartbeat is
//! older than `cluster.lease_ttl` for hooks it has too (a hook only the
//! dead node has waits for that node to come back). Before each attempt
//! the worker reads the delivery and skips it if it now belongs to another
//! node. A node that was only cut off and comes back may POST a delivery
//! its adopter POSTs too: the same id (`X-Wasup-Delivery`), so receivers
//! that de-duplicate see it once. Dead letters are shared: any node lists,
//! replays (the replaying node takes it over) and deletes them, and each
//! node counts them all again every `lease_ttl / 2`.

pub mod adopt;
pub mod outbox;
mod worker;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::config::Config;
use crate::events::EventName;
use crate::session_state::now_ms;
use crate::store::{Store, StoreError};

/// One body for one hook, as stored in the `outbox` and `dead_letters`
/// trees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// `dlv_` and 16 hex digits, sortable by creation time (the first 11
    /// digits are Unix epoch ms). Sent as `X-Wasup-Delivery`.
    pub id: String,
    /// The hook's id ([`Hook::id`]).
    pub hook: String,
    /// Dotted event name, sent as `X-Wasup-Event`.
    pub event: String,
    /// The JSON body, exactly the bytes signed and sent.
    pub body: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// When it was made (or replayed), Unix epoch ms; `retry_for` counts
    /// from here.
    pub first_at_ms: u64,
    /// When the next attempt is due, Unix epoch ms.
    pub next_at_ms: u64,
    /// What the last attempt got: `HTTP 503: <start of the body>`, or the
    /// transport error (never the URL).
    #[serde(default)]
    pub last_error: Option<String>,
    /// The last attempt's HTTP status, if it got one.
    #[serde(default)]
    pub last_status: Option<u16>,
    /// When it went to the dead letters, Unix epoch ms.
    #[serde(default)]
    pub dead_at_ms: Option<u64>,
    /// The node that POSTs it (`cluster.node`), in cluster mode: the one
    /// that wrote it, adopted it from a dead node, or replayed it. Absent
    /// on a single node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// What a hook gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HookKind {
    /// A `[[webhooks]]` entry: the events it subscribes to.
    Events,
    /// An `[[alerts.webhooks]]` entry: the alerts.
    Alerts,
}

impl HookKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Events => "events",
            Self::Alerts => "alerts",
        }
    }
}

/// One configured destination.
pub struct Hook {
    /// `wh_` and the first 16 hex digits of SHA-256(kind, `\n`, url):
    /// stable across restarts and config reordering, so stored deliveries
    /// find their hook again.
    pub id: String,
    pub kind: HookKind,
    /// The URL without user info, query or fragment (they may hold
    /// tokens), for the API.
    pub shown_url: String,
    /// The event patterns as configured (empty for alert hooks).
    pub events: Vec<String>,
    url: String,
    secret: String,
    /// Bit `i` set: wants `EventName::ALL[i]`.
    wants: u64,
}

impl Hook {
    fn new(kind: HookKind, url: &str, secret: &str, events: Vec<String>, wants: u64) -> Self {
        let digest = sha2::Sha256::digest(format!("{}\n{url}", kind.as_str()).as_bytes());
        Self {
            id: format!("wh_{}", &hex::encode(digest)[..16]),
            kind,
            shown_url: shown_url(url),
            events,
            url: url.to_string(),
            secret: secret.to_string(),
            wants,
        }
    }

    /// Whether this hook subscribes to `event`.
    pub fn wants(&self, event: EventName) -> bool {
        self.wants & bit(event) != 0
    }

    /// `X-Wasup-Signature` of `body`.
    fn sign(&self, body: &[u8]) -> String {
        crate::actors::notifier::signature(&self.secret, body)
    }
}

// Every event name has a bit in a `u64` mask.
const _: () = assert!(EventName::ALL.len() <= 64);

/// `event`'s bit in a hook's subscription mask.
fn bit(event: EventName) -> u64 {
    EventName::ALL.iter().position(|e| *e == event).map_or(0, |i| 1 << i)
}

/// `url` without user info, query and fragment.
pub fn shown_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    let host = authority.rsplit('@').next().unwrap_or(authority);
    format!("{scheme}://{host}{path}")
}

/// The configured hooks: `[[webhooks]]` in order, then `[[alerts.webhooks]]`.
///
/// Errors: an event pattern that [`Config::validate`] would refuse.
pub fn hooks(config: &Config) -> Result<Vec<Hook>, String> {
    let mut hooks = Vec::new();
    for hook in &config.webhooks {
        let wants = hook.subscribed()?.into_iter().fold(0, |mask, e| mask | bit(e));
        hooks.push(Hook::new(HookKind::Events, &hook.url, &hook.secret, hook.events.clone(), wants));
    }
    for hook in &config.alerts.webhooks {
        hooks.push(Hook::new(HookKind::Alerts, &hook.url, &hook.secret, Vec::new(), 0));
    }
    Ok(hooks)
}

/// Makes delivery ids: Unix epoch ms in the top 44 bits and 20 random bits,
/// strictly increasing within the process (a repeat becomes the previous id
/// plus one).
#[derive(Default)]
struct IdGen {
    last: u64,
}

impl IdGen {
    fn next(&mut self, now_ms: u64, rng: &mut impl rand::Rng) -> String {
        let mut id = (now_ms << 20) | u64::from(rng.gen::<u32>() & 0xf_ffff);
        if id <= self.last {
            id = self.last + 1;
        }
        self.last = id;
        format!("dlv_{id:016x}")
    }
}

/// Counts for the API and the metrics; updated by the writer and the worker.
#[derive(Default)]
pub struct Stats {
    /// Deliveries in the outbox (or held in memory) now.
    pub pending: AtomicU64,
    /// Dead letters now.
    pub dead_letters: AtomicU64,
    /// Deliveries that got a 2xx, since the daemon started.
    pub delivered: AtomicU64,
    /// Attempts that did not get a 2xx, since the daemon started.
    pub failed_attempts: AtomicU64,
    /// Deliveries moved to the dead letters, since the daemon started.
    pub dead_lettered: AtomicU64,
    /// Events not queued because the writer's queue was full (a stuck
    /// disk), since the daemon started.
    pub dropped: AtomicU64,
    /// Deliveries the store did not take, attempted from memory only.
    pub unstored: AtomicU64,
    /// Deliveries of dead nodes this node took over, since the daemon
    /// started (cluster mode).
    pub adopted: AtomicU64,
    /// Pending deliveries by hook id.
    by_hook: Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Stats {
    /// Pending deliveries of hook `id`.
    pub fn pending_of(&self, id: &str) -> u64 {
        self.by_hook.lock().ok().and_then(|m| m.get(id).copied()).unwrap_or(0)
    }
}

/// What a replay did.
#[derive(Debug)]
pub enum Replay {
    /// Back in the outbox, due now.
    Scheduled(Delivery),
    /// No dead letter has that id.
    NotFound,
    /// Its hook is no longer configured; it stays a dead letter.
    HookGone,
}

/// The webhooks' handle: the hooks, the counts, the outbox sink, and the
/// worker's inbox. Cheap to clone.
#[derive(Clone)]
pub struct Webhooks {
    hooks: Arc<[Hook]>,
    stats: Arc<Stats>,
    store: Store,
    /// `cluster.node`, in cluster mode.
    node: Option<String>,
    outbox: Arc<outbox::Outbox>,
    worker: tokio::sync::mpsc::UnboundedSender<worker::Msg>,
}

impl Webhooks {
    /// Loads the stored outbox (this node's deliveries, in cluster mode; a
    /// delivery whose hook is no longer configured goes to the dead
    /// letters) and starts the writer and worker threads. In cluster mode
    /// (a PostgreSQL store and `cluster.node`) the worker also adopts dead
    /// nodes' deliveries (see the module docs).
    ///
    /// Errors: the outbox cannot be read, or a thread cannot be started.
    pub fn start(config: &Config, store: Store) -> anyhow::Result<Self> {
        let hooks: Arc<[Hook]> = hooks(config).map_err(anyhow::Error::msg)?.into();
        let stats = Arc::new(Stats::default());
        let adopter = match (config.store.backend, config.cluster.node.as_deref(), store.pg()) {
            (crate::config::StoreBackend::Postgres, Some(node), Some(pg)) => {
                Some(adopt::Adopter::new(pg.clone(), node, config.cluster.lease_ttl))
            }
            _ => None,
        };
        let node = adopter.as_ref().map(|a| a.node().to_string());
        let stored: Vec<Delivery> = store.deliveries()?.into_iter().filter(|d| node.is_none() || d.node == node).collect();
        stats.dead_letters.store(store.dead_letter_count()?, Ordering::Relaxed);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let worker =
            worker::Worker::new(hooks.clone(), store.clone(), stats.clone(), &config.webhook_delivery, tx.clone(), rx, stored, adopter);
        std::thread::Builder::new().name("webhook-delivery".into()).spawn(move || worker.run())?;
        let outbox = outbox::Outbox::start(hooks.clone(), store.clone(), stats.clone(), tx.clone(), node.clone())?;
        Ok(Self { hooks, stats, store, node, outbox: Arc::new(outbox), worker: tx })
    }

    /// The sink for [`crate::events::Events::with_sink`].
    pub fn sink(&self) -> Arc<dyn crate::events::Sink> {
        self.outbox.clone()
    }

    /// Queues an alert for every `[[alerts.webhooks]]` hook; `body` is the
    /// JSON sent. Never blocks.
    pub fn alert(&self, event: EventName, body: String) {
        self.outbox.alert(event, body);
    }

    pub fn hooks(&self) -> &[Hook] {
        &self.hooks
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Dead letters, oldest first, at most `limit`.
    ///
    /// Errors: the store cannot be read.
    pub fn dead_letters(&self, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        self.store.dead_letters(limit)
    }

    /// Moves dead letter `id` back to the outbox, due now, with its attempts
    /// and its `retry_for` starting again; same id, same body. In cluster
    /// mode this node takes it over, whichever node made it.
    ///
    /// Errors: the store does not take the move (then nothing changed).
    pub fn replay(&self, id: &str) -> Result<Replay, StoreError> {
        let Some(dead) = self.store.dead_letter_entry(id)? else { return Ok(Replay::NotFound) };
        let Some(hook) = self.hooks.iter().position(|h| h.id == dead.hook) else { return Ok(Replay::HookGone) };
        let now = now_ms();
        let node = self.node.clone();
        let revived = self.store.replay_dead_letter(id, |d| Delivery {
            attempts: 0,
            first_at_ms: now,
            next_at_ms: now,
            dead_at_ms: None,
            node: node.clone(),
            ..d
        })?;
        let Some(revived) = revived else { return Ok(Replay::NotFound) };
        self.stats.dead_letters.fetch_sub(1, Ordering::Relaxed);
        let pending = worker::Pending { hook, id: revived.id.clone(), next_at_ms: now, memory: None };
        // Harmless if it fails: the worker is gone only at shutdown, and
        // the delivery is in the stored outbox for the next start.
        let _ = self.worker.send(worker::Msg::New(vec![pending]));
        Ok(Replay::Scheduled(revived))
    }

    /// Deletes dead letter `id`; the deleted one, or `None`.
    ///
    /// Errors: the store does not take the delete.
    pub fn delete(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
        let deleted = self.store.delete_dead_letter(id)?;
        if deleted.is_some() {
            self.stats.dead_letters.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(deleted)
    }

    /// Stops the writer (after it stored what it had queued, waiting up to
    /// `within`) and the worker (requests under way are abandoned: their
    /// deliveries stay in the outbox for the next start).
    pub fn stop(&self, within: Duration) {
        self.outbox.stop(within);
        // Harmless if it fails: the worker is already gone.
        let _ = self.worker.send(worker::Msg::Stop);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn ids_are_sortable_unique_and_carry_the_time() {
        let mut ids = IdGen::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let t = 1_767_225_600_000; // 2026-01-01
        let a: Vec<String> = (0..1000).map(|_| ids.next(t, &mut rng)).collect();
        let later = ids.next(t + 1, &mut rng);
        let earlier_clock = ids.next(t - 5000, &mut rng);
        assert!(a.windows(2).all(|w| w[0] < w[1]), "strictly increasing within one ms");
        assert!(a.iter().all(|id| id.len() == 20 && id.starts_with("dlv_")));
        assert!(a.last().unwrap() < &later && later < earlier_clock, "a clock step back still gives a new id");
        assert_eq!(u64::from_str_radix(&a[0][4..], 16).unwrap() >> 20, t);
    }

    /// A loopback receiver answering `status` (shared, changeable); keeps
    /// `(X-Wasup-Delivery, status answered)` of every request.
    fn receiver(listener: std::net::TcpListener, status: Arc<std::sync::atomic::AtomicU16>) -> Arc<Mutex<Vec<(String, u16)>>> {
        use std::io::{BufRead as _, Read as _, Write as _};
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = std::io::BufReader::new(stream);
                let (mut id, mut len, mut line) = (String::new(), 0, String::new());
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("x-wasup-delivery:") {
                        id = v.trim().to_string();
                    }
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    line.clear();
                }
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
                let status = status.load(Ordering::SeqCst);
                sink.lock().unwrap().push((id, status));
                let _ =
                    reader.get_mut().write_all(format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes());
            }
        });
        got
    }

    fn wait(what: &str, mut check: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !check() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Real sled, real HTTP on loopback: events published while nothing
    /// listens are stored; a second outbox on the same store (a restart)
    /// resumes them; a 503 is retried and a 200 delivers each once.
    #[test]
    fn stored_deliveries_survive_a_restart_and_are_retried_until_delivered() {
        use crate::events::{Event, Events};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let config = Config::parse(
            &format!("[[webhooks]]\nurl = \"http://127.0.0.1:{port}/h\"\nsecret = \"s\"\nevents = [\"session.*\"]\n[webhook_delivery]\nbackoff_base = \"20ms\"\nbackoff_cap = \"200ms\"\n"),
            std::path::Path::new("t"),
        )
        .unwrap();
        let first = Webhooks::start(&config, store.clone()).unwrap();
        let bus = Events::new().with_sink(first.sink());
        for i in 0..5 {
            bus.publish(Event::session(EventName::SessionStatus, &format!("s{i}")));
        }
        bus.publish(Event::campaign(EventName::MessageSent, "cmp_1", "s0")); // not subscribed
        wait("five pending, attempted", || {
            first.stats().pending.load(Ordering::Relaxed) == 5 && first.stats().failed_attempts.load(Ordering::Relaxed) > 0
        });
        first.stop(Duration::from_secs(5));
        assert_eq!(store.deliveries().unwrap().len(), 5);

        let status = Arc::new(std::sync::atomic::AtomicU16::new(503));
        let got = receiver(std::net::TcpListener::bind(("127.0.0.1", port)).unwrap(), status.clone());
        let second = Webhooks::start(&config, store.clone()).unwrap();
        assert_eq!(second.stats().pending.load(Ordering::Relaxed), 5, "the stored outbox is resumed");
        wait("a 503 answered", || got.lock().unwrap().iter().any(|(_, s)| *s == 503));
        status.store(200, Ordering::SeqCst);
        wait("all delivered", || second.stats().pending.load(Ordering::Relaxed) == 0);
        let got = got.lock().unwrap().clone();
        let delivered: std::collections::BTreeSet<&str> = got.iter().filter(|(_, s)| *s == 200).map(|(id, _)| id.as_str()).collect();
        assert_eq!(delivered.len(), 5, "{got:?}");
        assert_eq!(got.iter().filter(|(_, s)| *s == 200).count(), 5, "each delivered once: {got:?}");
        assert_eq!(second.stats().delivered.load(Ordering::Relaxed), 5);
        wait("the outbox emptied", || store.deliveries().unwrap().is_empty());
        second.stop(Duration::from_secs(5));
    }

    #[test]
    fn shown_urls_lose_credentials_query_and_fragment() {
        assert_eq!(shown_url("https://user:pw@hooks.example.com:8443/a/b?token=x#f"), "https://hooks.example.com:8443/a/b");
        assert_eq!(shown_url("http://127.0.0.1:9/hook"), "http://127.0.0.1:9/hook");
        assert_eq!(shown_url("http://example.com?k=v"), "http://example.com");
    }

    #[test]
    fn hooks_have_stable_ids_and_masks() {
        let c = Config::parse(
            "[[webhooks]]\nurl = \"http://127.0.0.1:9/a\"\nsecret = \"s\"\nevents = [\"message.*\"]\n[[alerts.webhooks]]\nurl = \"http://127.0.0.1:9/a\"\nsecret = \"t\"\n",
            std::path::Path::new("t"),
        )
        .unwrap();
        let h = hooks(&c).unwrap();
        assert_eq!(h.len(), 2);
        assert_ne!(h[0].id, h[1].id, "the same URL as an alert hook is another hook");
        assert_eq!(h[0].id, hooks(&c).unwrap()[0].id);
        assert!(h[0].wants(EventName::MessageAck) && h[0].wants(EventName::MessageReceived));
        assert!(!h[0].wants(EventName::SessionStatus));
        assert!(EventName::ALL.iter().all(|e| !h[1].wants(*e)));
    }
}
