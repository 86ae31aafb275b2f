//! The control API (actix-web). The HTTP layer never touches a browser: it
//! asks the Supervisor, and reads history from the store.
//!
//! Every module declares its routes once, with [`declare_routes!`]: that
//! gives both the function that registers them and the `(method, path)` list
//! the OpenAPI document (`GET /api/openapi.json`, [`openapi`]) is checked
//! against.

/// Declares a module's routes once:
/// `declare_routes! { pub fn routes; get "/sessions" => list, … }`
/// expands to that function, which registers each route with actix-web, and
/// to `ROUTES`, the same `(method, path)` pairs (relative to the scope the
/// function is configured in). A unit test of [`openapi`] fails unless the
/// OpenAPI document has exactly these operations.
macro_rules! declare_routes {
    ($vis:vis fn $register:ident; $($method:ident $path:literal => $handler:path),* $(,)?) => {
        /// `(method, path)` of every route the module's route function
        /// registers, relative to its scope; compared with the OpenAPI
        /// document by a unit test.
        pub(super) const ROUTES: &[(&str, &str)] = &[$((stringify!($method), $path)),*];

        /// Registers the routes listed in `ROUTES` (and `HEAD` beside every
        /// `GET`: the same handler, the body dropped by actix-http).
        $vis fn $register(cfg: &mut actix_web::web::ServiceConfig) {
            $(
                cfg.route($path, actix_web::web::$method().to($handler));
                if stringify!($method) == "get" {
                    cfg.route($path, actix_web::web::head().to($handler));
                }
            )*
        }
    };
}

pub mod auth;
mod campaigns;
pub mod codec_errors;
pub mod conventions;
mod dashboard;
pub mod error;
mod events;
pub mod forward;
pub mod metrics;
pub mod nodes;
mod numbers;
mod openapi;
mod sessions;
mod upload;
mod webhooks;

use actix::Addr;
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::middleware::from_fn;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::actors::campaigns::Campaigns;
use crate::actors::supervisor::Supervisor;
use crate::config::Config;
use crate::store::Store;
use auth::Token;
use error::ApiError;

/// The scope every route that needs the bearer token lives under.
pub const API_PREFIX: &str = "/api";

