//! Campaigns as data: their states, their stored records, and how a new
//! campaign's input (JSON or CSV) is checked and turned into recipients.
//!
//! Every row is checked before anything is stored: the phone number is
//! normalised to E.164 (with a default country for national numbers), the
//! template is rendered with the row's variables (an undefined variable is an
//! error, not an empty string), and duplicates are dropped and counted. Bad
//! rows are all reported at once with their line numbers.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::whatsapp::number;

/// A campaign's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CampaignState {
    /// Created, not started.
    Draft,
    Running,
    /// By an operator, waiting for its session, or cooling down after a
    /// reach-out timelock.
    Paused,
    Completed,
    Failed,
    Cancelled,
}

impl CampaignState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "DRAFT",
            Self::Running => "RUNNING",
            Self::Paused => "PAUSED",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
        }
    }

    /// The state named in an API answer's `state` field, if it is one.
    pub fn of(v: &serde_json::Value) -> Option<Self> {
        serde_json::from_value(v.clone()).ok()
    }

    /// No more sends will happen by themselves.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

impl std::fmt::Display for CampaignState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A recipient's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RecipientState {
    Pending,
    /// Recorded (and flushed) before the send; resolved after a crash by
    /// looking its message id up in the page.
    Sending,
    Sent,
    Failed,
    Skipped,
}

impl RecipientState {
    pub const ALL: [RecipientState; 5] = [Self::Pending, Self::Sending, Self::Sent, Self::Failed, Self::Skipped];

    /// The state's position in [`Self::ALL`] (and in [`Counts`]).
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Sending => "SENDING",
            Self::Sent => "SENT",
            Self::Failed => "FAILED",
            Self::Skipped => "SKIPPED",
        }
    }
}

impl std::str::FromStr for RecipientState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown recipient state {s:?}: use PENDING, SENDING, SENT, FAILED or SKIPPED"))
    }
}

/// A campaign's pacing as given by its creator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PacingSpec {
    /// Shortest gap between two sends. Default 20 s.
    #[serde(with = "humantime_serde")]
    #[schema(value_type = String, default = "20s", example = "20s")]
    pub min_delay: Duration,
    /// Longest gap. Default 45 s.
    #[serde(with = "humantime_serde")]
    #[schema(value_type = String, default = "45s", example = "45s")]
    pub max_delay: Duration,
    /// Show "typing…" for a time scaled to the text before each send.
    pub typing: bool,
    /// `"22:00-08:00"`: no sends start inside, in `campaigns.timezone`.
    #[schema(example = "22:00-08:00")]
    pub quiet_hours: Option<String>,
}

impl Default for PacingSpec {
    fn default() -> Self {
        Self { min_delay: Duration::from_secs(20), max_delay: Duration::from_secs(45), typing: false, quiet_hours: None }
    }
}

/// Recipients per state of one campaign, indexed like [`RecipientState::ALL`].
pub type Counts = [u32; 5];

/// The recipient counts of every campaign, kept in memory so views and
/// metrics cost O(campaigns), never a scan of recipients. Counted from the
/// store once at boot ([`Tally::seed`], or by the campaign's actor as it
/// loads), set for a new campaign before its record is stored, and
/// published by running campaigns after every write.
/// Cheap to clone.
#[derive(Clone, Default)]
pub struct Tally(std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Counts>>>);

impl Tally {
    /// Counts of a list of recipients.
    pub fn count(recipients: &[RecipientRecord]) -> Counts {
        let mut c = Counts::default();
        for r in recipients {
            c[r.state.index()] += 1;
        }
        c
    }

    /// Sets a campaign's counts.
    pub fn set(&self, id: &str, counts: Counts) {
        if let Ok(mut map) = self.0.lock() {
            map.insert(id.to_string(), counts);
        }
    }

