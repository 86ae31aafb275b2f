//! The one harness for running the simulator and the daemon as child
//! processes of this binary, on free loopback ports with state in a
//! directory of the caller's, and for talking to them over HTTP: what
//! `wasup demo`, `wasup bench` and every integration test (through
//! `tests/common`) are built on.
//!
//! - [`free_port`]: the one port helper (the Driver actor uses it too).
//! - [`ChildGuard`]: the one child-process guard (stopped when dropped).
//! - [`Sim`]: `wasup sim` started and answering.
//! - [`DaemonSetup`]: a daemon configuration pointing at a simulator, and
//!   `wasup serve` started from it.
//! - [`Api`] and [`request`]: the one HTTP client; [`Api::send`] answers
//!   with any status as a [`Reply`] (so 4xx can be asserted on),
//!   [`Api::call`] turns a non-2xx answer into an error, [`Api::stream`]
//!   reads a body as it arrives (server-sent events).
//! - [`wait_until`]: polling a condition against a deadline.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rand::Rng as _;
use serde_json::Value;

/// How long one HTTP request may take by default (connect to last byte).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a started process has to answer on its port.
pub const LISTEN_TIMEOUT: Duration = Duration::from_secs(20);

/// A loopback port that was free a moment ago (another process may take it
/// before the caller binds it).
///
/// Errors: no port could be bound on 127.0.0.1.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Polls `check` every `every` until it returns `Some`, and returns that.
///
/// Errors: `timed out after {within:?} waiting for {what}` once `within`
/// has passed without `check` answering `Some`.
pub fn wait_until<T>(what: &str, within: Duration, every: Duration, mut check: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out after {within:?} waiting for {what}");
        }
        std::thread::sleep(every);
    }
}

/// A child process that is stopped (SIGTERM, then SIGKILL after its grace
/// period) and reaped when dropped.
pub struct ChildGuard {
    child: Option<Child>,
    grace: Duration,
}

impl ChildGuard {
    /// Spawns `command`; `grace` is how long [`ChildGuard::terminate`] and
    /// dropping wait after SIGTERM before SIGKILL.
    ///
    /// Errors: the process could not be spawned.
    pub fn spawn(command: &mut Command, grace: Duration) -> std::io::Result<Self> {
        Ok(Self { child: Some(command.spawn()?), grace })
    }

    /// The process id, while the process has not been stopped or killed.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` (a `libc::SIG*` number) without waiting; nothing if
    /// the process was already stopped or killed.
    pub fn signal(&self, signal: libc::c_int) {
        if let Some(child) = &self.child {
            // SAFETY: kill(2) on our own child's pid, which is not reaped yet.
            unsafe {
                libc::kill(child.id() as libc::pid_t, signal);
            }
        }
    }

    /// Whether the process is still running (it has not exited and was not
    /// stopped or killed through this guard).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// SIGTERM, then waits up to `within` for the process to exit (SIGKILL
    /// after that). Returns its exit status if it exited by itself in time,
    /// `None` if it had to be killed or was already stopped.
    pub fn stop(&mut self, within: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: kill(2) on our own child's pid, which is not reaped yet.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// [`ChildGuard::stop`] within the grace period. Returns whether it
    /// exited by itself (`true` if it was already stopped).
    pub fn terminate(&mut self) -> bool {
        self.child.is_none() || self.stop(self.grace).is_some()
    }

    /// SIGKILL and reap, no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Where a started process's log (stderr) goes.
pub enum Log {
    Inherit,
    Discard,
    /// To this file (created or truncated), with this `RUST_LOG` filter.
    File(PathBuf, &'static str),
}

impl Log {
    /// Inherit when `verbose`, else discard.
    pub fn verbose(verbose: bool) -> Self {
        if verbose {
            Log::Inherit
        } else {
            Log::Discard
        }
    }

    /// Points `command`'s stderr here (and sets `RUST_LOG` for a file).
    fn apply(self, command: &mut Command) -> anyhow::Result<()> {
        match self {
            Log::Inherit => command.stderr(Stdio::inherit()),
            Log::Discard => command.stderr(Stdio::null()),
            Log::File(path, filter) => {
                let file = std::fs::File::create(&path).with_context(|| format!("cannot create the log {}", path.display()))?;
                command.env("RUST_LOG", filter).stderr(Stdio::from(file))
            }
        };
        Ok(())
    }
}

/// A request body.
#[derive(Clone, Copy)]
pub enum Body<'a> {
    /// No body.
    Empty,
    /// A JSON document, sent as `application/json`.
    Json(&'a Value),
    /// These bytes with this `Content-Type`.
    Bytes { content_type: &'a str, bytes: &'a [u8] },
}

impl<'a> Body<'a> {
    /// `Json` for `Some`, `Empty` for `None`.
    pub fn json(value: Option<&'a Value>) -> Self {
        value.map_or(Body::Empty, Body::Json)
    }
}

/// An HTTP answer of any status.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// The body as JSON; `Null` when it is not JSON.
    pub body: Value,
    /// The `Content-Type` without parameters (`text/html`, not
    /// `text/html; charset=utf-8`).
    pub content_type: String,
    /// The body as sent.
    pub bytes: Vec<u8>,
    /// Every header, names as sent.
    pub headers: Vec<(String, String)>,
}

impl Reply {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body parsed as JSON.
    ///
    /// Errors: the body is not JSON.
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.bytes).context("the answer is not JSON")
    }
}

