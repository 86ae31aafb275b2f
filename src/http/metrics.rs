//! `GET /metrics`: Prometheus text format (version 0.0.4), behind the
//! bearer token unless `http.metrics_public`. Every figure comes from
//! counters kept up to date (O(sessions + campaigns) a scrape; never a scan
//! of history or recipients).
//! - `wasup_sessions{state}`: sessions by state, every state listed.
//! - Per session: `wasup_session_state{session,state}` (1 for the current
//!   state), `wasup_session_restarts{session,window}` and
//!   `wasup_session_reconnects{session,window}` (`window` is `total` or
//!   `24h`; `total` counts the kept history), `wasup_session_key_files`,
//!   `wasup_session_browser_pss_bytes`. `reconnects` counts entries into
//!   `RECONNECTING` (a network flap the page heals included); `restarts`,
//!   like the `reconnects_24h` objective, counts browser restarts.
//! - Objectives per session (`[objectives]`, see
//!   [`crate::policy::objectives`]): `wasup_session_uptime_ratio{session,
//!   window}` (`24h`, `7d`; absent while unknown),
//!   `wasup_session_recovery_seconds{session,stat}` (`last`, `p95_7d`),
//!   `wasup_session_objective_met{session,objective}` (1 within target, 0
//!   not; absent while unknown) and `wasup_objective_target{objective}`.
//! - `wasup_messages_total{result}`: API and campaign sends.
//! - `wasup_events_total{event}`: this node's events.
//! - Cluster mode only: `wasup_events_relay_total{result}`: `sent` (this
//!   node's events to the other nodes), `trimmed` (of those, cut to fit
//!   `NOTIFY`), `dropped` (not sent: queue full or no connection),
//!   `received` (other nodes' events put on this node's streams).
//! - `wasup_campaign_recipients{campaign,session,state}`: progress.
//! - `wasup_http_requests_total{route,status}`: `route` is the matched
//!   pattern (`/api/sessions/{name}`), so names do not blow up the label set.
//! - `wasup_webhook_deliveries_pending`, `wasup_webhook_dead_letters`
//!   (gauges) and `wasup_webhook_deliveries_total{result}` (`delivered`,
//!   `failed_attempt`, `dead_lettered`, `dropped`).
//!
//! Cluster mode: every sample carries `node="<cluster.node>"`; the session
//! and campaign figures cover the sessions this node runs (holds the lease
//! of), so summing over nodes counts each once (a session no node runs is
//! in none); and two more gauges: `wasup_cluster_leases` (sessions this
//! node holds) and `wasup_cluster_fenced` (1 while its last lease renewal
//! is `lease_ttl / 2` old or more, or none succeeded yet: it runs nothing
//! then).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpResponse};

use super::AppState;
use crate::actors::supervisor::ListSessions;
use crate::campaign::RecipientState;
use crate::session_state::SessionState;

/// Requests served, by route pattern and status.
#[derive(Clone, Default)]
pub struct RequestCounts(Arc<Mutex<BTreeMap<(String, u16), u64>>>);

/// Middleware for the whole app: counts every request.
pub async fn count_requests(req: ServiceRequest, next: Next<impl MessageBody>) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let counts = req.app_data::<web::Data<RequestCounts>>().cloned();
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let res = next.call(req).await?;
    if let Some(counts) = counts {
        if let Ok(mut c) = counts.0.lock() {
            *c.entry((route, res.status().as_u16())).or_default() += 1;
        }
    }
    Ok(res)
}

const STATES: [SessionState; 9] = [
    SessionState::Stopped,
    SessionState::Starting,
    SessionState::ScanQr,
    SessionState::Connected,
    SessionState::Reconnecting,
    SessionState::LoggedOut,
    SessionState::Conflict,
    SessionState::Blocked,
    SessionState::Failed,
];

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The objectives' families (see the module docs).
fn objectives(out: &mut String, sessions: &[crate::actors::supervisor::SessionView], targets: &crate::policy::objectives::Targets) {
    header(out, "wasup_session_uptime_ratio", "gauge", "Time CONNECTED over time the session was meant to run, by window.");
    for v in sessions {
        for (window, ratio) in [("24h", v.objectives.uptime_24h), ("7d", v.objectives.uptime_7d)] {
            if let Some(r) = ratio.value {
                let _ = writeln!(out, "wasup_session_uptime_ratio{{session=\"{}\",window=\"{window}\"}} {r}", v.name);
            }
        }
    }
    header(
        out,
        "wasup_session_recovery_seconds",
        "gauge",
        "Time from leaving CONNECTED (not by the operator) to CONNECTED again: the outage under way or the last one, and the 7-day p95.",
    );
    for v in sessions {
        for (stat, count) in [("last", v.objectives.recovery_last_ms), ("p95_7d", v.objectives.recovery_p95_7d_ms)] {
            if let Some(ms) = count.value {
                let _ = writeln!(out, "wasup_session_recovery_seconds{{session=\"{}\",stat=\"{stat}\"}} {}", v.name, ms as f64 / 1000.0);
            }
        }
    }
    header(out, "wasup_session_objective_met", "gauge", "1 if the session's objective is within its target, 0 if not.");
    for v in sessions {
        let o = &v.objectives;
        let met = [
            ("uptime_24h", o.uptime_24h.met),
            ("uptime_7d", o.uptime_7d.met),
            ("reconnects_24h", o.reconnects_24h.met),
            ("recovery_last_ms", o.recovery_last_ms.met),
            ("recovery_p95_7d_ms", o.recovery_p95_7d_ms.met),
            ("key_files", o.key_files.met),
        ];
        for (objective, met) in met {
            if let Some(met) = met {
                let _ = writeln!(out, "wasup_session_objective_met{{session=\"{}\",objective=\"{objective}\"}} {}", v.name, u8::from(met));
            }
        }
    }
    header(
        out,
        "wasup_objective_target",
        "gauge",
        "The [objectives] targets: uptime ratio, reconnects per day, recovery seconds, key files.",
    );
    for (objective, target) in [
        ("uptime", targets.uptime),
        ("reconnects_per_day", targets.reconnects_per_day as f64),
        ("recovery", targets.recovery_ms as f64 / 1000.0),
        ("key_files", targets.key_files as f64),
    ] {
        let _ = writeln!(out, "wasup_objective_target{{objective=\"{objective}\"}} {target}");
    }
}

