//! The PostgreSQL backend: the store's trees as rows of one table
//! (`kv (tree, key, value)`), for several machines sharing one database
//! (`[store] backend = "postgres"`).
//!
//! Every method is one SQL statement, so each is atomic on its own, and
//! commits before it returns (PostgreSQL's default `synchronous_commit`):
//! a write the store calls durable is durable. The schema is versioned in
//! the repository (`migrations/postgres/NNNN_name.sql`) and applied at
//! start under an advisory lock, so nodes starting together apply it once.
//!
//! One process per node name: each connection first takes an advisory
//! lock keyed by `cluster.node`, so a second daemon with the same name
//! fails its store calls (and does not start). Several nodes share the
//! database through the cluster's leases (`crate::cluster`).
//!
//! The store's callers are synchronous (actors and request handlers call it
//! as they call sled), so the connection lives on its own thread with its
//! own tokio runtime ([`Pg`]); a call waits for its answer at most the
//! configured timeout (`store.timeout`), and the server ends a statement
//! that runs longer. A call that times out may still commit, as any
//! client's statement whose answer is lost may: a recipient's `SENDING`
//! record is written again before its send is retried, and a day count
//! may count one send twice (stricter pacing, never a second send).
//! While the database is unreachable (not refusing), each store call can
//! hold its caller, an actor thread, for up to the timeout.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};

use super::kv::{Entry, Fence, Kv, Rewrite, Tree};
use super::StoreError;

/// The migrations, in order: `(version, name, sql)`.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "store", include_str!("../../migrations/postgres/0001_store.sql")),
    (2, "cluster", include_str!("../../migrations/postgres/0002_cluster.sql")),
];

/// The advisory lock key held while migrations run (`wasup` in ASCII).
const MIGRATION_LOCK: i64 = 0x0077_6173_7570;

/// The first key of the advisory lock a node holds on its store
/// connection, the second being `hashtext(node)`: one process per node
/// name (`wasu` in ASCII).
const NODE_LOCK: i32 = 0x7761_7375;

/// Why a new connection cannot be used.
enum Refused {
    /// Another process of this node holds [`NODE_LOCK`].
    Locked(String),
    /// No connection, or its setup failed.
    Failed(String),
}