    /// Forgets a campaign (its creation failed).
    pub fn remove(&self, id: &str) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(id);
        }
    }

    /// Counts the recipients of every stored campaign that no Campaign
    /// actor will load (at boot, before the API serves). A `RUNNING` or
    /// `PAUSED` campaign is skipped: its actor reads every recipient at its
    /// start and sets the counts then, so each recipient is read once (a
    /// view before that counts the campaign itself: [`Tally::get`]).
    /// Returns the campaigns counted.
    ///
    /// Errors: the store cannot be read.
    pub fn seed(&self, store: &crate::store::Store) -> Result<usize, crate::store::StoreError> {
        let mut counted = 0;
        for c in store.campaigns()?.iter().filter(|c| !matches!(c.state, CampaignState::Running | CampaignState::Paused)) {
            self.set(&c.id, Self::count(&store.recipients(&c.id)?));
            counted += 1;
        }
        Ok(counted)
    }

    /// A campaign's counts; counted from the store if it was not known (a
    /// restored campaign whose actor has not loaded yet: see
    /// [`Tally::seed`]).
    ///
    /// Errors: the store cannot be read.
    pub fn get(&self, store: &crate::store::Store, id: &str) -> Result<Counts, crate::store::StoreError> {
        if let Some(c) = self.0.lock().ok().and_then(|m| m.get(id).copied()) {
            return Ok(c);
        }
        let counts = Self::count(&store.recipients(id)?);
        if let Ok(mut map) = self.0.lock() {
            // A running campaign may have published in the meantime: keep it.
            return Ok(*map.entry(id.to_string()).or_insert(counts));
        }
        Ok(counts)
    }
}

/// A campaign as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CampaignRecord {
    pub id: String,
    pub name: String,
    pub session: String,
    pub template: String,
    pub pacing: PacingSpec,
    pub state: CampaignState,
    pub reason: Option<String>,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// When a wait for the session began (PAUSED by the session).
    pub waiting_since_ms: Option<u64>,
    /// When a timelock cooldown ends.
    pub resume_at_ms: Option<u64>,
    /// When this campaign last started a send.
    pub last_send_ms: Option<u64>,
    /// When the next send is due, if one is scheduled.
    #[serde(default)]
    pub next_send_ms: Option<u64>,
    /// Why the next send waits until `next_send_ms`: `gap`, `quiet_hours`,
    /// `daily_cap`, `warmup` or `first_contact_cap`.
    #[serde(default)]
    pub next_send_hold: Option<String>,
    /// Sent recipients that wrote back.
    #[serde(default)]
    pub replies: u32,
    /// Sent recipients that opted out.
    #[serde(default)]
    pub opt_outs: u32,
    pub total: u32,
    /// Rows dropped at creation because their number was already listed.
    pub duplicates: u32,
    /// The file sent to every recipient (the rendered template is its
    /// caption), kept beside the store ([`crate::attachments`]); `None`:
    /// texts only.
    #[serde(default)]
    pub attachment: Option<crate::attachments::AttachmentMeta>,
}

impl CampaignRecord {
    /// A new `DRAFT` campaign at `now_ms`: nothing sent, nothing scheduled,
    /// no recipients counted yet (`total` and `duplicates` 0), no
    /// attachment.
    pub fn draft(id: String, name: String, session: String, template: String, pacing: PacingSpec, now_ms: u64) -> Self {
        Self {
            id,
            name,
            session,
            template,
            pacing,
            state: CampaignState::Draft,
            reason: None,
            created_ms: now_ms,
            updated_ms: now_ms,
            waiting_since_ms: None,
            resume_at_ms: None,
            last_send_ms: None,
            next_send_ms: None,
            next_send_hold: None,
            replies: 0,
            opt_outs: 0,
            total: 0,
            duplicates: 0,
            attachment: None,
        }
    }

    /// This record in `state` for `reason` at `now_ms`: the one rule for the
    /// fields a state change resets (a wait or a cooldown ends when the
    /// campaign leaves PAUSED; a final state has no next send).
    pub fn entering(&self, state: CampaignState, reason: Option<String>, now_ms: u64) -> CampaignRecord {
        let mut next = self.clone();
        next.state = state;
        next.reason = reason;
        next.updated_ms = now_ms;
        if state != CampaignState::Paused {
            next.waiting_since_ms = None;
            next.resume_at_ms = None;
        }
        if state.is_final() {
            next.next_send_ms = None;
            next.next_send_hold = None;
        }
        next
    }
}

/// A recipient as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecipientRecord {
    /// Position in the campaign, from 0.
    pub idx: u32,
    /// Line of the input (CSV line, or JSON array position from 1).
    pub line: u32,
    /// E.164, `+4915112345678`.
    pub phone: String,
    /// `4915112345678@c.us`.
    pub chat_id: String,
    pub vars: BTreeMap<String, String>,
    /// The rendered message.
    pub text: String,
    pub state: RecipientState,
    pub reason: Option<String>,
    /// The key id the daemon chose for the send (`3EB0…`).
    pub message_id: Option<String>,
    /// `SERVER`, `DEVICE`, `READ`, … once sent.
    pub ack: Option<String>,
    pub attempts: u32,
    pub sent_at_ms: Option<u64>,
    pub updated_ms: u64,
    /// When the contact first wrote back after the send, epoch ms.
    #[serde(default)]
    pub replied_at_ms: Option<u64>,
    /// When the contact opted out after the send, epoch ms.
    #[serde(default)]
    pub opted_out_at_ms: Option<u64>,
}

