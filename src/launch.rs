//! Running the simulator and the daemon as child processes of this binary,
//! on free loopback ports with state in a directory of the caller's: what
//! `wasup demo` and `wasup bench` are built on.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rand::Rng as _;
use serde_json::Value;

/// A child process that is stopped (SIGTERM, then SIGKILL after 30 s) and
/// reaped when dropped.
pub struct ChildGuard(Option<Child>);

impl ChildGuard {
    pub fn pid(&self) -> Option<u32> {
        self.0.as_ref().map(Child::id)
    }

    /// SIGTERM and wait (SIGKILL after 30 s). Returns whether it exited by
    /// itself.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.0.take() else { return true };
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// A blocking client of the daemon's API (one agent, so connections are
/// kept alive between calls).
pub struct Api {
    pub base: String,
    pub token: String,
    agent: ureq::Agent,
}

impl Api {
    pub fn new(base: String, token: String) -> Self {
        Self { base, token, agent: ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build() }
    }

    /// Calls the API; a non-2xx answer is an error carrying its body.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let req = self.agent.request(method, &format!("{}{path}", self.base)).set("Authorization", &format!("Bearer {}", self.token));
        let resp = match body {
            Some(body) => req.send_json(body),
            None => req.call(),
        };
        match resp {
            Ok(resp) => Ok(resp.into_json()?),
            Err(ureq::Error::Status(code, resp)) => {
                let text = resp.into_string().unwrap_or_default();
                bail!("{method} {path}: HTTP {code}: {text}")
            }
            Err(e) => bail!("{method} {path}: {e}"),
        }
    }

    /// Waits until session `name` is in `state`, calling `seen` with each
    /// new state on the way; returns the session's view.
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
    pub fn qr(&self, name: &str, within: Duration, seen: impl FnMut(&str)) -> anyhow::Result<String> {
        self.wait_state(name, "SCAN_QR", within, seen)?;
        let qr = self.call("GET", &format!("/api/sessions/{name}/qr?format=raw"), None)?;
        Ok(qr["qr"].as_str().context("the daemon sent no QR")?.to_string())
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Polls `check` every `every` until it returns `Some`; errors after `within`.
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

fn output(verbose: bool) -> Stdio {
    if verbose {
        Stdio::inherit()
    } else {
        Stdio::null()
    }
}

/// Starts `wasup sim` on a free port and waits until it answers.
/// Returns the process and its base URL (`http://127.0.0.1:<port>`).
pub fn start_sim(exe: &Path, extra: &[&str], verbose: bool) -> anyhow::Result<(ChildGuard, String)> {
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let child = Command::new(exe)
        .args(["sim", "--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .stdout(output(verbose))
        .stderr(output(verbose))
        .spawn()
        .context("cannot start the simulator")?;
    let guard = ChildGuard(Some(child));
    wait_until("the simulator", Duration::from_secs(20), Duration::from_millis(20), || {
        ureq::get(&format!("{base}/_phone/health")).call().ok()
    })?;
    Ok((guard, base))
}

/// Where a started daemon's log goes.
pub enum Log {
    Inherit,
    Discard,
    /// To this file, with this `RUST_LOG` filter.
    File(PathBuf, &'static str),
}

/// A daemon configuration in `dir` (state in `dir/state`) pointing at the
/// simulator, with a random token.
pub struct DaemonSetup {
    pub config: PathBuf,
    pub api: Api,
    pub state_dir: PathBuf,
}

impl DaemonSetup {
    /// Writes `dir/config.toml`: `[http] listen` on a free port, `[state]
    /// dir`, `[whatsapp] url = sim_base`, then `extra` (more TOML).
    pub fn new(dir: &Path, sim_base: &str, extra: &str) -> anyhow::Result<Self> {
        let port = free_port()?;
        let state_dir = dir.join("state");
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[http]\nlisten = \"127.0.0.1:{port}\"\n[state]\ndir = \"{}\"\n[whatsapp]\nurl = \"{sim_base}/\"\n{extra}",
                state_dir.display()
            ),
        )?;
        let token = format!("local-{:016x}", rand::thread_rng().gen::<u64>());
        Ok(Self { config, api: Api::new(format!("http://127.0.0.1:{port}"), token), state_dir })
    }

    /// Starts `wasup serve` and waits until `/health` answers.
    pub fn start(&self, exe: &Path, verbose: bool) -> anyhow::Result<ChildGuard> {
        self.start_logging(exe, if verbose { Log::Inherit } else { Log::Discard })
    }

    /// Like [`DaemonSetup::start`], with the daemon's log going to `log`.
    pub fn start_logging(&self, exe: &Path, log: Log) -> anyhow::Result<ChildGuard> {
        let mut command = Command::new(exe);
        command.args(["serve", "--config"]).arg(&self.config).env("WASUP_TOKEN", &self.api.token).stdout(Stdio::null());
        match log {
            Log::Inherit => command.stderr(Stdio::inherit()),
            Log::Discard => command.stderr(Stdio::null()),
            Log::File(path, filter) => command.env("RUST_LOG", filter).stderr(Stdio::from(std::fs::File::create(path)?)),
        };
        let child = command.spawn().context("cannot start the daemon")?;
        let guard = ChildGuard(Some(child));
        wait_until("the daemon's /health", Duration::from_secs(20), Duration::from_millis(10), || {
            ureq::get(&format!("{}/health", self.api.base)).call().ok()
        })?;
        Ok(guard)
    }
}

/// Scans `qr` with the simulated phone; returns the device id.
pub fn scan(sim_base: &str, qr: &str, phone: &str, pushname: &str) -> anyhow::Result<String> {
    let answer: Value = ureq::post(&format!("{sim_base}/_phone/scan"))
        .send_json(serde_json::json!({"qr": qr, "phone": phone, "pushname": pushname}))
        .context("the simulated phone could not scan")?
        .into_json()?;
    Ok(answer["device"].as_str().unwrap_or_default().to_string())
}

/// A temporary directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
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
