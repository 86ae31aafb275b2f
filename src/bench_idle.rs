//! `wasup bench`'s idle figures (issue 12): what idle connected sessions
//! cost in every process, at each `--sessions` count and in each
//! `--events` mode, and whether they all stay connected for `--hold`.
//!
//! Each (mode, count) run has a simulator, a daemon and a state directory
//! of its own:
//! 1. the daemon starts with no session; its RSS 1 s later is its base;
//! 2. the sessions are created stopped, then started and paired at most
//!    `--pair-at-once` at a time (a Chromium start takes about a core for a
//!    few seconds);
//! 3. once all are `CONNECTED` and 5 s have passed, the CPU time of every
//!    process (below) is read at the start and the end of `--cpu-window`,
//!    and their PSS at its end;
//! 4. the hold: every `--hold-every` for `--hold`, every session must be
//!    `CONNECTED`; at its end no session's history may have a
//!    `session.restart_scheduled` or a state other than `CONNECTED` since
//!    all were connected (step 3); the CPU is read again over the hold;
//! 5. teardown: the daemon gets SIGTERM, and every process of the run (the
//!    ones read in step 3 and any naming the run's profiles) must be gone
//!    within 60 s; leftovers are SIGKILLed and the row says how many.
//!
//! Every process it costs counts:
//! - the daemon;
//! - chromedriver: the daemon's direct children (the Driver actor starts
//!   no other process);
//! - the browsers: every other descendant of the daemon, and the process
//!   tree of the browser on each session's profile (by `--user-data-dir`,
//!   also when it is no longer under the daemon).
//!
//! The set is read at both ends of a window and summed with
//! [`procfs::cpu_used`]: a process in both readings counts its growth; one
//! only at the end (it started during the window) counts whole; one only at
//! the start (it exited during the window) counts nothing after the start
//! reading, so the figure is then a little low. The rows say how many
//! processes appeared and vanished.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

use crate::bench::{mib, BenchArgs, EventMode, Row};
use crate::launch::{wait_until, Api, ChildGuard, Log, Sim};
use crate::procfs::{self, CpuReading, CpuUse};
use crate::session_state::now_ms;

/// After the last session is `CONNECTED`: its history sync and the
/// browsers' start-up work end before the CPU is measured.
const SETTLE: Duration = Duration::from_secs(5);
/// How long one session may take from its start to `CONNECTED`.
const PAIR_DEADLINE: Duration = Duration::from_secs(300);
/// How long the run's processes may take to exit after the daemon's
/// SIGTERM (the daemon itself has 30 s of it).
const EXIT_DEADLINE: Duration = Duration::from_secs(60);

/// What a process is to the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Daemon = 0,
    Driver = 1,
    Browser = 2,
}

impl Role {
    const ALL: [Role; 3] = [Role::Daemon, Role::Driver, Role::Browser];

    fn name(self) -> &'static str {
        match self {
            Role::Daemon => "daemon",
            Role::Driver => "chromedriver",
            Role::Browser => "browsers",
        }
    }
}

/// Every process the daemon `daemon` costs now, with its role (see the
/// module doc); each once.
fn processes(daemon: u32, profiles: &[PathBuf]) -> Vec<(Role, u32)> {
    let procs = procfs::scan();
    let parent: HashMap<u32, u32> = procs.iter().map(|p| (p.pid, p.ppid)).collect();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for pid in procfs::descendants(&procs, daemon) {
        let role = if pid == daemon {
            Role::Daemon
        } else if parent.get(&pid) == Some(&daemon) {
            Role::Driver
        } else {
            Role::Browser
        };
        if seen.insert(pid) {
            out.push((role, pid));
        }
    }
    for profile in profiles {
        let Some(main) = procfs::browser_main(&procs, profile) else { continue };
        for pid in procfs::descendants(&procs, main) {
            if seen.insert(pid) {
                out.push((Role::Browser, pid));
            }
        }
    }
    out
}

