//! `/api/sessions`: create, inspect, control, pair (QR) and send.

use actix_multipart::Multipart;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::AppState;
use crate::actors::supervisor::{Command, CreateSession, GetQr, GetSession, ListSessions, SendMessage, SessionCommand, SessionView};
use crate::events::{Event, EventName};
use crate::session_state::validate_name;
use crate::store::HistoryEntry;
use crate::whatsapp::media::{self, Media};
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
        cfg.route("/sessions/{name}/_fault/{fault}", web::post().to(page_fault));
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

/// `bidi-drop`, `other-tab-crash` or `own-tab-crash`
/// ([`crate::actors::session::PageFault`]).
#[cfg(debug_assertions)]
async fn page_fault(state: web::Data<AppState>, path: web::Path<(String, String)>) -> Result<HttpResponse, ApiError> {
    use crate::actors::session::PageFault;
    use crate::actors::supervisor::InjectPageFault;
    let (name, kind) = path.into_inner();
    let fault: PageFault = serde_json::from_value(serde_json::Value::String(kind.clone()))
        .map_err(|_| ApiError::bad_request(format!("unknown fault {kind:?}: bidi-drop, other-tab-crash or own-tab-crash")))?;
    let done = state.supervisor.send(InjectPageFault { name, fault }).await??;
    Ok(HttpResponse::Accepted().json(serde_json::json!({"injected": kind, "done": done})))
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
    let mut views = state.supervisor.send(ListSessions).await?;
    super::nodes::place(&state, &mut views).await?;
    Ok(HttpResponse::Ok().json(views))
}

/// `view` with its `node` set (cluster mode).
async fn placed(state: &AppState, mut view: SessionView) -> Result<SessionView, ApiError> {
    super::nodes::place(state, std::slice::from_mut(&mut view)).await?;
    Ok(view)
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
    Ok(HttpResponse::Created().json(placed(&state, view).await?))
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
    Ok(HttpResponse::Ok().json(placed(&state, view).await?))
}

async fn command(state: &AppState, name: String, command: Command) -> Result<HttpResponse, ApiError> {
    let view = state.supervisor.send(SessionCommand { name, command }).await??;
    Ok(HttpResponse::Ok().json(placed(state, view).await?))
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
        (status = 503, description = "Cluster mode: no node runs the session now (`Retry-After` says when to ask again), or its node does not answer; nothing was done", body = ErrorBody),
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
        (status = 503, description = "Cluster mode: no node runs the session now (`Retry-After` says when to ask again)", body = ErrorBody),
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

/// `POST /api/sessions/{name}/messages` as `multipart/form-data`: a media
/// message. Only documents the form; [`media_form`] reads it.
#[allow(dead_code)]
#[derive(ToSchema)]
#[schema(as = NewMediaMessage)]
struct SendForm {
    /// `"+49 151 12345678"`, `"4915112345678"` or a chat id.
    #[schema(example = "+49 151 12345678")]
    to: String,
    /// At most 1,024 characters; may be left out.
    #[schema(example = "Our spring offer")]
    caption: Option<String>,
    /// The file, with its `filename` and its `Content-Type`, which is
    /// required and decides the kind: `image/jpeg` and `image/png` a photo
    /// (the bytes must be a JPEG or PNG), `video/mp4` and `video/3gpp` a
    /// video, `audio/aac`, `audio/amr`, `audio/mpeg`, `audio/mp4` and
    /// `audio/ogg` audio, anything else a document. At most the kind's
    /// `[media]` limit (5 MB, 16 MB, 16 MB, 100 MB by default).
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// `true`: send even if the number is on the session's opt-out list.
    #[schema(example = "false")]
    ignore_opt_out: Option<String>,
}

/// The parts [`SendForm`] documents.
const SEND_FORM_PARTS: [&str; 4] = ["to", "caption", "file", "ignore_opt_out"];

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

/// Whether `path` is `/api/sessions/{name}/messages` (the send route,
/// whose media form gets the `[media]` body bound).
pub(super) fn is_send_path(path: &str) -> bool {
    let mut parts = path.split('/');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next()),
        (Some(""), Some("api"), Some("sessions"), Some(name), Some("messages"), None) if !name.is_empty()
    )
}