/// Opens a connection, bounds its statements and takes [`NODE_LOCK`], all
/// before `deadline` (the lock a little before, so the caller hears why).
async fn connect(
    config: &tokio_postgres::Config,
    node: &str,
    statement_timeout: &str,
    stale_after: Duration,
    deadline: Instant,
) -> Result<Conn, Refused> {
    let failed = |e: &tokio_postgres::Error| Refused::Failed(message(pg_error(e)));
    let wait = deadline.saturating_duration_since(Instant::now());
    let (client, connection) = match tokio::time::timeout(wait, config.connect(NoTls)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err(failed(&e)),
        Err(_) => return Err(Refused::Failed("no connection within the store timeout".into())),
    };
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(event = "store.postgres_lost", error = %e, "PostgreSQL connection lost");
        }
    });
    client.batch_execute(statement_timeout).await.map_err(|e| failed(&e))?;
    let lock_by = deadline.checked_sub(Duration::from_millis(200)).unwrap_or(deadline);
    let mut ended_own = false;
    loop {
        let row = client.query_one("SELECT pg_try_advisory_lock($1, hashtext($2))", &[&NODE_LOCK, &node]).await.map_err(|e| failed(&e))?;
        if row.try_get::<_, bool>(0).map_err(|e| failed(&e))? {
            return Ok(Conn { client, prepared: Mutex::default() });
        }
        if !ended_own && node_silent(&client, node, stale_after).await.map_err(|e| failed(&e))? {
            // This node's own earlier connection may still hold the lock
            // (cut off without the server noticing yet): end it, once the
            // node has not beaten for `stale_after` (a live process of this
            // name beats every third of it, and keeps its lock). Node names
            // are unique, so no other node's connection carries ours.
            client
                .execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE application_name = $1 AND pid <> pg_backend_pid() AND datname = current_database()",
                    &[&node],
                )
                .await
                .map_err(|e| failed(&e))?;
            ended_own = true;
        }
        if Instant::now() + Duration::from_millis(50) >= lock_by {
            return Err(Refused::Locked(format!(
                "another wasup process runs as node {node:?} on this PostgreSQL database (cluster.node must be unique)"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `node` has written no heartbeat for `stale_after` (or never: no
/// `nodes` table or row yet), by the server's clock.
async fn node_silent(client: &Client, node: &str, stale_after: Duration) -> Result<bool, tokio_postgres::Error> {
    let exists: bool = client.query_one("SELECT to_regclass('nodes') IS NOT NULL", &[]).await?.try_get(0)?;
    if !exists {
        return Ok(true);
    }
    let ms = i64::try_from(stale_after.as_millis()).unwrap_or(i64::MAX) as f64;
    let rows = client
        .query("SELECT heartbeat_at > now() - $2::float8 * interval '1 millisecond' FROM nodes WHERE name = $1", &[&node, &ms])
        .await?;
    Ok(match rows.first() {
        Some(row) => !row.try_get::<_, bool>(0)?,
        None => true,
    })
}

/// A store error's message without the store's prefix (it is wrapped again).
fn message(e: StoreError) -> String {
    match e {
        StoreError::Postgres(m) => m,
        other => other.to_string(),
    }
}

/// One open connection and the statements prepared on it.
pub struct Conn {
    client: Client,
    prepared: Mutex<HashMap<&'static str, Statement>>,
}

impl Conn {
    /// The statement for `sql`, prepared once per connection.
    async fn statement(&self, sql: &'static str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(s) = self.prepared.lock().ok().and_then(|p| p.get(sql).cloned()) {
            return Ok(s);
        }
        let statement = self.client.prepare(sql).await?;
        if let Ok(mut p) = self.prepared.lock() {
            p.insert(sql, statement.clone());
        }
        Ok(statement)
    }

    /// Runs `sql` (prepared once) and returns its rows.
    pub async fn query(&self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, tokio_postgres::Error> {
        let statement = self.statement(sql).await?;
        self.client.query(&statement, params).await
    }

    /// Runs `sql` (prepared once) and returns how many rows it changed.
    pub async fn execute(&self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, tokio_postgres::Error> {
        let statement = self.statement(sql).await?;
        self.client.execute(&statement, params).await
    }

    /// The raw client, for statements that are not prepared (migrations).
    pub fn client(&self) -> &Client {
        &self.client
    }
}

type Job = Box<dyn FnOnce(Result<Arc<Conn>, String>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// A PostgreSQL connection driven on its own thread; cheap to clone. It
/// connects on the first call and again on the first call after the
/// connection broke (PostgreSQL restarted, say) or a call ran out of time,
/// so an outage fails calls while it lasts and nothing after it. After a
/// failed connect, calls fail at once for a second. Every statement is
/// bounded by the timeout on the server too (`statement_timeout`).
#[derive(Clone)]
pub struct Pg {
    jobs: tokio::sync::mpsc::UnboundedSender<(Instant, Job)>,
    timeout: Duration,
}

/// Turns a driver error into the store's, with the server's code and
/// message when there is one (`23505: duplicate key …`).
pub fn pg_error(e: &tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => StoreError::Postgres(format!("{}: {}", db.code().code(), db.message())),
        None => StoreError::Postgres(match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        }),
    }
}

impl Pg {
    /// Starts the connection thread for `url` (a libpq-style URL or
    /// key=value string: `postgres://wasup@/wasup?host=/run/postgresql`),
    /// its connections named `node` (`application_name`). Each call waits
    /// at most `timeout` for its answer (connecting included). A connection
    /// of `node`'s that still holds the node lock is ended once the node
    /// has not beaten for `lease_ttl` (`cluster.lease_ttl`). Nothing
    /// connects until the first call. While another connection holds the
    /// node lock, calls fail (a cut-off node's own old connection, ended
    /// once the node has been silent for `lease_ttl`).
    ///
    /// Errors: the URL does not parse, or the thread cannot start.
    pub fn start(url: &str, timeout: Duration, node: &str, lease_ttl: Duration) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| pg_error(&e))?;
        // The node's name marks its connections (so a reconnect can end its
        // own dead one); keepalives find a dead peer in about a minute, not
        // the OS's two hours.
        config.application_name(node).connect_timeout(timeout).keepalives_idle(Duration::from_secs(30));
        let statement_timeout = format!("SET statement_timeout = {}", timeout.as_millis().max(100));
        let node = node.to_string();
        let (jobs, mut queue) = tokio::sync::mpsc::unbounded_channel::<(Instant, Job)>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Postgres(format!("cannot start its runtime: {e}")))?;
        std::thread::Builder::new()
            .name("wasup-postgres".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let mut conn: Option<Arc<Conn>> = None;
                    // A call that ran out of time leaves its connection
                    // suspect: the next call opens a new one.
                    let stale = Arc::new(AtomicBool::new(false));
                    // After a failed connect, calls fail at once for a
                    // second instead of each waiting out its own attempt.
                    let mut down: Option<(Instant, String)> = None;
                    while let Some((deadline, job)) = queue.recv().await {
                        if Instant::now() >= deadline {
                            // Its caller gave up: running it now would
                            // write what the caller was told failed.
                            continue;
                        }
                        if stale.swap(false, Ordering::SeqCst) {
                            conn = None;
                        }
                        if conn.as_ref().is_none_or(|c| c.client.is_closed()) {
                            conn = None;
                            if let Some((until, why)) = &down {
                                if Instant::now() < *until {
                                    tokio::spawn(job(Err(why.clone())));
                                    continue;
                                }
                            }
                            match connect(&config, &node, &statement_timeout, lease_ttl, deadline).await {
                                Ok(c) => {
                                    down = None;
                                    conn = Some(Arc::new(c));
                                }
                                // Locked after it was held: this node's own old
                                // connection (cut off, not yet ended by the
                                // server) still holds it, or another process
                                // took the name. Calls fail meanwhile (the
                                // cluster fences this node after half the lease
                                // TTL); once this node has been silent for the
                                // TTL, a connect ends its own old connection.
                                Err(Refused::Locked(why) | Refused::Failed(why)) => {
                                    down = Some((Instant::now() + Duration::from_secs(1), why.clone()));
                                    tokio::spawn(job(Err(why)));
                                    continue;
                                }
                            }
                        }
                        let Some(c) = conn.clone() else { continue };
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            continue;
                        }
                        let stale = stale.clone();
                        tokio::spawn(async move {
                            if tokio::time::timeout(left, job(Ok(c))).await.is_err() {
                                stale.store(true, Ordering::SeqCst);
                            }
                        });
                    }
                });
            })
            .map_err(|e| StoreError::Postgres(format!("cannot start its thread: {e}")))?;
        Ok(Self { jobs, timeout })
    }

    fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce(Arc<Conn>) -> Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send>> + Send + 'static,
        reply: impl FnOnce(Result<T, StoreError>) + Send + 'static,
    ) -> Result<(), StoreError> {
        let job: Job = Box::new(move |conn| {
            Box::pin(async move {
                let result = match conn {
                    Ok(c) => f(c).await,
                    Err(e) => Err(StoreError::Postgres(e)),
                };
                reply(result);
            })
        });
        self.jobs.send((Instant::now() + self.timeout, job)).map_err(|_| StoreError::Postgres("its connection thread stopped".into()))
    }

    /// Runs `f` on the connection and waits for its answer (at most the
    /// timeout). For synchronous callers; blocks the calling thread.
    ///
    /// Errors: no connection, the statement failed, or no answer in time.
    pub fn call<T: Send + 'static, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Arc<Conn>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.submit(
            move |c| Box::pin(f(c)),
            move |r| {
                // The caller may have timed out and gone: nothing to tell.
                let _ = tx.send(r);
            },
        )?;
        rx.recv_timeout(self.timeout).map_err(|_| StoreError::Postgres(format!("no answer within {:?}", self.timeout)))?
    }

    /// [`Pg::call`] for async callers: does not block the thread.
    pub async fn call_async<T: Send + 'static, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Arc<Conn>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(
            move |c| Box::pin(f(c)),
            move |r| {
                // The caller may have timed out and gone: nothing to tell.
                let _ = tx.send(r);
            },
        )?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(StoreError::Postgres("its connection thread stopped".into())),
            Err(_) => Err(StoreError::Postgres(format!("no answer within {:?}", self.timeout))),
        }
    }

    /// Applies the migrations this database has not seen, in order, each in
    /// its own transaction, under an advisory lock (nodes starting at once
    /// apply each once). Returns the versions applied now.
    ///
    /// Errors: no connection, or a migration failed (nothing of it stays).
    pub fn migrate(&self) -> Result<Vec<i32>, StoreError> {
        self.call(|c| async move {
            let client = c.client();
            let mut applied = Vec::new();
            for (version, name, sql) in MIGRATIONS {
                // One simple-query message per migration: the server runs it
                // whole before it takes the connection's next statement, so
                // no other caller's statement falls inside its transaction.
                let batch = format!(
                    "BEGIN; SELECT pg_advisory_xact_lock({MIGRATION_LOCK});
                     CREATE TABLE IF NOT EXISTS schema_migrations (
                         version integer PRIMARY KEY,
                         name text NOT NULL,
                         applied_at timestamptz NOT NULL DEFAULT now());
                     DO $wasup$ BEGIN
                       IF EXISTS (SELECT 1 FROM schema_migrations WHERE version = {version}) THEN
                         RAISE EXCEPTION 'wasup-migration-applied';
                       END IF;
                     END $wasup$;
                     {sql}
                     INSERT INTO schema_migrations (version, name) VALUES ({version}, '{name}');
                     COMMIT;"
                );
                match client.batch_execute(&batch).await {
                    Ok(()) => applied.push(*version),
                    Err(e) if e.as_db_error().is_some_and(|d| d.message() == "wasup-migration-applied") => {
                        client.batch_execute("ROLLBACK").await.map_err(|e| pg_error(&e))?;
                    }
                    Err(e) => {
                        // Harmless if it fails: the connection is then gone
                        // and its transaction with it.
                        let _ = client.batch_execute("ROLLBACK").await;
                        return Err(pg_error(&e));
                    }
                }
            }
            Ok(applied)
        })
    }
}

