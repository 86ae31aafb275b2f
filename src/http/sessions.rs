//! `/api/sessions`: create, inspect, control, pair (QR) and send.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::error::ApiError;
use super::AppState;
use crate::actors::supervisor::{Command, CreateSession, GetQr, GetSession, ListSessions, SendMessage, SessionCommand};
use crate::events::Event;
use crate::session_state::validate_name;
use crate::whatsapp::{ack_name, number};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/sessions", web::get().to(list))
        .route("/sessions", web::post().to(create))
        .route("/sessions/{name}", web::get().to(get))
        .route("/sessions/{name}", web::delete().to(delete))
        .route("/sessions/{name}/start", web::post().to(start))
        .route("/sessions/{name}/stop", web::post().to(stop))
        .route("/sessions/{name}/restart", web::post().to(restart))
        .route("/sessions/{name}/logout", web::post().to(logout))
        .route("/sessions/{name}/recover", web::post().to(recover))
        .route("/sessions/{name}/qr", web::get().to(qr))
        .route("/sessions/{name}/messages", web::post().to(send))
        .route("/sessions/{name}/history", web::get().to(history));
    // Fault injection, for the tests of supervision: debug builds only, and
    // only with WASUP_FAULT_INJECTION=1 in the daemon's environment.
    #[cfg(debug_assertions)]
    if std::env::var("WASUP_FAULT_INJECTION").as_deref() == Ok("1") {
        cfg.route("/sessions/{name}/_fault/panic", web::post().to(inject_panic));
        cfg.route("/_fault/wedge/{seconds}", web::post().to(wedge));
    }
}

#[cfg(debug_assertions)]
async fn wedge(state: web::Data<AppState>, seconds: web::Path<u64>) -> HttpResponse {
    state.supervisor.do_send(crate::actors::supervisor::Wedge { seconds: seconds.into_inner() });
    HttpResponse::Accepted().json(serde_json::json!({"injected": "wedge"}))
}

#[cfg(debug_assertions)]
async fn inject_panic(state: web::Data<AppState>, name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    use crate::actors::supervisor::InjectPanic;
    state.supervisor.send(InjectPanic { name: name.into_inner() }).await??;
    Ok(HttpResponse::Accepted().json(serde_json::json!({"injected": "panic"})))
}

/// `POST /api/sessions` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    #[serde(default = "yes")]
    start: bool,
}

fn yes() -> bool {
    true
}

async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.supervisor.send(ListSessions).await?))
}

async fn create(state: web::Data<AppState>, body: web::Json<CreateBody>) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let view = state.supervisor.send(CreateSession { name: body.name, start: body.start }).await??;
    Ok(HttpResponse::Created().json(view))
}

async fn get(state: web::Data<AppState>, name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let view = state.supervisor.send(GetSession { name: name.into_inner() }).await??;
    Ok(HttpResponse::Ok().json(view))
}

async fn command(state: &AppState, name: String, command: Command) -> Result<HttpResponse, ApiError> {
    let view = state.supervisor.send(SessionCommand { name, command }).await??;
    Ok(HttpResponse::Ok().json(view))
}

async fn delete(state: web::Data<AppState>, name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    command(&state, name.into_inner(), Command::Delete).await
}
async fn start(state: web::Data<AppState>, name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    command(&state, name.into_inner(), Command::Start).await
}
async fn stop(state: web::Data<AppState>, name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    command(&state, name.into_inner(), Command::Stop).await
}
async fn restart(state: web::Data<AppState>, name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    command(&state, name.into_inner(), Command::Restart).await
}
async fn logout(state: web::Data<AppState>, name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    command(&state, name.into_inner(), Command::Logout).await
}
async fn recover(state: web::Data<AppState>, name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    command(&state, name.into_inner(), Command::Recover).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QrQuery {
    format: Option<String>,
}

async fn qr(
    state: web::Data<AppState>,
    name: web::Path<String>,
    query: web::Query<QrQuery>,
) -> Result<HttpResponse, ApiError> {
    let format = query.into_inner().format.unwrap_or_else(|| "png".into());
    if !matches!(format.as_str(), "png" | "svg" | "raw") {
        return Err(ApiError::bad_request(format!("unknown format {format:?}: use png, svg or raw")));
    }
    let qr = state.supervisor.send(GetQr { name: name.into_inner() }).await??;
    let render_error = |e: crate::qr::QrError| ApiError::internal(e.to_string());
    Ok(match format.as_str() {
        "raw" => HttpResponse::Ok().json(serde_json::json!({ "qr": qr })),
        "svg" => HttpResponse::Ok().content_type("image/svg+xml").body(crate::qr::svg(&qr).map_err(render_error)?),
        _ => HttpResponse::Ok().content_type("image/png").body(crate::qr::png(&qr).map_err(render_error)?),
    })
}

/// `POST /api/sessions/{name}/messages` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    /// `"+49 151 12345678"`, `"4915112345678"` or a chat id.
    to: String,
    text: String,
}

/// Longest text accepted, in characters (WhatsApp's own limit is 65,536).
const MAX_TEXT_CHARS: usize = 65_536;

async fn send(
    state: web::Data<AppState>,
    name: web::Path<String>,
    body: web::Json<SendBody>,
) -> Result<HttpResponse, ApiError> {
    let name = name.into_inner();
    validate_name(&name).map_err(ApiError::bad_request)?;
    let body = body.into_inner();
    if body.text.trim().is_empty() {
        return Err(ApiError::unprocessable("text is empty"));
    }
    if body.text.chars().count() > MAX_TEXT_CHARS {
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("text is longer than {MAX_TEXT_CHARS} characters")));
    }
    let to = number::parse_recipient(&body.to).map_err(|e| ApiError::unprocessable(e.to_string()))?;
    let result = state
        .supervisor
        .send(SendMessage { name: name.clone(), to: to.clone(), text: body.text, id: None, typing: std::time::Duration::ZERO })
        .await?;
    let sent = match result {
        Ok(sent) => sent,
        Err(e) => {
            let event = Event::session("message.failed", &name).detail(serde_json::json!({"to": to.as_str(), "error": e.to_string()}));
            state.events.publish(event);
            return Err(e.into());
        }
    };
    let event = Event::session("message.sent", &name).detail(serde_json::json!({"id": sent.id, "to": sent.to, "ack": ack_name(sent.ack)}));
    state.events.publish(event);
    Ok(HttpResponse::Created().json(serde_json::json!({
        "id": sent.id,
        "to": sent.to,
        "ack": ack_name(sent.ack),
    })))
}

async fn history(state: web::Data<AppState>, name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let name = name.into_inner();
    // 400 for a bad name, 404 for an unknown one.
    state.supervisor.send(GetSession { name: name.clone() }).await??;
    let history = state.store.history(&name).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(HttpResponse::Ok().json(history))
}
