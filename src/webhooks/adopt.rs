//! Cluster mode: a dead node's pending deliveries go to a live node.
//!
//! A node is dead when its heartbeat is older than `cluster.lease_ttl` by
//! the database's clock ([`crate::cluster::read_view`], the same rule the
//! leases follow). Each adoption is one compare-and-set write of the
//! delivery's row (the new owner written only if the row is still the one
//! read), so when several live nodes adopt at once each delivery goes to
//! exactly one of them. A node adopts only deliveries for hooks it has
//! configured too (the hook's id comes from its kind and URL).
//! Deliveries written before cluster mode (no `node`) are adopted the same
//! way, at a node's start.

use std::time::Duration;

use super::Delivery;
use crate::store::postgres::{pg_error, Pg};
use crate::store::{StoreError, Tree};

/// Adopts deliveries for one node; cheap to clone.
#[derive(Clone)]
pub struct Adopter {
    pg: Pg,
    node: String,
    lease_ttl: Duration,
}

/// The bytes serde writes for `"node": name` in a stored delivery: its
/// JSON is compact and node names need no escaping (letters, digits, `-`,
/// `_`). The same bytes cannot come from inside `body`, where every quote
/// is escaped. A match is only a candidate: it is read and checked.
fn owner_pattern(node: &str) -> Vec<u8> {
    format!("\"node\":\"{node}\"").into_bytes()
}

/// The bytes of any owner, for deliveries that have none.
const ANY_OWNER: &[u8] = b"\"node\":";

impl Adopter {
    /// For `node` (`cluster.node`), a node being dead after `lease_ttl`
    /// (`cluster.lease_ttl`) without a heartbeat.
    pub fn new(pg: Pg, node: &str, lease_ttl: Duration) -> Self {
        Self { pg, node: node.to_string(), lease_ttl }
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// How often a node looks for deliveries to adopt: `lease_ttl / 2`.
    pub fn period(&self) -> Duration {
        self.lease_ttl / 2
    }

    /// Takes over the pending deliveries of dead nodes (and, with
    /// `ownerless`, those that belong to no node) whose hook id is in
    /// `hooks`; answers them as now stored (owned by this node). Blocks
    /// the caller for up to a few store timeouts: run it on a blocking
    /// thread.
    ///
    /// Errors: the database did not answer (nothing, or only some, adopted;
    /// the rest wait for the next round).
    pub fn adopt(&self, hooks: &[String], ownerless: bool) -> Result<Vec<Delivery>, StoreError> {
        let ttl_ms = i64::try_from(self.lease_ttl.as_millis()).unwrap_or(i64::MAX);
        let view = crate::cluster::read_view(&self.pg, ttl_ms)?;
        let dead: Vec<String> = view.nodes.iter().filter(|n| !n.live && n.name != self.node).map(|n| n.name.clone()).collect();
        if dead.is_empty() && !ownerless {
            return Ok(Vec::new());
        }
        let patterns: Vec<Vec<u8>> = dead.iter().map(|n| owner_pattern(n)).collect();
        let (hooks, node) = (hooks.to_vec(), self.node.clone());
        self.pg.call(move |c| async move {
            let rows = c
                .query(
                    "SELECT key, value FROM kv WHERE tree = $1 AND (
                         EXISTS (SELECT 1 FROM unnest($2::bytea[]) AS p(b) WHERE position(p.b IN kv.value) > 0)
                         OR ($3 AND position($4::bytea IN kv.value) = 0))
                     ORDER BY key",
                    &[&Tree::Outbox.name(), &patterns, &ownerless, &ANY_OWNER],
                )
                .await
                .map_err(|e| pg_error(&e))?;
            let mut adopted = Vec::new();
            for row in rows {
                let key: Vec<u8> = row.try_get(0).map_err(|e| pg_error(&e))?;
                let old: Vec<u8> = row.try_get(1).map_err(|e| pg_error(&e))?;
                let Ok(d) = serde_json::from_slice::<Delivery>(&old) else { continue };
                let orphan = match &d.node {
                    Some(owner) => dead.contains(owner),
                    None => ownerless,
                };
                if !orphan || !hooks.contains(&d.hook) {
                    continue;
                }
                let previous = d.node.clone();
                let mine = Delivery { node: Some(node.clone()), ..d };
                let new = serde_json::to_vec(&mine)?;
                let n = c
                    .execute(
                        "UPDATE kv SET value = $4 WHERE tree = $1 AND key = $2 AND value = $3",
                        &[&Tree::Outbox.name(), &key, &old, &new],
                    )
                    .await
                    .map_err(|e| pg_error(&e))?;
                if n == 1 {
                    tracing::info!(event = "webhook.adopted", delivery = %mine.id, hook = %mine.hook, from = previous.as_deref().unwrap_or("-"), "adopted a webhook delivery of a node that is gone");
                    adopted.push(mine);
                }
            }
            Ok(adopted)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The owner's bytes appear in a stored delivery exactly where its
    /// `node` is, never inside the body (an event that names the node).
    #[test]
    fn owner_patterns_match_the_owner_field_only() {
        let body = serde_json::json!({"event": "session.status", "node": "node-a", "detail": {"x": "\"node\":\"node-a\""}}).to_string();
        let d = |node: Option<&str>| Delivery {
            id: "dlv_1".into(),
            hook: "wh_1".into(),
            event: "session.status".into(),
            body: body.clone(),
            attempts: 0,
            first_at_ms: 1,
            next_at_ms: 1,
            last_error: None,
            last_status: None,
            dead_at_ms: None,
            node: node.map(str::to_string),
        };
        let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
        let owned = serde_json::to_vec(&d(Some("node-a"))).unwrap();
        let other = serde_json::to_vec(&d(Some("node-b"))).unwrap();
        let none = serde_json::to_vec(&d(None)).unwrap();
        assert!(contains(&owned, &owner_pattern("node-a")));
        assert!(!contains(&other, &owner_pattern("node-a")), "{}", String::from_utf8_lossy(&other));
        assert!(!contains(&none, ANY_OWNER), "{}", String::from_utf8_lossy(&none));
        assert!(contains(&other, ANY_OWNER));
    }
}
