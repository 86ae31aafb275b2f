//! Cluster mode's faults (issue 13): several daemons ("nodes") on one
//! throwaway PostgreSQL ([`TempPostgres`]), sharing one profiles dir, each
//! with its own chromedriver and real Chromium against the simulator, all
//! on loopback. A test observer reads the lease table itself
//! ([`wasup::cluster::read_view`]) to know which node runs what.
//!
//! - A node SIGKILLed while it runs two sessions and a campaign: both
//!   sessions are `CONNECTED` on other nodes within the lease TTL plus a
//!   start, with no `SCAN_QR`, and the campaign completes with every
//!   recipient exactly once in the simulator's log.
//! - A node SIGSTOPped past the TTL, then SIGCONT: its session runs
//!   elsewhere; after it wakes it lets the session go without a send, and
//!   none of its browsers is left.
//! - A rolling restart of all three nodes during a campaign: no QR, no
//!   duplicate.
//! - A campaign with an attachment moves with its session: the next node
//!   reads the file its creator stored on the shared storage, and every
//!   recipient gets the document once.
//!
//! (PostgreSQL stopped and started mid-campaign is `tests/postgres_store.rs`,
//! whose node runs in cluster mode too.)

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use wasup::cluster::{read_view, ClusterView};
use wasup::pg_harness::TempPostgres;
use wasup::store::postgres::Pg;

/// The nodes' `cluster.lease_ttl` (short, so failover is quick to test).
const TTL: Duration = Duration::from_secs(6);

/// Up to three nodes (`node-a`, `node-b`, `node-c`) on one database and
/// one profiles dir.
struct Cluster {
    url: String,
    profiles: tempfile::TempDir,
    nodes: Vec<(String, Daemon)>,
    observer: Pg,
}

impl Cluster {
    fn new(pg: &TempPostgres) -> Self {
        let observer = Pg::start(&pg.url(), Duration::from_secs(5), "test-observer", TTL).expect("observer connection");
        Cluster { url: pg.url(), profiles: tempfile::tempdir().unwrap(), nodes: Vec::new(), observer }
    }

    /// Starts node `name`.
    fn start(&mut self, sim: &Sim, name: &str) {
        let config = cluster_node(&self.url, name, TTL, self.profiles.path());
        let daemon = Daemon::start(sim, &config);
        self.nodes.push((name.to_string(), daemon));
        // Live in the table before anything is asked of it.
        wait_for(&format!("{name} to beat"), Duration::from_secs(30), || self.view().node(name).filter(|n| n.live).map(|_| ()));
    }

    fn node(&self, name: &str) -> &Daemon {
        &self.nodes.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no node {name}")).1
    }

    fn node_mut(&mut self, name: &str) -> &mut Daemon {
        &mut self.nodes.iter_mut().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no node {name}")).1
    }

    fn view(&self) -> ClusterView {
        read_view(&self.observer, TTL.as_millis() as i64).expect("read the cluster tables")
    }

    /// The node holding a live lease on `session`.
    fn owner(&self, session: &str) -> Option<String> {
        self.view().owner(session).map(|l| l.node.clone())
    }

    /// Waits until `session` is `CONNECTED` on a node other than those in
    /// `not`; returns that node.
    fn wait_connected(&self, session: &str, not: &[&str], within: Duration) -> String {
        wait_for(&format!("{session} CONNECTED on another node"), within, || {
            let owner = self.owner(session).filter(|o| !not.contains(&o.as_str()))?;
            (self.node(&owner).session(session)["state"] == "CONNECTED").then_some(owner)
        })
    }

    /// Creates and pairs `session` through `via` (the only node up, so it
    /// runs there); returns the simulator's device id.
    fn pair(&self, sim: &Sim, via: &str, session: &str, phone: &str) -> String {
        let daemon = self.node(via);
        let device = daemon.pair(sim, session, phone);
        assert_eq!(self.owner(session).as_deref(), Some(via));
        device
    }
}

/// History states of `session` after its first `CONNECTED` hold no
/// `SCAN_QR` (a takeover never asks for a QR).
fn assert_no_qr_after_pairing(daemon: &Daemon, session: &str) {
    let states = daemon.history_states(session);
    let paired = states.iter().position(|s| s == "CONNECTED").expect("paired once");
    assert!(!states[paired..].iter().any(|s| s.starts_with("SCAN_QR")), "{session} asked for a QR: {states:?}");
}

