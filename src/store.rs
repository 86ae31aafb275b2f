//! The sled store: what must survive a daemon restart.
//!
//! One sled database in `<state.dir>/db`. Trees by purpose, values JSON
//! (serde), keys with a stable layout:
//!
//! | tree | key | value |
//! |---|---|---|
//! | `sessions` | session name (UTF-8) | [`SessionRecord`] |
//! | `history` | name, `0x00`, at_ms (u64 BE), seq (u64 BE) | [`HistoryEntry`] |
//! | `campaigns` | campaign id (`cmp_…`) | [`CampaignRecord`] |
//! | `recipients` | campaign id, `0x00`, idx (u32 BE) | [`RecipientRecord`] |
//! | `messages` | message key id (`3EB0…`) | campaign id, `0x00`, idx (u32 BE) |
//! | `daily` | session name, `0x00`, `YYYY-MM-DD` | sends started that day (u32 BE) |
//!
//! Durability: sled syncs on its own every 500 ms, so a process crash loses
//! nothing written before it; power loss may lose the last window. Writes that
//! a later decision depends on (the desired state of a session, a recipient
//! going `SENDING` before its send, `SENT` after it) are flushed before the
//! call returns.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::campaign::{CampaignRecord, RecipientRecord};
use crate::session_state::{Me, SessionState};

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
}

/// Handle to the database; cheap to clone (sled's handles are shared).
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    sessions: sled::Tree,
    history: sled::Tree,
    campaigns: sled::Tree,
    recipients: sled::Tree,
    messages: sled::Tree,
    daily: sled::Tree,
}

/// How many history entries are kept per session; older ones are dropped.
pub const HISTORY_KEEP: usize = 1000;

impl Store {
    /// Opens (or creates) the database at `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new().path(dir).open()?;
        Ok(Self {
            sessions: db.open_tree("sessions")?,
            history: db.open_tree("history")?,
            campaigns: db.open_tree("campaigns")?,
            recipients: db.open_tree("recipients")?,
            messages: db.open_tree("messages")?,
            daily: db.open_tree("daily")?,
            db,
        })
    }

    /// Writes everything buffered to disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// All sessions, ordered by name.
    pub fn sessions(&self) -> Result<Vec<SessionRecord>, StoreError> {
        self.sessions
            .iter()
            .values()
            .map(|v| Ok(serde_json::from_slice(&v?)?))
            .collect()
    }

    pub fn session(&self, name: &str) -> Result<Option<SessionRecord>, StoreError> {
        match self.sessions.get(name.as_bytes())? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    /// Inserts or replaces a session record and flushes.
    pub fn put_session(&self, record: &SessionRecord) -> Result<(), StoreError> {
        self.sessions.insert(record.name.as_bytes(), serde_json::to_vec(record)?)?;
        self.flush()
    }

    /// Inserts `record` only if no session of that name exists.
    /// Returns false (and writes nothing) if it does.
    pub fn create_session(&self, record: &SessionRecord) -> Result<bool, StoreError> {
        let value = serde_json::to_vec(record)?;
        let created = self
            .sessions
            .compare_and_swap(record.name.as_bytes(), None as Option<&[u8]>, Some(value))?
            .is_ok();
        if created {
            self.flush()?;
        }
        Ok(created)
    }

    /// Removes a session and its history.
    pub fn delete_session(&self, name: &str) -> Result<(), StoreError> {
        self.sessions.remove(name.as_bytes())?;
        for key in self.history.scan_prefix(prefix(name)).keys() {
            self.history.remove(key?)?;
        }
        self.flush()
    }

    /// Appends a status change to the session's history (not flushed: the
    /// history is a record, no decision depends on it; sled syncs it within
    /// 500 ms) and trims it to [`HISTORY_KEEP`] entries.
    pub fn append_history(&self, name: &str, entry: &HistoryEntry) -> Result<(), StoreError> {
        let mut key = prefix(name);
        key.extend_from_slice(&entry.at_ms.to_be_bytes());
        key.extend_from_slice(&self.db.generate_id()?.to_be_bytes());
        self.history.insert(key, serde_json::to_vec(entry)?)?;
        let len = self.history.scan_prefix(prefix(name)).count();
        if len > HISTORY_KEEP {
            for key in self.history.scan_prefix(prefix(name)).keys().take(len - HISTORY_KEEP) {
                self.history.remove(key?)?;
            }
        }
        Ok(())
    }

    /// The session's history, oldest first.
    pub fn history(&self, name: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        self.history
            .scan_prefix(prefix(name))
            .values()
            .map(|v| Ok(serde_json::from_slice(&v?)?))
            .collect()
    }
}

