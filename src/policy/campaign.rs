//! The campaign core: a pure, deterministic state machine.
//!
//! [`Machine`] decides everything a running campaign does: which recipient
//! goes next and when (with [`Pacing`]), what is written before and after
//! each send, how send and lookup outcomes, acks, session changes, operator
//! commands, timers and store failures change the campaign. It does no I/O
//! and reads no clock: time and randomness are arguments of every call, and
//! everything it does goes through a [`Shell`]: store writes (whose result
//! comes back at once), sends and lookups (whose outcome comes back later as
//! an [`Input`]), timers, events and the shared counts. The Campaign actor
//! (`src/actors/campaign.rs`) is the shell over sled and the Supervisor;
//! the model test (`tests/campaign_model.rs`) is a shell over an in-memory
//! store and a simulated phone with crashes and failures.
//!
//! The guarantees, which the model test checks on random runs:
//! - a send is issued only after its recipient was written `SENDING` with
//!   that message id and flushed, and after the day's count was flushed;
//! - a recipient whose send outcome is unknown stays `SENDING` and is
//!   resolved by looking its id up once the session is connected: found →
//!   `SENT`, not found → sent again under a new id (at most
//!   `campaigns.send_attempts` attempts);
//! - a failed write means no send: the campaign pauses (`store_error`)
//!   until the store takes writes again;
//! - a final state (`COMPLETED`, `FAILED`, `CANCELLED`) is entered only
//!   with no send or lookup in flight: one that arrives in flight is
//!   entered when the outcome has been recorded;
//! - no send starts inside quiet hours, before the campaign's and the
//!   number's gaps have passed, or over the number's daily, warm-up or
//!   first-contact cap;
//! - no send goes to a number on the session's opt-out list: it is
//!   `SKIPPED(opted_out)` instead.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::Rng;

use crate::campaign::{CampaignRecord, CampaignState, Counts, RecipientRecord, RecipientState};
use crate::policy::pacing::{timestamp as ts, DayCount, Hold, NumberRecord, Pacing};
use crate::session_state::SessionState;

/// Why a campaign is `PAUSED`, `FAILED` or `CANCELLED`. Stored and shown as
/// the strings of [`Reason::as_string`] (`"operator"`,
/// `"waiting_for_session"`, `"session_logged_out: <detail>"`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// An operator paused or cancelled it.
    Operator,
    /// Its session is not connected; it resumes by itself within
    /// `campaigns.resume_grace`.
    WaitingForSession,
    /// WhatsApp refused a send with error 463 (reach-out timelock); it
    /// resumes after `campaigns.timelock_cooldown`.
    Timelock,
    /// A store write failed; it resumes once writes succeed.
    StoreError,
    /// Opt-outs among its sent recipients passed
    /// `campaigns.max_opt_out_rate`; an operator decides (resume or cancel).
    OptOutRate,
    /// The campaign's attachment could not be read back as uploaded
    /// (missing, or another size or SHA-256): no send, not even the text
    /// alone, until an operator resumes it (the file is read again then).
    /// Shown as `attachment_unreadable: <why>`.
    AttachmentUnreadable(String),
    /// The session did not come back within `campaigns.resume_grace`.
    SessionLost,
    /// Its session was deleted.
    SessionDeleted,
    /// The session reached a state only a person can mend
    /// ([`SessionOutlook::NeedsHuman`]: logged out, waiting for its QR,
    /// blocked, failed for good, or opened elsewhere without a takeover);
    /// `detail` is the session's reason. Shown as
    /// `session_<state>: <detail>` (`session_logged_out: phone_logout`).
    SessionEnded { state: SessionState, detail: String },
    /// A stored reason this version does not know (shown as it is).
    Other(String),
}

impl Reason {
    /// The stored and shown form.
    pub fn as_string(&self) -> String {
        match self {
            Self::Operator => "operator".into(),
            Self::WaitingForSession => "waiting_for_session".into(),
            Self::Timelock => "timelock".into(),
            Self::StoreError => "store_error".into(),
            Self::OptOutRate => "opt_out_rate".into(),
            Self::AttachmentUnreadable(why) => format!("attachment_unreadable: {why}"),
            Self::SessionLost => "session_lost".into(),
            Self::SessionDeleted => "session_deleted".into(),
            Self::SessionEnded { state, detail } => format!("session_{}: {detail}", state.as_str().to_ascii_lowercase()),
            Self::Other(s) => s.clone(),
        }
    }

    /// Reads a stored reason (never fails: an unknown one is `Other`).
    pub fn parse(s: &str) -> Self {
        match s {
            "operator" => return Self::Operator,
            "waiting_for_session" => return Self::WaitingForSession,
            "timelock" => return Self::Timelock,
            "store_error" => return Self::StoreError,
            "opt_out_rate" => return Self::OptOutRate,
            "session_lost" => return Self::SessionLost,
            "session_deleted" => return Self::SessionDeleted,
            _ => {}
        }
        if let Some(why) = s.strip_prefix("attachment_unreadable: ") {
            return Self::AttachmentUnreadable(why.to_string());
        }
        let ended = s.strip_prefix("session_").and_then(|rest| rest.split_once(": ")).and_then(|(state, detail)| {
            let state = SessionState::ALL.into_iter().find(|st| st.as_str().eq_ignore_ascii_case(state))?;
            Some(Self::SessionEnded { state, detail: detail.to_string() })
        });
        ended.unwrap_or_else(|| Self::Other(s.to_string()))
    }

    /// The session ended the campaign (logout, block, failure, deletion,
    /// or it never came back): a new session is needed to go on.
    pub fn is_session_end(&self) -> bool {
        matches!(self, Self::SessionEnded { .. } | Self::SessionLost | Self::SessionDeleted)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.as_string())
    }
}

/// Why a recipient is `FAILED` or `SKIPPED`, or why its send is being
/// resolved. Stored as the strings of [`RecipientReason::as_string`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientReason {
    /// `not_on_whatsapp` (SKIPPED).
    NotOnWhatsApp,
    /// `opted_out` (SKIPPED): the number is on the session's opt-out list.
    OptedOut,
    /// `invalid_number: <why>`.
    InvalidNumber(String),
    /// WhatsApp refused the send with an error code: `rejected by WhatsApp
    /// (error <code>)`.
    Rejected(Option<i64>),
    /// The outcome of a send is unknown (`unknown: <why>`): it stays
    /// `SENDING` until a lookup settles it, and a retry waits
    /// `campaigns.retry_base` doubled per attempt.
    Unknown(String),
    /// `send_failed: no attempt reached WhatsApp`: every attempt was looked
    /// up and none had arrived.
    SendFailed,
    /// Any other reason, shown as it is (the page's own words, an input
    /// error).
    Other(String),
}

impl RecipientReason {
    /// The stored and shown form.
    pub fn as_string(&self) -> String {
        match self {
            Self::NotOnWhatsApp => "not_on_whatsapp".into(),
            Self::OptedOut => "opted_out".into(),
            Self::InvalidNumber(m) => format!("invalid_number: {m}"),
            Self::Rejected(code) => format!("rejected by WhatsApp{}", code.map(|c| format!(" (error {c})")).unwrap_or_default()),
            Self::Unknown(why) => format!("unknown: {why}"),
            Self::SendFailed => "send_failed: no attempt reached WhatsApp".into(),
            Self::Other(s) => s.clone(),
        }
    }

    /// Reads a stored reason; only the shapes a decision depends on are
    /// told apart, the rest is `Other`.
    pub fn parse(s: &str) -> Self {
        match s.split_once(": ") {
            Some(("unknown", why)) => Self::Unknown(why.to_string()),
            Some(("invalid_number", why)) => Self::InvalidNumber(why.to_string()),
            _ if s == "not_on_whatsapp" => Self::NotOnWhatsApp,
            _ if s == "opted_out" => Self::OptedOut,
            _ => Self::Other(s.to_string()),
        }
    }
}