/// CPU readings of `set` now (processes gone since are left out).
fn read(set: &[(Role, u32)]) -> Vec<(Role, CpuReading)> {
    set.iter().filter_map(|&(role, pid)| Some((role, procfs::cpu_reading(pid)?))).collect()
}

/// CPU used per role (indexed by `Role as usize`) between readings at a
/// window's start and end, each role summed by [`procfs::cpu_used`].
pub fn cpu_by_role(start: &[(Role, CpuReading)], end: &[(Role, CpuReading)]) -> [CpuUse; 3] {
    Role::ALL.map(|role| {
        let of = |v: &[(Role, CpuReading)]| v.iter().filter(|(r, _)| *r == role).map(|(_, c)| *c).collect::<Vec<_>>();
        procfs::cpu_used(&of(start), &of(end))
    })
}

/// The readings of every process at one moment.
struct Sample {
    at: Instant,
    readings: Vec<(Role, CpuReading)>,
}

impl Sample {
    fn take(daemon: u32, profiles: &[PathBuf]) -> Sample {
        let set = processes(daemon, profiles);
        Sample { readings: read(&set), at: Instant::now() }
    }
}

/// CPU used by every process over a window.
struct Cpu {
    by_role: [CpuUse; 3],
    elapsed: Duration,
    processes: usize,
}

impl Cpu {
    fn between(a: &Sample, b: &Sample) -> Cpu {
        Cpu { by_role: cpu_by_role(&a.readings, &b.readings), elapsed: b.at - a.at, processes: b.readings.len() }
    }

    /// Share of one core used by `role`'s processes (all of them: `None`).
    fn share(&self, role: Option<Role>) -> f64 {
        let ticks: u64 = Role::ALL.iter().filter(|r| role.is_none_or(|w| w == **r)).map(|r| self.by_role[*r as usize].ticks).sum();
        procfs::ticks_to_duration(ticks).as_secs_f64() / self.elapsed.as_secs_f64().max(1e-3)
    }

    fn appeared(&self) -> usize {
        self.by_role.iter().map(|u| u.appeared).sum()
    }

    fn vanished(&self) -> usize {
        self.by_role.iter().map(|u| u.vanished).sum()
    }
}

/// PSS of `set` per role, bytes (indexed by `Role as usize`).
fn pss_by_role(set: &[(Role, u32)]) -> [u64; 3] {
    let mut out = [0; 3];
    for &(role, pid) in set {
        out[role as usize] += procfs::pss_bytes(pid).unwrap_or(0);
    }
    out
}

/// The account session `i` pairs as (E.164 digits).
fn phone(i: usize) -> String {
    format!("49151{:08}", 10_000_000 + i)
}