/// A row of input: its line and its fields (`phone` plus variables).
#[derive(Debug, Clone)]
pub struct Row {
    pub line: u32,
    pub fields: BTreeMap<String, String>,
}

/// A bad row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RowError {
    pub line: u32,
    pub error: String,
}

/// What a bad request to create a campaign gets back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputError {
    /// The request as a whole is wrong.
    Invalid(String),
    /// These rows are wrong.
    Rows(Vec<RowError>),
}

/// What to do with rows whose number is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InvalidNumbers {
    /// Refuse the whole campaign (400 listing the rows). The default.
    #[default]
    Reject,
    /// Keep them as `FAILED` recipients with the reason; send the rest.
    Fail,
}

/// How much input one campaign may have: `[limits]` of the config.
pub use crate::config::LimitsConfig as InputLimits;

/// At most this many bad rows are listed in a 400; the message gives the
/// total.
pub const MAX_LISTED_ROW_ERRORS: usize = 100;

fn too_many_rows(limits: &InputLimits) -> InputError {
    InputError::Invalid(format!("more than {} recipients (limits.recipients)", limits.recipients))
}

/// Parses CSV with a header row; a `phone` column is required.
///
/// Errors: no header or no `phone` column, more than `limits.columns`
/// columns or `limits.recipients` rows ([`InputError::Invalid`]); rows that
/// cannot be read or have a cell over `limits.cell_bytes`
/// ([`InputError::Rows`]).
pub fn rows_from_csv(text: &str, limits: &InputLimits) -> Result<Vec<Row>, InputError> {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(false).trim(csv::Trim::All).from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| InputError::Invalid(format!("CSV header: {e}")))?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').to_ascii_lowercase())
        .collect();
    if headers.len() > limits.columns {
        return Err(InputError::Invalid(format!("CSV has {} columns; at most {} (limits.columns)", headers.len(), limits.columns)));
    }
    if let Some(h) = headers.iter().find(|h| h.len() > limits.cell_bytes) {
        return Err(InputError::Invalid(format!(
            "CSV header {:?}… is over {} bytes (limits.cell_bytes)",
            truncate(h, 40),
            limits.cell_bytes
        )));
    }
    if !headers.iter().any(|h| h == "phone") {
        return Err(InputError::Invalid(format!("CSV needs a \"phone\" column; found {headers:?}")));
    }
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for record in reader.records() {
        if rows.len() + errors.len() >= limits.recipients {
            return Err(too_many_rows(limits));
        }
        match record {
            Ok(record) => {
                let line = record.position().map_or(0, |p| p.line() as u32);
                if let Some((h, _)) = headers.iter().zip(record.iter()).find(|(_, v)| v.len() > limits.cell_bytes) {
                    errors.push(RowError { line, error: format!("{h} is over {} bytes (limits.cell_bytes)", limits.cell_bytes) });
                    continue;
                }
                let fields = headers.iter().cloned().zip(record.iter().map(str::to_string)).collect();
                rows.push(Row { line, fields });
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line() as u32);
                errors.push(RowError { line, error: format!("unreadable row: {}", e.kind_message()) });
            }
        }
    }
    if !errors.is_empty() {
        return Err(InputError::Rows(errors));
    }
    Ok(rows)
}

/// The first `n` characters of `s`.
fn truncate(s: &str, n: usize) -> &str {
    s.char_indices().nth(n).map_or(s, |(i, _)| &s[..i])
}

trait KindMessage {
    fn kind_message(&self) -> String;
}

impl KindMessage for csv::Error {
    fn kind_message(&self) -> String {
        match self.kind() {
            csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
                format!("{len} fields where the header has {expected_len}")
            }
            csv::ErrorKind::Utf8 { .. } => "not UTF-8".into(),
            _ => self.to_string(),
        }
    }
}

