//! Cluster mode in the API: `/api/nodes` (the nodes, their sessions and
//! heartbeats; drain and undrain), and [`ClusterApi`], what the rest of the
//! HTTP layer needs of the cluster (which node holds a session's lease:
//! the `node` of every session view, and where [`super::forward`] sends a
//! request).
//!
//! Every read is one [`cluster::read_view`] (two statements) on the
//! blocking pool, so a slow database holds no HTTP worker; session views
//! add one read of the sessions another node runs ([`place`]).

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::AppState;
use crate::actors::supervisor::SessionView;
use crate::cluster::{self, ClusterView, NodeView};
use crate::config::Config;
use crate::store::Store;

declare_routes! {
    pub fn routes;
    get "/nodes" => list,
    post "/nodes/{name}/drain" => drain,
    post "/nodes/{name}/undrain" => undrain,
}

/// How long a forwarded request may take to connect to its node.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the HTTP layer knows of the cluster (cluster mode only). Cheap to
/// clone.
#[derive(Clone)]
pub struct ClusterApi {
    /// This node's name (`cluster.node`).
    pub node: String,
    pg: crate::store::postgres::Pg,
    /// `cluster.lease_ttl`.
    pub lease_ttl: Duration,
    /// The HTTP client of forwarded requests (no redirects,
    /// [`CONNECT_TIMEOUT`] to connect, [`ClusterApi::forward_timeout`] in
    /// all).
    pub(super) agent: ureq::Agent,
    /// How long a forwarded request may take in all: the sum of
    /// `whatsapp.send_timeout` and `whatsapp.ack_wait` (the longest a send
    /// waits at its owner) and a minute more (a stop waits up to 20 s for
    /// its browser to close; a large campaign takes seconds to check).
    /// 190 s by default.
    pub forward_timeout: Duration,
}

impl ClusterApi {
    /// The cluster's side of the API, for a store in cluster mode (on
    /// PostgreSQL, with fences); `None` on one node (sled).
    pub fn new(config: &Config, store: &Store) -> Option<Self> {
        store.fences()?;
        let pg = store.pg()?.clone();
        let forward_timeout = config.whatsapp.send_timeout + config.whatsapp.ack_wait + Duration::from_secs(60);
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(CONNECT_TIMEOUT)
            .timeout(forward_timeout)
            .redirects(0)
            .user_agent(concat!("wasup/", env!("CARGO_PKG_VERSION")))
            .build();
        Some(Self {
            node: config.cluster.node.clone().unwrap_or_default(),
            pg,
            lease_ttl: config.cluster.lease_ttl,
            agent,
            forward_timeout,
        })
    }

    /// Every node and lease now ([`cluster::read_view`]), on the blocking
    /// pool.
    ///
    /// Errors: 503, the database did not answer within `store.timeout`.
    pub async fn view(&self) -> Result<ClusterView, ApiError> {
        let (pg, ttl_ms) = (self.pg.clone(), self.ttl_ms());
        web::block(move || cluster::read_view(&pg, ttl_ms))
            .await
            .map_err(|e| ApiError::internal(format!("reading the cluster: {e}")))?
            .map_err(ApiError::from)
    }

    /// `lease_ttl` in ms.
    pub(super) fn ttl_ms(&self) -> i64 {
        i64::try_from(self.lease_ttl.as_millis()).unwrap_or(i64::MAX)
    }

    /// The connection, for a read the forwarder combines with others.
    pub(super) fn pg(&self) -> &crate::store::postgres::Pg {
        &self.pg
    }

    /// `Retry-After` for a session no node runs now, seconds
    /// ([`cluster::retry_after_s`]).
    pub fn retry_after_s(&self) -> u64 {
        cluster::retry_after_s(self.lease_ttl)
    }
}

/// Sets the `node` of each of `views` from one read of the leases (cluster
/// mode; on one node they stay `null`). A session this node does not run
/// now (it holds no lease of it: another node runs it, or none does) gets
/// its state, reason, `since_ms`, account and desired state from the store
/// now, and no runtime figures (heartbeat, memory, key files, attempt,
/// event mode): this node's copy is only as fresh as its last placement
/// round, and a session that just moved would still show its old node's
/// `CONNECTED` beside its new node's name. One read of the session for one
/// view, one of every session for more.
///
/// Errors: 503, the database did not answer.
pub(super) async fn place(state: &AppState, views: &mut [SessionView]) -> Result<(), ApiError> {
    let Some(cluster) = &state.cluster else { return Ok(()) };
    let view = cluster.view().await?;
    let runs_here = |name: &str| state.store.fences().is_some_and(|f| f.generation(name).is_some());
    let mut elsewhere = Vec::new();
    for v in views.iter_mut() {
        v.node = view.owner(&v.name).map(|lease| lease.node.clone());
        if !runs_here(&v.name) {
            elsewhere.push(v.name.clone());
        }
    }
    if elsewhere.is_empty() {
        return Ok(());
    }
    let store = state.store.clone();
    let records = web::block(move || match elsewhere.as_slice() {
        [one] => store.session(one).map(|r| r.into_iter().collect::<Vec<_>>()),
        _ => store.sessions(),
    })
    .await
    .map_err(|e| ApiError::internal(format!("reading the sessions: {e}")))??;
    let by_name: std::collections::HashMap<&str, &crate::store::SessionRecord> = records.iter().map(|r| (r.name.as_str(), r)).collect();
    for v in views.iter_mut().filter(|v| !runs_here(&v.name)) {
        if let Some(r) = by_name.get(v.name.as_str()) {
            v.state = r.state;
            v.reason.clone_from(&r.reason);
            v.since_ms = r.since_ms;
            v.me.clone_from(&r.me);
            v.desired = r.desired;
        }
        v.attempt = 0;
        v.next_attempt_ms = None;
        v.last_heartbeat_ms = None;
        v.key_files = None;
        v.browser_pss_bytes = None;
        v.events = None;
    }
    Ok(())
}