/// An operator's command on a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// A `DRAFT` (or operator-`PAUSED`) campaign starts sending.
    Start,
    /// `PAUSED(operator)`: no sends until resumed.
    Pause,
    /// A `PAUSED` or `FAILED` campaign goes on.
    Resume,
    /// `CANCELLED(operator)`: no more sends, for good.
    Cancel,
}

/// Why an operator's command was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// It does not apply to the campaign's state (409).
    #[error("{0}")]
    Refused(String),
    /// The store did not take it; nothing changed (503).
    #[error("the command could not be recorded: {0}")]
    Unrecorded(String),
}

/// Where `command` takes a campaign that is `state`: the one table of
/// operator transitions, for running campaigns ([`Machine::command`]) and
/// stored ones (the Campaigns registry). Errors: the command does not apply
/// (`"cannot pause a campaign that is draft"`).
pub fn transition(state: CampaignState, command: Command) -> Result<(CampaignState, Option<Reason>), String> {
    use CampaignState as S;
    match (command, state) {
        (Command::Start, S::Draft | S::Paused) | (Command::Resume, S::Paused | S::Failed) => Ok((S::Running, None)),
        (Command::Pause, S::Running | S::Paused) => Ok((S::Paused, Some(Reason::Operator))),
        (Command::Cancel, S::Draft | S::Running | S::Paused | S::Failed) => Ok((S::Cancelled, Some(Reason::Operator))),
        _ => Err(format!("cannot {command:?} a campaign that is {state}").to_lowercase()),
    }
}

/// What a session's state means for a campaign on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionOutlook {
    /// `CONNECTED`: sends go.
    Ready,
    /// It comes back by itself, or may be brought back by the operator's
    /// next command: a running campaign waits (`PAUSED(waiting_for_session)`)
    /// for at most `campaigns.resume_grace`.
    Returns,
    /// Only a person can bring it back: waiting cannot help, so a running
    /// campaign fails at once and a start is refused.
    NeedsHuman,
}

/// The outlook of a session in `state` for a running campaign. `takeover`:
/// `restart.conflict = "takeover"`, under which the page takes an account
/// opened elsewhere back by itself after `restart.takeover_after`.
///
/// - `STARTING`, `RECONNECTING`: on their way back ([`SessionOutlook::Returns`]).
/// - `STOPPED` returns too: an operator's restart or recover passes
///   through it (`STOPPED(restart)`, then `STARTING`), and an operator who
///   stopped the session may start it again within the grace period. A
///   start on a stopped session is refused all the same
///   ([`start_refusal`]): nothing would start it.
/// - `CONFLICT` returns under `takeover`; under `stay` (the default) it
///   waits for a person (WhatsApp Web's "Use here"), as `SCAN_QR`,
///   `LOGGED_OUT`, `BLOCKED` and `FAILED` do.
pub fn outlook(state: SessionState, takeover: bool) -> SessionOutlook {
    use SessionState as S;
    match state {
        S::Connected => SessionOutlook::Ready,
        S::Starting | S::Reconnecting | S::Stopped => SessionOutlook::Returns,
        S::Conflict if takeover => SessionOutlook::Returns,
        S::ScanQr | S::LoggedOut | S::Blocked | S::Failed | S::Conflict => SessionOutlook::NeedsHuman,
    }
}

/// Why `command` (a start, or creating a campaign with `start`, or a
/// resume) may not run a campaign on session `name` in `state`: the 409's
/// message, saying in one instruction what the operator must do (`session
/// acme is SCAN_QR: scan its QR (GET /api/sessions/acme/qr) before starting
/// a campaign`). `None` when it may: the session is `CONNECTED`, or
/// [`SessionOutlook::Returns`] by itself (the campaign then waits up to
/// `campaigns.resume_grace`), except `STOPPED`, which nothing would
/// start. Pause and cancel are never refused.
pub fn start_refusal(name: &str, state: SessionState, takeover: bool, command: Command) -> Option<String> {
    use SessionState as S;
    let needs = match (state, outlook(state, takeover)) {
        (S::Stopped, _) | (_, SessionOutlook::NeedsHuman) => state,
        _ => return None,
    };
    let doing = match command {
        Command::Resume => "resuming",
        Command::Start | Command::Pause | Command::Cancel => "starting",
    };
    let todo = match needs {
        S::ScanQr => format!("scan its QR (GET /api/sessions/{name}/qr)"),
        S::LoggedOut => format!("it was logged out of WhatsApp; link it again by scanning its new QR (GET /api/sessions/{name}/qr)"),
        S::Blocked => format!("WhatsApp blocked the account; settle that with WhatsApp, then recover the session (POST /api/sessions/{name}/recover)"),
        S::Failed => format!(
            "it stopped retrying; mend the cause (its reason, GET /api/sessions/{name}/history), then recover it (POST /api/sessions/{name}/recover)"
        ),
        S::Conflict => format!(
            "its account is open in another WhatsApp Web; close that one and restart the session (POST /api/sessions/{name}/restart), or set restart.conflict = \"takeover\""
        ),
        _ => format!("start it (POST /api/sessions/{name}/start)"),
    };
    Some(format!("session {name} is {state}: {todo} before {doing} a campaign"))
}

/// A recipient as the machine keeps it (the text and number stay in the
/// store; only what decisions need is here, about 100 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub state: RecipientState,
    pub attempts: u32,
    /// Kept while `SENDING` (to look it up).
    pub message_id: Option<String>,
    /// WhatsApp Web's ack number (0 pending, 1 server, 2 device, 3 read, 4
    /// played, negative error), once sent.
    pub ack: i8,
    /// The last send's outcome is unknown (its retry waits).
    pub unknown: bool,
    /// Characters of the text, for the typing time.
    pub text_chars: u32,
    /// A retry waits until then, epoch ms.
    pub not_before: Option<u64>,
    /// The contact replied after it was sent.
    pub replied: bool,
    /// The contact opted out after it was sent.
    pub opted_out: bool,
}

impl Entry {
    /// What the machine keeps of a stored recipient.
    pub fn of(r: &RecipientRecord) -> Self {
        Self {
            state: r.state,
            attempts: r.attempts,
            message_id: (r.state == RecipientState::Sending).then(|| r.message_id.clone()).flatten(),
            ack: r.ack.as_deref().map_or(0, ack_number),
            unknown: matches!(r.reason.as_deref().map(RecipientReason::parse), Some(RecipientReason::Unknown(_))),
            text_chars: u32::try_from(r.text.chars().count()).unwrap_or(u32::MAX),
            not_before: None,
            replied: r.replied_at_ms.is_some(),
            opted_out: r.opted_out_at_ms.is_some(),
        }
    }
}

/// The number of an ack name ([`crate::whatsapp::ack_name`]'s inverse).
fn ack_number(name: &str) -> i8 {
    match name {
        "ERROR" => -1,
        "SERVER" => 1,
        "DEVICE" => 2,
        "READ" => 3,
        "PLAYED" => 4,
        _ => 0,
    }
}

/// A change to one stored recipient: the one place its fields are set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// About to be sent under `message_id` (one more attempt).
    Sending { message_id: String },
    /// WhatsApp has it (a send answered, or a lookup found it).
    Sent { ack: i8 },
    /// Will not be sent: `FAILED` or `SKIPPED`.
    Settled { state: RecipientState, reason: RecipientReason },
    /// Not sent; back in line (its message id is dropped). `refund`: the
    /// send never left for WhatsApp (not connected, timelock, unreadable),
    /// so the attempt is given back.
    Pending { refund: bool },
    /// The send's outcome is unknown; stays `SENDING`.
    Unknown { why: String },
    /// A newer ack of a sent message.
    Ack { ack: i8 },
    /// The contact wrote back at `at_ms` (the first reply is kept);
    /// `opted_out`: with an opt-out keyword.
    Replied { at_ms: u64, opted_out: bool },
}

