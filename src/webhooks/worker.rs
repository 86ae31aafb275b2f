//! The delivery worker: one thread with its own single-threaded tokio
//! runtime, so nothing it does can hold up the actors or the HTTP workers.
//!
//! It keeps, per hook, a schedule of pending deliveries (due time and id;
//! the body stays in the store until the attempt, unless the store did not
//! take it). Every wake-up it starts the due attempts each hook has room
//! for: `webhook_delivery.concurrency` at once, or one while the hook is
//! failing, so a receiver that is down costs one request at a time and
//! holds up no other hook. Each attempt is a blocking `ureq` POST on the
//! runtime's blocking pool, within `webhook_delivery.timeout`; its answer
//! comes back as a message and goes through
//! [`crate::policy::delivery::decide`].
//!
//! When a failing hook answers again, its deliveries waiting for a retry
//! are all due at once: they only waited because it was down.
//!
//! In cluster mode it POSTs only this node's deliveries (read before each
//! attempt: one another node adopted is dropped from the schedule), and
//! every `lease_ttl / 2` it adopts dead nodes' deliveries on its blocking
//! pool ([`super::adopt`]) and counts the shared dead letters again.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng as _;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use super::adopt::Adopter;
use super::{Delivery, Hook, Stats};
use crate::config::WebhookDeliveryConfig;
use crate::policy::delivery::{decide, Answer, DeadReason, RetryPolicy, Verdict};
use crate::session_state::now_ms;
use crate::store::Store;

/// A delivery for the worker's schedule.
pub struct Pending {
    /// Index into the hooks.
    pub hook: usize,
    pub id: String,
    pub next_at_ms: u64,
    /// The delivery itself when the store does not hold its latest state.
    pub memory: Option<Box<Delivery>>,
}

/// The worker's inbox.
pub enum Msg {
    /// New deliveries (from the writer) or a replayed one (from the API).
    New(Vec<Pending>),
    /// An attempt ended.
    Done(Box<Attempt>),
    /// A round of adoption ended (cluster mode): the deliveries now this
    /// node's, and the dead letters counted.
    Adopted(Result<Vec<Delivery>, crate::store::StoreError>, Option<u64>),
    /// End the worker.
    Stop,
}

/// One attempt's result.
pub struct Attempt {
    hook: usize,
    delivery: Delivery,
    /// Whether the store holds the delivery as it was before this attempt.
    stored: bool,
    answer: Answer,
    /// What to record as `last_error` if it failed.
    error: String,
}

/// A hook's schedule and in-flight count.
#[derive(Default)]
struct Lane {
    /// (due ms, id) → the delivery if only memory holds it.
    schedule: BTreeMap<(u64, String), Option<Box<Delivery>>>,
    in_flight: usize,
    /// The last attempt got no answer or a retryable one.
    failing: bool,
}

/// Longest sleep between wake-ups when nothing is due, ms.
const IDLE_MS: u64 = 60_000;

/// Bytes of an error answer kept in `last_error`.
const ERROR_SNIPPET: usize = 200;

pub struct Worker {
    hooks: Arc<[Hook]>,
    lanes: Vec<Lane>,
    store: Store,
    stats: Arc<Stats>,
    policy: RetryPolicy,
    concurrency: usize,
    agent: ureq::Agent,
    tx: UnboundedSender<Msg>,
    rx: UnboundedReceiver<Msg>,
    rng: rand::rngs::StdRng,
    /// Cluster mode: this node's adopter.
    adopter: Option<Adopter>,
    /// Adoption rounds done (the first also takes ownerless deliveries).
    rounds: u64,
    /// A round of adoption is under way.
    adopting: bool,
}

