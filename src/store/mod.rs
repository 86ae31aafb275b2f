//! The store: what must survive a daemon restart.
//!
//! Records are JSON (serde) under keys with a stable layout, in ordered maps
//! ([`Tree`]s) that a backend keeps ([`kv::Kv`]): sled in `<state.dir>/db`
//! on one machine (the default), or PostgreSQL shared by several
//! (`[store] backend = "postgres"`). This module owns the records and
//! their keys; both backends keep the same bytes.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `sessions` | session name (UTF-8) | [`SessionRecord`] |
//! | `history` | name, `0x00`, at_ms (u64 BE), seq (u64 BE) | [`HistoryEntry`] |
//! | `campaigns` | campaign id (`cmp_…`) | [`CampaignRecord`] |
//! | `recipients` | campaign id, `0x00`, idx (u32 BE) | [`RecipientRecord`] |
//! | `messages` | message key id (`3EB0…`) | campaign id, `0x00`, idx (u32 BE) |
//! | `daily` | session name, `0x00`, `YYYY-MM-DD` | sends started that day (u32 BE) |
//! | `numbers` | session name | [`NumberRecord`] |
//! | `opt_outs` | session name, `0x00`, E.164 digits | [`OptOut`] |
//! | `contacts` | session name, `0x00`, E.164 digits | first message from it, Unix ms (u64 BE) |
//! | `outbox` | delivery id (`dlv_…`) | [`Delivery`] waiting for its webhook |
//! | `dead_letters` | delivery id (`dlv_…`) | [`Delivery`] given up on |
//! | `meta` | `alive` | the daemon's last liveness mark, Unix epoch ms (u64 BE) |
//!
//! Durability: writes that a later decision depends on (the desired state
//! of a session, a recipient going `SENDING` before its send, `SENT` after
//! it) are durable before the call returns (sled: flushed; PostgreSQL:
//! committed). Others may be lost to a power cut (sled syncs every 500 ms).

pub mod kv;
pub mod postgres;
pub mod sled_kv;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::campaign::{CampaignRecord, RecipientRecord};
use crate::policy::pacing::{DayCount, NumberRecord};
use crate::session_state::{Me, SessionState};
use crate::webhooks::Delivery;
pub use kv::{Fence, Kv, Tree};
use sled_kv::SledKv;

/// Whether an operator wants the session to run; survives restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    Running,
    Stopped,
}

/// A session as stored: its desired state and its last known status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    pub name: String,
    pub desired: Desired,
    pub state: SessionState,
    /// Why the session is in `state` (a [`crate::policy::EndReason`] name or
    /// a short phrase), `None` when there is nothing to say.
    pub reason: Option<String>,
    /// When `state` was entered, Unix epoch ms.
    pub since_ms: u64,
    /// The linked account, once known.
    pub me: Option<Me>,
    /// When the session was created, Unix epoch ms.
    pub created_ms: u64,
}

/// One event of a session: a status change (`session.status`) or a
/// decision about it (`session.restart_scheduled`, `session.health`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    /// The session's state when the event happened.
    pub state: SessionState,
    pub reason: Option<String>,
    /// Unix epoch ms.
    pub at_ms: u64,
    /// Dotted event name.
    #[serde(default = "status_event")]
    pub event: String,
    /// Event-specific fields (`{"attempt", "delay_ms"}`, `{"key_files", "max"}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub detail: Option<serde_json::Value>,
}

fn status_event() -> String {
    "session.status".into()
}

impl HistoryEntry {
    /// A `session.status` entry.
    pub fn status(state: SessionState, reason: Option<String>, at_ms: u64) -> Self {
        Self { state, reason, at_ms, event: status_event(), detail: None }
    }
}

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    #[error("store: corrupt record: {0}")]
    Corrupt(#[from] serde_json::Error),
    /// The database is closed while it is being reopened after a failure.
    #[error("store: closed while it is reopened after a write failure")]
    Closed,
    /// PostgreSQL could not be reached, timed out or refused a statement.
    #[error("store: postgres: {0}")]
    Postgres(String),
    /// Cluster mode: this node does not hold session `.0`'s lease (any
    /// more), so it may not write what belongs to the session. Not a store
    /// failure: the session stops on this node.
    #[error("store: session {0:?} is not leased to this node")]
    Fenced(String),
}

/// The store's write health: since when writes fail, and the last error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreFailure {
    /// When the first failing write of this episode happened, Unix epoch ms.
    pub since_ms: u64,
    /// The latest write error.
    pub error: String,
    /// Write failures in this episode.
    pub failures: u64,
}

/// Handle to the database; cheap to clone (every clone shares the same
/// database and the same health).
///
/// Every write records its outcome: a failing write (or flush) marks the
/// store failing ([`Store::failure`]); only a successful flush clears it, so
/// "healthy" always means "a write reached the disk since the last failure".
/// sled keeps an I/O error (a full disk, say) and fails every later write
/// with it until the database is reopened; PostgreSQL fails while it is
/// unreachable. [`Store::recover`] probes (and reopens sled).
#[derive(Clone)]
pub struct Store {
    kv: Arc<dyn Kv>,
    failure: Arc<Mutex<Option<StoreFailure>>>,
    reopening: Arc<Mutex<()>>,
    /// Opt-outs the store did not take (a failing disk), by key: checked
    /// like stored ones, and written with the next addition or before the
    /// next campaign send. Lost if the daemon stops before that.
    unstored_opt_outs: Arc<Mutex<BTreeMap<Vec<u8>, OptOut>>>,
    /// Cluster mode: the leases this node holds (`None`: one node, every
    /// write unconditional).
    fences: Option<Arc<Fences>>,
    /// The PostgreSQL connection, for the cluster's own tables.
    pg: Option<postgres::Pg>,
}

/// The leases a node holds, by session, as the cluster last renewed them;
/// a write that belongs to a session is fenced by its entry
/// ([`Kv::insert_fenced`]). A fenced write that fails is reported on
/// `lost` with the generation it carried ([`LostLease`]), so the session
/// stops on this node at once.
pub struct Fences {
    node: String,
    held: Mutex<BTreeMap<String, i64>>,
    lost: tokio::sync::mpsc::UnboundedSender<LostLease>,
    /// Until when (this machine's monotonic clock) the last renewal lets
    /// this node act: the renewal's start + `lease_ttl / 2`.
    fresh_until: Mutex<Option<std::time::Instant>>,
    /// Wakes the cluster's placement (a session to run was created).
    wake: tokio::sync::Notify,
}

