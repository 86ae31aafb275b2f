//! Fault injection for the tests of supervision (debug builds only; the
//! routes `POST /api/sessions/{name}/_fault/panic` and
//! `/api/_fault/wedge/{seconds}`, `POST /api/sessions/{name}/_fault/bidi-drop`
//! and `…/_fault/other-tab-crash` and `…/_fault/own-tab-crash` exist only with
//! `WASUP_FAULT_INJECTION=1`).

use actix::prelude::*;

use super::{Reply, Supervisor, SupervisorError};
use crate::actors::session;

/// Makes the session's actor panic.
#[derive(Message)]
#[rtype(result = "Reply<()>")]
pub struct InjectPanic {
    pub name: String,
}

impl Handler<InjectPanic> for Supervisor {
    type Result = Reply<()>;

    fn handle(&mut self, msg: InjectPanic, _ctx: &mut Self::Context) -> Self::Result {
        let addr = self.slot(&msg.name)?.addr.clone();
        let addr = addr.ok_or_else(|| SupervisorError::Internal("session is not running".into()))?;
        addr.do_send(session::InjectPanic);
        Ok(())
    }
}

/// Injects `fault` into the session's page; answers whether it could.
#[derive(Message)]
#[rtype(result = "Reply<bool>")]
pub struct InjectPageFault {
    pub name: String,
    pub fault: session::PageFault,
}

impl Handler<InjectPageFault> for Supervisor {
    type Result = ResponseFuture<Reply<bool>>;

    fn handle(&mut self, msg: InjectPageFault, _ctx: &mut Self::Context) -> Self::Result {
        let addr = match self.slot(&msg.name) {
            Ok(slot) => slot.addr.clone(),
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        Box::pin(async move {
            let addr = addr.ok_or_else(|| SupervisorError::Internal("session is not running".into()))?;
            addr.send(session::InjectPageFault(msg.fault)).await.map_err(|e| SupervisorError::Internal(e.to_string()))
        })
    }
}

/// The Supervisor blocks its thread for `seconds` (at most 60), as a
/// deadlock would.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Wedge {
    pub seconds: u64,
}

impl Handler<Wedge> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: Wedge, _ctx: &mut Self::Context) {
        tracing::warn!(seconds = msg.seconds, "fault injection: the supervisor is wedged");
        std::thread::sleep(std::time::Duration::from_secs(msg.seconds.min(60)));
    }
}
