//! The reports a Session sends its Supervisor ([`SessionStatus`],
//! [`SessionEnded`], [`SessionHealth`]); a report from a Session that was
//! already replaced (an older generation) is ignored. The decisions are
//! [`SessionSlot`]'s; the Supervisor carries them out.
//!
//! [`SessionSlot`]: crate::policy::slot::SessionSlot

use actix::prelude::*;

use super::Supervisor;
use crate::actors::messages::{SessionEnded, SessionHealth, SessionStatus};
use crate::config::KeyFilesAction;
use crate::events::EventName;
use crate::policy::slot::HealthLimits;
use crate::policy::EndReason;

impl Handler<SessionStatus> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: SessionStatus, _ctx: &mut Self::Context) {
        let Some(slot) = self.slots.get_mut(&msg.name) else { return };
        if slot.session.generation != msg.generation {
            return;
        }
        let (new_qr, me_changed) = slot.session.on_status(msg.qr, msg.me);
        slot.session.events = msg.events;
        if new_qr {
            self.reporter.new_qr(&msg.name);
        }
        if me_changed {
            self.reporter.save(&slot.session.record);
        }
        self.set_state(&msg.name, msg.state, msg.reason);
    }
}

impl Handler<SessionEnded> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: SessionEnded, ctx: &mut Self::Context) {
        let Some(slot) = self.slots.get_mut(&msg.name) else { return };
        if slot.session.generation != msg.generation {
            return;
        }
        tracing::info!(session = %msg.name, reason = %msg.reason, detail = %msg.detail, "session's page run is over");
        self.on_end(&msg.name, msg.reason, ctx);
    }
}

impl Handler<SessionHealth> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: SessionHealth, ctx: &mut Self::Context) {
        let limits = HealthLimits {
            memory_max: self.config.health.memory.max.as_u64(),
            key_files_max: self.config.health.key_files.max,
            key_files_cleanup: self.config.health.key_files.action == KeyFilesAction::Cleanup,
        };
        let Some(slot) = self.slots.get_mut(&msg.name) else { return };
        if slot.session.generation != msg.generation {
            return;
        }
        let plan = slot.session.on_health(msg.last_heartbeat_ms, msg.browser_pss_bytes, msg.key_files, limits);
        let record = &slot.session.record;
        if let Some((pss, max)) = plan.recycle {
            tracing::warn!(session = %msg.name, event = "session.health", browser_pss_bytes = pss, max, "browser memory over the limit; recycling it");
            let detail = serde_json::json!({"browser_pss_bytes": pss, "max": max});
            self.reporter.event(record, EventName::SessionHealth, Some("memory".into()), detail);
            return self.end_session(&msg.name, EndReason::HealthCheckFailed, ctx);
        }
        if let Some((count, max)) = plan.key_files_back {
            tracing::info!(session = %msg.name, event = "session.health", key_files = count, max, "key files back within the threshold");
            let detail = serde_json::json!({"key_files": count, "max": max, "over": false});
            self.reporter.event(record, EventName::SessionHealth, Some("key_files".into()), detail);
        }
        if let Some((count, max)) = plan.key_files_crossed {
            let detail = serde_json::json!({"key_files": count, "max": max, "over": true});
            tracing::warn!(session = %msg.name, event = "session.health", key_files = count, max, "key files over the threshold");
            self.reporter.event(record, EventName::SessionHealth, Some("key_files".into()), detail.clone());
            let message = format!("session {} has {count} key files (threshold {max})", msg.name);
            self.reporter.alert(record, EventName::SessionHealth, message, detail);
        }
        if msg.key_files.is_some() {
            self.objectives(&msg.name);
        }
        if plan.purge {
            let stopping = self.stop_actor(&msg.name, ctx);
            let name = msg.name.clone();
            ctx.spawn(stopping.into_actor(self).map(move |_, act, ctx| act.relink(&name, "key_files_cleanup", ctx)));
        }
    }
}
