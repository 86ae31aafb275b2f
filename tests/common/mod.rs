//! Test harness: the real binary as simulator and daemon, over loopback HTTP,
//! with real Chromium. Nothing is mocked.
//!
//! A thin test-only layer over [`wasup::launch`], the one harness (free
//! ports, child processes, the simulator, the daemon's configuration and
//! start, the HTTP client, polling with a deadline): here its calls panic
//! instead of returning errors, and what only tests need lives here (a
//! webhook [`Receiver`], [`HealthWatch`], [`Chromedriver`], the browser
//! permits, assertions on sessions and campaigns).
//!
//! Browsers are bounded: [`browser_permit`] lets at most two scenarios that
//! start Chromium run at once, whatever `--test-threads` is (each Chromium
//! costs ~150 MiB and a core to start).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wasup::launch::{self, Body, ChildGuard, DaemonSetup, Log};

/// A response: status, JSON body (Null when the body is not JSON), content
/// type, raw bytes and headers.
pub use wasup::launch::Reply as Resp;

pub const BIN: &str = env!("CARGO_BIN_EXE_wasup");

static PERMITS: Mutex<usize> = Mutex::new(0);
static FREED: Condvar = Condvar::new();
const MAX_BROWSER_SCENARIOS: usize = 2;

/// Held while a scenario may run browsers.
pub struct BrowserPermit;

pub fn browser_permit() -> BrowserPermit {
    let mut used = PERMITS.lock().unwrap_or_else(|e| e.into_inner());
    while *used >= MAX_BROWSER_SCENARIOS {
        used = FREED.wait(used).unwrap_or_else(|e| e.into_inner());
    }
    *used += 1;
    BrowserPermit
}

impl Drop for BrowserPermit {
    fn drop(&mut self) {
        let mut used = PERMITS.lock().unwrap_or_else(|e| e.into_inner());
        *used -= 1;
        FREED.notify_one();
    }
}

/// [`launch::free_port`], panicking when there is none.
pub fn free_port() -> u16 {
    launch::free_port().expect("a free loopback port")
}

/// Polls `check` every 50 ms until it returns `Some`, or panics with `what`
/// after `within` ([`launch::wait_until`]).
pub fn wait_for<T>(what: &str, within: Duration, check: impl FnMut() -> Option<T>) -> T {
    launch::wait_until(what, within, Duration::from_millis(50), check).unwrap_or_else(|e| panic!("{e}"))
}

