//! `/api/campaigns` and a session's queue: create (JSON or a CSV upload),
//! inspect, control, list recipients, export a report.

use std::collections::BTreeMap;

use actix_multipart::Multipart;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::sessions::SessionName;
use super::AppState;
use crate::actors::campaign::CampaignCommand;
use crate::actors::campaigns::{CampaignError, ClearQueue, Command, CreateCampaign};
use crate::attachments::AttachmentMeta;
use crate::campaign::{
    self, CampaignRecord, CampaignState, HourSends, InputError, InvalidNumbers, PacingSpec, RecipientRecord, RecipientState, Row, RowError,
};
use crate::config::Config;
use crate::session_state::{now_ms, validate_name};
use crate::whatsapp::media::{self, Media};

declare_routes! {
    pub fn routes;
    get "/campaigns" => list,
    post "/campaigns" => create,
    get "/campaigns/{id}" => get,
    post "/campaigns/{id}/start" => start,
    post "/campaigns/{id}/pause" => pause,
    post "/campaigns/{id}/resume" => resume,
    post "/campaigns/{id}/cancel" => cancel,
    get "/campaigns/{id}/recipients" => recipients,
    get "/campaigns/{id}/report.csv" => report,
    get "/sessions/{name}/queue" => queue,
    delete "/sessions/{name}/queue" => clear_queue,
}

/// The `{id}` in a campaign's path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct CampaignId {
    /// The campaign's id, `cmp_` and 16 hex digits.
    #[param(example = "cmp_0123456789abcdef")]
    id: String,
}

