//! The Cluster actor (cluster mode only): this node's heartbeat, lease
//! renewal, self-fencing, placement and drain.
//!
//! - Every `lease_ttl / 3` (less up to a tenth, jitter) one statement
//!   writes the heartbeat and renews every lease held
//!   ([`ClusterDb::beat`]); a held lease it did not renew is lost: the
//!   session stops here at once ([`Release`]).
//! - Four times a second it checks the last successful renewal: one older
//!   than `lease_ttl / 2` (this machine's monotonic clock, which runs on
//!   while the process is stopped) fences the node: every session it runs
//!   stops and its campaigns halt, before any lease can expire and another
//!   node take over.
//! - Renewal runs alone on that timer; after each successful one (and when
//!   a session is created or started anywhere on this node), placement:
//!   the sessions that should run and have
//!   no live lease are claimed, up to this node's fair share
//!   ([`cluster::claims`]), in random order after a random pause (so nodes
//!   do not all claim the same at once; the database settles any race),
//!   and handed to the Supervisor ([`Acquire`]), which starts them
//!   staggered.
//! - A draining node claims nothing and hands one session over per tick,
//!   only while another live node has room: its browser closes first, then
//!   its lease ends, so the next owner never starts it beside this one.
//! - A store write that found its fence gone (`StoreError::Fenced`) stops
//!   that session here at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use rand::seq::SliceRandom as _;
use rand::Rng as _;

use crate::actors::supervisor::{Acquire, Known, Release, ReleaseReason, Supervisor};
use crate::cluster::{self, ClusterDb, ClusterView};
use crate::store::{Desired, Fences, LostLease, SessionRecord, Store, StoreError};

/// How many sessions a node claims in one placement round at most.
const CLAIMS_PER_TICK: usize = 50;

/// How often the last renewal's age is checked (self-fencing).
const FENCE_CHECK: Duration = Duration::from_millis(250);

/// The daemon is stopping: no more claims (renewal goes on until
/// [`Leave`]); what a round under way claims is released.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopPlacing;

/// Releases every held lease and stops: the daemon is shutting down (its
/// sessions stopped already). Answers once the database has it, or failed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave;

/// The Cluster actor. See the module docs.
pub struct Cluster {
    db: ClusterDb,
    store: Store,
    fences: Arc<Fences>,
    supervisor: Addr<Supervisor>,
    ttl: Duration,
    /// A renewal is under way.
    renewing: bool,
    /// A placement round is under way.
    placing_now: bool,
    /// A wake came while a round was under way: another round follows it.
    wanted: bool,
    /// The node fenced itself and has not renewed since.
    fenced: bool,
    /// Sessions whose fenced write failed, from the store.
    lost: Option<tokio::sync::mpsc::UnboundedReceiver<LostLease>>,
    /// Claims are made (false once the daemon is stopping).
    placing: bool,
    leaving: bool,
}

/// What one renewal found, on the blocking pool.
struct Renewal {
    /// When it started (the database renewed at or after it).
    started: Instant,
    /// The leases it asked to renew (held when it started).
    held: Vec<(String, i64)>,
    /// The leases renewed, or why the renewal failed.
    renewed: Result<Vec<(String, i64)>, StoreError>,
}

/// What one placement round found, on the blocking pool.
struct Placement {
    /// When its first claim could have been made (before the pause): its
    /// leases run from then at the latest.
    claiming_from: Instant,
    /// Leases this round claimed.
    acquired: Vec<(String, i64)>,
    /// A draining node's session to hand over.
    hand_over: Option<String>,
    /// Every session record (for the Supervisor's views), when read, and
    /// when the read began.
    records: Option<(Vec<SessionRecord>, Instant)>,
}

impl Cluster {
    pub fn new(
        db: ClusterDb,
        store: Store,
        fences: Arc<Fences>,
        lost: tokio::sync::mpsc::UnboundedReceiver<LostLease>,
        supervisor: Addr<Supervisor>,
        ttl: Duration,
    ) -> Self {
        Self {
            db,
            store,
            fences,
            supervisor,
            ttl,
            renewing: false,
            placing_now: false,
            wanted: false,
            fenced: false,
            lost: Some(lost),
            placing: true,
            leaving: false,
        }
    }

    /// The next renewal after `lease_ttl / 3` less up to a tenth of it.
    fn schedule(&self, ctx: &mut Context<Self>) {
        let third = self.ttl / 3;
        let jitter = third.mul_f64(rand::thread_rng().gen_range(0.0..0.1));
        ctx.run_later(third - jitter, |act, ctx| {
            act.renew(ctx);
            act.schedule(ctx);
        });
    }

