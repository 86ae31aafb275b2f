//! `/api/webhooks`: the configured hooks and their counts, the dead
//! letters, and replaying or deleting one.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::AppState;
use crate::webhooks::{Delivery, HookKind, Replay};

declare_routes! {
    pub fn routes;
    get "/webhooks" => list,
    get "/webhooks/dead-letters" => dead_letters,
    post "/webhooks/dead-letters/{delivery}/replay" => replay,
    delete "/webhooks/dead-letters/{delivery}" => delete,
}

/// The `{delivery}` in a dead letter's path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct DeliveryId {
    /// The delivery's id (`X-Wasup-Delivery`), `dlv_` and 16 hex digits.
    #[param(example = "dlv_19b7a4c0f0012345")]
    delivery: String,
}

/// One configured webhook; never its secret.
#[derive(Serialize, ToSchema)]
struct HookView {
    /// `wh_` and 16 hex digits, stable across restarts (from the kind and
    /// the URL).
    #[schema(example = "wh_5d41402abc4b2a76")]
    id: String,
    /// `events` (`[[webhooks]]`) or `alerts` (`[[alerts.webhooks]]`).
    kind: HookKind,
    /// The URL without user info, query or fragment.
    #[schema(example = "https://hooks.example.com/wasup")]
    url: String,
    /// The event patterns it subscribes to (empty for alert hooks).
    events: Vec<String>,
    /// Deliveries waiting for it.
    pending: u64,
}

/// `GET /api/webhooks` answer.
#[derive(Serialize, ToSchema)]
struct WebhooksView {
    webhooks: Vec<HookView>,
    /// Deliveries waiting, all hooks.
    pending: u64,
    /// Dead letters now.
    dead_letters: u64,
    /// Deliveries that got a 2xx since the daemon started.
    delivered: u64,
    /// Attempts without a 2xx since the daemon started.
    failed_attempts: u64,
    /// Deliveries moved to the dead letters since the daemon started.
    dead_lettered: u64,
    /// Events lost before the outbox since the daemon started (its queue
    /// was full); 0 unless the disk was stuck.
    dropped: u64,
    /// Deliveries the store did not take (a full disk) since the daemon
    /// started, attempted from memory only.
    unstored: u64,
}

/// A delivery: pending, or a dead letter.
#[derive(Serialize, ToSchema)]
struct DeliveryView {
    /// `X-Wasup-Delivery`: `dlv_` and 16 hex digits.
    #[schema(example = "dlv_19b7a4c0f0012345")]
    id: String,
    /// The hook's id.
    webhook: String,
    /// The hook's URL (without user info, query or fragment); null when the
    /// hook is no longer configured.
    url: Option<String>,
    /// Dotted event name (`X-Wasup-Event`).
    #[schema(example = "session.status")]
    event: String,
    attempts: u32,
    /// When it was made (or replayed).
    first_at_ms: u64,
    /// When the next attempt is due (pending only).
    next_at_ms: Option<u64>,
    /// When it became a dead letter.
    dead_at_ms: Option<u64>,
    /// The last attempt's HTTP status.
    last_status: Option<u16>,
    /// What the last attempt got.
    last_error: Option<String>,
    /// The signed body, parsed.
    #[schema(value_type = Object)]
    body: serde_json::Value,
}

impl DeliveryView {
    fn new(state: &AppState, d: Delivery) -> Self {
        let url = state.webhooks.hooks().iter().find(|h| h.id == d.hook).map(|h| h.shown_url.clone());
        Self {
            url,
            body: serde_json::from_str(&d.body).unwrap_or(serde_json::Value::String(d.body)),
            next_at_ms: d.dead_at_ms.is_none().then_some(d.next_at_ms),
            id: d.id,
            webhook: d.hook,
            event: d.event,
            attempts: d.attempts,
            first_at_ms: d.first_at_ms,
            dead_at_ms: d.dead_at_ms,
            last_status: d.last_status,
            last_error: d.last_error,
        }
    }
}