impl From<CampaignError> for ApiError {
    fn from(e: CampaignError) -> Self {
        let status = match &e {
            CampaignError::NotFound(_) => StatusCode::NOT_FOUND,
            CampaignError::NoSession(_) => StatusCode::UNPROCESSABLE_ENTITY,
            CampaignError::WrongState(_) => StatusCode::CONFLICT,
            CampaignError::Store(_) | CampaignError::Unrecorded(_) => StatusCode::SERVICE_UNAVAILABLE,
            CampaignError::Attachment(io) if matches!(io.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) => {
                StatusCode::INSUFFICIENT_STORAGE
            }
            CampaignError::Attachment(_) | CampaignError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

/// `POST /api/campaigns` (JSON form; the multipart form has the same fields
/// as text parts plus a `csv` file part, and may carry an attachment).
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewCampaign, example = json!({
    "name": "spring",
    "session": "acme",
    "template": "Hi {{ name }}!",
    "recipients": [{"phone": "+49 151 12345678", "name": "Ana"}, {"phone": "0151 23456789", "name": "Ben"}],
    "pacing": {"min_delay": "20s", "max_delay": "45s", "typing": false, "quiet_hours": "22:00-08:00"},
    "start": false,
    "default_country": "DE",
    "invalid_numbers": "reject"
}))]
struct CreateBody {
    /// 1 to 100 characters.
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    /// The session that sends.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    session: String,
    /// A minijinja template; each recipient's variables fill it.
    template: String,
    /// `[{"phone": "+49…", "name": "Ana"}]`. Give either this or `csv`.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    recipients: Option<Vec<serde_json::Value>>,
    /// The same as CSV text (a `phone` column plus variables).
    #[serde(default)]
    csv: Option<String>,
    #[serde(default)]
    pacing: PacingSpec,
    /// Start now; otherwise the campaign is a `DRAFT`.
    #[serde(default)]
    start: bool,
    /// Overrides `campaigns.default_country`.
    #[serde(default)]
    #[schema(example = "DE")]
    default_country: Option<String>,
    #[serde(default)]
    invalid_numbers: InvalidNumbers,
}

/// The parts `POST /api/campaigns` takes as `multipart/form-data`.
pub(super) const FORM_PARTS: [&str; 12] = [
    "name",
    "session",
    "template",
    "csv",
    "file",
    "start",
    "min_delay",
    "max_delay",
    "typing",
    "quiet_hours",
    "default_country",
    "invalid_numbers",
];

/// `POST /api/campaigns` as `multipart/form-data`: text parts plus the
/// `csv` file part, and optionally the `file` sent to every recipient.
// Only documents the form: `from_multipart` reads it, and a unit test
// checks that these fields are `FORM_PARTS`.
#[allow(dead_code)]
#[derive(ToSchema)]
#[schema(as = NewCampaignForm)]
struct CreateForm {
    /// 1 to 100 characters.
    #[schema(example = "spring")]
    name: String,
    #[schema(example = "acme")]
    session: String,
    #[schema(example = "Hi {{ name }}!")]
    template: String,
    /// A CSV file: a `phone` column plus the template's variables.
    #[schema(value_type = String, format = Binary, content_media_type = "text/csv")]
    csv: Vec<u8>,
    /// The attachment: one file (a photo, video, audio file or document)
    /// sent to every recipient, with the rendered template as its caption
    /// (at most 1,024 characters). Its part's `Content-Type` is its MIME
    /// type (required); at most its kind's `[media]` limit (`image_max`
    /// 5 MB, `video_max` and `audio_max` 16 MB, `document_max` 100 MB).
    #[schema(value_type = Option<String>, format = Binary)]
    file: Option<Vec<u8>>,
    /// `true`, `1` or `on` to start now.
    #[schema(example = "false")]
    start: Option<String>,
    #[schema(example = "20s")]
    min_delay: Option<String>,
    #[schema(example = "45s")]
    max_delay: Option<String>,
    /// `true`, `1` or `on` to show "typing…" first.
    #[schema(example = "false")]
    typing: Option<String>,
    #[schema(example = "22:00-08:00")]
    quiet_hours: Option<String>,
    #[schema(example = "DE")]
    default_country: Option<String>,
    invalid_numbers: Option<InvalidNumbers>,
}

/// A 400 for campaign input: `rows` lists every bad row when rows are bad.
#[derive(Serialize, ToSchema)]
struct InputErrorBody {
    error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    rows: Option<Vec<RowError>>,
}

/// A campaign as the API shows it.
#[derive(Serialize, ToSchema)]
struct CampaignView {
    #[schema(example = "cmp_0123456789abcdef")]
    id: String,
    name: String,
    session: String,
    state: CampaignState,
    reason: Option<String>,
    template: String,
    pacing: PacingSpec,
    total: u32,
    duplicates: u32,
    /// Recipients by state: `PENDING`, `SENDING`, `SENT`, `FAILED`, `SKIPPED`.
    #[schema(value_type = BTreeMap<String, u32>)]
    counts: BTreeMap<&'static str, u32>,
    /// Sends the session started today (in `campaigns.timezone`), all
    /// campaigns together.
    sent_today: u32,
    /// When the campaign's next send is due, Unix epoch ms.
    next_send_ms: Option<u64>,
    /// What holds that send until then: `gap` (the campaign's or the
    /// number's), `quiet_hours`, `daily_cap`, `warmup` or
    /// `first_contact_cap`.
    next_send_why: Option<String>,
    /// The number's (session's) pacing, shared by all its campaigns.
    number: super::numbers::NumberView,
    /// Sent recipients that wrote back.
    replies: u32,
    /// Sent recipients that opted out.
    opt_outs: u32,
    /// Recipients on the session's opt-out list when the campaign was
    /// created: they will be skipped (only in the answer to its creation).
    #[serde(skip_serializing_if = "Option::is_none")]
    will_skip_opted_out: Option<u32>,
    /// The file sent to every recipient (the rendered template its
    /// caption); `null` for texts only.
    attachment: Option<AttachmentMeta>,
    /// Estimated end, Unix epoch ms, from the mean gap.
    eta_ms: Option<u64>,
    created_ms: u64,
    updated_ms: u64,
    /// Recipients that became `SENT` in each of the last 24 whole UTC
    /// hours, oldest first, the current hour last (only in `GET
    /// /api/campaigns/{id}`: it reads every recipient).
    #[serde(skip_serializing_if = "Option::is_none")]
    sends_per_hour: Option<Vec<HourSends>>,
}

/// A campaign's view: O(1) reads (the counts come from the [`Tally`]).
///
/// [`Tally`]: crate::campaign::Tally
fn view(state: &AppState, record: CampaignRecord) -> Result<CampaignView, ApiError> {
    let tally = state.tally.get(&state.store, &record.id)?;
    let counts: BTreeMap<&'static str, u32> = RecipientState::ALL.iter().map(|s| (s.as_str(), tally[s.index()])).collect();
    let left = counts["PENDING"] + counts["SENDING"];
    let eta_ms = (record.state == CampaignState::Running && left > 0).then(|| {
        let mean_gap = u64::try_from(record.pacing.min_delay.saturating_add(record.pacing.max_delay).as_millis() / 2).unwrap_or(u64::MAX);
        record.next_send_ms.unwrap_or_else(now_ms).max(now_ms()).saturating_add(mean_gap.saturating_mul(u64::from(left - 1)))
    });
    let number = super::numbers::number_view(state, &record.session)?;
    Ok(CampaignView {
        id: record.id,
        name: record.name,
        session: record.session,
        state: record.state,
        reason: record.reason,
        template: record.template,
        pacing: record.pacing,
        total: record.total,
        duplicates: record.duplicates,
        counts,
        sent_today: number.sent_today,
        next_send_ms: record.next_send_ms,
        next_send_why: record.next_send_hold,
        number,
        replies: record.replies,
        opt_outs: record.opt_outs,
        will_skip_opted_out: None,
        attachment: record.attachment,
        eta_ms,
        created_ms: record.created_ms,
        updated_ms: record.updated_ms,
        sends_per_hour: None,
    })
}

fn bad_rows(mut rows: Vec<RowError>) -> HttpResponse {
    let total = rows.len();
    let error = if total > campaign::MAX_LISTED_ROW_ERRORS {
        rows.truncate(campaign::MAX_LISTED_ROW_ERRORS);
        format!("{total} rows are invalid (the first {} are listed); nothing was created", campaign::MAX_LISTED_ROW_ERRORS)
    } else {
        format!("{total} row(s) are invalid; nothing was created")
    };
    HttpResponse::BadRequest().json(InputErrorBody { error, rows: Some(rows) })
}

/// What checking a campaign's input gives: its recipients and duplicates,
/// or the answer to send.
enum Checked {
    Ok(Vec<RecipientRecord>, u32),
    Invalid(String),
    Rows(Vec<RowError>),
}

/// Parses and checks every row and renders every message: CPU-bound,
/// bounded by `[limits]`; runs on the blocking pool. With an attachment
/// (`captions`), every message is a caption and must fit WhatsApp's
/// caption limit.
fn check_input(
    body: &CreateBody,
    country: Option<phonenumber::country::Id>,
    limits: &campaign::InputLimits,
    now: u64,
    captions: bool,
) -> Checked {
    let parsed = match (&body.recipients, &body.csv) {
        (Some(items), None) => campaign::rows_from_json(items, limits),
        (None, Some(csv)) => campaign::rows_from_csv(csv, limits),
        _ => return Checked::Invalid("give the recipients either as \"recipients\" (JSON) or as CSV".into()),
    };
    let rows: Vec<Row> = match parsed {
        Ok(rows) => rows,
        Err(InputError::Invalid(m)) => return Checked::Invalid(m),
        Err(InputError::Rows(rows)) => return Checked::Rows(rows),
    };
    match campaign::recipients(rows, &body.template, country, body.invalid_numbers, now, limits) {
        Ok((r, _)) if captions && r.iter().any(|r| r.text.chars().count() > media::MAX_CAPTION_CHARS) => {
            let long = r.iter().filter(|r| r.text.chars().count() > media::MAX_CAPTION_CHARS);
            let error = format!("the caption is longer than {} characters (WhatsApp's limit for media captions)", media::MAX_CAPTION_CHARS);
            Checked::Rows(long.map(|r| RowError { line: r.line, error: error.clone() }).collect())
        }
        Ok((r, d)) => Checked::Ok(r, d),
        Err(InputError::Invalid(m)) => Checked::Invalid(m),
        Err(InputError::Rows(rows)) => Checked::Rows(rows),
    }
}

/// Create a campaign
///
/// From JSON (recipients as `recipients` or `csv` text) or from a
/// `multipart/form-data` upload with a `csv` file part and optionally a
/// `file` part: an attachment sent to every recipient, the rendered
/// template its caption. Every row and the file are checked before
/// anything is stored; the file is stored (durably) before the campaign.
/// A `DRAFT` unless `start`. With `start`, the session must be `CONNECTED`
/// or on its way back (`STARTING`, `RECONNECTING`: the campaign waits for
/// it up to `campaigns.resume_grace`); otherwise 409 and nothing is created.
#[utoipa::path(
    post,
    operation_id = "create_campaign",
    path = "/api/campaigns",
    tag = "campaigns",
    request_body(content(
        (CreateBody = "application/json"),
        (CreateForm = "multipart/form-data"),
    )),
    responses(
        (status = 201, description = "Created", body = CampaignView),
        (status = 400, description = "Invalid input or over a `[limits]` bound (named in the message); `rows` lists the bad rows (the first 100; with an attachment, also captions over 1,024 characters); a file part without a `Content-Type`, or empty. Nothing was stored", body = InputErrorBody),
        (status = 408, description = "The body took longer than `limits.body_timeout`", body = ErrorBody),
        (status = 409, description = "The pacing cannot be applied; or `start` on a session that waiting cannot bring back (`SCAN_QR`, `LOGGED_OUT`, `BLOCKED`, `FAILED`, `STOPPED`, or `CONFLICT` unless `restart.conflict = \"takeover\"`): the message says what to do first. Nothing was stored", body = ErrorBody),
        (status = 413, description = "Parts other than `file` over `http.max_body_bytes`, template over `limits.template_bytes`, or the file over its kind's `[media]` limit (named in the message). Nothing was stored", body = ErrorBody),
        (status = 422, description = "No such session, or a photo whose bytes are not its `Content-Type`", body = ErrorBody),
        (status = 500, description = "The attachment could not be written. Nothing was stored", body = ErrorBody),
        (status = 503, description = "The store does not take writes now. Nothing was stored", body = ErrorBody),
        (status = 507, description = "The disk is full: the attachment could not be written. Nothing was stored", body = ErrorBody),
    ),
)]
async fn create(state: web::Data<AppState>, req: HttpRequest, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let content_type = req.headers().get(actix_web::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let max = state.max_body;
    let (body, attachment) = if content_type.starts_with("multipart/form-data") {
        let allowance = actix_web::HttpMessage::extensions(&req).get::<super::conventions::BodyAllowance>().cloned();
        from_multipart(Multipart::new(req.headers(), payload), max, &state.config, allowance).await?
    } else if content_type.starts_with("application/json") {
        let bytes = super::conventions::read_limited(payload, max).await?;
        (serde_json::from_slice::<CreateBody>(&bytes).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?, None)
    } else {
        return Err(ApiError::bad_request("expected Content-Type: application/json or multipart/form-data (with a csv part)"));
    };
    let name = body.name.trim().to_string();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::bad_request("name must be 1 to 100 characters"));
    }
    validate_name(&body.session).map_err(ApiError::bad_request)?;
    let limits = state.config.limits.clone();
    campaign::check_pacing(&body.pacing, &limits).map_err(ApiError::bad_request)?;
    if body.template.len() > limits.template_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("template is {} bytes; at most {} (limits.template_bytes)", body.template.len(), limits.template_bytes),
        ));
    }
    let country = match body.default_country.as_deref() {
        Some(c) if !c.trim().is_empty() => Some(crate::whatsapp::number::country(c).map_err(ApiError::bad_request)?),
        Some(_) => None,
        None => state.config.campaigns.country().map_err(ApiError::internal)?,
    };
    let now = now_ms();
    // One creation per permit; the rest wait here (async: no worker is
    // held) so hostile uploads cannot take every blocking thread.
    let _permit = state.creates.clone().acquire_owned().await.map_err(|e| ApiError::internal(e.to_string()))?;
    let captions = attachment.is_some();
    let (checked, body) = web::block(move || {
        batch_priority();
        let checked = check_input(&body, country, &limits, now, captions);
        // Renders may have built strings of up to minijinja's 100 MB
        // before being refused.
        crate::procfs::release_free_memory();
        (checked, body)
    })
    .await
    .map_err(|e| ApiError::internal(format!("checking the input: {e}")))?;
    let (recipients, duplicates) = match checked {
        Checked::Ok(r, d) => (r, d),
        Checked::Invalid(m) => return Err(ApiError::bad_request(m)),
        Checked::Rows(rows) => return Ok(bad_rows(rows)),
    };
    let record = CampaignRecord {
        total: recipients.len() as u32,
        duplicates,
        ..CampaignRecord::draft(campaign::new_id(), name, body.session, body.template, body.pacing, now)
    };
    // How many it will skip for now: the list may change before their turn.
    let opted_out = {
        let store = state.store.clone();
        let (session, phones): (String, Vec<String>) =
            (record.session.clone(), recipients.iter().map(|r| r.phone.trim_start_matches('+').to_string()).collect());
        web::block(move || -> Result<u32, crate::store::StoreError> {
            let mut n = 0;
            for p in &phones {
                n += u32::from(store.opt_out(&session, p)?.is_some());
            }
            Ok(n)
        })
        .await
        .map_err(|e| ApiError::internal(format!("checking the opt-out list: {e}")))??
    };
    let record = state.campaigns.send(CreateCampaign { record, recipients, start: body.start, attachment }).await??;
    let mut created = view(&state, record)?;
    created.will_skip_opted_out = Some(opted_out);
    Ok(HttpResponse::Created().json(created))
}