/// A write of `session` was refused: under `generation`, which the
/// database no longer has live for this node, or (`None`) with no lease
/// held here at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostLease {
    pub session: String,
    pub generation: Option<i64>,
}

impl Fences {
    /// Fences for `node`; the writes refused arrive on the returned
    /// receiver.
    pub fn new(node: &str) -> (Arc<Self>, tokio::sync::mpsc::UnboundedReceiver<LostLease>) {
        let (lost, rx) = tokio::sync::mpsc::unbounded_channel();
        let fences = Self { node: node.to_string(), held: Mutex::default(), lost, fresh_until: Mutex::default(), wake: Default::default() };
        (Arc::new(fences), rx)
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// A renewal that started at `at` succeeded: the node may act until
    /// `at + half_ttl`.
    pub fn renewed(&self, at: std::time::Instant, half_ttl: std::time::Duration) {
        if let Ok(mut until) = self.fresh_until.lock() {
            *until = Some(at + half_ttl);
        }
    }

    /// Whether the last renewal is recent enough to act on (less than
    /// `lease_ttl / 2` ago by this machine's monotonic clock, which keeps
    /// counting while the process is stopped).
    pub fn fresh(&self) -> bool {
        self.fresh_until.lock().ok().and_then(|u| *u).is_some_and(|u| std::time::Instant::now() < u)
    }

    /// Whether this node may send through `session` now: it holds the
    /// lease and renewed it recently ([`Fences::fresh`]). Checked right
    /// before a message goes to the page.
    pub fn may_send(&self, session: &str) -> bool {
        self.fresh() && self.generation(session).is_some()
    }

    /// Asks the cluster to place sessions now rather than at its next tick.
    pub fn wake_placement(&self) {
        self.wake.notify_one();
    }

    /// Resolves when [`Fences::wake_placement`] was called.
    pub async fn placement_wanted(&self) {
        self.wake.notified().await;
    }

    /// Holds `session` at `generation` (`None`: no longer held).
    pub fn set(&self, session: &str, generation: Option<i64>) {
        if let Ok(mut held) = self.held.lock() {
            match generation {
                Some(g) => held.insert(session.to_string(), g),
                None => held.remove(session),
            };
        }
    }

    /// Drops every lease (self-fencing).
    pub fn clear(&self) {
        if let Ok(mut held) = self.held.lock() {
            held.clear();
        }
    }

    /// Every lease held, as `(session, generation)`.
    pub fn held(&self) -> Vec<(String, i64)> {
        self.held.lock().map(|h| h.iter().map(|(s, g)| (s.clone(), *g)).collect()).unwrap_or_default()
    }

    /// The generation held for `session`.
    pub fn generation(&self, session: &str) -> Option<i64> {
        self.held.lock().ok().and_then(|h| h.get(session).copied())
    }

    /// The fence a write of `session` carries. Errors: not held.
    fn fence(&self, session: &str) -> Result<Fence, StoreError> {
        match self.generation(session) {
            Some(generation) => Ok(Fence { session: session.to_string(), node: self.node.clone(), generation }),
            None => {
                self.lost(session, None);
                Err(StoreError::Fenced(session.to_string()))
            }
        }
    }

    fn lost(&self, session: &str, generation: Option<i64>) {
        // Harmless if nobody listens: the daemon is stopping.
        let _ = self.lost.send(LostLease { session: session.to_string(), generation });
    }
}

/// How many history entries are kept per session; older ones are dropped.
pub const HISTORY_KEEP: usize = 1000;

/// sled's page cache when none is configured, bytes (sled's own default is
/// 1 GiB, far more than this daemon's records need).
pub const DEFAULT_CACHE_CAPACITY: u64 = 32 * 1024 * 1024;

impl Store {
    /// Opens (or creates) a sled database at `dir` with a
    /// [`DEFAULT_CACHE_CAPACITY`] page cache.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, DEFAULT_CACHE_CAPACITY)
    }

    /// Opens (or creates) a sled database at `dir` with a page cache of
    /// `cache_capacity` bytes (`state.cache_capacity`).
    pub fn open_with(dir: &Path, cache_capacity: u64) -> Result<Self, StoreError> {
        Ok(Self::with(Arc::new(SledKv::open(dir, cache_capacity)?)))
    }

    /// A store in PostgreSQL at `url` (`[store] url`), its schema migrated,
    /// for node `node` (`cluster.node`); each call waits at most `timeout`
    /// for the database.
    ///
    /// Errors: the URL does not parse, PostgreSQL cannot be reached, or a
    /// migration failed.
    pub fn postgres(url: &str, timeout: std::time::Duration, node: &str, lease_ttl: std::time::Duration) -> Result<Self, StoreError> {
        let pg = postgres::Pg::start(url, timeout, node, lease_ttl)?;
        let mut store = Self::with(Arc::new(postgres::PgKv::open(pg.clone())?));
        store.pg = Some(pg);
        Ok(store)
    }

    /// This store with cluster fences: every write that belongs to a
    /// session needs its lease in `fences`.
    pub fn fenced(mut self, fences: Arc<Fences>) -> Self {
        self.fences = Some(fences);
        self
    }

    /// The PostgreSQL connection (`None` on sled).
    pub fn pg(&self) -> Option<&postgres::Pg> {
        self.pg.as_ref()
    }

    /// The fences, in cluster mode.
    pub fn fences(&self) -> Option<&Arc<Fences>> {
        self.fences.as_ref()
    }

    /// Writes `key` as a write that belongs to `session`: fenced by its
    /// lease in cluster mode, plain otherwise. A lease this node lost is
    /// reported to the cluster (the session stops here).
    fn insert_owned(&self, kv: &dyn Kv, session: &str, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let Some(fences) = &self.fences else { return kv.insert(tree, key, value) };
        let fence = fences.fence(session)?;
        let written = kv.insert_fenced(tree, key, value, &fence);
        if matches!(written, Err(StoreError::Fenced(_))) {
            fences.lost(session, Some(fence.generation));
        }
        written
    }