/// One request on a new connection ([`launch::request`]); `content_type`
/// goes with `body`. Panics when there is no answer.
pub fn request(method: &str, url: &str, token: Option<&str>, body: Option<&[u8]>, content_type: &str) -> Resp {
    let body = body.map_or(Body::Empty, |bytes| Body::Bytes { content_type, bytes });
    launch::request(method, url, token, body).unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// Like [`request`], `None` when there is no answer (nothing listening,
/// connection reset, timeout).
pub fn try_request(method: &str, url: &str, token: Option<&str>, body: Option<&[u8]>, content_type: &str) -> Option<Resp> {
    let body = body.map_or(Body::Empty, |bytes| Body::Bytes { content_type, bytes });
    launch::request(method, url, token, body).ok()
}

/// Whether `GET url` answers with a status below 400.
pub fn answers(url: &str) -> bool {
    try_request("GET", url, None, None, "").is_some_and(|r| r.status < 400)
}

/// Sends `method path` with a JSON `body` through `api`; panics when there
/// is no answer.
fn send(api: &launch::Api, method: &str, path: &str, body: Option<Value>) -> Resp {
    api.send(method, path, Body::json(body.as_ref())).unwrap_or_else(|e| panic!("{method} {}: {e}", api.url(path)))
}

/// `wasup sim` as a child process ([`launch::Sim`]), its log in a temp dir
/// (or on stderr with `WASUP_TEST_LOG` set).
pub struct Sim {
    pub base: String,
    sim: launch::Sim,
    _dir: tempfile::TempDir,
}

impl Sim {
    pub fn start(extra: &[&str]) -> Sim {
        let dir = tempfile::tempdir().unwrap();
        let log = if std::env::var_os("WASUP_TEST_LOG").is_some() { Log::Inherit } else { Log::File(dir.path().join("sim.log"), "info") };
        let sim = launch::Sim::start(Path::new(BIN), extra, log).unwrap_or_else(|e| panic!("start wasup sim: {e:#}"));
        Sim { base: sim.base.clone(), sim, _dir: dir }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        self.sim.phone.url(path)
    }

    /// Calls the phone API (`/_phone/…`); any status.
    pub fn phone(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        send(&self.sim.phone, method, path, body)
    }

    /// Scans `qr` as phone `phone` (pushname "Acme"); any status.
    pub fn try_scan(&self, qr: &str, phone: &str) -> Resp {
        self.phone("POST", "/_phone/scan", Some(json!({"qr": qr, "phone": phone, "pushname": "Acme"})))
    }

    /// Scans `qr` as phone `phone`; returns the device id.
    pub fn scan(&self, qr: &str, phone: &str) -> String {
        let r = self.try_scan(qr, phone);
        assert_eq!(r.status, 200, "scan: {:?}", r.body);
        r.body["device"].as_str().expect("device id").to_string()
    }

    /// Makes the phone of `device` do `action` (`ack`, `logout`,
    /// `network-drop`, …); asserts the simulator answered `{"ok": true}`.
    pub fn device_action(&self, device: &str, action: &str, body: Option<Value>) {
        let r = self.phone("POST", &format!("/_phone/devices/{device}/{action}"), body);
        assert_eq!((r.status, &r.body), (200, &json!({"ok": true})), "phone action {action}");
    }

    pub fn messages(&self, device: &str) -> Vec<Value> {
        let r = self.phone("GET", &format!("/_phone/devices/{device}/messages"), None);
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body.as_array().cloned().unwrap_or_default()
    }

    pub fn devices(&self) -> Vec<Value> {
        self.phone("GET", "/_phone/devices", None).body.as_array().cloned().unwrap_or_default()
    }

    /// The simulator's state of `device` (`active`, `logged_out`, …), Null
    /// for an unknown device.
    pub fn device_state(&self, device: &str) -> Value {
        self.devices().into_iter().find(|d| d["device"] == device).map(|d| d["state"].clone()).unwrap_or(Value::Null)
    }

    /// SIGTERM, then waits up to `within`; the exit status if it exited by
    /// itself in time.
    pub fn stop(&mut self, within: Duration) -> Option<ExitStatus> {
        self.sim.child().stop(within)
    }
}

/// `wasup serve` as a child process, with its state in a temp dir that
/// outlives restarts of the process.
pub struct Daemon {
    pub base: String,
    pub token: String,
    pub dir: tempfile::TempDir,
    setup: DaemonSetup,
    child: Option<ChildGuard>,
    starts: u32,
    env: Vec<(String, String)>,
}

impl Daemon {
    /// `extra_config` is appended to a config with `[http]`, `[state]` and
    /// `[whatsapp]` set; it may add keys of other sections.
    pub fn start(sim: &Sim, extra_config: &str) -> Daemon {
        Self::start_with_env(sim, extra_config, &[])
    }

    /// Like [`Daemon::start`], with extra environment variables.
    pub fn start_with_env(sim: &Sim, extra_config: &str, env: &[(&str, &str)]) -> Daemon {
        Self::start_full(sim, extra_config, env, |_| {})
    }

    /// Like [`Daemon::start_with_env`]; `prepare` gets the state dir (not
    /// yet created) before the first start, to mount something there.
    pub fn start_full(sim: &Sim, extra_config: &str, env: &[(&str, &str)], prepare: impl FnOnce(&Path)) -> Daemon {
        Self::start_at(&sim.base, "", extra_config, env, prepare)
    }

    /// Like [`Daemon::start`], with more keys of the `[whatsapp]` table
    /// (`whatsapp`: TOML lines such as `send_timeout = "1s"`).
    pub fn start_tuned(sim: &Sim, whatsapp: &str, extra_config: &str) -> Daemon {
        Self::start_at(&sim.base, whatsapp, extra_config, &[], |_| {})
    }

    /// The daemon with its page at `page_base` instead of a simulator's
    /// (`whatsapp.url = page_base/`), `whatsapp` lines added to that table.
    pub fn start_at(page_base: &str, whatsapp: &str, extra_config: &str, env: &[(&str, &str)], prepare: impl FnOnce(&Path)) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        prepare(&dir.path().join("state"));
        // WASUP_TEST_EVENTS=poll runs a suite with the page polled instead
        // of pushing its events (scripts/test runs the fault matrix and the
        // campaign scenarios in both modes).
        let events = match std::env::var("WASUP_TEST_EVENTS") {
            Ok(mode) => format!("events = \"{mode}\"\n"),
            Err(_) => String::new(),
        };
        // Keys before `extra_config`'s first table header continue
        // `[restart]`: the harness's fast backoff unless they set their own.
        let restart_keys: Vec<&str> = extra_config
            .lines()
            .take_while(|l| !l.trim_start().starts_with('['))
            .filter_map(|l| l.split('=').next())
            .map(str::trim)
            .collect();
        let fast: String = [("backoff_base", "200ms"), ("backoff_cap", "2s")]
            .iter()
            .filter(|(k, _)| !restart_keys.contains(k))
            .map(|(k, v)| format!("{k} = \"{v}\"\n"))
            .collect();
        let extra = format!("{events}poll_interval = \"100ms\"\n{whatsapp}\n[restart]\nboot_stagger = \"100ms\"\n{fast}{extra_config}");
        let mut setup = DaemonSetup::new(dir.path(), page_base, &extra).unwrap().with_token("test-token-0123456789");
        setup.api = setup.api.unpooled();
        let mut d = Daemon {
            base: setup.api.base.clone(),
            token: setup.api.token.clone(),
            dir,
            setup,
            child: None,
            starts: 0,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        d.spawn();
        d
    }

    pub fn state_dir(&self) -> PathBuf {
        self.setup.state_dir.clone()
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log = Log::File(self.dir.path().join(format!("daemon-{}.log", self.starts)), "info,wasup=debug");
        let mut env: Vec<(&str, &str)> = vec![("WASUP_FAULT_INJECTION", "1")];
        env.extend(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let child =
            self.setup.spawn(Path::new(BIN), &env, log, Duration::from_millis(50)).unwrap_or_else(|e| panic!("start wasup serve: {e:#}"));
        self.child = Some(child);
    }

    /// Sends SIGTERM without waiting.
    pub fn signal_term(&self) {
        if let Some(c) = &self.child {
            c.signal(libc::SIGTERM);
        }
    }

    /// SIGTERM, wait for exit; returns whether it exited by itself in time.
    pub fn stop(&mut self) -> bool {
        match self.child.take() {
            Some(mut c) => c.stop(Duration::from_secs(60)).is_some(),
            None => true,
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().and_then(ChildGuard::pid).expect("daemon is running")
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(ChildGuard::is_running)
    }

    /// The daemon's log so far (for assertion messages and secret checks).
    pub fn log(&self) -> String {
        (1..=self.starts).map(|i| std::fs::read_to_string(self.dir.path().join(format!("daemon-{i}.log"))).unwrap_or_default()).collect()
    }

    /// The daemon's API client (its token, a new connection per request).
    pub fn client(&self) -> &launch::Api {
        &self.setup.api
    }

    /// Calls the API with the daemon's token (a new connection per
    /// request); any status.
    pub fn api(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        send(&self.setup.api, method, path, body)
    }

    pub fn session(&self, name: &str) -> Value {
        let r = self.api("GET", &format!("/api/sessions/{name}"), None);
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body
    }

    /// Waits until the session is in `state`; returns its view.
    pub fn wait_state(&self, name: &str, state: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let last = self.session(name);
            if last["state"] == state {
                return last;
            }
            if Instant::now() > deadline {
                panic!(
                    "session {name} not {state} within {within:?}; last: {last}\nhistory: {}\nlog:\n{}",
                    self.api("GET", &format!("/api/sessions/{name}/history"), None).body,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn qr(&self, name: &str) -> String {
        let r = self.api("GET", &format!("/api/sessions/{name}/qr?format=raw"), None);
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body["qr"].as_str().expect("qr string").to_string()
    }

    pub fn history_states(&self, name: &str) -> Vec<String> {
        let r = self.api("GET", &format!("/api/sessions/{name}/history"), None);
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["event"] == "session.status")
            .map(|h| format!("{}{}", h["state"].as_str().unwrap(), h["reason"].as_str().map(|r| format!("({r})")).unwrap_or_default()))
            .collect()
    }

    /// Creates and pairs session `name` with `phone`; returns the sim's device id.
    pub fn pair(&self, sim: &Sim, name: &str, phone: &str) -> String {
        let r = self.api("POST", "/api/sessions", Some(json!({"name": name, "start": true})));
        assert_eq!(r.status, 201, "{:?}", r.body);
        self.wait_state(name, "SCAN_QR", Duration::from_secs(90));
        let qr = wait_for("a QR", Duration::from_secs(30), || {
            let r = self.api("GET", &format!("/api/sessions/{name}/qr?format=raw"), None);
            (r.status == 200).then(|| r.body["qr"].as_str().unwrap().to_string())
        });
        let device = sim.scan(&qr, phone);
        self.wait_state(name, "CONNECTED", Duration::from_secs(60));
        device
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        if std::env::var_os("WASUP_KEEP_TEST_LOGS").is_some() {
            let keep = std::env::temp_dir().join(format!("wasup-test-{}", std::process::id()));
            let _ = std::fs::create_dir_all(&keep);
            for i in 1..=self.starts {
                let name = format!("daemon-{i}.log");
                let _ =
                    std::fs::copy(self.dir.path().join(&name), keep.join(format!("{}-{name}", self.base.replace([':', '/', '.'], "_"))));
            }
        }
    }
}

/// Every event the daemon's SSE stream delivers for `session`, collected
/// by a thread as they come.
pub fn collect_events(daemon: &Daemon, session: &str) -> std::sync::Arc<Mutex<Vec<Value>>> {
    use std::io::BufRead as _;
    let events: std::sync::Arc<Mutex<Vec<Value>>> = Default::default();
    let sink = events.clone();
    let resp = daemon.client().stream(&format!("/api/events?session={session}"), None).expect("SSE stream");
    assert_eq!((resp.status, resp.content_type.as_str()), (200, "text/event-stream"));
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(resp.reader).lines() {
            let Ok(line) = line else { break };
            if let Some(v) = line.strip_prefix("data: ").and_then(|d| serde_json::from_str::<Value>(d).ok()) {
                sink.lock().unwrap().push(v);
            }
        }
    });
    events
}

/// One request a [`Receiver`] got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status it was answered with.
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// A minimal HTTP receiver on loopback (webhooks, Telegram's Bot API):
/// answers every request with its current status (200 unless
/// [`Receiver::answer`] changed it) and keeps them.
pub struct Receiver {
    pub base: String,
    got: std::sync::Arc<Mutex<Vec<Received>>>,
    status: std::sync::Arc<std::sync::atomic::AtomicU16>,
}

impl Receiver {
    pub fn start() -> Receiver {
        Self::listen(std::net::TcpListener::bind("127.0.0.1:0").unwrap())
    }

    /// A receiver on `port` (one that was free: a webhook pointed at it
    /// found nobody listening until now).
    pub fn start_on(port: u16) -> Receiver {
        Self::listen(std::net::TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| panic!("bind 127.0.0.1:{port}: {e}")))
    }

    fn listen(listener: std::net::TcpListener) -> Receiver {
        use std::io::{BufRead, BufReader, Read, Write};
        let base = format!("http://{}", listener.local_addr().unwrap());
        let got = std::sync::Arc::new(Mutex::new(Vec::new()));
        let status = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(200));
        let sink = got.clone();
        let answer = status.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut headers = Vec::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.trim_end().split_once(':') {
                        headers.push((k.trim().to_string(), v.trim().to_string()));
                    }
                }
                let len = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse::<usize>().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
                let status = answer.load(std::sync::atomic::Ordering::SeqCst);
                sink.lock().unwrap().push(Received { path, headers, body, status });
                let reply = format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}");
                let _ = reader.get_mut().write_all(reply.as_bytes());
            }
        });
        Receiver { base, got, status }
    }

    /// From now on, answers `status` (with a `{}` body).
    pub fn answer(&self, status: u16) {
        self.status.store(status, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits for a request whose JSON body satisfies `pred`.
    pub fn wait_for(&self, what: &str, within: Duration, pred: impl Fn(&Received) -> bool) -> Received {
        wait_for(what, within, || self.received().into_iter().find(|r| pred(r)))
    }
}

/// Polls `/health` every 100 ms in a thread until dropped; counts failures.
pub struct HealthWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<(u32, u32)>>,
}

