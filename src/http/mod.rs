//! The control API (actix-web). The HTTP layer never touches a browser: it
//! asks the Supervisor, and reads history from the store.

pub mod auth;
mod campaigns;
mod dashboard;
pub mod error;
mod events;
pub mod metrics;
mod sessions;

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

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub supervisor: Addr<Supervisor>,
    pub campaigns: Addr<Campaigns>,
    pub store: Store,
    pub config: std::sync::Arc<Config>,
    pub events: crate::events::Events,
    /// `http.max_body_bytes`.
    pub max_body: usize,
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
        .route("/health", web::get().to(health))
        .route("/metrics", web::get().to(metrics::metrics))
        .route("/dashboard", web::get().to(dashboard::page))
        .service(
            web::scope("/api")
                .wrap(from_fn(auth::require_token))
                .configure(sessions::routes)
                .configure(campaigns::routes)
                .configure(events::routes),
        )
        .default_service(web::to(not_found));
}

fn json_error(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let api = match &err {
        JsonPayloadError::OverflowKnownLength { length, limit } => ApiError::new(
            actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body of {length} bytes is larger than the limit of {limit} bytes"),
        ),
        JsonPayloadError::Overflow { limit } => ApiError::new(
            actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than the limit of {limit} bytes"),
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

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    use actix_web::ResponseError as _;
    ApiError::new(
        actix_web::http::StatusCode::NOT_FOUND,
        format!("no route for {} {}", req.method(), req.path()),
    )
    .error_response()
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
