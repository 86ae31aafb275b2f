//! systemd's notify protocol (`Type=notify`): `READY=1` once the API
//! listens and the stored sessions are restored, `STATUS=` with session
//! counts, `WATCHDOG=1` only after a real round trip through the Supervisor
//! (a wedged actor system stops the pings and systemd restarts the
//! service), `STOPPING=1` on shutdown. Outside systemd (`NOTIFY_SOCKET`
//! unset) every call does nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use actix::Addr;
use sd_notify::NotifyState;

use crate::actors::supervisor::{ListSessions, SessionView, Supervisor};

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// `"2 sessions: 1 CONNECTED, 1 SCAN_QR"`.
pub fn status_line(sessions: &[SessionView]) -> String {
    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    for s in sessions {
        *by_state.entry(s.state.as_str()).or_default() += 1;
    }
    let parts: Vec<String> = by_state.iter().map(|(s, n)| format!("{n} {s}")).collect();
    match sessions.len() {
        0 => "no sessions".into(),
        1 => format!("1 session: {}", parts.join(", ")),
        n => format!("{n} sessions: {}", parts.join(", ")),
    }
}

/// Tells systemd the daemon is ready (after a round trip to the Supervisor,
/// which has restored the stored sessions when it answers).
pub async fn ready(supervisor: &Addr<Supervisor>) {
    let sessions = supervisor.send(ListSessions).await.unwrap_or_default();
    let status = status_line(&sessions);
    tracing::info!(event = "daemon.ready", status = %status, "ready");
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// Pings the watchdog at half of `WATCHDOG_USEC`, each ping only after the
/// Supervisor answered within that half; updates `STATUS=` on the way.
/// Returns at once when no watchdog is configured.
pub async fn watchdog(supervisor: Addr<Supervisor>) {
    let Some(usec) = watchdog_usec() else { return };
    let every = Duration::from_micros(usec / 2).max(Duration::from_millis(10));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match tokio::time::timeout(every, supervisor.send(ListSessions)).await {
            Ok(Ok(sessions)) => send(&[NotifyState::Watchdog, NotifyState::Status(&status_line(&sessions))]),
            _ => tracing::error!(event = "daemon.watchdog", "the supervisor did not answer; no watchdog ping"),
        }
    }
}

/// The watchdog interval, as `sd_watchdog_enabled(3)` reads it:
/// `WATCHDOG_USEC` set, and `WATCHDOG_PID` either unset or this process.
fn watchdog_usec() -> Option<u64> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok().filter(|u| *u > 0)?;
    match std::env::var("WATCHDOG_PID") {
        Ok(pid) if pid.parse::<u32>().ok() != Some(std::process::id()) => None,
        _ => Some(usec),
    }
}

/// Tells systemd the daemon is stopping.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}