fn agent(timeout: Duration, pooled: bool) -> ureq::Agent {
    let builder = ureq::AgentBuilder::new().timeout(timeout);
    if pooled {
        builder.build()
    } else {
        builder.max_idle_connections(0).build()
    }
}

/// Sends one request built by `agent` and reads the whole answer.
fn perform(agent: &ureq::Agent, method: &str, url: &str, token: Option<&str>, body: Body<'_>) -> anyhow::Result<Reply> {
    let mut req = agent.request(method, url);
    if let Some(token) = token {
        req = req.set("Authorization", &format!("Bearer {token}"));
    }
    let result = match body {
        Body::Empty => req.call(),
        Body::Json(value) => req.set("Content-Type", "application/json").send_bytes(value.to_string().as_bytes()),
        Body::Bytes { content_type, bytes } => req.set("Content-Type", content_type).send_bytes(bytes),
    };
    let resp = match result {
        Ok(resp) | Err(ureq::Error::Status(_, resp)) => resp,
        Err(e) => return Err(anyhow::Error::new(e)),
    };
    let status = resp.status();
    let content_type = resp.content_type().to_string();
    let headers = resp.headers_names().into_iter().filter_map(|n| resp.header(&n).map(|v| (n.clone(), v.to_string()))).collect();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut bytes).context("reading the answer")?;
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok(Reply { status, body, content_type, bytes, headers })
}

/// One request to an absolute `url` on a new connection, with `token` as
/// bearer token, within [`REQUEST_TIMEOUT`]. Any status is a [`Reply`].
///
/// Errors: the request could not be sent or its answer not read (the
/// error names the URL).
pub fn request(method: &str, url: &str, token: Option<&str>, body: Body<'_>) -> anyhow::Result<Reply> {
    perform(&agent(REQUEST_TIMEOUT, false), method, url, token, body)
}

/// An answer whose body is read as it arrives (a server-sent event
/// stream); the connection closes when it is dropped.
pub struct Stream {
    pub status: u16,
    /// The `Content-Type` without parameters.
    pub content_type: String,
    /// The body.
    pub reader: Box<dyn std::io::Read + Send + Sync + 'static>,
}

/// Opens `GET url` on a new connection with `token` as bearer token and
/// returns as soon as the headers arrived; each read of the body may take
/// up to `read_timeout` (`None`: no limit). Any status is a [`Stream`].
///
/// Errors: the request could not be sent or no headers came back.
pub fn stream(url: &str, token: Option<&str>, read_timeout: Option<Duration>) -> anyhow::Result<Stream> {
    let mut builder = ureq::AgentBuilder::new().max_idle_connections(0);
    if let Some(timeout) = read_timeout {
        builder = builder.timeout_read(timeout);
    }
    let mut req = builder.build().get(url);
    if let Some(token) = token {
        req = req.set("Authorization", &format!("Bearer {token}"));
    }
    let resp = match req.call() {
        Ok(resp) | Err(ureq::Error::Status(_, resp)) => resp,
        Err(e) => return Err(anyhow::Error::new(e)),
    };
    Ok(Stream { status: resp.status(), content_type: resp.content_type().to_string(), reader: Box::new(resp.into_reader()) })
}