impl Change {
    /// Applies the change to a stored recipient at `now_ms`.
    pub fn apply(&self, r: &mut RecipientRecord, now_ms: u64) {
        r.updated_ms = now_ms;
        match self {
            Self::Sending { message_id } => {
                r.state = RecipientState::Sending;
                r.message_id = Some(message_id.clone());
                r.attempts = r.attempts.saturating_add(1);
                r.reason = None;
            }
            Self::Sent { ack } => {
                r.state = RecipientState::Sent;
                r.ack = Some(crate::whatsapp::ack_name(*ack).to_string());
                r.sent_at_ms.get_or_insert(now_ms);
                r.reason = None;
            }
            Self::Settled { state, reason } => {
                r.state = *state;
                r.reason = Some(reason.as_string());
            }
            Self::Pending { refund } => {
                r.state = RecipientState::Pending;
                r.message_id = None;
                if *refund {
                    r.attempts = r.attempts.saturating_sub(1);
                }
            }
            Self::Unknown { why } => r.reason = Some(RecipientReason::Unknown(why.clone()).as_string()),
            Self::Ack { ack } => r.ack = Some(crate::whatsapp::ack_name(*ack).to_string()),
            Self::Replied { at_ms, opted_out } => {
                r.replied_at_ms.get_or_insert(*at_ms);
                if *opted_out {
                    r.opted_out_at_ms.get_or_insert(*at_ms);
                }
            }
        }
    }
}

/// Whether an ack of `ack` changes a recipient: it must be sent, the ack
/// positive and different from the one stored.
pub fn ack_applies(r: &RecipientRecord, ack: i8) -> bool {
    r.state == RecipientState::Sent && ack > 0 && r.ack.as_deref() != Some(crate::whatsapp::ack_name(ack))
}

/// How a send ended, as the shell learned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendResult {
    /// The server has it; `ack` is its ack number.
    Sent { ack: i8 },
    /// Refused before it reached the page (the session is not connected).
    NotConnected,
    /// The session no longer exists.
    SessionDeleted,
    /// The page refused it for good: `SKIPPED` (not on WhatsApp) or `FAILED`.
    Refused { state: RecipientState, reason: RecipientReason },
    /// WhatsApp's error 463 (reach-out timelock): not delivered.
    Timelock,
    /// WhatsApp rejected it with another error code: not delivered.
    Rejected(Option<i64>),
    /// No answer in time, or an error that leaves it open whether WhatsApp
    /// has the message.
    Unknown(String),
    /// The shell could not send (it could not read the recipient): not sent.
    NotSent(String),
    /// The campaign's attachment could not be read back as uploaded: not
    /// sent (never as a text alone).
    AttachmentUnreadable(String),
}

/// How a lookup of a `SENDING` recipient's message id ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupResult {
    /// The synced page holds the message, with this ack.
    Found { ack: i8 },
    /// It does not: the send never reached WhatsApp.
    NotFound,
    /// The session is not connected: no answer now.
    NotConnected,
    /// The page could not answer; asked again shortly.
    Failed,
}

/// The machine's timers; one of each kind at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// The next step (the pacing gap, a retry's wait, a lookup retry).
    Pace,
    /// The end of `resume_grace` while waiting for the session.
    Grace,
    /// The end of a timelock cooldown.
    Resume,
    /// Checks whether the store takes writes again.
    StoreRetry,
    /// Asks for the session's state again.
    AskSession,
}

/// What happened, fed to [`Machine::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The session's state (an answer to [`Shell::ask_session`], or a change).
    Session { state: SessionState, detail: String },
    /// The session does not exist.
    SessionDeleted,
    /// The session's state could not be learned now.
    SessionUnknown,
    /// A timer fired.
    Fired(Timer),
    /// The outcome of [`Shell::send`] for recipient `idx`.
    Sent { idx: u32, result: SendResult },
    /// The outcome of [`Shell::lookup`] for recipient `idx`.
    LookedUp { idx: u32, result: LookupResult },
    /// A sent message's ack changed.
    Ack { idx: u32, ack: i8 },
    /// Recipient `idx`'s contact wrote to the account at `at_ms`;
    /// `opted_out`: the text was an opt-out keyword (the session's opt-out
    /// list already has the number).
    Reply { idx: u32, at_ms: u64, opted_out: bool },
    /// Stop at a safe point (the daemon shuts down); states stay as they
    /// are, so the next start carries on.
    Halt,
}

/// What the machine tells the world (events and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// The campaign's state changed (`campaign.status`).
    Status { state: CampaignState, reason: Option<Reason> },
    /// Recipient counts changed after a send settled (`campaign.progress`).
    Progress(Counts),
    /// Recipient `idx` was sent (`message.sent`); `resolved`: learned by a
    /// lookup.
    Sent { idx: u32, resolved: bool },
    /// Recipient `idx` will not be sent (`message.failed`).
    Failed { idx: u32 },
    /// A sent message's ack changed (`message.ack`).
    Acked { idx: u32 },
    /// A sent recipient's contact replied or opted out
    /// (`campaign.progress`, with the campaign's reply counts).
    Replied { idx: u32, opted_out: bool },
    /// A send starts `late_ms` after its scheduled time (the pacing error).
    SendStarts { idx: u32, late_ms: i64 },
    /// A send's outcome is unknown; a lookup settles it.
    Unresolved { idx: u32, why: String },
    /// A lookup found the message was not sent; it is sent again.
    NotSent { idx: u32 },
    /// A store write failed: no sends until writes succeed.
    StoreFailed { error: String },
}

/// The world the machine acts on. Writes return their outcome at once;
/// sends, lookups and session questions answer later through
/// [`Machine::handle`].
pub trait Shell {
    /// The recipients, read from the store. Errors: the store cannot be read.
    fn load(&mut self) -> Result<Vec<(u32, Entry)>, String>;
    /// Applies `change` to recipient `idx` in the store (flushed if
    /// `flush`). Errors: the write or its flush failed.
    fn write_recipient(&mut self, idx: u32, change: &Change, now_ms: u64, flush: bool) -> Result<(), String>;
    /// Stores the campaign record (flushed if `flush`).
    fn write_campaign(&mut self, record: &CampaignRecord, flush: bool) -> Result<(), String>;
    /// Counts one send for the number on `day` (`YYYY-MM-DD` in the
    /// pacing's zone; a first contact counted as such too) and stores the
    /// number's state `number`, flushed.
    fn count_send(&mut self, day: &str, number: &NumberRecord, first_contact: bool) -> Result<(), String>;
    /// The number's sends on `day`. Errors: the store cannot be read (no
    /// send then).
    fn day_count(&self, day: &str) -> Result<DayCount, String>;
    /// The number's stored pacing state. Errors: the store cannot be read.
    fn number(&self) -> Result<NumberRecord, String>;
    /// Stores the number's state after a send ended (not flushed); false
    /// if the store did not take it. A lost end only slows the number down:
    /// its gap counts from the send's start, and other campaigns find it
    /// busy for at most the send timeout (within this daemon run); the
    /// campaign whose send it was stores the end again before its next
    /// send.
    fn number_ended(&mut self, number: &NumberRecord) -> bool;
    /// What the next send needs to know of recipient `idx`'s contact: on
    /// the session's opt-out list, and whether it ever wrote to the
    /// account. Errors: the store cannot be read (no send then).
    fn contact(&self, idx: u32) -> Result<Contact, String>;
    /// No store write has failed since the last successful flush.
    fn store_ok(&self) -> bool;
    /// Sends recipient `idx`'s text under `message_id` (with the campaign's
    /// attachment, if it has one, the text its caption), "typing…" first
    /// for `typing`; the outcome comes back as [`Input::Sent`], exactly
    /// once.
    fn send(&mut self, idx: u32, message_id: &str, typing: Duration);
    /// Looks `message_id` up in recipient `idx`'s chat; the outcome comes
    /// back as [`Input::LookedUp`], exactly once.
    fn lookup(&mut self, idx: u32, message_id: &str);
    /// Asks the session's state; the answer comes back as
    /// [`Input::Session`], [`Input::SessionDeleted`] or
    /// [`Input::SessionUnknown`].
    fn ask_session(&mut self);
    /// Fires `timer` at `at_ms` (replacing one of the same kind).
    fn schedule(&mut self, timer: Timer, at_ms: u64);
    /// Disarms `timer` (nothing if it is not armed).
    fn cancel(&mut self, timer: Timer);
    /// Tells the world (events, logs); `record` is the campaign now.
    fn note(&mut self, note: Note, record: &CampaignRecord);
    /// The recipient counts changed.
    fn counts(&mut self, counts: Counts);
    /// The machine is done (a final state, or halted): stop feeding it.
    fn finished(&mut self, record: &CampaignRecord);
}