/// The key just past every key that starts with `prefix` (`None`: no end).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The store's trees in PostgreSQL.
pub struct PgKv {
    pg: Pg,
}

impl PgKv {
    /// The store over `pg`, its schema brought up to date.
    ///
    /// Errors: PostgreSQL cannot be reached, or a migration failed.
    pub fn open(pg: Pg) -> Result<Self, StoreError> {
        let applied = pg.migrate()?;
        if !applied.is_empty() {
            tracing::info!(event = "store.migrated", versions = ?applied, "PostgreSQL schema migrated");
        }
        Ok(Self { pg })
    }

    /// The bigint `sql` answers (with `$1` = `tree`'s name when given), as
    /// u64; 0 for no row or a negative number.
    fn number(&self, sql: &'static str, tree: Option<Tree>) -> Result<u64, StoreError> {
        self.pg.call(move |c| async move {
            let rows = match tree {
                Some(tree) => c.query(sql, &[&tree.name()]).await,
                None => c.query(sql, &[]).await,
            }
            .map_err(|e| pg_error(&e))?;
            let n: i64 = rows.first().map(|r| r.try_get(0)).transpose().map_err(|e| pg_error(&e))?.unwrap_or(0);
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    /// The connection, for the cluster's own tables.
    pub fn pg(&self) -> &Pg {
        &self.pg
    }
}

fn bytes(row: &Row, i: usize) -> Result<Vec<u8>, StoreError> {
    row.try_get::<_, Vec<u8>>(i).map_err(|e| pg_error(&e))
}

impl Kv for PgKv {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_vec();
        self.pg.call(move |c| async move {
            let rows =
                c.query("SELECT value FROM kv WHERE tree = $1 AND key = $2", &[&tree.name(), &key]).await.map_err(|e| pg_error(&e))?;
            rows.first().map(|r| bytes(r, 0)).transpose()
        })
    }

    fn scan(&self, tree: Tree, prefix: &[u8], limit: Option<usize>) -> Result<Vec<Entry>, StoreError> {
        let start = prefix.to_vec();
        let end = prefix_end(prefix);
        let limit = limit.map_or(i64::MAX, |n| i64::try_from(n).unwrap_or(i64::MAX));
        self.pg.call(move |c| async move {
            let rows = match &end {
                Some(end) => {
                    c.query(
                        "SELECT key, value FROM kv WHERE tree = $1 AND key >= $2 AND key < $3 ORDER BY key LIMIT $4",
                        &[&tree.name(), &start, end, &limit],
                    )
                    .await
                }
                None => {
                    c.query(
                        "SELECT key, value FROM kv WHERE tree = $1 AND key >= $2 ORDER BY key LIMIT $3",
                        &[&tree.name(), &start, &limit],
                    )
                    .await
                }
            }
            .map_err(|e| pg_error(&e))?;
            rows.iter().map(|r| Ok((bytes(r, 0)?, bytes(r, 1)?))).collect()
        })
    }

    fn len(&self, tree: Tree) -> Result<u64, StoreError> {
        self.number("SELECT count(*) FROM kv WHERE tree = $1", Some(tree))
    }

    fn insert(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let (key, value) = (key.to_vec(), value.to_vec());
        self.pg.call(move |c| async move {
            c.execute(
                "INSERT INTO kv (tree, key, value) VALUES ($1, $2, $3) ON CONFLICT (tree, key) DO UPDATE SET value = EXCLUDED.value",
                &[&tree.name(), &key, &value],
            )
            .await
            .map_err(|e| pg_error(&e))?;
            Ok(())
        })
    }

    /// One statement: the row is written only if the lease is this node's
    /// at the fence's generation and not expired by the server's clock. The
    /// lease row is read `FOR SHARE`, so a takeover waits for this write to
    /// commit and the new owner reads it.
    fn insert_fenced(&self, tree: Tree, key: &[u8], value: &[u8], fence: &Fence) -> Result<(), StoreError> {
        let (key, value, f) = (key.to_vec(), value.to_vec(), fence.clone());
        self.pg.call(move |c| async move {
            let n = c
                .execute(
                    "INSERT INTO kv (tree, key, value)
                     SELECT $1, $2, $3 WHERE EXISTS (
                         SELECT 1 FROM leases WHERE session = $4 AND node = $5 AND generation = $6 AND expires_at > now() FOR SHARE)
                     ON CONFLICT (tree, key) DO UPDATE SET value = EXCLUDED.value",
                    &[&tree.name(), &key, &value, &f.session, &f.node, &f.generation],
                )
                .await
                .map_err(|e| pg_error(&e))?;
            if n == 1 {
                Ok(())
            } else {
                Err(StoreError::Fenced(f.session))
            }
        })
    }

    fn insert_new(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<bool, StoreError> {
        let (key, value) = (key.to_vec(), value.to_vec());
        self.pg.call(move |c| async move {
            let n = c
                .execute(
                    "INSERT INTO kv (tree, key, value) VALUES ($1, $2, $3) ON CONFLICT (tree, key) DO NOTHING",
                    &[&tree.name(), &key, &value],
                )
                .await
                .map_err(|e| pg_error(&e))?;
            Ok(n == 1)
        })
    }

    fn insert_all(&self, tree: Tree, entries: &[Entry]) -> Result<(), StoreError> {
        // Later entries win over earlier ones with the same key, as in a
        // sled batch (ON CONFLICT cannot touch one row twice).
        let mut unique: std::collections::BTreeMap<&[u8], &[u8]> = std::collections::BTreeMap::new();
        for (k, v) in entries {
            unique.insert(k, v);
        }
        let keys: Vec<Vec<u8>> = unique.keys().map(|k| k.to_vec()).collect();
        let values: Vec<Vec<u8>> = unique.values().map(|v| v.to_vec()).collect();
        self.pg.call(move |c| async move {
            c.execute(
                "INSERT INTO kv (tree, key, value) SELECT $1, k, v FROM unnest($2::bytea[], $3::bytea[]) AS t(k, v)
                 ON CONFLICT (tree, key) DO UPDATE SET value = EXCLUDED.value",
                &[&tree.name(), &keys, &values],
            )
            .await
            .map_err(|e| pg_error(&e))?;
            Ok(())
        })
    }

    fn remove(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_vec();
        self.pg.call(move |c| async move {
            let rows = c
                .query("DELETE FROM kv WHERE tree = $1 AND key = $2 RETURNING value", &[&tree.name(), &key])
                .await
                .map_err(|e| pg_error(&e))?;
            rows.first().map(|r| bytes(r, 0)).transpose()
        })
    }

    fn remove_prefix(&self, tree: Tree, prefix: &[u8]) -> Result<(), StoreError> {
        let start = prefix.to_vec();
        let end = prefix_end(prefix);
        self.pg.call(move |c| async move {
            match &end {
                Some(end) => c.execute("DELETE FROM kv WHERE tree = $1 AND key >= $2 AND key < $3", &[&tree.name(), &start, end]).await,
                None => c.execute("DELETE FROM kv WHERE tree = $1 AND key >= $2", &[&tree.name(), &start]).await,
            }
            .map_err(|e| pg_error(&e))?;
            Ok(())
        })
    }

    fn trim_prefix(&self, tree: Tree, prefix: &[u8], keep: usize) -> Result<(), StoreError> {
        let start = prefix.to_vec();
        // Prefixes here always end in 0x00 (a name and its separator).
        let end = prefix_end(prefix).unwrap_or_else(|| vec![u8::MAX; prefix.len() + 1]);
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        self.pg.call(move |c| async move {
            c.execute(
                "DELETE FROM kv WHERE tree = $1 AND key IN (
                     SELECT key FROM kv WHERE tree = $1 AND key >= $2 AND key < $3 ORDER BY key DESC OFFSET $4)",
                &[&tree.name(), &start, &end, &keep],
            )
            .await
            .map_err(|e| pg_error(&e))?;
            Ok(())
        })
    }

    fn increment(&self, tree: Tree, key: &[u8]) -> Result<u32, StoreError> {
        let key = key.to_vec();
        self.pg.call(move |c| async move {
            // The count is a big-endian u32, as sled keeps it: read as
            // bigint (a value that is not 4 bytes counts as 0, as in sled),
            // saturated at u32::MAX, written back as its low 4 bytes.
            let rows = c
                .query(
                    "INSERT INTO kv (tree, key, value) VALUES ($1, $2, '\\x00000001'::bytea) ON CONFLICT (tree, key)
                     DO UPDATE SET value = substring(int8send(least(4294967295,
                         CASE WHEN length(kv.value) = 4
                              THEN ('x' || encode(kv.value, 'hex'))::bit(32)::bigint & 4294967295
                              ELSE 0 END + 1)) FROM 5 FOR 4)
                     RETURNING value",
                    &[&tree.name(), &key],
                )
                .await
                .map_err(|e| pg_error(&e))?;
            let v = rows.first().map(|r| bytes(r, 0)).transpose()?.unwrap_or_default();
            Ok(<[u8; 4]>::try_from(v.as_slice()).map_or(0, u32::from_be_bytes))
        })
    }

    fn move_entry(&self, from: Tree, to: Tree, key: &[u8], rewrite: &Rewrite<'_>) -> Result<Option<Vec<u8>>, StoreError> {
        // Read, rewrite here, then move in one statement only if the value
        // is still the one read; a concurrent change makes it read again.
        for _ in 0..8 {
            let Some(old) = self.get(from, key)? else { return Ok(None) };
            let new = rewrite(&old)?;
            let (k, o, n) = (key.to_vec(), old, new.clone());
            let moved = self.pg.call(move |c| async move {
                c.execute(
                    "WITH gone AS (DELETE FROM kv WHERE tree = $1 AND key = $2 AND value = $3 RETURNING key)
                     INSERT INTO kv (tree, key, value) SELECT $4, key, $5 FROM gone
                     ON CONFLICT (tree, key) DO UPDATE SET value = EXCLUDED.value",
                    &[&from.name(), &k, &o, &to.name(), &n],
                )
                .await
                .map_err(|e| pg_error(&e))
            })?;
            if moved == 1 {
                return Ok(Some(new));
            }
        }
        Err(StoreError::Postgres("the entry kept changing while it was moved".into()))
    }

    fn next_id(&self) -> Result<u64, StoreError> {
        self.number("SELECT nextval('kv_ids')", None)
    }

    /// Every statement has committed already: this proves the database
    /// answers.
    fn flush(&self) -> Result<(), StoreError> {
        self.pg.call(|c| async move {
            c.query("SELECT 1", &[]).await.map_err(|e| pg_error(&e))?;
            Ok(())
        })
    }

    fn probe(&self) -> Result<(), StoreError> {
        self.pg.call(|c| async move {
            c.execute("INSERT INTO probe (id, at) VALUES (1, now()) ON CONFLICT (id) DO UPDATE SET at = now()", &[])
                .await
                .map_err(|e| pg_error(&e))?;
            Ok(())
        })
    }

    /// Nothing to reopen: the next call reconnects if the connection broke.
    fn reopen(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.number("SELECT pg_total_relation_size('kv')", None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_bound_every_key_with_the_prefix() {
        assert_eq!(prefix_end(b"acme\0"), Some(b"acme\x01".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
