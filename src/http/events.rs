//! Live events: `GET /api/events` (Server-Sent Events) and `GET /api/ws`
//! (WebSocket), both under the bearer token, both filtered by `?session=`
//! and `?campaign=`. Each carries the dotted events as JSON. The WebSocket
//! also carries the shapes the seeds' dashboards expect when WhatsApp drops
//! out from under a campaign:
//! `{"type": "status_update", "status": "failed", "message": "WhatsApp disconnected during operation"}`
//! and `{"type": "error", "message": "WhatsApp disconnected during message sending"}`.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt as _;
use tokio::sync::broadcast::error::RecvError;

use super::error::{ApiError, ErrorBody};
use super::AppState;
use crate::events::{Event, EventName, Filter};

declare_routes! {
    pub fn routes;
    get "/events" => sse,
    get "/ws" => ws,
}

/// A comment line every this often keeps proxies from closing an idle
/// stream and frees the place of a client that left: the server learns of a
/// closed connection only when a write to it fails, which is the second
/// write after the client went (the first draws the peer's reset). So an
/// SSE client's `limits.streams` place is free at most 10 s after it left.
const KEEPALIVE: Duration = Duration::from_secs(5);

/// Live events (Server-Sent Events)
///
/// Every event as `event: <name>` and `data: <Event as JSON>` (the `Event`
/// schema), a `: keepalive` comment every 5 s, and `event: lagged` with
/// `{"missed": n}` when this reader fell behind. Never carries QR strings or
/// tokens.
#[utoipa::path(
    get,
    operation_id = "events",
    path = "/api/events",
    tag = "events",
    params(Filter),
    responses(
        (status = 200, description = "The event stream", body = String, content_type = "text/event-stream"),
        (status = 400, description = "Unknown query parameter", body = ErrorBody),
        (status = 429, description = "`limits.streams` streams are open already", body = ErrorBody),
    ),
)]
async fn sse(state: web::Data<AppState>, filter: web::Query<Filter>) -> Result<HttpResponse, ApiError> {
    let permit = stream_permit(&state)?;
    let rx = state.events.subscribe();
    let filter = filter.into_inner();
    let tick = tokio::time::interval(KEEPALIVE);
    // The permit lives as long as the stream: dropped when the client goes.
    let stream = futures_util::stream::unfold((rx, tick, filter, permit), |(mut rx, mut tick, filter, permit)| async move {
        loop {
            tokio::select! {
                received = rx.recv() => match received {
                    Ok(e) if filter.accepts(&e) => {
                        let data = serde_json::to_string(&e).unwrap_or_default();
                        let chunk = format!("event: {}\ndata: {data}\n\n", e.event.as_str());
                        return Some((Ok::<_, actix_web::Error>(web::Bytes::from(chunk)), (rx, tick, filter, permit)));
                    }
                    Ok(_) => continue,
                    Err(RecvError::Lagged(n)) => {
                        let chunk = format!("event: lagged\ndata: {{\"missed\": {n}}}\n\n");
                        return Some((Ok(web::Bytes::from(chunk)), (rx, tick, filter, permit)));
                    }
                    Err(RecvError::Closed) => return None,
                },
                _ = tick.tick() => return Some((Ok(web::Bytes::from_static(b": keepalive\n\n")), (rx, tick, filter, permit))),
            }
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-store"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(stream))
}

/// A place among the `limits.streams` live streams, or 429.
fn stream_permit(state: &AppState) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    state.streams.clone().try_acquire_owned().map_err(|_| {
        let max = state.config.limits.streams;
        ApiError::new(
            actix_web::http::StatusCode::TOO_MANY_REQUESTS,
            format!("{max} live event streams are open; at most {max} (limits.streams)"),
        )
    })
}

/// The seeds' message shapes for an event, if it has one.
fn seed_shape(e: &Event) -> Option<serde_json::Value> {
    use crate::policy::campaign::Reason;
    let reason = e.reason.as_deref().map(Reason::parse);
    // Session-end reasons come only with FAILED, waiting only with PAUSED.
    match e.event {
        EventName::CampaignStatus if reason.as_ref().is_some_and(Reason::is_session_end) => Some(serde_json::json!({
            "type": "status_update", "status": "failed", "message": "WhatsApp disconnected during operation",
            "campaign": e.campaign, "session": e.session,
        })),
        EventName::CampaignStatus if reason == Some(Reason::WaitingForSession) => Some(serde_json::json!({
            "type": "error", "message": "WhatsApp disconnected during message sending",
            "campaign": e.campaign, "session": e.session,
        })),
        _ => None,
    }
}

/// Live events (WebSocket)
///
/// Upgrade to a WebSocket that carries every event as a JSON text frame (the
/// `Event` schema), plus `{"type": "status_update", "status": "failed", …}`
/// when a campaign fails with its session and `{"type": "error", …}` when
/// one pauses for it.
#[utoipa::path(
    get,
    operation_id = "websocket",
    path = "/api/ws",
    tag = "events",
    params(Filter),
    responses(
        (status = 101, description = "Switching Protocols: the WebSocket"),
        (status = 400, description = "Not a WebSocket upgrade request, or an unknown query parameter", body = ErrorBody),
        (status = 429, description = "`limits.streams` streams are open already", body = ErrorBody),
    ),
)]
async fn ws(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    filter: web::Query<Filter>,
) -> Result<HttpResponse, ApiError> {
    let permit = stream_permit(&state)?;
    let (response, mut session, mut incoming) =
        actix_ws::handle(&req, body).map_err(|e| ApiError::bad_request(format!("not a WebSocket request: {e}")))?;
    let mut rx = state.events.subscribe();
    let filter = filter.into_inner();
    actix_web::rt::spawn(async move {
        loop {
            tokio::select! {
                received = rx.recv() => match received {
                    Ok(e) if filter.accepts(&e) => {
                        let text = serde_json::to_string(&e).unwrap_or_default();
                        if session.text(text).await.is_err() {
                            break;
                        }
                        if let Some(shape) = seed_shape(&e) {
                            if session.text(shape.to_string()).await.is_err() {
                                break;
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => {
                        if session.text(serde_json::json!({"event": "lagged", "missed": n}).to_string()).await.is_err() {
                            break;
                        }
                    }
                    Err(RecvError::Closed) => break,
                },
                msg = incoming.next() => match msg {
                    Some(Ok(actix_ws::Message::Ping(bytes))) => {
                        if session.pong(&bytes).await.is_err() {
                            break;
                        }
                    }
                    Some(Ok(actix_ws::Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                },
            }
        }
        let _ = session.close(None).await;
        drop(permit);
    });
    Ok(response)
}