/// Lowers the calling thread's CPU priority to nice 10 (for good: it is a
/// thread of the HTTP workers' blocking pool, which runs only input
/// checks), so a check that takes seconds of CPU leaves the cores to the
/// workers answering `/health` and the rest. Harmless if it fails: only the
/// scheduling changes.
fn batch_priority() {
    // SAFETY: setpriority(2) on this thread's own id; no memory is touched.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
    }
}

/// Reads the multipart form: its text parts (together at most `max`
/// bytes, `http.max_body_bytes`) and the `file` part, if any (at most its
/// kind's `[media]` limit, which `allowance` adds to the body's bound; read
/// and checked as a media send's file is).
async fn from_multipart(
    mut form: Multipart,
    max: usize,
    config: &Config,
    allowance: Option<super::conventions::BodyAllowance>,
) -> Result<(CreateBody, Option<Media>), ApiError> {
    let mut fields: BTreeMap<String, String> = BTreeMap::new();
    let mut file: Option<Media> = None;
    let mut total = 0usize;
    let multipart_error = |e: actix_multipart::MultipartError| match e {
        actix_multipart::MultipartError::Payload(p) => super::conventions::payload_error(&p),
        other => ApiError::bad_request(format!("multipart: {other}")),
    };
    while let Some(field) = form.next().await {
        let mut field = field.map_err(multipart_error)?;
        let name = field.name().unwrap_or("").to_string();
        if !FORM_PARTS.contains(&name.as_str()) {
            return Err(ApiError::bad_request(format!("unknown form part {name:?}; expected {FORM_PARTS:?}")));
        }
        if fields.contains_key(&name) || (name == "file" && file.is_some()) {
            return Err(ApiError::bad_request(format!("form part {name:?} is repeated")));
        }
        if name == "file" {
            file = Some(super::upload::file_part(&mut field, config, "nothing was created", allowance.as_ref(), multipart_error).await?);
            continue;
        }
        let mut value = Vec::new();
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(multipart_error)?;
            total += chunk.len();
            if total > max {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body is larger than the limit of {max} bytes (http.max_body_bytes)"),
                ));
            }
            value.extend_from_slice(&chunk);
        }
        let text = String::from_utf8(value).map_err(|_| ApiError::bad_request(format!("part {name:?} is not UTF-8")))?;
        fields.insert(name, text);
    }
    if let Some(unknown) = fields.keys().find(|k| !FORM_PARTS.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!("unknown form part {unknown:?}; expected {FORM_PARTS:?}")));
    }
    let take = |k: &str| fields.get(k).cloned();
    let required = |k: &str| take(k).ok_or_else(|| ApiError::bad_request(format!("missing form part {k:?}")));
    let duration = |k: &str, default: std::time::Duration| -> Result<std::time::Duration, ApiError> {
        match take(k) {
            Some(v) => humantime::parse_duration(v.trim()).map_err(|e| ApiError::bad_request(format!("{k}: {e}"))),
            // (humantime's parser checks its own arithmetic; the bound on
            // gaps is `check_pacing`'s.)
            None => Ok(default),
        }
    };
    let flag = |k: &str| -> Result<bool, ApiError> {
        match take(k).as_deref().map(str::trim) {
            None | Some("") | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") | Some("on") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!("{k}: expected true or false, got {other:?}"))),
        }
    };
    if let Some(file) = &file {
        super::upload::check_file(file)?;
    }
    let defaults = PacingSpec::default();
    let body = CreateBody {
        name: required("name")?,
        session: required("session")?,
        template: required("template")?,
        recipients: None,
        csv: Some(required("csv")?),
        pacing: PacingSpec {
            min_delay: duration("min_delay", defaults.min_delay)?,
            max_delay: duration("max_delay", defaults.max_delay)?,
            typing: flag("typing")?,
            quiet_hours: take("quiet_hours").filter(|q| !q.trim().is_empty()),
        },
        start: flag("start")?,
        default_country: take("default_country"),
        invalid_numbers: match take("invalid_numbers").as_deref().map(str::trim) {
            None | Some("") | Some("reject") => InvalidNumbers::Reject,
            Some("fail") => InvalidNumbers::Fail,
            Some(other) => return Err(ApiError::bad_request(format!("invalid_numbers: expected reject or fail, got {other:?}"))),
        },
    };
    Ok((body, file))
}