impl Worker {
    /// A worker for `hooks` that resumes `stored` (the outbox as read at
    /// start, this node's part in cluster mode); a stored delivery whose
    /// hook is gone goes to the dead letters. With an `adopter` (cluster
    /// mode) it POSTs only deliveries that belong to its node and adopts
    /// dead nodes'.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        hooks: Arc<[Hook]>,
        store: Store,
        stats: Arc<Stats>,
        config: &WebhookDeliveryConfig,
        tx: UnboundedSender<Msg>,
        rx: UnboundedReceiver<Msg>,
        stored: Vec<Delivery>,
        adopter: Option<Adopter>,
    ) -> Self {
        let agent =
            ureq::AgentBuilder::new().timeout(config.timeout).redirects(0).user_agent(concat!("wasup/", env!("CARGO_PKG_VERSION"))).build();
        let mut worker = Self {
            lanes: hooks.iter().map(|_| Lane::default()).collect(),
            hooks,
            store,
            stats,
            policy: config.policy(),
            concurrency: config.concurrency,
            agent,
            tx,
            rx,
            rng: rand::rngs::StdRng::from_entropy(),
            adopter,
            rounds: 0,
            adopting: false,
        };
        let now = now_ms();
        for mut d in stored {
            match worker.hooks.iter().position(|h| h.id == d.hook) {
                Some(hook) => {
                    worker.lanes[hook].schedule.insert((d.next_at_ms, d.id), None);
                }
                None => {
                    d.last_error = Some("its webhook is no longer configured".into());
                    d.dead_at_ms = Some(now);
                    match worker.store.dead_letter(&d) {
                        Ok(()) => {
                            worker.stats.dead_letters.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(event = "webhook.dead_letter", delivery = %d.id, hook = %d.hook, "a stored delivery's webhook is no longer configured; moved to the dead letters");
                        }
                        // Harmless: it stays in the stored outbox and is
                        // looked at again at the next start.
                        Err(e) => {
                            tracing::error!(delivery = %d.id, error = %e, "cannot move a delivery of a removed webhook to the dead letters")
                        }
                    }
                }
            }
        }
        worker.count();
        worker
    }

    /// Runs until [`Msg::Stop`].
    pub fn run(self) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(self.hooks.len().max(1) * self.concurrency + 1)
            .thread_name("webhook-post")
            .build();
        match rt {
            Ok(rt) => rt.block_on(self.serve()),
            Err(e) => tracing::error!(error = %e, "cannot start the webhook worker; deliveries wait in the outbox for the next start"),
        }
    }

    async fn serve(mut self) {
        // Cluster mode's adoption rounds; the first at once.
        let period = self.adopter.as_ref().map_or(Duration::from_secs(3600), Adopter::period);
        let mut adoption = tokio::time::interval(period.max(Duration::from_millis(100)));
        adoption.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let now = now_ms();
            self.dispatch(now);
            let wait = self.next_due().map_or(IDLE_MS, |due| due.saturating_sub(now).min(IDLE_MS));
            tokio::select! {
                msg = self.rx.recv() => match msg {
                    None | Some(Msg::Stop) => return,
                    Some(Msg::New(pending)) => self.add(pending),
                    Some(Msg::Done(attempt)) => self.settle(*attempt),
                    Some(Msg::Adopted(adopted, dead_letters)) => self.adopted(adopted, dead_letters),
                },
                _ = adoption.tick(), if self.adopter.is_some() => self.adopt(),
                _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
            }
        }
    }

    /// Starts a round of adoption on the blocking pool, unless one is
    /// under way.
    fn adopt(&mut self) {
        let Some(adopter) = self.adopter.clone() else { return };
        if std::mem::replace(&mut self.adopting, true) {
            return;
        }
        let ownerless = self.rounds == 0;
        self.rounds += 1;
        let hooks: Vec<String> = self.hooks.iter().map(|h| h.id.clone()).collect();
        let (store, tx) = (self.store.clone(), self.tx.clone());
        tokio::task::spawn_blocking(move || {
            let adopted = adopter.adopt(&hooks, ownerless);
            // Harmless if it fails: the count stays as this node kept it
            // until the next round.
            let dead_letters = store.dead_letter_count().ok();
            // Harmless if it fails: the worker has stopped; what was
            // adopted is in the stored outbox, this node's at its next start.
            let _ = tx.send(Msg::Adopted(adopted, dead_letters));
        });
    }

    /// Schedules what a round adopted.
    fn adopted(&mut self, adopted: Result<Vec<Delivery>, crate::store::StoreError>, dead_letters: Option<u64>) {
        self.adopting = false;
        if let Some(n) = dead_letters {
            self.stats.dead_letters.store(n, Ordering::Relaxed);
        }
        match adopted {
            Ok(list) => {
                self.stats.adopted.fetch_add(list.len() as u64, Ordering::Relaxed);
                let pending = list
                    .into_iter()
                    .filter_map(|d| {
                        let hook = self.hooks.iter().position(|h| h.id == d.hook)?;
                        Some(Pending { hook, id: d.id, next_at_ms: d.next_at_ms, memory: None })
                    })
                    .collect();
                self.add(pending);
            }
            // Harmless: the next round tries again (the store's own
            // failure is reported by the store watch).
            Err(e) => tracing::debug!(error = %e, "cannot look for webhook deliveries of dead nodes now"),
        }
    }

    /// Whether this node POSTs `d`: always on a single node; in cluster
    /// mode only if it is this node's.
    fn owns(&self, d: &Delivery) -> bool {
        self.adopter.as_ref().is_none_or(|a| d.node.as_deref() == Some(a.node()))
    }

    fn add(&mut self, pending: Vec<Pending>) {
        for p in pending {
            if let Some(lane) = self.lanes.get_mut(p.hook) {
                lane.schedule.insert((p.next_at_ms, p.id), p.memory);
            }
        }
        self.count();
    }

    /// The earliest due time of a hook with room for another attempt.
    fn next_due(&self) -> Option<u64> {
        self.lanes.iter().filter(|l| l.in_flight < self.room(l)).filter_map(|l| l.schedule.keys().next().map(|(t, _)| *t)).min()
    }

    fn room(&self, lane: &Lane) -> usize {
        if lane.failing {
            1
        } else {
            self.concurrency
        }
    }

    /// Starts every due attempt there is room for.
    fn dispatch(&mut self, now: u64) {
        let mut changed = false;
        for hook in 0..self.lanes.len() {
            while self.lanes[hook].in_flight < self.room(&self.lanes[hook]) {
                let lane = &mut self.lanes[hook];
                let Some(entry) = lane.schedule.first_entry() else { break };
                if entry.key().0 > now {
                    break;
                }
                let ((_, id), memory) = entry.remove_entry();
                changed = true;
                let (delivery, stored) = match memory {
                    Some(d) => (*d, false),
                    None => match self.store.delivery(&id) {
                        Ok(Some(d)) if self.owns(&d) => (d, true),
                        // Another node adopted it (this one was taken for
                        // dead): that node sends it.
                        Ok(Some(_)) => continue,
                        // Delivered or moved by an earlier run that the
                        // schedule did not hear of: nothing to do.
                        Ok(None) => continue,
                        Err(e) => {
                            tracing::warn!(delivery = %id, error = %e, "cannot read a webhook delivery; trying again later");
                            let later = now + self.policy.backoff_base.as_millis() as u64;
                            self.lanes[hook].schedule.insert((later, id), None);
                            break;
                        }
                    },
                };
                self.lanes[hook].in_flight += 1;
                self.start(hook, delivery, stored);
            }
        }
        if changed {
            self.count();
        }
    }

    fn start(&self, hook: usize, delivery: Delivery, stored: bool) {
        let agent = self.agent.clone();
        let hooks = self.hooks.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let d = delivery.clone();
            let result = tokio::task::spawn_blocking(move || post(&agent, &hooks[hook], &d)).await;
            let (answer, error) = result.unwrap_or_else(|e| (Answer::NoAnswer, format!("the request task failed: {e}")));
            // Harmless if it fails: the worker has stopped; the delivery is
            // still in the outbox (or was only in memory, as documented).
            let _ = tx.send(Msg::Done(Box::new(Attempt { hook, delivery, stored, answer, error })));
        });
    }

    /// Applies the policy's verdict on an attempt.
    fn settle(&mut self, a: Attempt) {
        let Attempt { hook, mut delivery, stored, answer, error } = a;
        let now = now_ms();
        delivery.attempts += 1;
        let elapsed = Duration::from_millis(now.saturating_sub(delivery.first_at_ms));
        let verdict = decide(&self.policy, answer, delivery.attempts, elapsed, &mut self.rng);
        let lane = &mut self.lanes[hook];
        lane.in_flight = lane.in_flight.saturating_sub(1);
        let hook_id = self.hooks[hook].id.clone();
        let answered = matches!(verdict, Verdict::Delivered | Verdict::Dead(DeadReason::Refused(_)));
        if answered && lane.failing {
            lane.failing = false;
            // Everything that waited for this hook is due now.
            let waiting = lane.schedule.split_off(&(now + 1, String::new()));
            let n = waiting.len();
            for ((_, id), memory) in waiting {
                lane.schedule.insert((now, id), memory);
            }
            tracing::info!(event = "webhook.recovered", hook = %hook_id, due_now = n, "webhook answers again");
        }
        if let Answer::Status { code, .. } = answer {
            delivery.last_status = Some(code);
        }
        match verdict {
            Verdict::Delivered => {
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(event = "webhook.delivered", hook = %hook_id, delivery = %delivery.id, attempts = delivery.attempts, "webhook delivered");
                // Also when only memory held it: a batch may reach the store
                // even though its flush failed.
                // Harmless if it fails: the delivery stays in the stored
                // outbox and is sent once more after a restart (at least
                // once; receivers de-duplicate on the id).
                if let Err(e) = self.store.remove_delivery(&delivery.id) {
                    if stored {
                        tracing::warn!(delivery = %delivery.id, error = %e, "cannot remove a delivered webhook delivery from the outbox");
                    }
                }
            }
            Verdict::Retry { delay } => {
                self.stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                delivery.last_error = Some(error.clone());
                delivery.next_at_ms = now.saturating_add(delay.as_millis() as u64);
                if !lane.failing {
                    lane.failing = true;
                    tracing::warn!(event = "webhook.failing", hook = %hook_id, delivery = %delivery.id, error = %error, "webhook delivery failed; retrying one at a time with backoff");
                } else {
                    tracing::debug!(hook = %hook_id, delivery = %delivery.id, attempts = delivery.attempts, retry_in_ms = delay.as_millis() as u64, error = %error, "webhook delivery failed");
                }
                let memory = match self.store.put_delivery(&delivery) {
                    Ok(()) => None,
                    // Not harmless, so kept: memory holds the latest state;
                    // the stored one (if any) retries sooner after a restart.
                    Err(_) => Some(Box::new(delivery.clone())),
                };
                self.lanes[hook].schedule.insert((delivery.next_at_ms, delivery.id), memory);
            }
            Verdict::Dead(reason) => {
                self.stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                delivery.last_error = Some(match reason {
                    DeadReason::Refused(_) => format!("refused, not retried: {error}"),
                    DeadReason::Expired => format!("not delivered within webhook_delivery.retry_for: {error}"),
                });
                delivery.dead_at_ms = Some(now);
                match self.store.dead_letter(&delivery) {
                    Ok(()) => {
                        self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                        self.stats.dead_letters.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(event = "webhook.dead_letter", hook = %hook_id, delivery = %delivery.id, attempts = delivery.attempts, error = %error, "webhook delivery moved to the dead letters");
                    }
                    Err(e) => {
                        // Kept pending (in memory) and tried again at the
                        // cap, so a dead letter is never just dropped.
                        tracing::error!(delivery = %delivery.id, error = %e, "cannot move a webhook delivery to the dead letters; retrying it later");
                        delivery.dead_at_ms = None;
                        let later = now + self.policy.backoff_cap.as_millis() as u64;
                        delivery.next_at_ms = later;
                        self.lanes[hook].schedule.insert((later, delivery.id.clone()), Some(Box::new(delivery)));
                    }
                }
            }
        }
        self.count();
    }

    /// Publishes the pending counts.
    fn count(&self) {
        let mut total = 0;
        let mut by_hook = std::collections::BTreeMap::new();
        for (hook, lane) in self.hooks.iter().zip(&self.lanes) {
            let n = (lane.schedule.len() + lane.in_flight) as u64;
            total += n;
            by_hook.insert(hook.id.clone(), n);
        }
        self.stats.pending.store(total, Ordering::Relaxed);
        if let Ok(mut m) = self.stats.by_hook.lock() {
            *m = by_hook;
        }
    }
}

