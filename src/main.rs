//! `wasup`: one binary for the daemon (`serve`), the WhatsApp Web simulator
//! (`sim`), the newcomer's demo (`demo`) and the benchmark (`bench`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use wasup::{bench, cli, config, daemon, demo, sim, webdriver_double};

#[derive(Parser)]
#[command(name = "wasup", version, about = "Keeps WhatsApp Web sessions alive and sends paced campaigns")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: sessions, supervision and the HTTP API.
    Serve {
        /// Configuration file (TOML); see config.toml for every key.
        #[arg(long, short, default_value = "/etc/wasup/config.toml")]
        config: PathBuf,
    },
    /// Run the WhatsApp Web simulator (page, servers and the phone's control API).
    Sim(sim::SimArgs),
    /// Start the simulator and the daemon, pair a session, run a paced campaign.
    Demo(demo::DemoArgs),
    /// Show a running daemon's sessions and active campaigns.
    Status {
        #[command(flatten)]
        conn: cli::Connection,
    },
    /// Manage a running daemon's sessions.
    Session {
        #[command(flatten)]
        conn: cli::Connection,
        #[command(subcommand)]
        command: cli::SessionCommand,
    },
    /// Draw a session's QR in the terminal, to scan over ssh.
    Qr {
        #[command(flatten)]
        conn: cli::Connection,
        name: String,
    },
    /// Manage a running daemon's campaigns.
    Campaign {
        #[command(flatten)]
        conn: cli::Connection,
        #[command(subcommand)]
        command: cli::CampaignCommand,
    },
    /// Cluster mode: list the nodes; drain one for maintenance, or undrain it.
    Node {
        #[command(flatten)]
        conn: cli::Connection,
        #[command(subcommand)]
        command: cli::NodeCommand,
    },
    /// Measure reconnect time, send latency, detection, and the idle CPU and memory of every process; print a table.
    Bench(bench::BenchArgs),
    /// A browser test double standing in for chromedriver, for the cluster bench only: pages that are logged in at once, no browser.
    #[command(name = "webdriver-double", hide = true)]
    WebdriverDouble(webdriver_double::DoubleArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Serve { config } => config::Config::load(&config).map_err(anyhow::Error::from).and_then(daemon::run),
        Command::Sim(args) => sim::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Bench(args) => bench::run(args),
        Command::WebdriverDouble(args) => webdriver_double::run(args),
        Command::Status { conn } => cli::status(&conn),
        Command::Session { conn, command } => cli::session(&conn, command),
        Command::Qr { conn, name } => cli::qr(&conn, &name),
        Command::Campaign { conn, command } => cli::campaign(&conn, command),
        Command::Node { conn, command } => cli::node(&conn, command),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wasup: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs to journald under systemd (`JOURNAL_STREAM` set) or when
/// `WASUP_LOG=journald`, with the fields as journal fields (`SESSION=`,
/// `CAMPAIGN=`, `EVENT=`, `STATE=`, `REASON=`) and the levels as priorities
/// (error 3, warning 4, info 5); otherwise readable lines on stderr
/// (`WASUP_LOG=text` forces them). `RUST_LOG` filters either (default `info`).
fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = || tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let wanted = std::env::var("WASUP_LOG").unwrap_or_default();
    let journald = wanted == "journald" || (wanted != "text" && std::env::var_os("JOURNAL_STREAM").is_some());
    if journald {
        match tracing_journald::layer() {
            Ok(layer) => {
                let layer = layer.with_field_prefix(None).with_syslog_identifier("wasup".into());
                tracing_subscriber::registry().with(filter()).with(layer).init();
                return;
            }
            Err(e) => eprintln!("wasup: journald is not reachable ({e}); logging to stderr"),
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not in files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
