//! `/api/sessions/{name}/opt-outs` and `/api/sessions/{name}/pacing`: what
//! belongs to a WhatsApp number (a session) rather than to one campaign:
//! its opt-out list and its pacing state.

use actix_web::http::header::CONTENT_TYPE;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::sessions::SessionName;
use super::AppState;
use crate::policy::pacing::{timestamp as ts, DayCount, NumberRecord};
use crate::session_state::{now_ms, validate_name};
use crate::store::OptOut;
use crate::whatsapp::number;

declare_routes! {
    pub fn routes;
    get "/sessions/{name}/opt-outs" => list,
    post "/sessions/{name}/opt-outs" => add,
    delete "/sessions/{name}/opt-outs" => remove,
    get "/sessions/{name}/pacing" => pacing,
}

/// 404 unless the session exists; 400 for an invalid name.
fn known_session(state: &AppState, name: &str) -> Result<(), ApiError> {
    validate_name(name).map_err(ApiError::bad_request)?;
    match state.store.session(name)? {
        Some(_) => Ok(()),
        None => Err(ApiError::new(actix_web::http::StatusCode::NOT_FOUND, format!("no session named {name:?}"))),
    }
}

/// A number as the opt-out list keys it: E.164 digits without `+`. A
/// number without a country code uses `campaigns.default_country`, as
/// campaign input does. Errors: not a valid number.
pub fn list_key(state: &AppState, phone: &str) -> Result<String, String> {
    let country = state.config.campaigns.country()?;
    let e164 = number::normalize(phone, country).map_err(|e| format!("{phone:?}: {e}"))?;
    Ok(e164.trim_start_matches('+').to_string())
}

/// Whether `phone` (a chat id) is on `session`'s opt-out list: the send
/// API's check. Errors: the store cannot be read (503).
pub fn opted_out(state: &AppState, session: &str, chat_id: &str) -> Result<bool, ApiError> {
    let Some(digits) = chat_id.strip_suffix("@c.us") else { return Ok(false) };
    Ok(state.store.opt_out(session, digits)?.is_some())
}

/// List a session's opt-outs
///
/// Every number on the session's opt-out list: added when the contact
/// replied with an opt-out keyword (`source` `reply`), through this API
/// (`api`) or by a CSV import (`import`). Every campaign of the session
/// skips them (`SKIPPED`, reason `opted_out`) and the send API refuses them
/// (409). The list survives the session's deletion.
#[utoipa::path(
    get,
    operation_id = "list_opt_outs",
    path = "/api/sessions/{name}/opt-outs",
    tag = "sessions",
    params(SessionName),
    responses(
        (status = 200, description = "The list, by number", body = [OptOut]),
        (status = 400, description = "Invalid session name", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
    ),
)]
async fn list(state: web::Data<AppState>, path: web::Path<SessionName>) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner().name;
    known_session(&state, &name)?;
    Ok(HttpResponse::Ok().json(state.store.opt_outs(&name)?))
}

