//! The Notifier actor: hands alerts to the webhooks and Telegram.
//!
//! The Supervisor sends [`Alert`]s with `do_send` and never waits.
//! - `[[alerts.webhooks]]` are subscriptions to alerts: the alert's JSON
//!   goes to the webhook outbox ([`crate::webhooks`]), which stores it and
//!   delivers it signed (`X-Wasup-Signature: sha256=<hex HMAC-SHA256 of the
//!   body, keyed with the hook's secret>`), at least once, across restarts,
//!   with the `[webhook_delivery]` retries and dead letters.
//! - Telegram gets the Bot API's `sendMessage`, from memory: on the
//!   blocking pool with retries (doubling delays from `alerts.retry_base`,
//!   `alerts.attempts` tries); a restart loses what was not yet sent.
//!
//! A slow or dead receiver never holds up supervision. Neither the secrets
//! nor the bot token ever reach the log.

use std::time::Duration;

use actix::prelude::*;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use crate::config::AlertsConfig;

/// Something an operator must hear about.
#[derive(Message, Debug, Clone, Serialize)]
#[rtype(result = "()")]
pub struct Alert {
    /// Dotted event name: `session.status`, `session.health` or
    /// `session.objective`.
    pub event: crate::events::EventName,
    pub session: String,
    /// Upper-case session state, when the alert is a state change.
    pub state: Option<String>,
    pub reason: Option<String>,
    /// One human-readable line.
    pub message: String,
    /// Unix epoch ms.
    pub at_ms: u64,
    /// Event-specific fields (e.g. `{"key_files": 130, "max": 100}`).
    pub detail: serde_json::Value,
}

/// The webhook signature header's value for `body`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The Notifier. See the module docs.
pub struct Notifier {
    config: AlertsConfig,
    webhooks: crate::webhooks::Webhooks,
}

impl Notifier {
    /// Telegram per `config.telegram`; the alert webhooks through `webhooks`.
    pub fn new(config: AlertsConfig, webhooks: crate::webhooks::Webhooks) -> Self {
        Self { config, webhooks }
    }
}

impl Actor for Notifier {
    type Context = Context<Self>;
}

/// One destination's request, ready to send again on retry.
#[derive(Clone)]
struct Delivery {
    /// For the log: "telegram"; never the URL (it holds the token).
    name: String,
    url: String,
    body: Vec<u8>,
}

fn post(delivery: &Delivery) -> Result<(), String> {
    let req = ureq::post(&delivery.url).timeout(Duration::from_secs(10)).set("Content-Type", "application/json");
    match req.send_bytes(&delivery.body) {
        Ok(_) => Ok(()),
        Err(ureq::Error::Status(code, _)) => Err(format!("HTTP {code}")),
        Err(ureq::Error::Transport(t)) => Err(format!("{}", t.kind())),
    }
}

impl Handler<Alert> for Notifier {
    type Result = ();

    fn handle(&mut self, alert: Alert, ctx: &mut Self::Context) {
        match serde_json::to_string(&alert) {
            Ok(body) => self.webhooks.alert(alert.event, body),
            // An Alert is plain data; this cannot happen.
            Err(e) => tracing::error!(error = %e, "cannot encode alert"),
        }
        let mut deliveries = Vec::new();
        if let Some(tg) = &self.config.telegram {
            let text = format!("wasup: {} — {}", alert.session, alert.message);
            deliveries.push(Delivery {
                name: "telegram".into(),
                url: format!("{}/bot{}/sendMessage", tg.api_base.trim_end_matches('/'), tg.bot_token),
                body: serde_json::json!({"chat_id": tg.chat_id, "text": text}).to_string().into_bytes(),
            });
        }
        let attempts = self.config.attempts.max(1);
        let base = self.config.retry_base;
        for delivery in deliveries {
            let session = alert.session.clone();
            ctx.spawn(
                async move {
                    for attempt in 0..attempts {
                        let d = delivery.clone();
                        let result = tokio::task::spawn_blocking(move || post(&d))
                            .await
                            .unwrap_or_else(|e| Err(format!("delivery task failed: {e}")));
                        match result {
                            Ok(()) => {
                                tracing::info!(session = %session, to = %delivery.name, "alert delivered");
                                return;
                            }
                            Err(e) if attempt + 1 < attempts => {
                                let delay = base.saturating_mul(1 << attempt.min(16));
                                tracing::warn!(session = %session, to = %delivery.name, error = %e, retry_in_ms = delay.as_millis() as u64, "alert delivery failed");
                                tokio::time::sleep(delay).await;
                            }
                            Err(e) => {
                                tracing::error!(session = %session, to = %delivery.name, error = %e, attempts, "alert not delivered; giving up");
                            }
                        }
                    }
                }
                .into_actor(self),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn signature_is_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        let sig = super::signature("Jefe", b"what do ya want for nothing?");
        assert_eq!(sig, "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }
}