    /// A store over any backend.
    pub fn with(kv: Arc<dyn Kv>) -> Self {
        Self {
            kv,
            failure: Arc::new(Mutex::new(None)),
            reopening: Arc::new(Mutex::new(())),
            unstored_opt_outs: Arc::default(),
            fences: None,
            pg: None,
        }
    }

    /// Runs a write and records its outcome: an error marks the store
    /// failing; success changes nothing (only a flush proves the disk).
    fn write<T>(&self, f: impl FnOnce(&dyn Kv) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let result = f(self.kv.as_ref());
        if let Err(e) = &result {
            if !matches!(e, StoreError::Corrupt(_) | StoreError::Fenced(_)) {
                self.mark_failed(e);
            }
        }
        result
    }

    fn mark_failed(&self, e: &StoreError) {
        let Ok(mut failure) = self.failure.lock() else { return };
        match failure.as_mut() {
            Some(f) => {
                f.failures += 1;
                f.error = e.to_string();
            }
            None => {
                tracing::error!(event = "store.failing", error = %e, "store write failed; sends wait until writes succeed again");
                *failure = Some(StoreFailure { since_ms: crate::session_state::now_ms(), error: e.to_string(), failures: 1 });
            }
        }
    }

    fn mark_ok(&self) {
        if let Ok(mut failure) = self.failure.lock() {
            if let Some(f) = failure.take() {
                tracing::info!(event = "store.recovered", failures = f.failures, since_ms = f.since_ms, "store writes succeed again");
            }
        }
    }

    /// Why writes fail, or `None` when the last flush succeeded.
    pub fn failure(&self) -> Option<StoreFailure> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }

    /// Makes everything written durable. Success marks the store healthy.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.write(|kv| kv.flush())?;
        self.mark_ok();
        Ok(())
    }

    /// Brings a failing store back: a probe write and flush; if that fails
    /// too, the backend is reopened (sled keeps an I/O error until then),
    /// then probed again. Blocks (a reopen replays sled's log): call it off
    /// the actor threads. `Ok` means a write reached the disk.
    ///
    /// Errors: the probe still fails (the disk is still full, the database
    /// unreachable), or the database cannot be reopened yet (a handle is
    /// still in use; the next call tries again).
    pub fn recover(&self) -> Result<(), StoreError> {
        let Ok(_one_at_a_time) = self.reopening.lock() else { return Err(StoreError::Closed) };
        if self.failure().is_none() {
            return Ok(());
        }
        if self.probe().is_ok() {
            return Ok(());
        }
        tracing::debug!(event = "store.reopen", "reopening the store to clear its write error");
        self.write(|kv| kv.reopen())?;
        self.probe()
    }

    /// A small write and a flush: proves the disk takes writes.
    fn probe(&self) -> Result<(), StoreError> {
        self.write(|kv| kv.probe())?;
        self.flush()
    }

    /// The records of a tree under `prefix`, decoded, in key order.
    fn records<T: serde::de::DeserializeOwned>(&self, tree: Tree, prefix: &[u8], limit: Option<usize>) -> Result<Vec<T>, StoreError> {
        self.kv.scan(tree, prefix, limit)?.into_iter().map(|(_, v)| Ok(serde_json::from_slice(&v)?)).collect()
    }

    /// The record at `key`, decoded.
    fn record<T: serde::de::DeserializeOwned>(&self, tree: Tree, key: &[u8]) -> Result<Option<T>, StoreError> {
        match self.kv.get(tree, key)? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    /// All sessions, ordered by name.
    pub fn sessions(&self) -> Result<Vec<SessionRecord>, StoreError> {
        self.records(Tree::Sessions, b"", None)
    }

    pub fn session(&self, name: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.record(Tree::Sessions, name.as_bytes())
    }

    /// Inserts or replaces a session record and flushes.
    pub fn put_session(&self, record: &SessionRecord) -> Result<(), StoreError> {
        let value = serde_json::to_vec(record)?;
        self.write(|kv| kv.insert(Tree::Sessions, record.name.as_bytes(), &value))?;
        self.flush()
    }

    /// [`Store::put_session`] by the node that runs the session (its
    /// state): fenced by the session's lease in cluster mode.
    /// Errors: as `put_session`, and [`StoreError::Fenced`].
    pub fn put_session_owned(&self, record: &SessionRecord) -> Result<(), StoreError> {
        let value = serde_json::to_vec(record)?;
        self.write(|kv| self.insert_owned(kv, &record.name, Tree::Sessions, record.name.as_bytes(), &value))?;
        self.flush()
    }

    /// Inserts `record` only if no session of that name exists.
    /// Returns false (and writes nothing) if it does.
    pub fn create_session(&self, record: &SessionRecord) -> Result<bool, StoreError> {
        let value = serde_json::to_vec(record)?;
        let created = self.write(|kv| kv.insert_new(Tree::Sessions, record.name.as_bytes(), &value))?;
        if created {
            self.flush()?;
        }
        Ok(created)
    }

    /// Removes a session and its history.
    pub fn delete_session(&self, name: &str) -> Result<(), StoreError> {
        self.write(|kv| {
            kv.remove(Tree::Sessions, name.as_bytes())?;
            kv.remove_prefix(Tree::History, &prefix(name))
        })?;
        self.flush()
    }

    /// Appends a status change to the session's history (not flushed: the
    /// history is a record, no decision depends on it; sled syncs it within
    /// 500 ms) and trims it to [`HISTORY_KEEP`] entries.
    pub fn append_history(&self, name: &str, entry: &HistoryEntry) -> Result<(), StoreError> {
        self.append_history_of(false, name, entry)
    }

    /// [`Store::append_history`] by the node that runs the session:
    /// fenced by its lease in cluster mode.
    /// Errors: as `append_history`, and [`StoreError::Fenced`].
    pub fn append_history_owned(&self, name: &str, entry: &HistoryEntry) -> Result<(), StoreError> {
        self.append_history_of(true, name, entry)
    }

    fn append_history_of(&self, owned: bool, name: &str, entry: &HistoryEntry) -> Result<(), StoreError> {
        let value = serde_json::to_vec(entry)?;
        self.write(|kv| {
            let mut key = prefix(name);
            key.extend_from_slice(&entry.at_ms.to_be_bytes());
            key.extend_from_slice(&kv.next_id()?.to_be_bytes());
            if owned {
                self.insert_owned(kv, name, Tree::History, &key, &value)?;
            } else {
                kv.insert(Tree::History, &key, &value)?;
            }
            kv.trim_prefix(Tree::History, &prefix(name), HISTORY_KEEP)
        })
    }

    /// The session's history, oldest first.
    pub fn history(&self, name: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        self.records(Tree::History, &prefix(name), None)
    }

    /// Notes that the daemon is alive at `at_ms` (key `alive` of the `meta`
    /// tree, u64 BE; not flushed: sled syncs it within 500 ms). Written
    /// every few seconds, so after a crash the next boot knows about when
    /// the daemon stopped ([`Store::alive_ms`]). Best effort, and outside
    /// the store's health: no decision waits for it, and a lost mark only
    /// makes the crash's gap count as the last recorded state.
    pub fn mark_alive(&self, at_ms: u64) {
        // Harmless if it fails: see above; a failing disk shows in the
        // writes that matter.
        let _ = self.kv.insert(Tree::Meta, b"alive", &at_ms.to_be_bytes());
    }

    /// The last [`Store::mark_alive`] time, Unix epoch ms; `None` if there
    /// is none (a new store, or one from a version without it).
    pub fn alive_ms(&self) -> Option<u64> {
        let value = self.kv.get(Tree::Meta, b"alive").ok()??;
        Some(u64::from_be_bytes(value.as_slice().try_into().ok()?))
    }
}