/// `GET /api/nodes` answer.
#[derive(Serialize, ToSchema)]
struct NodesView {
    /// Whether the daemon runs in cluster mode (`[store] backend =
    /// "postgres"`). On one node (sled) `nodes` is empty.
    cluster: bool,
    /// The node that answered (`cluster.node`); `null` on one node.
    node: Option<String>,
    /// Every node that ever started on this database, by name.
    nodes: Vec<NodeView>,
}

/// The `{name}` in a node's path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct NodeName {
    /// The node's name (`cluster.node`): 1 to 64 of `A-Z a-z 0-9 _ -`.
    #[param(example = "node-a", pattern = "^[A-Za-z0-9_-]{1,64}$")]
    name: String,
}

/// The nodes
///
/// Every node of the cluster with the sessions it holds a live lease on
/// and the age of its last heartbeat (by the database's clock). On one
/// node (sled): `{"cluster": false, "node": null, "nodes": []}`.
#[utoipa::path(
    get,
    operation_id = "list_nodes",
    path = "/api/nodes",
    tag = "cluster",
    responses(
        (status = 200, description = "The nodes", body = NodesView),
        (status = 503, description = "The database did not answer", body = ErrorBody),
    ),
)]
async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let Some(cluster) = &state.cluster else {
        return Ok(HttpResponse::Ok().json(NodesView { cluster: false, node: None, nodes: Vec::new() }));
    };
    let view = cluster.view().await?;
    Ok(HttpResponse::Ok().json(NodesView { cluster: true, node: Some(cluster.node.clone()), nodes: view.nodes }))
}

/// Drain a node
///
/// For maintenance: the node claims no session any more and hands its
/// sessions over, one per renewal (`lease_ttl / 3`) while another live
/// node has room: each session's browser closes on it first, then its
/// lease ends and another node starts it (same profile, no QR). The mark
/// stays across restarts until `undrain`. Answers the node.
#[utoipa::path(
    post,
    operation_id = "drain_node",
    path = "/api/nodes/{name}/drain",
    tag = "cluster",
    params(NodeName),
    responses(
        (status = 200, description = "The node, marked draining", body = NodeView),
        (status = 400, description = "Invalid node name", body = ErrorBody),
        (status = 404, description = "No node of that name ever started on this database", body = ErrorBody),
        (status = 409, description = "Not in cluster mode (`[store] backend` is not `postgres`)", body = ErrorBody),
        (status = 503, description = "The database did not answer; nothing changed", body = ErrorBody),
    ),
)]
async fn drain(state: web::Data<AppState>, path: web::Path<NodeName>) -> Result<HttpResponse, ApiError> {
    set_draining(&state, path.into_inner().name, true).await
}

/// Undrain a node
///
/// Clears the drain mark: the node claims its share of sessions again.
/// Sessions it handed over stay where they run now. Answers the node.
#[utoipa::path(
    post,
    operation_id = "undrain_node",
    path = "/api/nodes/{name}/undrain",
    tag = "cluster",
    params(NodeName),
    responses(
        (status = 200, description = "The node, no longer draining", body = NodeView),
        (status = 400, description = "Invalid node name", body = ErrorBody),
        (status = 404, description = "No node of that name ever started on this database", body = ErrorBody),
        (status = 409, description = "Not in cluster mode (`[store] backend` is not `postgres`)", body = ErrorBody),
        (status = 503, description = "The database did not answer; nothing changed", body = ErrorBody),
    ),
)]
async fn undrain(state: web::Data<AppState>, path: web::Path<NodeName>) -> Result<HttpResponse, ApiError> {
    set_draining(&state, path.into_inner().name, false).await
}

async fn set_draining(state: &AppState, name: String, draining: bool) -> Result<HttpResponse, ApiError> {
    if !crate::session_state::is_name(&name) {
        return Err(ApiError::bad_request(format!("invalid node name {name:?}: 1 to 64 of A-Z a-z 0-9 _ -")));
    }
    let Some(cluster) = &state.cluster else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not in cluster mode: nodes exist only with [store] backend = \"postgres\"; this daemon runs alone on sled",
        ));
    };
    let pg = cluster.pg().clone();
    let node = name.clone();
    let found = web::block(move || cluster::set_draining(&pg, &node, draining))
        .await
        .map_err(|e| ApiError::internal(format!("marking the node: {e}")))??;
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, format!("no node named {name:?} ever started on this database"));
    if !found {
        return Err(not_found());
    }
    tracing::info!(node = %name, draining, event = "cluster.drain_mark", "node {} {}", name, if draining { "draining" } else { "undrained" });
    let view = cluster.view().await?;
    let node = view.node(&name).cloned().ok_or_else(not_found)?;
    Ok(HttpResponse::Ok().json(node))
}
