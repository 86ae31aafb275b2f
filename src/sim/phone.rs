//! The phone's control API under `/_phone`: what a test or the demo does
//! with the phone (scan a QR, log a device out, break its network, advance
//! acks…) and what it can read back (devices, the messages really sent).
//!
//! Loopback only, no authentication, JSON in and out. Bad input is a 4xx
//! with `{"error": "<what was wrong>"}`; every action logs one line.

use actix_multipart::Multipart;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt as _;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use super::media::MAX_FILE_BYTES;
use super::server::Hub;
use super::world::{IncomingMedia, PhoneError};

/// Longest network drop or timelock the phone accepts, seconds (30 days).
const MAX_SECONDS: u64 = 30 * 24 * 3600;
/// Longest send delay the phone accepts, ms (10 minutes).
const MAX_SLOW_MS: u64 = 600_000;
/// Largest JSON body the phone takes, bytes.
const MAX_JSON_BYTES: usize = 1 << 20;
/// Largest text part of an incoming media form (`from`, `caption`,
/// `pushname`), bytes.
const MAX_FORM_TEXT_BYTES: usize = 128 * 1024;

/// Routes of the control API.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/_phone")
            .route("/health", web::get().to(health))
            .route("/scan", web::post().to(scan))
            .route("/unregistered", web::post().to(unregistered))
            .route("/devices", web::get().to(devices))
            .route("/devices/{device}/messages", web::get().to(messages))
            .route("/devices/{device}/chat-states", web::get().to(chat_states))
            .route("/devices/{device}/incoming", web::post().to(incoming))
            .route("/devices/{device}/incoming", web::get().to(inbox))
            .route("/devices/{device}/logout", web::post().to(logout))
            .route("/devices/{device}/device-removed", web::post().to(device_removed))
            .route("/devices/{device}/conflict", web::post().to(conflict))
            .route("/devices/{device}/ban", web::post().to(ban))
            .route("/devices/{device}/timelock", web::post().to(timelock))
            .route("/devices/{device}/network-drop", web::post().to(network_drop))
            .route("/devices/{device}/slow", web::post().to(slow))
            .route("/devices/{device}/reload", web::post().to(reload))
            .route("/devices/{device}/ack", web::post().to(ack))
            .default_service(web::to(|| async { error(StatusCode::NOT_FOUND, "no such phone action") })),
    );
}

/// `{"error": what}` with `status`.
pub(super) fn error(status: StatusCode, what: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": what }))
}

/// The HTTP answer for a refused action.
pub(super) fn refused(e: &PhoneError) -> HttpResponse {
    let status = match e {
        PhoneError::BadRequest(_) => StatusCode::BAD_REQUEST,
        PhoneError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        PhoneError::Forbidden(_) => StatusCode::FORBIDDEN,
        PhoneError::NotFound(_) => StatusCode::NOT_FOUND,
        PhoneError::Conflict(_) => StatusCode::CONFLICT,
        PhoneError::Gone(_) => StatusCode::GONE,
        PhoneError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
    };
    error(status, &e.to_string())
}

fn ok_or_refused(r: Result<(), PhoneError>) -> HttpResponse {
    match r {
        Ok(()) => HttpResponse::Ok().json(json!({ "ok": true })),
        Err(e) => refused(&e),
    }
}

/// Parses a JSON body; an empty body is `T::default()` when `optional`.
fn body<T: DeserializeOwned + Default>(bytes: &[u8], optional: bool) -> Result<T, PhoneError> {
    if optional && bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| PhoneError::BadRequest(format!("bad JSON body: {e}")))
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "ok": true }))
}

/// `POST /_phone/scan` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScanBody {
    /// The full QR string the page shows.
    qr: String,
    /// The account's number: digits, optional `+`.
    phone: String,
    /// Push name (defaults to the number).
    #[serde(default)]
    pushname: String,
    /// The phone's platform (`android` by default).
    #[serde(default)]
    platform: Option<String>,
}