/// Turns JSON recipients (`[{"phone": "+49…", "name": "Ana"}]`) into rows;
/// strings, numbers and booleans are accepted as values.
///
/// Errors: more than `limits.recipients` items ([`InputError::Invalid`]);
/// items that are not objects, have more than `limits.columns` fields,
/// nested values or values over `limits.cell_bytes` ([`InputError::Rows`]).
pub fn rows_from_json(items: &[serde_json::Value], limits: &InputLimits) -> Result<Vec<Row>, InputError> {
    if items.len() > limits.recipients {
        return Err(too_many_rows(limits));
    }
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let line = i as u32 + 1;
        let Some(object) = item.as_object() else {
            errors.push(RowError { line, error: "a recipient must be an object like {\"phone\": \"+49…\"}".into() });
            continue;
        };
        if object.len() > limits.columns {
            errors.push(RowError { line, error: format!("{} fields; at most {} (limits.columns)", object.len(), limits.columns) });
            continue;
        }
        let mut fields = BTreeMap::new();
        for (k, v) in object {
            if k.len() > limits.cell_bytes {
                errors.push(RowError { line, error: format!("a field name is over {} bytes (limits.cell_bytes)", limits.cell_bytes) });
                continue;
            }
            let value = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::Null => String::new(),
                _ => {
                    errors.push(RowError { line, error: format!("field {k:?} must be a string or a number") });
                    continue;
                }
            };
            if value.len() > limits.cell_bytes {
                errors.push(RowError { line, error: format!("{k} is over {} bytes (limits.cell_bytes)", limits.cell_bytes) });
                continue;
            }
            fields.insert(k.to_ascii_lowercase(), value);
        }
        rows.push(Row { line, fields });
    }
    if !errors.is_empty() {
        return Err(InputError::Rows(errors));
    }
    Ok(rows)
}

/// Checks a template's size and syntax.
///
/// Errors: empty, over `limits.template_bytes`, or not valid minijinja.
pub fn check_template(template: &str, limits: &InputLimits) -> Result<(), String> {
    if template.trim().is_empty() {
        return Err("template is empty".into());
    }
    if template.len() > limits.template_bytes {
        return Err(format!("template is {} bytes; at most {} (limits.template_bytes)", template.len(), limits.template_bytes));
    }
    environment(limits).template_from_str(template).map(|_| ()).map_err(|e| format!("template: {e:#}"))
}

fn environment(limits: &InputLimits) -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_fuel(Some(limits.template_fuel));
    env.add_function("variant", variant);
    env
}

/// The template function `variant("Hi", "Hello", "Hey")`: one of its
/// arguments, the same one for the same recipient every time (chosen by the
/// SHA-256 of the recipient's phone digits and the arguments), so that
/// texts vary across recipients, yet a resend after a crash (and any
/// re-render) sends the same text. Identical texts to many recipients are a
/// spam signal.
///
/// Errors: no arguments.
fn variant(state: &minijinja::State<'_, '_>, options: minijinja::value::Rest<String>) -> Result<String, minijinja::Error> {
    if options.is_empty() {
        return Err(minijinja::Error::new(minijinja::ErrorKind::MissingArgument, "variant() needs at least one text"));
    }
    let phone = state.lookup("phone").map(|v| v.to_string()).unwrap_or_default();
    Ok(options[variant_index(&phone, &options)].clone())
}

/// Which of `options` `variant()` picks for `phone` (only its digits count).
pub fn variant_index(phone: &str, options: &[String]) -> usize {
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    hash.update(phone.chars().filter(char::is_ascii_digit).collect::<String>().as_bytes());
    for o in options {
        hash.update([0u8]);
        hash.update(o.as_bytes());
    }
    let digest = hash.finalize();
    let n = u64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8]));
    usize::try_from(n % options.len().max(1) as u64).unwrap_or(0)
}

/// An `io::Write` that takes at most `left` bytes, then fails: rendering
/// stops as soon as a message outgrows the limit.
struct Bounded {
    out: Vec<u8>,
    left: usize,
}

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() > self.left {
            return Err(std::io::Error::other("message too long"));
        }
        self.left -= buf.len();
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Renders one row's message within the fuel and length limits.
fn render(tmpl: &minijinja::Template<'_, '_>, fields: &BTreeMap<String, String>, limits: &InputLimits) -> Result<String, String> {
    let too_long = || format!("the message is longer than {} characters (limits.text_chars)", limits.text_chars);
    // A char is at most 4 bytes in UTF-8.
    let mut out = Bounded { out: Vec::new(), left: limits.text_chars.saturating_mul(4) };
    if let Err(e) = tmpl.render_captured_to(fields, &mut out) {
        return Err(match e.kind() {
            minijinja::ErrorKind::OutOfFuel => format!("template: ran out of fuel ({} units, limits.template_fuel)", limits.template_fuel),
            minijinja::ErrorKind::WriteFailure => too_long(),
            _ => format!("template: {}", e.detail().unwrap_or(&e.to_string())),
        });
    }
    let text = String::from_utf8(out.out).map_err(|_| "template: the message is not UTF-8".to_string())?;
    if text.chars().count() > limits.text_chars {
        return Err(too_long());
    }
    Ok(text)
}

