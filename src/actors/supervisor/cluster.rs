//! Cluster mode: the Cluster actor hands the Supervisor the sessions whose
//! lease this node took ([`Acquire`]) and takes back those it lost or
//! gives away ([`Release`]). Only a session acquired here runs here; its
//! record is read fresh from the store at acquisition (the previous owner
//! wrote it).

use std::time::Instant;

use actix::prelude::*;

use super::{Slot, Supervisor};
use crate::actors::messages::{AdoptSession, DropSession};
use crate::session_state::SessionState;
use crate::store::Desired;

/// This node now holds `name`'s lease at `generation` (the store's fences
/// have it already): the session starts here (staggered) with its
/// campaigns.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Acquire {
    pub name: String,
    pub generation: i64,
}

/// This node no longer holds these sessions' leases (lost, fenced, or
/// handed over): their browsers close and their campaigns stop at a safe
/// point; nothing is written for them (the next owner does). Answers once
/// the browsers are closed: within `lease_ttl / 4` (then killed) when the
/// lease is lost or fenced, so a fenced node's browser is gone before its
/// lease can expire (a lost one's may be another node's already).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Release {
    pub names: Vec<String>,
    pub reason: ReleaseReason,
}

/// Why a node gives sessions up ([`Release`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseReason {
    /// A renewal did not renew the lease: it expired or another node has it.
    LeaseLost,
    /// No renewal for `lease_ttl / 2`: this node fenced itself.
    Fenced,
    /// A write for the session was refused by its fence.
    FencedWrite,
    /// The node drains: the session is handed over (the lease is still held
    /// until its browser closed).
    Drain,
}

impl ReleaseReason {
    /// The name in the log: `lease_lost`, `fenced`, `fenced_write`, `drain`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LeaseLost => "lease_lost",
            Self::Fenced => "fenced",
            Self::FencedWrite => "fenced_write",
            Self::Drain => "drain",
        }
    }
}

impl Handler<Acquire> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: Acquire, ctx: &mut Self::Context) {
        let Acquire { name, generation } = msg;
        if self.stopping || self.slots.get(&name).is_some_and(|s| s.owned && s.addr.is_some()) {
            return;
        }
        let record = match self.store.session(&name) {
            Ok(Some(record)) => record,
            Ok(None) => {
                // Deleted meanwhile: dropped from the fences, the lease is
                // not renewed and expires.
                if let Some(f) = self.store.fences() {
                    f.set(&name, None);
                }
                return;
            }
            Err(e) => {
                // The lease then lapses unused (the fences drop it) and
                // placement tries again: no session runs on a record it
                // could not read.
                tracing::error!(session = %name, error = %e, "cannot read the acquired session from the store; giving the lease up");
                if let Some(f) = self.store.fences() {
                    f.set(&name, None);
                }
                return;
            }
        };
        tracing::info!(session = %name, event = "cluster.acquired", generation, "this node took the session's lease");
        let history = self.store.history(&name).unwrap_or_else(|e| {
            // The objectives then start from now; history is a record.
            tracing::warn!(session = %name, error = %e, "cannot read the session's history");
            Vec::new()
        });
        let desired = record.desired;
        let mut slot = Slot::new(record, self.targets);
        slot.owned = true;
        // Reports of an earlier Session of this name (one still closing
        // after a release) must stay void: generations go on from there.
        slot.session.generation = self.slots.get(&name).map_or(0, |s| s.session.generation + 1);
        slot.session.seed(&history);
        self.slots.insert(name.clone(), slot);
        self.set_state(&name, SessionState::Starting, Some("acquired".into()));
        self.campaigns.adopt.do_send(AdoptSession { session: name.clone() });
        if desired != Desired::Running {
            return;
        }
        // Staggered as at boot: many sessions taken at once (a node died)
        // do not start every browser at the same moment.
        let now = Instant::now();
        let at = self.next_start.max(now);
        self.next_start = at + self.config.restart.boot_stagger;
        ctx.run_later(at - now, move |act, ctx| {
            let due = act.slots.get(&name).is_some_and(|s| s.owned && s.session.record.desired == Desired::Running);
            if due {
                act.start_session(&name, ctx);
            }
        });
    }
}

impl Handler<Release> for Supervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: Release, ctx: &mut Self::Context) -> Self::Result {
        // A lease lost may be another node's already, and a fenced one
        // within `lease_ttl / 2` of the fence: the browser gets a quarter of the
        // TTL to close, then it is killed, so it never runs beside the next
        // owner's. A drain or shutdown still holds the lease: the browser
        // closes at its pace, and the lease ends after.
        let close_within = match msg.reason {
            ReleaseReason::Drain => crate::actors::session::Shutdown::CLOSE,
            ReleaseReason::LeaseLost | ReleaseReason::Fenced | ReleaseReason::FencedWrite => self.config.cluster.lease_ttl / 4,
        };
        let mut stops = Vec::new();
        for name in &msg.names {
            let Some(slot) = self.slots.get_mut(name) else { continue };
            if !slot.owned {
                continue;
            }
            slot.owned = false;
            tracing::warn!(session = %name, event = "cluster.released", reason = msg.reason.as_str(), "this node no longer drives the session");
            let dropped = self.campaigns.drop.send(DropSession { session: name.clone() });
            let stopped = self.stop_actor_within(name, close_within, ctx);
            stops.push(async move {
                // Harmless if it fails: the Campaigns actor is gone (shutdown).
                let _ = dropped.await;
                stopped.await;
            });
        }
        Box::pin(futures_util::future::join_all(stops).into_actor(self).map(|_, _, _| ()))
    }
}

/// Every session record as the cluster's last read of the store has them:
/// sessions other nodes run (or none does) are brought up to date, those
/// created elsewhere appear, those deleted elsewhere go. Sessions this
/// node runs keep their own record. A session this node created or
/// learned of after `read_at` (when the read began) stays, though the read
/// did not see it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Known {
    pub records: Vec<crate::store::SessionRecord>,
    pub read_at: Instant,
}

impl Handler<Known> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: Known, _ctx: &mut Self::Context) {
        let names: std::collections::BTreeSet<String> = msg.records.iter().map(|r| r.name.clone()).collect();
        let read_at = msg.read_at;
        let learned = &self.learned;
        self.slots.retain(|name, slot| slot.owned || names.contains(name) || learned.get(name).is_some_and(|t| *t > read_at));
        self.learned.retain(|_, t| *t > read_at);
        for record in msg.records {
            match self.slots.get_mut(&record.name) {
                Some(slot) if slot.owned => {}
                Some(slot) => slot.session.record = record,
                None => {
                    let mut slot = Slot::new(record, self.targets);
                    slot.owned = false;
                    self.slots.insert(slot.session.record.name.clone(), slot);
                }
            }
        }
    }
}

impl Supervisor {
    /// Cluster mode: a session another node created since the last
    /// [`Known`] is read from the store now (it runs elsewhere or nowhere),
    /// so every node answers for it at once rather than after its next
    /// round. Nothing on one node, or for a name already known.
    ///
    /// Errors: the store could not be read (503 rather than a false 404).
    pub(super) fn learn(&mut self, name: &str) -> Result<(), super::SupervisorError> {
        if !self.cluster || self.slots.contains_key(name) || crate::session_state::validate_name(name).is_err() {
            return Ok(());
        }
        if let Some(record) = self.store.session(name)? {
            let mut slot = Slot::new(record, self.targets);
            slot.owned = false;
            self.slots.insert(name.to_string(), slot);
            self.learned.insert(name.to_string(), Instant::now());
        }
        Ok(())
    }
}
