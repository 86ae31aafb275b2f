//! What a campaign's [`Note`]s become: events on the bus (`campaign.status`,
//! `campaign.progress`, `message.sent`, `message.failed`, `message.ack`)
//! and log lines. Nothing here decides anything.

use crate::campaign::{CampaignRecord, CampaignState, RecipientRecord, RecipientState};
use crate::events::{Event, EventName, Events};
use crate::policy::campaign::Note;

/// One campaign's reporter.
pub(super) struct Report {
    id: String,
    session: String,
    events: Events,
}

impl Report {
    pub(super) fn new(record: &CampaignRecord, events: Events) -> Self {
        Self { id: record.id.clone(), session: record.session.clone(), events }
    }

    /// Publishes and logs `note`. `last` is the recipient last written (a
    /// recipient's event names its phone, message id and ack from it).
    pub(super) fn note(&self, note: Note, record: &CampaignRecord, last: Option<&RecipientRecord>) {
        let (id, session) = (&self.id, &self.session);
        match note {
            Note::Status { state, reason } => {
                let reason = reason.map(|r| r.as_string());
                self.events.publish(Event::campaign(EventName::CampaignStatus, id, session).state(state, reason.as_deref()));
                let reason = reason.unwrap_or_default();
                match state {
                    CampaignState::Failed => {
                        tracing::error!(campaign = %id, session = %session, event = "campaign.status", state = %state, reason, "campaign {state}")
                    }
                    CampaignState::Paused => {
                        tracing::warn!(campaign = %id, session = %session, event = "campaign.status", state = %state, reason, "campaign {state}")
                    }
                    _ => {
                        tracing::info!(campaign = %id, session = %session, event = "campaign.status", state = %state, reason, "campaign {state}")
                    }
                }
            }
            Note::Progress(counts) => {
                let detail: serde_json::Map<String, serde_json::Value> =
                    RecipientState::ALL.iter().map(|s| (s.as_str().to_string(), counts[s.index()].into())).collect();
                self.events.publish(Event::campaign(EventName::CampaignProgress, id, session).detail(detail.into()));
                let n = |s: RecipientState| counts[s.index()];
                tracing::info!(
                    campaign = %id,
                    session = %session,
                    event = "campaign.progress",
                    sent = n(RecipientState::Sent),
                    failed = n(RecipientState::Failed),
                    skipped = n(RecipientState::Skipped),
                    pending = n(RecipientState::Pending),
                    total = record.total,
                    "campaign progress"
                );
            }
            Note::Sent { idx, resolved } => {
                let message_id = last.and_then(|r| r.message_id.clone()).unwrap_or_default();
                let how = if resolved { "resolved: the page holds the message" } else { "message sent" };
                tracing::info!(campaign = %id, session = %session, event = "message.sent", message_id = %message_id, recipient = idx, "{how}");
                self.events.publish(self.recipient_event(EventName::MessageSent, idx, last));
            }
            Note::Failed { idx } => {
                let (state, reason) = last.map_or(("FAILED", String::new()), |r| (r.state.as_str(), r.reason.clone().unwrap_or_default()));
                tracing::warn!(campaign = %id, session = %session, event = "message.failed", recipient = idx, reason = %reason, "recipient {state}");
                self.events.publish(self.recipient_event(EventName::MessageFailed, idx, last));
            }
            Note::Acked { idx } => {
                let e = self.recipient_event(EventName::MessageAck, idx, last);
                let ack = last.and_then(|r| r.ack.clone()).unwrap_or_default();
                tracing::info!(campaign = %id, event = "message.ack", recipient = idx, ack = %ack, "ack");
                self.events.publish(e);
            }
            Note::SendStarts { idx, late_ms } => {
                // How late the pacing clock fired (the bench reads this).
                let scheduled = record.next_send_ms.unwrap_or_default();
                tracing::debug!(campaign = %id, recipient = idx, scheduled_ms = scheduled, late_ms, "pacing: send starts");
            }
            Note::Unresolved { idx, why } => {
                tracing::warn!(campaign = %id, session = %session, recipient = idx, error = %why, "send outcome unknown; resolving by lookup")
            }
            Note::NotSent { idx } => {
                tracing::info!(campaign = %id, session = %session, recipient = idx, "resolved: not sent; sending again")
            }
            Note::Replied { idx, opted_out } => {
                let what = if opted_out { "opted out" } else { "replied" };
                tracing::info!(campaign = %id, session = %session, recipient = idx, replies = record.replies, opt_outs = record.opt_outs, "recipient {what}");
                let detail =
                    serde_json::json!({"recipient": idx, "opted_out": opted_out, "replies": record.replies, "opt_outs": record.opt_outs});
                self.events.publish(Event::campaign(EventName::CampaignProgress, id, session).detail(detail));
            }
            Note::StoreFailed { error } => {
                tracing::error!(campaign = %id, session = %session, error = %error, "store write failed: no sends until writes succeed again")
            }
        }
    }

    /// A recipient's event: its state, phone, message id and ack when `last`
    /// is that recipient, else only its index.
    fn recipient_event(&self, event: EventName, idx: u32, last: Option<&RecipientRecord>) -> Event {
        let e = Event::campaign(event, &self.id, &self.session);
        match last.filter(|r| r.idx == idx) {
            Some(r) => e
                .state(r.state.as_str(), r.reason.as_deref())
                .detail(serde_json::json!({"recipient": r.idx, "phone": r.phone, "message_id": r.message_id, "ack": r.ack})),
            None => e.detail(serde_json::json!({"recipient": idx})),
        }
    }
}
