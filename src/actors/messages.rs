//! The messages that cross between actors of different levels: what a
//! Session reports to the Supervisor (and its acks to the campaigns), what
//! the Supervisor tells the campaigns, what a Campaign tells its registry.
//! Children reach their parents through `Recipient`s of these, so no actor
//! module imports the module of the actor above it.

use actix::prelude::*;

use crate::policy::EndReason;
use crate::session_state::{Me, SessionState};

/// From a Session: what it shows now.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SessionStatus {
    pub name: String,
    pub generation: u64,
    pub state: SessionState,
    pub reason: Option<String>,
    pub me: Option<Me>,
    /// The QR string while `SCAN_QR`. Kept in memory only, never logged.
    pub qr: Option<String>,
    /// How the page's events reach the Session, once a page is open.
    pub events: Option<crate::config::EventMode>,
}

/// From a Session: its page's run is over; it has closed its browser.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SessionEnded {
    pub name: String,
    pub generation: u64,
    pub reason: EndReason,
    pub detail: String,
}

/// From a Session: health measurements (any may be absent).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SessionHealth {
    pub name: String,
    pub generation: u64,
    /// Set when this report is a healthy heartbeat, Unix epoch ms.
    pub last_heartbeat_ms: Option<u64>,
    pub key_files: Option<u64>,
    pub browser_pss_bytes: Option<u64>,
}

impl SessionHealth {
    /// A heartbeat report; `healthy` heartbeats carry their time.
    pub fn heartbeat(name: &str, generation: u64, at_ms: u64, healthy: bool) -> Self {
        Self { name: name.to_string(), generation, last_heartbeat_ms: healthy.then_some(at_ms), key_files: None, browser_pss_bytes: None }
    }
}

/// From a Session: a message's ack changed (-1 error … 4 played).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct MessageAcked {
    pub id: String,
    pub ack: i8,
}

/// A session's state changed (from the Supervisor).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct SessionChanged {
    pub name: String,
    pub state: SessionState,
    pub reason: String,
}

/// From a Campaign actor: it reached a final state and stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Finished {
    pub id: String,
}

/// From a Session: a contact's message reached the account (WhatsApp Web's
/// `Msg` collection gained a message that is not from this account, as
/// whatsapp-web.js's `message` event reports).
#[derive(Message, Debug, Clone, serde::Serialize)]
#[rtype(result = "()")]
pub struct MessageReceived {
    pub session: String,
    /// The sender's number, E.164 digits without `+` (`"4915199990000"`).
    pub from: String,
    /// WhatsApp's message id.
    pub id: String,
    /// `"chat"` for text; `"image"`, `"document"`, `"audio"`, ... for media.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text, or a media message's caption (empty when none).
    pub body: String,
    /// When WhatsApp stamped it, Unix epoch ms.
    pub at_ms: u64,
}

/// Where a session's news for the campaigns goes (the Campaigns registry):
/// its state changes (from the Supervisor), and its acks and incoming
/// messages (from the Session, directly).
/// Cluster mode: this node now holds `session`'s lease; its `RUNNING` and
/// `PAUSED` campaigns start here (as at boot on one node).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AdoptSession {
    pub session: String,
}

/// Cluster mode: this node no longer holds `session`'s lease; its
/// campaigns stop at a safe point, their states kept for the next owner.
/// Answers once they have stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DropSession {
    pub session: String,
}

#[derive(Clone)]
pub struct CampaignLinks {
    pub changes: Recipient<SessionChanged>,
    pub acks: Recipient<MessageAcked>,
    pub incoming: Recipient<MessageReceived>,
    /// Cluster mode: a session's lease taken or lost here.
    pub adopt: Recipient<AdoptSession>,
    pub drop: Recipient<DropSession>,
}

impl CampaignLinks {
    /// All of them to one actor.
    pub fn to<A>(addr: &Addr<A>) -> Self
    where
        A: Actor
            + Handler<SessionChanged>
            + Handler<MessageAcked>
            + Handler<MessageReceived>
            + Handler<AdoptSession>
            + Handler<DropSession>,
        A::Context: actix::dev::ToEnvelope<A, SessionChanged>
            + actix::dev::ToEnvelope<A, MessageAcked>
            + actix::dev::ToEnvelope<A, MessageReceived>
            + actix::dev::ToEnvelope<A, AdoptSession>
            + actix::dev::ToEnvelope<A, DropSession>,
    {
        Self {
            changes: addr.clone().recipient(),
            acks: addr.clone().recipient(),
            incoming: addr.clone().recipient(),
            adopt: addr.clone().recipient(),
            drop: addr.clone().recipient(),
        }
    }
}
