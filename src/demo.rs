//! `wasup demo`: the main job for a newcomer, on one machine with nothing
//! set up. Starts the simulator and the daemon as child processes (on free
//! loopback ports, state in a temporary dir), creates a session, shows its QR
//! in the terminal, lets the simulated phone scan it, sends one text through
//! the API, then runs a paced campaign from a CSV (by default
//! `examples/recipients.csv`, embedded) and prints its progress, its report
//! and what the simulator's WhatsApp received.

use std::io::Write as _;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::json;

use crate::launch::{wait_until, Body, DaemonSetup, Log, Sim, TempDir};

/// The repository's example recipients, embedded so the demo needs no files.
const EXAMPLE_CSV: &str = include_str!("../examples/recipients.csv");

/// Options of `wasup demo`.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Recipients CSV (a `phone` column plus template variables); default:
    /// the repository's `examples/recipients.csv`.
    #[arg(long)]
    pub csv: Option<std::path::PathBuf>,
    /// The campaign's message template (minijinja).
    #[arg(long, default_value = "Hi {{ name }}, greetings from wasup to {{ city }}!")]
    pub template: String,
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
    let dir = TempDir::new("wasup-demo")?;

    let mut sim = Sim::start(&exe, &[], Log::verbose(args.verbose))?;
    let sim_base = sim.base.clone();
    say(format!("started the WhatsApp Web simulator on {sim_base}"));
    // The number's own pacing (shared by all its campaigns) as the demo's,
    // with the warm-up ramp on: a new number's first day allows 20 sends.
    let numbers = format!(
        "[numbers]\nmin_delay = \"{}\"\nmax_delay = \"{}\"\n[numbers.warmup]\nenabled = true\n",
        humantime::format_duration(args.min_delay),
        humantime::format_duration(args.max_delay)
    );
    let setup = DaemonSetup::new(&dir.0, &sim_base, &numbers)?;
    let mut daemon = setup.start(&exe, args.verbose)?;
    let api = &setup.api;
    say(format!("started the daemon: API on {}", api.base));

    say("creating session \"demo\" (Chromium starts and opens WhatsApp Web)");
    api.call("POST", "/api/sessions", Some(json!({"name": "demo", "start": true})))?;
    let show = |state: &str| println!("    session demo: {state}");
    let qr = api.qr("demo", Duration::from_secs(90), show)?;
    say("scan this with WhatsApp > Linked devices (here the simulated phone does it):");
    println!("{}", crate::qr::terminal(&qr)?);

    let device = sim.scan(&qr, "4915112345678", "wasup demo")?;
    say(format!("the phone scanned the QR (device {device}); the page reloads and syncs"));
    let view = api.wait_state("demo", "CONNECTED", Duration::from_secs(60), show)?;
    say(format!("connected as {}", view["me"]["wid"].as_str().unwrap_or("?")));

    let sent = api.call("POST", "/api/sessions/demo/messages", Some(json!({"to": "+49 151 23456789", "text": "Hello from wasup"})))?;
    say(format!(
        "sent one text through the API: {} to {} (ack {})",
        sent["id"].as_str().unwrap_or("?"),
        sent["to"].as_str().unwrap_or("?"),
        sent["ack"].as_str().unwrap_or("?")
    ));

    let csv = match &args.csv {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
        None => EXAMPLE_CSV.to_string(),
    };
    let campaign = api.call(
        "POST",
        "/api/campaigns",
        Some(json!({
            "name": "demo campaign",
            "session": "demo",
            "template": args.template,
            "csv": csv,
            "default_country": "DE",
            "pacing": {
                "min_delay": humantime::format_duration(args.min_delay).to_string(),
                "max_delay": humantime::format_duration(args.max_delay).to_string(),
            },
            "start": true,
        })),
    )?;
    let id = campaign["id"].as_str().context("no campaign id")?.to_string();
    say(format!(
        "campaign {id}: {} recipients ({} duplicate dropped), a random {:?} to {:?} between sends",
        campaign["total"], campaign["duplicates"], args.min_delay, args.max_delay
    ));
    let mut last = String::new();
    let view = wait_until("the campaign to finish", Duration::from_secs(300), Duration::from_millis(200), || {
        let v = api.call("GET", &format!("/api/campaigns/{id}"), None).ok()?;
        let c = &v["counts"];
        let line = format!(
            "{}: {} sent, {} sending, {} pending, {} failed, {} skipped",
            v["state"].as_str().unwrap_or("?"),
            c["SENT"],
            c["SENDING"],
            c["PENDING"],
            c["FAILED"],
            c["SKIPPED"]
        );
        if line != last {
            println!("    {line}");
            last = line;
        }
        crate::campaign::CampaignState::of(&v["state"]).is_some_and(crate::campaign::CampaignState::is_final).then_some(v)
    })?;
    say(format!("campaign {}", view["state"].as_str().unwrap_or("?")));
    let report = api.send("GET", &format!("/api/campaigns/{id}/report.csv"), Body::Empty)?;
    anyhow::ensure!(report.is_success(), "GET /api/campaigns/{id}/report.csv: HTTP {}", report.status);
    let report = String::from_utf8(report.bytes)?;
    say("its report (GET /api/campaigns/{id}/report.csv):");
    for line in report.lines() {
        println!("    {line}");
    }

    let received = sim.messages(&device)?;
    say("what WhatsApp (the simulator) received from this account:");
    for m in &received {
        println!("    {}  {:<22} {}", m["id"].as_str().unwrap_or("?"), m["to"].as_str().unwrap_or("?"), m["body"].as_str().unwrap_or(""));
    }
    let history = api.call("GET", "/api/sessions/demo/history", None)?;
    say("the session's status history:");
    for h in history.as_array().into_iter().flatten() {
        println!("    {:<12} {}", h["state"].as_str().unwrap_or("?"), h["reason"].as_str().unwrap_or(""));
    }

    if args.hold {
        say(format!("holding: API {} (token {}), simulator {sim_base}; Ctrl-C to stop", api.base, api.token));
        let (tx, rx) = std::sync::mpsc::channel();
        ctrlc_channel(tx)?;
        let _ = rx.recv();
    }
    say("stopping the daemon and the simulator");
    daemon.terminate();
    sim.child().terminate();
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