/// Send a text or a file
///
/// The session must be `CONNECTED`. A text is JSON; a photo, video, audio
/// file or document is `multipart/form-data` with `to`, `caption`
/// (optional) and `file`, sent through WhatsApp Web's media upload. Waits
/// up to `whatsapp.ack_wait` for the server's ack.
#[utoipa::path(
    post,
    operation_id = "send_message",
    path = "/api/sessions/{name}/messages",
    tag = "sessions",
    params(SessionName),
    request_body(content(
        (SendBody = "application/json"),
        (SendForm = "multipart/form-data"),
    )),
    responses(
        (status = 201, description = "Sent", body = SentView),
        (status = 400, description = "Invalid JSON, an unknown field or form part, a missing part, a file without a Content-Type or empty, or an invalid session name", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
        (status = 408, description = "The body took longer than `limits.body_timeout`", body = ErrorBody),
        (status = 409, description = "The session is not `CONNECTED`, or the number is on its opt-out list (and `ignore_opt_out` is not set)", body = ErrorBody),
        (status = 413, description = "JSON over `http.max_body_bytes`, text over 65,536 characters, caption over 1,024, or a file over its kind's `[media]` limit (named in the message); nothing was sent", body = ErrorBody),
        (status = 422, description = "Empty text, a photo whose bytes are not its Content-Type, or a number that is not valid E.164 or not on WhatsApp", body = ErrorBody),
        (status = 502, description = "The page failed to send", body = ErrorBody),
        (status = 503, description = "Cluster mode: no node runs the session now (`Retry-After` says when to ask again), or its node does not answer; nothing was sent", body = ErrorBody),
    ),
)]
async fn send(
    state: web::Data<AppState>,
    path: web::Path<SessionName>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner().name;
    validate_name(&name).map_err(ApiError::bad_request)?;
    let content_type = req.headers().get(actix_web::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let (to, text, media, ignore_opt_out) = match essence.as_str() {
        "multipart/form-data" => {
            let form = media_form(Multipart::new(req.headers(), payload), &state.config).await?;
            (form.to, form.caption, Some(form.media), form.ignore_opt_out)
        }
        "application/json" => {
            let body = json_body(payload, state.max_body).await?;
            if body.text.trim().is_empty() {
                return Err(ApiError::unprocessable("text is empty"));
            }
            if body.text.chars().count() > MAX_TEXT_CHARS {
                return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("text is longer than {MAX_TEXT_CHARS} characters")));
            }
            (body.to, body.text, None, body.ignore_opt_out)
        }
        _ => return Err(ApiError::bad_request("expected Content-Type: application/json (a text) or multipart/form-data (a file)")),
    };
    let to = number::parse_recipient(&to).map_err(|e| ApiError::unprocessable(e.to_string()))?;
    if !ignore_opt_out && super::numbers::opted_out(&state, &name, to.as_str())? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("{} is on the session's opt-out list; send with ignore_opt_out true to send anyway", to.as_str()),
        ));
    }
    let kind = media.as_ref().map(|m| m.kind().as_str());
    let result = state
        .supervisor
        .send(SendMessage { name: name.clone(), to: to.clone(), text, id: None, typing: std::time::Duration::ZERO, media })
        .await?;
    let sent = match result {
        Ok(sent) => sent,
        Err(e) => {
            let event =
                Event::session(EventName::MessageFailed, &name).detail(serde_json::json!({"to": to.as_str(), "error": e.to_string()}));
            state.events.publish(event);
            let not_here = matches!(e, crate::actors::supervisor::SupervisorError::Send(crate::actors::session::SendError::NotLeased));
            let mut error = ApiError::from(e);
            if let (true, Some(cluster)) = (not_here, &state.cluster) {
                // The session moved or is moving: ask again (forwarded).
                error.retry_after_s = Some(cluster.retry_after_s());
            }
            return Err(error);
        }
    };
    let mut detail = serde_json::json!({"id": sent.id, "to": sent.to, "ack": ack_name(sent.ack)});
    if let Some(kind) = kind {
        detail["type"] = serde_json::json!(kind);
    }
    state.events.publish(Event::session(EventName::MessageSent, &name).detail(detail));
    Ok(HttpResponse::Created().json(SentView { id: sent.id, to: sent.to, ack: ack_name(sent.ack) }))
}

