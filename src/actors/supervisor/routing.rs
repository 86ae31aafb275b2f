//! The requests the Supervisor answers from a session's slot or passes on
//! to its Session: views, the QR, a send and a lookup. They change nothing
//! in the Supervisor; a send or lookup goes to the Session only while it
//! runs (a send only while `CONNECTED`). In cluster mode, the QR of a
//! session that should run and does not run here is `NoOwner`, a send
//! through it `NotLeased`.

use std::time::Duration;

use actix::prelude::*;

use super::{Reply, Supervisor, SupervisorError};
use crate::actors::session::{self, SendOutcome, SendText};
use crate::policy::slot::SessionView;
use crate::session_state::{now_ms, SessionState};
use crate::store::Desired;
use crate::whatsapp::number::ChatId;

/// A session's view. Errors: `InvalidName`, `NotFound`.
#[derive(Message)]
#[rtype(result = "Reply<SessionView>")]
pub struct GetSession {
    pub name: String,
}

/// Every session's view, by name.
#[derive(Message)]
#[rtype(result = "Vec<SessionView>")]
pub struct ListSessions;

/// The current QR string; fails unless the session is `SCAN_QR`.
#[derive(Message)]
#[rtype(result = "Reply<String>")]
pub struct GetQr {
    pub name: String,
}

/// Sends a text, or a media message, through a session.
#[derive(Message)]
#[rtype(result = "Reply<SendOutcome>")]
pub struct SendMessage {
    pub name: String,
    pub to: ChatId,
    pub text: String,
    /// The key id to use; a fresh one when `None`. Campaigns choose it
    /// themselves and store it before the send.
    pub id: Option<String>,
    /// "typing…" time before the send.
    pub typing: Duration,
    /// A file to send as a media message, `text` its caption.
    pub media: Option<crate::whatsapp::media::Media>,
}

/// Looks a sent message up in a session's page (see [`session::Lookup`]).
#[derive(Message)]
#[rtype(result = "Reply<Option<i8>>")]
pub struct LookupMessage {
    pub name: String,
    pub to: ChatId,
    pub id: String,
}

impl Handler<GetSession> for Supervisor {
    type Result = Reply<SessionView>;

    fn handle(&mut self, msg: GetSession, _ctx: &mut Self::Context) -> Self::Result {
        self.learn(&msg.name)?;
        self.view(&msg.name)
    }
}

impl Handler<ListSessions> for Supervisor {
    type Result = MessageResult<ListSessions>;

    fn handle(&mut self, _msg: ListSessions, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.slots.values().map(|s| s.session.view(&self.policy, now_ms())).collect())
    }
}

impl Handler<GetQr> for Supervisor {
    type Result = Reply<String>;

    fn handle(&mut self, msg: GetQr, _ctx: &mut Self::Context) -> Self::Result {
        let slot = self.slot(&msg.name)?;
        if !slot.owned && slot.session.record.desired == Desired::Running {
            // Cluster mode: its QR is on the node that runs it (the API
            // forwards there), or on the next one.
            let retry_after_s = crate::cluster::retry_after_s(self.config.cluster.lease_ttl);
            return Err(SupervisorError::NoOwner { name: msg.name, retry_after_s });
        }
        match (&slot.session.qr, slot.session.record.state) {
            (Some(qr), SessionState::ScanQr) => Ok(qr.clone()),
            (_, state) => {
                Err(SupervisorError::WrongState { name: msg.name, state, needed: "no QR to scan (a QR is offered only in SCAN_QR)" })
            }
        }
    }
}

impl Handler<SendMessage> for Supervisor {
    type Result = ResponseFuture<Reply<SendOutcome>>;

    fn handle(&mut self, msg: SendMessage, _ctx: &mut Self::Context) -> Self::Result {
        let slot = match self.slot(&msg.name) {
            Ok(slot) => slot,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let (state, addr) = (slot.session.record.state, slot.addr.clone());
        if !slot.owned && slot.session.record.desired == Desired::Running {
            // Cluster mode: another node runs it (the API forwards there),
            // or none does yet.
            return Box::pin(async move { Err(SupervisorError::Send(session::SendError::NotLeased)) });
        }
        let addr = match addr {
            Some(addr) if state == SessionState::Connected => addr,
            _ => {
                let name = msg.name;
                return Box::pin(async move { Err(SupervisorError::WrongState { name, state, needed: "not CONNECTED" }) });
            }
        };
        let fences = self.store.fences().cloned();
        if fences.as_ref().is_some_and(|f| !f.may_send(&msg.name)) {
            return Box::pin(async move { Err(SupervisorError::Send(session::SendError::NotLeased)) });
        }
        let id = msg.id.unwrap_or_else(crate::whatsapp::new_message_id);
        Box::pin(async move {
            addr.send(SendText { to: msg.to, body: msg.text, media: msg.media, id, typing: msg.typing, fences })
                .await
                .map_err(|e| SupervisorError::Internal(format!("session actor unavailable: {e}")))?
                .map_err(SupervisorError::from)
        })
    }
}

impl Handler<LookupMessage> for Supervisor {
    type Result = ResponseFuture<Reply<Option<i8>>>;

    fn handle(&mut self, msg: LookupMessage, _ctx: &mut Self::Context) -> Self::Result {
        let (addr, state) = match self.slot(&msg.name) {
            Ok(slot) => (slot.addr.clone(), slot.session.record.state),
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        Box::pin(async move {
            let addr = addr.ok_or(SupervisorError::Send(session::SendError::NotConnected(state)))?;
            addr.send(session::Lookup { to: msg.to, id: msg.id })
                .await
                .map_err(|e| SupervisorError::Internal(format!("session actor unavailable: {e}")))?
                .map_err(SupervisorError::from)
        })
    }
}
