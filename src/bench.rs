//! `wasup bench`: measures the figures issue targets are stated in and
//! prints them as a table. Everything is real: the simulator and the daemon
//! run as child processes, sessions drive real Chromium.
//!
//! | figure | how |
//! |---|---|
//! | reconnect | daemon spawned → session `CONNECTED` on a saved profile, `--reconnects` times |
//! | send latency | `POST …/messages` until it answers with the server's ack (the sim has the message) |
//! | daemon RSS | `VmRSS` of the daemon process only (chromedriver and browsers are other processes) |
//! | browser PSS | PSS of each session's Chromium process tree (`/proc/<pid>/smaps_rollup`) |

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;

use crate::launch::{scan, start_sim, DaemonSetup, TempDir};
use crate::procfs;

/// Options of `wasup bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Daemon restarts to time for the reconnect figure.
    #[arg(long, default_value_t = 5)]
    pub reconnects: u32,
    /// Texts to send for the latency figure.
    #[arg(long, default_value_t = 200)]
    pub sends: u32,
    /// Sessions for the memory-per-session figures.
    #[arg(long, default_value_t = 10)]
    pub sessions: u32,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Runs the benchmark and prints the table. Errors: a child could not start
/// or a step did not happen in time.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the wasup binary")?;
    let dir = TempDir::new("wasup-bench")?;
    let (_sim, sim_base) = start_sim(&exe, &[], false)?;
    let setup = DaemonSetup::new(&dir.0, &sim_base, "[restart]\nboot_stagger = \"0s\"\n")?;
    let api = &setup.api;
    let mut rows: Vec<(String, String, String)> = Vec::new();
    let quiet = |_: &str| {};

    // Daemon memory with no session.
    let mut daemon = setup.start(&exe, false)?;
    std::thread::sleep(Duration::from_secs(1));
    let rss0 = daemon.pid().and_then(procfs::rss_bytes).unwrap_or(0);

    // Pair one session.
    api.call("POST", "/api/sessions", Some(json!({"name": "bench"})))?;
    api.wait_state("bench", "SCAN_QR", Duration::from_secs(90), quiet)?;
    let qr = api.call("GET", "/api/sessions/bench/qr?format=raw", None)?;
    let device = scan(&sim_base, qr["qr"].as_str().unwrap_or_default(), "4915112345678", "bench")?;
    api.wait_state("bench", "CONNECTED", Duration::from_secs(60), quiet)?;

    // Reconnect with a saved profile: daemon start → CONNECTED.
    let mut reconnects = Vec::new();
    for _ in 0..args.reconnects {
        daemon.terminate();
        let started = Instant::now();
        daemon = setup.start(&exe, false)?;
        api.wait_state("bench", "CONNECTED", Duration::from_secs(60), quiet)?;
        reconnects.push(started.elapsed());
    }
    reconnects.sort();
    rows.push((
        "reconnect, saved profile (daemon start → CONNECTED)".into(),
        format!("median {} (min {}, max {}, n={})", ms(percentile(&reconnects, 50.0)), ms(reconnects[0]), ms(*reconnects.last().unwrap_or(&Duration::ZERO)), reconnects.len()),
        "≤ 3 s".into(),
    ));

    // Send latency: API call → answered with the server's ack.
    let mut sends = Vec::new();
    for i in 0..args.sends {
        let started = Instant::now();
        let sent = api.call("POST", "/api/sessions/bench/messages", Some(json!({"to": "+4915123456789", "text": format!("bench {i}")})))?;
        let took = started.elapsed();
        anyhow::ensure!(sent["ack"] != "PENDING", "send {i} was not acked");
        sends.push(took);
    }
    let received: serde_json::Value = ureq::get(&format!("{sim_base}/_phone/devices/{device}/messages")).call()?.into_json()?;
    anyhow::ensure!(received.as_array().map_or(0, Vec::len) == args.sends as usize, "the sim did not receive every send");
    sends.sort();
    rows.push((
        "send latency (API call → sim acked)".into(),
        format!("p50 {}, p99 {} (n={})", ms(percentile(&sends, 50.0)), ms(percentile(&sends, 99.0)), sends.len()),
        "p50 ≤ 50 ms".into(),
    ));

    // Memory with N sessions (one paired, the rest showing a QR).
    for i in 1..args.sessions {
        api.call("POST", "/api/sessions", Some(json!({"name": format!("bench-{i}")})))?;
    }
    for i in 1..args.sessions {
        api.wait_state(&format!("bench-{i}"), "SCAN_QR", Duration::from_secs(180), quiet)?;
    }
    std::thread::sleep(Duration::from_secs(2));
    let rss_n = daemon.pid().and_then(procfs::rss_bytes).unwrap_or(0);
    let mut pss: Vec<u64> = (0..args.sessions)
        .filter_map(|i| {
            let name = if i == 0 { "bench".to_string() } else { format!("bench-{i}") };
            procfs::browser_pss_bytes(&crate::profile::path(&setup.state_dir, &name))
        })
        .collect();
    pss.sort();
    rows.push(("daemon RSS, 0 sessions (browsers excluded)".into(), mib(rss0), "≤ 30 MiB".into()));
    rows.push((
        format!("daemon RSS, {} sessions (browsers excluded)", args.sessions),
        format!("{} ({} per session)", mib(rss_n), mib(rss_n.saturating_sub(rss0) / u64::from(args.sessions.max(1)))),
        format!("≤ {} MiB", 30 + args.sessions),
    ));
    if !pss.is_empty() {
        rows.push((
            "browser PSS per session".into(),
            format!("median {}, max {} (n={})", mib(pss[pss.len() / 2]), mib(*pss.last().unwrap_or(&0)), pss.len()),
            "(simulator page)".into(),
        ));
    }
    daemon.terminate();

    let w0 = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(0);
    println!("| {:<w0$} | {:<w1$} | target |", "figure", "measured");
    println!("|{}|{}|--------|", "-".repeat(w0 + 2), "-".repeat(w1 + 2));
    for (a, b, c) in rows {
        println!("| {a:<w0$} | {b:<w1$} | {c} |");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v[..1], 99.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }
}