/// Checks every row and builds the recipients. Returns them and how many
/// duplicates were dropped. CPU-bound (one render and one number parse a
/// row): call it off the HTTP workers.
///
/// Errors: a bad template or no rows ([`InputError::Invalid`]); bad rows
/// ([`InputError::Rows`], every one, sorted by line).
pub fn recipients(
    rows: Vec<Row>,
    template: &str,
    default_country: Option<phonenumber::country::Id>,
    invalid: InvalidNumbers,
    now_ms: u64,
    limits: &InputLimits,
) -> Result<(Vec<RecipientRecord>, u32), InputError> {
    check_template(template, limits).map_err(InputError::Invalid)?;
    let env = environment(limits);
    let tmpl = env.template_from_str(template).map_err(|e| InputError::Invalid(format!("template: {e:#}")))?;
    if rows.is_empty() {
        return Err(InputError::Invalid("no recipients".into()));
    }
    if rows.len() > limits.recipients {
        return Err(too_many_rows(limits));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut duplicates = 0;
    for row in rows {
        let raw = row.fields.get("phone").map(|s| s.trim()).unwrap_or("");
        if raw.is_empty() {
            errors.push(RowError { line: row.line, error: "phone is missing".into() });
            continue;
        }
        let text = match render(&tmpl, &row.fields, limits) {
            Ok(text) if !text.trim().is_empty() => text,
            Ok(_) => {
                errors.push(RowError { line: row.line, error: "the message is empty for this row".into() });
                continue;
            }
            Err(error) => {
                errors.push(RowError { line: row.line, error });
                continue;
            }
        };
        let (phone, state, reason) = match number::normalize(raw, default_country) {
            Ok(phone) => (phone, RecipientState::Pending, None),
            Err(e) if invalid == InvalidNumbers::Fail => (raw.to_string(), RecipientState::Failed, Some(format!("invalid_number: {e}"))),
            Err(e) => {
                errors.push(RowError { line: row.line, error: e.to_string() });
                continue;
            }
        };
        if !seen.insert(phone.clone()) {
            duplicates += 1;
            continue;
        }
        let chat_id = match phone.strip_prefix('+') {
            Some(digits) if state == RecipientState::Pending => format!("{digits}@c.us"),
            _ => String::new(),
        };
        out.push(RecipientRecord {
            idx: out.len() as u32,
            line: row.line,
            phone,
            chat_id,
            vars: row.fields,
            text,
            state,
            reason,
            message_id: None,
            ack: None,
            attempts: 0,
            sent_at_ms: None,
            updated_ms: now_ms,
            replied_at_ms: None,
            opted_out_at_ms: None,
        });
    }
    if !errors.is_empty() {
        errors.sort_by_key(|e| e.line);
        return Err(InputError::Rows(errors));
    }
    Ok((out, duplicates))
}

/// Checks a campaign's pacing: `min_delay <= max_delay <= limits.max_gap`,
/// and quiet hours that parse.
pub fn check_pacing(pacing: &PacingSpec, limits: &InputLimits) -> Result<(), String> {
    if pacing.max_delay < pacing.min_delay {
        return Err("pacing.max_delay must not be shorter than pacing.min_delay".into());
    }
    if pacing.max_delay > limits.max_gap {
        return Err(format!("pacing.max_delay is over {} (limits.max_gap)", humantime::format_duration(limits.max_gap)));
    }
    if let Some(q) = pacing.quiet_hours.as_deref().filter(|q| !q.trim().is_empty()) {
        q.parse::<crate::policy::pacing::QuietHours>()?;
    }
    Ok(())
}

/// One hour of a campaign's sends (`sends_per_hour` of `GET /api/campaigns/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct HourSends {
    /// Start of the hour, Unix epoch ms (a whole UTC hour).
    #[schema(example = 1_767_222_000_000_u64)]
    pub hour_ms: u64,
    /// Recipients that became `SENT` within the hour (their `sent_at_ms`).
    pub sent: u32,
}

/// One hour, ms.
pub const HOUR_MS: u64 = 3_600_000;
/// How many hours [`sends_per_hour`] covers.
pub const SENDS_HOURS: u64 = 24;