async fn scan(hub: web::Data<Hub>, bytes: web::Bytes) -> HttpResponse {
    let b: ScanBody = match body(&bytes, false) {
        Ok(b) => b,
        Err(e) => return refused(&e),
    };
    let platform = b.platform.as_deref().unwrap_or("android");
    let r = hub.act(|w, now| w.scan(&b.qr, &b.phone, &b.pushname, platform, now, &mut rand::thread_rng()));
    match r {
        Ok(device) => {
            tracing::info!(device = %device, phone = %b.phone, "phone: scanned the QR code, device linked");
            HttpResponse::Ok().json(json!({ "device": device }))
        }
        Err(e) => {
            tracing::info!(error = %e, "phone: scan refused");
            refused(&e)
        }
    }
}

/// `POST /_phone/unregistered` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnregisteredBody {
    /// Numbers not on WhatsApp.
    numbers: Vec<String>,
}

async fn unregistered(hub: web::Data<Hub>, bytes: web::Bytes) -> HttpResponse {
    let b: UnregisteredBody = match body(&bytes, false) {
        Ok(b) => b,
        Err(e) => return refused(&e),
    };
    match hub.act(|w, _| w.unregister(&b.numbers)) {
        Ok(n) => {
            tracing::info!(count = n, "phone: numbers marked as not on WhatsApp");
            HttpResponse::Ok().json(json!({ "ok": true }))
        }
        Err(e) => refused(&e),
    }
}

async fn devices(hub: web::Data<Hub>) -> HttpResponse {
    HttpResponse::Ok().json(hub.act(|w, now| w.devices(now)))
}

/// `GET /_phone/devices/{device}/chat-states` → `[{"to", "state", "at_ms"}]`:
/// "typing…" (`composing`) and `paused`, as the account showed them.
async fn chat_states(hub: web::Data<Hub>, device: web::Path<String>) -> HttpResponse {
    match hub.act(|w, _| w.chat_states(&device)) {
        Ok(states) => HttpResponse::Ok().json(states),
        Err(e) => refused(&e),
    }
}

async fn messages(hub: web::Data<Hub>, device: web::Path<String>) -> HttpResponse {
    match hub.act(|w, _| w.messages(&device)) {
        Ok(list) => HttpResponse::Ok().json(list),
        Err(e) => refused(&e),
    }
}

/// `POST /_phone/devices/{device}/incoming` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IncomingBody {
    /// The sender's number: digits, optional `+`.
    from: String,
    /// Text.
    body: String,
    /// The sender's push name.
    #[serde(default)]
    pushname: String,
}

