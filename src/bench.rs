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
//! | detection latency | sim fault (network drop, phone logout) → the status change's `at_ms` in the history |
//! | recovery | Chromium SIGKILL → `CONNECTED` in the history, minus the scheduled backoff delay |
//! | daemon CPU | CPU time of the daemon process over 30 s with every session connected and idle |
//! | campaign throughput | a `--campaign-size` campaign with zero delay: messages per second, and the daemon's own CPU time per send (what it spends beyond waiting for WebDriver) |
//! | pacing error | a 50-recipient campaign with 100–200 ms gaps: how late each send started after its scheduled time (the daemon's debug log), p50 / p99 |
//! | store size | growth of the sled directory for the `--campaign-size` campaign, per 1,000 recipients |
//! | `/health` under hostile load | `/health` every 50 ms for `--hostile-window` while five clients loop: a nested-loop template, a 100 MB repeat, a 99,000-row invalid-number CSV that is stored (`invalid_numbers: fail`), and `/metrics` twice; p50 / p99, then the daemon's RSS; once with no session, once with every session connected |

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{json, Value};

use crate::launch::{wait_until, Api, Body, DaemonSetup, Log, Sim, TempDir};
use crate::procfs;
use crate::session_state::now_ms;

/// Options of `wasup bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Daemon restarts to time for the reconnect figure.
    #[arg(long, default_value_t = 5)]
    pub reconnects: u32,
    /// Texts to send for the latency figure.
    #[arg(long, default_value_t = 200)]
    pub sends: u32,
    /// Sessions for the memory-per-session and idle-CPU figures.
    #[arg(long, default_value_t = 10)]
    pub sessions: u32,
    /// Runs of each fault for the detection and recovery figures.
    #[arg(long, default_value_t = 5)]
    pub faults: u32,
    /// Recipients of the zero-delay campaign.
    #[arg(long, default_value_t = 1000)]
    pub campaign_size: u32,
    /// How long the idle CPU is measured.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub cpu_window: Duration,
    /// How long the hostile clients run for each `/health` figure.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub hostile_window: Duration,
    /// Run side by side against another client instead (`whatsapp-web.js`):
    /// see [`crate::bench_versus`].
    #[arg(long)]
    pub versus: Option<String>,
    /// With `--versus`: texts each system sends during each fault run.
    #[arg(long, default_value_t = 10)]
    pub versus_sends: u32,
    /// With `--versus`: the directory of `harness.js` and its `node_modules`.
    #[arg(long, default_value = "tests/wwebjs")]
    pub wwebjs_dir: std::path::PathBuf,
}

/// The hostile figures of one run: `/health` latencies (sorted), the
/// statuses the hostile clients got, and the daemon's RSS after, bytes.
struct Hostile {
    health: Vec<Duration>,
    statuses: Vec<u16>,
    rss_after: u64,
}