/// Recipients written per batch when a campaign is created.
const RECIPIENT_CHUNK: usize = 1000;

impl Store {
    /// Stores a new campaign: its recipients first, then the record, then
    /// a flush (a crash in between leaves recipients no campaign points to,
    /// never a campaign with missing recipients).
    pub fn create_campaign(&self, record: &CampaignRecord, recipients: &[RecipientRecord]) -> Result<(), StoreError> {
        for chunk in recipients.chunks(RECIPIENT_CHUNK) {
            let entries = chunk
                .iter()
                .map(|r| Ok((recipient_key(&record.id, r.idx), serde_json::to_vec(r)?)))
                .collect::<Result<Vec<_>, StoreError>>()?;
            self.write(|kv| kv.insert_all(Tree::Recipients, &entries))?;
        }
        let value = serde_json::to_vec(record)?;
        self.write(|kv| kv.insert(Tree::Campaigns, record.id.as_bytes(), &value))?;
        self.flush()
    }

    pub fn put_campaign(&self, record: &CampaignRecord) -> Result<(), StoreError> {
        self.put_campaign_unflushed(record)?;
        self.flush()
    }

    /// Writes a campaign record without a flush (bookkeeping such as the
    /// next send time, which no decision after a crash depends on).
    pub fn put_campaign_unflushed(&self, record: &CampaignRecord) -> Result<(), StoreError> {
        let value = serde_json::to_vec(record)?;
        self.write(|kv| kv.insert(Tree::Campaigns, record.id.as_bytes(), &value))
    }

    /// A campaign record written by its running campaign: fenced by its
    /// session's lease in cluster mode (flushed if `flush`).
    /// Errors: as `put_campaign`, and [`StoreError::Fenced`].
    pub fn put_campaign_owned(&self, record: &CampaignRecord, flush: bool) -> Result<(), StoreError> {
        let value = serde_json::to_vec(record)?;
        self.write(|kv| self.insert_owned(kv, &record.session, Tree::Campaigns, record.id.as_bytes(), &value))?;
        if flush {
            self.flush()?;
        }
        Ok(())
    }

    pub fn campaign(&self, id: &str) -> Result<Option<CampaignRecord>, StoreError> {
        self.record(Tree::Campaigns, id.as_bytes())
    }

    /// All campaigns, ordered by id.
    pub fn campaigns(&self) -> Result<Vec<CampaignRecord>, StoreError> {
        self.records(Tree::Campaigns, b"", None)
    }

    /// Writes a recipient; `flush` when a decision depends on it (SENDING
    /// before a send, SENT after).
    pub fn put_recipient(&self, campaign: &str, r: &RecipientRecord, flush: bool) -> Result<(), StoreError> {
        self.put_recipient_of(None, campaign, r, flush)
    }

    /// [`Store::put_recipient`] by the campaign that sends through
    /// `session`: fenced by the session's lease in cluster mode, so a node
    /// that lost the lease cannot write a recipient `SENDING` (and send).
    /// Errors: as `put_recipient`, and [`StoreError::Fenced`].
    pub fn put_recipient_owned(&self, session: &str, campaign: &str, r: &RecipientRecord, flush: bool) -> Result<(), StoreError> {
        self.put_recipient_of(Some(session), campaign, r, flush)
    }

    fn put_recipient_of(&self, session: Option<&str>, campaign: &str, r: &RecipientRecord, flush: bool) -> Result<(), StoreError> {
        let value = serde_json::to_vec(r)?;
        self.write(|kv| {
            let key = recipient_key(campaign, r.idx);
            match session {
                Some(session) => self.insert_owned(kv, session, Tree::Recipients, &key, &value)?,
                None => kv.insert(Tree::Recipients, &key, &value)?,
            }
            if let Some(id) = &r.message_id {
                kv.insert(Tree::Messages, id.as_bytes(), &key)?;
            }
            Ok(())
        })?;
        if flush {
            self.flush()?;
        }
        Ok(())
    }

    /// A campaign's recipients, in order.
    pub fn recipients(&self, campaign: &str) -> Result<Vec<RecipientRecord>, StoreError> {
        self.records(Tree::Recipients, &prefix(campaign), None)
    }