/// `POST /_phone/devices/{device}/incoming`: a contact writes to the
/// account. A text is JSON `{"from", "body", "pushname"?}`; a media
/// message is `multipart/form-data` with the parts `from`, `caption`
/// (optional), `pushname` (optional) and `file` (its `filename` and
/// `Content-Type` are the file's name and MIME type; the type decides the
/// message type: JPEG and PNG images, MP4 and 3GPP videos, audio, else a
/// document). Answers the held message `{"id", "from", "type", "body",
/// "pushname", "at_ms", "delivered"}`, for media also `"mimetype",
/// "filename", "size", "sha256"` (hex, of the file as sent).
async fn incoming(req: HttpRequest, hub: web::Data<Hub>, device: web::Path<String>, payload: web::Payload) -> HttpResponse {
    let content_type = req.headers().get(actix_web::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let parsed = if content_type.to_ascii_lowercase().starts_with("multipart/form-data") {
        incoming_form(Multipart::new(req.headers(), payload)).await
    } else {
        match read_body(payload, MAX_JSON_BYTES).await {
            Ok(bytes) => body::<IncomingBody>(&bytes, false).map(|b| (b, None)),
            Err(e) => Err(e),
        }
    };
    let (b, media) = match parsed {
        Ok(p) => p,
        Err(e) => return refused(&e),
    };
    match hub.act(|w, now| w.incoming(&device, &b.from, &b.body, &b.pushname, media, now, &mut rand::thread_rng())) {
        Ok(m) => {
            tracing::info!(device = %device, id = %m.id, from = %m.from, kind = %m.kind, "phone: a contact wrote to the account");
            HttpResponse::Ok().json(m)
        }
        Err(e) => refused(&e),
    }
}

/// A whole body of at most `max` bytes.
async fn read_body(mut payload: web::Payload, max: usize) -> Result<web::Bytes, PhoneError> {
    let mut out = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| PhoneError::BadRequest(format!("reading the body: {e}")))?;
        if out.len() + chunk.len() > max {
            return Err(PhoneError::TooLarge(format!("the body is over {max} bytes")));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

/// The parts of an incoming media form (see [`incoming`]).
async fn incoming_form(mut form: Multipart) -> Result<(IncomingBody, Option<IncomingMedia>), PhoneError> {
    let bad = |m: String| PhoneError::BadRequest(m);
    let mut text: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    let mut media: Option<IncomingMedia> = None;
    while let Some(field) = form.next().await {
        let mut field = field.map_err(|e| bad(format!("multipart: {e}")))?;
        let name = field.name().unwrap_or("").to_owned();
        let is_file = name == "file";
        if !["from", "caption", "pushname", "file"].contains(&name.as_str()) {
            return Err(bad(format!("unknown form part {name:?}; expected from, caption, pushname and file")));
        }
        if text.contains_key(&name) || (is_file && media.is_some()) {
            return Err(bad(format!("form part {name:?} is repeated")));
        }
        let max = if is_file { MAX_FILE_BYTES } else { MAX_FORM_TEXT_BYTES };
        let mut value = web::BytesMut::new();
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(|e| bad(format!("multipart: {e}")))?;
            if value.len() + chunk.len() > max {
                return Err(PhoneError::TooLarge(format!("form part {name:?} is over {max} bytes")));
            }
            value.extend_from_slice(&chunk);
        }
        if is_file {
            let mimetype = field.content_type().map(ToString::to_string).ok_or_else(|| bad("the file part needs a Content-Type".into()))?;
            let filename = field.content_disposition().and_then(|d| d.get_filename()).filter(|f| !f.is_empty()).map(str::to_owned);
            media = Some(IncomingMedia { mimetype, filename, data: value.freeze() });
        } else {
            let value = String::from_utf8(value.to_vec()).map_err(|_| bad(format!("form part {name:?} is not UTF-8")))?;
            text.insert(name, value);
        }
    }
    let media = media.ok_or_else(|| bad("missing form part \"file\" (a text message is sent as JSON)".into()))?;
    let from = text.remove("from").ok_or_else(|| bad("missing form part \"from\"".into()))?;
    let body = text.remove("caption").unwrap_or_default();
    let pushname = text.remove("pushname").unwrap_or_default();
    Ok((IncomingBody { from, body, pushname }, Some(media)))
}

/// `GET /_phone/devices/{device}/incoming` → what contacts sent to the
/// account, oldest first, each with `delivered` (the device's page has it).
async fn inbox(hub: web::Data<Hub>, device: web::Path<String>) -> HttpResponse {
    match hub.act(|w, _| w.inbox(&device)) {
        Ok(list) => HttpResponse::Ok().json(list),
        Err(e) => refused(&e),
    }
}

async fn logout(hub: web::Data<Hub>, device: web::Path<String>) -> HttpResponse {
    let r = hub.act(|w, now| w.phone_logout(&device, now));
    if r.is_ok() {
        tracing::info!(device = %device, "phone: logged the device out");
    }
    ok_or_refused(r)
}

async fn reload(hub: web::Data<Hub>, device: web::Path<String>) -> HttpResponse {
    let r = hub.act(|w, _| w.reload(&device));
    if r.is_ok() {
        tracing::info!(device = %device, "phone: the device's page reloads itself");
    }
    ok_or_refused(r)
}

async fn device_removed(hub: web::Data<Hub>, device: web::Path<String>) -> HttpResponse {
    let r = hub.act(|w, now| w.remove_device(&device, now));
    if r.is_ok() {
        tracing::info!(device = %device, "phone: removed the device (device_removed)");
    }
    ok_or_refused(r)
}

async fn conflict(hub: web::Data<Hub>, device: web::Path<String>) -> HttpResponse {
    let r = hub.act(|w, now| w.conflict(&device, now));
    if r.is_ok() {
        tracing::info!(device = %device, "phone: opened the account elsewhere (conflict)");
    }
    ok_or_refused(r)
}

async fn ban(hub: web::Data<Hub>, device: web::Path<String>) -> HttpResponse {
    let r = hub.act(|w, now| w.ban(&device, now));
    if r.is_ok() {
        tracing::info!(device = %device, "phone: account blocked (TOS_BLOCK)");
    }
    ok_or_refused(r)
}

/// Body of `/timelock` and `/network-drop`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecondsBody {
    /// How long, seconds.
    seconds: Option<u64>,
}

