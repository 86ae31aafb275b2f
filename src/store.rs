//! The sled store: what must survive a daemon restart.
//!
//! One sled database in `<state.dir>/db`. Trees by purpose, values JSON
//! (serde), keys with a stable layout:
//!
//! | tree | key | value |
//! |---|---|---|
//! | `sessions` | session name (UTF-8) | [`SessionRecord`] |
//! | `history` | name, `0x00`, at_ms (u64 BE), seq (u64 BE) | [`HistoryEntry`] |
//!
//! Durability: sled syncs on its own every 500 ms, so a process crash loses
//! nothing written before it; power loss may lose the last window. Writes that
//! a later decision depends on (the desired state of a session) are flushed
//! before the call returns.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::session_state::{Me, SessionState};

/// Whether an operator wants the session to run; survives restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
        for key in self.history.scan_prefix(history_prefix(name)).keys() {
            self.history.remove(key?)?;
        }
        self.flush()
    }

    /// Appends a status change to the session's history (not flushed: the
    /// history is a record, no decision depends on it; sled syncs it within
    /// 500 ms) and trims it to [`HISTORY_KEEP`] entries.
    pub fn append_history(&self, name: &str, entry: &HistoryEntry) -> Result<(), StoreError> {
        let mut key = history_prefix(name);
        key.extend_from_slice(&entry.at_ms.to_be_bytes());
        key.extend_from_slice(&self.db.generate_id()?.to_be_bytes());
        self.history.insert(key, serde_json::to_vec(entry)?)?;
        let len = self.history.scan_prefix(history_prefix(name)).count();
        if len > HISTORY_KEEP {
            for key in self.history.scan_prefix(history_prefix(name)).keys().take(len - HISTORY_KEEP) {
                self.history.remove(key?)?;
            }
        }
        Ok(())
    }

    /// The session's history, oldest first.
    pub fn history(&self, name: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        self.history
            .scan_prefix(history_prefix(name))
            .values()
            .map(|v| Ok(serde_json::from_slice(&v?)?))
            .collect()
    }
}

fn history_prefix(name: &str) -> Vec<u8> {
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