impl Store {
    /// Stores a new campaign: its recipients first, then the record, then
    /// a flush (a crash in between leaves recipients no campaign points to,
    /// never a campaign with missing recipients).
    pub fn create_campaign(&self, record: &CampaignRecord, recipients: &[RecipientRecord]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for r in recipients {
            batch.insert(recipient_key(&record.id, r.idx), serde_json::to_vec(r)?);
        }
        self.recipients.apply_batch(batch)?;
        self.campaigns.insert(record.id.as_bytes(), serde_json::to_vec(record)?)?;
        self.flush()
    }

    pub fn put_campaign(&self, record: &CampaignRecord) -> Result<(), StoreError> {
        self.put_campaign_unflushed(record)?;
        self.flush()
    }

    /// Writes a campaign record without a flush (bookkeeping such as the
    /// next send time, which no decision after a crash depends on).
    pub fn put_campaign_unflushed(&self, record: &CampaignRecord) -> Result<(), StoreError> {
        self.campaigns.insert(record.id.as_bytes(), serde_json::to_vec(record)?)?;
        Ok(())
    }

    pub fn campaign(&self, id: &str) -> Result<Option<CampaignRecord>, StoreError> {
        match self.campaigns.get(id.as_bytes())? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    /// All campaigns, ordered by id.
    pub fn campaigns(&self) -> Result<Vec<CampaignRecord>, StoreError> {
        self.campaigns.iter().values().map(|v| Ok(serde_json::from_slice(&v?)?)).collect()
    }

    /// Writes a recipient; `flush` when a decision depends on it (SENDING
    /// before a send, SENT after).
    pub fn put_recipient(&self, campaign: &str, r: &RecipientRecord, flush: bool) -> Result<(), StoreError> {
        self.recipients.insert(recipient_key(campaign, r.idx), serde_json::to_vec(r)?)?;
        if let Some(id) = &r.message_id {
            self.messages.insert(id.as_bytes(), recipient_key(campaign, r.idx))?;
        }
        if flush {
            self.flush()?;
        }
        Ok(())
    }

    /// A campaign's recipients, in order.
    pub fn recipients(&self, campaign: &str) -> Result<Vec<RecipientRecord>, StoreError> {
        self.recipients
            .scan_prefix(prefix(campaign))
            .values()
            .map(|v| Ok(serde_json::from_slice(&v?)?))
            .collect()
    }

    pub fn recipient(&self, campaign: &str, idx: u32) -> Result<Option<RecipientRecord>, StoreError> {
        match self.recipients.get(recipient_key(campaign, idx))? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    /// Which campaign and recipient a message id belongs to.
    pub fn message_owner(&self, message_id: &str) -> Result<Option<(String, u32)>, StoreError> {
        let Some(v) = self.messages.get(message_id.as_bytes())? else { return Ok(None) };
        let Some(split) = v.iter().position(|b| *b == 0) else { return Ok(None) };
        let campaign = String::from_utf8_lossy(&v[..split]).into_owned();
        let idx = v.get(split + 1..split + 5).and_then(|b| <[u8; 4]>::try_from(b).ok()).map(u32::from_be_bytes);
        Ok(idx.map(|idx| (campaign, idx)))
    }

    /// Sends a session started on `day` (`YYYY-MM-DD` in the pacing zone).
    pub fn sent_on(&self, session: &str, day: &str) -> Result<u32, StoreError> {
        Ok(self.daily.get(daily_key(session, day))?.and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok()).map_or(0, u32::from_be_bytes))
    }

    /// Counts one more send on `day`; returns the new count.
    pub fn count_send(&self, session: &str, day: &str) -> Result<u32, StoreError> {
        let v = self.daily.update_and_fetch(daily_key(session, day), |old| {
            let n = old.and_then(|v| <[u8; 4]>::try_from(v).ok()).map_or(0, u32::from_be_bytes);
            Some(n.saturating_add(1).to_be_bytes().to_vec())
        })?;
        Ok(v.and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok()).map_or(0, u32::from_be_bytes))
    }