fn seconds(b: &SecondsBody, default: Option<u64>) -> Result<u64, PhoneError> {
    match b.seconds.or(default) {
        Some(s) if (1..=MAX_SECONDS).contains(&s) => Ok(s),
        Some(_) => Err(PhoneError::BadRequest(format!("seconds must be 1 to {MAX_SECONDS}"))),
        None => Err(PhoneError::BadRequest("seconds is required".into())),
    }
}

async fn timelock(hub: web::Data<Hub>, device: web::Path<String>, bytes: web::Bytes) -> HttpResponse {
    let s = match body::<SecondsBody>(&bytes, true).and_then(|b| seconds(&b, Some(3600))) {
        Ok(s) => s,
        Err(e) => return refused(&e),
    };
    let r = hub.act(|w, now| w.timelock(&device, s, now));
    if r.is_ok() {
        tracing::info!(device = %device, seconds = s, "phone: reach-out timelock");
    }
    ok_or_refused(r)
}

async fn network_drop(hub: web::Data<Hub>, device: web::Path<String>, bytes: web::Bytes) -> HttpResponse {
    let s = match body::<SecondsBody>(&bytes, false).and_then(|b| seconds(&b, None)) {
        Ok(s) => s,
        Err(e) => return refused(&e),
    };
    let r = hub.act(|w, now| w.network_drop(&device, s, now));
    if r.is_ok() {
        tracing::info!(device = %device, seconds = s, "phone: network drop");
    }
    ok_or_refused(r)
}

/// `/slow` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlowBody {
    /// Delay before each send is accepted, ms (0 turns it off).
    ms: u64,
}

async fn slow(hub: web::Data<Hub>, device: web::Path<String>, bytes: web::Bytes) -> HttpResponse {
    let b: SlowBody = match body(&bytes, false) {
        Ok(b) => b,
        Err(e) => return refused(&e),
    };
    if b.ms > MAX_SLOW_MS {
        return error(StatusCode::BAD_REQUEST, &format!("ms must be at most {MAX_SLOW_MS}"));
    }
    let r = hub.act(|w, _| w.slow(&device, b.ms));
    if r.is_ok() {
        tracing::info!(device = %device, ms = b.ms, "phone: slow sends");
    }
    ok_or_refused(r)
}

/// `/ack` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    /// Key id of the message.
    id: String,
    /// `DEVICE`, `READ` or `PLAYED`.
    ack: String,
}

async fn ack(hub: web::Data<Hub>, device: web::Path<String>, bytes: web::Bytes) -> HttpResponse {
    let b: AckBody = match body(&bytes, false) {
        Ok(b) => b,
        Err(e) => return refused(&e),
    };
    let level = match b.ack.as_str() {
        "DEVICE" => 2,
        "READ" => 3,
        "PLAYED" => 4,
        _ => return error(StatusCode::BAD_REQUEST, "ack must be DEVICE, READ or PLAYED"),
    };
    let r = hub.act(|w, _| w.ack(&device, &b.id, level));
    if r.is_ok() {
        tracing::info!(device = %device, id = %b.id, ack = %b.ack, "phone: ack");
    }
    ok_or_refused(r)
}