/// Runs five hostile clients against `api` for `window` (three campaign
/// creations in a loop: a nested loop of 10^8 iterations, a 100 MB string
/// repeat, a 99,000-row CSV of invalid numbers kept as FAILED recipients;
/// and two `/metrics` pollers) while `/health` is asked every 50 ms.
/// Errors: `/health` did not answer 200 within 5 s.
fn hostile_load(api: &Api, session: &str, window: Duration, pid: u32) -> anyhow::Result<Hostile> {
    let csv: String = std::iter::once("phone\n".to_string()).chain((0..99_000).map(|i| format!("x{i}\n"))).collect();
    let bodies = [
        json!({"name": "hostile", "session": session, "template": "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}", "recipients": [{"phone": "+4915112345678"}]}),
        json!({"name": "hostile", "session": session, "template": "{{ 'x' * 100000000 }}", "recipients": [{"phone": "+4915112345678"}, {"phone": "+4915112345679"}, {"phone": "+4915112345670"}]}),
        json!({"name": "hostile", "session": session, "template": "Hi", "csv": csv, "invalid_numbers": "fail", "start": false}),
    ];
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hostile = api.clone().with_timeout(Duration::from_secs(120));
    let client = |body: Option<Value>| {
        let (stop, hostile) = (stop.clone(), hostile.clone());
        let (path, method) = match body {
            Some(_) => ("/api/campaigns", "POST"),
            None => ("/metrics", "GET"),
        };
        std::thread::spawn(move || {
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                statuses.push(hostile.send(method, path, Body::json(body.as_ref())).map_or(0, |r| r.status));
            }
            statuses
        })
    };
    let mut clients: Vec<_> = bodies.into_iter().map(|b| client(Some(b))).collect();
    clients.extend([client(None), client(None)]);
    let mut health = Vec::new();
    let probe = Api::new(api.base.clone(), String::new()).unpooled().with_timeout(Duration::from_secs(5));
    let until = Instant::now() + window;
    let mut failure = None;
    while Instant::now() < until {
        let started = Instant::now();
        match probe.send("GET", "/health", Body::Empty) {
            Ok(r) if r.status == 200 => health.push(started.elapsed()),
            other => {
                failure = Some(format!("/health under hostile load: {:?}", other.map(|r| r.status)));
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let statuses: Vec<u16> = clients.into_iter().flat_map(|c| c.join().unwrap_or_default()).collect();
    if let Some(f) = failure {
        anyhow::bail!(f);
    }
    health.sort();
    Ok(Hostile { health, statuses, rss_after: procfs::rss_bytes(pid).unwrap_or(0) })
}

/// The two table rows of a hostile run.
fn hostile_rows(rows: &mut Vec<(String, String, String)>, h: &Hostile, sessions: &str) {
    let created = h.statuses.iter().filter(|s| **s == 201).count();
    let refused = h.statuses.iter().filter(|s| **s == 400).count();
    let server_errors = h.statuses.iter().filter(|s| **s == 0 || **s >= 500).count();
    rows.push((
        format!("/health under hostile load, {sessions}"),
        format!(
            "p50 {}, p99 {}, max {} (n={}; hostile: {created} stored, {refused} refused, {server_errors} 5xx or dropped)",
            ms(percentile(&h.health, 50.0)),
            ms(percentile(&h.health, 99.0)),
            ms(*h.health.last().unwrap_or(&Duration::ZERO)),
            h.health.len()
        ),
        "p99 ≤ 50 ms".into(),
    ));
    rows.push((format!("daemon RSS after the hostile load, {sessions}"), mib(h.rss_after), "—".into()));
}

/// The session's history entries.
fn history(api: &Api, name: &str) -> anyhow::Result<Vec<Value>> {
    let h = api.call("GET", &format!("/api/sessions/{name}/history"), None)?;
    Ok(h.as_array().cloned().unwrap_or_default())
}

/// Waits for the first history entry at or after `t0_ms` that `pred`
/// accepts; returns its `at_ms`.
fn wait_entry(api: &Api, name: &str, t0_ms: u64, what: &str, pred: impl Fn(&Value) -> bool) -> anyhow::Result<(u64, Value)> {
    wait_until(what, Duration::from_secs(120), Duration::from_millis(20), || {
        let h = history(api, name).ok()?;
        h.into_iter().find(|e| e["at_ms"].as_u64().is_some_and(|t| t >= t0_ms) && pred(e)).map(|e| (e["at_ms"].as_u64().unwrap_or(0), e))
    })
}

/// Creates the campaign `body` and waits (asking every `every`, at most
/// `within`) until it is COMPLETED; returns its id. Errors: the API refused
/// it, or it did not complete in time.
fn run_campaign(api: &Api, body: Value, what: &str, within: Duration, every: Duration) -> anyhow::Result<String> {
    let c = api.call("POST", "/api/campaigns", Some(body))?;
    let id = c["id"].as_str().context("no campaign id")?.to_string();
    wait_until(what, within, every, || {
        let v = api.call("GET", &format!("/api/campaigns/{id}"), None).ok()?;
        (crate::campaign::CampaignState::of(&v["state"]) == Some(crate::campaign::CampaignState::Completed)).then_some(())
    })?;
    Ok(id)
}

/// Total size of the files under `dir`, bytes.
fn dir_size(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

fn phone(sim: &Sim, path: &str, body: Value) -> anyhow::Result<()> {
    sim.phone.call("POST", &format!("/_phone{path}"), Some(body)).with_context(|| format!("phone {path}"))?;
    Ok(())
}

fn is_status(e: &Value, state: &str) -> bool {
    e["event"] == "session.status" && e["state"] == state
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
    if let Some(versus) = &args.versus {
        return crate::bench_versus::run(&args, versus);
    }
    let exe = std::env::current_exe().context("cannot find the wasup binary")?;
    let dir = TempDir::new("wasup-bench")?;
    let sim = Sim::start(&exe, &[], Log::Discard)?;
    let setup = DaemonSetup::new(
        &dir.0,
        &sim.base,
        "[restart]\nboot_stagger = \"0s\"\nbackoff_base = \"500ms\"\nbackoff_cap = \"2s\"\nmax_restarts = 1000\n",
    )?;
    let api = &setup.api;
    let mut rows: Vec<(String, String, String)> = Vec::new();
    let quiet = |_: &str| {};

    // Hostile clients against a daemon of its own with defaults and no
    // session running (their campaigns name a session that is not started).
    let hostile0 = {
        let hostile_dir = dir.0.join("hostile");
        std::fs::create_dir_all(&hostile_dir)?;
        let setup = DaemonSetup::new(&hostile_dir, &sim.base, "")?;
        let mut daemon = setup.start(&exe, false)?;
        setup.api.call("POST", "/api/sessions", Some(json!({"name": "hostile", "start": false})))?;
        let h = hostile_load(&setup.api, "hostile", args.hostile_window, daemon.pid().context("daemon is gone")?)?;
        daemon.terminate();
        h
    };

    // Daemon memory with no session.
    let log_path = dir.0.join("daemon.log");
    let mut daemon = setup.start_logging(&exe, Log::File(log_path.clone(), "info,wasup::actors::campaign=debug"))?;
    std::thread::sleep(Duration::from_secs(1));
    let rss0 = daemon.pid().and_then(procfs::rss_bytes).unwrap_or(0);

    api.call("POST", "/api/sessions", Some(json!({"name": "bench"})))?;
    let mut device = sim.scan(&api.qr("bench", Duration::from_secs(90), quiet)?, "4915112345678", "bench")?;
    api.wait_state("bench", "CONNECTED", Duration::from_secs(60), quiet)?;

    // Reconnect with a saved profile: daemon start → CONNECTED.
    let mut reconnects = Vec::new();
    for _ in 0..args.reconnects {
        daemon.terminate();
        let started = Instant::now();
        daemon = setup.start_logging(&exe, Log::File(log_path.clone(), "info,wasup::actors::campaign=debug"))?;
        api.wait_state("bench", "CONNECTED", Duration::from_secs(60), quiet)?;
        reconnects.push(started.elapsed());
    }
    reconnects.sort();
    rows.push((
        "reconnect, saved profile (daemon start → CONNECTED)".into(),
        format!(
            "median {} (min {}, max {}, n={})",
            ms(percentile(&reconnects, 50.0)),
            ms(reconnects[0]),
            ms(*reconnects.last().unwrap_or(&Duration::ZERO)),
            reconnects.len()
        ),
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
    let received = sim.messages(&device)?;
    anyhow::ensure!(received.len() == args.sends as usize, "the sim did not receive every send");
    sends.sort();
    rows.push((
        "send latency (API call → sim acked)".into(),
        format!("p50 {}, p99 {} (n={})", ms(percentile(&sends, 50.0)), ms(percentile(&sends, 99.0)), sends.len()),
        "p50 ≤ 50 ms".into(),
    ));

    // Campaign throughput with zero delay, and the daemon's own time per send.
    let size_before = dir_size(&setup.state_dir.join("db"));
    let recipients: Vec<Value> =
        (0..args.campaign_size).map(|i| json!({"phone": format!("+49151{:08}", 10_000_000 + i), "n": i})).collect();
    let pid = daemon.pid().context("daemon is gone")?;
    let cpu0 = procfs::cpu_time(pid).unwrap_or_default();
    let started = Instant::now();
    let body = json!({
        "name": "bench", "session": "bench", "template": "bench {{ n }}", "recipients": recipients,
        "pacing": {"min_delay": "0s", "max_delay": "0s"}, "start": true,
    });
    run_campaign(api, body, "the zero-delay campaign", Duration::from_secs(1800), Duration::from_secs(1))?;
    let took = started.elapsed();
    let cpu = procfs::cpu_time(pid).unwrap_or_default().saturating_sub(cpu0);
    let n = f64::from(args.campaign_size.max(1));
    rows.push((
        format!("campaign, {} recipients, zero delay", args.campaign_size),
        format!("{:.1} messages/s ({:.1} s)", n / took.as_secs_f64(), took.as_secs_f64()),
        "—".into(),
    ));
    rows.push(("daemon's own CPU time per campaign send".into(), format!("{:.2} ms", cpu.as_secs_f64() * 1000.0 / n), "≤ 5 ms".into()));
    std::thread::sleep(Duration::from_secs(1));
    let grown = dir_size(&setup.state_dir.join("db")).saturating_sub(size_before);
    rows.push(("store growth per 1,000 recipients".into(), mib(grown * 1000 / u64::from(args.campaign_size.max(1))), "—".into()));

    // Pacing error: scheduled vs actual start of each send.
    let recipients: Vec<Value> = (0..50).map(|i| json!({"phone": format!("+49152{:08}", 10_000_000 + i)})).collect();
    let body = json!({
        "name": "pacing", "session": "bench", "template": "paced", "recipients": recipients,
        "pacing": {"min_delay": "100ms", "max_delay": "200ms"}, "start": true,
    });
    let paced = run_campaign(api, body, "the paced campaign", Duration::from_secs(300), Duration::from_millis(100))?;
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let mut late: Vec<Duration> = log
        .lines()
        .filter(|l| l.contains("pacing: send starts") && l.contains(&paced))
        .filter_map(|l| l.split("late_ms=").nth(1)?.split(|c: char| !c.is_ascii_digit() && c != '-').next()?.parse::<i64>().ok())
        .map(|ms| Duration::from_millis(ms.unsigned_abs()))
        .collect();
    late.sort();
    rows.push((
        "pacing error, |actual − scheduled| send start".into(),
        format!("p50 {}, p99 {} (n={})", ms(percentile(&late, 50.0)), ms(percentile(&late, 99.0)), late.len()),
        "p99 ≤ 100 ms".into(),
    ));

    // Detection latency: a fault in the sim → the status change recorded.
    let mut drops = Vec::new();
    let mut logouts = Vec::new();
    for _ in 0..args.faults {
        let t0 = now_ms();
        phone(&sim, &format!("/devices/{device}/network-drop"), json!({"seconds": 2}))?;
        let (at, _) = wait_entry(api, "bench", t0, "RECONNECTING after a network drop", |e| is_status(e, "RECONNECTING"))?;
        drops.push(Duration::from_millis(at - t0));
        api.wait_state("bench", "CONNECTED", Duration::from_secs(60), quiet)?;

        let t0 = now_ms();
        phone(&sim, &format!("/devices/{device}/logout"), json!({}))?;
        let (at, _) = wait_entry(api, "bench", t0, "LOGGED_OUT after a phone logout", |e| is_status(e, "LOGGED_OUT"))?;
        logouts.push(Duration::from_millis(at - t0));
        device = sim.scan(&api.qr("bench", Duration::from_secs(60), quiet)?, "4915112345678", "bench")?;
        api.wait_state("bench", "CONNECTED", Duration::from_secs(60), quiet)?;
    }
    drops.sort();
    logouts.sort();
    rows.push((
        "detection: network drop → RECONNECTING".into(),
        format!("p50 {}, p95 {} (n={})", ms(percentile(&drops, 50.0)), ms(percentile(&drops, 95.0)), drops.len()),
        "p95 ≤ 1 s".into(),
    ));
    rows.push((
        "detection: phone logout → LOGGED_OUT".into(),
        format!("p50 {}, p95 {} (n={})", ms(percentile(&logouts, 50.0)), ms(percentile(&logouts, 95.0)), logouts.len()),
        "p95 ≤ 1 s".into(),
    ));

    // Recovery: Chromium SIGKILL → CONNECTED, minus the backoff delay.
    let profile = crate::profile::path(&setup.state_dir, "bench");
    let mut recoveries = Vec::new();
    for _ in 0..args.faults {
        let pid = procfs::browser_pid(&profile).context("no browser on the bench profile")?;
        let t0 = now_ms();
        // SAFETY: kill(2) on the browser's pid, read from /proc just now.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
        let (_, scheduled) = wait_entry(api, "bench", t0, "a scheduled restart", |e| e["event"] == "session.restart_scheduled")?;
        let delay = scheduled["detail"]["delay_ms"].as_u64().unwrap_or(0);
        let (at, _) = wait_entry(api, "bench", t0, "CONNECTED after the kill", |e| is_status(e, "CONNECTED"))?;
        recoveries.push(Duration::from_millis((at - t0).saturating_sub(delay)));
    }
    recoveries.sort();
    rows.push((
        "recovery: Chromium SIGKILL → CONNECTED, minus backoff".into(),
        format!("p50 {}, p95 {} (n={})", ms(percentile(&recoveries, 50.0)), ms(percentile(&recoveries, 95.0)), recoveries.len()),
        "≤ 5 s".into(),
    ));

    // N sessions, all paired: memory and idle CPU.
    for i in 1..args.sessions {
        api.call("POST", "/api/sessions", Some(json!({"name": format!("bench-{i}")})))?;
    }
    for i in 1..args.sessions {
        let name = format!("bench-{i}");
        let qr = api.qr(&name, Duration::from_secs(180), quiet)?;
        sim.scan(&qr, &format!("49151{:08}", 10_000_000 + i), &name)?;
    }
    for i in 1..args.sessions {
        api.wait_state(&format!("bench-{i}"), "CONNECTED", Duration::from_secs(180), quiet)?;
    }
    std::thread::sleep(Duration::from_secs(5));
    let pid = daemon.pid().context("daemon is gone")?;
    let (cpu0, t0) = (procfs::cpu_time(pid).unwrap_or_default(), Instant::now());
    std::thread::sleep(args.cpu_window);
    let cpu = procfs::cpu_time(pid).unwrap_or_default().saturating_sub(cpu0).as_secs_f64() / t0.elapsed().as_secs_f64();
    rows.push((
        format!("daemon CPU, {} idle connected sessions", args.sessions),
        format!("{:.2} % of one core (over {:?})", cpu * 100.0, args.cpu_window),
        "≤ 2 %".into(),
    ));
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
    api.call("POST", "/api/sessions", Some(json!({"name": "hostile", "start": false})))?;
    let hostile_n = hostile_load(api, "hostile", args.hostile_window, daemon.pid().context("daemon is gone")?)?;
    hostile_rows(&mut rows, &hostile0, "0 sessions");
    hostile_rows(&mut rows, &hostile_n, &format!("{} sessions connected", args.sessions));
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
