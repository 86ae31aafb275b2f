//! The same binary as a client of a running daemon: `wasup status`,
//! `wasup session …`, `wasup qr NAME`, `wasup campaign …`, `wasup node …`
//! (cluster mode).
//!
//! The daemon's address and token come from `--api`/`--token` (or
//! `WASUP_API`/`WASUP_TOKEN`), else from the config file (`http.listen`
//! and the token file), so on the daemon's host a plain `wasup status`
//! works. An error from the API is printed as one line (status and the
//! API's own message) and the exit code is 1.

use crate::campaign::CampaignState;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

use crate::config::Config;

/// Where the daemon is and how to get in.
#[derive(clap::Args, Debug, Clone)]
pub struct Connection {
    /// The daemon's API, e.g. `http://127.0.0.1:8787`; default from the config's `http.listen`.
    #[arg(long, env = "WASUP_API", global = true)]
    pub api: Option<String>,
    /// API token; default: the config's token file.
    #[arg(long, env = "WASUP_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// The daemon's configuration file (for the address and the token file).
    #[arg(long, short, default_value = "/etc/wasup/config.toml", global = true)]
    pub config: PathBuf,
}

/// `wasup session …`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum SessionCommand {
    /// List sessions.
    List,
    /// Create a session (and start it unless `--no-start`).
    Create {
        name: String,
        #[arg(long)]
        no_start: bool,
    },
    /// Start a session.
    Start { name: String },
    /// Stop a session (its browser closes; the profile stays).
    Stop { name: String },
    /// Restart a session's browser.
    Restart { name: String },
    /// Log out in WhatsApp, wipe the profile, offer a new QR.
    Logout { name: String },
    /// Clear the restart budget of a FAILED or BLOCKED session and restart it.
    Recover { name: String },
    /// Delete a session, its profile and history.
    Delete { name: String },
}

/// `wasup campaign …`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum CampaignCommand {
    /// List campaigns.
    List,
    /// Create a campaign from a CSV file (a `phone` column plus variables).
    Create {
        #[arg(long)]
        session: String,
        /// Message template (minijinja), e.g. "Hi {{ name }}!".
        #[arg(long)]
        template: String,
        #[arg(long)]
        csv: PathBuf,
        #[arg(long, default_value = "campaign")]
        name: String,
        #[arg(long, default_value = "20s")]
        min_delay: String,
        #[arg(long, default_value = "45s")]
        max_delay: String,
        /// Country for numbers without a country code (ISO 3166, e.g. DE).
        #[arg(long)]
        default_country: Option<String>,
        /// Create it as a DRAFT instead of starting it.
        #[arg(long)]
        draft: bool,
    },
    /// Follow a campaign with a progress bar until it ends.
    Watch {
        id: String,
    },
    Start {
        id: String,
    },
    Pause {
        id: String,
    },
    Resume {
        id: String,
    },
    Cancel {
        id: String,
    },
}

/// `wasup node …` (cluster mode; any node answers).
#[derive(clap::Subcommand, Debug, Clone)]
pub enum NodeCommand {
    /// List the nodes: live, draining, sessions, heartbeat age.
    List,
    /// Move a node's sessions to the other nodes for maintenance (each
    /// browser closes there once another node has room to take it).
    Drain { name: String },
    /// Let a drained node take sessions again.
    Undrain { name: String },
}

/// A client of the daemon's API (a [`crate::launch::Api`] whose errors
/// read as the CLI's messages).
pub struct Client {
    api: crate::launch::Api,
}

impl Client {
    /// Resolves the address and the token (see the module docs).
    pub fn connect(c: &Connection) -> anyhow::Result<Self> {
        let config = if c.config.exists() { Some(Config::load(&c.config)?) } else { None };
        let base = match &c.api {
            Some(api) => api.trim_end_matches('/').to_string(),
            None => {
                format!("http://{}", config.as_ref().map_or_else(|| "127.0.0.1:8787".parse().expect("valid address"), |c| c.http.listen))
            }
        };
        let token = match &c.token {
            Some(t) if !t.trim().is_empty() => t.trim().to_string(),
            _ => {
                let path = config.unwrap_or_default().token_path();
                std::fs::read_to_string(&path)
                    .with_context(|| format!("no token: pass --token or WASUP_TOKEN, or make {} readable", path.display()))?
                    .trim()
                    .to_string()
            }
        };
        Ok(Self { api: crate::launch::Api::new(base, token).with_timeout(Duration::from_secs(120)) })
    }