fn checked_id(id: &str) -> Result<(), ApiError> {
    if campaign::valid_id(id) {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::NOT_FOUND, format!("no campaign {id:?}")))
    }
}

fn stored(state: &AppState, id: &str) -> Result<CampaignRecord, ApiError> {
    checked_id(id)?;
    state.store.campaign(id)?.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no campaign {id:?}")))
}

/// List campaigns
#[utoipa::path(
    get,
    operation_id = "list_campaigns",
    path = "/api/campaigns",
    tag = "campaigns",
    responses((status = 200, description = "Every campaign", body = [CampaignView])),
)]
async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let records = state.store.campaigns()?;
    let views = records.into_iter().map(|r| view(&state, r)).collect::<Result<Vec<_>, _>>()?;
    Ok(HttpResponse::Ok().json(views))
}

/// One campaign
///
/// With `sends_per_hour`: its sends in each of the last 24 hours (one pass
/// over its recipients, unless none was sent since the last ask within the
/// same hour).
#[utoipa::path(
    get,
    operation_id = "get_campaign",
    path = "/api/campaigns/{id}",
    tag = "campaigns",
    params(CampaignId),
    responses(
        (status = 200, description = "The campaign, with `sends_per_hour`", body = CampaignView),
        (status = 404, description = "No such campaign", body = ErrorBody),
        (status = 503, description = "The store could not be read", body = ErrorBody),
    ),
)]
async fn get(state: web::Data<AppState>, path: web::Path<CampaignId>) -> Result<HttpResponse, ApiError> {
    let record = stored(&state, &path.id)?;
    // The counts first: a send stored after them changes them, so what is
    // cached under them is never older than they are.
    let counts = state.tally.get(&state.store, &record.id)?;
    let now = now_ms();
    let hours = match state.sends.get(&record.id, &counts, now) {
        Some(hours) => hours,
        None => {
            let (store, id) = (state.store.clone(), record.id.clone());
            // Up to `limits.recipients` records: off the HTTP worker.
            let times =
                web::block(move || store.sent_times(&id)).await.map_err(|e| ApiError::internal(format!("reading sends: {e}")))??;
            let hours = campaign::sends_per_hour(times, now);
            state.sends.put(&record.id, counts, now, hours.clone());
            hours
        }
    };
    let mut v = view(&state, record)?;
    v.sends_per_hour = Some(hours);
    Ok(HttpResponse::Ok().json(v))
}