/// The modules under [`API_PREFIX`]: the function that registers each one's
/// routes, and those routes (see [`declare_routes!`]).
type RouteTable = (fn(&mut web::ServiceConfig), &'static [(&'static str, &'static str)]);
const API_MODULES: &[RouteTable] = &[
    (sessions::routes, sessions::ROUTES),
    (campaigns::routes, campaigns::ROUTES),
    (numbers::routes, numbers::ROUTES),
    (events::routes, events::ROUTES),
    (webhooks::routes, webhooks::ROUTES),
    (nodes::routes, nodes::ROUTES),
    (openapi::routes, openapi::ROUTES),
];

/// The routes outside [`API_PREFIX`], which need no token.
const ROOT_MODULE: RouteTable = (root_routes, ROUTES);

declare_routes! {
    fn root_routes;
    get "/health" => health,
    get "/metrics" => metrics::metrics,
    get "/dashboard" => dashboard::page,
}

/// Bytes a media send's form may have beside its file: the `to` and
/// `caption` parts, boundaries and part headers (64 KiB).
pub const MEDIA_FORM_OVERHEAD: usize = 64 * 1024;

/// The body bound of a media send's form: the largest `[media]` limit plus
/// [`MEDIA_FORM_OVERHEAD`].
pub fn media_form_bytes(config: &Config) -> usize {
    usize::try_from(config.media.largest()).unwrap_or(usize::MAX).saturating_add(MEDIA_FORM_OVERHEAD)
}

/// Every documented route as `(method, full path)`, for the OpenAPI sync test.
#[cfg(test)]
fn registered_routes() -> Vec<(String, String)> {
    let root = ROOT_MODULE.1.iter().map(|(m, p)| (m.to_string(), p.to_string()));
    let api = API_MODULES.iter().flat_map(|(_, routes)| routes.iter()).map(|(m, p)| (m.to_string(), format!("{API_PREFIX}{p}")));
    root.chain(api).collect()
}

/// Every route as `(method, full path)`, for 405 answers.
fn all_routes() -> Vec<(&'static str, String)> {
    let root = ROOT_MODULE.1.iter().map(|(m, p)| (*m, p.to_string()));
    let api = API_MODULES.iter().flat_map(|(_, routes)| routes.iter()).map(|(m, p)| (*m, format!("{API_PREFIX}{p}")));
    root.chain(api).collect()
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub supervisor: Addr<Supervisor>,
    pub campaigns: Addr<Campaigns>,
    pub store: Store,
    pub config: std::sync::Arc<Config>,
    pub events: crate::events::Events,
    /// The webhooks: hooks, counts, dead letters.
    pub webhooks: crate::webhooks::Webhooks,
    /// `http.max_body_bytes`.
    pub max_body: usize,
    /// Recipient counts of every campaign.
    pub tally: crate::campaign::Tally,
    /// The last `sends_per_hour` of each campaign asked for.
    pub sends: crate::campaign::SendsCache,
    /// Campaign creations being checked (`limits.concurrent_creates`).
    pub creates: std::sync::Arc<tokio::sync::Semaphore>,
    /// Live event streams open (`limits.streams`).
    pub streams: std::sync::Arc<tokio::sync::Semaphore>,
    /// Cluster mode: the nodes, the leases and forwarding
    /// ([`forward`]); `None` on one node.
    pub cluster: Option<nodes::ClusterApi>,
}

/// Registers every route on an actix-web `App`.
pub fn configure(cfg: &mut web::ServiceConfig, state: AppState, token: Token, requests: metrics::RequestCounts, max_body: usize) {
    cfg.app_data(web::Data::new(state))
        .app_data(web::Data::new(requests))
        .app_data(web::Data::new(token))
        .app_data(web::JsonConfig::default().limit(max_body).error_handler(json_error))
        .app_data(web::PayloadConfig::default().limit(max_body))
        .app_data(web::PathConfig::default().error_handler(path_error))
        .app_data(web::QueryConfig::default().error_handler(query_error))
        .app_data(web::Data::new(conventions::RouteTable::new(all_routes())))
        .configure(ROOT_MODULE.0);
    // The token is checked first (the last `wrap` runs first); only then
    // may a request be forwarded to the node that runs its session.
    let mut api = web::scope(API_PREFIX).wrap(from_fn(forward::forward)).wrap(from_fn(auth::require_token));
    for (register, _) in API_MODULES {
        api = api.configure(*register);
    }
    cfg.service(api).default_service(web::to(conventions::no_route));
}

fn json_error(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let api = match &err {
        JsonPayloadError::Payload(p) => conventions::payload_error(p),
        JsonPayloadError::OverflowKnownLength { length, limit } => ApiError::new(
            actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body of {length} bytes is larger than the limit of {limit} bytes (http.max_body_bytes)"),
        ),
        JsonPayloadError::Overflow { limit } => ApiError::new(
            actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than the limit of {limit} bytes (http.max_body_bytes)"),
        ),
        JsonPayloadError::ContentType => ApiError::bad_request("expected Content-Type: application/json"),
        JsonPayloadError::Deserialize(e) => ApiError::bad_request(format!("invalid JSON body: {e}")),
        other => ApiError::bad_request(format!("invalid request body: {other}")),
    };
    api.into()
}

fn path_error(err: PathError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::bad_request(format!("invalid path: {err}")).into()
}

fn query_error(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::bad_request(format!("invalid query: {err}")).into()
}

/// `GET /health` answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Health {
    /// `ok`, or `degraded` while something the daemon needs fails.
    #[schema(example = "ok")]
    status: &'static str,
    /// What is failing, one line each (only when `degraded`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    reasons: Vec<String>,
}

/// Why the daemon is degraded: one line per failing part; empty when all is
/// well. Today the only part checked here is the store (sessions report
/// their own states).
pub fn degraded_reasons(store: &Store) -> Vec<String> {
    match store.failure() {
        Some(f) => vec![format!(
            "store: writes fail since {} ms ({} failures): {}; campaigns are paused until a write succeeds",
            f.since_ms, f.failures, f.error
        )],
        None => Vec::new(),
    }
}

/// Liveness and health
///
/// 200 `{"status": "ok"}` while the daemon serves HTTP and its store takes
/// writes; 503 `{"status": "degraded", "reasons": [...]}` while store
/// writes fail (campaign sends wait meanwhile). Needs no token.
#[utoipa::path(
    get,
    operation_id = "health",
    path = "/health",
    tag = "daemon",
    responses(
        (status = 200, description = "The daemon is up", body = Health),
        (status = 503, description = "Degraded: the store does not take writes", body = Health),
    ),
)]
async fn health(state: web::Data<AppState>) -> HttpResponse {
    let reasons = degraded_reasons(&state.store);
    if reasons.is_empty() {
        HttpResponse::Ok().json(Health { status: "ok", reasons })
    } else {
        HttpResponse::ServiceUnavailable().json(Health { status: "degraded", reasons })
    }
}

/// For `HttpServer::on_connect`: turns Nagle's algorithm off on every
/// accepted connection. Small writes in a row (WebSocket frames, a response
/// after a request) would otherwise wait for the peer's delayed ACK (40 ms on
/// Linux) once the connection leaves TCP's quick-ack start.
pub fn no_delay(conn: &dyn std::any::Any, _ext: &mut actix_web::dev::Extensions) {
    if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
        let _ = tcp.set_nodelay(true);
    }
}