    /// When each of a campaign's recipients became `SENT` (`sent_at_ms`,
    /// epoch ms), in recipient order; recipients not sent are left out.
    /// Reads only that field of each record: one pass over the campaign.
    pub fn sent_times(&self, campaign: &str) -> Result<Vec<u64>, StoreError> {
        #[derive(Deserialize)]
        struct SentAt {
            sent_at_ms: Option<u64>,
        }
        let mut times = Vec::new();
        for (_, v) in self.kv.scan(Tree::Recipients, &prefix(campaign), None)? {
            if let Some(t) = serde_json::from_slice::<SentAt>(&v)?.sent_at_ms {
                times.push(t);
            }
        }
        Ok(times)
    }

    pub fn recipient(&self, campaign: &str, idx: u32) -> Result<Option<RecipientRecord>, StoreError> {
        self.record(Tree::Recipients, &recipient_key(campaign, idx))
    }

    /// Which campaign and recipient a message id belongs to.
    pub fn message_owner(&self, message_id: &str) -> Result<Option<(String, u32)>, StoreError> {
        let Some(v) = self.kv.get(Tree::Messages, message_id.as_bytes())? else { return Ok(None) };
        let Some(split) = v.iter().position(|b| *b == 0) else { return Ok(None) };
        let campaign = String::from_utf8_lossy(&v[..split]).into_owned();
        let idx = v.get(split + 1..split + 5).and_then(|b| <[u8; 4]>::try_from(b).ok()).map(u32::from_be_bytes);
        Ok(idx.map(|idx| (campaign, idx)))
    }

    /// Sends a session started on `day` (`YYYY-MM-DD` in the pacing zone).
    pub fn sent_on(&self, session: &str, day: &str) -> Result<u32, StoreError> {
        Ok(self
            .kv
            .get(Tree::Daily, &daily_key(session, day))?
            .and_then(|v| <[u8; 4]>::try_from(v.as_slice()).ok())
            .map_or(0, u32::from_be_bytes))
    }

    /// Counts one more send on `day`; returns the new count. Not flushed:
    /// the campaign's flushed `SENDING` write that must follow carries it.
    pub fn count_send(&self, session: &str, day: &str) -> Result<u32, StoreError> {
        self.write(|kv| kv.increment(Tree::Daily, &daily_key(session, day)))
    }

    /// A session's sends on `day`: all, and first contacts.
    pub fn day_count(&self, session: &str, day: &str) -> Result<DayCount, StoreError> {
        Ok(DayCount { sent: self.sent_on(session, day)?, first_contacts: self.sent_on(session, &first_contacts_day(day))? })
    }

    /// Counts a campaign send on `day` (and a first contact, if it is one)
    /// and stores the number's pacing state, then flushes: all of it must
    /// be on disk before the send.
    pub fn count_number_send(&self, session: &str, day: &str, number: &NumberRecord, first_contact: bool) -> Result<(), StoreError> {
        self.store_unstored_opt_outs()?;
        self.count_send(session, day)?;
        if first_contact {
            self.count_send(session, &first_contacts_day(day))?;
        }
        self.put_number(session, number, false)?;
        self.flush()
    }

    /// A session's stored pacing state (the default before its first send).
    pub fn number(&self, session: &str) -> Result<NumberRecord, StoreError> {
        Ok(self.record(Tree::Numbers, session.as_bytes())?.unwrap_or_default())
    }

    /// Stores a session's pacing state (flushed if `flush`).
    pub fn put_number(&self, session: &str, number: &NumberRecord, flush: bool) -> Result<(), StoreError> {
        let value = serde_json::to_vec(number)?;
        self.write(|kv| kv.insert(Tree::Numbers, session.as_bytes(), &value))?;
        if flush {
            self.flush()?;
        }
        Ok(())
    }

    /// The session's opt-out entry for `phone` (E.164 digits, no `+`).
    pub fn opt_out(&self, session: &str, phone: &str) -> Result<Option<OptOut>, StoreError> {
        let key = contact_key(session, phone);
        if let Some(e) = self.unstored_opt_outs.lock().map_err(|_| StoreError::Closed)?.get(&key) {
            return Ok(Some(e.clone()));
        }
        self.record(Tree::OptOuts, &key)
    }

    /// The session's opt-out list, by phone.
    pub fn opt_outs(&self, session: &str) -> Result<Vec<OptOut>, StoreError> {
        let mut all: BTreeMap<Vec<u8>, OptOut> = BTreeMap::new();
        for (k, v) in self.kv.scan(Tree::OptOuts, &prefix(session), None)? {
            all.insert(k, serde_json::from_slice(&v)?);
        }
        let unstored = self.unstored_opt_outs.lock().map_err(|_| StoreError::Closed)?;
        for (k, e) in unstored.range(prefix(session)..).take_while(|(k, _)| k.starts_with(&prefix(session))) {
            all.entry(k.clone()).or_insert_with(|| e.clone());
        }
        Ok(all.into_values().collect())
    }

    /// Adds entries to the session's opt-out list, flushed (an entry that
    /// is already there keeps its first time and source). Returns how many
    /// were new. If the store does not take them, they are kept in memory
    /// (checked by [`Store::opt_out`] all the same) and written later; the
    /// error is returned.
    pub fn add_opt_outs(&self, session: &str, entries: &[OptOut]) -> Result<usize, StoreError> {
        let mut added = 0;
        {
            let mut unstored = self.unstored_opt_outs.lock().map_err(|_| StoreError::Closed)?;
            for e in entries {
                let key = contact_key(session, &e.phone);
                // A failed read counts as absent (harmless: the entry is
                // kept and written, at worst replacing a stored entry's
                // time and source; the phone stays opted out either way).
                let stored = self.kv.get(Tree::OptOuts, &key).ok().flatten().is_some();
                if !stored && !unstored.contains_key(&key) {
                    unstored.insert(key, e.clone());
                    added += 1;
                }
            }
        }
        self.store_unstored_opt_outs()?;
        Ok(added)
    }