/// Sends per hour over the last [`SENDS_HOURS`] whole UTC hours, the
/// current one (which began at most an hour before `now_ms`) last: 24
/// entries, oldest first, hours without sends at 0. `sent_at` are the
/// recipients' `sent_at_ms` (epoch ms); times outside the window (older,
/// or in the future of `now_ms`) are not counted. Pure: time is an argument.
pub fn sends_per_hour(sent_at: impl IntoIterator<Item = u64>, now_ms: u64) -> Vec<HourSends> {
    let current = now_ms - now_ms % HOUR_MS;
    let first = current.saturating_sub((SENDS_HOURS - 1) * HOUR_MS);
    // (Fewer than 24 hours only for a `now_ms` in the epoch's first day.)
    let mut hours: Vec<HourSends> =
        (0..SENDS_HOURS).map(|i| first + i * HOUR_MS).filter(|h| *h <= current).map(|hour_ms| HourSends { hour_ms, sent: 0 }).collect();
    for t in sent_at {
        if t < first || t > now_ms {
            continue;
        }
        let i = ((t - first) / HOUR_MS) as usize;
        if let Some(h) = hours.get_mut(i) {
            h.sent = h.sent.saturating_add(1);
        }
    }
    hours
}

/// The last [`sends_per_hour`] of each campaign, kept with the counts and
/// the hour it was computed at: while a campaign's counts ([`Tally`]) and
/// the current hour are the same, no recipient became `SENT` and the
/// window has not moved, so the answer is the same and no recipient is
/// read. One entry per campaign asked for (campaigns are never deleted,
/// so it holds at most one per stored campaign, about 400 bytes each).
/// Cheap to clone.
#[derive(Clone, Default)]
pub struct SendsCache(std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, CachedSends>>>);

/// A cached answer: the counts and the hour (epoch ms) it was computed at.
type CachedSends = (Counts, u64, Vec<HourSends>);

impl SendsCache {
    /// The hours of campaign `id` computed with `counts` in the hour of `now_ms`.
    pub fn get(&self, id: &str, counts: &Counts, now_ms: u64) -> Option<Vec<HourSends>> {
        let map = self.0.lock().ok()?;
        let (c, hour, hours) = map.get(id)?;
        (c == counts && *hour == now_ms - now_ms % HOUR_MS).then(|| hours.clone())
    }

    /// Keeps `hours`, computed from recipients read after `counts` were.
    pub fn put(&self, id: &str, counts: Counts, now_ms: u64, hours: Vec<HourSends>) {
        // A poisoned lock only means the cache is not used: the answer is
        // computed again next time.
        if let Ok(mut map) = self.0.lock() {
            map.insert(id.to_string(), (counts, now_ms - now_ms % HOUR_MS, hours));
        }
    }
}

/// A fresh campaign id: `cmp_` and 16 hex digits.
pub fn new_id() -> String {
    use rand::Rng as _;
    format!("cmp_{:016x}", rand::thread_rng().gen::<u64>())
}