/// One POST of `d` to `hook`: the answer, and what to record if it failed
/// (never the URL, which may hold a token).
fn post(agent: &ureq::Agent, hook: &Hook, d: &Delivery) -> (Answer, String) {
    let req = agent
        .post(&hook.url)
        .set("Content-Type", "application/json")
        .set("X-Wasup-Delivery", &d.id)
        .set("X-Wasup-Event", &d.event)
        .set("X-Wasup-Signature", &hook.sign(d.body.as_bytes()));
    let resp = match req.send_bytes(d.body.as_bytes()) {
        Ok(resp) | Err(ureq::Error::Status(_, resp)) => resp,
        Err(ureq::Error::Transport(t)) => {
            let cause = std::error::Error::source(&t).map(|s| s.to_string()).or_else(|| t.message().map(str::to_string));
            return (Answer::NoAnswer, cause.map_or_else(|| t.kind().to_string(), |c| format!("{}: {c}", t.kind())));
        }
    };
    let code = resp.status();
    let retry_after = resp.header("Retry-After").and_then(|v| v.trim().parse::<u64>().ok()).map(Duration::from_secs);
    let mut body = Vec::new();
    // Harmless if it fails: the body is only read for the error text (and
    // to let the connection be reused).
    let _ = std::io::Read::read_to_end(&mut std::io::Read::take(resp.into_reader(), 64 * 1024), &mut body);
    let snippet: String = String::from_utf8_lossy(&body).chars().filter(|c| !c.is_control()).take(ERROR_SNIPPET).collect();
    let error = if snippet.trim().is_empty() { format!("HTTP {code}") } else { format!("HTTP {code}: {}", snippet.trim()) };
    (Answer::Status { code, retry_after }, error)
}