    /// The heartbeat and the renewal of every lease held, alone on its
    /// timer: a placement round under way (a pause, up to 50 claims, a
    /// slow read of every session) never delays it.
    fn renew(&mut self, ctx: &mut Context<Self>) {
        if self.renewing || self.leaving {
            return;
        }
        self.renewing = true;
        let (db, held) = (self.db.clone(), self.fences.held());
        let work = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let renewed = db.beat(&held);
            Renewal { started, held, renewed }
        });
        ctx.spawn(actix::fut::wrap_future::<_, Self>(work).map(|done, act, ctx| {
            act.renewing = false;
            match done {
                Ok(renewal) => act.renewed(renewal, ctx),
                Err(e) => tracing::error!(error = %e, "the lease renewal did not finish"),
            }
        }));
    }

    fn renewed(&mut self, renewal: Renewal, ctx: &mut Context<Self>) {
        let renewed = match renewal.renewed {
            Ok(renewed) => renewed,
            Err(e) => {
                tracing::warn!(event = "cluster.renew_failed", error = %e, "cannot renew this node's leases");
                return;
            }
        };
        if self.fenced {
            tracing::info!(event = "cluster.unfenced", "leases renew again; this node takes sessions again");
            self.fenced = false;
        }
        self.fences.renewed(renewal.started, self.ttl / 2);
        // A lease asked for and not renewed is gone, if it is still held at
        // that generation (one released meanwhile is gone already; one
        // acquired meanwhile was not asked for).
        let lost = lost_leases(renewal.held, &renewed, |s| self.fences.generation(s));
        if !lost.is_empty() {
            for s in &lost {
                self.fences.set(s, None);
            }
            self.supervisor.do_send(Release { names: lost, reason: ReleaseReason::LeaseLost });
        }
        self.place(ctx);
    }

    /// A placement round: every session record (the Supervisor's views of
    /// the sessions other nodes run), a drain's hand-over, and claims. Only
    /// while the last renewal is fresh: a node that cannot renew what it
    /// holds takes nothing more.
    fn place(&mut self, ctx: &mut Context<Self>) {
        if self.placing_now {
            self.wanted = true;
            return;
        }
        self.wanted = false;
        if self.leaving || !self.placing || self.fenced || !self.fences.fresh() {
            return;
        }
        self.placing_now = true;
        let (db, store, held) = (self.db.clone(), self.store.clone(), self.fences.held());
        let pause = (self.ttl / 10).mul_f64(rand::thread_rng().gen_range(0.0..1.0));
        let work = tokio::task::spawn_blocking(move || {
            let mut round = Placement { claiming_from: Instant::now(), acquired: Vec::new(), hand_over: None, records: None };
            // Errors end the round quietly: the next one tries again, and
            // nothing runs on a claim not made.
            let Ok(view) = db.view() else { return round };
            let read_at = Instant::now();
            let Ok(records) = store.sessions() else { return round };
            round.hand_over = hand_over(&db, &view, &held);
            round.claiming_from = Instant::now();
            round.acquired = place_sessions(&db, &view, &held, &records, pause);
            round.records = Some((records, read_at));
            round
        });
        ctx.spawn(actix::fut::wrap_future::<_, Self>(work).map(|done, act, ctx| {
            act.placing_now = false;
            match done {
                Ok(round) => act.placed(round, ctx),
                Err(e) => tracing::error!(error = %e, "the placement round did not finish"),
            }
            if act.wanted {
                act.place(ctx);
            }
        }));
    }

    fn placed(&mut self, round: Placement, ctx: &mut Context<Self>) {
        if let Some((records, read_at)) = round.records {
            self.supervisor.do_send(Known { records, read_at });
        }
        // Claims are given back at once when the daemon began to stop, or
        // when this node can no longer vouch for them: it fenced itself or
        // missed renewals meanwhile (stopped, or the database stalled), or
        // the round took so long (a frozen process) that leases claimed at
        // its start may have expired and be another node's.
        let stale = self.fenced || !self.fences.fresh() || round.claiming_from.elapsed() >= self.ttl / 2;
        if (!self.placing || self.leaving || stale) && !round.acquired.is_empty() {
            if stale {
                tracing::warn!(claims = round.acquired.len(), "placement round too late to trust: its claims are given back");
            }
            let names: Vec<String> = round.acquired.into_iter().map(|(s, _)| s).collect();
            let db = self.db.clone();
            // Harmless if it fails: the leases, never renewed, expire.
            ctx.spawn(actix::fut::wrap_future::<_, Self>(async move {
                let _ = tokio::task::spawn_blocking(move || db.release(&names)).await;
            }));
            return;
        }
        for (name, generation) in round.acquired {
            self.fences.set(&name, Some(generation));
            self.supervisor.do_send(Acquire { name, generation });
        }
        if let Some(name) = round.hand_over {
            self.hand_over(name, ctx);
        }
    }

    /// Drain: stop the session here, then end its lease.
    fn hand_over(&mut self, name: String, ctx: &mut Context<Self>) {
        tracing::info!(session = %name, event = "cluster.hand_over", "draining: handing the session over");
        self.fences.set(&name, None);
        let (supervisor, db) = (self.supervisor.clone(), self.db.clone());
        ctx.spawn(actix::fut::wrap_future::<_, Self>(async move {
            // Harmless if the Supervisor is gone: the daemon is stopping.
            let _ = supervisor.send(Release { names: vec![name.clone()], reason: ReleaseReason::Drain }).await;
            let names = vec![name];
            // Harmless if it fails: the lease, no longer renewed, expires.
            let _ = tokio::task::spawn_blocking(move || db.release(&names)).await;
        }));
    }

    /// Self-fencing (see the module docs).
    fn check_fence(&mut self) {
        if self.fences.fresh() {
            return;
        }
        let held = self.fences.held();
        if held.is_empty() {
            return;
        }
        self.fenced = true;
        let names: Vec<String> = held.into_iter().map(|(s, _)| s).collect();
        tracing::error!(
            event = "cluster.fenced",
            sessions = names.len(),
            "no lease renewal for half the lease TTL: stopping every session on this node before another node takes them"
        );
        self.fences.clear();
        self.supervisor.do_send(Release { names, reason: ReleaseReason::Fenced });
    }
}