/// Creates the sessions `names` stopped, then starts them at most
/// `at_once` at a time, scans each one's QR and waits for it to be
/// `CONNECTED` before starting the next. Returns how long it all took.
///
/// Errors: the API refused a request, or a session was not `CONNECTED`
/// within [`PAIR_DEADLINE`] of its start.
fn pair(sim: &Sim, api: &Api, names: &[String], at_once: usize) -> anyhow::Result<Duration> {
    struct Flight<'a> {
        i: usize,
        name: &'a str,
        since: Instant,
        scanned: Option<String>,
    }
    for name in names {
        api.call("POST", "/api/sessions", Some(json!({"name": name, "start": false})))?;
    }
    let started = Instant::now();
    let mut waiting: VecDeque<(usize, &String)> = names.iter().enumerate().collect();
    let mut flight: Vec<Flight> = Vec::new();
    loop {
        while flight.len() < at_once.max(1) {
            let Some((i, name)) = waiting.pop_front() else { break };
            api.call("POST", &format!("/api/sessions/{name}/start"), None)?;
            flight.push(Flight { i, name, since: Instant::now(), scanned: None });
        }
        if flight.is_empty() {
            return Ok(started.elapsed());
        }
        let list = api.call("GET", "/api/sessions", None)?;
        let states: HashMap<&str, &str> =
            list.as_array().into_iter().flatten().filter_map(|v| Some((v["name"].as_str()?, v["state"].as_str()?))).collect();
        let mut still = Vec::new();
        for mut f in flight {
            let state = states.get(f.name).copied().unwrap_or("");
            if state == "CONNECTED" {
                continue;
            }
            if state == "SCAN_QR" {
                // No QR (the state moved on since the list) or a refused
                // scan (the QR expired or rotated in between) is harmless:
                // the next round asks again; the deadline below bounds it.
                let qr = api.call("GET", &format!("/api/sessions/{}/qr?format=raw", f.name), None).unwrap_or_default();
                if let Some(qr) = qr["qr"].as_str().filter(|q| f.scanned.as_deref() != Some(*q)) {
                    if sim.scan(qr, &phone(f.i), f.name).is_ok() {
                        f.scanned = Some(qr.to_string());
                    }
                }
            }
            if f.since.elapsed() > PAIR_DEADLINE {
                bail!("session {} was not CONNECTED {PAIR_DEADLINE:?} after its start (it is {state})", f.name);
            }
            still.push(f);
        }
        flight = still;
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What the hold saw.
struct Held {
    checks: u32,
    /// (session, state) pairs not `CONNECTED` at a check, or unanswered checks.
    off: u32,
    /// The first few of them, for the row.
    first_off: Vec<String>,
    restarts: usize,
    state_changes: usize,
    cpu: Option<Cpu>,
    rss_after: u64,
}

/// Holds the run for `hold`, checking every `every` that every session of
/// `names` is `CONNECTED`, then reads their histories since `since_ms`.
fn hold(api: &Api, names: &[String], args: &BenchArgs, daemon: u32, profiles: &[PathBuf], since_ms: u64) -> Held {
    let s0 = Sample::take(daemon, profiles);
    let started = Instant::now();
    let mut held = Held { checks: 0, off: 0, first_off: Vec::new(), restarts: 0, state_changes: 0, cpu: None, rss_after: 0 };
    let note = |held: &mut Held, what: String| {
        held.off += 1;
        if held.first_off.len() < 3 {
            held.first_off.push(format!("{what} at +{}s", started.elapsed().as_secs()));
        }
    };
    while started.elapsed() < args.hold {
        std::thread::sleep(args.hold_every.min(args.hold.saturating_sub(started.elapsed())).max(Duration::from_millis(10)));
        held.checks += 1;
        match api.call("GET", "/api/sessions", None) {
            Ok(list) => {
                let views: HashMap<&str, &Value> =
                    list.as_array().into_iter().flatten().filter_map(|v| Some((v["name"].as_str()?, v))).collect();
                for name in names {
                    match views.get(name.as_str()) {
                        Some(v) if v["state"] == "CONNECTED" => {}
                        Some(v) => note(
                            &mut held,
                            format!("{name} {}({})", v["state"].as_str().unwrap_or("?"), v["reason"].as_str().unwrap_or("")),
                        ),
                        None => note(&mut held, format!("{name} missing")),
                    }
                }
            }
            Err(e) => note(&mut held, format!("no answer ({e})")),
        }
    }
    if !args.hold.is_zero() {
        held.cpu = Some(Cpu::between(&s0, &Sample::take(daemon, profiles)));
    }
    held.rss_after = procfs::rss_bytes(daemon).unwrap_or(0);
    for name in names {
        let history = api.call("GET", &format!("/api/sessions/{name}/history"), None).unwrap_or_default();
        for e in history.as_array().into_iter().flatten().filter(|e| e["at_ms"].as_u64().is_some_and(|t| t >= since_ms)) {
            if e["event"] == "session.restart_scheduled" {
                held.restarts += 1;
            } else if e["event"] == "session.status" && e["state"] != "CONNECTED" {
                held.state_changes += 1;
            }
        }
    }
    held
}

/// A run's daemon and every process it started: stopped by
/// [`Teardown::finish`], or when dropped (a run that failed half-way).
struct Teardown {
    daemon: ChildGuard,
    pid: u32,
    profiles_dir: PathBuf,
    profiles: Vec<PathBuf>,
    done: bool,
}

impl Teardown {
    /// Terminates the daemon and waits until every process of the run is
    /// gone; SIGKILLs what is left after [`EXIT_DEADLINE`]. Returns how
    /// long that took and how many had to be killed.
    fn finish(&mut self) -> (Duration, usize) {
        self.done = true;
        let ours: Vec<CpuReading> = read(&processes(self.pid, &self.profiles)).into_iter().map(|(_, r)| r).collect();
        let started = Instant::now();
        self.daemon.terminate();
        let marker = format!("--user-data-dir={}/", self.profiles_dir.display());
        let left = || -> Vec<CpuReading> {
            let mut left: Vec<CpuReading> = ours.iter().filter(|r| procfs::is_running(r)).copied().collect();
            for p in procfs::scan().into_iter().filter(|p| p.args.iter().any(|a| a.contains(&marker))) {
                if let Some(r) = procfs::cpu_reading(p.pid).filter(|r| procfs::is_running(r) && !left.contains(r)) {
                    left.push(r);
                }
            }
            left
        };
        if wait_until("the run's processes to exit", EXIT_DEADLINE, Duration::from_millis(100), || left().is_empty().then_some(())).is_ok()
        {
            return (started.elapsed(), 0);
        }
        let leftovers = left();
        for r in &leftovers {
            // Checked again just before: still the process this run started.
            if procfs::is_running(r) {
                // SAFETY: kill(2) on a process of this run, read from /proc just now.
                unsafe {
                    libc::kill(r.pid as libc::pid_t, libc::SIGKILL);
                }
            }
        }
        // Harmless if it times out: the row reports the leftovers anyway.
        let _ = wait_until("the killed processes to exit", Duration::from_secs(10), Duration::from_millis(100), || {
            left().is_empty().then_some(())
        });
        (started.elapsed(), leftovers.len())
    }
}

impl Drop for Teardown {
    fn drop(&mut self) {
        if !self.done {
            self.finish();
        }
    }
}

/// `d` to the second: `30s`, `10m`.
fn secs(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs_f64().round() as u64)).to_string()
}

