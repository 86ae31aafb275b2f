//! `wasup bench`: measures the figures issue targets are stated in and
//! prints them as a table. Everything is real: the simulator and the daemon
//! run as child processes, sessions drive real Chromium.
//!
//! `--events poll,bidi` runs every figure that depends on how the daemon
//! learns of page events once per mode (the daemon's `[whatsapp] events`),
//! each on a daemon of its own, and tags those rows with the mode; without
//! it the daemon's default mode is used and the config names none.
//! `--idle-only` measures only the idle figures ([`crate::bench_idle`]).
//!
//! | figure | how |
//! |---|---|
//! | reconnect | daemon spawned → session `CONNECTED` on a saved profile, `--reconnects` times |
//! | send latency | `POST …/messages` until it answers with the server's ack (the sim has the message) |
//! | campaign throughput | a `--campaign-size` campaign with zero delay: messages per second, and the daemon's own CPU time per send (what it spends beyond waiting for WebDriver) |
//! | pacing error | a 50-recipient campaign with 100–200 ms gaps: how late each send started after its scheduled time (the daemon's debug log), p50 / p99 |
//! | store size | growth of the sled directory for the `--campaign-size` campaign, per 1,000 recipients |
//! | detection latency | fault → the status change's `at_ms` in the history: network drop → `RECONNECTING`; phone logout → `LOGGED_OUT`; page crash (the page's renderer SIGKILLed, picked by [`procfs::page_renderer`]: only the page's, as a real crash; killing every renderer would also kill chromedriver's BiDi mapper) → `RECONNECTING` with reason `page_crashed`; a crash the session records with another reason is counted apart |
//! | recovery | Chromium SIGKILL → `CONNECTED` in the history, minus the scheduled backoff delay |
//! | pairing | `--sessions` sessions started and paired, at most `--pair-at-once` at a time |
//! | idle CPU, all processes | CPU time of every process the sessions cost (the daemon, chromedriver, every browser's process tree; see [`crate::bench_idle`]) over `--cpu-window` with every session connected and idle: per connected session, and the total split by process |
//! | daemon CPU | the same, the daemon process only |
//! | PSS, all processes | proportional set size of the same processes at the end of the window: per connected session, and the total split by process |
//! | browser PSS | PSS of each session's Chromium process tree (`/proc/<pid>/smaps_rollup`), median and max |
//! | daemon RSS | `VmRSS` of the daemon process only: its base 1 s after it started with no session, and its growth per connected session beyond that |
//! | idle hold | every `--hold-every` for `--hold`: every session `CONNECTED`; then no `session.restart_scheduled` and no other state in any history since all were connected; CPU of all processes and the daemon's RSS over the hold |
//! | teardown | the daemon's SIGTERM → every process of the run gone (leftovers after 60 s are SIGKILLed and counted) |
//! | `/health` under hostile load | `/health` every 50 ms for `--hostile-window` while five clients loop: a nested-loop template, a 100 MB repeat, a 99,000-row invalid-number CSV that is stored (`invalid_numbers: fail`), and `/metrics` twice; p50 / p99, then the daemon's RSS; once with no session, once with the first idle run's sessions connected |
//!
//! The idle figures run once for each `--sessions` count in each mode; the
//! others with one session.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{json, Value};

use crate::bench_hostile::{hostile_load, hostile_rows};
use crate::launch::{wait_until, Api, DaemonSetup, Log, Sim, TempDir};
use crate::procfs;
use crate::session_state::now_ms;

/// How a daemon's pages tell it of their events (`[whatsapp] events`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventMode {
    /// The page is asked for news every `poll_interval`.
    Poll,
    /// The page pushes its events over WebDriver BiDi.
    Bidi,
}

impl EventMode {
    /// The config value: `poll`, `bidi`.
    pub fn name(self) -> &'static str {
        match self {
            EventMode::Poll => "poll",
            EventMode::Bidi => "bidi",
        }
    }

    /// The `events = "<mode>"` line continuing a config's `[whatsapp]`
    /// table; empty for the daemon's default (`None`).
    pub fn config_line(mode: Option<Self>) -> String {
        mode.map_or(String::new(), |m| format!("events = \"{}\"\n", m.name()))
    }

    /// The suffix of a row's figure: ` [poll]`; empty for the default.
    pub fn tag(mode: Option<Self>) -> String {
        mode.map_or(String::new(), |m| format!(" [{}]", m.name()))
    }
}