/// A blocking HTTP client of one base URL: the daemon's API (with its
/// bearer token) or the simulator's phone API (no token). Clones share
/// kept-alive connections.
#[derive(Clone)]
pub struct Api {
    /// `http://127.0.0.1:<port>`, no trailing slash.
    pub base: String,
    /// The bearer token; empty sends no `Authorization` header.
    pub token: String,
    timeout: Duration,
    pooled: bool,
    agent: ureq::Agent,
}

impl Api {
    /// A client that keeps connections alive, each request within
    /// [`REQUEST_TIMEOUT`].
    pub fn new(base: String, token: String) -> Self {
        Self { base, token, timeout: REQUEST_TIMEOUT, pooled: true, agent: agent(REQUEST_TIMEOUT, true) }
    }

    /// The same client with each request within `timeout`.
    pub fn with_timeout(self, timeout: Duration) -> Self {
        Self { timeout, agent: agent(timeout, self.pooled), ..self }
    }

    /// The same client opening a new connection for every request (as a
    /// one-off client would; kept-alive connections would count against
    /// the server's connection limits between requests).
    pub fn unpooled(self) -> Self {
        Self { pooled: false, agent: agent(self.timeout, false), ..self }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends `method path` with `body`; any status is a [`Reply`].
    ///
    /// Errors: the request could not be sent or its answer not read (the
    /// error is ureq's and names the URL).
    pub fn send(&self, method: &str, path: &str, body: Body<'_>) -> anyhow::Result<Reply> {
        let token = Some(self.token.as_str()).filter(|t| !t.is_empty());
        perform(&self.agent, method, &self.url(path), token, body)
    }

    /// [`stream`] of `GET path` with this client's token.
    ///
    /// Errors: as for [`stream`].
    pub fn stream(&self, path: &str, read_timeout: Option<Duration>) -> anyhow::Result<Stream> {
        stream(&self.url(path), Some(self.token.as_str()).filter(|t| !t.is_empty()), read_timeout)
    }

    /// Calls the API and returns the JSON answer.
    ///
    /// Errors: `{method} {path}: HTTP {status}: {body}` for a non-2xx
    /// answer, `{method} {path}: {cause}` when there is no answer or it is
    /// not JSON.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let reply = self.send(method, path, Body::json(body.as_ref())).with_context(|| format!("{method} {path}"))?;
        if !reply.is_success() {
            bail!("{method} {path}: HTTP {}: {}", reply.status, String::from_utf8_lossy(&reply.bytes));
        }
        reply.json().with_context(|| format!("{method} {path}"))
    }

    /// Waits until session `name` is in `state`, calling `seen` with each
    /// new state on the way; returns the session's view.
    ///
    /// Errors: not in `state` within `within`.
    pub fn wait_state(&self, name: &str, state: &str, within: Duration, mut seen: impl FnMut(&str)) -> anyhow::Result<Value> {
        let mut last = String::new();
        wait_until(&format!("session {name} to be {state}"), within, Duration::from_millis(20), || {
            let view = self.call("GET", &format!("/api/sessions/{name}"), None).ok()?;
            let now = view["state"].as_str().unwrap_or("").to_string();
            if now != last {
                seen(&now);
                last = now.clone();
            }
            (now == state).then_some(view)
        })
    }

    /// Waits until session `name` offers a QR (`SCAN_QR`) and returns the
    /// QR string; `seen` as for [`Api::wait_state`].
    ///
    /// Errors: no QR within `within`, or the daemon sent none.
    pub fn qr(&self, name: &str, within: Duration, seen: impl FnMut(&str)) -> anyhow::Result<String> {
        self.wait_state(name, "SCAN_QR", within, seen)?;
        let qr = self.call("GET", &format!("/api/sessions/{name}/qr?format=raw"), None)?;
        Ok(qr["qr"].as_str().context("the daemon sent no QR")?.to_string())
    }