/// Checks a campaign id's shape (it is used in store keys and URLs).
pub fn valid_id(id: &str) -> bool {
    id.len() == 20 && id.starts_with("cmp_") && id[4..].bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    static L: std::sync::LazyLock<InputLimits> = std::sync::LazyLock::new(InputLimits::default);

    const CSV: &str = "phone,name\n+49 151 12345678,Ana\n0151 23456789,Ben\n+4915112345678,Ana again\nnot a number,Cid\n,Dee\n";

    #[test]
    fn sends_are_counted_per_whole_hour_over_the_last_day() {
        let now = 1_767_222_000_000 + 30 * 60_000; // half past a whole hour
        let current = now - 30 * 60_000;
        let first = current - 23 * HOUR_MS;
        let times = [now, current, current - 1, first, first - 1, now + 1, first + 5 * HOUR_MS + 59 * 60_000];
        let hours = sends_per_hour(times, now);
        assert_eq!(hours.len(), 24);
        assert_eq!(hours[0], HourSends { hour_ms: first, sent: 1 });
        assert_eq!(hours[5].sent, 1);
        assert_eq!(hours[22].sent, 1, "one ms before the current hour");
        assert_eq!(hours[23], HourSends { hour_ms: current, sent: 2 });
        assert_eq!(hours.iter().map(|h| h.sent).sum::<u32>(), 5, "older than the window or after now: not counted");
        assert!(hours.windows(2).all(|w| w[1].hour_ms - w[0].hour_ms == HOUR_MS));
        assert!(sends_per_hour([], now).iter().all(|h| h.sent == 0));

        let cache = SendsCache::default();
        let counts: Counts = [1, 0, 5, 0, 0];
        cache.put("cmp_1", counts, now, hours.clone());
        assert_eq!(cache.get("cmp_1", &counts, current + HOUR_MS - 1), Some(hours), "the same hour, the same counts");
        assert_eq!(cache.get("cmp_1", &[0, 0, 6, 0, 0], now), None, "a new send");
        assert_eq!(cache.get("cmp_1", &counts, current + HOUR_MS), None, "the window moved");
        assert_eq!(cache.get("cmp_2", &counts, now), None);
    }

    #[test]
    fn csv_rows_are_checked_with_their_line_numbers() {
        let rows = rows_from_csv(CSV, &L).unwrap();
        let de = Some(number::country("DE").unwrap());
        let err = recipients(rows, "Hi {{ name }}!", de, InvalidNumbers::Reject, 0, &L).unwrap_err();
        let InputError::Rows(errors) = err else { panic!("{err:?}") };
        let lines: Vec<u32> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [5, 6]);
        assert!(errors[0].error.contains("not a number"), "{errors:?}");
        assert!(errors[1].error.contains("phone is missing"), "{errors:?}");
    }

    #[test]
    fn duplicates_are_dropped_and_counted_and_invalid_numbers_can_fail() {
        let rows = rows_from_csv(CSV, &L).unwrap();
        let de = Some(number::country("DE").unwrap());
        let rows: Vec<Row> = rows.into_iter().filter(|r| r.line != 6).collect();
        let (rs, dups) = recipients(rows, "Hi {{ name }}!", de, InvalidNumbers::Fail, 0, &L).unwrap();
        assert_eq!(dups, 1);
        assert_eq!(rs.len(), 3);
        assert_eq!(
            (rs[0].phone.as_str(), rs[0].chat_id.as_str(), rs[0].text.as_str()),
            ("+4915112345678", "4915112345678@c.us", "Hi Ana!")
        );
        assert_eq!(rs[1].phone, "+4915123456789");
        assert_eq!(rs[2].state, RecipientState::Failed);
        assert!(rs[2].reason.as_deref().unwrap().starts_with("invalid_number"));
    }

    /// `variant()` picks per recipient, the same every time (a re-render
    /// after a crash sends the same text), and spreads over the options.
    #[test]
    fn variant_is_stable_per_recipient_and_varies_across_recipients() {
        let people: Vec<serde_json::Value> = (0..60).map(|i| serde_json::json!({"phone": format!("+49151{:08}", i)})).collect();
        let template = "{{ variant('Hi', 'Hello', 'Hey') }} there, {{ variant('bye', 'ciao') }}";
        let render = || recipients(rows_from_json(&people, &L).unwrap(), template, None, InvalidNumbers::Reject, 0, &L).unwrap().0;
        let (first, again) = (render(), render());
        let texts: Vec<&str> = first.iter().map(|r| r.text.as_str()).collect();
        assert_eq!(texts, again.iter().map(|r| r.text.as_str()).collect::<Vec<_>>());
        let distinct: HashSet<&str> = texts.iter().copied().collect();
        assert_eq!(distinct.len(), 6, "{distinct:?}");
        // The choice depends on the number's digits only, not how it is written.
        let options = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        assert_eq!(variant_index("+49 151 00000007", &options), variant_index("4915100000007", &options));
        assert!(check_template("{{ variant() }}", &L).is_ok());
        let err =
            recipients(rows_from_json(&people[..1], &L).unwrap(), "{{ variant() }}", None, InvalidNumbers::Reject, 0, &L).unwrap_err();
        assert!(matches!(err, InputError::Rows(_)), "{err:?}");
    }

    #[test]
    fn undefined_template_variables_are_row_errors() {
        let rows = rows_from_json(&[serde_json::json!({"phone": "+4915112345678"})], &L).unwrap();
        let err = recipients(rows, "Hi {{ name }}!", None, InvalidNumbers::Reject, 0, &L).unwrap_err();
        let InputError::Rows(errors) = err else { panic!("{err:?}") };
        assert_eq!(errors[0].line, 1);
        assert!(errors[0].error.contains("template"), "{errors:?}");
        assert!(check_template("Hi {{ name", &L).is_err());
    }

    #[test]
    fn csv_structure_errors() {
        assert!(matches!(rows_from_csv("name\nAna\n", &L), Err(InputError::Invalid(_))));
        let Err(InputError::Rows(e)) = rows_from_csv("phone,name\n+4915112345678,Ana,extra\n", &L) else { panic!() };
        assert_eq!(e[0].line, 2);
        assert!(e[0].error.contains("3 fields"), "{e:?}");
    }

    #[test]
    fn ids() {
        let id = new_id();
        assert!(valid_id(&id), "{id}");
        assert!(!valid_id("cmp_../../x") && !valid_id("x"));
    }

    fn limits() -> InputLimits {
        InputLimits { recipients: 3, columns: 3, cell_bytes: 8, template_bytes: 40, text_chars: 10, ..InputLimits::default() }
    }

    fn invalid(r: Result<Vec<Row>, InputError>) -> String {
        match r {
            Err(InputError::Invalid(m)) => m,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn each_input_limit_holds_at_the_limit_and_refuses_one_past() {
        let l = limits();
        // Rows.
        assert_eq!(rows_from_csv("phone\n1\n2\n3\n", &l).unwrap().len(), 3);
        assert!(invalid(rows_from_csv("phone\n1\n2\n3\n4\n", &l)).contains("limits.recipients"));
        let items = |n: usize| (0..n).map(|i| serde_json::json!({"phone": i.to_string()})).collect::<Vec<_>>();
        assert_eq!(rows_from_json(&items(3), &l).unwrap().len(), 3);
        assert!(invalid(rows_from_json(&items(4), &l)).contains("limits.recipients"));
        // Columns.
        assert!(rows_from_csv("phone,a,b\n1,2,3\n", &l).is_ok());
        assert!(invalid(rows_from_csv("phone,a,b,c\n1,2,3,4\n", &l)).contains("limits.columns"));
        let Err(InputError::Rows(e)) = rows_from_json(&[serde_json::json!({"phone": "1", "a": "", "b": "", "c": ""})], &l) else {
            panic!()
        };
        assert!(e[0].error.contains("limits.columns"), "{e:?}");
        // Cells.
        assert!(rows_from_csv("phone\n12345678\n", &l).is_ok());
        let Err(InputError::Rows(e)) = rows_from_csv("phone\n123456789\n", &l) else { panic!() };
        assert_eq!(e[0].line, 2);
        assert!(e[0].error.contains("limits.cell_bytes"), "{e:?}");
        let Err(InputError::Rows(e)) = rows_from_json(&[serde_json::json!({"phone": "123456789"})], &l) else { panic!() };
        assert!(e[0].error.contains("limits.cell_bytes"), "{e:?}");
        // Template size.
        assert!(check_template(&"x".repeat(40), &l).is_ok());
        assert!(check_template(&"x".repeat(41), &l).unwrap_err().contains("limits.template_bytes"));
        // Rendered length.
        let l = InputLimits { cell_bytes: 32, ..l };
        let row = || rows_from_json(&[serde_json::json!({"phone": "+4915112345678"})], &l).unwrap();
        assert!(recipients(row(), &"x".repeat(10), None, InvalidNumbers::Reject, 0, &l).is_ok());
        let Err(InputError::Rows(e)) = recipients(row(), "{{ 'x' * 11 }}", None, InvalidNumbers::Reject, 0, &l) else { panic!() };
        assert!(e[0].error.contains("limits.text_chars"), "{e:?}");
    }

    #[test]
    fn hostile_templates_run_out_of_fuel_or_length_quickly() {
        let l = InputLimits::default();
        let row = || rows_from_json(&[serde_json::json!({"phone": "+4915112345678"})], &l).unwrap();
        let started = std::time::Instant::now();
        let loops = "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}";
        let Err(InputError::Rows(e)) = recipients(row(), loops, None, InvalidNumbers::Reject, 0, &l) else { panic!() };
        assert!(e[0].error.contains("fuel") || e[0].error.contains("limits.text_chars"), "{e:?}");
        let Err(InputError::Rows(e)) = recipients(row(), "{{ 'x' * 100000000 }}", None, InvalidNumbers::Reject, 0, &l) else { panic!() };
        assert!(e[0].error.contains("limits.text_chars"), "{e:?}");
        // Not a timing assertion: a runaway render would take minutes.
        assert!(started.elapsed() < std::time::Duration::from_secs(60));
    }

    #[test]
    fn pacing_is_bounded() {
        let l = InputLimits::default();
        let mut p = PacingSpec { min_delay: Duration::from_secs(1), max_delay: l.max_gap, ..PacingSpec::default() };
        assert!(check_pacing(&p, &l).is_ok());
        p.max_delay += Duration::from_secs(1);
        assert!(check_pacing(&p, &l).unwrap_err().contains("limits.max_gap"));
        p.min_delay = Duration::from_secs(u64::MAX / 2);
        assert!(check_pacing(&p, &l).is_err());
    }
}
