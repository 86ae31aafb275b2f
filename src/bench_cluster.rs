//! `wasup bench --cluster`: the figures of cluster mode at scale, on a
//! throwaway PostgreSQL ([`crate::pg_harness`], with `pg_stat_statements`)
//! and `--cluster-nodes` daemons on loopback whose chromedriver is the
//! browser test double ([`crate::webdriver_double`]): the lease and
//! placement logic are measured, not the page (the double answers a poll
//! at once and starts no browser). The daemons poll their pages
//! (`whatsapp.events = "poll"`, every 1 s): the double speaks no BiDi.
//!
//! | figure | how |
//! |---|---|
//! | placement | `--cluster-sessions` sessions created on the first node → every one `CONNECTED` with a node; how many each node runs |
//! | DB statements per idle session | `pg_stat_statements` reset once all are connected, read after `--db-window`: every statement any node ran (the bench's own reads excluded) per second, per session; and per node |
//! | API latency, owner vs non-owner | `--api-requests` `GET /api/sessions/{name}` and as many text sends, alternately at the node running the session and at another node (which forwards the send one hop); p50 / p99 |
//! | failover | the first node SIGKILLed (its double dies with it): once another node runs each of its sessions, the kill → the first `CONNECTED` in that session's history since the kill; p50 / p99 / max, and whether any history shows `SCAN_QR` since the kill |
//!
//! Each node may run `ceil(sessions / (nodes − 1))` sessions
//! (`cluster.max_sessions`), so the survivors can take the killed node's
//! share; `restart.boot_stagger` is `--stagger`, and `limits.sessions` is
//! the session count.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

use crate::bench::{ms, percentile, BenchArgs, Row};
use crate::launch::{wait_until, Api, Body, ChildGuard, DaemonSetup, Log};
use crate::pg_harness::TempPostgres;
use crate::session_state::now_ms;

/// One node of the bench cluster.
struct Node {
    name: String,
    setup: DaemonSetup,
    daemon: ChildGuard,
}

/// `s` in seconds with one decimal: `8.1 s`.
fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// The statements every backend ran so far (`pg_stat_statements`), and
/// the rows they returned or changed, the bench's own queries excluded.
fn statements(pg: &TempPostgres) -> anyhow::Result<(u64, u64)> {
    let out = pg.psql(
        "SELECT coalesce(sum(calls), 0)::bigint, coalesce(sum(rows), 0)::bigint FROM pg_stat_statements \
         WHERE query NOT ILIKE '%pg_stat_statements%'",
    )?;
    let mut it = out.trim().split('|').map(|v| v.trim().parse::<u64>());
    match (it.next(), it.next()) {
        (Some(Ok(calls)), Some(Ok(rows))) => Ok((calls, rows)),
        _ => bail!("pg_stat_statements answered {out:?}"),
    }
}

/// The busiest statements since the last reset: calls and the first 70
/// characters of each, for the bench's log.
fn top_statements(pg: &TempPostgres) -> anyhow::Result<String> {
    pg.psql(
        "SELECT calls, left(regexp_replace(query, '\\s+', ' ', 'g'), 70) FROM pg_stat_statements \
         WHERE query NOT ILIKE '%pg_stat_statements%' ORDER BY calls DESC LIMIT 8",
    )
}

/// Every session's view from `api`'s node.
fn list(api: &Api) -> anyhow::Result<Vec<Value>> {
    Ok(api.call("GET", "/api/sessions", None)?.as_array().cloned().unwrap_or_default())
}

fn timed(api: &Api, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let reply = api.send(method, path, Body::json(body))?;
    let took = t.elapsed();
    if !reply.is_success() {
        bail!("{method} {path}: HTTP {}: {}", reply.status, String::from_utf8_lossy(&reply.bytes));
    }
    Ok(took)
}

/// [`crate::bench::p50_p99`] of `v`, sorted first.
fn p50_p99(mut v: Vec<Duration>) -> String {
    v.sort();
    crate::bench::p50_p99(&v)
}