impl HealthWatch {
    pub fn start(daemon: &Daemon) -> HealthWatch {
        let probe = launch::Api::new(daemon.base.clone(), String::new()).unpooled().with_timeout(Duration::from_secs(2));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, 0);
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                match probe.send("GET", "/health", Body::Empty) {
                    Ok(r) if r.status == 200 => ok += 1,
                    _ => failed += 1,
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (ok, failed)
        });
        HealthWatch { stop, thread: Some(thread) }
    }

    /// Stops watching; asserts `/health` answered every time.
    pub fn assert_always_healthy(mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (ok, failed) = self.thread.take().unwrap().join().unwrap();
        assert!(ok > 0 && failed == 0, "/health: {ok} answers, {failed} failures");
    }
}

/// History entries of one event kind (`session.restart_scheduled`, …).
pub fn events(daemon: &Daemon, name: &str, event: &str) -> Vec<Value> {
    let r = daemon.api("GET", &format!("/api/sessions/{name}/history"), None);
    r.body.as_array().unwrap().iter().filter(|h| h["event"] == event).cloned().collect()
}

/// Kills every process whose command line contains `needle`; returns how many.
pub fn kill_matching(needle: &str) -> usize {
    let mut killed = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        if String::from_utf8_lossy(&cmdline).contains(needle) && unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
            killed += 1;
        }
    }
    killed
}