/// Each of `to` delivered exactly once through `device`, and nothing else.
fn assert_each_once(sim: &Sim, device: &str, to: &[String]) {
    let log = deliveries(sim, device);
    for p in to {
        assert_eq!(log.get(&format!("{p}@c.us")), Some(&1), "{p} not delivered exactly once: {log:?}");
    }
    assert_eq!(log.values().sum::<usize>(), to.len(), "{log:?}");
}

fn campaign_body(session: &str, to: &[String], min: &str, max: &str) -> Value {
    let recipients: Vec<Value> = to.iter().map(|p| json!({"phone": format!("+{p}")})).collect();
    json!({
        "name": "cluster", "session": session, "template": "Hello from the cluster!", "recipients": recipients,
        "pacing": {"min_delay": min, "max_delay": max}, "start": true,
    })
}

#[test]
fn a_killed_node_s_sessions_and_campaign_move_without_a_qr_exactly_once() {
    let Some(pg) = postgres("cluster") else { return };
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let mut cluster = Cluster::new(&pg);
    cluster.start(&sim, "node-a");
    let one = cluster.pair(&sim, "node-a", "one", "4915111111111");
    let two = cluster.pair(&sim, "node-a", "two", "4915122222222");
    // The others join now: node-a keeps its two (no rebalancing of
    // running sessions).
    cluster.start(&sim, "node-b");
    cluster.start(&sim, "node-c");
    let to = numbers(8, 72_000_000);
    let id = cluster.node("node-a").campaign(campaign_body("one", &to, "400ms", "700ms"));
    cluster.node("node-a").wait_sent(&id, 2, Duration::from_secs(60));

    let killed = Instant::now();
    cluster.node_mut("node-a").kill();
    let on_one = cluster.wait_connected("one", &["node-a"], Duration::from_secs(90));
    let on_two = cluster.wait_connected("two", &["node-a"], Duration::from_secs(90));
    eprintln!("failover: both sessions CONNECTED elsewhere {:?} after the kill (lease_ttl {TTL:?})", killed.elapsed());

    let survivor = cluster.node(&on_one);
    let v = survivor.wait_campaign(&id, "COMPLETED", Duration::from_secs(120));
    assert_eq!(v["counts"]["SENT"], 8, "{v}");
    assert_each_once(&sim, &one, &to);
    assert!(deliveries(&sim, &two).is_empty());
    assert_no_qr_after_pairing(survivor, "one");
    assert_no_qr_after_pairing(cluster.node(&on_two), "two");
    let view = cluster.view();
    assert!(view.node("node-a").is_some_and(|n| !n.live && n.sessions.is_empty()), "{view:?}");
}

#[test]
fn a_stopped_node_wakes_fenced_and_sends_nothing() {
    let Some(pg) = postgres("cluster") else { return };
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let mut cluster = Cluster::new(&pg);
    cluster.start(&sim, "node-a");
    let device = cluster.pair(&sim, "node-a", "acme", "4915133333333");
    cluster.start(&sim, "node-b");
    let to = numbers(10, 73_000_000);
    let id = cluster.node("node-a").campaign(campaign_body("acme", &to, "800ms", "1200ms"));
    cluster.node("node-a").wait_sent(&id, 2, Duration::from_secs(60));

    // Cut off: stopped past the TTL while its campaign runs.
    let a_pid = cluster.node("node-a").pid();
    unsafe { libc::kill(a_pid as i32, libc::SIGSTOP) };
    let owner = cluster.wait_connected("acme", &["node-a"], Duration::from_secs(90));
    assert_eq!(owner, "node-b");
    cluster.node("node-b").wait_sent(&id, 4, Duration::from_secs(60));

    let woke_at = cluster.node("node-a").log().len();
    unsafe { libc::kill(a_pid as i32, libc::SIGCONT) };
    // It lets the session go (fenced, or its renewal found the lease gone)…
    wait_for("node-a to release the session", Duration::from_secs(20), || {
        cluster.node("node-a").log()[woke_at..].contains("cluster.released").then_some(())
    });
    // …sends nothing after it wakes, and keeps no browser.
    let after = cluster.node("node-a").log()[woke_at..].to_string();
    assert!(!after.contains("send in page"), "node-a sent after it woke:\n{after}");
    wait_for("node-a's browsers to be gone", Duration::from_secs(20), || {
        let procs = wasup::procfs::scan();
        let mine = wasup::procfs::descendants(&procs, a_pid);
        let browsers = procs.iter().filter(|p| mine.contains(&p.pid) && p.args.iter().any(|a| a.starts_with("--user-data-dir="))).count();
        (browsers == 0).then_some(())
    });

    let v = cluster.node("node-b").wait_campaign(&id, "COMPLETED", Duration::from_secs(120));
    assert_eq!(v["counts"]["SENT"], 10, "{v}");
    assert_each_once(&sim, &device, &to);
    assert_no_qr_after_pairing(cluster.node("node-b"), "acme");
    assert!(cluster.node_mut("node-a").is_running(), "node-a must survive being cut off");
}