    /// Polls `GET path` (on a new connection each time, no token) every
    /// `every` until it answers below 400.
    ///
    /// Errors: no such answer within `within`.
    fn wait_listening(&self, what: &str, path: &str, within: Duration, every: Duration) -> anyhow::Result<()> {
        wait_until(what, within, every, || request("GET", &self.url(path), None, Body::Empty).ok().filter(|r| r.status < 400).map(|_| ()))
    }
}

/// `wasup sim` on a free loopback port, answering; stopped when dropped
/// (SIGTERM, SIGKILL after 5 s).
pub struct Sim {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// A client of its phone API (no token, a new connection per request).
    pub phone: Api,
    child: ChildGuard,
}

impl Sim {
    /// Starts `exe sim --listen 127.0.0.1:<free port> extra…` with its
    /// stderr to `log` and waits (up to [`LISTEN_TIMEOUT`]) until
    /// `/_phone/health` answers.
    ///
    /// Errors: it could not be started or did not answer in time.
    pub fn start(exe: &Path, extra: &[&str], log: Log) -> anyhow::Result<Sim> {
        let port = free_port()?;
        let base = format!("http://127.0.0.1:{port}");
        let mut command = Command::new(exe);
        command.args(["sim", "--listen", &format!("127.0.0.1:{port}")]).args(extra).stdout(Stdio::null());
        log.apply(&mut command)?;
        let child = ChildGuard::spawn(&mut command, Duration::from_secs(5)).context("cannot start the simulator")?;
        let sim = Sim { phone: Api::new(base.clone(), String::new()).unpooled(), base, child };
        sim.phone.wait_listening("the simulator to listen", "/_phone/health", LISTEN_TIMEOUT, Duration::from_millis(20))?;
        Ok(sim)
    }

    /// The process, to signal or stop it.
    pub fn child(&mut self) -> &mut ChildGuard {
        &mut self.child
    }

    /// Scans `qr` with the simulated phone `phone` (E.164 digits) showing
    /// `pushname`; returns the device id.
    ///
    /// Errors: the simulator refused the scan (4xx) or did not answer.
    pub fn scan(&self, qr: &str, phone: &str, pushname: &str) -> anyhow::Result<String> {
        let answer = self
            .phone
            .call("POST", "/_phone/scan", Some(serde_json::json!({"qr": qr, "phone": phone, "pushname": pushname})))
            .context("the simulated phone could not scan")?;
        Ok(answer["device"].as_str().unwrap_or_default().to_string())
    }

    /// The messages device `device` received, oldest first (`{id, to,
    /// body, at_ms, …}` each).
    ///
    /// Errors: unknown device or no answer.
    pub fn messages(&self, device: &str) -> anyhow::Result<Vec<Value>> {
        let list = self.phone.call("GET", &format!("/_phone/devices/{device}/messages"), None)?;
        Ok(list.as_array().cloned().unwrap_or_default())
    }
}

/// In a [`DaemonSetup`]'s extra config: the daemon's own base URL.
pub const SELF_BASE: &str = "@SELF_BASE@";

/// A cluster node's config lines (for [`DaemonSetup::new`]'s extra
/// config): the PostgreSQL store at `url` waiting at most `store_timeout`
/// per call, node `node` advertised at its own base URL ([`SELF_BASE`]),
/// `lease_ttl`, `max_sessions`, and the shared `profiles` dir.
pub fn cluster_config(url: &str, node: &str, lease_ttl: Duration, max_sessions: u32, store_timeout: Duration, profiles: &Path) -> String {
    format!(
        "[store]\nbackend = \"postgres\"\nurl = \"{url}\"\ntimeout = \"{}ms\"\n[cluster]\nnode = \"{node}\"\n\
         advertise = \"{SELF_BASE}\"\nlease_ttl = \"{}ms\"\nmax_sessions = {max_sessions}\nprofiles_dir = \"{}\"\n",
        store_timeout.as_millis(),
        lease_ttl.as_millis(),
        profiles.display()
    )
}

/// A daemon configuration in a directory (state in `dir/state`) pointing
/// at a simulator, and `wasup serve` started from it.
pub struct DaemonSetup {
    pub config: PathBuf,
    /// A client of its API with its token (kept-alive connections).
    pub api: Api,
    pub state_dir: PathBuf,
}

