//! `wasup bench --versus whatsapp-web.js`: wasup (with its defaults) and an
//! unmodified whatsapp-web.js 1.34.7 driven by the seeds' own policies
//! (`tests/wwebjs/harness.js`: 001's health check and message queue, 002's
//! backoff and logout handling, 003's heartbeat), on one simulator in one
//! run, under the same faults. Prints one table of figures with the ratio
//! wasup : whatsapp-web.js.
//!
//! | figure | how |
//! |---|---|
//! | detection | fault → the system's own first sign of it, within 60 s or missed: a wasup history entry (a state other than `CONNECTED`, or `session.restart_scheduled`); a harness status other than `connected` |
//! | recovery | fault → connected again (`CONNECTED`; harness `connected`), or for a phone logout → a new QR offered; within 180 s or missed |
//! | delivered, duplicated | each fault run sends `--versus-sends` texts through each system (a wasup campaign; the harness's queue), one a second, and injects the fault after the second has reached the simulator; the simulator's log says which arrived, and how often |
//! | idle CPU per session | CPU time of every process of the system (daemon, chromedriver and browsers; Node and browsers) over `--cpu-window`, with `--sessions` sessions connected and idle, divided by the sessions |
//! | PSS per session | proportional set size of the same processes, divided by the sessions |
//!
//! Faults: the phone logs the device out; the device's network drops for
//! 10 s; the browser's main process is SIGKILLed; every renderer of the
//! browser is SIGKILLed (the page crashes). Browsers are found by the
//! `--user-data-dir` on their command line (wasup's profile, LocalAuth's
//! `session-bench-<i>`).

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

use crate::bench::BenchArgs;
use crate::launch::{wait_until, DaemonSetup, Log, Sim, TempDir};
use crate::procfs;
use crate::session_state::now_ms;

/// The account wasup's session 0 pairs as; session `i` adds `i`.
const WASUP_PHONE: u64 = 4915100000100;
/// The account the harness's client 0 pairs as; client `i` adds `i`.
const WWEBJS_PHONE: u64 = 4915100000200;
/// How long a detection may take before it counts as missed: two of the
/// seeds' 30 s check periods.
const DETECT_DEADLINE: Duration = Duration::from_secs(60);
/// How long a recovery may take before it counts as missed.
const RECOVER_DEADLINE: Duration = Duration::from_secs(180);
/// Network drop length, seconds.
const DROP_SECONDS: u64 = 10;

/// The four faults, in the order they are run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Fault {
    Logout,
    NetworkDrop,
    BrowserKilled,
    PageCrash,
}

impl Fault {
    const ALL: [Fault; 4] = [Fault::Logout, Fault::NetworkDrop, Fault::BrowserKilled, Fault::PageCrash];

    fn name(self) -> &'static str {
        match self {
            Fault::Logout => "phone logout",
            Fault::NetworkDrop => "network drop 10 s",
            Fault::BrowserKilled => "browser killed",
            Fault::PageCrash => "page crash",
        }
    }
}

/// The harness process (`node harness.js`) and the lines it printed.
struct Harness {
    child: Child,
    stdin: Option<ChildStdin>,
    events: Arc<Mutex<Vec<Value>>>,
}