#[test]
fn a_rolling_restart_of_every_node_loses_and_repeats_nothing() {
    let Some(pg) = postgres("cluster") else { return };
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let mut cluster = Cluster::new(&pg);
    cluster.start(&sim, "node-a");
    let device = cluster.pair(&sim, "node-a", "acme", "4915144444444");
    cluster.start(&sim, "node-b");
    cluster.start(&sim, "node-c");
    let to = numbers(12, 74_000_000);
    let id = cluster.node("node-a").campaign(campaign_body("acme", &to, "500ms", "900ms"));
    cluster.node("node-a").wait_sent(&id, 1, Duration::from_secs(60));

    // One node at a time, each back before the next goes; the session
    // moves off a node before that node comes back.
    let mut moves = 0;
    for name in ["node-a", "node-b", "node-c"] {
        let before = cluster.owner("acme").expect("acme runs");
        let stopped = Instant::now();
        assert!(cluster.node_mut(name).stop(), "{name} did not stop in time");
        if before == name {
            // Handed over at the stop (released), not left to expire.
            assert_ne!(cluster.owner("acme").as_deref(), Some(name), "{name} stopped and still holds the lease");
            let on = cluster.wait_connected("acme", &[name], Duration::from_secs(90));
            eprintln!("{name} stopped: acme moved to {on} in {:?}", stopped.elapsed());
            moves += 1;
        }
        cluster.node_mut(name).start_again();
        wait_for(&format!("{name} back"), Duration::from_secs(30), || cluster.view().node(name).filter(|n| n.live).map(|_| ()));
        cluster.node(&cluster.owner("acme").expect("acme runs")).wait_state("acme", "CONNECTED", Duration::from_secs(90));
    }
    assert!(moves >= 1, "the session never moved");
    let on = cluster.owner("acme").expect("acme runs");
    let v = cluster.node(&on).wait_campaign(&id, "COMPLETED", Duration::from_secs(180));
    assert_eq!(v["counts"]["SENT"], 12, "{v}");
    assert_each_once(&sim, &device, &to);
    assert_no_qr_after_pairing(cluster.node(&on), "acme");
}

#[test]
fn a_campaign_with_an_attachment_moves_with_its_session() {
    let Some(pg) = postgres("cluster") else { return };
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let mut cluster = Cluster::new(&pg);
    cluster.start(&sim, "node-a");
    let device = cluster.pair(&sim, "node-a", "acme", "4915155555555");
    cluster.start(&sim, "node-b");
    let to = numbers(4, 75_000_000);
    let csv: String = std::iter::once("phone".to_string()).chain(to.iter().map(|p| format!("+{p}"))).collect::<Vec<_>>().join("\n");
    let doc = pdf();
    let fields = [
        ("name", "terms"),
        ("session", "acme"),
        ("template", "Our terms are attached."),
        ("min_delay", "700ms"),
        ("max_delay", "900ms"),
        ("start", "true"),
        ("csv", csv.as_str()),
    ];
    let (content_type, body) = form(&fields, Some(("terms.pdf", "application/pdf", &doc)));
    let a = cluster.node("node-a");
    let r = request("POST", &format!("{}/api/campaigns", a.base), Some(&a.token), Some(&body), &content_type);
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    // On the storage every node shares, not in node-a's own state dir.
    let file = cluster.profiles.path().join(".campaigns").join(&id).join("attachment");
    assert_eq!(sha256_hex(&std::fs::read(&file).unwrap()), sha256_hex(&doc));
    assert!(!a.state_dir().join("campaigns").join(&id).exists());
    a.wait_sent(&id, 1, Duration::from_secs(60));

    // node-a goes (its state dir with it); node-b takes the session and
    // the campaign, and sends the rest of the document from the file.
    assert!(cluster.node_mut("node-a").stop(), "node-a did not stop in time");
    let on = cluster.wait_connected("acme", &["node-a"], Duration::from_secs(90));
    let v = cluster.node(&on).wait_campaign(&id, "COMPLETED", Duration::from_secs(120));
    assert_eq!(v["counts"]["SENT"], 4, "{v}");
    assert_each_once(&sim, &device, &to);
    for m in sim.messages(&device) {
        assert_eq!((&m["type"], &m["sha256"]), (&json!("document"), &json!(sha256_hex(&doc))), "{m}");
    }
    assert_no_qr_after_pairing(cluster.node(&on), "acme");
}