/// A draining node's one session to hand over this round, if another node
/// can take it.
fn hand_over(db: &ClusterDb, view: &ClusterView, held: &[(String, i64)]) -> Option<String> {
    let me = view.node(db.node())?;
    if !me.draining || !cluster::others_can_take(db.node(), &view.nodes) {
        return None;
    }
    held.first().map(|(s, _)| s.clone())
}

/// Claims this node's share of the sessions that should run and have no
/// live lease, after `pause` (jitter).
///
/// A live lease in this node's name that it does not hold was left by its
/// previous process (a restart): it counts as free for this node.
fn place_sessions(
    db: &ClusterDb,
    view: &ClusterView,
    held: &[(String, i64)],
    records: &[SessionRecord],
    pause: Duration,
) -> Vec<(String, i64)> {
    let me = db.node();
    let holds = |name: &str| held.iter().any(|(s, _)| s == name);
    let free = |name: &str| view.owner(name).is_none_or(|l| l.node == me && !holds(name));
    let mut unowned: Vec<&str> =
        records.iter().filter(|r| r.desired == Desired::Running && free(&r.name)).map(|r| r.name.as_str()).collect();
    let mut nodes = view.nodes.clone();
    for node in nodes.iter_mut().filter(|n| n.name == me) {
        node.sessions = held.iter().map(|(s, _)| s.clone()).collect();
    }
    let n = cluster::claims(me, &nodes, unowned.len(), CLAIMS_PER_TICK);
    if n == 0 {
        return Vec::new();
    }
    std::thread::sleep(pause);
    unowned.shuffle(&mut rand::thread_rng());
    let mut acquired = Vec::new();
    for name in unowned {
        if acquired.len() >= n {
            break;
        }
        match db.claim(name) {
            Ok(Some(generation)) => acquired.push((name.to_string(), generation)),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(session = %name, error = %e, "cannot claim the session's lease");
                break;
            }
        }
    }
    acquired
}

impl Actor for Cluster {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(lost) = self.lost.take() {
            ctx.add_stream(futures_util::stream::unfold(lost, |mut rx| async move { rx.recv().await.map(|lost| (Lost(lost), rx)) }));
        }
        ctx.add_stream(futures_util::stream::unfold(self.fences.clone(), |f| async move {
            f.placement_wanted().await;
            Some((Wake, f))
        }));
        self.renew(ctx);
        self.schedule(ctx);
        ctx.run_interval(FENCE_CHECK, |act, _| act.check_fence());
    }
}

/// A write refused by its fence.
struct Lost(LostLease);

