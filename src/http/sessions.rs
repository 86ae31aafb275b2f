//! `/api/sessions`: create, inspect, control, pair (QR) and send.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::AppState;
use crate::actors::supervisor::{Command, CreateSession, GetQr, GetSession, ListSessions, SendMessage, SessionCommand, SessionView};
use crate::events::{Event, EventName};
use crate::session_state::validate_name;
use crate::store::HistoryEntry;
use crate::whatsapp::{ack_name, number};

declare_routes! {
    fn documented_routes;
    get "/sessions" => list,
    post "/sessions" => create,
    get "/sessions/{name}" => get,
    delete "/sessions/{name}" => delete,
    post "/sessions/{name}/start" => start,
    post "/sessions/{name}/stop" => stop,
    post "/sessions/{name}/restart" => restart,
    post "/sessions/{name}/logout" => logout,
    post "/sessions/{name}/recover" => recover,
    get "/sessions/{name}/qr" => qr,
    post "/sessions/{name}/messages" => send,
    get "/sessions/{name}/history" => history,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    // Every route of the API goes into `declare_routes!` above (and so into
    // the OpenAPI document), except the fault injection below.
    documented_routes(cfg);
    // Fault injection, for the tests of supervision: debug builds only, and
    // only with WASUP_FAULT_INJECTION=1 in the daemon's environment. Not in
    // the OpenAPI document.
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

/// The `{name}` in a session's path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct SessionName {
    /// The session's name: 1 to 64 of `A-Z a-z 0-9 _ -`.
    #[param(example = "acme", pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub name: String,
}

/// `POST /api/sessions` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewSession, example = json!({"name": "acme", "start": true}))]
struct CreateBody {
    /// 1 to 64 of `A-Z a-z 0-9 _ -`.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    name: String,
    /// Start the browser now (and after every daemon start).
    #[serde(default = "yes")]
    #[schema(default = true)]
    start: bool,
}

fn yes() -> bool {
    true
}

/// List sessions
#[utoipa::path(
    get,
    operation_id = "list_sessions",
    path = "/api/sessions",
    tag = "sessions",
    responses((status = 200, description = "Every session", body = [SessionView])),
)]
async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.supervisor.send(ListSessions).await?))
}

/// Create a session
///
/// Stored (and flushed) before the answer; started now when `start`.
#[utoipa::path(
    post,
    operation_id = "create_session",
    path = "/api/sessions",
    tag = "sessions",
    request_body = CreateBody,
    responses(
        (status = 201, description = "Created", body = SessionView),
        (status = 400, description = "Invalid JSON, an unknown field or an invalid name", body = ErrorBody),
        (status = 409, description = "A session of that name exists", body = ErrorBody),
        (status = 413, description = "Body over `http.max_body_bytes`", body = ErrorBody),
    ),
)]
async fn create(state: web::Data<AppState>, body: web::Json<CreateBody>) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let view = state.supervisor.send(CreateSession { name: body.name, start: body.start }).await??;
    Ok(HttpResponse::Created().json(view))
}

/// One session
#[utoipa::path(
    get,
    operation_id = "get_session",
    path = "/api/sessions/{name}",
    tag = "sessions",
    params(SessionName),
    responses(
        (status = 200, description = "The session", body = SessionView),
        (status = 400, description = "Invalid session name", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
    ),
)]
async fn get(state: web::Data<AppState>, path: web::Path<SessionName>) -> Result<HttpResponse, ApiError> {
    let view = state.supervisor.send(GetSession { name: path.into_inner().name }).await??;
    Ok(HttpResponse::Ok().json(view))
}

async fn command(state: &AppState, name: String, command: Command) -> Result<HttpResponse, ApiError> {
    let view = state.supervisor.send(SessionCommand { name, command }).await??;
    Ok(HttpResponse::Ok().json(view))
}

/// Delete a session
///
/// Stops it and deletes its profile and history; answers the session as it was.
#[utoipa::path(
    delete,
    operation_id = "delete_session",
    path = "/api/sessions/{name}",
    tag = "sessions",
    params(SessionName),
    responses(
        (status = 200, description = "Deleted; the session as it was", body = SessionView),
        (status = 400, description = "Invalid session name", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
        (status = 503, description = "The command could not be recorded (the store does not take writes now); nothing was done", body = ErrorBody),
    ),
)]
async fn delete(state: web::Data<AppState>, path: web::Path<SessionName>) -> Result<HttpResponse, ApiError> {
    command(&state, path.into_inner().name, Command::Delete).await
}

/// Start a session
///
/// Desired running; starts the browser now.
#[utoipa::path(
    post,
    operation_id = "start_session",
    path = "/api/sessions/{name}/start",
    tag = "sessions",
    params(SessionName),
    responses(
        (status = 200, description = "The session", body = SessionView),
        (status = 400, description = "Invalid session name", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
        (status = 503, description = "The command could not be recorded (the store does not take writes now); nothing was done", body = ErrorBody),
    ),
)]
async fn start(state: web::Data<AppState>, path: web::Path<SessionName>) -> Result<HttpResponse, ApiError> {
    command(&state, path.into_inner().name, Command::Start).await
}

