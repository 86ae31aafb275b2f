//! The outbox writer: turns events and alerts into stored [`Delivery`]s.
//!
//! [`Outbox`] is the event bus's [`Sink`]: `accept` runs on the publisher's
//! thread, so it only checks the subscription masks and queues the event
//! (a bounded queue: a stuck disk cannot make the daemon grow without
//! end). The writer thread takes what is queued in batches (up to
//! [`BATCH`]), makes one delivery per interested hook, stores the batch in
//! one sled batch with a flush, and only then hands the deliveries to the
//! worker. A batch the store refuses is handed over with the deliveries
//! themselves, to be attempted from memory.

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::worker::{Msg, Pending};
use super::{Delivery, Hook, HookKind, IdGen, Stats};
use crate::events::{Event, EventName, Sink};
use crate::session_state::now_ms;
use crate::store::Store;

/// Events and alerts queued for the writer, at most.
pub const QUEUE: usize = 65_536;

/// Items the writer stores per sled batch, at most.
pub const BATCH: usize = 512;

enum Item {
    Event(Box<Event>),
    Alert {
        event: EventName,
        body: String,
    },
    /// Store what came before, answer, and end.
    Stop(mpsc::Sender<()>),
}

/// The sink side of the outbox. See the module docs.
pub struct Outbox {
    tx: mpsc::SyncSender<Item>,
    /// The union of the event hooks' masks.
    wanted: u64,
    alert_hooks: bool,
    stats: Arc<Stats>,
    /// When the last "queue full" error was logged, Unix epoch ms.
    full_logged_ms: Mutex<u64>,
}

impl Outbox {
    /// Starts the writer thread; its deliveries belong to `node`
    /// (`cluster.node`, in cluster mode).
    ///
    /// Errors: the thread cannot be started.
    pub(super) fn start(
        hooks: Arc<[Hook]>,
        store: Store,
        stats: Arc<Stats>,
        worker: tokio::sync::mpsc::UnboundedSender<Msg>,
        node: Option<String>,
    ) -> std::io::Result<Self> {
        let wanted = hooks.iter().filter(|h| h.kind == HookKind::Events).fold(0, |m, h| m | h.wants);
        let alert_hooks = hooks.iter().any(|h| h.kind == HookKind::Alerts);
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let writer = Writer { hooks, store, stats: stats.clone(), worker, ids: IdGen::default(), failing: false, node };
        std::thread::Builder::new().name("webhook-outbox".into()).spawn(move || writer.run(rx))?;
        Ok(Self { tx, wanted, alert_hooks, stats, full_logged_ms: Mutex::new(0) })
    }

    /// Queues an alert for the alert hooks (if there are any).
    pub fn alert(&self, event: EventName, body: String) {
        if self.alert_hooks {
            self.queue(Item::Alert { event, body });
        }
    }

    fn queue(&self, item: Item) {
        if let Err(e) = self.tx.try_send(item) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            let now = now_ms();
            let Ok(mut logged) = self.full_logged_ms.lock() else { return };
            // At most one line a minute: this runs for every event.
            if now.saturating_sub(*logged) >= 60_000 {
                *logged = now;
                let why = if matches!(e, mpsc::TrySendError::Full(_)) { "its queue is full" } else { "it has stopped" };
                tracing::error!(
                    event = "webhook.dropped",
                    dropped = self.stats.dropped.load(Ordering::Relaxed),
                    "the webhook outbox lost an event: {why}"
                );
            }
        }
    }

    /// Asks the writer to store what is queued and end; waits up to `within`.
    pub(super) fn stop(&self, within: Duration) {
        let (done, wait) = mpsc::channel();
        if self.tx.send(Item::Stop(done)).is_ok() {
            // Harmless on timeout: what was not stored is lost, as in a crash.
            let _ = wait.recv_timeout(within);
        }
    }
}

impl Sink for Outbox {
    fn accept(&self, event: &Event) {
        if self.wanted & super::bit(event.event) != 0 {
            self.queue(Item::Event(Box::new(event.clone())));
        }
    }
}

struct Writer {
    hooks: Arc<[Hook]>,
    store: Store,
    stats: Arc<Stats>,
    worker: tokio::sync::mpsc::UnboundedSender<Msg>,
    ids: IdGen,
    /// The last batch was not stored (for logging once per episode).
    failing: bool,
    /// Written into every delivery (cluster mode).
    node: Option<String>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Item>) {
        let mut rng = rand::thread_rng();
        while let Ok(first) = rx.recv() {
            let mut items = vec![first];
            while items.len() < BATCH {
                match rx.try_recv() {
                    Ok(item) => items.push(item),
                    Err(_) => break,
                }
            }
            let mut deliveries = Vec::new();
            let mut stop = None;
            let now = now_ms();
            for item in items {
                let (event, body, kind) = match item {
                    Item::Event(e) => match serde_json::to_string(&e) {
                        Ok(body) => (e.event, body, HookKind::Events),
                        Err(err) => {
                            // An Event is plain data; this cannot happen.
                            tracing::error!(error = %err, "cannot encode an event for the webhooks");
                            continue;
                        }
                    },
                    Item::Alert { event, body } => (event, body, HookKind::Alerts),
                    Item::Stop(done) => {
                        stop = Some(done);
                        continue;
                    }
                };
                for (i, hook) in self.hooks.iter().enumerate() {
                    let wanted = hook.kind == kind && (kind == HookKind::Alerts || hook.wants(event));
                    if !wanted {
                        continue;
                    }
                    let delivery = Delivery {
                        id: self.ids.next(now, &mut rng),
                        hook: hook.id.clone(),
                        event: event.as_str().to_string(),
                        body: body.clone(),
                        attempts: 0,
                        first_at_ms: now,
                        next_at_ms: now,
                        last_error: None,
                        last_status: None,
                        dead_at_ms: None,
                        node: self.node.clone(),
                    };
                    deliveries.push((i, delivery));
                }
            }
            if !deliveries.is_empty() {
                self.hand_over(deliveries);
            }
            if let Some(done) = stop {
                // Harmless if it fails: the daemon stopped waiting.
                let _ = done.send(());
                return;
            }
        }
    }

    /// Stores the deliveries (one batch, flushed), then gives them to the
    /// worker: by id if stored, whole if not.
    fn hand_over(&mut self, deliveries: Vec<(usize, Delivery)>) {
        let records: Vec<Delivery> = deliveries.iter().map(|(_, d)| d.clone()).collect();
        let started = std::time::Instant::now();
        let stored = match self.store.put_deliveries(&records) {
            Ok(()) => {
                tracing::debug!(deliveries = records.len(), took_us = started.elapsed().as_micros() as u64, "webhook deliveries stored");
                if std::mem::take(&mut self.failing) {
                    tracing::info!(event = "webhook.outbox_stored", "the webhook outbox is stored again");
                }
                true
            }
            Err(e) => {
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::error!(event = "webhook.outbox_unstored", error = %e, "the store does not take webhook deliveries; they are attempted from memory and lost if the daemon stops first");
                }
                self.stats.unstored.fetch_add(records.len() as u64, Ordering::Relaxed);
                false
            }
        };
        let pending = deliveries
            .into_iter()
            .map(|(hook, d)| Pending { hook, id: d.id.clone(), next_at_ms: d.next_at_ms, memory: (!stored).then(|| Box::new(d)) })
            .collect();
        // Harmless if it fails: the worker is gone only at shutdown, and
        // stored deliveries wait in the outbox for the next start.
        let _ = self.worker.send(Msg::New(pending));
    }
}