/// One number to add: `POST /api/sessions/{name}/opt-outs` takes one of
/// these or an array of them.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"phone": "+4915199990000"}))]
struct NewOptOut {
    /// `"+4915199990000"` or `"4915199990000"` (country code first).
    phone: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NewOptOuts {
    One(NewOptOut),
    Many(Vec<NewOptOut>),
}

/// What an addition did.
#[derive(Serialize, ToSchema)]
struct Added {
    /// Numbers that were not on the list before.
    added: usize,
    /// Numbers in the request (after dropping repeats).
    given: usize,
}

/// Add opt-outs
///
/// JSON (`{"phone"}` or an array of them, `source` `api`) or a CSV
/// (`Content-Type: text/csv`, a `phone` column, `source` `import`). Stored
/// and flushed before the answer; a number already listed keeps its first
/// time and source. At most `limits.recipients` numbers per request.
#[utoipa::path(
    post,
    operation_id = "add_opt_outs",
    path = "/api/sessions/{name}/opt-outs",
    tag = "sessions",
    params(SessionName),
    request_body(content((NewOptOut = "application/json"), (String = "text/csv")), description = "A number, an array of them, or a CSV with a `phone` column"),
    responses(
        (status = 200, description = "Added", body = Added),
        (status = 400, description = "Invalid JSON or CSV, an invalid number (all listed in the message), or over `limits.recipients`", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
        (status = 413, description = "Body over `http.max_body_bytes`", body = ErrorBody),
        (status = 503, description = "The store did not take it; nothing was added", body = ErrorBody),
    ),
)]
async fn add(
    state: web::Data<AppState>,
    path: web::Path<SessionName>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner().name;
    known_session(&state, &name)?;
    let csv = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("text/csv"));
    let (phones, source) = if csv { (phones_from_csv(&body)?, "import") } else { (phones_from_json(&body)?, "api") };
    let limit = state.config.limits.recipients;
    if phones.len() > limit {
        return Err(ApiError::bad_request(format!("{} numbers; at most {limit} per request (limits.recipients)", phones.len())));
    }
    let mut keys = Vec::with_capacity(phones.len());
    let mut bad = Vec::new();
    for p in &phones {
        match list_key(&state, p) {
            Ok(k) => keys.push(k),
            Err(e) => bad.push(e),
        }
    }
    if !bad.is_empty() {
        let n = bad.len();
        bad.truncate(20);
        return Err(ApiError::bad_request(format!("{n} invalid number(s), nothing was added: {}", bad.join("; "))));
    }
    keys.sort();
    keys.dedup();
    let at_ms = now_ms();
    let entries: Vec<OptOut> = keys.into_iter().map(|phone| OptOut { phone, at_ms, source: source.into() }).collect();
    let given = entries.len();
    let store = state.store.clone();
    let added = web::block(move || store.add_opt_outs(&name, &entries))
        .await
        .map_err(|e| ApiError::internal(format!("storing the opt-outs: {e}")))??;
    Ok(HttpResponse::Ok().json(Added { added, given }))
}

fn phones_from_json(body: &[u8]) -> Result<Vec<String>, ApiError> {
    let parsed: NewOptOuts = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("expected {{\"phone\": \"+49...\"}} or an array of them: {e}")))?;
    Ok(match parsed {
        NewOptOuts::One(one) => vec![one.phone],
        NewOptOuts::Many(many) => many.into_iter().map(|o| o.phone).collect(),
    })
}

fn phones_from_csv(body: &[u8]) -> Result<Vec<String>, ApiError> {
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).flexible(true).from_reader(body);
    let headers = reader.headers().map_err(|e| ApiError::bad_request(format!("CSV: {e}")))?.clone();
    let col = headers
        .iter()
        .position(|h| h.eq_ignore_ascii_case("phone"))
        .ok_or_else(|| ApiError::bad_request("CSV: no \"phone\" column in the header row"))?;
    let mut phones = Vec::new();
    for (i, row) in reader.records().enumerate() {
        let row = row.map_err(|e| ApiError::bad_request(format!("CSV line {}: {e}", i + 2)))?;
        if let Some(p) = row.get(col).filter(|p| !p.is_empty()) {
            phones.push(p.to_string());
        }
    }
    Ok(phones)
}

/// `DELETE /api/sessions/{name}/opt-outs?phone=`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct PhoneQuery {
    /// The number to take off the list.
    #[param(example = "+4915199990000")]
    phone: String,
}

/// Remove an opt-out
///
/// Takes one number off the list (flushed before the answer): campaigns
/// and the send API may message it again.
#[utoipa::path(
    delete,
    operation_id = "remove_opt_out",
    path = "/api/sessions/{name}/opt-outs",
    tag = "sessions",
    params(SessionName, PhoneQuery),
    responses(
        (status = 200, description = "Removed", body = Object, example = json!({"removed": "4915199990000"})),
        (status = 400, description = "Invalid session name or number", body = ErrorBody),
        (status = 404, description = "No such session, or the number is not on the list", body = ErrorBody),
        (status = 503, description = "The store did not take it", body = ErrorBody),
    ),
)]
async fn remove(state: web::Data<AppState>, path: web::Path<SessionName>, query: web::Query<PhoneQuery>) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner().name;
    known_session(&state, &name)?;
    let key = list_key(&state, &query.phone).map_err(ApiError::bad_request)?;
    let store = state.store.clone();
    let removed = {
        let key = key.clone();
        web::block(move || store.remove_opt_out(&name, &key))
            .await
            .map_err(|e| ApiError::internal(format!("removing the opt-out: {e}")))??
    };
    if removed {
        Ok(HttpResponse::Ok().json(serde_json::json!({"removed": key})))
    } else {
        Err(ApiError::new(actix_web::http::StatusCode::NOT_FOUND, format!("{key} is not on the opt-out list")))
    }
}

