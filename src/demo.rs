//! `wasup demo`: the main job for a newcomer, on one machine with nothing
//! set up. Starts the simulator and the daemon as child processes (on free
//! loopback ports, state in a temporary dir), creates a session, shows its QR
//! in the terminal, lets the simulated phone scan it, sends a few paced texts
//! through the API and prints what the simulator's WhatsApp received.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rand::Rng as _;
use serde_json::{json, Value};

/// Options of `wasup demo`.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// How many texts to send.
    #[arg(long, default_value_t = 3)]
    pub messages: u32,
    /// Shortest pause between two sends.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub min_delay: Duration,
    /// Longest pause between two sends.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub max_delay: Duration,
    /// Keep the daemon and the simulator running until Ctrl-C, to explore the API.
    #[arg(long)]
    pub hold: bool,
    /// Show the daemon's and the simulator's logs.
    #[arg(long)]
    pub verbose: bool,
}

/// Kills and reaps a child process when dropped.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn terminate(&mut self) {
        if let Some(mut child) = self.0.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
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

struct Api {
    base: String,
    token: String,
}

impl Api {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let req = ureq::request(method, &format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {}", self.token))
            .timeout(Duration::from_secs(30));
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
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_until<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out after {within:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn say(text: impl AsRef<str>) {
    println!("\x1b[1m==>\x1b[0m {}", text.as_ref());
    let _ = std::io::stdout().flush();
}

/// Runs the demo. Errors: a child could not start, or a step did not
/// happen in time (each step names what it waited for).
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    if args.max_delay < args.min_delay {
        bail!("--max-delay must not be shorter than --min-delay");
    }
    let exe = std::env::current_exe().context("cannot find the wasup binary")?;
    let dir = std::env::temp_dir().join(format!("wasup-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run_in(&args, &exe, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(args: &DemoArgs, exe: &PathBuf, dir: &std::path::Path) -> anyhow::Result<()> {
    let (sim_port, api_port) = (free_port()?, free_port()?);
    let sim_base = format!("http://127.0.0.1:{sim_port}");
    let logs = || if args.verbose { Stdio::inherit() } else { Stdio::null() };

    say(format!("starting the WhatsApp Web simulator on {sim_base}"));
    let mut sim = ChildGuard(Some(
        Command::new(exe)
            .args(["sim", "--listen", &format!("127.0.0.1:{sim_port}")])
            .stdout(logs())
            .stderr(logs())
            .spawn()
            .context("cannot start the simulator")?,
    ));
    wait_until("the simulator", Duration::from_secs(20), || {
        ureq::get(&format!("{sim_base}/_phone/health")).call().ok()
    })?;

    let config_path = dir.join("config.toml");
    std::fs::write(
        &config_path,
        format!(
            "[http]\nlisten = \"127.0.0.1:{api_port}\"\n[state]\ndir = \"{}\"\n[whatsapp]\nurl = \"{sim_base}/\"\n",
            dir.join("state").display()
        ),
    )?;
    let token = format!("demo-{:016x}", rand::thread_rng().gen::<u64>());
    let api = Api { base: format!("http://127.0.0.1:{api_port}"), token: token.clone() };
    say(format!("starting the daemon: API on {}", api.base));
    let mut daemon = ChildGuard(Some(
        Command::new(exe)
            .args(["serve", "--config"])
            .arg(&config_path)
            .env("WASUP_TOKEN", &token)
            .stdout(logs())
            .stderr(logs())
            .spawn()
            .context("cannot start the daemon")?,
    ));
    wait_until("the daemon's /health", Duration::from_secs(20), || {
        ureq::get(&format!("{}/health", api.base)).call().ok()
    })?;

    say("creating session \"demo\" (Chromium starts and opens WhatsApp Web)");
    api.call("POST", "/api/sessions", Some(json!({"name": "demo", "start": true})))?;
    let mut last_state = String::new();
    let mut watch = |want: &str| -> Option<Value> {
        let view = api.call("GET", "/api/sessions/demo", None).ok()?;
        let state = view["state"].as_str().unwrap_or("").to_string();
        if state != last_state {
            println!("    session demo: {state}");
            last_state = state.clone();
        }
        (state == want).then_some(view)
    };
    wait_until("the session to show a QR", Duration::from_secs(90), || watch("SCAN_QR"))?;
    let qr = api.call("GET", "/api/sessions/demo/qr?format=raw", None)?;
    let qr = qr["qr"].as_str().context("no QR in the answer")?.to_string();
    say("scan this with WhatsApp > Linked devices (here the simulated phone does it):");
    println!("{}", crate::qr::terminal(&qr)?);

    let phone = "4915112345678";
    let scan = ureq::post(&format!("{sim_base}/_phone/scan"))
        .send_json(json!({"qr": qr, "phone": phone, "pushname": "wasup demo"}))
        .context("the simulated phone could not scan")?
        .into_json::<Value>()?;
    let device = scan["device"].as_str().unwrap_or("").to_string();
    say(format!("the phone scanned the QR (device {device}); the page reloads and syncs"));
    let view = wait_until("the session to connect", Duration::from_secs(60), || watch("CONNECTED"))?;
    say(format!("connected as {}", view["me"]["wid"].as_str().unwrap_or("?")));

    let recipients = ["+49 151 23456789", "+44 7700 900123", "+1 202 555 0143"];
    let mut rng = rand::thread_rng();
    for i in 0..args.messages {
        if i > 0 {
            let delay = rng.gen_range(args.min_delay..=args.max_delay);
            println!("    (paced: waiting {:.1} s)", delay.as_secs_f64());
            std::thread::sleep(delay);
        }
        let to = recipients[i as usize % recipients.len()];
        let text = format!("Hello from wasup, message {} of {}", i + 1, args.messages);
        let sent = api.call("POST", "/api/sessions/demo/messages", Some(json!({"to": to, "text": text})))?;
        println!(
            "    sent {} to {} (ack {})",
            sent["id"].as_str().unwrap_or("?"),
            sent["to"].as_str().unwrap_or("?"),
            sent["ack"].as_str().unwrap_or("?")
        );
    }

    let received: Value = ureq::get(&format!("{sim_base}/_phone/devices/{device}/messages")).call()?.into_json()?;
    say("what WhatsApp (the simulator) received from this account:");
    for m in received.as_array().into_iter().flatten() {
        println!(
            "    {}  {:<22} {}",
            m["id"].as_str().unwrap_or("?"),
            m["to"].as_str().unwrap_or("?"),
            m["body"].as_str().unwrap_or("")
        );
    }
    let history = api.call("GET", "/api/sessions/demo/history", None)?;
    say("the session's status history:");
    for h in history.as_array().into_iter().flatten() {
        println!("    {:<12} {}", h["state"].as_str().unwrap_or("?"), h["reason"].as_str().unwrap_or(""));
    }

    if args.hold {
        say(format!(
            "holding: API {} (token {}), simulator {sim_base}; Ctrl-C to stop",
            api.base, api.token
        ));
        let (tx, rx) = std::sync::mpsc::channel();
        let _ = ctrlc_channel(tx);
        let _ = rx.recv();
    }
    say("stopping the daemon and the simulator");
    daemon.terminate();
    sim.terminate();
    Ok(())
}

/// Sends on `tx` when SIGINT or SIGTERM arrives.
fn ctrlc_channel(tx: std::sync::mpsc::Sender<()>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::spawn(move || {
        runtime.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            if let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
                tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            }
            let _ = tx.send(());
        });
    });
    Ok(())
}