    /// Writes the opt-outs kept in memory (see [`Store::add_opt_outs`]),
    /// flushed; they leave memory once on disk.
    fn store_unstored_opt_outs(&self) -> Result<(), StoreError> {
        let pending: Vec<(Vec<u8>, OptOut)> =
            self.unstored_opt_outs.lock().map_err(|_| StoreError::Closed)?.iter().map(|(k, e)| (k.clone(), e.clone())).collect();
        if pending.is_empty() {
            return Ok(());
        }
        for chunk in pending.chunks(1000) {
            let entries = chunk.iter().map(|(k, e)| Ok((k.clone(), serde_json::to_vec(e)?))).collect::<Result<Vec<_>, StoreError>>()?;
            self.write(|kv| kv.insert_all(Tree::OptOuts, &entries))?;
        }
        self.flush()?;
        let mut unstored = self.unstored_opt_outs.lock().map_err(|_| StoreError::Closed)?;
        for (k, _) in &pending {
            unstored.remove(k);
        }
        Ok(())
    }

    /// Removes `phone` from the session's opt-out list, flushed; `false`
    /// if it was not on it.
    pub fn remove_opt_out(&self, session: &str, phone: &str) -> Result<bool, StoreError> {
        let key = contact_key(session, phone);
        let had = self.write(|kv| kv.remove(Tree::OptOuts, &key))?;
        self.flush()?;
        // Only once the removal is on disk: a failed one leaves it listed.
        let was_unstored = self.unstored_opt_outs.lock().map_err(|_| StoreError::Closed)?.remove(&key).is_some();
        Ok(had.is_some() || was_unstored)
    }

    /// Notes that `phone` wrote to the session's account at `at_ms` (the
    /// first time is kept). Not flushed: losing it only counts a later send
    /// as a first contact, which is stricter.
    pub fn note_contact(&self, session: &str, phone: &str, at_ms: u64) -> Result<(), StoreError> {
        self.write(|kv| kv.insert_new(Tree::Contacts, &contact_key(session, phone), &at_ms.to_be_bytes()).map(drop))
    }

    /// Whether `phone` ever wrote to the session's account.
    pub fn has_written(&self, session: &str, phone: &str) -> Result<bool, StoreError> {
        Ok(self.kv.get(Tree::Contacts, &contact_key(session, phone))?.is_some())
    }

    /// The data's size on disk, bytes.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.kv.size_on_disk()
    }
}

/// Webhook deliveries: the outbox and the dead letters (`crate::webhooks`).
/// Keys are delivery ids; a delivery is in at most one of the two trees
/// (moves between them are transactions).
impl Store {
    /// Stores new deliveries in one batch and flushes: once this returns
    /// `Ok` they survive a crash.
    pub fn put_deliveries(&self, deliveries: &[Delivery]) -> Result<(), StoreError> {
        let entries =
            deliveries.iter().map(|d| Ok((d.id.as_bytes().to_vec(), serde_json::to_vec(d)?))).collect::<Result<Vec<_>, StoreError>>()?;
        self.write(|kv| kv.insert_all(Tree::Outbox, &entries))?;
        self.flush()
    }

    /// Updates a delivery in the outbox after a failed attempt (not
    /// flushed: losing it to a crash only means an earlier retry).
    pub fn put_delivery(&self, d: &Delivery) -> Result<(), StoreError> {
        let value = serde_json::to_vec(d)?;
        self.write(|kv| kv.insert(Tree::Outbox, d.id.as_bytes(), &value))
    }

    /// One delivery of the outbox.
    pub fn delivery(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
        self.record(Tree::Outbox, id.as_bytes())
    }

    /// Removes a delivered delivery from the outbox (not flushed: losing it
    /// to a crash only means one more delivery of the same id).
    pub fn remove_delivery(&self, id: &str) -> Result<(), StoreError> {
        self.write(|kv| kv.remove(Tree::Outbox, id.as_bytes()).map(drop))
    }

    /// Every delivery of the outbox, oldest id first (at start).
    pub fn deliveries(&self) -> Result<Vec<Delivery>, StoreError> {
        self.records(Tree::Outbox, b"", None)
    }

    /// Moves `d` (its final attempt recorded) from the outbox to the dead
    /// letters, in one transaction, and flushes.
    pub fn dead_letter(&self, d: &Delivery) -> Result<(), StoreError> {
        let value = serde_json::to_vec(d)?;
        self.write(|kv| kv.move_entry(Tree::Outbox, Tree::DeadLetters, d.id.as_bytes(), &|_| Ok(value.clone())))?;
        self.flush()
    }

    /// Dead letters, oldest id first, at most `limit`.
    pub fn dead_letters(&self, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        self.records(Tree::DeadLetters, b"", Some(limit))
    }

    /// One dead letter.
    pub fn dead_letter_entry(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
        self.record(Tree::DeadLetters, id.as_bytes())
    }

    /// How many dead letters there are (a scan: at start only).
    pub fn dead_letter_count(&self) -> Result<u64, StoreError> {
        self.kv.len(Tree::DeadLetters)
    }

    /// Moves dead letter `id` back to the outbox as `revive` makes it (due
    /// now, attempts from 0), in one transaction, and flushes. `None` when
    /// there is no such dead letter (then nothing changed).
    pub fn replay_dead_letter(&self, id: &str, revive: impl Fn(Delivery) -> Delivery) -> Result<Option<Delivery>, StoreError> {
        let rewrite = |old: &[u8]| -> Result<Vec<u8>, StoreError> {
            let d: Delivery = serde_json::from_slice(old)?;
            Ok(serde_json::to_vec(&revive(d))?)
        };
        let moved = self.write(|kv| kv.move_entry(Tree::DeadLetters, Tree::Outbox, id.as_bytes(), &rewrite))?;
        let Some(v) = moved else { return Ok(None) };
        self.flush()?;
        Ok(Some(serde_json::from_slice(&v)?))
    }

    /// Deletes dead letter `id` and flushes; the deleted one, or `None`.
    pub fn delete_dead_letter(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
        let removed = self.write(|kv| kv.remove(Tree::DeadLetters, id.as_bytes()))?;
        let Some(v) = removed else { return Ok(None) };
        self.flush()?;
        Ok(Some(serde_json::from_slice(&v)?))
    }
}

fn recipient_key(campaign: &str, idx: u32) -> Vec<u8> {
    let mut key = prefix(campaign);
    key.extend_from_slice(&idx.to_be_bytes());
    key
}

/// The `daily` tree's day under which a day's first contacts are counted
/// (beside the day itself, which counts every send).
fn first_contacts_day(day: &str) -> String {
    format!("{day}:first")
}