impl DaemonSetup {
    /// Writes `dir/config.toml`: `[http] listen` on a free port, `[state]
    /// dir`, `[whatsapp] url = sim_base`, then `extra` (more TOML, which may
    /// continue the `[whatsapp]` table). In `extra`, [`SELF_BASE`] stands
    /// for this daemon's own base URL (a cluster node's `advertise`), and a
    /// `profiles_dir = …` line goes to `[state]`. Unless `extra` has its own
    /// `[numbers]` or `[numbers.warmup]`, the number's gap is 0 and its
    /// warm-up off, so each campaign's own pacing decides (tests and benches
    /// pace in milliseconds). The token is random.
    ///
    /// Errors: no free port, or the file could not be written.
    pub fn new(dir: &Path, sim_base: &str, extra: &str) -> anyhow::Result<Self> {
        let port = free_port()?;
        let state_dir = dir.join("state");
        let config = dir.join("config.toml");
        // A node of a cluster names its own API (`cluster.advertise`) and
        // shares a profiles dir with the others (`state.profiles_dir`).
        let base = format!("http://127.0.0.1:{port}");
        let extra = extra.replace(SELF_BASE, &base);
        let (state_lines, extra): (Vec<&str>, Vec<&str>) = extra.lines().partition(|l| l.trim_start().starts_with("profiles_dir"));
        let (state_lines, extra) = (state_lines.join("\n"), extra.join("\n"));
        let mut text = format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\n[state]\ndir = \"{}\"\n{state_lines}\n[whatsapp]\nurl = \"{sim_base}/\"\n{extra}\n",
            state_dir.display()
        );
        if !extra.contains("[numbers]") {
            text.push_str("[numbers]\nmin_delay = \"0s\"\nmax_delay = \"0s\"\n");
        }
        if !extra.contains("[numbers.warmup]") {
            text.push_str("[numbers.warmup]\nenabled = false\n");
        }
        std::fs::write(&config, text)?;
        let token = format!("local-{:016x}", rand::thread_rng().gen::<u64>());
        Ok(Self { config, api: Api::new(format!("http://127.0.0.1:{port}"), token), state_dir })
    }

    /// The same setup with `token` instead of a random one.
    pub fn with_token(mut self, token: &str) -> Self {
        self.api.token = token.to_string();
        self
    }

    /// Starts `wasup serve` and waits until `/health` answers.
    ///
    /// Errors: as for [`DaemonSetup::spawn`].
    pub fn start(&self, exe: &Path, verbose: bool) -> anyhow::Result<ChildGuard> {
        self.start_logging(exe, Log::verbose(verbose))
    }

    /// Like [`DaemonSetup::start`], with the daemon's log going to `log`.
    ///
    /// Errors: as for [`DaemonSetup::spawn`].
    pub fn start_logging(&self, exe: &Path, log: Log) -> anyhow::Result<ChildGuard> {
        self.spawn(exe, &[], log, Duration::from_millis(10))
    }

    /// Starts `exe serve --config <config>` with `WASUP_TOKEN` set, its log
    /// to `log`, then the variables `env` (which may override `RUST_LOG`),
    /// and polls `/health` every `every` until it answers (up to
    /// [`LISTEN_TIMEOUT`]). The process gets 30 s after SIGTERM when the
    /// guard terminates it.
    ///
    /// Errors: it could not be started or did not answer in time.
    pub fn spawn(&self, exe: &Path, env: &[(&str, &str)], log: Log, every: Duration) -> anyhow::Result<ChildGuard> {
        let mut command = Command::new(exe);
        command.args(["serve", "--config"]).arg(&self.config).env("WASUP_TOKEN", &self.api.token).stdout(Stdio::null());
        log.apply(&mut command)?;
        command.envs(env.iter().copied());
        let guard = ChildGuard::spawn(&mut command, Duration::from_secs(30)).context("cannot start the daemon")?;
        self.api.wait_listening("the daemon to listen", "/health", LISTEN_TIMEOUT, every)?;
        Ok(guard)
    }
}

/// A temporary directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates `<temp dir>/<prefix>-<pid>-<random>`.
    ///
    /// Errors: it could not be created.
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}-{:08x}", std::process::id(), rand::thread_rng().gen::<u32>()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