async fn command(state: web::Data<AppState>, id: String, command: CampaignCommand) -> Result<HttpResponse, ApiError> {
    checked_id(&id)?;
    let record = state.campaigns.send(Command { id, command }).await??;
    Ok(HttpResponse::Ok().json(view(&state, record)?))
}

/// Start a campaign
///
/// A `DRAFT` starts sending. Its session must be `CONNECTED` or on its way
/// back (`STARTING`, `RECONNECTING`: the campaign waits for it up to
/// `campaigns.resume_grace`); a session that only a person can bring back
/// is refused at once, with what to do.
#[utoipa::path(
    post,
    operation_id = "start_campaign",
    path = "/api/campaigns/{id}/start",
    tag = "campaigns",
    params(CampaignId),
    responses(
        (status = 200, description = "The campaign", body = CampaignView),
        (status = 404, description = "No such campaign", body = ErrorBody),
        (status = 409, description = "The campaign's state does not allow it; or its session is `SCAN_QR`, `LOGGED_OUT`, `BLOCKED`, `FAILED`, `STOPPED`, `CONFLICT` (unless `restart.conflict = \"takeover\"`) or deleted: the message says what to do first (`session acme is SCAN_QR: scan its QR (GET /api/sessions/acme/qr) before starting a campaign`). Nothing changed", body = ErrorBody),
    ),
)]
async fn start(state: web::Data<AppState>, path: web::Path<CampaignId>) -> Result<HttpResponse, ApiError> {
    command(state, path.into_inner().id, CampaignCommand::Start).await
}
/// Pause a campaign
///
/// A `RUNNING` campaign stops at a safe point.
#[utoipa::path(
    post,
    operation_id = "pause_campaign",
    path = "/api/campaigns/{id}/pause",
    tag = "campaigns",
    params(CampaignId),
    responses(
        (status = 200, description = "The campaign", body = CampaignView),
        (status = 404, description = "No such campaign", body = ErrorBody),
        (status = 409, description = "The campaign's state does not allow it", body = ErrorBody),
    ),
)]
async fn pause(state: web::Data<AppState>, path: web::Path<CampaignId>) -> Result<HttpResponse, ApiError> {
    command(state, path.into_inner().id, CampaignCommand::Pause).await
}
/// Resume a campaign
///
/// A `PAUSED` or `FAILED` campaign runs again; its session must be as for a
/// start.
#[utoipa::path(
    post,
    operation_id = "resume_campaign",
    path = "/api/campaigns/{id}/resume",
    tag = "campaigns",
    params(CampaignId),
    responses(
        (status = 200, description = "The campaign", body = CampaignView),
        (status = 404, description = "No such campaign", body = ErrorBody),
        (status = 409, description = "The campaign's state does not allow it; or its session is one a start refuses (the message says what to do first). Nothing changed", body = ErrorBody),
    ),
)]
async fn resume(state: web::Data<AppState>, path: web::Path<CampaignId>) -> Result<HttpResponse, ApiError> {
    command(state, path.into_inner().id, CampaignCommand::Resume).await
}
/// Cancel a campaign
///
/// A campaign that has not ended is `CANCELLED`; its remaining recipients are not sent.
#[utoipa::path(
    post,
    operation_id = "cancel_campaign",
    path = "/api/campaigns/{id}/cancel",
    tag = "campaigns",
    params(CampaignId),
    responses(
        (status = 200, description = "The campaign", body = CampaignView),
        (status = 404, description = "No such campaign", body = ErrorBody),
        (status = 409, description = "The campaign's state does not allow it", body = ErrorBody),
    ),
)]
async fn cancel(state: web::Data<AppState>, path: web::Path<CampaignId>) -> Result<HttpResponse, ApiError> {
    command(state, path.into_inner().id, CampaignCommand::Cancel).await
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct RecipientQuery {
    /// Only the recipients in this state (any case).
    #[param(value_type = Option<RecipientState>, example = "FAILED")]
    state: Option<String>,
}

/// A recipient as the API shows it.
#[derive(Serialize, ToSchema)]
struct RecipientView<'a> {
    /// Line in the input (the CSV's header is line 1).
    line: u32,
    /// E.164 without `+`.
    phone: &'a str,
    state: RecipientState,
    reason: Option<&'a str>,
    message_id: Option<&'a str>,
    /// `SERVER`, `DEVICE`, `READ` once sent.
    ack: Option<&'a str>,
    attempts: u32,
    sent_at_ms: Option<u64>,
    /// When the contact first wrote back after the send.
    replied_at_ms: Option<u64>,
    /// When the contact opted out after the send.
    opted_out_at_ms: Option<u64>,
    /// The row's template variables.
    #[schema(value_type = BTreeMap<String, String>)]
    vars: &'a BTreeMap<String, String>,
}