/// [`DaemonSetup::new`] with `mode`'s `events` line and then `extra`, and
/// the config checked as the daemon will check it (the daemon would only
/// fail to listen).
///
/// Errors: the file could not be written, or the daemon's parser refuses
/// it (e.g. a build that does not know `[whatsapp] events`).
pub fn daemon_setup(dir: &std::path::Path, sim_base: &str, mode: Option<EventMode>, extra: &str) -> anyhow::Result<DaemonSetup> {
    let setup = DaemonSetup::new(dir, sim_base, &format!("{}{extra}", EventMode::config_line(mode)))?;
    crate::config::Config::load(&setup.config)
        .with_context(|| format!("the daemon would refuse the bench's config{}", EventMode::tag(mode)))?;
    Ok(setup)
}

/// One row of the table: figure, measured, target.
pub type Row = (String, String, String);

/// Options of `wasup bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Daemon restarts to time for the reconnect figure.
    #[arg(long, default_value_t = 5)]
    pub reconnects: u32,
    /// Texts to send for the latency figure.
    #[arg(long, default_value_t = 200)]
    pub sends: u32,
    /// Session counts for the idle figures (CPU, memory, hold), comma
    /// separated (`10,50`): one run of each count in each mode.
    #[arg(long, value_delimiter = ',', default_value = "10", value_parser = clap::value_parser!(u32).range(1..))]
    pub sessions: Vec<u32>,
    /// Event modes to measure, comma separated (`poll,bidi`): the daemon's
    /// `[whatsapp] events`, one daemon each. Without it the daemon's
    /// default mode, not named in its config. `--versus` runs the daemon's
    /// defaults and ignores it.
    #[arg(long, value_delimiter = ',')]
    pub events: Vec<EventMode>,
    /// Only the idle figures: pairing, CPU and memory of all processes,
    /// the hold, the teardown.
    #[arg(long)]
    pub idle_only: bool,
    /// How long every idle run holds its connected sessions, checking they
    /// stay `CONNECTED` (`0s`: no hold).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub hold: Duration,
    /// How often the hold checks every session's state.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub hold_every: Duration,
    /// How many sessions start and pair at once (a Chromium start takes
    /// about a core for a few seconds).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub pair_at_once: u32,
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
    /// Only the cluster figures, on a throwaway PostgreSQL with the browser
    /// test double (`wasup webdriver-double`) as every node's chromedriver:
    /// see [`crate::bench_cluster`].
    #[arg(long)]
    pub cluster: bool,
    /// With `--cluster`: sessions in the cluster.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..))]
    pub cluster_sessions: u32,
    /// With `--cluster`: nodes (the first is killed for the failover figure).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=26))]
    pub cluster_nodes: u32,
    /// With `--cluster`: every node's `cluster.lease_ttl` (the daemon's
    /// default).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,
    /// With `--cluster`: every node's `restart.boot_stagger`, the gap
    /// between the session starts of one node.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub stagger: Duration,
    /// With `--cluster`: how long the idle database statements are counted.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub db_window: Duration,
    /// With `--cluster`: reads and sends timed at each of the owner and a
    /// non-owner.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub api_requests: u32,
}