/// A number's pacing now.
#[derive(Debug, Serialize, ToSchema)]
pub struct NumberView {
    /// When the number may next send a campaign message, Unix epoch ms.
    pub next_send_ms: u64,
    /// What holds it until then: `gap` (its gap after the last send, or a
    /// send under way), `quiet_hours`, `daily_cap`, `warmup` (the ramp's
    /// cap for the day) or `first_contact_cap`; `none` when it may send now.
    pub why: &'static str,
    /// Campaign sends today (in `campaigns.timezone`).
    pub sent_today: u32,
    /// Of those, to numbers that never wrote to the account.
    pub first_contacts_today: u32,
    /// Today's cap: the lower of `campaigns.daily_cap` and the warm-up
    /// ramp's; `null`: none.
    pub cap_today: Option<u32>,
    /// The warm-up ramp's sending day today (0: the first); `null` when
    /// `numbers.warmup` is off.
    pub warmup_day: Option<u32>,
    /// When its last send ended (or started), Unix epoch ms.
    pub last_send_ms: Option<u64>,
}

/// The number's pacing view from its stored state and the config.
/// Errors: the store cannot be read, or the config's zone or quiet hours
/// are invalid (checked at start, so never).
pub fn number_view(state: &AppState, session: &str) -> Result<NumberView, ApiError> {
    let pacing = state.config.number_pacing().map_err(ApiError::internal)?;
    let rules = &pacing.number;
    let record: NumberRecord = state.store.number(session)?;
    let now = now_ms();
    let today = pacing.day(ts(now));
    let count = state.store.day_count(session, &today.to_string())?;
    let counts = |d: jiff::civil::Date| {
        state.store.day_count(session, &d.to_string()).unwrap_or(DayCount { sent: u32::MAX, first_contacts: u32::MAX })
    };
    let slot = pacing.next(ts(now), ts(record.earliest_ms()), |d| rules.day_full(d, counts(d), false, &record));
    let busy = record.busy(now, crate::session_state::boot_id());
    let next_send_ms = u64::try_from(slot.at.as_millisecond()).unwrap_or(0).max(now).max(busy.unwrap_or(0));
    let warmup_day = rules.warmup.as_ref().map(|w| record.ramp_day_on(today, w));
    let warm_cap = rules.warmup.as_ref().zip(warmup_day).map(|(w, d)| w.cap(d));
    let cap_today = match (rules.daily_cap, warm_cap) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let why = if next_send_ms > now { slot.hold.as_str() } else { "none" };
    Ok(NumberView {
        next_send_ms,
        why,
        sent_today: count.sent,
        first_contacts_today: count.first_contacts,
        cap_today,
        warmup_day,
        last_send_ms: record.last_send_ms,
    })
}

/// A session's pacing
///
/// The number's shared pacing state: when it may next send a campaign
/// message and why not sooner (first contacts aside), today's sends and
/// cap, and the warm-up day.
#[utoipa::path(
    get,
    operation_id = "session_pacing",
    path = "/api/sessions/{name}/pacing",
    tag = "sessions",
    params(SessionName),
    responses(
        (status = 200, description = "The number's pacing", body = NumberView),
        (status = 400, description = "Invalid session name", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
    ),
)]
async fn pacing(state: web::Data<AppState>, path: web::Path<SessionName>) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner().name;
    known_session(&state, &name)?;
    Ok(HttpResponse::Ok().json(number_view(&state, &name)?))
}