/// Runs the cluster figures and appends their rows. Errors: PostgreSQL or
/// a node could not start, or a step did not happen in time.
pub fn run(exe: &Path, dir: &Path, args: &BenchArgs, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let (total, count) = (args.cluster_sessions, args.cluster_nodes);
    let pg = TempPostgres::start_with(&["shared_preload_libraries=pg_stat_statements", "max_connections=200"])
        .context("the cluster bench needs PostgreSQL (Debian's postgresql, or WASUP_PG_BIN)")?;
    pg.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")?;
    let wrapper = crate::webdriver_double::write_wrapper(exe, dir)?;
    let profiles = dir.join("profiles");
    std::fs::create_dir_all(&profiles)?;
    let max_sessions = total.div_ceil(count - 1);
    let ttl = args.lease_ttl;

    let mut nodes = Vec::new();
    for i in 0..count {
        let name = format!("node-{}", (b'a' + i as u8) as char);
        let node_dir = dir.join(&name);
        std::fs::create_dir_all(&node_dir)?;
        let extra = format!(
            "events = \"poll\"\npoll_interval = \"1s\"\n[browser]\nchromedriver = \"{}\"\n[restart]\nboot_stagger = \"{}ms\"\n\
             [limits]\nsessions = {total}\n{}",
            wrapper.display(),
            args.stagger.as_millis(),
            crate::launch::cluster_config(&pg.url(), &name, ttl, max_sessions, crate::config::StoreConfig::default().timeout, &profiles)
        );
        // The double is the page: no simulator runs (the URL is never fetched).
        let setup = crate::bench::daemon_setup(&node_dir, "http://127.0.0.1:9", None, &extra)?;
        let token = nodes.first().map(|n: &Node| n.setup.api.token.clone());
        let setup = match token {
            Some(token) => setup.with_token(&token),
            None => setup,
        };
        let log = Log::File(node_dir.join("daemon.log"), "info");
        let daemon = setup.start_logging(exe, log).with_context(|| format!("cannot start {name}"))?;
        nodes.push(Node { name, setup, daemon });
    }
    let first = nodes[0].setup.api.clone();

    eprintln!("bench: cluster, {total} sessions on {count} nodes (lease_ttl {ttl:?}, stagger {:?})", args.stagger);
    let t = Instant::now();
    for i in 0..total {
        first.call("POST", "/api/sessions", Some(json!({"name": format!("s{i:04}"), "start": true})))?;
    }
    let mut last_report = Instant::now();
    let placed = wait_until("every session CONNECTED on a node", Duration::from_secs(1800), Duration::from_millis(250), || {
        let views = list(&first).ok()?;
        let connected: Vec<&Value> = views.iter().filter(|v| v["state"] == "CONNECTED" && v["node"].is_string()).collect();
        if last_report.elapsed() > Duration::from_secs(10) {
            let mut states: BTreeMap<String, u32> = BTreeMap::new();
            for v in &views {
                let reason = v["reason"].as_str().map(|r| format!(" ({r})")).unwrap_or_default();
                *states.entry(format!("{}{reason}", v["state"].as_str().unwrap_or("?"))).or_insert(0) += 1;
            }
            eprintln!("bench: {} of {total} connected after {}: {states:?}", connected.len(), secs(t.elapsed()));
            last_report = Instant::now();
        }
        (connected.len() == total as usize).then(|| per_node(&views))
    })?;
    let placement = t.elapsed();
    rows.push((
        format!("cluster placement, {total} sessions on {count} nodes"),
        format!("all CONNECTED {} after creation ({}; stagger {})", secs(placement), split(&placed), ms(args.stagger)),
        "—".into(),
    ));

    // Idle database load.
    eprintln!("bench: cluster, database statements over {:?}", args.db_window);
    pg.psql("SELECT pg_stat_statements_reset()")?;
    let (c0, r0) = statements(&pg)?;
    let window = Instant::now();
    std::thread::sleep(args.db_window);
    let (c1, r1) = statements(&pg)?;
    let seconds = window.elapsed().as_secs_f64();
    let (calls, rows_read) = (c1.saturating_sub(c0) as f64 / seconds, r1.saturating_sub(r0) as f64 / seconds);
    eprintln!("bench: busiest statements over the window (calls, text):\n{}", top_statements(&pg)?);
    rows.push((
        format!("DB statements per idle session, {total} sessions on {count} nodes"),
        format!(
            "{:.4}/s (all: {calls:.1}/s = {:.1}/s per node; rows {:.0}/s; lease_ttl {}; over {})",
            calls / f64::from(total),
            calls / f64::from(count),
            rows_read,
            secs(ttl),
            secs(args.db_window)
        ),
        "—".into(),
    ));

    // API latency at the owner and at a node that forwards.
    let views = list(&first)?;
    let (owner, other) = (&nodes[1], &nodes[2 % nodes.len()]);
    let name = views
        .iter()
        .find(|v| v["node"] == owner.name.as_str())
        .and_then(|v| v["name"].as_str())
        .context("the second node runs no session")?
        .to_string();
    eprintln!("bench: cluster, API latency on {name} (owner {}, non-owner {})", owner.name, other.name);
    let (mut read_owner, mut read_other, mut send_owner, mut send_other) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let path = format!("/api/sessions/{name}");
    let send_path = format!("{path}/messages");
    for i in 0..args.api_requests {
        read_owner.push(timed(&owner.setup.api, "GET", &path, None)?);
        read_other.push(timed(&other.setup.api, "GET", &path, None)?);
        let body = |k: u32| json!({"to": format!("+49151{:08}", k), "text": format!("bench {k}")});
        send_owner.push(timed(&owner.setup.api, "POST", &send_path, Some(&body(2 * i)))?);
        send_other.push(timed(&other.setup.api, "POST", &send_path, Some(&body(2 * i + 1)))?);
    }
    let n = args.api_requests;
    rows.push((
        format!("API read GET /api/sessions/{{name}}, {total} sessions"),
        format!("owner {}; non-owner {} (n={n} each)", p50_p99(read_owner), p50_p99(read_other)),
        "—".into(),
    ));
    rows.push((
        "API send POST …/messages (non-owner forwards one hop)".into(),
        format!("owner {}; non-owner {} (n={n} each)", p50_p99(send_owner), p50_p99(send_other)),
        "—".into(),
    ));

    // Failover: the first node SIGKILLed.
    let victim = nodes[0].name.clone();
    let moved: Vec<String> =
        views.iter().filter(|v| v["node"] == victim.as_str()).filter_map(|v| v["name"].as_str().map(str::to_string)).collect();
    let watcher = nodes[1].setup.api.clone();
    eprintln!("bench: cluster, SIGKILL {victim} with {} sessions", moved.len());
    let t0 = now_ms();
    let killed_at = Instant::now();
    nodes[0].daemon.kill();
    let after =
        wait_until("the killed node's sessions CONNECTED elsewhere", Duration::from_secs(1800), Duration::from_millis(250), || {
            let views = list(&watcher).ok()?;
            let by_name: HashMap<&str, &Value> = views.iter().filter_map(|v| Some((v["name"].as_str()?, v))).collect();
            let done = moved.iter().all(|m| {
                by_name.get(m.as_str()).is_some_and(|v| v["state"] == "CONNECTED" && v["node"].is_string() && v["node"] != victim.as_str())
            });
            done.then(|| per_node(&views))
        })?;
    let all_moved = killed_at.elapsed();
    let mut times = Vec::new();
    let mut qr = 0;
    for m in &moved {
        let history = watcher.call("GET", &format!("/api/sessions/{m}/history"), None)?;
        let entries: Vec<&Value> = history.as_array().into_iter().flatten().filter(|e| e["at_ms"].as_u64() >= Some(t0)).collect();
        qr += entries.iter().filter(|e| e["state"] == "SCAN_QR").count();
        let at = entries.iter().find(|e| e["state"] == "CONNECTED").and_then(|e| e["at_ms"].as_u64());
        let at = at.with_context(|| format!("{m} shows CONNECTED elsewhere but its history has no CONNECTED since the kill"))?;
        times.push(Duration::from_millis(at - t0));
    }
    times.sort();
    rows.push((
        format!("failover of a SIGKILLed node's {} sessions, lease_ttl {}", moved.len(), secs(ttl)),
        format!(
            "p50 {}, p99 {}, max {} (kill → CONNECTED on another node; all seen {} after; {qr} SCAN_QR; now {})",
            secs(percentile(&times, 50.0)),
            secs(percentile(&times, 99.0)),
            secs(times.last().copied().unwrap_or_default()),
            secs(all_moved),
            split(&after)
        ),
        "≤ lease_ttl + backoff, no QR".into(),
    ));
    for node in &mut nodes {
        node.daemon.terminate();
    }
    Ok(())
}

/// How many sessions each node runs, by node name.
fn per_node(views: &[Value]) -> BTreeMap<String, u32> {
    let mut by = BTreeMap::new();
    for v in views {
        if let Some(node) = v["node"].as_str() {
            *by.entry(node.to_string()).or_insert(0) += 1;
        }
    }
    by
}

/// `node-a 100, node-b 100`.
fn split(by: &BTreeMap<String, u32>) -> String {
    by.iter().map(|(n, c)| format!("{n} {c}")).collect::<Vec<_>>().join(", ")
}