fn recipient_view(r: &RecipientRecord) -> RecipientView<'_> {
    RecipientView {
        line: r.line,
        phone: &r.phone,
        state: r.state,
        reason: r.reason.as_deref(),
        message_id: r.message_id.as_deref(),
        ack: r.ack.as_deref(),
        attempts: r.attempts,
        sent_at_ms: r.sent_at_ms,
        replied_at_ms: r.replied_at_ms,
        opted_out_at_ms: r.opted_out_at_ms,
        vars: &r.vars,
    }
}

/// A campaign's recipients
#[utoipa::path(
    get,
    operation_id = "list_recipients",
    path = "/api/campaigns/{id}/recipients",
    tag = "campaigns",
    params(CampaignId, RecipientQuery),
    responses(
        (status = 200, description = "The recipients, in input order", body = [RecipientView]),
        (status = 400, description = "Unknown state or query parameter", body = ErrorBody),
        (status = 404, description = "No such campaign", body = ErrorBody),
    ),
)]
async fn recipients(
    state: web::Data<AppState>,
    path: web::Path<CampaignId>,
    query: web::Query<RecipientQuery>,
) -> Result<HttpResponse, ApiError> {
    let record = stored(&state, &path.id)?;
    let wanted = match query.into_inner().state {
        Some(s) => Some(s.parse::<RecipientState>().map_err(ApiError::bad_request)?),
        None => None,
    };
    let all = state.store.recipients(&record.id)?;
    let views: Vec<_> = all.iter().filter(|r| wanted.is_none_or(|w| r.state == w)).map(recipient_view).collect();
    Ok(HttpResponse::Ok().json(views))
}