    /// Calls the API and returns its JSON answer.
    ///
    /// Errors: `HTTP <status>: <error>` (with the rows of a refused CSV)
    /// for a non-2xx answer; `cannot reach the daemon at <base>: <cause>`
    /// without an answer; the answer is not JSON.
    pub fn json(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let reply = match self.api.send(method, path, crate::launch::Body::json(body.as_ref())) {
            Ok(reply) => reply,
            Err(e) => bail!("cannot reach the daemon at {}: {e}", self.api.base),
        };
        if !reply.is_success() {
            let text = String::from_utf8_lossy(&reply.bytes).into_owned();
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| {
                    let mut m = v["error"].as_str()?.to_string();
                    for row in v["rows"].as_array().into_iter().flatten() {
                        m.push_str(&format!("; line {}: {}", row["line"], row["error"].as_str().unwrap_or("")));
                    }
                    Some(m)
                })
                .unwrap_or(text);
            bail!("HTTP {}: {message}", reply.status)
        }
        reply.json()
    }
}

fn ago(ms: Option<u64>) -> String {
    let Some(ms) = ms else { return "-".into() };
    let now = crate::session_state::now_ms();
    let secs = now.saturating_sub(ms) / 1000;
    humantime::format_duration(Duration::from_secs(secs)).to_string() + " ago"
}

fn print_sessions(sessions: &Value) {
    println!("{:<20} {:<13} {:<22} {:<18} {:<22} ME", "NAME", "STATE", "REASON", "SINCE", "NODE");
    for s in sessions.as_array().into_iter().flatten() {
        println!(
            "{:<20} {:<13} {:<22} {:<18} {:<22} {}",
            s["name"].as_str().unwrap_or(""),
            s["state"].as_str().unwrap_or(""),
            s["reason"].as_str().unwrap_or("-"),
            ago(s["since_ms"].as_u64()),
            s["node"].as_str().unwrap_or("-"),
            s["me"]["wid"].as_str().unwrap_or("-"),
        );
    }
}

fn print_nodes(nodes: &Value) {
    println!("{:<22} {:<5} {:<8} {:>8} {:>10}  SESSIONS", "NAME", "LIVE", "DRAINING", "SESSIONS", "HEARTBEAT");
    for n in nodes.as_array().into_iter().flatten() {
        let sessions: Vec<&str> = n["sessions"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let age = n["heartbeat_age_ms"].as_u64().unwrap_or(0);
        let age = humantime::format_duration(Duration::from_secs(age / 1000)).to_string() + " ago";
        println!(
            "{:<22} {:<5} {:<8} {:>8} {:>10}  {}",
            n["name"].as_str().unwrap_or(""),
            if n["live"] == true { "yes" } else { "no" },
            if n["draining"] == true { "yes" } else { "no" },
            format!("{}/{}", sessions.len(), n["max_sessions"].as_u64().unwrap_or(0)),
            age,
            sessions.join(" "),
        );
    }
}

fn print_campaigns(campaigns: &Value) {
    println!("{:<21} {:<16} {:<12} {:<10} {:>6} {:>6} {:>6} {:>6}", "ID", "NAME", "SESSION", "STATE", "SENT", "PEND", "FAIL", "TOTAL");
    for c in campaigns.as_array().into_iter().flatten() {
        let n = |k: &str| c["counts"][k].as_u64().unwrap_or(0);
        println!(
            "{:<21} {:<16} {:<12} {:<10} {:>6} {:>6} {:>6} {:>6}",
            c["id"].as_str().unwrap_or(""),
            c["name"].as_str().unwrap_or(""),
            c["session"].as_str().unwrap_or(""),
            c["state"].as_str().unwrap_or(""),
            n("SENT"),
            n("PENDING") + n("SENDING"),
            n("FAILED") + n("SKIPPED"),
            c["total"].as_u64().unwrap_or(0),
        );
    }
}

/// `wasup status`.
pub fn status(c: &Connection) -> anyhow::Result<()> {
    let client = Client::connect(c)?;
    let sessions = client.json("GET", "/api/sessions", None)?;
    let campaigns = client.json("GET", "/api/campaigns", None)?;
    println!("daemon: {} (up)", client.api.base);
    print_sessions(&sessions);
    let active: Vec<Value> = campaigns
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| CampaignState::of(&c["state"]).is_some_and(|s| !s.is_final()))
        .cloned()
        .collect();
    if !active.is_empty() {
        println!();
        print_campaigns(&Value::Array(active));
    }
    Ok(())
}

/// `wasup session …`.
pub fn session(c: &Connection, command: SessionCommand) -> anyhow::Result<()> {
    let client = Client::connect(c)?;
    let (name, action) = match command {
        SessionCommand::List => {
            print_sessions(&client.json("GET", "/api/sessions", None)?);
            return Ok(());
        }
        SessionCommand::Create { name, no_start } => {
            let v = client.json("POST", "/api/sessions", Some(json!({"name": name, "start": !no_start})))?;
            println!("created session {} ({})", name, v["state"].as_str().unwrap_or("?"));
            return Ok(());
        }
        SessionCommand::Delete { name } => {
            client.json("DELETE", &format!("/api/sessions/{name}"), None)?;
            println!("deleted session {name}");
            return Ok(());
        }
        SessionCommand::Start { name } => (name, "start"),
        SessionCommand::Stop { name } => (name, "stop"),
        SessionCommand::Restart { name } => (name, "restart"),
        SessionCommand::Logout { name } => (name, "logout"),
        SessionCommand::Recover { name } => (name, "recover"),
    };
    let v = client.json("POST", &format!("/api/sessions/{name}/{action}"), None)?;
    println!("session {name}: {}", v["state"].as_str().unwrap_or("?"));
    Ok(())
}