/// Webhooks and their counts
///
/// Every `[[webhooks]]` and `[[alerts.webhooks]]` hook (never its secret),
/// with the deliveries waiting for it, and the counts of the outbox.
#[utoipa::path(
    get,
    operation_id = "list_webhooks",
    path = "/api/webhooks",
    tag = "webhooks",
    responses((status = 200, description = "The webhooks", body = WebhooksView)),
)]
async fn list(state: web::Data<AppState>) -> HttpResponse {
    use std::sync::atomic::Ordering::Relaxed;
    let w = &state.webhooks;
    let s = w.stats();
    let webhooks = w
        .hooks()
        .iter()
        .map(|h| HookView {
            id: h.id.clone(),
            kind: h.kind,
            url: h.shown_url.clone(),
            events: h.events.clone(),
            pending: s.pending_of(&h.id),
        })
        .collect();
    HttpResponse::Ok().json(WebhooksView {
        webhooks,
        pending: s.pending.load(Relaxed),
        dead_letters: s.dead_letters.load(Relaxed),
        delivered: s.delivered.load(Relaxed),
        failed_attempts: s.failed_attempts.load(Relaxed),
        dead_lettered: s.dead_lettered.load(Relaxed),
        dropped: s.dropped.load(Relaxed),
        unstored: s.unstored.load(Relaxed),
    })
}

/// `GET /api/webhooks/dead-letters` query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct DeadLetterQuery {
    /// At most this many, oldest first: 1 to 1000, default 100.
    #[param(example = 100, minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// Dead letters
///
/// Deliveries given up on (a 4xx other than 408 and 429, or
/// `webhook_delivery.retry_for` passed), oldest first.
#[utoipa::path(
    get,
    operation_id = "list_dead_letters",
    path = "/api/webhooks/dead-letters",
    tag = "webhooks",
    params(DeadLetterQuery),
    responses(
        (status = 200, description = "Dead letters, oldest first", body = [DeliveryView]),
        (status = 400, description = "`limit` is not 1 to 1000", body = ErrorBody),
        (status = 503, description = "The store cannot be read now", body = ErrorBody),
    ),
)]
async fn dead_letters(state: web::Data<AppState>, query: web::Query<DeadLetterQuery>) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit must be 1 to 1000, got {limit}")));
    }
    let list = state.webhooks.dead_letters(limit)?;
    Ok(HttpResponse::Ok().json(list.into_iter().map(|d| DeliveryView::new(&state, d)).collect::<Vec<_>>()))
}

/// Replay a dead letter
///
/// Moves it back to the outbox (stored and flushed before the answer), due
/// now, with its attempts and `webhook_delivery.retry_for` starting again.
/// Same id, same body, signed with the hook's current secret.
#[utoipa::path(
    post,
    operation_id = "replay_dead_letter",
    path = "/api/webhooks/dead-letters/{delivery}/replay",
    tag = "webhooks",
    params(DeliveryId),
    responses(
        (status = 202, description = "Back in the outbox, due now", body = DeliveryView),
        (status = 404, description = "No dead letter has that id", body = ErrorBody),
        (status = 409, description = "Its webhook is no longer configured; it stays a dead letter", body = ErrorBody),
        (status = 503, description = "The store does not take writes now; nothing changed", body = ErrorBody),
    ),
)]
async fn replay(state: web::Data<AppState>, path: web::Path<DeliveryId>) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner().delivery;
    let webhooks = state.webhooks.clone();
    let asked = id.clone();
    let replayed = web::block(move || webhooks.replay(&asked)).await.map_err(|e| ApiError::internal(e.to_string()))??;
    match replayed {
        Replay::Scheduled(d) => Ok(HttpResponse::Accepted().json(DeliveryView::new(&state, d))),
        Replay::NotFound => Err(ApiError::new(StatusCode::NOT_FOUND, format!("no dead letter {id:?}"))),
        Replay::HookGone => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("dead letter {id:?} belongs to a webhook that is no longer configured; delete it or configure the webhook again"),
        )),
    }
}

/// Delete a dead letter
#[utoipa::path(
    delete,
    operation_id = "delete_dead_letter",
    path = "/api/webhooks/dead-letters/{delivery}",
    tag = "webhooks",
    params(DeliveryId),
    responses(
        (status = 200, description = "Deleted; the dead letter as it was", body = DeliveryView),
        (status = 404, description = "No dead letter has that id", body = ErrorBody),
        (status = 503, description = "The store does not take writes now; nothing changed", body = ErrorBody),
    ),
)]
async fn delete(state: web::Data<AppState>, path: web::Path<DeliveryId>) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner().delivery;
    let webhooks = state.webhooks.clone();
    let asked = id.clone();
    let deleted = web::block(move || webhooks.delete(&asked)).await.map_err(|e| ApiError::internal(e.to_string()))??;
    match deleted {
        Some(d) => Ok(HttpResponse::Ok().json(DeliveryView::new(&state, d))),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, format!("no dead letter {id:?}"))),
    }
}