/// A campaign's report
///
/// Every recipient as CSV: `line,phone,state,reason,message_id,ack,attempts,sent_at_ms`.
#[utoipa::path(
    get,
    operation_id = "get_report",
    path = "/api/campaigns/{id}/report.csv",
    tag = "campaigns",
    params(CampaignId),
    responses(
        (status = 200, description = "The report", body = String, content_type = "text/csv"),
        (status = 404, description = "No such campaign", body = ErrorBody),
    ),
)]
async fn report(state: web::Data<AppState>, path: web::Path<CampaignId>) -> Result<HttpResponse, ApiError> {
    let record = stored(&state, &path.id)?;
    let all = state.store.recipients(&record.id)?;
    let mut out = csv::Writer::from_writer(Vec::new());
    let csv_error = |e: csv::Error| ApiError::internal(format!("report: {e}"));
    out.write_record([
        "line",
        "phone",
        "state",
        "reason",
        "message_id",
        "ack",
        "attempts",
        "sent_at_ms",
        "replied_at_ms",
        "opted_out_at_ms",
    ])
    .map_err(csv_error)?;
    for r in &all {
        out.write_record([
            r.line.to_string(),
            neutralise(&r.phone),
            r.state.as_str().to_string(),
            neutralise(r.reason.as_deref().unwrap_or_default()),
            neutralise(r.message_id.as_deref().unwrap_or_default()),
            neutralise(r.ack.as_deref().unwrap_or_default()),
            r.attempts.to_string(),
            r.sent_at_ms.map(|t| t.to_string()).unwrap_or_default(),
            r.replied_at_ms.map(|t| t.to_string()).unwrap_or_default(),
            r.opted_out_at_ms.map(|t| t.to_string()).unwrap_or_default(),
        ])
        .map_err(csv_error)?;
    }
    let bytes = out.into_inner().map_err(|e| ApiError::internal(format!("report: {e}")))?;
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header(("Content-Disposition", format!("attachment; filename=\"{}.csv\"", record.id)))
        .body(bytes))
}