impl BenchArgs {
    /// The modes to run, each once, in the order given: `None` (the
    /// daemon's default) when `--events` was not given.
    pub fn modes(&self) -> Vec<Option<EventMode>> {
        let mut modes: Vec<Option<EventMode>> = Vec::new();
        for m in &self.events {
            if !modes.contains(&Some(*m)) {
                modes.push(Some(*m));
            }
        }
        if modes.is_empty() {
            modes.push(None);
        }
        modes
    }
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

/// The `p`th percentile (nearest rank) of `sorted`; zero when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `bytes` in MiB with one decimal: `1.5 MiB`.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// `d` in ms with one decimal: `19.6 ms`.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// `p50 …, p99 …` of `sorted`, in ms.
pub fn p50_p99(sorted: &[Duration]) -> String {
    format!("p50 {}, p99 {}", ms(percentile(sorted, 50.0)), ms(percentile(sorted, 99.0)))
}

/// `p50 …, p95 … (n=…)` of `sorted`.
fn p50_p95(sorted: &[Duration]) -> String {
    format!("p50 {}, p95 {} (n={})", ms(percentile(sorted, 50.0)), ms(percentile(sorted, 95.0)), sorted.len())
}

/// The figures measured on one session, in `mode`, on a simulator and a
/// daemon of their own: reconnect, send latency, campaign throughput and
/// store growth, pacing error, detection, recovery. Appends their rows.
///
/// Errors: a child could not start, or a step did not happen in time.
fn single_session(
    exe: &std::path::Path,
    dir: &std::path::Path,
    args: &BenchArgs,
    mode: Option<EventMode>,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let tag = EventMode::tag(mode);
    eprintln!("bench: one session{tag}");
    let dir = dir.join(format!("single-{}", mode.map_or("default", EventMode::name)));
    std::fs::create_dir_all(&dir)?;
    let sim = Sim::start(exe, &[], Log::Discard)?;
    let extra = "[restart]\nboot_stagger = \"0s\"\nbackoff_base = \"500ms\"\nbackoff_cap = \"2s\"\nmax_restarts = 1000\n";
    let setup = daemon_setup(&dir, &sim.base, mode, extra)?;
    let api = &setup.api;
    let quiet = |_: &str| {};
    let log_path = dir.join("daemon.log");
    let mut daemon = setup.start_logging(exe, Log::File(log_path.clone(), "info,wasup::actors::campaign=debug"))?;
    api.call("POST", "/api/sessions", Some(json!({"name": "bench"})))?;
    let mut device = sim.scan(&api.qr("bench", Duration::from_secs(90), quiet)?, "4915112345678", "bench")?;
    api.wait_state("bench", "CONNECTED", Duration::from_secs(60), quiet)?;

    // Reconnect with a saved profile: daemon start → CONNECTED.
    let mut reconnects = Vec::new();
    for _ in 0..args.reconnects {
        daemon.terminate();
        let started = Instant::now();
        daemon = setup.start_logging(exe, Log::File(log_path.clone(), "info,wasup::actors::campaign=debug"))?;
        api.wait_state("bench", "CONNECTED", Duration::from_secs(60), quiet)?;
        reconnects.push(started.elapsed());
    }
    reconnects.sort();
    if let (Some(min), Some(max)) = (reconnects.first(), reconnects.last()) {
        rows.push((
            format!("reconnect, saved profile (daemon start → CONNECTED){tag}"),
            format!("median {} (min {}, max {}, n={})", ms(percentile(&reconnects, 50.0)), ms(*min), ms(*max), reconnects.len()),
            "≤ 3 s".into(),
        ));
    }

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
        format!("send latency (API call → sim acked){tag}"),
        format!("{} (n={})", p50_p99(&sends), sends.len()),
        "p50 ≤ 10 ms".into(),
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
        format!("campaign, {} recipients, zero delay{tag}", args.campaign_size),
        format!("{:.1} messages/s ({:.1} s)", n / took.as_secs_f64(), took.as_secs_f64()),
        "—".into(),
    ));
    rows.push((
        format!("daemon's own CPU time per campaign send{tag}"),
        format!("{:.2} ms", cpu.as_secs_f64() * 1000.0 / n),
        "≤ 5 ms".into(),
    ));
    std::thread::sleep(Duration::from_secs(1));
    let grown = dir_size(&setup.state_dir.join("db")).saturating_sub(size_before);
    rows.push((format!("store growth per 1,000 recipients{tag}"), mib(grown * 1000 / u64::from(args.campaign_size.max(1))), "—".into()));

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
        format!("pacing error, |actual − scheduled| send start{tag}"),
        format!("{} (n={})", p50_p99(&late), late.len()),
        "p99 ≤ 100 ms".into(),
    ));

    // Detection latency: a fault → the status change recorded.
    let profile = crate::profile::path(&setup.state_dir.join("profiles"), "bench");
    let mut drops = Vec::new();
    let mut logouts = Vec::new();
    let mut crashes = Vec::new();
    let mut crashes_otherwise = Vec::new();
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

        let renderer = procfs::page_renderer(&profile).map_err(|e| anyhow::anyhow!("no page renderer to crash: {e}"))?;
        let t0 = now_ms();
        // SAFETY: kill(2) on the page's renderer, read from /proc just now.
        unsafe {
            libc::kill(renderer as libc::pid_t, libc::SIGKILL);
        }
        // The session's first sign of it: a state other than CONNECTED, or
        // a scheduled restart.
        let (at, entry) = wait_entry(api, "bench", t0, "the session to see the page crash", |e| {
            e["event"] == "session.restart_scheduled" || (e["event"] == "session.status" && e["state"] != "CONNECTED")
        })?;
        if entry["reason"] == "page_crashed" {
            crashes.push(Duration::from_millis(at - t0));
        } else {
            crashes_otherwise.push(format!("{}({})", entry["state"].as_str().unwrap_or("?"), entry["reason"].as_str().unwrap_or("")));
        }
        api.wait_state("bench", "CONNECTED", Duration::from_secs(120), quiet)?;
    }
    drops.sort();
    logouts.sort();
    crashes.sort();
    rows.push((format!("detection: network drop → RECONNECTING{tag}"), p50_p95(&drops), "p95 ≤ 100 ms".into()));
    rows.push((format!("detection: phone logout → LOGGED_OUT{tag}"), p50_p95(&logouts), "p95 ≤ 100 ms".into()));
    let otherwise = if crashes_otherwise.is_empty() {
        String::new()
    } else {
        format!("; {} recorded otherwise: {}", crashes_otherwise.len(), crashes_otherwise.join(", "))
    };
    rows.push((
        format!("detection: page crash → RECONNECTING(page_crashed){tag}"),
        format!("{}{otherwise}", p50_p95(&crashes)),
        "p95 ≤ 100 ms".into(),
    ));

    // Recovery: Chromium SIGKILL → CONNECTED, minus the backoff delay.
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
    rows.push((format!("recovery: Chromium SIGKILL → CONNECTED, minus backoff{tag}"), p50_p95(&recoveries), "≤ 5 s".into()));
    daemon.terminate();
    Ok(())
}