/// What the store knows of a recipient's contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Contact {
    /// On the session's opt-out list.
    pub opted_out: bool,
    /// Never wrote to this account: a send is a first contact.
    pub first_contact: bool,
}

/// The machine's settings (from `[campaigns]`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Sends per recipient before it is `FAILED` (`campaigns.send_attempts`).
    pub send_attempts: u32,
    /// The wait before retrying an unknown outcome, doubled per attempt.
    pub retry_base: Duration,
    /// How long a campaign waits for its session before `FAILED(session_lost)`.
    pub resume_grace: Duration,
    /// The pause after WhatsApp's error 463.
    pub timelock_cooldown: Duration,
    /// How often a campaign paused by the store checks it (1 s).
    pub store_retry: Duration,
    /// How soon a lookup the page could not answer is asked again (2 s).
    pub lookup_retry: Duration,
    /// How long a send may hold the number (`whatsapp.send_timeout` plus
    /// the longest typing time).
    pub send_timeout: Duration,
    /// Opt-outs among sent recipients above which the campaign pauses
    /// (`campaigns.max_opt_out_rate`, 0.05); checked from
    /// `opt_out_min_sent` sends on.
    pub max_opt_out_rate: f64,
    pub opt_out_min_sent: u32,
    /// This daemon run's id ([`crate::session_state::boot_id`]): a number
    /// held by a send of an earlier run is free.
    pub boot: u64,
    /// `restart.conflict = "takeover"`: a `CONFLICT` mends itself, so the
    /// campaign waits for it ([`outlook`]); otherwise it fails at once.
    pub conflict_takeover: bool,
}

/// A send or lookup under way.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Flight {
    Send(u32),
    Lookup(u32),
}

/// The campaign state machine. See the module docs.
pub struct Machine {
    record: CampaignRecord,
    reason: Option<Reason>,
    pacing: Pacing,
    settings: Settings,
    /// `None` until the recipients are read.
    entries: Option<BTreeMap<u32, Entry>>,
    pending: BTreeSet<u32>,
    sending: BTreeSet<u32>,
    counts: Counts,
    session: SessionState,
    /// The session's reason with `session` (for a failure's reason).
    session_detail: String,
    gap: Duration,
    flight: Option<Flight>,
    /// No lookup before then (the page could not answer), epoch ms.
    lookup_not_before: Option<u64>,
    /// A final state that arrived while something was in flight.
    finish_after: Option<(CampaignState, Option<Reason>)>,
    store_fault: bool,
    done: bool,
    /// The busy mark of this campaign's send on the number, while the send
    /// is under way or its end is not stored yet.
    number_mark: Option<u64>,
}

