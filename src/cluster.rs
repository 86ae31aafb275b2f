//! Cluster mode's tables (`nodes`, `leases`: `migrations/postgres/0002`)
//! and its pure decisions: which node is live, how many sessions a node
//! claims ([`claims`]).
//!
//! Every time here is the database server's (`now()`), never a node's
//! clock: a node's heartbeat and a lease's expiry are compared with the
//! server's time in the statement that reads them. Each method is one
//! statement and blocks its caller for at most `store.timeout`; the
//! Cluster actor calls them on the blocking pool.

use std::time::Duration;

use serde::Serialize;

use crate::store::postgres::{pg_error, Pg};
use crate::store::StoreError;

/// A node as the `nodes` table has it, with its sessions.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct NodeView {
    /// `cluster.node`.
    pub name: String,
    /// `cluster.advertise`: where the other nodes reach its API.
    pub advertise: String,
    /// `cluster.max_sessions`.
    pub max_sessions: u32,
    /// Set by `wasup node drain`: it claims nothing and hands its sessions
    /// over.
    pub draining: bool,
    /// Its heartbeat is younger than `cluster.lease_ttl`.
    pub live: bool,
    /// How long ago its last heartbeat was, by the database's clock, ms.
    pub heartbeat_age_ms: u64,
    /// The sessions it holds a live lease on, by name.
    pub sessions: Vec<String>,
}

/// A session's lease.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LeaseView {
    pub session: String,
    pub node: String,
    /// Grows by one at every acquisition.
    pub generation: i64,
    /// Not expired by the database's clock.
    pub live: bool,
}

/// The whole cluster as one read sees it.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    pub nodes: Vec<NodeView>,
    pub leases: Vec<LeaseView>,
}