/// Stop a session
///
/// Desired stopped; closes the browser (the profile is kept).
#[utoipa::path(
    post,
    operation_id = "stop_session",
    path = "/api/sessions/{name}/stop",
    tag = "sessions",
    params(SessionName),
    responses(
        (status = 200, description = "The session", body = SessionView),
        (status = 400, description = "Invalid session name", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
        (status = 503, description = "The command could not be recorded (the store does not take writes now); nothing was done", body = ErrorBody),
    ),
)]
async fn stop(state: web::Data<AppState>, path: web::Path<SessionName>) -> Result<HttpResponse, ApiError> {
    command(&state, path.into_inner().name, Command::Stop).await
}

/// Restart a session
///
/// Closes and starts the browser on the same profile (no new QR).
#[utoipa::path(
    post,
    operation_id = "restart_session",
    path = "/api/sessions/{name}/restart",
    tag = "sessions",
    params(SessionName),
    responses(
        (status = 200, description = "The session", body = SessionView),
        (status = 400, description = "Invalid session name", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
        (status = 503, description = "The command could not be recorded (the store does not take writes now); nothing was done", body = ErrorBody),
    ),
)]
async fn restart(state: web::Data<AppState>, path: web::Path<SessionName>) -> Result<HttpResponse, ApiError> {
    command(&state, path.into_inner().name, Command::Restart).await
}

/// Log a session out
///
/// Logs out in WhatsApp, wipes the profile and offers a new QR.
#[utoipa::path(
    post,
    operation_id = "logout_session",
    path = "/api/sessions/{name}/logout",
    tag = "sessions",
    params(SessionName),
    responses(
        (status = 200, description = "The session", body = SessionView),
        (status = 400, description = "Invalid session name", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
    ),
)]
async fn logout(state: web::Data<AppState>, path: web::Path<SessionName>) -> Result<HttpResponse, ApiError> {
    command(&state, path.into_inner().name, Command::Logout).await
}

/// Recover a session
///
/// Clears the restart budget and restarts a `FAILED` or `BLOCKED` session.
#[utoipa::path(
    post,
    operation_id = "recover_session",
    path = "/api/sessions/{name}/recover",
    tag = "sessions",
    params(SessionName),
    responses(
        (status = 200, description = "The session", body = SessionView),
        (status = 400, description = "Invalid session name", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
        (status = 409, description = "The session is neither `FAILED` nor `BLOCKED`", body = ErrorBody),
        (status = 503, description = "The command could not be recorded (the store does not take writes now); nothing was done", body = ErrorBody),
    ),
)]
async fn recover(state: web::Data<AppState>, path: web::Path<SessionName>) -> Result<HttpResponse, ApiError> {
    command(&state, path.into_inner().name, Command::Recover).await
}

/// How `GET /api/sessions/{name}/qr` renders the QR.
#[derive(Clone, Copy, ToSchema)]
#[schema(rename_all = "lowercase")]
enum QrFormat {
    /// `image/png`.
    Png,
    /// `image/svg+xml`.
    Svg,
    /// `{"qr": "…"}`: the string the phone scans.
    Raw,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct QrQuery {
    /// `png` (the default), `svg` or `raw`.
    #[param(value_type = Option<QrFormat>, example = "raw")]
    format: Option<String>,
}

/// `GET /api/sessions/{name}/qr?format=raw` answer.
#[derive(Serialize, ToSchema)]
struct QrRaw {
    /// The string the phone scans.
    qr: String,
}

/// The QR to scan
///
/// Only while the session is `SCAN_QR`.
#[utoipa::path(
    get,
    operation_id = "get_qr",
    path = "/api/sessions/{name}/qr",
    tag = "sessions",
    params(SessionName, QrQuery),
    responses(
        (status = 200, description = "The QR, as the format asks", content(
            ("image/png"),
            (String = "image/svg+xml"),
            (QrRaw = "application/json"),
        )),
        (status = 400, description = "Unknown format or query parameter, or an invalid session name", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
        (status = 409, description = "The session is not `SCAN_QR`", body = ErrorBody),
    ),
)]
async fn qr(state: web::Data<AppState>, path: web::Path<SessionName>, query: web::Query<QrQuery>) -> Result<HttpResponse, ApiError> {
    let format = match query.into_inner().format.as_deref() {
        None | Some("png") => QrFormat::Png,
        Some("svg") => QrFormat::Svg,
        Some("raw") => QrFormat::Raw,
        Some(other) => return Err(ApiError::bad_request(format!("unknown format {other:?}: use png, svg or raw"))),
    };
    let qr = state.supervisor.send(GetQr { name: path.into_inner().name }).await??;
    let render_error = |e: crate::qr::QrError| ApiError::internal(e.to_string());
    Ok(match format {
        QrFormat::Raw => HttpResponse::Ok().json(QrRaw { qr }),
        QrFormat::Svg => HttpResponse::Ok().content_type("image/svg+xml").body(crate::qr::svg(&qr).map_err(render_error)?),
        QrFormat::Png => HttpResponse::Ok().content_type("image/png").body(crate::qr::png(&qr).map_err(render_error)?),
    })
}