/// `d` in ms, saturating.
fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Machine {
    /// A machine for a stored campaign; [`Machine::start`] sets it going.
    pub fn new(record: CampaignRecord, pacing: Pacing, settings: Settings) -> Self {
        let reason = record.reason.as_deref().map(Reason::parse);
        Self {
            record,
            reason,
            pacing,
            settings,
            entries: None,
            pending: BTreeSet::new(),
            sending: BTreeSet::new(),
            counts: Counts::default(),
            session: SessionState::Stopped,
            session_detail: String::new(),
            gap: Duration::ZERO,
            flight: None,
            lookup_not_before: None,
            finish_after: None,
            store_fault: false,
            done: false,
            number_mark: None,
        }
    }

    /// The campaign as it stands.
    pub fn record(&self) -> &CampaignRecord {
        &self.record
    }

    /// The typed reason of the campaign's state.
    pub fn reason(&self) -> Option<&Reason> {
        self.reason.as_ref()
    }

    /// A send or lookup is under way.
    pub fn in_flight(&self) -> bool {
        self.flight.is_some()
    }

    /// No more inputs are wanted (a final state, or halted).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Reads the recipients, draws the first gap, re-arms the timer of a
    /// stored pause (a timelock's end, the session's grace period, the
    /// store check) and asks for the session's state.
    pub fn start(&mut self, now_ms: u64, rng: &mut impl Rng, shell: &mut impl Shell) {
        self.load(shell);
        // The first gap after a start: the one a send would have had.
        self.gap = self.pacing.gap(rng);
        if self.record.state == CampaignState::Paused {
            match self.reason {
                Some(Reason::Timelock) => shell.schedule(Timer::Resume, self.record.resume_at_ms.unwrap_or(now_ms)),
                Some(Reason::WaitingForSession) => {
                    // A fresh grace period: the daemon was down, so the
                    // session could not come back meanwhile.
                    shell.schedule(Timer::Grace, now_ms.saturating_add(ms(self.settings.resume_grace)));
                }
                Some(Reason::StoreError) => shell.schedule(Timer::StoreRetry, now_ms),
                _ => {}
            }
        }
        shell.ask_session();
    }

    /// Applies an operator command. `Ok(true)`: done, the record shows it;
    /// `Ok(false)`: a final state waits for the send in flight (at most the
    /// send timeout), [`Shell::finished`] tells when. Errors: the command
    /// does not apply to the campaign's state, or the store did not take it
    /// (nothing changed).
    pub fn command(&mut self, command: Command, now_ms: u64, rng: &mut impl Rng, shell: &mut impl Shell) -> Result<bool, CommandError> {
        if self.finish_after.is_some() || self.done {
            return Err(CommandError::Refused(format!("the campaign is finishing; cannot {command:?} it").to_lowercase()));
        }
        let (state, reason) = transition(self.record.state, command).map_err(CommandError::Refused)?;
        // Recorded before it takes effect: a command the store did not take
        // is refused, so a restart never undoes what the operator was told.
        self.try_enter(state, reason, now_ms, shell, true).map_err(CommandError::Unrecorded)?;
        if state == CampaignState::Paused {
            shell.cancel(Timer::Pace);
            shell.cancel(Timer::Grace);
        }
        if state == CampaignState::Running {
            self.step(now_ms, rng, shell);
        }
        Ok(self.finish_after.is_none())
    }

    /// Feeds one input at `now_ms` (epoch ms).
    pub fn handle(&mut self, input: Input, now_ms: u64, rng: &mut impl Rng, shell: &mut impl Shell) {
        if self.done {
            return;
        }
        match input {
            Input::Session { state, detail } => self.on_session(state, detail, now_ms, rng, shell),
            Input::SessionDeleted => self.enter(CampaignState::Failed, Some(Reason::SessionDeleted), now_ms, shell),
            Input::SessionUnknown => shell.schedule(Timer::AskSession, now_ms.saturating_add(1000)),
            Input::Fired(timer) => self.fired(timer, now_ms, rng, shell),
            Input::Sent { idx, result } => {
                if self.flight != Some(Flight::Send(idx)) {
                    return;
                }
                self.flight = None;
                // The number's gap counts from the end of its send.
                if let Ok(number) = shell.number() {
                    if shell.number_ended(&number.ended(now_ms, self.number_mark)) {
                        self.number_mark = None;
                    }
                }
                self.sent(idx, result, now_ms, shell);
                self.settled(now_ms, rng, shell);
            }
            Input::LookedUp { idx, result } => {
                if self.flight != Some(Flight::Lookup(idx)) {
                    return;
                }
                self.flight = None;
                self.looked_up(idx, result, now_ms, shell);
                self.settled(now_ms, rng, shell);
            }
            Input::Ack { idx, ack } => self.ack(idx, ack, now_ms, shell),
            Input::Reply { idx, at_ms, opted_out } => self.reply(idx, at_ms, opted_out, now_ms, shell),
            Input::Halt => {
                // A send under way is abandoned: its recipient stays SENDING
                // and is resolved by a lookup at the next start. A cancel
                // that waited for it is entered now (the operator was told,
                // and a restart must not send again; that recipient stays
                // SENDING in the report). Another final state that waited
                // is found again after the restart (the session's state).
                if let Some((CampaignState::Cancelled, reason)) = self.finish_after.take() {
                    self.flight = None;
                    self.enter(CampaignState::Cancelled, reason, now_ms, shell);
                    if self.done {
                        return;
                    }
                }
                self.done = true;
                for t in [Timer::Pace, Timer::Grace, Timer::Resume, Timer::StoreRetry, Timer::AskSession] {
                    shell.cancel(t);
                }
                self.record.updated_ms = now_ms;
                // Harmless if it fails: the state did not change.
                let _ = shell.write_campaign(&self.record, true);
                shell.finished(&self.record);
            }
        }
    }

    /// After a send or lookup settled: a final state that waited for it is
    /// entered now; otherwise the next step.
    fn settled(&mut self, now_ms: u64, rng: &mut impl Rng, shell: &mut impl Shell) {
        match self.finish_after.take() {
            Some((state, reason)) => self.enter(state, reason, now_ms, shell),
            None => self.step(now_ms, rng, shell),
        }
    }

    /// A final state that waits for the flight, if any.
    pub fn finishing(&self) -> Option<CampaignState> {
        self.finish_after.as_ref().map(|(s, _)| *s)
    }

    fn load(&mut self, shell: &mut impl Shell) -> bool {
        let entries = match shell.load() {
            Ok(e) => e,
            Err(error) => {
                self.fault(error, shell);
                return false;
            }
        };
        self.pending.clear();
        self.sending.clear();
        self.counts = Counts::default();
        let mut map = BTreeMap::new();
        for (idx, e) in entries {
            self.counts[e.state.index()] += 1;
            match e.state {
                RecipientState::Pending => {
                    self.pending.insert(idx);
                }
                RecipientState::Sending => {
                    self.sending.insert(idx);
                }
                _ => {}
            }
            map.insert(idx, e);
        }
        // The reply counts are derived from the recipients, which are the
        // truth: the two are written apart, so after a crash the record's
        // copy may be short or, with a recipient's write lost, ahead (and
        // that reply would then be counted twice).
        let (replies, opt_outs) = map.values().fold((0u32, 0u32), |(r, o), e| (r + u32::from(e.replied), o + u32::from(e.opted_out)));
        self.record.replies = replies;
        self.record.opt_outs = opt_outs;
        self.entries = Some(map);
        shell.counts(self.counts);
        true
    }

    fn fault(&mut self, error: String, shell: &mut impl Shell) {
        if !self.store_fault {
            shell.note(Note::StoreFailed { error }, &self.record);
        }
        self.store_fault = true;
    }

    fn write_recipient(&mut self, idx: u32, change: &Change, now_ms: u64, shell: &mut impl Shell) -> bool {
        match shell.write_recipient(idx, change, now_ms, true) {
            Ok(()) => true,
            Err(e) => {
                self.fault(e, shell);
                false
            }
        }
    }

    fn save(&mut self, now_ms: u64, flush: bool, shell: &mut impl Shell) -> bool {
        self.record.updated_ms = now_ms;
        match shell.write_campaign(&self.record, flush) {
            Ok(()) => true,
            Err(e) => {
                self.fault(e, shell);
                false
            }
        }
    }

    /// Moves recipient `idx` from `was` to `now` in memory (after its write
    /// succeeded).
    fn moved(&mut self, idx: u32, was: RecipientState, now: RecipientState, shell: &mut impl Shell) {
        if let Some(e) = self.entries.as_mut().and_then(|m| m.get_mut(&idx)) {
            e.state = now;
            if now != RecipientState::Sending {
                e.message_id = None;
            }
        }
        if was != now {
            self.counts[was.index()] = self.counts[was.index()].saturating_sub(1);
            self.counts[now.index()] += 1;
            shell.counts(self.counts);
        }
        match was {
            RecipientState::Pending => self.pending.remove(&idx),
            RecipientState::Sending => self.sending.remove(&idx),
            _ => false,
        };
        match now {
            RecipientState::Pending => self.pending.insert(idx),
            RecipientState::Sending => self.sending.insert(idx),
            _ => false,
        };
    }

    fn enter(&mut self, state: CampaignState, reason: Option<Reason>, now_ms: u64, shell: &mut impl Shell) {
        // The only error is a refused write, and `refuse` is off.
        let _ = self.try_enter(state, reason, now_ms, shell, false);
    }

    /// Enters `state`, stored and flushed first. A write that fails is
    /// noted (the next step pauses), and then:
    /// - `refuse` (an operator's command): nothing changes; the error is
    ///   returned;
    /// - a final state waits, sending nothing, and the store check enters
    ///   it once writes succeed (else a restart would carry on a campaign
    ///   that was reported over, an operator's cancel);
    /// - any other state is entered anyway: the state in memory decides,
    ///   and after a crash the campaign restarts from its stored
    ///   RUNNING/PAUSED and settles SENDING recipients.
    fn try_enter(
        &mut self,
        state: CampaignState,
        reason: Option<Reason>,
        now_ms: u64,
        shell: &mut impl Shell,
        refuse: bool,
    ) -> Result<(), String> {
        if self.done || (self.record.state == state && self.reason == reason) {
            return Ok(());
        }
        if self.flight.is_some() && (state.is_final() || self.finish_after.is_some()) {
            // The first final state waits for the flight; an operator's
            // cancel is never overridden by a later one.
            if state.is_final() && !matches!(self.finish_after, Some((CampaignState::Cancelled, _))) {
                self.finish_after = Some((state, reason));
            }
            shell.cancel(Timer::Pace);
            return Ok(());
        }
        let next = self.record.entering(state, reason.as_ref().map(Reason::as_string), now_ms);
        if let Err(e) = shell.write_campaign(&next, true) {
            self.fault(e.clone(), shell);
            if refuse {
                return Err(e);
            }
            if state.is_final() {
                if !matches!(self.finish_after, Some((CampaignState::Cancelled, _))) {
                    self.finish_after = Some((state, reason));
                }
                shell.cancel(Timer::Pace);
                shell.schedule(Timer::StoreRetry, now_ms.saturating_add(ms(self.settings.store_retry)));
                return Ok(());
            }
        }
        self.record = next;
        self.reason = reason;
        shell.note(Note::Status { state, reason: self.reason.clone() }, &self.record);
        if state.is_final() {
            self.done = true;
            for t in [Timer::Pace, Timer::Grace, Timer::Resume, Timer::StoreRetry, Timer::AskSession] {
                shell.cancel(t);
            }
            shell.finished(&self.record);
        }
        Ok(())
    }

    fn paused_for(&self, reason: &Reason) -> bool {
        self.record.state == CampaignState::Paused && self.reason.as_ref() == Some(reason)
    }

    fn fired(&mut self, timer: Timer, now_ms: u64, rng: &mut impl Rng, shell: &mut impl Shell) {
        match timer {
            Timer::Pace => self.step(now_ms, rng, shell),
            Timer::Grace => {
                if self.paused_for(&Reason::WaitingForSession) {
                    self.enter(CampaignState::Failed, Some(Reason::SessionLost), now_ms, shell);
                }
            }
            Timer::Resume => {
                if self.paused_for(&Reason::Timelock) {
                    self.enter(CampaignState::Running, None, now_ms, shell);
                    self.step(now_ms, rng, shell);
                }
            }
            Timer::StoreRetry => {
                if self.flight.is_none() && self.finish_after.is_some() {
                    // A final state waiting for the store.
                    if !shell.store_ok() {
                        return shell.schedule(Timer::StoreRetry, now_ms.saturating_add(ms(self.settings.store_retry)));
                    }
                    self.store_fault = false;
                    if let Some((state, reason)) = self.finish_after.take() {
                        self.enter(state, reason, now_ms, shell);
                    }
                    return;
                }
                if !self.paused_for(&Reason::StoreError) {
                    return;
                }
                if !shell.store_ok() {
                    return shell.schedule(Timer::StoreRetry, now_ms.saturating_add(ms(self.settings.store_retry)));
                }
                self.enter(CampaignState::Running, None, now_ms, shell);
                self.step(now_ms, rng, shell);
            }
            Timer::AskSession => shell.ask_session(),
        }
    }

    fn on_session(&mut self, state: SessionState, detail: String, now_ms: u64, rng: &mut impl Rng, shell: &mut impl Shell) {
        self.session = state;
        self.session_detail = detail;
        if self.record.state.is_final() || self.record.state == CampaignState::Draft {
            return;
        }
        match outlook(state, self.settings.conflict_takeover) {
            SessionOutlook::Ready => {
                if self.paused_for(&Reason::WaitingForSession) {
                    shell.cancel(Timer::Grace);
                    self.enter(CampaignState::Running, None, now_ms, shell);
                }
                self.step(now_ms, rng, shell);
            }
            SessionOutlook::NeedsHuman => {
                // An operator's pause survives what a relink mends (a
                // logout, then the QR it leads to): the operator may relink
                // and resume. Anything else ends the campaign at once.
                let relink = matches!(state, SessionState::LoggedOut | SessionState::ScanQr);
                if !(self.paused_for(&Reason::Operator) && relink) {
                    self.session_ended(now_ms, shell);
                }
            }
            SessionOutlook::Returns => self.wait_for_session(now_ms, shell),
        }
    }

    /// The session is not `CONNECTED` while the campaign runs: wait for it,
    /// or fail at once if only a person can bring it back.
    fn session_not_ready(&mut self, now_ms: u64, shell: &mut impl Shell) {
        match outlook(self.session, self.settings.conflict_takeover) {
            SessionOutlook::NeedsHuman => self.session_ended(now_ms, shell),
            SessionOutlook::Ready | SessionOutlook::Returns => self.wait_for_session(now_ms, shell),
        }
    }

    /// `FAILED(session_<state>: <detail>)`: the session needs a person.
    fn session_ended(&mut self, now_ms: u64, shell: &mut impl Shell) {
        let state = self.session;
        let detail = match self.session_detail.as_str() {
            "" if state == SessionState::ScanQr => "not linked: its QR is waiting to be scanned".to_string(),
            "" => state.as_str().to_ascii_lowercase(),
            d => d.to_string(),
        };
        shell.cancel(Timer::Grace);
        self.enter(CampaignState::Failed, Some(Reason::SessionEnded { state, detail }), now_ms, shell);
    }

    /// The session is not usable: pause and start the grace period.
    fn wait_for_session(&mut self, now_ms: u64, shell: &mut impl Shell) {
        if self.record.state != CampaignState::Running {
            return;
        }
        self.record.waiting_since_ms = Some(now_ms);
        self.enter(CampaignState::Paused, Some(Reason::WaitingForSession), now_ms, shell);
        shell.schedule(Timer::Grace, now_ms.saturating_add(ms(self.settings.resume_grace)));
    }

    fn pause_for_store(&mut self, now_ms: u64, shell: &mut impl Shell) {
        shell.cancel(Timer::Pace);
        self.enter(CampaignState::Paused, Some(Reason::StoreError), now_ms, shell);
        // The pause itself may not have been stored: the state in memory is
        // what stops the sends.
        self.store_fault = false;
        shell.schedule(Timer::StoreRetry, now_ms.saturating_add(ms(self.settings.store_retry)));
    }

    /// Decides what to do next: resolve, wait, send, or complete.
    fn step(&mut self, now_ms: u64, rng: &mut impl Rng, shell: &mut impl Shell) {
        if self.done || self.flight.is_some() || self.finish_after.is_some() || self.record.state != CampaignState::Running {
            return;
        }
        if self.store_fault || !shell.store_ok() {
            return self.pause_for_store(now_ms, shell);
        }
        if self.entries.is_none() && !self.load(shell) {
            return self.pause_for_store(now_ms, shell);
        }
        if self.session != SessionState::Connected {
            return self.session_not_ready(now_ms, shell);
        }
        if let Some(&idx) = self.sending.first() {
            if let Some(t) = self.lookup_not_before.filter(|t| *t > now_ms) {
                return shell.schedule(Timer::Pace, t);
            }
            return self.resolve(idx, now_ms, rng, shell);
        }
        // The next recipient that may be sent: opted-out ones are skipped
        // on the way (a loop, not recursion: a list may skip thousands).
        let (idx, entry, contact) = loop {
            let Some(&idx) = self.pending.first() else {
                return self.enter(CampaignState::Completed, None, now_ms, shell);
            };
            let Some(entry) = self.entries.as_ref().and_then(|m| m.get(&idx)).cloned() else {
                // Not in the store (cannot happen with a sound store): skip it.
                self.pending.remove(&idx);
                continue;
            };
            if let Some(t) = entry.not_before.filter(|t| *t > now_ms) {
                return shell.schedule(Timer::Pace, t);
            }
            // No send without knowing the contact is not opted out.
            let contact = match shell.contact(idx) {
                Ok(c) => c,
                Err(e) => {
                    self.fault(e, shell);
                    return self.pause_for_store(now_ms, shell);
                }
            };
            if !contact.opted_out {
                break (idx, entry, contact);
            }
            if !self.settle(idx, RecipientState::Pending, RecipientState::Skipped, RecipientReason::OptedOut, now_ms, shell) {
                return self.pause_for_store(now_ms, shell);
            }
        };
        let mut number = match shell.number() {
            Ok(n) => n,
            Err(e) => {
                self.fault(e, shell);
                return self.pause_for_store(now_ms, shell);
            }
        };
        if self.number_mark.is_some() && number.busy_until_ms == self.number_mark {
            // This campaign's last send is over but its end was not stored
            // (the store failed then): store it now. Stored or not, that
            // mark no longer holds the number for this campaign.
            number = number.ended(now_ms, self.number_mark);
            if shell.number_ended(&number) {
                self.number_mark = None;
            }
        }
        if let Some(busy) = number.busy(now_ms, self.settings.boot) {
            // Another campaign's send holds the number: look again soon (its
            // end starts the number's gap). Nothing is stored for this.
            return shell.schedule(Timer::Pace, busy.min(now_ms.saturating_add(1000)));
        }
        // Today's count must be readable before a send; a later day's that
        // is not counts as full (it only delays).
        if let Err(e) = shell.day_count(&self.pacing.day(ts(now_ms)).to_string()) {
            self.fault(e, shell);
            return self.pause_for_store(now_ms, shell);
        }
        let own = self.record.last_send_ms.map_or(now_ms, |last| last.saturating_add(ms(self.gap)));
        let earliest = own.max(number.earliest_ms());
        let slot = self.pacing.next(ts(now_ms), ts(earliest), |day| {
            let count = shell.day_count(&day.to_string()).unwrap_or(DayCount { sent: u32::MAX, first_contacts: u32::MAX });
            self.pacing.number.day_full(day, count, contact.first_contact, &number)
        });
        let at = u64::try_from(slot.at.as_millisecond()).unwrap_or(0);
        if at > now_ms {
            return self.hold_until(at, slot.hold, now_ms, shell);
        }
        self.send(idx, &entry, contact, &number, now_ms, rng, shell);
    }

    /// The next send waits until `at_ms` for `hold` (stored for the views).
    fn hold_until(&mut self, at_ms: u64, hold: Hold, now_ms: u64, shell: &mut impl Shell) {
        let why = Some(hold.as_str().to_string());
        if self.record.next_send_ms != Some(at_ms) || self.record.next_send_hold != why {
            self.record.next_send_ms = Some(at_ms);
            self.record.next_send_hold = why;
            // Bookkeeping for views: a failure is noted and pauses.
            self.save(now_ms, false, shell);
        }
        shell.schedule(Timer::Pace, at_ms);
    }

    #[allow(clippy::too_many_arguments)]
    fn send(
        &mut self,
        idx: u32,
        entry: &Entry,
        contact: Contact,
        number: &NumberRecord,
        now_ms: u64,
        rng: &mut impl Rng,
        shell: &mut impl Shell,
    ) {
        if let Some(scheduled) = self.record.next_send_ms {
            let late_ms = i64::try_from(now_ms).unwrap_or(i64::MAX).saturating_sub(i64::try_from(scheduled).unwrap_or(i64::MAX));
            shell.note(Note::SendStarts { idx, late_ms }, &self.record);
        }
        // Every write below must succeed before the send, or there is no
        // send: the recipient stays PENDING and the next step pauses. A day
        // counted without its send only makes the caps stricter; a send
        // time stored without its send only makes the next gaps longer; a
        // SENDING record that reached the store without its flush is looked
        // up as "not sent". None can cause a second send.
        let today = self.pacing.day(ts(now_ms));
        let next = number.sending(now_ms, self.pacing.number.gap(rng), self.settings.send_timeout, self.settings.boot);
        if let Err(e) = shell.count_send(&today.to_string(), &next, contact.first_contact) {
            self.fault(e, shell);
            return self.step(now_ms, rng, shell);
        }
        self.number_mark = next.busy_until_ms;
        self.record.last_send_ms = Some(now_ms);
        self.record.next_send_ms = None;
        self.record.next_send_hold = None;
        if !self.save(now_ms, false, shell) {
            return self.step(now_ms, rng, shell);
        }
        let message_id = crate::whatsapp::message_id(rng);
        if !self.write_recipient(idx, &Change::Sending { message_id: message_id.clone() }, now_ms, shell) {
            return self.step(now_ms, rng, shell);
        }
        if let Some(e) = self.entries.as_mut().and_then(|m| m.get_mut(&idx)) {
            e.attempts = e.attempts.saturating_add(1);
            e.not_before = None;
            e.unknown = false;
        }
        self.moved(idx, RecipientState::Pending, RecipientState::Sending, shell);
        if let Some(e) = self.entries.as_mut().and_then(|m| m.get_mut(&idx)) {
            e.message_id = Some(message_id.clone());
        }
        self.gap = self.pacing.gap(rng);
        self.flight = Some(Flight::Send(idx));
        shell.send(idx, &message_id, self.pacing.typing(entry.text_chars as usize));
    }

    fn progress(&self, shell: &mut impl Shell) {
        shell.note(Note::Progress(self.counts), &self.record);
    }

    fn sent(&mut self, idx: u32, result: SendResult, now_ms: u64, shell: &mut impl Shell) {
        match result {
            SendResult::Sent { ack } => self.mark_sent(idx, ack, false, now_ms, shell),
            SendResult::NotConnected => {
                self.back_to_pending(idx, None, true, now_ms, shell);
                self.wait_for_session(now_ms, shell);
            }
            SendResult::NotSent(error) => {
                self.back_to_pending(idx, None, true, now_ms, shell);
                self.fault(error, shell);
            }
            SendResult::AttachmentUnreadable(why) => {
                // Nothing left: the attempt is given back, and the campaign
                // waits for an operator (the file will not mend itself).
                self.back_to_pending(idx, None, true, now_ms, shell);
                if self.record.state == CampaignState::Running && self.finish_after.is_none() {
                    shell.cancel(Timer::Pace);
                    self.enter(CampaignState::Paused, Some(Reason::AttachmentUnreadable(why)), now_ms, shell);
                }
            }
            SendResult::SessionDeleted => {
                self.back_to_pending(idx, None, true, now_ms, shell);
                self.enter(CampaignState::Failed, Some(Reason::SessionDeleted), now_ms, shell);
            }
            SendResult::Refused { state, reason } => {
                self.settle(idx, RecipientState::Sending, state, reason, now_ms, shell);
            }
            SendResult::Rejected(code) => {
                self.settle(idx, RecipientState::Sending, RecipientState::Failed, RecipientReason::Rejected(code), now_ms, shell);
            }
            SendResult::Timelock => {
                // Not delivered: cool down, no retry storm (an operator's
                // pause or a final state stays as it is).
                self.back_to_pending(idx, None, true, now_ms, shell);
                if self.record.state == CampaignState::Running && self.finish_after.is_none() {
                    let until = now_ms.saturating_add(ms(self.settings.timelock_cooldown));
                    self.record.resume_at_ms = Some(until);
                    self.enter(CampaignState::Paused, Some(Reason::Timelock), now_ms, shell);
                    shell.schedule(Timer::Resume, until);
                }
            }
            SendResult::Unknown(why) => {
                // It may or may not have reached WhatsApp: it stays SENDING
                // and a lookup settles it. Failing or not, this write leaves
                // it SENDING: harmless either way.
                let _ = shell.write_recipient(idx, &Change::Unknown { why: why.clone() }, now_ms, true);
                if let Some(e) = self.entries.as_mut().and_then(|m| m.get_mut(&idx)) {
                    e.unknown = true;
                }
                shell.note(Note::Unresolved { idx, why }, &self.record);
            }
        }
    }

    /// WhatsApp has recipient `idx`'s message (`resolved`: a lookup said
    /// so). If this write fails the recipient stays SENDING (in memory as
    /// in the store) and a lookup settles it after the pause.
    fn mark_sent(&mut self, idx: u32, ack: i8, resolved: bool, now_ms: u64, shell: &mut impl Shell) {
        let ack = ack.max(self.early_ack(idx));
        if self.write_recipient(idx, &Change::Sent { ack }, now_ms, shell) {
            // A delivered message makes a sending day of the warm-up ramp
            // (stored unflushed: a lost write only keeps the ramp lower).
            if self.pacing.number.warmup.is_some() {
                if let Ok(number) = shell.number() {
                    // A lost write only keeps the ramp lower (above).
                    let _ = shell.number_ended(&number.delivered(self.pacing.day(ts(now_ms)), &self.pacing.number));
                }
            }
            self.moved(idx, RecipientState::Sending, RecipientState::Sent, shell);
            self.set_ack(idx, ack);
            shell.note(Note::Sent { idx, resolved }, &self.record);
            self.progress(shell);
        }
    }

    /// An ack that arrived while recipient `idx` was still SENDING.
    fn early_ack(&self, idx: u32) -> i8 {
        self.entries.as_ref().and_then(|m| m.get(&idx)).filter(|e| e.state == RecipientState::Sending).map_or(0, |e| e.ack)
    }

    fn set_ack(&mut self, idx: u32, ack: i8) {
        if let Some(e) = self.entries.as_mut().and_then(|m| m.get_mut(&idx)) {
            e.ack = ack;
        }
    }

    /// Recipient `idx`, `was` until now, will not be sent. `false`: the
    /// write failed (noted; it stays as it was).
    fn settle(
        &mut self,
        idx: u32,
        was: RecipientState,
        state: RecipientState,
        reason: RecipientReason,
        now_ms: u64,
        shell: &mut impl Shell,
    ) -> bool {
        if !self.write_recipient(idx, &Change::Settled { state, reason }, now_ms, shell) {
            return false;
        }
        self.moved(idx, was, state, shell);
        shell.note(Note::Failed { idx }, &self.record);
        self.progress(shell);
        true
    }

    /// Puts a recipient whose send did not happen back in line. If the
    /// write fails it stays SENDING (memory mirrors the store) and a lookup
    /// sends it again after the pause.
    fn back_to_pending(&mut self, idx: u32, retry_at: Option<u64>, refund: bool, now_ms: u64, shell: &mut impl Shell) {
        if !self.write_recipient(idx, &Change::Pending { refund }, now_ms, shell) {
            return;
        }
        self.moved(idx, RecipientState::Sending, RecipientState::Pending, shell);
        if let Some(e) = self.entries.as_mut().and_then(|m| m.get_mut(&idx)) {
            e.not_before = retry_at;
            if refund {
                e.attempts = e.attempts.saturating_sub(1);
            }
        }
    }

    /// Looks a SENDING recipient up in the page.
    fn resolve(&mut self, idx: u32, now_ms: u64, rng: &mut impl Rng, shell: &mut impl Shell) {
        let message_id = self.entries.as_ref().and_then(|m| m.get(&idx)).and_then(|e| e.message_id.clone());
        let Some(message_id) = message_id else {
            // SENDING without an id (cannot happen with a sound store): it
            // was never sent.
            self.back_to_pending(idx, None, false, now_ms, shell);
            return self.step(now_ms, rng, shell);
        };
        self.lookup_not_before = None;
        self.flight = Some(Flight::Lookup(idx));
        shell.lookup(idx, &message_id);
    }

    fn looked_up(&mut self, idx: u32, result: LookupResult, now_ms: u64, shell: &mut impl Shell) {
        match result {
            LookupResult::Found { ack } => self.mark_sent(idx, ack, true, now_ms, shell),
            LookupResult::NotFound => {
                let (attempts, unknown) = self.entries.as_ref().and_then(|m| m.get(&idx)).map_or((0, false), |e| (e.attempts, e.unknown));
                if attempts >= self.settings.send_attempts {
                    self.settle(idx, RecipientState::Sending, RecipientState::Failed, RecipientReason::SendFailed, now_ms, shell);
                } else {
                    shell.note(Note::NotSent { idx }, &self.record);
                    let delay = self.settings.retry_base.saturating_mul(1 << attempts.saturating_sub(1).min(10));
                    let retry_at = unknown.then(|| now_ms.saturating_add(ms(delay)));
                    self.back_to_pending(idx, retry_at, false, now_ms, shell);
                }
            }
            LookupResult::NotConnected => self.wait_for_session(now_ms, shell),
            LookupResult::Failed => self.lookup_not_before = Some(now_ms.saturating_add(ms(self.settings.lookup_retry))),
        }
    }

    fn ack(&mut self, idx: u32, ack: i8, now_ms: u64, shell: &mut impl Shell) {
        let Some(e) = self.entries.as_mut().and_then(|m| m.get_mut(&idx)) else { return };
        if e.state == RecipientState::Sending && ack > 0 {
            // The ack overtook the send's answer: kept for the SENT write.
            e.ack = e.ack.max(ack);
            return;
        }
        if e.state != RecipientState::Sent || ack <= 0 || e.ack == ack {
            return;
        }
        // Harmless if it fails: the ack is a record no send depends on, and
        // the store's health reports the failure.
        let _ = shell.write_recipient(idx, &Change::Ack { ack }, now_ms, false);
        self.set_ack(idx, ack);
        shell.note(Note::Acked { idx }, &self.record);
    }

    /// Recipient `idx`'s contact wrote back. Counted once per recipient,
    /// and only once it was sent (a message before that is not a reply).
    /// An opt-out among the sent may pause the campaign
    /// (`PAUSED(opt_out_rate)`); one before its send is skipped when its
    /// turn comes.
    fn reply(&mut self, idx: u32, at_ms: u64, opted_out: bool, now_ms: u64, shell: &mut impl Shell) {
        let Some(e) = self.entries.as_mut().and_then(|m| m.get_mut(&idx)) else { return };
        if e.state != RecipientState::Sent || (e.replied && (e.opted_out || !opted_out)) {
            return;
        }
        let first_reply = !e.replied;
        let new_opt_out = opted_out && !e.opted_out;
        e.replied = true;
        e.opted_out |= opted_out;
        // Harmless if it fails: a reply is a record no send depends on (the
        // opt-out list itself was written before this input).
        let _ = shell.write_recipient(idx, &Change::Replied { at_ms, opted_out }, now_ms, false);
        self.record.replies += u32::from(first_reply);
        self.record.opt_outs += u32::from(new_opt_out);
        shell.note(Note::Replied { idx, opted_out }, &self.record);
        let sent = self.counts[RecipientState::Sent.index()];
        let over =
            sent >= self.settings.opt_out_min_sent && f64::from(self.record.opt_outs) > self.settings.max_opt_out_rate * f64::from(sent);
        if new_opt_out && over && self.record.state == CampaignState::Running && self.finish_after.is_none() {
            shell.cancel(Timer::Pace);
            self.enter(CampaignState::Paused, Some(Reason::OptOutRate), now_ms, shell);
        } else {
            // The counts are bookkeeping for views: a failure is noted.
            self.save(now_ms, false, shell);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_read_back_as_they_are_written() {
        let all = [
            Reason::Operator,
            Reason::WaitingForSession,
            Reason::Timelock,
            Reason::StoreError,
            Reason::OptOutRate,
            Reason::AttachmentUnreadable("the attachment file is missing".into()),
            Reason::SessionLost,
            Reason::SessionDeleted,
            Reason::SessionEnded { state: SessionState::LoggedOut, detail: "device_removed".into() },
            Reason::Other("something else".into()),
        ];
        for r in all {
            assert_eq!(Reason::parse(&r.as_string()), r);
        }
        assert_eq!(Reason::SessionEnded { state: SessionState::LoggedOut, detail: "x".into() }.as_string(), "session_logged_out: x");
        for r in [RecipientReason::NotOnWhatsApp, RecipientReason::InvalidNumber("x".into()), RecipientReason::Unknown("timeout".into())] {
            assert_eq!(RecipientReason::parse(&r.as_string()), r);
        }
    }

    #[test]
    fn a_start_is_refused_with_one_instruction_where_waiting_cannot_help() {
        use SessionState as S;
        let refusal = |state, takeover| start_refusal("acme", state, takeover, Command::Start);
        assert_eq!(
            refusal(S::ScanQr, false).as_deref(),
            Some("session acme is SCAN_QR: scan its QR (GET /api/sessions/acme/qr) before starting a campaign")
        );
        for state in [S::ScanQr, S::LoggedOut, S::Blocked, S::Failed, S::Stopped, S::Conflict] {
            let m = refusal(state, false).unwrap_or_else(|| panic!("{state} is refused"));
            assert!(m.starts_with(&format!("session acme is {state}: ")) && m.ends_with(" before starting a campaign"), "{m}");
            assert!(m.contains("/api/sessions/acme/") || m.contains("restart.conflict"), "{m}");
        }
        for state in [S::Connected, S::Starting, S::Reconnecting] {
            assert_eq!(refusal(state, false), None, "{state}");
        }
        // Under takeover a conflict mends itself: the grace period covers it.
        assert_eq!(refusal(S::Conflict, true), None);
        let resume = start_refusal("acme", S::Blocked, false, Command::Resume).unwrap_or_default();
        assert!(resume.ends_with("before resuming a campaign"), "{resume}");
    }

    #[test]
    fn a_running_campaign_waits_only_for_a_session_that_comes_back() {
        use SessionState as S;
        for state in [S::ScanQr, S::LoggedOut, S::Blocked, S::Failed, S::Conflict] {
            assert_eq!(outlook(state, false), SessionOutlook::NeedsHuman, "{state}");
        }
        for state in [S::Starting, S::Reconnecting, S::Stopped] {
            assert_eq!(outlook(state, false), SessionOutlook::Returns, "{state}");
        }
        assert_eq!(outlook(S::Conflict, true), SessionOutlook::Returns);
        assert_eq!(outlook(S::Connected, false), SessionOutlook::Ready);
        let r = Reason::SessionEnded { state: S::ScanQr, detail: "not linked: its QR is waiting to be scanned".into() };
        assert_eq!(Reason::parse(&r.as_string()), r);
        assert!(r.is_session_end());
    }

    #[test]
    fn operator_transitions() {
        use CampaignState as S;
        assert_eq!(transition(S::Draft, Command::Start), Ok((S::Running, None)));
        assert_eq!(transition(S::Failed, Command::Resume), Ok((S::Running, None)));
        assert_eq!(transition(S::Running, Command::Pause), Ok((S::Paused, Some(Reason::Operator))));
        assert_eq!(transition(S::Running, Command::Cancel), Ok((S::Cancelled, Some(Reason::Operator))));
        assert_eq!(transition(S::Draft, Command::Pause), Err("cannot pause a campaign that is draft".into()));
        assert!(transition(S::Completed, Command::Cancel).is_err());
        assert!(transition(S::Running, Command::Start).is_err());
    }
}
