//! The operator's requests that change sessions: create one, and carry out
//! a command on one ([`SessionSlot::command`]'s plan: store the desired
//! state first, stop the Session, then start, stop, relink or delete).
//!
//! [`SessionSlot::command`]: crate::policy::slot::SessionSlot::command

use std::time::Duration;

use actix::fut::LocalBoxActorFuture;
use actix::prelude::*;

use super::{Reply, Slot, Supervisor, SupervisorError};
use crate::actors::session::LogoutPage;
use crate::policy::slot::{Command, SessionView, Then};
use crate::profile;
use crate::session_state::{now_ms, validate_name, SessionState};
use crate::store::{Desired, SessionRecord};

/// Creates a session; starts it if `start`. Errors: `InvalidName`,
/// `Exists`, `TooMany` (`limits.sessions`), `Store`.
#[derive(Message)]
#[rtype(result = "Reply<SessionView>")]
pub struct CreateSession {
    pub name: String,
    pub start: bool,
}

/// An operator's command on a session, by name; answers the view once done
/// (a stop waits for the browser to close). Errors: `InvalidName`,
/// `NotFound`, `WrongState` (recover), `Store` (the desired state was not
/// stored: nothing was done).
#[derive(Message)]
#[rtype(result = "Reply<SessionView>")]
pub struct SessionCommand {
    pub name: String,
    pub command: Command,
}

impl Handler<CreateSession> for Supervisor {
    type Result = Reply<SessionView>;

    fn handle(&mut self, msg: CreateSession, ctx: &mut Self::Context) -> Self::Result {
        validate_name(&msg.name).map_err(SupervisorError::InvalidName)?;
        let now = now_ms();
        let record = SessionRecord {
            name: msg.name.clone(),
            desired: if msg.start { Desired::Running } else { Desired::Stopped },
            state: SessionState::Stopped,
            reason: None,
            since_ms: now,
            me: None,
            created_ms: now,
        };
        if self.slots.contains_key(&msg.name) {
            return Err(SupervisorError::Exists(msg.name));
        }
        let max = self.config.limits.sessions;
        if self.slots.len() >= max {
            return Err(SupervisorError::TooMany(format!("there are {max} sessions already; at most {max} (limits.sessions)")));
        }
        if !self.store.create_session(&record)? {
            return Err(SupervisorError::Exists(msg.name));
        }
        let created = self.reporter.created(&record);
        let mut slot = Slot::new(record, self.targets);
        slot.session.note(&created);
        if let Some(fences) = self.store.fences() {
            // Cluster mode: it runs where placement puts it, maybe here.
            slot.owned = false;
            self.slots.insert(msg.name.clone(), slot);
            self.learned.insert(msg.name.clone(), std::time::Instant::now());
            if msg.start {
                fences.wake_placement();
            }
            return self.view(&msg.name);
        }
        self.slots.insert(msg.name.clone(), slot);
        if msg.start {
            self.start_session(&msg.name, ctx);
        }
        self.view(&msg.name)
    }
}

impl Handler<SessionCommand> for Supervisor {
    type Result = LocalBoxActorFuture<Self, Reply<SessionView>>;