/// `wasup node …`: any node of the cluster answers. On one node (sled)
/// `list` says so and the others fail with the daemon's 409.
pub fn node(c: &Connection, command: NodeCommand) -> anyhow::Result<()> {
    let client = Client::connect(c)?;
    let (name, action, done) = match command {
        NodeCommand::List => {
            let v = client.json("GET", "/api/nodes", None)?;
            if v["cluster"] != true {
                println!("not a cluster: this daemon runs alone (store.backend = \"sled\")");
                return Ok(());
            }
            print_nodes(&v["nodes"]);
            return Ok(());
        }
        NodeCommand::Drain { name } => (name, "drain", "draining: its sessions move to the other nodes"),
        NodeCommand::Undrain { name } => (name, "undrain", "takes sessions again"),
    };
    let v = client.json("POST", &format!("/api/nodes/{name}/{action}"), None)?;
    let held = v["sessions"].as_array().map_or(0, Vec::len);
    println!("node {name} {done} (holds {held} now)");
    Ok(())
}

/// `wasup qr NAME`: draws the session's QR in the terminal.
pub fn qr(c: &Connection, name: &str) -> anyhow::Result<()> {
    let client = Client::connect(c)?;
    let v = client.json("GET", &format!("/api/sessions/{name}/qr?format=raw"), None)?;
    let data = v["qr"].as_str().context("the daemon sent no QR")?;
    println!("{}", crate::qr::terminal(data)?);
    println!("Scan it with WhatsApp > Linked devices > Link a device. It changes every 20 s: run `wasup qr {name}` again if it expired.");
    Ok(())
}

/// `wasup campaign …`.
pub fn campaign(c: &Connection, command: CampaignCommand) -> anyhow::Result<()> {
    let client = Client::connect(c)?;
    let (id, action) = match command {
        CampaignCommand::List => {
            print_campaigns(&client.json("GET", "/api/campaigns", None)?);
            return Ok(());
        }
        CampaignCommand::Create { session, template, csv, name, min_delay, max_delay, default_country, draft } => {
            let text = std::fs::read_to_string(&csv).with_context(|| format!("cannot read {}", csv.display()))?;
            let mut body = json!({
                "name": name, "session": session, "template": template, "csv": text,
                "pacing": {"min_delay": min_delay, "max_delay": max_delay}, "start": !draft,
            });
            if let Some(country) = default_country {
                body["default_country"] = json!(country);
            }
            let v = client.json("POST", "/api/campaigns", Some(body))?;
            println!(
                "created campaign {} ({}): {} recipients, {} duplicates dropped",
                v["id"].as_str().unwrap_or("?"),
                v["state"].as_str().unwrap_or("?"),
                v["total"],
                v["duplicates"]
            );
            return Ok(());
        }
        CampaignCommand::Watch { id } => return watch(&client, &id),
        CampaignCommand::Start { id } => (id, "start"),
        CampaignCommand::Pause { id } => (id, "pause"),
        CampaignCommand::Resume { id } => (id, "resume"),
        CampaignCommand::Cancel { id } => (id, "cancel"),
    };
    let v = client.json("POST", &format!("/api/campaigns/{id}/{action}"), None)?;
    println!("campaign {id}: {}", v["state"].as_str().unwrap_or("?"));
    Ok(())
}

/// Follows a campaign until it ends; exit code 1 unless it COMPLETED.
fn watch(client: &Client, id: &str) -> anyhow::Result<()> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg:30} [{bar:30}] {pos}/{len} (eta {eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    loop {
        let v = client.json("GET", &format!("/api/campaigns/{id}"), None)?;
        let n = |k: &str| v["counts"][k].as_u64().unwrap_or(0);
        bar.set_length(v["total"].as_u64().unwrap_or(0));
        bar.set_position(n("SENT") + n("FAILED") + n("SKIPPED"));
        let state = v["state"].as_str().unwrap_or("?").to_string();
        let reason = v["reason"].as_str().map(|r| format!(" ({r})")).unwrap_or_default();
        bar.set_message(format!("{state}{reason}"));
        let typed = CampaignState::of(&v["state"]);
        if typed.is_some_and(CampaignState::is_final) {
            bar.finish();
            println!("campaign {id} {state}{reason}: {} sent, {} failed, {} skipped", n("SENT"), n("FAILED"), n("SKIPPED"));
            if typed == Some(CampaignState::Completed) {
                return Ok(());
            }
            bail!("campaign {id} ended {state}{reason}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