/// `POST /api/sessions/{name}/messages` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewMessage, example = json!({"to": "+49 151 12345678", "text": "Hello from wasup"}))]
struct SendBody {
    /// `"+49 151 12345678"`, `"4915112345678"` or a chat id.
    to: String,
    /// Not empty; at most 65,536 characters.
    text: String,
    /// Send even if the number is on the session's opt-out list (default
    /// false: such a send is refused with 409).
    #[serde(default)]
    ignore_opt_out: bool,
}

/// A message sent through the API.
#[derive(Serialize, ToSchema)]
struct SentView {
    /// The message id.
    id: String,
    /// The chat id it went to (`<digits>@c.us`).
    to: String,
    /// `PENDING`, `SERVER`, `DEVICE`, `READ` (or `PLAYED`, `ERROR`); acks
    /// keep arriving as `message.ack` events after the answer.
    #[schema(example = "SERVER")]
    ack: &'static str,
}

/// Longest text accepted, in characters (WhatsApp's own limit is 65,536).
const MAX_TEXT_CHARS: usize = 65_536;

/// Send a text
///
/// The session must be `CONNECTED`. Waits up to `whatsapp.ack_wait` for the
/// server's ack.
#[utoipa::path(
    post,
    operation_id = "send_message",
    path = "/api/sessions/{name}/messages",
    tag = "sessions",
    params(SessionName),
    request_body = SendBody,
    responses(
        (status = 201, description = "Sent", body = SentView),
        (status = 400, description = "Invalid JSON, an unknown field or an invalid session name", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
        (status = 409, description = "The session is not `CONNECTED`, or the number is on its opt-out list (and `ignore_opt_out` is not set)", body = ErrorBody),
        (status = 413, description = "Body over `http.max_body_bytes`, or text over 65,536 characters", body = ErrorBody),
        (status = 422, description = "Empty text, or a number that is not valid E.164 or not on WhatsApp", body = ErrorBody),
        (status = 502, description = "The page failed to send", body = ErrorBody),
    ),
)]
async fn send(state: web::Data<AppState>, path: web::Path<SessionName>, body: web::Json<SendBody>) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner().name;
    validate_name(&name).map_err(ApiError::bad_request)?;
    let body = body.into_inner();
    if body.text.trim().is_empty() {
        return Err(ApiError::unprocessable("text is empty"));
    }
    if body.text.chars().count() > MAX_TEXT_CHARS {
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("text is longer than {MAX_TEXT_CHARS} characters")));
    }
    let to = number::parse_recipient(&body.to).map_err(|e| ApiError::unprocessable(e.to_string()))?;
    if !body.ignore_opt_out && super::numbers::opted_out(&state, &name, to.as_str())? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("{} is on the session's opt-out list; send with \"ignore_opt_out\": true to send anyway", to.as_str()),
        ));
    }
    let result = state
        .supervisor
        .send(SendMessage { name: name.clone(), to: to.clone(), text: body.text, id: None, typing: std::time::Duration::ZERO })
        .await?;
    let sent = match result {
        Ok(sent) => sent,
        Err(e) => {
            let event =
                Event::session(EventName::MessageFailed, &name).detail(serde_json::json!({"to": to.as_str(), "error": e.to_string()}));
            state.events.publish(event);
            return Err(e.into());
        }
    };
    let event =
        Event::session(EventName::MessageSent, &name).detail(serde_json::json!({"id": sent.id, "to": sent.to, "ack": ack_name(sent.ack)}));
    state.events.publish(event);
    Ok(HttpResponse::Created().json(SentView { id: sent.id, to: sent.to, ack: ack_name(sent.ack) }))
}

/// A session's history
///
/// Events, oldest first: status changes (`session.status`) and decisions
/// (`session.restart_scheduled` with `{"attempt", "delay_ms"}`,
/// `session.health` with `{"key_files", "max"}` or `{"browser_pss_bytes", "max"}`).
#[utoipa::path(
    get,
    operation_id = "get_history",
    path = "/api/sessions/{name}/history",
    tag = "sessions",
    params(SessionName),
    responses(
        (status = 200, description = "The events, oldest first", body = [HistoryEntry]),
        (status = 400, description = "Invalid session name", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
    ),
)]
async fn history(state: web::Data<AppState>, path: web::Path<SessionName>) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner().name;
    // 400 for a bad name, 404 for an unknown one.
    state.supervisor.send(GetSession { name: name.clone() }).await??;
    let history = state.store.history(&name).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(HttpResponse::Ok().json(history))
}