impl Daemon {
    /// SIGKILL, no chance to clean up (its chromedriver dies with it; its
    /// Chromium is left behind, as after a real crash).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill();
        }
    }

    /// Starts the daemon again on the same state dir (after `kill`/`stop`).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "still running");
        self.spawn();
    }

    /// Creates a campaign; returns its id.
    pub fn campaign(&self, body: Value) -> String {
        let r = self.api("POST", "/api/campaigns", Some(body));
        assert_eq!(r.status, 201, "{:?}", r.body);
        r.body["id"].as_str().unwrap().to_string()
    }

    pub fn campaign_view(&self, id: &str) -> Value {
        let r = self.api("GET", &format!("/api/campaigns/{id}"), None);
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body
    }

    pub fn recipients(&self, id: &str) -> Vec<Value> {
        let r = self.api("GET", &format!("/api/campaigns/{id}/recipients"), None);
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.body.as_array().cloned().unwrap()
    }

    /// Waits until the campaign is in `state`.
    pub fn wait_campaign(&self, id: &str, state: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let v = self.campaign_view(id);
            if v["state"] == state {
                return v;
            }
            if Instant::now() > deadline {
                panic!("campaign {id} not {state} within {within:?}: {v}\nlog:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until at least `n` recipients are SENT.
    pub fn wait_sent(&self, id: &str, n: u64, within: Duration) {
        wait_for(&format!("{n} recipients SENT"), within, || (self.campaign_view(id)["counts"]["SENT"].as_u64()? >= n).then_some(()));
    }
}

/// Every SENT recipient of campaign `id` is in the simulator's log of
/// `device` exactly once, and nothing else is; returns how many were SENT.
pub fn assert_exactly_once(daemon: &Daemon, sim: &Sim, device: &str, id: &str) -> usize {
    let log = deliveries(sim, device);
    let recipients = daemon.recipients(id);
    let sent: Vec<String> = recipients
        .iter()
        .filter(|r| r["state"] == "SENT")
        .map(|r| format!("{}@c.us", r["phone"].as_str().unwrap().trim_start_matches('+')))
        .collect();
    for to in &sent {
        assert_eq!(log.get(to), Some(&1), "{to} not delivered exactly once: {log:?}");
    }
    assert_eq!(log.values().sum::<usize>(), sent.len(), "the sim got messages no SENT recipient accounts for: {log:?} vs {sent:?}");
    sent.len()
}

/// Holds for `within`: `check` must stay true the whole time (checked
/// every 100 ms).
pub fn stays(what: &str, within: Duration, check: impl Fn() -> bool) {
    let until = Instant::now() + within;
    while Instant::now() < until {
        assert!(check(), "{what} did not hold");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `GET /health`: its status and JSON body.
pub fn health(daemon: &Daemon) -> (u16, Value) {
    let r = request("GET", &format!("{}/health", daemon.base), None, None, "");
    (r.status, r.body)
}

/// Once the store fails (a full disk, PostgreSQL down): waits for `/health`
/// to say `degraded`, then asserts that for 3 s nothing more reaches
/// `device` than the one send that may already be under way. Returns the
/// deliveries counted when the failure showed.
pub fn store_failure_stops_sends(daemon: &Daemon, sim: &Sim, device: &str) -> usize {
    wait_for("/health degraded", Duration::from_secs(30), || {
        let (status, body) = health(daemon);
        (status == 503 && body["status"] == "degraded").then_some(body)
    });
    let at_failure = deliveries(sim, device).values().sum::<usize>();
    stays("no send while the store fails", Duration::from_secs(3), || deliveries(sim, device).values().sum::<usize>() <= at_failure + 1);
    at_failure
}

/// `n` distinct valid German mobile numbers, E.164 without `+`.
pub fn numbers(n: usize, base: u64) -> Vec<String> {
    (0..n as u64).map(|i| format!("49151{:08}", base + i)).collect()
}

/// How often each chat id appears in the sim's log of `device`.
pub fn deliveries(sim: &Sim, device: &str) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for msg in sim.messages(device) {
        *m.entry(msg["to"].as_str().unwrap().to_string()).or_default() += 1;
    }
    m
}

/// chromedriver on a free port, for tests that drive a page themselves
/// (the simulator's page, the dashboard); killed when dropped.
pub struct Chromedriver {
    pub url: String,
    child: ChildGuard,
}

impl Chromedriver {
    pub fn start() -> Chromedriver {
        let port = free_port();
        let bin = std::env::var("WASUP_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        let mut command = Command::new(bin);
        command.arg(format!("--port={port}")).stdout(Stdio::null()).stderr(Stdio::null());
        let child = ChildGuard::spawn(&mut command, Duration::ZERO).expect("start chromedriver");
        let driver = Chromedriver { url: format!("http://127.0.0.1:{port}"), child };
        wait_for("chromedriver to listen", Duration::from_secs(20), || {
            launch::request("GET", &format!("{}/status", driver.url), None, Body::Empty).ok().filter(|r| r.status == 200)
        });
        driver
    }

    /// A headless Chromium on `profile` whose every document records what
    /// its Content-Security-Policy blocks, from before the page's first
    /// script: `window.__violations`, a list of `"<directive> <blocked
    /// URI>"`. The recorder is a WebDriver BiDi preload script (it runs
    /// outside the page's CSP); the returned connection must live as long
    /// as the browser is used.
    pub async fn browser_watching_csp(&self, profile: &Path) -> (fantoccini::Client, wasup::whatsapp::bidi::Bidi) {
        use wasup::whatsapp::bidi::Bidi;
        let c = self.browser_with(profile, true).await;
        let url = c.capabilities().and_then(|caps| caps.get("webSocketUrl")).and_then(Value::as_str).expect("a webSocketUrl").to_string();
        let (bidi, _events) = Bidi::connect(&url).await.expect("the BiDi connection");
        let recorder = "() => { window.__violations = []; document.addEventListener('securitypolicyviolation', \
                        (e) => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI)); }";
        bidi.command("script.addPreloadScript", json!({"functionDeclaration": recorder}), Duration::from_secs(10))
            .await
            .expect("the CSP recorder installed");
        (c, bidi)
    }

    /// A headless Chromium on `profile`. Retries while a browser that just
    /// quit still holds the profile.
    pub async fn browser(&self, profile: &Path) -> fantoccini::Client {
        self.browser_with(profile, false).await
    }

    /// [`Chromedriver::browser`], with a BiDi WebSocket URL if `bidi`.
    async fn browser_with(&self, profile: &Path, bidi: bool) -> fantoccini::Client {
        let binary = std::env::var("WASUP_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let caps = json!({
            "goog:chromeOptions": {
                "binary": binary,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--window-size=1280,900", format!("--user-data-dir={}", profile.display()),
                ],
            }
        });
        let mut caps = caps.as_object().cloned().unwrap_or_default();
        if bidi {
            caps.insert("webSocketUrl".into(), json!(true));
            // A BiDi session otherwise dismisses a prompt (`confirm()`)
            // before a classic command can accept it.
            caps.insert("unhandledPromptBehavior".into(), json!("ignore"));
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match fantoccini::ClientBuilder::new(connector).capabilities(caps.clone()).connect(&self.url).await {
                Ok(c) => return c,
                Err(e) => {
                    assert!(Instant::now() < deadline, "no browser session: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        self.child.kill();
    }
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A `width` × `height` RGB PNG with a gradient (a picture a browser decodes).
pub fn png(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().expect("PNG header");
        let pixels: Vec<u8> =
            (0..height).flat_map(|y| (0..width).flat_map(move |x| [(x * 255 / width) as u8, (y * 255 / height) as u8, 128])).collect();
        writer.write_image_data(&pixels).expect("PNG data");
    }
    out
}

/// A small, well-formed PDF.
pub fn pdf() -> Vec<u8> {
    b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n".to_vec()
}

/// A `multipart/form-data` body: text parts, then a file part (name,
/// Content-Type, bytes). Returns (content type, body).
pub fn form(fields: &[(&str, &str)], file: Option<(&str, &str, &[u8])>) -> (String, Vec<u8>) {
    let boundary = "wasup-media-test-7f3a";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes());
    }
    if let Some((filename, content_type, bytes)) = file {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// A throwaway PostgreSQL, or `None` (with a note naming `scenarios`)
/// where none is installed; required when `WASUP_REQUIRE_POSTGRES` is set
/// (`scripts/test` sets it).
pub fn postgres(scenarios: &str) -> Option<wasup::pg_harness::TempPostgres> {
    postgres_available(scenarios).then(|| wasup::pg_harness::TempPostgres::start().expect("start a throwaway PostgreSQL"))
}

/// Whether PostgreSQL's binaries are here (for a test that starts its own
/// server); as for [`postgres`], their absence skips the `scenarios`, or
/// fails under `WASUP_REQUIRE_POSTGRES`.
pub fn postgres_available(scenarios: &str) -> bool {
    if !wasup::pg_harness::TempPostgres::available() {
        assert!(std::env::var_os("WASUP_REQUIRE_POSTGRES").is_none(), "WASUP_REQUIRE_POSTGRES is set but PostgreSQL is not installed");
        eprintln!("SKIPPED: no PostgreSQL here; the {scenarios} scenarios did not run");
        return false;
    }
    true
}

/// A cluster node's config lines (for [`Daemon::start`]'s extra config):
/// [`launch::cluster_config`] with the default `max_sessions` (40) and a
/// 2 s store timeout (a stopped database is noticed quickly).
pub fn cluster_node(url: &str, node: &str, lease_ttl: Duration, profiles: &Path) -> String {
    launch::cluster_config(url, node, lease_ttl, 40, Duration::from_secs(2), profiles)
}