    fn handle(&mut self, msg: SessionCommand, ctx: &mut Self::Context) -> Self::Result {
        let SessionCommand { name, command } = msg;
        if let Err(e) = self.learn(&name) {
            return Box::pin(fut::ready(Err(e)));
        }
        let slot = match self.slot(&name) {
            Ok(slot) => slot,
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        tracing::info!(session = %name, command = ?command, "operator command");
        if !slot.owned {
            return self.command_unowned(name, command, ctx);
        }
        let plan = match slot.session.command(command) {
            Ok(plan) => plan,
            Err(needed) => {
                let state = slot.session.record.state;
                return Box::pin(fut::ready(Err(SupervisorError::WrongState { name, state, needed })));
            }
        };
        let page = slot.addr.clone().filter(|_| plan.logout_page);
        if let Some(desired) = plan.desired {
            if let Err(e) = self.set_desired(&name, desired) {
                return Box::pin(fut::ready(Err(e)));
            }
        }
        if plan.clear_restarts {
            if let Some(slot) = self.slots.get_mut(&name) {
                slot.session.restarts.clear();
            }
        }
        if !plan.stop {
            return self.finish(name, plan.then, ctx);
        }
        let stopped: LocalBoxActorFuture<Self, ()> = match page {
            None => Box::pin(self.stop_actor(&name, ctx).into_actor(self)),
            Some(page) => {
                let name = name.clone();
                let logout = async move {
                    // Best effort: tell WhatsApp; the profile is wiped regardless.
                    let _ = tokio::time::timeout(Duration::from_secs(10), page.send(LogoutPage)).await;
                };
                Box::pin(logout.into_actor(self).then(move |_, act, ctx| act.stop_actor(&name, ctx).into_actor(act)))
            }
        };
        Box::pin(stopped.then(move |(), act, ctx| act.finish(name, plan.then, ctx)))
    }
}

impl Supervisor {
    /// Cluster mode: a command on a session no node runs now (the API
    /// forwards commands to the node that runs it). What the store can
    /// carry out is done there: start, restart and recover ask placement
    /// to run it; stop records it stopped; delete wipes it. A logout needs
    /// the browser: [`SupervisorError::NoOwner`].
    fn command_unowned(
        &mut self,
        name: String,
        command: Command,
        ctx: &mut Context<Self>,
    ) -> LocalBoxActorFuture<Self, Reply<SessionView>> {
        let fresh = match self.store.session(&name) {
            Ok(Some(record)) => record,
            Ok(None) => return Box::pin(fut::ready(Err(SupervisorError::NotFound(name)))),
            Err(e) => return Box::pin(fut::ready(Err(e.into()))),
        };
        if let Some(slot) = self.slots.get_mut(&name) {
            slot.session.record = fresh;
        }
        let done = match command {
            Command::Logout => Err(SupervisorError::NoOwner {
                name: name.clone(),
                retry_after_s: crate::cluster::retry_after_s(self.config.cluster.lease_ttl),
            }),
            Command::Start | Command::Restart | Command::Recover => self.set_desired(&name, Desired::Running).map(|()| {
                if let Some(f) = self.store.fences() {
                    f.wake_placement();
                }
            }),
            Command::Stop => self.set_desired(&name, Desired::Stopped).and_then(|()| {
                let Some(slot) = self.slots.get_mut(&name) else { return Ok(()) };
                let record = &mut slot.session.record;
                record.state = SessionState::Stopped;
                record.reason = Some("operator".into());
                record.since_ms = now_ms();
                self.store.put_session(record).map_err(SupervisorError::from)
            }),
            Command::Delete => match self.set_desired(&name, Desired::Stopped) {
                Ok(()) => return self.delete(name, ctx),
                Err(e) => Err(e),
            },
        };
        Box::pin(fut::ready(done.and_then(|()| self.view(&name))))
    }

    /// A command's last step ([`Then`]); answers the session's view.
    fn finish(&mut self, name: String, then: Then, ctx: &mut Context<Self>) -> LocalBoxActorFuture<Self, Reply<SessionView>> {
        // No run is left (the command stopped it, or none ran): the next
        // one, whoever starts it, tries pushed events again
        // (whatsapp.bidi_fallback_after). A start on a running session
        // leaves its run and mode alone.
        if let Some(slot) = self.slots.get_mut(&name) {
            if slot.addr.is_none() {
                slot.session.retry_bidi();
            }
        }
        match then {
            Then::Start => self.start_session(&name, ctx),
            Then::Stopped { reason, start } => {
                self.set_state(&name, SessionState::Stopped, Some(reason.to_string()));
                if start {
                    self.start_session(&name, ctx);
                }
            }
            Then::Relink(reason) => self.relink(&name, reason, ctx),
            Then::Delete => return self.delete(name, ctx),
        }
        Box::pin(fut::ready(self.view(&name)))
    }

    /// Wipes a stopped session's profile (on the blocking pool), then
    /// forgets the session; answers its last view. No other message is
    /// taken meanwhile, so nothing can start on the profile being wiped.
    fn delete(&mut self, name: String, ctx: &mut Context<Self>) -> LocalBoxActorFuture<Self, Reply<SessionView>> {
        let view = self.view(&name);
        let profile = profile::path(&self.config.state.profiles(), &name);
        let (done, answer) = tokio::sync::oneshot::channel();
        Self::blocking(
            ctx,
            move || profile::wipe(&profile),
            move |wiped, act, _| {
                if let Some(e) = super::failure(wiped) {
                    tracing::error!(session = %name, error = %e, "cannot delete the profile");
                }
                act.slots.remove(&name);
                if let Some(f) = act.store.fences() {
                    // Cluster mode: the lease is no longer renewed and
                    // expires (this node may take it back at once).
                    f.set(&name, None);
                }
                let deleted = act.store.delete_session(&name).map_err(SupervisorError::from).and(view);
                if deleted.is_ok() {
                    tracing::info!(session = %name, event = "session.deleted", "session deleted");
                }
                // Harmless if the caller is gone: the session is deleted.
                let _ = done.send(deleted);
            },
        );
        let dropped = || SupervisorError::Internal("the supervisor stopped during the delete".into());
        Box::pin(answer.into_actor(self).map(move |answer, _, _| answer.unwrap_or_else(|_| Err(dropped()))))
    }
}
