//! The interface a store backend implements: ordered maps of bytes, one per
//! [`Tree`], with the few compound operations the [`super::Store`] needs.
//!
//! [`super::Store`] owns the records, their keys and their meaning; a
//! backend only keeps bytes. Two backends implement it: sled
//! ([`super::sled_kv::SledKv`], one machine) and PostgreSQL
//! ([`super::postgres::PgKv`], several machines sharing one database).

use super::StoreError;

/// The maps the store keeps, by purpose (see the table in [`super`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tree {
    Sessions,
    History,
    Campaigns,
    Recipients,
    Messages,
    Daily,
    Numbers,
    OptOuts,
    Contacts,
    Outbox,
    DeadLetters,
    /// The daemon's own keys (`alive`).
    Meta,
}

impl Tree {
    /// Every tree, in a fixed order.
    pub const ALL: [Tree; 12] = [
        Tree::Sessions,
        Tree::History,
        Tree::Campaigns,
        Tree::Recipients,
        Tree::Messages,
        Tree::Daily,
        Tree::Numbers,
        Tree::OptOuts,
        Tree::Contacts,
        Tree::Outbox,
        Tree::DeadLetters,
        Tree::Meta,
    ];

    /// The tree's name: sled's tree name and PostgreSQL's `kv.tree` value.
    pub fn name(self) -> &'static str {
        match self {
            Tree::Sessions => "sessions",
            Tree::History => "history",
            Tree::Campaigns => "campaigns",
            Tree::Recipients => "recipients",
            Tree::Messages => "messages",
            Tree::Daily => "daily",
            Tree::Numbers => "numbers",
            Tree::OptOuts => "opt_outs",
            Tree::Contacts => "contacts",
            Tree::Outbox => "outbox",
            Tree::DeadLetters => "dead_letters",
            Tree::Meta => "meta",
        }
    }
}

/// How [`Kv::move_entry`] makes the new value from the old.
pub type Rewrite<'a> = dyn Fn(&[u8]) -> Result<Vec<u8>, StoreError> + 'a;

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// What a backend does. Keys order bytewise; scans return entries in key
/// order. "Durable" means on disk (sled: after [`Kv::flush`]; PostgreSQL:
/// every statement commits before it returns, so `flush` only proves the
/// database answers). Every method may fail with the backend's error; none
/// may panic on it.
/// A session's lease as this node holds it: a write that belongs to the
/// session carries it ([`Kv::insert_fenced`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub session: String,
    pub node: String,
    /// The lease's generation (`leases.generation`).
    pub generation: i64,
}

pub trait Kv: Send + Sync {
    /// The value at `key`.
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Entries whose key starts with `prefix`, in key order, at most `limit`.
    fn scan(&self, tree: Tree, prefix: &[u8], limit: Option<usize>) -> Result<Vec<Entry>, StoreError>;
    /// How many entries the tree holds.
    fn len(&self, tree: Tree) -> Result<u64, StoreError>;
    /// Inserts or replaces.
    fn insert(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    /// Inserts or replaces `key` only while `fence` (a session's lease)
    /// is still held. Errors: [`StoreError::Fenced`] when it is not, and
    /// nothing is written. A backend without leases (sled: one node)
    /// writes unconditionally.
    fn insert_fenced(&self, tree: Tree, key: &[u8], value: &[u8], fence: &Fence) -> Result<(), StoreError> {
        let _ = fence;
        self.insert(tree, key, value)
    }
    /// Inserts only if `key` is absent; `false` (nothing written) if present.
    fn insert_new(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<bool, StoreError>;
    /// Inserts or replaces every entry, all or none.
    fn insert_all(&self, tree: Tree, entries: &[Entry]) -> Result<(), StoreError>;
    /// Removes `key`; its old value.
    fn remove(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Removes every key that starts with `prefix`.
    fn remove_prefix(&self, tree: Tree, prefix: &[u8]) -> Result<(), StoreError>;
    /// Removes the oldest (lowest) keys under `prefix` past the newest `keep`.
    fn trim_prefix(&self, tree: Tree, prefix: &[u8], keep: usize) -> Result<(), StoreError>;
    /// Adds one to the big-endian u32 at `key` (absent: 0); the new count.
    fn increment(&self, tree: Tree, key: &[u8]) -> Result<u32, StoreError>;
    /// Moves `key` from `from` to `to` in one transaction, the value
    /// rewritten by `rewrite`; the new value, or `None` (nothing changed)
    /// when `from` has no such key.
    fn move_entry(&self, from: Tree, to: Tree, key: &[u8], rewrite: &Rewrite<'_>) -> Result<Option<Vec<u8>>, StoreError>;
    /// A number never handed out before by this database (increasing).
    fn next_id(&self) -> Result<u64, StoreError>;
    /// Makes every write so far durable.
    fn flush(&self) -> Result<(), StoreError>;
    /// A small durable write: proves the backend takes writes.
    fn probe(&self) -> Result<(), StoreError>;
    /// Clears a failure the backend keeps (sled keeps an I/O error until the
    /// database is reopened); `Ok` when there is nothing to clear.
    fn reopen(&self) -> Result<(), StoreError>;
    /// The space the data takes, bytes.
    fn size_on_disk(&self) -> Result<u64, StoreError>;
}
