//! The Campaign actor's [`Shell`] for its machine ([`Io`]): store reads and
//! writes happen at once ([`Records`]), notes become events and logs
//! ([`Report`]), counts go to the shared [`Tally`], and what needs the
//! actor's context (sends, lookups, timers, the end) is queued as
//! [`Action`]s. Also here: what the Supervisor's answers (a session's view,
//! a send's or a lookup's outcome) mean for the machine.

use std::collections::VecDeque;
use std::time::Duration;

use actix::MailboxError;

use super::records::Records;
use super::report::Report;
use crate::actors::session::{SendError, SendOutcome};
use crate::actors::supervisor::{SessionView, SupervisorError};
use crate::campaign::{CampaignRecord, Counts, RecipientState, Tally};
use crate::policy::campaign::{Change, Contact, Entry, Input, LookupResult, Note, RecipientReason, SendResult, Shell, Timer};
use crate::policy::pacing::{DayCount, NumberRecord};
use crate::whatsapp::page::SendRefused;

/// What the machine asked for that needs the actor's context.
pub(super) enum Action {
    Send { idx: u32, message_id: String, typing: Duration },
    Lookup { idx: u32, message_id: String },
    AskSession,
    Schedule(Timer, u64),
    Cancel(Timer),
    Finished(Box<CampaignRecord>),
}

/// The machine's shell (see the module docs).
pub(super) struct Io {
    pub(super) records: Records,
    pub(super) report: Report,
    pub(super) tally: Tally,
    pub(super) actions: VecDeque<Action>,
}

impl Shell for Io {
    fn load(&mut self) -> Result<Vec<(u32, Entry)>, String> {
        self.records.load()
    }

    fn write_recipient(&mut self, idx: u32, change: &Change, now_ms: u64, flush: bool) -> Result<(), String> {
        self.records.write_recipient(idx, change, now_ms, flush)
    }

    fn write_campaign(&mut self, record: &CampaignRecord, flush: bool) -> Result<(), String> {
        self.records.write_campaign(record, flush)
    }

    fn count_send(&mut self, day: &str, number: &NumberRecord, first_contact: bool) -> Result<(), String> {
        self.records.count_send(day, number, first_contact)
    }

    fn day_count(&self, day: &str) -> Result<DayCount, String> {
        self.records.day_count(day)
    }

    fn number(&self) -> Result<NumberRecord, String> {
        self.records.number()
    }

    fn number_ended(&mut self, number: &NumberRecord) -> bool {
        self.records.number_ended(number)
    }

    fn contact(&self, idx: u32) -> Result<Contact, String> {
        self.records.contact(idx)
    }

    fn store_ok(&self) -> bool {
        self.records.store_ok()
    }

    fn send(&mut self, idx: u32, message_id: &str, typing: Duration) {
        self.actions.push_back(Action::Send { idx, message_id: message_id.to_string(), typing });
    }

    fn lookup(&mut self, idx: u32, message_id: &str) {
        self.actions.push_back(Action::Lookup { idx, message_id: message_id.to_string() });
    }

    fn ask_session(&mut self) {
        self.actions.push_back(Action::AskSession);
    }

    fn schedule(&mut self, timer: Timer, at_ms: u64) {
        self.actions.push_back(Action::Schedule(timer, at_ms));
    }

    fn cancel(&mut self, timer: Timer) {
        self.actions.push_back(Action::Cancel(timer));
    }

    fn note(&mut self, note: Note, record: &CampaignRecord) {
        self.report.note(note, record, self.records.last.as_ref());
    }

    fn counts(&mut self, counts: Counts) {
        self.tally.set(&self.records.id, counts);
    }

    fn finished(&mut self, record: &CampaignRecord) {
        self.actions.push_back(Action::Finished(Box::new(record.clone())));
    }
}

/// What a send's answer from the Supervisor means for the campaign: the one
/// place errors are told apart (`None`: no answer in time).
pub(super) fn send_result(answer: Option<Result<SendOutcome, SupervisorError>>) -> SendResult {
    match answer {
        Some(Ok(outcome)) => SendResult::Sent { ack: outcome.ack },
        // Not leased: nothing was sent, as when not connected; the session
        // (and this campaign) stop on this node.
        Some(Err(SupervisorError::WrongState { .. } | SupervisorError::Send(SendError::NotConnected(_) | SendError::NotLeased))) => {
            SendResult::NotConnected
        }
        Some(Err(SupervisorError::NotFound(_))) => SendResult::SessionDeleted,
        Some(Err(SupervisorError::Send(SendError::Refused(refused)))) => {
            let (state, reason) = match refused {
                SendRefused::NotOnWhatsApp(_) => (RecipientState::Skipped, RecipientReason::NotOnWhatsApp),
                SendRefused::InvalidWid(m) => (RecipientState::Failed, RecipientReason::InvalidNumber(m)),
                SendRefused::Other(m) => (RecipientState::Failed, RecipientReason::Other(m)),
            };
            SendResult::Refused { state, reason }
        }
        // WhatsApp's reach-out timelock.
        Some(Err(SupervisorError::Send(SendError::Rejected { code: Some(463) }))) => SendResult::Timelock,
        Some(Err(SupervisorError::Send(SendError::Rejected { code }))) => SendResult::Rejected(code),
        Some(Err(e)) => SendResult::Unknown(e.to_string()),
        None => SendResult::Unknown("no answer within the send timeout".into()),
    }
}

/// What a lookup's answer means.
pub(super) fn lookup_result(answer: Result<Result<Option<i8>, SupervisorError>, MailboxError>) -> LookupResult {
    match answer {
        Ok(Ok(Some(ack))) => LookupResult::Found { ack },
        Ok(Ok(None)) => LookupResult::NotFound,
        Ok(Err(SupervisorError::WrongState { .. } | SupervisorError::Send(SendError::NotConnected(_)))) => LookupResult::NotConnected,
        _ => LookupResult::Failed,
    }
}

/// What the Supervisor's answer about the campaign's session means.
pub(super) fn session_input(answer: Result<Result<SessionView, SupervisorError>, MailboxError>) -> Input {
    match answer {
        Ok(Ok(view)) => Input::Session { state: view.state, detail: view.reason.unwrap_or_default() },
        Ok(Err(SupervisorError::NotFound(_))) => Input::SessionDeleted,
        _ => Input::SessionUnknown,
    }
}
