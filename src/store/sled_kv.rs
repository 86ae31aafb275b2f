//! The sled backend: one sled database in a directory, one sled tree per
//! [`Tree`]. The embedded default for one machine.
//!
//! Durability: sled syncs on its own every 500 ms, so a process crash loses
//! nothing written before it; power loss may lose the last window.
//! [`Kv::flush`] forces it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::kv::{Entry, Kv, Rewrite, Tree};
use super::StoreError;

/// The sled handles of one open database.
struct Trees {
    db: sled::Db,
    trees: HashMap<Tree, sled::Tree>,
}

impl Trees {
    fn open(dir: &Path, cache_capacity: u64) -> Result<Self, StoreError> {
        let db = sled::Config::new().path(dir).cache_capacity(cache_capacity).open()?;
        private_files(dir);
        let mut trees = HashMap::new();
        for tree in Tree::ALL {
            trees.insert(tree, db.open_tree(tree.name())?);
        }
        Ok(Self { db, trees })
    }

    fn tree(&self, tree: Tree) -> Result<&sled::Tree, StoreError> {
        // Every tree is opened with the database; a missing one is a bug,
        // reported as a closed store rather than a panic.
        self.trees.get(&tree).ok_or(StoreError::Closed)
    }
}

/// Makes the database's files 0600 and its directories 0700 (stores made
/// before the daemon set its umask, or copied in, may be wider). Harmless
/// when it fails: the umask (0077) already covers every file the daemon
/// creates; this only narrows older ones.
fn private_files(dir: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            private_files(&entry.path());
        } else {
            let _ = std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o600));
        }
    }
}

/// A sled database at a directory; reopened in place by [`Kv::reopen`].
pub struct SledKv {
    dir: PathBuf,
    cache_capacity: u64,
    trees: RwLock<Option<Arc<Trees>>>,
}

impl SledKv {
    /// Opens (or creates) the database at `dir` with a page cache of
    /// `cache_capacity` bytes.
    ///
    /// Errors: sled cannot open it (another process holds its lock, the
    /// directory is not writable, the files are corrupt).
    pub fn open(dir: &Path, cache_capacity: u64) -> Result<Self, StoreError> {
        let trees = Trees::open(dir, cache_capacity)?;
        Ok(Self { dir: dir.to_path_buf(), cache_capacity, trees: RwLock::new(Some(Arc::new(trees))) })
    }

    fn t(&self) -> Result<Arc<Trees>, StoreError> {
        self.trees.read().map_err(|_| StoreError::Closed)?.clone().ok_or(StoreError::Closed)
    }
}

impl Kv for SledKv {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.t()?.tree(tree)?.get(key)?.map(|v| v.to_vec()))
    }

    fn scan(&self, tree: Tree, prefix: &[u8], limit: Option<usize>) -> Result<Vec<Entry>, StoreError> {
        let t = self.t()?;
        let iter = t.tree(tree)?.scan_prefix(prefix).map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(StoreError::from));
        match limit {
            Some(n) => iter.take(n).collect(),
            None => iter.collect(),
        }
    }

    fn len(&self, tree: Tree) -> Result<u64, StoreError> {
        Ok(self.t()?.tree(tree)?.len() as u64)
    }

    fn insert(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.t()?.tree(tree)?.insert(key, value)?;
        Ok(())
    }

    fn insert_new(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<bool, StoreError> {
        Ok(self.t()?.tree(tree)?.compare_and_swap(key, None as Option<&[u8]>, Some(value))?.is_ok())
    }

    fn insert_all(&self, tree: Tree, entries: &[Entry]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (k, v) in entries {
            batch.insert(k.as_slice(), v.as_slice());
        }
        self.t()?.tree(tree)?.apply_batch(batch)?;
        Ok(())
    }

    fn remove(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.t()?.tree(tree)?.remove(key)?.map(|v| v.to_vec()))
    }

    fn remove_prefix(&self, tree: Tree, prefix: &[u8]) -> Result<(), StoreError> {
        let t = self.t()?;
        let tree = t.tree(tree)?;
        for key in tree.scan_prefix(prefix).keys() {
            tree.remove(key?)?;
        }
        Ok(())
    }

    fn trim_prefix(&self, tree: Tree, prefix: &[u8], keep: usize) -> Result<(), StoreError> {
        let t = self.t()?;
        let tree = t.tree(tree)?;
        let len = tree.scan_prefix(prefix).count();
        if len > keep {
            for key in tree.scan_prefix(prefix).keys().take(len - keep) {
                tree.remove(key?)?;
            }
        }
        Ok(())
    }

    fn increment(&self, tree: Tree, key: &[u8]) -> Result<u32, StoreError> {
        let v = self.t()?.tree(tree)?.update_and_fetch(key, |old| {
            let n = old.and_then(|v| <[u8; 4]>::try_from(v).ok()).map_or(0, u32::from_be_bytes);
            Some(n.saturating_add(1).to_be_bytes().to_vec())
        })?;
        Ok(v.and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok()).map_or(0, u32::from_be_bytes))
    }

    fn move_entry(&self, from: Tree, to: Tree, key: &[u8], rewrite: &Rewrite<'_>) -> Result<Option<Vec<u8>>, StoreError> {
        use sled::transaction::{ConflictableTransactionError, TransactionError};
        use sled::Transactional as _;
        let t = self.t()?;
        (t.tree(from)?, t.tree(to)?)
            .transaction(|(from, to)| {
                let Some(old) = from.remove(key)? else { return Ok(None) };
                let new = rewrite(&old).map_err(ConflictableTransactionError::Abort)?;
                to.insert(key, new.as_slice())?;
                Ok(Some(new))
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => StoreError::Sled(e),
                TransactionError::Abort(e) => e,
            })
    }

    fn next_id(&self) -> Result<u64, StoreError> {
        Ok(self.t()?.db.generate_id()?)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.t()?.db.flush()?;
        Ok(())
    }

    fn probe(&self) -> Result<(), StoreError> {
        self.t()?.db.insert(b"probe", &crate::session_state::now_ms().to_be_bytes())?;
        self.flush()
    }

    /// Closes the database and opens it again (sled keeps an I/O error, a
    /// full disk say, until then). Blocks while sled replays its log.
    ///
    /// Errors: a handle is still in use after 5 s (the next call tries
    /// again), or the database cannot be opened.
    fn reopen(&self) -> Result<(), StoreError> {
        let old = self.trees.write().map_err(|_| StoreError::Closed)?.take();
        if let Some(mut old) = old {
            // Wait for writes under way on the old handles to end; sled's
            // file lock is only released once every handle is dropped.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match Arc::try_unwrap(old) {
                    Ok(trees) => {
                        drop(trees);
                        break;
                    }
                    Err(shared) if Instant::now() < deadline => {
                        old = shared;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(shared) => {
                        // Put it back: reopening now would fail on the lock.
                        *self.trees.write().map_err(|_| StoreError::Closed)? = Some(shared);
                        return Err(StoreError::Closed);
                    }
                }
            }
        }
        let trees = Trees::open(&self.dir, self.cache_capacity)?;
        *self.trees.write().map_err(|_| StoreError::Closed)? = Some(Arc::new(trees));
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.t()?.db.size_on_disk()?)
    }
}