/// A text send's JSON body, read up to `max` bytes (`http.max_body_bytes`).
async fn json_body(payload: web::Payload, max: usize) -> Result<SendBody, ApiError> {
    let bytes = super::conventions::read_limited(payload, max).await?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// A media send's form, read.
struct MediaForm {
    to: String,
    caption: String,
    media: Media,
    ignore_opt_out: bool,
}

/// Reads a media send's form: `to`, `caption` (optional) and `file` (its
/// `Content-Type` required). The file is refused with 413 as soon as it
/// passes its kind's `[media]` limit, before the rest is read.
async fn media_form(mut form: Multipart, config: &crate::config::Config) -> Result<MediaForm, ApiError> {
    /// Bytes of the `to` part; of the caption (1,024 characters of up to 4 bytes).
    const TO_BYTES: usize = 256;
    const CAPTION_BYTES: usize = 4 * media::MAX_CAPTION_CHARS;
    let over_body = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body is larger than the largest [media] limit ({} bytes) plus {} bytes for the form",
                config.media.largest(),
                super::MEDIA_FORM_OVERHEAD
            ),
        )
    };
    let multipart_error = |e: actix_multipart::MultipartError| match e {
        actix_multipart::MultipartError::Payload(actix_web::error::PayloadError::Overflow) => over_body(),
        actix_multipart::MultipartError::Payload(p) => super::conventions::payload_error(&p),
        other => ApiError::bad_request(format!("multipart: {other}")),
    };
    let (mut to, mut caption, mut file): (Option<String>, Option<String>, Option<Media>) = (None, None, None);
    let mut ignore_opt_out: Option<bool> = None;
    while let Some(field) = form.next().await {
        let mut field = field.map_err(multipart_error)?;
        let name = field.name().unwrap_or("").to_string();
        let max = match name.as_str() {
            "to" if to.is_none() => TO_BYTES,
            "ignore_opt_out" if ignore_opt_out.is_none() => 8,
            "caption" if caption.is_none() => CAPTION_BYTES,
            "file" if file.is_none() => {
                file = Some(super::upload::file_part(&mut field, config, "nothing was sent", None, &multipart_error).await?);
                continue;
            }
            "to" | "caption" | "file" | "ignore_opt_out" => return Err(ApiError::bad_request(format!("form part {name:?} is repeated"))),
            _ => return Err(ApiError::bad_request(format!("unknown form part {name:?}; expected {SEND_FORM_PARTS:?}"))),
        };
        let mut value = web::BytesMut::new();
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(multipart_error)?;
            if value.len() + chunk.len() > max {
                return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("form part {name:?} is larger than {max} bytes")));
            }
            value.extend_from_slice(&chunk);
        }
        let text = String::from_utf8(value.to_vec()).map_err(|_| ApiError::bad_request(format!("form part {name:?} is not UTF-8")))?;
        if name == "to" {
            to = Some(text);
        } else if name == "ignore_opt_out" {
            let flag = text.trim().parse::<bool>();
            ignore_opt_out = Some(flag.map_err(|_| ApiError::bad_request("form part \"ignore_opt_out\" must be true or false"))?);
        } else {
            caption = Some(text);
        }
    }
    let to = to.ok_or_else(|| ApiError::bad_request("missing form part \"to\""))?;
    let file = file.ok_or_else(|| ApiError::bad_request("missing form part \"file\" (a text is sent as JSON)"))?;
    let caption = caption.unwrap_or_default();
    if caption.chars().count() > media::MAX_CAPTION_CHARS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("caption is longer than {} characters", media::MAX_CAPTION_CHARS),
        ));
    }
    super::upload::check_file(&file)?;
    Ok(MediaForm { to, caption, media: file, ignore_opt_out: ignore_opt_out.unwrap_or(false) })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_send_path_is_told_apart() {
        assert!(is_send_path("/api/sessions/acme/messages"));
        assert!(!is_send_path("/api/sessions//messages"));
        assert!(!is_send_path("/api/sessions/acme/messages/x"));
        assert!(!is_send_path("/api/sessions"));
        assert!(!is_send_path("/api/campaigns/acme/messages"));
    }

    #[test]
    fn the_form_documents_exactly_the_parts_read() {
        let doc = serde_json::to_value(<SendForm as utoipa::PartialSchema>::schema()).unwrap_or_default();
        let mut documented: Vec<&str> = doc["properties"].as_object().map(|p| p.keys().map(String::as_str).collect()).unwrap_or_default();
        documented.sort_unstable();
        let mut read = SEND_FORM_PARTS.to_vec();
        read.sort_unstable();
        assert_eq!(documented, read);
    }
}