/// The leases a renewal lost: asked for (`asked`), not renewed, and still
/// held now at the generation asked for (`held_now`).
fn lost_leases(asked: Vec<(String, i64)>, renewed: &[(String, i64)], held_now: impl Fn(&str) -> Option<i64>) -> Vec<String> {
    asked.into_iter().filter(|h| !renewed.contains(h) && held_now(&h.0) == Some(h.1)).map(|(s, _)| s).collect()
}

/// What a refused write says of the lease held now.
#[derive(Debug, PartialEq, Eq)]
enum Refused {
    /// It was made under the lease held now: that lease is gone.
    Held,
    /// It was made under an earlier lease (or none) of a session this node
    /// holds again since: the lease held now is fine.
    Earlier,
    /// This node holds no lease of the session: whatever runs it here stops.
    NotHeld,
}

/// Judges a write refused under `reported` (`None`: no lease was held)
/// while this node holds `held` now.
fn judge_lost(reported: Option<i64>, held: Option<i64>) -> Refused {
    match (reported, held) {
        (Some(r), Some(h)) if r == h => Refused::Held,
        (_, Some(_)) => Refused::Earlier,
        (_, None) => Refused::NotHeld,
    }
}

/// Placement is wanted now.
struct Wake;

impl StreamHandler<Wake> for Cluster {
    fn handle(&mut self, _: Wake, ctx: &mut Self::Context) {
        self.place(ctx);
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {}
}

impl StreamHandler<Lost> for Cluster {
    /// A fenced write failed: the lease it carried is not this node's any
    /// more. A report about an earlier lease of a session this node took
    /// again since (or about a write made with no lease, from a run
    /// already released) leaves the lease held now alone.
    fn handle(&mut self, Lost(lost): Lost, _ctx: &mut Self::Context) {
        let LostLease { session, generation } = lost;
        match judge_lost(generation, self.fences.generation(&session)) {
            Refused::Held => {
                self.fences.set(&session, None);
                tracing::warn!(session = %session, event = "cluster.fenced_write", "a write for the session was refused: its lease is not this node's");
            }
            Refused::Earlier => return,
            Refused::NotHeld => {}
        }
        // A no-op for a session that does not run here.
        self.supervisor.do_send(Release { names: vec![session], reason: ReleaseReason::FencedWrite });
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {}
}

impl Handler<StopPlacing> for Cluster {
    type Result = ();

    fn handle(&mut self, _msg: StopPlacing, _ctx: &mut Self::Context) {
        self.placing = false;
    }
}

impl Handler<Leave> for Cluster {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _msg: Leave, _ctx: &mut Self::Context) -> Self::Result {
        self.leaving = true;
        let names: Vec<String> = self.fences.held().into_iter().map(|(s, _)| s).collect();
        self.fences.clear();
        let db = self.db.clone();
        Box::pin(async move {
            if names.is_empty() {
                return;
            }
            match tokio::task::spawn_blocking(move || db.release(&names)).await {
                Ok(Ok(())) => tracing::info!(event = "cluster.left", "this node's leases are released"),
                // Harmless: the leases expire within the TTL by themselves.
                _ => tracing::warn!("cannot release this node's leases; they expire by themselves"),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renewal_loses_only_what_it_asked_for_and_is_still_held() {
        let asked = vec![("a".to_string(), 1), ("b".to_string(), 2), ("c".to_string(), 3), ("d".to_string(), 4)];
        let renewed = [("a".to_string(), 1)];
        // b: still held at 2, not renewed: lost. c: released meanwhile.
        // d: released and taken again at 5 meanwhile. e: acquired during
        // the renewal (not asked for).
        let held = |s: &str| match s {
            "a" => Some(1),
            "b" => Some(2),
            "d" => Some(5),
            "e" => Some(6),
            _ => None,
        };
        assert_eq!(lost_leases(asked, &renewed, held), vec!["b".to_string()]);
    }

    #[test]
    fn a_late_refusal_leaves_a_lease_taken_again_alone() {
        assert_eq!(judge_lost(Some(4), Some(4)), Refused::Held);
        assert_eq!(judge_lost(Some(4), Some(5)), Refused::Earlier, "released and taken again at 5 since");
        assert_eq!(judge_lost(None, Some(5)), Refused::Earlier, "a write of a run released before 5 was taken");
        assert_eq!(judge_lost(Some(4), None), Refused::NotHeld);
        assert_eq!(judge_lost(None, None), Refused::NotHeld);
    }
}