/// Runs the benchmark and prints the table. Errors: a child could not start
/// or a step did not happen in time.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(versus) = &args.versus {
        return crate::bench_versus::run(&args, versus);
    }
    let exe = std::env::current_exe().context("cannot find the wasup binary")?;
    let dir = TempDir::new("wasup-bench")?;
    let modes = args.modes();
    let mut rows: Vec<Row> = Vec::new();
    if args.cluster {
        crate::bench_cluster::run(&exe, &dir.0, &args, &mut rows)?;
        print_table(rows);
        return Ok(());
    }

    // Hostile clients against a daemon of its own with defaults and no
    // session running (their campaigns name a session that is not started).
    let hostile0 = if args.idle_only {
        None
    } else {
        eprintln!("bench: hostile load, no session");
        let hostile_dir = dir.0.join("hostile");
        std::fs::create_dir_all(&hostile_dir)?;
        let sim = Sim::start(&exe, &[], Log::Discard)?;
        let setup = DaemonSetup::new(&hostile_dir, &sim.base, "")?;
        let mut daemon = setup.start(&exe, false)?;
        setup.api.call("POST", "/api/sessions", Some(json!({"name": "hostile", "start": false})))?;
        let h = hostile_load(&setup.api, "hostile", args.hostile_window, daemon.pid().context("daemon is gone")?)?;
        daemon.terminate();
        Some(h)
    };

    if !args.idle_only {
        for &mode in &modes {
            single_session(&exe, &dir.0, &args, mode, &mut rows)?;
        }
    }

    // The same hostile clients on the first idle run's daemon, its
    // sessions connected.
    let mut hostile_n = Vec::new();
    let mut with_sessions = |api: &Api, pid: u32, n: u32| -> anyhow::Result<()> {
        if args.idle_only {
            return Ok(());
        }
        eprintln!("bench: hostile load, {n} sessions connected");
        api.call("POST", "/api/sessions", Some(json!({"name": "hostile", "start": false})))?;
        let h = hostile_load(api, "hostile", args.hostile_window, pid)?;
        hostile_rows(&mut hostile_n, &h, &format!("{n} sessions connected"));
        Ok(())
    };
    crate::bench_idle::run(&exe, &dir.0, &args, &modes, &mut rows, &mut with_sessions)?;
    if let Some(h) = &hostile0 {
        hostile_rows(&mut rows, h, "0 sessions");
    }
    rows.append(&mut hostile_n);
    print_table(rows);
    Ok(())
}

/// Prints `rows` as a Markdown table.
fn print_table(rows: Vec<Row>) {
    let w0 = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(0);
    println!("| {:<w0$} | {:<w1$} | target |", "figure", "measured");
    println!("|{}|{}|--------|", "-".repeat(w0 + 2), "-".repeat(w1 + 2));
    for (a, b, c) in rows {
        println!("| {a:<w0$} | {b:<w1$} | {c} |");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        use clap::Parser as _;
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).map(|c| c.bench)
    }

    #[test]
    fn counts_and_modes_are_lists() {
        let a = parse(&["--idle-only", "--sessions", "10,50", "--events", "poll,bidi,poll", "--hold", "10m"]).unwrap();
        assert!(a.idle_only);
        assert_eq!(a.sessions, vec![10, 50]);
        assert_eq!(a.modes(), vec![Some(EventMode::Poll), Some(EventMode::Bidi)]);
        assert_eq!(a.hold, Duration::from_secs(600));
        let d = parse(&[]).unwrap();
        assert_eq!((d.modes(), d.sessions, d.hold, d.pair_at_once), (vec![None], vec![10], Duration::ZERO, 2));
        assert!(parse(&["--sessions", "0"]).is_err());
        assert!(parse(&["--events", "push"]).is_err());
        assert!(parse(&["--pair-at-once", "0"]).is_err());
    }

    #[test]
    fn a_mode_is_named_in_the_config_only_when_given() {
        assert_eq!(EventMode::config_line(Some(EventMode::Bidi)), "events = \"bidi\"\n");
        assert_eq!(EventMode::config_line(None), "");
        assert_eq!(EventMode::tag(Some(EventMode::Poll)), " [poll]");
        assert_eq!(EventMode::tag(None), "");
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v[..1], 99.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }
}