/// The key of a session's contact: its E.164 digits.
fn contact_key(session: &str, phone: &str) -> Vec<u8> {
    let mut key = prefix(session);
    key.extend_from_slice(phone.trim_start_matches('+').as_bytes());
    key
}

/// One number on a session's opt-out list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OptOut {
    /// E.164 digits without `+` (`"4915199990000"`).
    pub phone: String,
    /// When it was added, Unix epoch ms.
    pub at_ms: u64,
    /// `reply` (the contact wrote an opt-out keyword), `api` or `import`.
    pub source: String,
}

fn daily_key(session: &str, day: &str) -> Vec<u8> {
    let mut key = prefix(session);
    key.extend_from_slice(day.as_bytes());
    key
}

/// `name` and a `0x00`: the key prefix of everything stored under a
/// session or a campaign.
fn prefix(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 1 + 16);
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> SessionRecord {
        SessionRecord {
            name: name.into(),
            desired: Desired::Running,
            state: SessionState::Stopped,
            reason: None,
            since_ms: 1,
            me: None,
            created_ms: 1,
        }
    }

    /// Runs `test` on each backend with a function that opens a store over
    /// the same data (again): sled in a temp dir, and PostgreSQL in a
    /// throwaway server where its binaries exist (required when
    /// `WASUP_REQUIRE_POSTGRES=1`, as `scripts/test` sets).
    fn each_backend(test: impl Fn(&dyn Fn() -> Store)) {
        let dir = tempfile::tempdir().unwrap();
        test(&|| Store::open(dir.path()).unwrap());
        if !crate::pg_harness::TempPostgres::available() {
            assert!(std::env::var_os("WASUP_REQUIRE_POSTGRES").is_none(), "WASUP_REQUIRE_POSTGRES is set but PostgreSQL is not installed");
            eprintln!("SKIPPED: no PostgreSQL here; the store test ran on sled only");
            return;
        }
        let pg = crate::pg_harness::TempPostgres::start().unwrap();
        let url = pg.url();
        test(&|| Store::postgres(&url, std::time::Duration::from_secs(10), "test-node", std::time::Duration::from_secs(15)).unwrap());
    }

    #[test]
    fn a_write_without_its_lease_is_refused_and_reported_with_no_generation() {
        let dir = tempfile::tempdir().unwrap();
        let (fences, mut lost) = Fences::new("node-a");
        let store = Store::open(dir.path()).unwrap().fenced(fences.clone());
        assert!(matches!(store.put_session_owned(&record("acme")), Err(StoreError::Fenced(_))));
        assert_eq!(lost.try_recv().ok(), Some(LostLease { session: "acme".into(), generation: None }));
        assert!(store.session("acme").unwrap().is_none(), "nothing written");
        fences.set("acme", Some(3));
        store.put_session_owned(&record("acme")).unwrap();
        assert!(lost.try_recv().is_err(), "a held lease's write reports nothing");
    }

    #[test]
    fn sessions_and_history_survive_reopening() {
        each_backend(|open| {
            {
                let store = open();
                assert!(store.create_session(&record("acme")).unwrap());
                assert!(!store.create_session(&record("acme")).unwrap(), "second create must fail");
                assert!(store.create_session(&record("acme-2")).unwrap());
                for (i, state) in [SessionState::Starting, SessionState::ScanQr].into_iter().enumerate() {
                    store.append_history("acme", &HistoryEntry::status(state, None, 10 + i as u64)).unwrap();
                }
                store.flush().unwrap();
            }
            let store = open();
            let names: Vec<_> = store.sessions().unwrap().into_iter().map(|r| r.name).collect();
            assert_eq!(names, ["acme", "acme-2"]);
            let states: Vec<_> = store.history("acme").unwrap().into_iter().map(|h| h.state).collect();
            assert_eq!(states, [SessionState::Starting, SessionState::ScanQr]);
            // "acme-2" shares a prefix with "acme" but not its history.
            assert!(store.history("acme-2").unwrap().is_empty());
            store.delete_session("acme").unwrap();
            assert!(store.session("acme").unwrap().is_none());
            assert!(store.history("acme").unwrap().is_empty());
            assert_eq!(store.history("acme-2").unwrap().len(), 0);
            assert!(store.session("acme-2").unwrap().is_some());
        });
    }

    #[test]
    fn campaigns_recipients_and_daily_counts() {
        use crate::campaign::*;
        each_backend(|open| {
            let store = open();
            let rows = rows_from_json(
                &[serde_json::json!({"phone": "+4915112345678"}), serde_json::json!({"phone": "+4915123456789"})],
                &Default::default(),
            )
            .unwrap();
            let (mut rs, _) = recipients(rows, "hi", None, InvalidNumbers::Reject, 0, &Default::default()).unwrap();
            let record = CampaignRecord {
                total: 2,
                ..CampaignRecord::draft(new_id(), "spring".into(), "acme".into(), "hi".into(), PacingSpec::default(), 0)
            };
            store.create_campaign(&record, &rs).unwrap();
            rs[1].message_id = Some("3EB0AAAAAAAAAAAAAAAA".into());
            rs[1].state = RecipientState::Sending;
            store.put_recipient(&record.id, &rs[1], true).unwrap();
            assert_eq!(store.message_owner("3EB0AAAAAAAAAAAAAAAA").unwrap(), Some((record.id.clone(), 1)));
            assert_eq!(store.recipients(&record.id).unwrap()[1].state, RecipientState::Sending);
            assert_eq!(store.recipient(&record.id, 0).unwrap().map(|r| r.idx), Some(0));
            assert_eq!(store.sent_times(&record.id).unwrap(), Vec::<u64>::new());
            rs[1].state = RecipientState::Sent;
            rs[1].sent_at_ms = Some(1_234);
            store.put_recipient(&record.id, &rs[1], true).unwrap();
            assert_eq!(store.sent_times(&record.id).unwrap(), [1_234]);
            assert_eq!(store.campaigns().unwrap().len(), 1);
            assert_eq!(store.sent_on("acme", "2026-01-10").unwrap(), 0);
            assert_eq!(store.count_send("acme", "2026-01-10").unwrap(), 1);
            assert_eq!(store.count_send("acme", "2026-01-10").unwrap(), 2);
            assert_eq!(store.sent_on("acme", "2026-01-10").unwrap(), 2);
            assert_eq!(store.sent_on("acme-2", "2026-01-10").unwrap(), 0);
        });
    }

    #[test]
    fn the_liveness_mark_survives_a_reopen() {
        each_backend(|open| {
            {
                let store = open();
                assert_eq!(store.alive_ms(), None);
                store.mark_alive(41);
                store.mark_alive(42);
                store.flush().unwrap();
            }
            assert_eq!(open().alive_ms(), Some(42));
        });
    }

    #[test]
    fn history_is_trimmed() {
        each_backend(|open| {
            let store = open();
            for i in 0..(HISTORY_KEEP as u64 + 5) {
                store.append_history("a", &HistoryEntry::status(SessionState::Starting, None, i)).unwrap();
            }
            let h = store.history("a").unwrap();
            assert_eq!(h.len(), HISTORY_KEEP);
            assert_eq!(h[0].at_ms, 5);
        });
    }

    #[test]
    fn opt_outs_contacts_and_numbers() {
        each_backend(|open| {
            let store = open();
            let e = |phone: &str| OptOut { phone: phone.into(), at_ms: 7, source: "api".into() };
            assert_eq!(store.add_opt_outs("acme", &[e("4915100000001"), e("4915100000002")]).unwrap(), 2);
            assert_eq!(store.add_opt_outs("acme", &[e("4915100000001")]).unwrap(), 0, "an entry already there is not new");
            assert_eq!(store.opt_outs("acme").unwrap().len(), 2);
            assert!(store.opt_outs("acme-2").unwrap().is_empty());
            assert!(store.opt_out("acme", "+4915100000001").unwrap().is_some());
            assert!(store.remove_opt_out("acme", "4915100000001").unwrap());
            assert!(!store.remove_opt_out("acme", "4915100000001").unwrap());
            assert!(!store.has_written("acme", "4915100000009").unwrap());
            store.note_contact("acme", "4915100000009", 5).unwrap();
            store.note_contact("acme", "4915100000009", 6).unwrap();
            assert!(store.has_written("acme", "4915100000009").unwrap());
            let number = store.number("acme").unwrap();
            store.put_number("acme", &number, true).unwrap();
            store.count_number_send("acme", "2026-01-10", &number, true).unwrap();
            let day = store.day_count("acme", "2026-01-10").unwrap();
            assert_eq!((day.sent, day.first_contacts), (1, 1));
            assert!(store.size_on_disk().unwrap() > 0);
        });
    }

    #[test]
    fn deliveries_move_between_outbox_and_dead_letters() {
        each_backend(|open| {
            let store = open();
            let d = |id: &str| -> Delivery {
                serde_json::from_value(serde_json::json!({
                    "id": id, "hook": "hk_1", "event": "session.status", "body": "{}", "attempts": 0, "first_at_ms": 1, "next_at_ms": 1,
                }))
                .unwrap()
            };
            store.put_deliveries(&[d("dlv_1"), d("dlv_2")]).unwrap();
            assert_eq!(store.deliveries().unwrap().len(), 2);
            store.dead_letter(&d("dlv_1")).unwrap();
            assert!(store.delivery("dlv_1").unwrap().is_none());
            assert_eq!(store.dead_letter_count().unwrap(), 1);
            assert_eq!(store.dead_letters(10).unwrap().len(), 1);
            let revived = store.replay_dead_letter("dlv_1", |mut d| {
                d.attempts = 0;
                d
            });
            assert!(revived.unwrap().is_some());
            assert!(store.replay_dead_letter("dlv_1", |d| d).unwrap().is_none(), "moved already");
            assert_eq!(store.dead_letter_count().unwrap(), 0);
            store.dead_letter(&d("dlv_2")).unwrap();
            assert!(store.delete_dead_letter("dlv_2").unwrap().is_some());
            assert!(store.dead_letter_entry("dlv_2").unwrap().is_none());
            store.remove_delivery("dlv_1").unwrap();
            assert!(store.deliveries().unwrap().is_empty());
        });
    }

    /// A small tmpfs of `size` at a fresh dir, or `None` where mounting is
    /// not allowed (not root, no CAP_SYS_ADMIN).
    pub(crate) struct Tmpfs(tempfile::TempDir);

    impl Tmpfs {
        pub(crate) fn mount(size: &str) -> Option<Self> {
            let dir = tempfile::tempdir().ok()?;
            let ok = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
                .arg(dir.path())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            ok.then_some(Self(dir))
        }
        pub(crate) fn path(&self) -> &Path {
            self.0.path()
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0.path()).status();
        }
    }

    /// Fills the filesystem at `dir` with one file; returns its path.
    fn fill(dir: &Path) -> std::path::PathBuf {
        use std::io::Write as _;
        let path = dir.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
        path
    }

    #[test]
    fn a_full_disk_marks_the_store_failing_and_recover_reopens_it() {
        let Some(fs) = Tmpfs::mount("8m") else {
            eprintln!("SKIPPED: cannot mount a tmpfs here (needs root); the full-disk store test did not run");
            return;
        };
        let store = Store::open(&fs.path().join("db")).unwrap();
        store.put_session(&record("before")).unwrap();
        assert!(store.failure().is_none());
        let filler = fill(fs.path());
        // Write until sled reports the full disk: every write is recorded.
        let mut failed = false;
        for i in 0..10_000 {
            let mut r = record(&format!("s{i}"));
            r.reason = Some("x".repeat(4096));
            if store.put_session(&r).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed, "a full disk must fail a flushed write");
        let failure = store.failure().expect("the store is failing");
        assert!(failure.failures >= 1);
        assert!(store.recover().is_err(), "still full: recover cannot succeed");
        assert!(store.failure().is_some());
        std::fs::remove_file(filler).unwrap();
        store.recover().expect("space freed: the store comes back");
        assert!(store.failure().is_none());
        store.put_session(&record("after")).unwrap();
        let names: Vec<_> = store.sessions().unwrap().into_iter().map(|r| r.name).collect();
        assert!(names.contains(&"before".to_string()) && names.contains(&"after".to_string()), "{names:?}");
    }
}