impl Harness {
    /// Starts `node harness.js` in `dir`; every line it prints is kept, and
    /// copied to `log`.
    fn start(dir: &Path, sim_base: &str, data: &Path, clients: u32, log: &Path) -> anyhow::Result<Self> {
        let mut log = std::fs::File::create(log)?;
        let mut child = Command::new("node")
            .arg("harness.js")
            .current_dir(dir)
            .env("WASUP_SIM", sim_base)
            .env("WASUP_WWEBJS_DIR", data)
            .env("WASUP_CLIENTS", clients.to_string())
            .env("WASUP_SEND_GAP_MS", "1000")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start node harness.js in {}", dir.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let stdin = child.stdin.take();
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&events);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    sink.lock().unwrap_or_else(|e| e.into_inner()).push(v);
                }
            }
        });
        Ok(Self { child, stdin, events })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn send(&mut self, client: u32, to: &str, body: &str) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("the harness's stdin is closed")?;
        writeln!(stdin, "{}", json!({"cmd": "send", "client": client, "to": to, "body": body})).context("write to the harness")?;
        Ok(())
    }

    /// The first event of `client` at or after `t0_ms` that `pred` accepts.
    fn find(&self, client: u32, t0_ms: u64, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        events.iter().find(|e| e["client"] == client && e["at_ms"].as_u64().is_some_and(|t| t >= t0_ms) && pred(e)).cloned()
    }

    /// The latest event of `client` that `pred` accepts.
    fn last(&self, client: u32, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        events.iter().rev().find(|e| e["client"] == client && pred(e)).cloned()
    }

    fn status(&self, client: u32) -> String {
        self.last(client, |e| e["ev"] == "status").and_then(|e| e["status"].as_str().map(str::to_owned)).unwrap_or_default()
    }

    fn pending(&self, client: u32) -> u64 {
        self.last(client, |e| e["ev"] == "queue").and_then(|e| e["pending"].as_u64()).unwrap_or(0)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // Closing stdin makes the harness destroy its clients and exit.
        self.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for pid in procfs::tree(self.child.id()) {
            // SAFETY: kill(2) on our child's process tree, read from /proc just now.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }
}

/// What one system did under one fault run.
#[derive(Debug, Default, Clone)]
struct Outcome {
    detection: Option<Duration>,
    recovery: Option<Duration>,
}

/// Every figure of one system.
#[derive(Debug, Default)]
struct Figures {
    runs: HashMap<&'static str, Vec<Outcome>>,
    sent: u64,
    delivered: u64,
    duplicated: u64,
    cpu_per_session: f64,
    pss_per_session: u64,
    /// Faults other than a logout after which the session needed a new QR.
    lost_sessions: u64,
}

fn phone(sim_base: &str, path: &str, body: Value) -> anyhow::Result<Value> {
    Ok(ureq::post(&format!("{sim_base}/_phone{path}")).send_json(body).with_context(|| format!("phone {path}"))?.into_json()?)
}

/// Device ids of every device the simulator ever linked for `phone`.
fn devices_of(sim_base: &str, phone: u64) -> anyhow::Result<Vec<(String, String)>> {
    let list: Value = ureq::get(&format!("{sim_base}/_phone/devices")).call()?.into_json()?;
    let phone = phone.to_string();
    Ok(list
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|d| d["phone"].as_str() == Some(phone.as_str()))
                .map(|d| (d["device"].as_str().unwrap_or_default().to_owned(), d["state"].as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default())
}

/// The active device of `phone`.
fn active_device(sim_base: &str, phone: u64) -> anyhow::Result<String> {
    devices_of(sim_base, phone)?.into_iter().find(|(_, s)| s == "active").map(|(d, _)| d).context("no active device")
}

/// How many times each body starting with `prefix` reached the simulator
/// from `phone`'s devices.
fn copies(sim_base: &str, phone: u64, prefix: &str) -> anyhow::Result<HashMap<String, u64>> {
    let mut out = HashMap::new();
    for (device, _) in devices_of(sim_base, phone)? {
        let log: Value = ureq::get(&format!("{sim_base}/_phone/devices/{device}/messages")).call()?.into_json()?;
        for m in log.as_array().into_iter().flatten() {
            if let Some(body) = m["body"].as_str().filter(|b| b.starts_with(prefix)) {
                *out.entry(body.to_owned()).or_insert(0) += 1;
            }
        }
    }
    Ok(out)
}

fn kill_all(pids: &[u32]) {
    for &pid in pids {
        // SAFETY: kill(2) on browser pids read from /proc just now.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
}

/// The renderer processes of the browser on `profile` (not all of them
/// name the profile on their command line: they are found in the tree).
fn renderers(profile: &Path) -> Vec<u32> {
    let Some(main) = procfs::browser_pid(profile) else { return Vec::new() };
    procfs::tree(main)
        .into_iter()
        .filter(|p| std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains("--type=renderer")))
        .collect()
}

/// Injects `fault` into one system: its sim device and its browser profile.
fn inject(fault: Fault, sim_base: &str, device: &str, profile: &Path) -> anyhow::Result<()> {
    match fault {
        Fault::Logout => {
            phone(sim_base, &format!("/devices/{device}/logout"), json!({}))?;
        }
        Fault::NetworkDrop => {
            phone(sim_base, &format!("/devices/{device}/network-drop"), json!({"seconds": DROP_SECONDS}))?;
        }
        Fault::BrowserKilled => kill_all(&[procfs::browser_pid(profile).context("no browser on the profile")?]),
        Fault::PageCrash => {
            let r = renderers(profile);
            anyhow::ensure!(!r.is_empty(), "no renderer on the profile {}", profile.display());
            kill_all(&r);
        }
    }
    Ok(())
}

/// CPU time (all processes of the tree) and PSS (idem) of `pid`'s tree.
fn tree_cpu_pss(pid: u32) -> (Duration, u64) {
    let pids = procfs::tree(pid);
    (pids.iter().filter_map(|&p| procfs::cpu_time(p)).sum(), pids.iter().filter_map(|&p| procfs::pss_bytes(p)).sum())
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Option<Duration> {
    if v.is_empty() {
        return None;
    }
    v.sort();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("—".into(), |d| format!("{:.2} s", d.as_secs_f64()))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        (Some(a), Some(b)) if a == 0.0 && b == 0.0 => "1.00".into(),
        _ => "—".into(),
    }
}

/// Where the harness lives: `--wwebjs-dir`, with its `node_modules`.
fn harness_dir(args: &BenchArgs) -> anyhow::Result<PathBuf> {
    let dir = args.wwebjs_dir.clone();
    if !dir.join("harness.js").exists() || !dir.join("node_modules/whatsapp-web.js").exists() {
        bail!("{} has no harness.js or no node_modules: run `bash scripts/deps` in the repository, or pass --wwebjs-dir", dir.display());
    }
    Ok(dir.canonicalize()?)
}

/// Runs the side-by-side bench and prints the table. `versus` must be
/// `whatsapp-web.js`. Errors: a child could not start, or a step that must
/// happen (pairing, re-pairing after a logout) did not happen in time.
pub fn run(args: &BenchArgs, versus: &str) -> anyhow::Result<()> {
    anyhow::ensure!(versus == "whatsapp-web.js", "--versus knows only whatsapp-web.js");
    let wwebjs_dir = harness_dir(args)?;
    let exe = std::env::current_exe().context("cannot find the wasup binary")?;
    let dir = TempDir::new("wasup-versus")?;
    // whatsapp-web.js listens for the history sync only after re-injecting
    // itself into the page; a sync quicker than that loses its `ready`
    // (see the README's simulator section). Real WhatsApp Web takes
    // seconds; both systems get the same 2 s.
    let simulator = Sim::start(&exe, &["--sync-delay", "2s"], Log::Discard)?;
    let sim = simulator.base.clone();
    let setup = DaemonSetup::new(&dir.0, &sim, "")?;
    let api = &setup.api;
    let quiet = |_: &str| {};
    let n = args.sessions.iter().copied().max().unwrap_or(1);
    let data = dir.0.join("wwebjs");
    std::fs::create_dir_all(&data)?;
    let keep = std::env::var_os("WASUP_KEEP_BENCH_LOGS").is_some();
    let logs = if keep { std::env::temp_dir().join(format!("wasup-versus-logs-{}", std::process::id())) } else { dir.0.clone() };
    std::fs::create_dir_all(&logs)?;
    let mut daemon = setup.start_logging(&exe, Log::File(logs.join("daemon.log"), "info"))?;
    let mut harness = Harness::start(&wwebjs_dir, &sim, &data, n, &logs.join("harness.log"))?;
    if keep {
        eprintln!("versus: logs in {}", logs.display());
    }
    let wwebjs_profile = |i: u32| data.join(format!("session-bench-{i}"));
    let wasup_profile = |i: u32| crate::profile::path(&setup.state_dir.join("profiles"), &format!("bench-{i}"));

    // Pair every session of both systems.
    eprintln!("versus: pairing {n} sessions of each system");
    for i in 0..n {
        api.call("POST", "/api/sessions", Some(json!({"name": format!("bench-{i}")})))?;
    }
    for i in 0..n {
        let qr = api.qr(&format!("bench-{i}"), Duration::from_secs(180), quiet)?;
        simulator.scan(&qr, &(WASUP_PHONE + u64::from(i)).to_string(), "wasup")?;
        let qr = wait_until("a QR from the harness", Duration::from_secs(180), Duration::from_millis(50), || {
            harness.last(i, |e| e["ev"] == "qr").and_then(|e| e["qr"].as_str().map(str::to_owned))
        })?;
        simulator.scan(&qr, &(WWEBJS_PHONE + u64::from(i)).to_string(), "wwebjs")?;
    }
    for i in 0..n {
        api.wait_state(&format!("bench-{i}"), "CONNECTED", Duration::from_secs(180), quiet)?;
        wait_until("the harness to be connected", Duration::from_secs(180), Duration::from_millis(50), || {
            (harness.status(i) == "connected").then_some(())
        })?;
    }

    let mut wasup = Figures::default();
    let mut wwebjs = Figures::default();
    let mut recipient = 0u64;
    for rep in 0..args.faults {
        for fault in Fault::ALL {
            eprintln!("versus: {} (run {} of {})", fault.name(), rep + 1, args.faults);
            let prefix = format!("versus {rep} {fault:?} ");
            // The sends: a campaign through wasup, the harness's queue.
            let recipients: Vec<Value> = (0..args.versus_sends)
                .map(|k| {
                    recipient += 1;
                    json!({"phone": format!("+4916{:09}", recipient), "k": k})
                })
                .collect();
            let campaign = api.call(
                "POST",
                "/api/campaigns",
                Some(json!({
                    "name": prefix.trim(), "session": "bench-0", "template": format!("{prefix}{{{{ k }}}}"),
                    "recipients": recipients, "pacing": {"min_delay": "1s", "max_delay": "1s"}, "start": true,
                })),
            )?;
            let campaign = campaign["id"].as_str().context("no campaign id")?.to_owned();
            for (k, r) in recipients.iter().enumerate() {
                let to = r["phone"].as_str().unwrap_or_default().trim_start_matches('+').to_owned();
                harness.send(0, &to, &format!("{prefix}{k}"))?;
            }
            wasup.sent += u64::from(args.versus_sends);
            wwebjs.sent += u64::from(args.versus_sends);
            // Inject once the second text of each has arrived.
            wait_until("two texts from each system", Duration::from_secs(120), Duration::from_millis(50), || {
                let a = copies(&sim, WASUP_PHONE, &prefix).ok()?.len();
                let b = copies(&sim, WWEBJS_PHONE, &prefix).ok()?.len();
                (a >= 2 && b >= 2).then_some(())
            })?;
            let wasup_device = active_device(&sim, WASUP_PHONE)?;
            let wwebjs_device = active_device(&sim, WWEBJS_PHONE)?;
            let t_wasup = now_ms();
            inject(fault, &sim, &wasup_device, &wasup_profile(0))?;
            let t_wwebjs = now_ms();
            inject(fault, &sim, &wwebjs_device, &wwebjs_profile(0))?;

            let mut a = Outcome::default();
            let mut b = Outcome::default();
            let mut scanned = (false, false);
            let started = Instant::now();
            while started.elapsed() < RECOVER_DEADLINE {
                let history = api.call("GET", "/api/sessions/bench-0/history", None)?;
                let entries: Vec<&Value> =
                    history.as_array().into_iter().flatten().filter(|e| e["at_ms"].as_u64().is_some_and(|t| t >= t_wasup)).collect();
                let since = |t: u64| Duration::from_millis(t.saturating_sub(t_wasup));
                if a.detection.is_none() {
                    a.detection = entries
                        .iter()
                        .find(|e| {
                            e["event"] == "session.restart_scheduled" || (e["event"] == "session.status" && e["state"] != "CONNECTED")
                        })
                        .and_then(|e| e["at_ms"].as_u64())
                        .map(since);
                }
                let recovered_state = if fault == Fault::Logout { "SCAN_QR" } else { "CONNECTED" };
                if a.detection.is_some() && a.recovery.is_none() {
                    a.recovery = entries
                        .iter()
                        .filter(|e| e["event"] == "session.status" && e["state"] == recovered_state)
                        .find_map(|e| e["at_ms"].as_u64())
                        .map(since);
                }
                let since = |t: u64| Duration::from_millis(t.saturating_sub(t_wwebjs));
                if b.detection.is_none() {
                    b.detection = harness
                        .find(0, t_wwebjs, |e| e["ev"] == "status" && e["status"] != "connected")
                        .and_then(|e| e["at_ms"].as_u64())
                        .map(since);
                }
                if b.detection.is_some() && b.recovery.is_none() {
                    let want = if fault == Fault::Logout { ("qr", "qr") } else { ("status", "connected") };
                    b.recovery = harness
                        .find(0, t_wwebjs, |e| e["ev"] == want.0 && (want.0 == "qr" || e["status"] == want.1))
                        .and_then(|e| e["at_ms"].as_u64())
                        .map(since);
                }
                // A logout needs the phone to scan again. A QR after any
                // other fault means the saved session was lost: the phone
                // scans it too (so the run goes on) and it is counted.
                if !scanned.0 && entries.iter().any(|e| e["event"] == "session.status" && e["state"] == "SCAN_QR") {
                    let qr = api.call("GET", "/api/sessions/bench-0/qr?format=raw", None)?;
                    simulator.scan(qr["qr"].as_str().unwrap_or_default(), &WASUP_PHONE.to_string(), "wasup")?;
                    scanned.0 = true;
                    wasup.lost_sessions += u64::from(fault != Fault::Logout);
                }
                if !scanned.1 {
                    if let Some(qr) = harness.find(0, t_wwebjs, |e| e["ev"] == "qr").and_then(|e| e["qr"].as_str().map(str::to_owned)) {
                        simulator.scan(&qr, &WWEBJS_PHONE.to_string(), "wwebjs")?;
                        scanned.1 = true;
                        wwebjs.lost_sessions += u64::from(fault != Fault::Logout);
                    }
                }
                let a_done = a.recovery.is_some() || (a.detection.is_none() && started.elapsed() > DETECT_DEADLINE);
                let b_done = b.recovery.is_some() || (b.detection.is_none() && started.elapsed() > DETECT_DEADLINE);
                if a_done && b_done {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // Back to connected, then let both finish their sends.
            api.wait_state("bench-0", "CONNECTED", Duration::from_secs(300), quiet)?;
            wait_until("the harness to be connected again", Duration::from_secs(300), Duration::from_millis(100), || {
                (harness.status(0) == "connected").then_some(())
            })?;
            wait_until("both systems to finish their sends", Duration::from_secs(300), Duration::from_millis(200), || {
                let c = api.call("GET", &format!("/api/campaigns/{campaign}"), None).ok()?;
                let done = crate::campaign::CampaignState::of(&c["state"]).is_some_and(crate::campaign::CampaignState::is_final);
                (done && harness.pending(0) == 0).then_some(())
            })?;
            for (figures, phone_number, outcome) in [(&mut wasup, WASUP_PHONE, a), (&mut wwebjs, WWEBJS_PHONE, b)] {
                let c = copies(&sim, phone_number, &prefix)?;
                figures.delivered += c.len() as u64;
                figures.duplicated += c.values().filter(|&&k| k > 1).count() as u64;
                figures.runs.entry(fault.name()).or_default().push(outcome);
            }
        }
    }

    // Idle: every session of both connected; CPU and PSS of each system's
    // whole process tree, per session.
    eprintln!("versus: idle CPU and memory over {:?}", args.cpu_window);
    for i in 0..n {
        api.wait_state(&format!("bench-{i}"), "CONNECTED", Duration::from_secs(180), quiet)?;
    }
    let daemon_pid = daemon.pid().context("daemon is gone")?;
    let (c0a, _) = tree_cpu_pss(daemon_pid);
    let (c0b, _) = tree_cpu_pss(harness.pid());
    let t0 = Instant::now();
    std::thread::sleep(args.cpu_window);
    let (c1a, pss_a) = tree_cpu_pss(daemon_pid);
    let (c1b, pss_b) = tree_cpu_pss(harness.pid());
    let window = t0.elapsed().as_secs_f64();
    wasup.cpu_per_session = c1a.saturating_sub(c0a).as_secs_f64() / window / f64::from(n);
    wwebjs.cpu_per_session = c1b.saturating_sub(c0b).as_secs_f64() / window / f64::from(n);
    wasup.pss_per_session = pss_a / u64::from(n);
    wwebjs.pss_per_session = pss_b / u64::from(n);
    drop(harness);
    daemon.terminate();

    print_table(args, &wasup, &wwebjs, n);
    Ok(())
}

fn print_table(args: &BenchArgs, wasup: &Figures, wwebjs: &Figures, n: u32) {
    let mut rows: Vec<[String; 4]> = Vec::new();
    let pooled =
        |f: &Figures, pick: fn(&Outcome) -> Option<Duration>| -> Vec<Duration> { f.runs.values().flatten().filter_map(pick).collect() };
    let missed = |f: &Figures, pick: fn(&Outcome) -> Option<Duration>| f.runs.values().flatten().filter(|o| pick(o).is_none()).count();
    let as_f = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
    for (label, p) in [("p50", 50.0), ("p95", 95.0)] {
        let a = percentile(pooled(wasup, |o| o.detection), p);
        let b = percentile(pooled(wwebjs, |o| o.detection), p);
        rows.push([format!("detection latency {label}, all faults"), secs(a), secs(b), ratio(as_f(a), as_f(b))]);
    }
    for fault in Fault::ALL {
        let get = |f: &Figures, pick: fn(&Outcome) -> Option<Duration>| {
            let runs = f.runs.get(fault.name()).cloned().unwrap_or_default();
            let got: Vec<Duration> = runs.iter().filter_map(pick).collect();
            let missed = runs.len() - got.len();
            (percentile(got, 50.0), missed)
        };
        for (what, pick) in
            [("detection", (|o: &Outcome| o.detection) as fn(&Outcome) -> Option<Duration>), ("recovery", |o: &Outcome| o.recovery)]
        {
            let (a, ma) = get(wasup, pick);
            let (b, mb) = get(wwebjs, pick);
            let show = |d: Option<Duration>, m: usize| if m > 0 { format!("{} ({m} missed)", secs(d)) } else { secs(d) };
            let what = if fault == Fault::Logout && what == "recovery" { "recovery (new QR offered)" } else { what };
            rows.push([format!("{}: {what} p50", fault.name()), show(a, ma), show(b, mb), ratio(as_f(a), as_f(b))]);
        }
    }
    let (ma, mb) = (missed(wasup, |o| o.detection), missed(wwebjs, |o| o.detection));
    rows.push(["faults not detected within 60 s".into(), ma.to_string(), mb.to_string(), ratio(Some(ma as f64), Some(mb as f64))]);
    rows.push([
        "sessions lost (a new QR needed) after a fault other than logout".into(),
        wasup.lost_sessions.to_string(),
        wwebjs.lost_sessions.to_string(),
        ratio(Some(wasup.lost_sessions as f64), Some(wwebjs.lost_sessions as f64)),
    ]);
    rows.push([
        "texts delivered across the faults".into(),
        format!("{} of {}", wasup.delivered, wasup.sent),
        format!("{} of {}", wwebjs.delivered, wwebjs.sent),
        ratio(Some(wasup.delivered as f64), Some(wwebjs.delivered as f64)),
    ]);
    rows.push([
        "texts delivered more than once".into(),
        wasup.duplicated.to_string(),
        wwebjs.duplicated.to_string(),
        ratio(Some(wasup.duplicated as f64), Some(wwebjs.duplicated as f64)),
    ]);
    rows.push([
        format!("idle CPU per connected session ({n} sessions, all processes)"),
        format!("{:.2} % of a core", wasup.cpu_per_session * 100.0),
        format!("{:.2} % of a core", wwebjs.cpu_per_session * 100.0),
        ratio(Some(wasup.cpu_per_session), Some(wwebjs.cpu_per_session)),
    ]);
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0));
    rows.push([
        format!("PSS per session ({n} sessions, all processes)"),
        mib(wasup.pss_per_session),
        mib(wwebjs.pss_per_session),
        ratio(Some(wasup.pss_per_session as f64), Some(wwebjs.pss_per_session as f64)),
    ]);
    println!(
        "wasup (defaults) vs whatsapp-web.js 1.34.7 with the seeds' policies; {} run(s) of each fault, {} texts per run, {} idle sessions over {:?}",
        args.faults, args.versus_sends, n, args.cpu_window
    );
    let header = ["figure", "wasup", "whatsapp-web.js", "wasup : wwebjs"];
    let widths: Vec<usize> =
        (0..4).map(|c| rows.iter().map(|r| r[c].chars().count()).chain([header[c].len()]).max().unwrap_or(0)).collect();
    let line = |r: &[String; 4]| {
        let cells: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("| {} |", cells.join(" | "));
    };
    line(&header.map(String::from));
    println!("|{}|", widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("|"));
    for r in &rows {
        line(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_and_percentiles() {
        assert_eq!(ratio(Some(1.0), Some(4.0)), "0.25");
        assert_eq!(ratio(Some(0.0), Some(0.0)), "1.00");
        assert_eq!(ratio(Some(1.0), Some(0.0)), "—");
        assert_eq!(ratio(None, Some(1.0)), "—");
        let v: Vec<Duration> = (1..=20).map(Duration::from_secs).collect();
        assert_eq!(percentile(v.clone(), 50.0), Some(Duration::from_secs(10)));
        assert_eq!(percentile(v, 95.0), Some(Duration::from_secs(19)));
        assert_eq!(percentile(Vec::new(), 50.0), None);
    }
}