/// A CSV cell that a spreadsheet will not run as a formula (OWASP, "CSV
/// Injection"): a cell starting with `=`, `+`, `-`, `@`, tab or CR gets a
/// leading `'`. An E.164 number (`+` and 7 to 15 digits) is left as it
/// is: it cannot call anything, and the report stays usable.
fn neutralise(cell: &str) -> String {
    let e164 = cell.len() >= 8 && cell.len() <= 16 && cell.starts_with('+') && cell[1..].bytes().all(|b| b.is_ascii_digit());
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') if !e164 => format!("'{cell}"),
        _ => cell.to_string(),
    }
}

/// What a session's campaigns still have to send.
#[derive(Serialize, ToSchema)]
struct QueueView {
    session: String,
    /// Recipients `PENDING` or `SENDING`, all campaigns together.
    pending: u32,
    /// The session's campaigns that have not ended.
    campaigns: Vec<QueuedCampaign>,
}

/// A campaign in a session's queue.
#[derive(Serialize, ToSchema)]
struct QueuedCampaign {
    id: String,
    name: String,
    state: CampaignState,
    reason: Option<String>,
    /// Its recipients `PENDING` or `SENDING`.
    pending: u32,
    next_send_ms: Option<u64>,
}

/// What `DELETE /api/sessions/{name}/queue` did.
#[derive(Serialize, ToSchema)]
struct ClearedQueue {
    session: String,
    /// How many campaigns were cancelled.
    cancelled_campaigns: u32,
}

/// A session's queue
///
/// What the session's campaigns that have not ended still have to send.
#[utoipa::path(
    get,
    operation_id = "get_queue",
    path = "/api/sessions/{name}/queue",
    tag = "campaigns",
    params(SessionName),
    responses(
        (status = 200, description = "The queue", body = QueueView),
        (status = 400, description = "Invalid session name", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
    ),
)]
async fn queue(state: web::Data<AppState>, path: web::Path<SessionName>) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner().name;
    state.supervisor.send(crate::actors::supervisor::GetSession { name: name.clone() }).await??;
    let records = state.store.campaigns()?;
    let mut campaigns = Vec::new();
    let mut pending = 0;
    for r in records.into_iter().filter(|r| r.session == name && !r.state.is_final()) {
        let v = view(&state, r)?;
        let left = v.counts["PENDING"] + v.counts["SENDING"];
        pending += left;
        campaigns.push(QueuedCampaign {
            id: v.id,
            name: v.name,
            state: v.state,
            reason: v.reason,
            pending: left,
            next_send_ms: v.next_send_ms,
        });
    }
    Ok(HttpResponse::Ok().json(QueueView { session: name, pending, campaigns }))
}

/// Clear a session's queue
///
/// Cancels every campaign of the session that has not ended.
#[utoipa::path(
    delete,
    operation_id = "clear_queue",
    path = "/api/sessions/{name}/queue",
    tag = "campaigns",
    params(SessionName),
    responses(
        (status = 200, description = "What was cancelled", body = ClearedQueue),
        (status = 400, description = "Invalid session name", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
    ),
)]
async fn clear_queue(state: web::Data<AppState>, path: web::Path<SessionName>) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner().name;
    state.supervisor.send(crate::actors::supervisor::GetSession { name: name.clone() }).await??;
    let cancelled = state.campaigns.send(ClearQueue { session: name.clone() }).await??;
    Ok(HttpResponse::Ok().json(ClearedQueue { session: name, cancelled_campaigns: cancelled }))
}

#[cfg(test)]
mod tests {
    use super::neutralise;

    #[test]
    fn report_cells_never_start_a_formula() {
        assert_eq!(neutralise("=HYPERLINK(\"http://x\")"), "'=HYPERLINK(\"http://x\")");
        for bad in ["+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\tx", "\rx", "+"] {
            assert!(neutralise(bad).starts_with('\''), "{bad:?}");
        }
        assert_eq!(neutralise("+4915112345678"), "+4915112345678");
        assert_eq!(neutralise("not_on_whatsapp"), "not_on_whatsapp");
        assert_eq!(neutralise(""), "");
    }
}