    /// The database's size on disk, bytes.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }
}

fn recipient_key(campaign: &str, idx: u32) -> Vec<u8> {
    let mut key = prefix(campaign);
    key.extend_from_slice(&idx.to_be_bytes());
    key
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

    #[test]
    fn sessions_and_history_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            assert!(store.create_session(&record("acme")).unwrap());
            assert!(!store.create_session(&record("acme")).unwrap(), "second create must fail");
            assert!(store.create_session(&record("acme-2")).unwrap());
            for (i, state) in [SessionState::Starting, SessionState::ScanQr].into_iter().enumerate() {
                store.append_history("acme", &HistoryEntry::status(state, None, 10 + i as u64)).unwrap();
            }
            store.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let names: Vec<_> = store.sessions().unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["acme", "acme-2"]);
        let states: Vec<_> = store.history("acme").unwrap().into_iter().map(|h| h.state).collect();
        assert_eq!(states, [SessionState::Starting, SessionState::ScanQr]);
        // "acme-2" shares a prefix with "acme" but not its history.
        assert!(store.history("acme-2").unwrap().is_empty());
        store.delete_session("acme").unwrap();
        assert!(store.session("acme").unwrap().is_none());
        assert!(store.history("acme").unwrap().is_empty());
    }

    #[test]
    fn campaigns_recipients_and_daily_counts() {
        use crate::campaign::*;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let rows = rows_from_json(&[serde_json::json!({"phone": "+4915112345678"}), serde_json::json!({"phone": "+4915123456789"})]).unwrap();
        let (mut rs, _) = recipients(rows, "hi", None, InvalidNumbers::Reject, 0).unwrap();
        let record = CampaignRecord {
            id: new_id(),
            name: "spring".into(),
            session: "acme".into(),
            template: "hi".into(),
            pacing: PacingSpec::default(),
            state: CampaignState::Draft,
            reason: None,
            created_ms: 0,
            updated_ms: 0,
            waiting_since_ms: None,
            resume_at_ms: None,
            last_send_ms: None,
            next_send_ms: None,
            total: 2,
            duplicates: 0,
        };
        store.create_campaign(&record, &rs).unwrap();
        rs[1].message_id = Some("3EB0AAAAAAAAAAAAAAAA".into());
        rs[1].state = RecipientState::Sending;
        store.put_recipient(&record.id, &rs[1], true).unwrap();
        assert_eq!(store.message_owner("3EB0AAAAAAAAAAAAAAAA").unwrap(), Some((record.id.clone(), 1)));
        assert_eq!(store.recipients(&record.id).unwrap()[1].state, RecipientState::Sending);
        assert_eq!(store.campaigns().unwrap().len(), 1);
        assert_eq!(store.sent_on("acme", "2026-01-10").unwrap(), 0);
        assert_eq!(store.count_send("acme", "2026-01-10").unwrap(), 1);
        assert_eq!(store.count_send("acme", "2026-01-10").unwrap(), 2);
        assert_eq!(store.sent_on("acme", "2026-01-10").unwrap(), 2);
        assert_eq!(store.sent_on("acme-2", "2026-01-10").unwrap(), 0);
    }

    #[test]
    fn history_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for i in 0..(HISTORY_KEEP as u64 + 5) {
            store.append_history("a", &HistoryEntry::status(SessionState::Starting, None, i)).unwrap();
        }
        let h = store.history("a").unwrap();
        assert_eq!(h.len(), HISTORY_KEEP);
        assert_eq!(h[0].at_ms, 5);
    }
}