impl ClusterView {
    /// The live lease of `session`, if any.
    pub fn owner(&self, session: &str) -> Option<&LeaseView> {
        self.leases.iter().find(|l| l.session == session && l.live)
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> Option<&NodeView> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

/// This node's side of the cluster tables. Cheap to clone.
#[derive(Clone)]
pub struct ClusterDb {
    pg: Pg,
    node: String,
    advertise: String,
    max_sessions: i32,
    ttl_ms: i64,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl ClusterDb {
    /// For `node` (advertised at `advertise`, at most `max_sessions`),
    /// leases lasting `lease_ttl`.
    pub fn new(pg: Pg, node: &str, advertise: &str, max_sessions: u32, lease_ttl: Duration) -> Self {
        Self {
            pg,
            node: node.to_string(),
            advertise: advertise.to_string(),
            max_sessions: i32::try_from(max_sessions).unwrap_or(i32::MAX),
            ttl_ms: millis(lease_ttl),
        }
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The heartbeat and the renewal of every lease in `held` in one
    /// statement: the node's row is written (created at its first beat)
    /// and each held lease that is still this node's at that generation
    /// and not expired is extended to `now() + lease_ttl`. Answers the
    /// leases renewed; one of `held` missing is lost.
    ///
    /// Errors: the database did not answer.
    pub fn beat(&self, held: &[(String, i64)]) -> Result<Vec<(String, i64)>, StoreError> {
        let (node, advertise, max, ttl) = (self.node.clone(), self.advertise.clone(), self.max_sessions, self.ttl_ms);
        let sessions: Vec<String> = held.iter().map(|(s, _)| s.clone()).collect();
        let generations: Vec<i64> = held.iter().map(|(_, g)| *g).collect();
        self.pg.call(move |c| async move {
            let rows = c
                .query(
                    "WITH beat AS (
                         INSERT INTO nodes (name, advertise, max_sessions, heartbeat_at) VALUES ($1, $2, $3, now())
                         ON CONFLICT (name) DO UPDATE
                         SET advertise = EXCLUDED.advertise, max_sessions = EXCLUDED.max_sessions, heartbeat_at = now())
                     UPDATE leases SET expires_at = now() + $4::float8 * interval '1 millisecond'
                     FROM unnest($5::text[], $6::bigint[]) AS held(session, generation)
                     WHERE leases.node = $1 AND leases.session = held.session AND leases.generation = held.generation
                       AND leases.expires_at > now()
                     RETURNING leases.session, leases.generation",
                    &[&node, &advertise, &max, &(ttl as f64), &sessions, &generations],
                )
                .await
                .map_err(|e| pg_error(&e))?;
            rows.iter().map(|r| Ok((r.try_get(0).map_err(|e| pg_error(&e))?, r.try_get(1).map_err(|e| pg_error(&e))?))).collect()
        })
    }

    /// Every node and lease, liveness judged by the database's clock.
    ///
    /// Errors: the database did not answer.
    pub fn view(&self) -> Result<ClusterView, StoreError> {
        read_view(&self.pg, self.ttl_ms)
    }

    /// Takes `session`'s lease for this node if no other node holds a live
    /// one (its generation one more than the last). A live lease of this
    /// node's own name is taken back at once: it was left by this node's
    /// previous process, which is gone (one process per node name holds
    /// the node lock; a stopped one that wakes cannot renew, and its
    /// fenced writes carry the old generation). Answers the generation, or
    /// `None` when another node holds it.
    ///
    /// Errors: the database did not answer.
    pub fn claim(&self, session: &str) -> Result<Option<i64>, StoreError> {
        let (node, ttl, session) = (self.node.clone(), self.ttl_ms, session.to_string());
        self.pg.call(move |c| async move {
            let rows = c
                .query(
                    "INSERT INTO leases (session, node, generation, expires_at) VALUES ($1, $2, 1, now() + $3::float8 * interval '1 millisecond')
                     ON CONFLICT (session) DO UPDATE
                     SET node = EXCLUDED.node, generation = leases.generation + 1, expires_at = EXCLUDED.expires_at
                     WHERE leases.expires_at <= now() OR leases.node = EXCLUDED.node
                     RETURNING generation",
                    &[&session, &node, &(ttl as f64)],
                )
                .await
                .map_err(|e| pg_error(&e))?;
            rows.first().map(|r| r.try_get(0).map_err(|e| pg_error(&e))).transpose()
        })
    }

    /// Ends this node's leases on `sessions` now (their browsers are
    /// closed): another node may take them at its next placement.
    ///
    /// Errors: the database did not answer (the leases then expire by
    /// themselves within `lease_ttl`).
    pub fn release(&self, sessions: &[String]) -> Result<(), StoreError> {
        let (node, sessions) = (self.node.clone(), sessions.to_vec());
        self.pg.call(move |c| async move {
            c.execute("UPDATE leases SET expires_at = now() WHERE node = $1 AND session = ANY($2)", &[&node, &sessions])
                .await
                .map_err(|e| pg_error(&e))?;
            Ok(())
        })
    }
}

/// Every node and lease (see [`ClusterDb::view`]); for any holder of the
/// connection.
///
/// Errors: the database did not answer.
pub fn read_view(pg: &Pg, ttl_ms: i64) -> Result<ClusterView, StoreError> {
    pg.call(move |c| async move {
        let leases = c
            .query("SELECT session, node, generation, expires_at > now() FROM leases ORDER BY session", &[])
            .await
            .map_err(|e| pg_error(&e))?;
        let leases: Vec<LeaseView> = leases
            .iter()
            .map(|r| {
                Ok(LeaseView {
                    session: r.try_get(0).map_err(|e| pg_error(&e))?,
                    node: r.try_get(1).map_err(|e| pg_error(&e))?,
                    generation: r.try_get(2).map_err(|e| pg_error(&e))?,
                    live: r.try_get(3).map_err(|e| pg_error(&e))?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        let nodes = c
            .query(
                "SELECT name, advertise, max_sessions, draining,
                        greatest(0, (extract(epoch FROM now() - heartbeat_at) * 1000))::bigint
                 FROM nodes ORDER BY name",
                &[],
            )
            .await
            .map_err(|e| pg_error(&e))?;
        let nodes = nodes
            .iter()
            .map(|r| {
                let name: String = r.try_get(0).map_err(|e| pg_error(&e))?;
                let age: i64 = r.try_get(4).map_err(|e| pg_error(&e))?;
                let max: i32 = r.try_get(2).map_err(|e| pg_error(&e))?;
                Ok(NodeView {
                    sessions: leases.iter().filter(|l| l.live && l.node == name).map(|l| l.session.clone()).collect(),
                    advertise: r.try_get(1).map_err(|e| pg_error(&e))?,
                    max_sessions: u32::try_from(max).unwrap_or(0),
                    draining: r.try_get(3).map_err(|e| pg_error(&e))?,
                    live: age < ttl_ms,
                    heartbeat_age_ms: u64::try_from(age).unwrap_or(0),
                    name,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(ClusterView { nodes, leases })
    })
}

/// Sets or clears `node`'s drain mark. Answers false if no such node ever
/// started.
///
/// Errors: the database did not answer.
pub fn set_draining(pg: &Pg, node: &str, draining: bool) -> Result<bool, StoreError> {
    let node = node.to_string();
    pg.call(move |c| async move {
        let n = c.execute("UPDATE nodes SET draining = $2 WHERE name = $1", &[&node, &draining]).await.map_err(|e| pg_error(&e))?;
        Ok(n == 1)
    })
}

/// How long a client should wait before asking again for a session no
/// node runs (the API's `Retry-After`), whole seconds: `lease_ttl / 3`
/// rounded up (how often every node renews and places sessions), at
/// least 1.
pub fn retry_after_s(lease_ttl: Duration) -> u64 {
    u64::try_from(lease_ttl.as_millis().div_ceil(3000)).unwrap_or(u64::MAX).max(1)
}

/// How many of `unowned` sessions (wanted running, no live lease) node
/// `me` claims now: up to its fair share of everything that should run
/// over the live nodes that are not draining (least loaded first: a node
/// at or over the share claims nothing, unless the other nodes have no
/// room for the rest), within its `max_sessions`, and
/// at most `per_tick` at once (starts are staggered). A draining or dead
/// node claims nothing.
pub fn claims(me: &str, nodes: &[NodeView], unowned: usize, per_tick: usize) -> usize {
    let Some(mine) = nodes.iter().find(|n| n.name == me) else { return 0 };
    if !mine.live || mine.draining {
        return 0;
    }
    let takers: Vec<&NodeView> = nodes.iter().filter(|n| n.live && !n.draining).collect();
    let running: usize = takers.iter().map(|n| n.sessions.len()).sum();
    let share = (running + unowned).div_ceil(takers.len().max(1));
    let have = mine.sessions.len();
    let room = (mine.max_sessions as usize).saturating_sub(have);
    // What the others cannot take, this node takes beyond its share.
    let others_room: usize =
        takers.iter().filter(|n| n.name != me).map(|n| (n.max_sessions as usize).saturating_sub(n.sessions.len())).sum();
    let left_over = unowned.saturating_sub(others_room);
    share.saturating_sub(have).max(left_over).min(room).min(unowned).min(per_tick)
}

/// Whether some other live node that is not draining has room for one
/// more session (a draining node hands a session over only then).
pub fn others_can_take(me: &str, nodes: &[NodeView]) -> bool {
    nodes.iter().any(|n| n.name != me && n.live && !n.draining && n.sessions.len() < n.max_sessions as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, sessions: usize, max: u32, live: bool, draining: bool) -> NodeView {
        NodeView {
            name: name.into(),
            advertise: String::new(),
            max_sessions: max,
            draining,
            live,
            heartbeat_age_ms: 0,
            sessions: (0..sessions).map(|i| format!("{name}-{i}")).collect(),
        }
    }

    #[test]
    fn the_least_loaded_claim_up_to_a_fair_share() {
        // Node c died holding 100: a and b (50 each) split them.
        let nodes = [node("a", 50, 200, true, false), node("b", 50, 200, true, false), node("c", 0, 200, false, false)];
        assert_eq!(claims("a", &nodes, 100, 1000), 50);
        // A node over the share claims nothing; the emptier one takes all.
        let nodes = [node("a", 90, 200, true, false), node("b", 10, 200, true, false)];
        assert_eq!(claims("a", &nodes, 20, 1000), 0);
        assert_eq!(claims("b", &nodes, 20, 1000), 20);
    }

    #[test]
    fn a_node_takes_past_its_share_what_full_nodes_cannot() {
        // b is full: a takes all 30 (its room), not just its share of 25.
        let nodes = [node("a", 10, 40, true, false), node("b", 10, 10, true, false)];
        assert_eq!(claims("a", &nodes, 30, 1000), 30);
        assert_eq!(claims("b", &nodes, 30, 1000), 0);
    }

    #[test]
    fn capacity_the_tick_bound_drain_and_death_limit_claims() {
        let nodes = [node("a", 38, 40, true, false), node("b", 100, 100, true, false)];
        assert_eq!(claims("a", &nodes, 50, 1000), 2);
        assert_eq!(claims("a", &[node("a", 0, 40, true, false)], 30, 10), 10);
        assert_eq!(claims("a", &[node("a", 0, 40, true, true)], 30, 10), 0);
        assert_eq!(claims("a", &[node("a", 0, 40, false, false)], 30, 10), 0);
        assert_eq!(claims("x", &[node("a", 0, 40, true, false)], 30, 10), 0);
    }

    #[test]
    fn retry_after_is_a_third_of_the_ttl_rounded_up() {
        assert_eq!(retry_after_s(Duration::from_secs(15)), 5);
        assert_eq!(retry_after_s(Duration::from_secs(6)), 2);
        assert_eq!(retry_after_s(Duration::from_millis(3100)), 2);
        assert_eq!(retry_after_s(Duration::from_millis(1)), 1);
    }

    #[test]
    fn a_drain_hands_over_only_to_a_live_node_with_room() {
        let nodes = [node("a", 5, 40, true, true), node("b", 40, 40, true, false), node("c", 0, 40, false, false)];
        assert!(!others_can_take("a", &nodes));
        let nodes = [node("a", 5, 40, true, true), node("b", 39, 40, true, false)];
        assert!(others_can_take("a", &nodes));
    }
}