fn pct(share: f64) -> String {
    format!("{:.2} %", share * 100.0)
}

/// Runs the idle figures for every mode of `modes` and every count of
/// `--sessions`, appending their rows to `rows`. `after_first` runs once,
/// on the first run's daemon (its API, its pid, its session count) with
/// its sessions still connected, after the hold.
///
/// Errors: a process could not start, a session did not pair in time.
pub fn run(
    exe: &Path,
    dir: &Path,
    args: &BenchArgs,
    modes: &[Option<EventMode>],
    rows: &mut Vec<Row>,
    after_first: &mut dyn FnMut(&Api, u32, u32) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut first = true;
    for &mode in modes {
        for &n in &args.sessions {
            eprintln!("bench: idle, {n} sessions{}", EventMode::tag(mode));
            let hook: &mut dyn FnMut(&Api, u32, u32) -> anyhow::Result<()> =
                if first { &mut *after_first } else { &mut |_: &Api, _: u32, _: u32| Ok(()) };
            rows.extend(run_one(exe, dir, args, mode, n, hook)?);
            first = false;
        }
    }
    Ok(())
}

/// One (mode, count) run; see the module doc. Returns its rows.
fn run_one(
    exe: &Path,
    dir: &Path,
    args: &BenchArgs,
    mode: Option<EventMode>,
    n: u32,
    hook: &mut dyn FnMut(&Api, u32, u32) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<Row>> {
    let tag = EventMode::tag(mode);
    let run_dir = dir.join(format!("idle-{}-{n}", mode.map_or("default", EventMode::name)));
    std::fs::create_dir_all(&run_dir)?;
    let sim = Sim::start(exe, &[], Log::Discard)?;
    let setup = crate::bench::daemon_setup(&run_dir, &sim.base, mode, "[restart]\nboot_stagger = \"0s\"\n")?;
    let api = &setup.api;
    let daemon = setup.start_logging(exe, Log::File(run_dir.join("daemon.log"), "info"))?;
    let pid = daemon.pid().context("the daemon is gone")?;
    let names: Vec<String> = (0..n).map(|i| format!("idle-{i}")).collect();
    let profiles: Vec<PathBuf> = names.iter().map(|name| crate::profile::path(&setup.state_dir.join("profiles"), name)).collect();
    let mut teardown = Teardown { daemon, pid, profiles_dir: setup.state_dir.join("profiles"), profiles: profiles.clone(), done: false };
    std::thread::sleep(Duration::from_secs(1));
    let rss0 = procfs::rss_bytes(pid).unwrap_or(0);
    let mut rows: Vec<Row> = Vec::new();

    let paired = pair(&sim, api, &names, args.pair_at_once as usize)?;
    let connected_ms = now_ms();
    rows.push((
        format!("pairing {n} sessions, at most {} at once{tag}", args.pair_at_once),
        format!("{:.1} s ({:.1} s per session)", paired.as_secs_f64(), paired.as_secs_f64() / f64::from(n.max(1))),
        "—".into(),
    ));
    std::thread::sleep(SETTLE);
    let s0 = Sample::take(pid, &profiles);
    std::thread::sleep(args.cpu_window);
    let s1 = Sample::take(pid, &profiles);
    let idle = Cpu::between(&s0, &s1);
    let set = processes(pid, &profiles);
    let pss = pss_by_role(&set);
    let rss_n = procfs::rss_bytes(pid).unwrap_or(0);
    let per = |x: f64| x / f64::from(n.max(1));
    let breakdown = |f: &dyn Fn(Role) -> String| Role::ALL.map(|r| format!("{} {}", r.name(), f(r))).join(" + ");
    rows.push((
        format!("idle CPU per connected session, all processes, {n} sessions{tag}"),
        format!(
            "{} of one core (all: {} = {}; over {}; {} processes, {} appeared, {} vanished)",
            pct(per(idle.share(None))),
            pct(idle.share(None)),
            breakdown(&|r| pct(idle.share(Some(r)))),
            secs(idle.elapsed),
            idle.processes,
            idle.appeared(),
            idle.vanished()
        ),
        "≤ 0.5 %".into(),
    ));
    rows.push((
        format!("daemon CPU, {n} idle connected sessions{tag}"),
        format!("{} of one core (over {})", pct(idle.share(Some(Role::Daemon))), secs(idle.elapsed)),
        "≤ 2 %".into(),
    ));
    let pss_all: u64 = pss.iter().sum();
    rows.push((
        format!("PSS per connected session, all processes, {n} sessions{tag}"),
        format!("{} (all: {} = {})", mib(pss_all / u64::from(n.max(1))), mib(pss_all), breakdown(&|r| mib(pss[r as usize]))),
        "—".into(),
    ));
    let mut browser_pss: Vec<u64> = profiles.iter().filter_map(|p| procfs::browser_pss_bytes(p)).collect();
    browser_pss.sort_unstable();
    if let (Some(median), Some(max)) = (browser_pss.get(browser_pss.len() / 2), browser_pss.last()) {
        rows.push((
            format!("browser PSS per session, {n} sessions{tag}"),
            format!("median {}, max {} (n={})", mib(*median), mib(*max), browser_pss.len()),
            "(simulator page)".into(),
        ));
    }
    rows.push((format!("daemon RSS, 0 sessions (browsers excluded){tag}"), mib(rss0), "≤ 30 MiB".into()));
    rows.push((
        format!("daemon RSS beyond its base per session, {n} sessions{tag}"),
        format!("{} ({} with {n} sessions, {} with none)", mib(rss_n.saturating_sub(rss0) / u64::from(n.max(1))), mib(rss_n), mib(rss0)),
        "≤ 1 MiB".into(),
    ));

    if !args.hold.is_zero() {
        eprintln!("bench: holding {n} sessions{tag} for {}", secs(args.hold));
    }
    let held = hold(api, &names, args, pid, &profiles, connected_ms);
    let connected = if args.hold.is_zero() {
        "not held (--hold 0s)".to_string()
    } else if held.off == 0 {
        format!("all {n} CONNECTED at each of {} checks over {}", held.checks, secs(args.hold))
    } else {
        format!(
            "{} times not CONNECTED at {} checks over {} (first: {})",
            held.off,
            held.checks,
            secs(args.hold),
            held.first_off.join(", ")
        )
    };
    let over_hold = held.cpu.as_ref().map_or(String::new(), |cpu| {
        format!(
            "; over the hold: all processes {} of one core per session, daemon RSS {} per session beyond its base",
            pct(per(cpu.share(None))),
            mib(held.rss_after.saturating_sub(rss0) / u64::from(n.max(1)))
        )
    });
    rows.push((
        format!("idle hold, {n} sessions{tag}"),
        format!("{connected}; since all were CONNECTED: {} restarts, {} other states{over_hold}", held.restarts, held.state_changes),
        "all CONNECTED, 0 restarts".into(),
    ));

    hook(api, pid, n)?;
    let (took, killed) = teardown.finish();
    rows.push((
        format!("teardown, {n} sessions{tag}"),
        if killed == 0 {
            format!("every process gone {:.1} s after the daemon's SIGTERM", took.as_secs_f64())
        } else {
            format!("{killed} processes left {EXIT_DEADLINE:?} after the daemon's SIGTERM, killed")
        },
        "all gone".into(),
    ));
    drop(sim);
    // Harmless if it fails: the bench's temporary directory is removed at
    // its end; this only frees the disk between runs.
    let _ = std::fs::remove_dir_all(&run_dir);
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(pid: u32, start_ticks: u64, cpu_ticks: u64) -> CpuReading {
        CpuReading { pid, start_ticks, cpu_ticks }
    }

    #[test]
    fn cpu_is_summed_per_role_over_the_processes_of_each() {
        let start = [(Role::Daemon, r(1, 1, 100)), (Role::Driver, r(2, 2, 50)), (Role::Browser, r(3, 3, 10)), (Role::Browser, r(4, 4, 10))];
        // The daemon +5, chromedriver +1, browser 3 +20, browser 4 exited,
        // browser 5 started with 3.
        let end = [(Role::Daemon, r(1, 1, 105)), (Role::Driver, r(2, 2, 51)), (Role::Browser, r(3, 3, 30)), (Role::Browser, r(5, 9, 3))];
        let used = cpu_by_role(&start, &end);
        assert_eq!(used[Role::Daemon as usize], CpuUse { ticks: 5, appeared: 0, vanished: 0 });
        assert_eq!(used[Role::Driver as usize], CpuUse { ticks: 1, appeared: 0, vanished: 0 });
        assert_eq!(used[Role::Browser as usize], CpuUse { ticks: 23, appeared: 1, vanished: 1 });
        let cpu = Cpu { by_role: used, elapsed: Duration::from_secs(10), processes: end.len() };
        let tick = procfs::ticks_to_duration(1).as_secs_f64();
        assert!((cpu.share(None) - 29.0 * tick / 10.0).abs() < 1e-9);
        assert!((cpu.share(Some(Role::Daemon)) - 5.0 * tick / 10.0).abs() < 1e-9);
        assert_eq!((cpu.appeared(), cpu.vanished()), (1, 1));
    }

    #[test]
    fn our_own_process_is_the_daemon_of_its_tree() {
        let me = std::process::id();
        let set = processes(me, &[]);
        assert_eq!(set.first(), Some(&(Role::Daemon, me)));
        assert!(set.iter().all(|&(role, pid)| (role == Role::Daemon) == (pid == me)));
        let pss = pss_by_role(&set);
        assert!(pss[Role::Daemon as usize] > 0);
    }
}
