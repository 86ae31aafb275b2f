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

/// What a watchdog ping must prove: the Supervisor answers, the API's own
/// listener answers `/health`, and the store has not been failing for
/// longer than `failing_limit`.
pub struct Probe {
    pub supervisor: Addr<Supervisor>,
    /// The API's address (`http.listen`).
    pub listen: std::net::SocketAddr,
    pub store: crate::store::Store,
    /// `state.failing_limit`.
    pub failing_limit: Duration,
}

impl Probe {
    /// `Ok(status line)` when all three hold; else what failed.
    pub async fn check(&self, within: Duration) -> Result<String, String> {
        let sessions = match tokio::time::timeout(within, self.supervisor.send(ListSessions)).await {
            Ok(Ok(s)) => s,
            _ => return Err("the supervisor did not answer".into()),
        };
        match tokio::time::timeout(within, http_health(self.listen)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("the API did not answer /health: {e}")),
            Err(_) => return Err(format!("the API did not answer /health within {within:?}")),
        }
        if let Some(f) = self.store.failure() {
            let failing_for = Duration::from_millis(crate::session_state::now_ms().saturating_sub(f.since_ms));
            if failing_for > self.failing_limit {
                return Err(format!("store writes have failed for {}s: {}", failing_for.as_secs(), f.error));
            }
        }
        Ok(status_line(&sessions))
    }
}

/// One `GET /health` on the API's own listener: any complete HTTP answer
/// (200, or 503 while degraded) proves a worker serves requests.
async fn http_health(listen: std::net::SocketAddr) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = match listen.ip() {
        ip if ip.is_unspecified() && listen.is_ipv4() => std::net::SocketAddr::from(([127, 0, 0, 1], listen.port())),
        ip if ip.is_unspecified() => std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, listen.port())),
        _ => listen,
    };
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: wasup\r\nConnection: close\r\n\r\n").await?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await?;
    if head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.1 503") {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("unexpected answer {:?}", String::from_utf8_lossy(&head))))
    }
}

/// Pings the watchdog at half of `WATCHDOG_USEC`, each ping only after the
/// [`Probe`] passed within that half; updates `STATUS=` on the way.
/// Returns at once when no watchdog is configured.
pub async fn watchdog(probe: Probe) {
    let Some(usec) = watchdog_usec() else { return };
    let every = Duration::from_micros(usec / 2).max(Duration::from_millis(10));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match probe.check(every).await {
            Ok(status) => send(&[NotifyState::Watchdog, NotifyState::Status(&status)]),
            Err(why) => tracing::error!(event = "daemon.watchdog", reason = %why, "no watchdog ping: {why}"),
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