/// Prometheus metrics
///
/// Prometheus text format, version 0.0.4. Needs the bearer token unless
/// `http.metrics_public = true`.
#[utoipa::path(
    get,
    operation_id = "metrics",
    path = "/metrics",
    tag = "daemon",
    responses((status = 200, description = "The metrics", body = String, content_type = "text/plain; version=0.0.4")),
)]
pub async fn metrics(req: actix_web::HttpRequest, state: web::Data<AppState>, requests: web::Data<RequestCounts>) -> HttpResponse {
    if !state.config.http.metrics_public {
        if let Err(denied) = super::auth::check(&req) {
            return actix_web::ResponseError::error_response(&denied);
        }
    }
    let mut sessions = state.supervisor.send(ListSessions).await.unwrap_or_default();
    let fences = state.store.fences().cloned();
    // Cluster mode: only what this node runs (another node reports the rest).
    let runs_here = |session: &str| fences.as_ref().is_none_or(|f| f.generation(session).is_some());
    sessions.retain(|v| runs_here(&v.name));
    let mut out = String::new();

    header(&mut out, "wasup_sessions", "gauge", "Sessions by state.");
    for s in STATES {
        let n = sessions.iter().filter(|v| v.state == s).count();
        let _ = writeln!(out, "wasup_sessions{{state=\"{s}\"}} {n}");
    }
    header(&mut out, "wasup_session_state", "gauge", "1 for each session's current state.");
    for v in &sessions {
        let _ = writeln!(out, "wasup_session_state{{session=\"{}\",state=\"{}\"}} 1", v.name, v.state);
    }
    header(
        &mut out,
        "wasup_session_restarts",
        "gauge",
        "Restarts scheduled, in the kept history plus since the daemon started (total) and the last 24 h.",
    );
    let mut reconnects = String::new();
    for v in &sessions {
        let t = state.events.session_tally(&v.name);
        let _ = writeln!(out, "wasup_session_restarts{{session=\"{}\",window=\"total\"}} {}", v.name, t.restarts_total);
        let _ = writeln!(out, "wasup_session_restarts{{session=\"{}\",window=\"24h\"}} {}", v.name, t.restarts_24h());
        let _ = writeln!(reconnects, "wasup_session_reconnects{{session=\"{}\",window=\"total\"}} {}", v.name, t.reconnects_total);
        let _ = writeln!(reconnects, "wasup_session_reconnects{{session=\"{}\",window=\"24h\"}} {}", v.name, t.reconnects_24h());
    }
    header(
        &mut out,
        "wasup_session_reconnects",
        "gauge",
        "Times the session went RECONNECTING, in the kept history (total) and the last 24 h.",
    );
    out.push_str(&reconnects);
    header(&mut out, "wasup_session_key_files", "gauge", "Files under the session's key store at the last count.");
    for v in &sessions {
        if let Some(n) = v.key_files {
            let _ = writeln!(out, "wasup_session_key_files{{session=\"{}\"}} {n}", v.name);
        }
    }
    header(&mut out, "wasup_session_browser_pss_bytes", "gauge", "PSS of the session's browser process tree at the last reading.");
    for v in &sessions {
        if let Some(n) = v.browser_pss_bytes {
            let _ = writeln!(out, "wasup_session_browser_pss_bytes{{session=\"{}\"}} {n}", v.name);
        }
    }
    objectives(&mut out, &sessions, &state.config.objectives.targets());
    let events = state.events.counts();
    header(&mut out, "wasup_messages_total", "counter", "Messages by result (API and campaign sends) since the daemon started.");
    for (result, event) in [("sent", crate::events::EventName::MessageSent), ("failed", crate::events::EventName::MessageFailed)] {
        let _ = writeln!(out, "wasup_messages_total{{result=\"{result}\"}} {}", events.get(event.as_str()).copied().unwrap_or(0));
    }
    header(&mut out, "wasup_events_total", "counter", "Events published since the daemon started.");
    for (event, n) in &events {
        let _ = writeln!(out, "wasup_events_total{{event=\"{event}\"}} {n}");
    }
    if state.events.node().is_some() {
        use std::sync::atomic::Ordering::Relaxed;
        let r = state.events.relay_counts();
        header(&mut out, "wasup_events_relay_total", "counter", "Cluster event relay (LISTEN/NOTIFY) since the daemon started, by result.");
        for (result, n) in [("sent", &r.sent), ("trimmed", &r.trimmed), ("dropped", &r.dropped), ("received", &r.received)] {
            let _ = writeln!(out, "wasup_events_relay_total{{result=\"{result}\"}} {}", n.load(Relaxed));
        }
    }
    header(&mut out, "wasup_campaign_recipients", "gauge", "Recipients of each campaign that has not ended, by state.");
    for c in state.store.campaigns().unwrap_or_default().into_iter().filter(|c| !c.state.is_final() && runs_here(&c.session)) {
        let Ok(counts) = state.tally.get(&state.store, &c.id) else { continue };
        for s in RecipientState::ALL {
            let n = counts[s.index()];
            let _ =
                writeln!(out, "wasup_campaign_recipients{{campaign=\"{}\",session=\"{}\",state=\"{}\"}} {n}", c.id, c.session, s.as_str());
        }
    }
    {
        use std::sync::atomic::Ordering::Relaxed;
        let w = state.webhooks.stats();
        header(&mut out, "wasup_webhook_deliveries_pending", "gauge", "Webhook deliveries waiting in the outbox.");
        let _ = writeln!(out, "wasup_webhook_deliveries_pending {}", w.pending.load(Relaxed));
        header(&mut out, "wasup_webhook_dead_letters", "gauge", "Webhook deliveries given up on, kept for replay.");
        let _ = writeln!(out, "wasup_webhook_dead_letters {}", w.dead_letters.load(Relaxed));
        header(&mut out, "wasup_webhook_deliveries_total", "counter", "Webhook delivery outcomes since the daemon started.");
        for (result, n) in [
            ("delivered", &w.delivered),
            ("failed_attempt", &w.failed_attempts),
            ("dead_lettered", &w.dead_lettered),
            ("dropped", &w.dropped),
        ] {
            let _ = writeln!(out, "wasup_webhook_deliveries_total{{result=\"{result}\"}} {}", n.load(Relaxed));
        }
    }
    header(&mut out, "wasup_http_requests_total", "counter", "HTTP requests by route pattern and status.");
    if let Ok(counts) = requests.0.lock() {
        for ((route, status), n) in counts.iter() {
            let route = route.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(out, "wasup_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
        }
    }
    if let (Some(fences), Some(cluster)) = (&fences, &state.cluster) {
        header(&mut out, "wasup_cluster_leases", "gauge", "Sessions whose lease this node holds.");
        let _ = writeln!(out, "wasup_cluster_leases {}", fences.held().len());
        header(
            &mut out,
            "wasup_cluster_fenced",
            "gauge",
            "1 while this node's last lease renewal is lease_ttl/2 old or more (or none succeeded yet): it runs no session then.",
        );
        let _ = writeln!(out, "wasup_cluster_fenced {}", u8::from(!fences.fresh()));
        out = with_label(&out, "node", &cluster.node);
    }
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(out)
}

/// `text` (Prometheus text format) with `name="value"` first in every
/// sample's labels (`value` is escaped; comment lines are kept as they are).
fn with_label(text: &str, name: &str, value: &str) -> String {
    let value = value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for line in text.lines() {
        // The metric name ends at the first character a name cannot have:
        // `{` opens its labels, a space ends a sample without labels.
        let end = line.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).unwrap_or(line.len());
        let (metric, rest) = line.split_at(end);
        match rest.chars().next() {
            _ if line.starts_with('#') || metric.is_empty() => out.push_str(line),
            Some('{') if rest.starts_with("{}") => {
                let _ = write!(out, "{metric}{{{name}=\"{value}\"}}{}", &rest[2..]);
            }
            Some('{') => {
                let _ = write!(out, "{metric}{{{name}=\"{value}\",{}", &rest[1..]);
            }
            _ => {
                let _ = write!(out, "{metric}{{{name}=\"{value}\"}}{rest}");
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_gets_the_label_and_comments_stay() {
        let text = "# HELP wasup_x A {thing}.\n# TYPE wasup_x gauge\nwasup_x 3\nwasup_y{route=\"/api/sessions/{name}\",status=\"200\"} 1\nwasup_z{} 2\n";
        let labelled = with_label(text, "node", "node-a");
        assert_eq!(
            labelled,
            "# HELP wasup_x A {thing}.\n# TYPE wasup_x gauge\nwasup_x{node=\"node-a\"} 3\n\
             wasup_y{node=\"node-a\",route=\"/api/sessions/{name}\",status=\"200\"} 1\nwasup_z{node=\"node-a\"} 2\n"
        );
        assert!(with_label("wasup_x 1\n", "node", "a\"b").contains("node=\"a\\\"b\""));
    }
}
