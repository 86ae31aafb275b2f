//! Cluster mode's events and webhooks, on a throwaway PostgreSQL
//! ([`wasup::pg_harness::TempPostgres`]):
//! - two daemons on one database (node-a, node-b), real Chromium against
//!   the simulator: the SSE stream of each node carries every node's
//!   events, each once, in order, marked with its node; a webhook
//!   configured on both nodes gets each event once in total, and a node's
//!   own webhook gets only that node's events; after PostgreSQL restarts,
//!   each node logs the relay's loss once and its recovery once, and
//!   events flow between the nodes again;
//! - in-process, without a browser: the pending deliveries of a node that
//!   stopped beating are adopted by the live nodes, each by one of them
//!   (POSTed once, with its id), a live node's are left to it, and a dead
//!   letter one node made is counted and replayed by another.

mod common;

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use wasup::events::{Event, EventName, Events};
use wasup::pg_harness::TempPostgres;

const NODES: [&str; 2] = ["node-a", "node-b"];

/// Node `node`'s config: the shared store and profiles, its own webhook
/// (`/own-<node>`) and the one every node has (`/shared`), both on
/// `session.*`.
fn node_config(pg: &TempPostgres, node: &str, profiles: &std::path::Path, hooks: &str) -> String {
    let cluster = cluster_node(&pg.url(), node, Duration::from_secs(6), profiles);
    format!(
        "{cluster}\
         [[webhooks]]\nurl = \"{hooks}/own-{node}\"\nsecret = \"s\"\nevents = [\"session.*\"]\n\
         [[webhooks]]\nurl = \"{hooks}/shared\"\nsecret = \"s\"\nevents = [\"session.*\"]\n\
         [webhook_delivery]\nbackoff_base = \"100ms\"\nbackoff_cap = \"1s\"\ntimeout = \"2s\"\n"
    )
}

/// When each event's JSON first reached a test's stream reader.
type Arrivals = Arc<Mutex<BTreeMap<String, std::time::Instant>>>;

/// Every event's JSON as `daemon`'s SSE stream carried it, in order, and
/// when each arrived.
fn record(daemon: &Daemon, arrivals: &Arrivals) -> Arc<Mutex<Vec<String>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (sink, arrived) = (seen.clone(), arrivals.clone());
    let resp = daemon.client().stream("/api/events", None).expect("SSE stream");
    assert_eq!(resp.status, 200);
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(resp.reader).lines() {
            let Ok(line) = line else { break };
            if let Some(data) = line.strip_prefix("data: ") {
                arrived.lock().unwrap().entry(data.to_string()).or_insert_with(std::time::Instant::now);
                sink.lock().unwrap().push(data.to_string());
            }
        }
    });
    seen
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not an event: {e}: {text}"))
}

/// The events of `node` among `stream`'s, published at or after `since_ms`.
fn of(stream: &[String], node: &str, since_ms: u64) -> Vec<String> {
    stream.iter().filter(|e| parse(e)["node"] == node && parse(e)["at_ms"].as_u64().unwrap_or(0) >= since_ms).cloned().collect()
}

/// Waits until, for each node, the other node's stream carries exactly
/// the events (from `since_ms` on) that the node's own stream carried, in
/// the same order, none twice; every event names its node.
fn assert_streams_agree(streams: &[Arc<Mutex<Vec<String>>>; 2], since_ms: u64) {
    for (i, node) in NODES.iter().enumerate() {
        let (own, other) = (&streams[i], &streams[1 - i]);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let local = of(&own.lock().unwrap(), node, since_ms);
            let relayed = of(&other.lock().unwrap(), node, since_ms);
            if local == relayed {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{node}'s events differ between its stream and the other node's:\nlocal: {local:#?}\nrelayed: {relayed:#?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    for s in streams {
        for e in s.lock().unwrap().iter() {
            assert!(NODES.contains(&parse(e)["node"].as_str().unwrap_or("")), "an event without its node: {e}");
        }
    }
}

/// Waits for a `session.status` `SCAN_QR` of `session` on every stream;
/// answers the node that published it.
fn scan_qr_everywhere(streams: &[Arc<Mutex<Vec<String>>>; 2], session: &str) -> String {
    let is_qr = |e: &String| {
        let v = parse(e);
        v["event"] == "session.status" && v["session"] == session && v["state"] == "SCAN_QR"
    };
    let nodes: Vec<String> = streams
        .iter()
        .map(|s| {
            let e = wait_for(&format!("{session} SCAN_QR on every stream"), Duration::from_secs(90), || {
                s.lock().unwrap().iter().find(|e| is_qr(e)).cloned()
            });
            parse(&e)["node"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    assert_eq!(nodes[0], nodes[1], "the streams disagree on who runs {session}");
    assert!(NODES.contains(&nodes[0].as_str()), "{session} runs on {:?}", nodes[0]);
    nodes[0].clone()
}

fn count(log: &str, what: &str) -> usize {
    log.matches(what).count()
}

#[test]
fn every_node_streams_every_nodes_events_once_and_webhooks_post_each_once() {
    let Some(mut pg) = postgres("cluster event") else { return };
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let hooks = Receiver::start();
    let profiles = tempfile::tempdir().unwrap();
    let daemons: Vec<Daemon> = NODES.iter().map(|n| Daemon::start(&sim, &node_config(&pg, n, profiles.path(), &hooks.base))).collect();
    let arrivals: [Arrivals; 2] = Default::default();
    let streams = [record(&daemons[0], &arrivals[0]), record(&daemons[1], &arrivals[1])];

    let r = daemons[0].api("POST", "/api/sessions", Some(json!({"name": "acme", "start": true})));
    assert_eq!(r.status, 201, "{:?}", r.body);
    let runner = scan_qr_everywhere(&streams, "acme");
    assert_streams_agree(&streams, 0);

    // Webhooks: each node's own hook gets only its events; the hook both
    // nodes have gets every event once in total, with one delivery id.
    let published: Vec<String> = NODES
        .iter()
        .enumerate()
        .flat_map(|(i, n)| of(&streams[i].lock().unwrap(), n, 0))
        .filter(|e| parse(e)["event"].as_str().unwrap().starts_with("session."))
        .collect();
    assert!(published.iter().any(|e| parse(e)["node"] == runner.as_str()), "{runner} published no session event");
    let bodies = |path: &str| -> Vec<String> {
        hooks.received().iter().filter(|r| r.path == path).map(|r| String::from_utf8_lossy(&r.body).into_owned()).collect()
    };
    wait_for("every session event at the shared hook", Duration::from_secs(30), || {
        let got = bodies("/shared");
        published.iter().all(|e| got.contains(e)).then_some(())
    });
    for node in NODES {
        let own = bodies(&format!("/own-{node}"));
        assert!(own.iter().all(|b| parse(b)["node"] == node), "{node}'s own hook got another node's event: {own:#?}");
    }
    wait_for(&format!("{runner}'s events at its own hook"), Duration::from_secs(30), || {
        let own = bodies(&format!("/own-{runner}"));
        published.iter().filter(|e| parse(e)["node"] == runner.as_str()).all(|e| own.contains(e)).then_some(())
    });
    let mut per_body: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in hooks.received().iter().filter(|r| r.path == "/shared") {
        per_body
            .entry(String::from_utf8_lossy(&r.body).into_owned())
            .or_default()
            .push(r.header("X-Wasup-Delivery").unwrap_or("").to_string());
    }
    for (body, ids) in &per_body {
        assert_eq!(ids.len(), 1, "the shared hook got one event {} times: {body}", ids.len());
    }

    // PostgreSQL restarts: each relay logs its loss once and its recovery
    // once, and events flow again between the nodes.
    pg.stop();
    for d in &daemons {
        wait_for("the relay to notice the outage", Duration::from_secs(20), || (count(&d.log(), "events.relay_lost") == 1).then_some(()));
    }
    pg.start_server().expect("PostgreSQL starts again");
    let up = std::time::Instant::now();
    for d in &daemons {
        wait_for("the relay to connect again", Duration::from_secs(30), || (count(&d.log(), "events.relay_recovered") == 1).then_some(()));
        assert_eq!(count(&d.log(), "events.relay_lost"), 1, "the outage was logged more than once:\n{}", d.log());
    }
    eprintln!("both relays connected again {} ms after PostgreSQL took connections", up.elapsed().as_millis());
    let since = wasup::session_state::now_ms();
    // The node's store connection comes back on its own schedule (after a
    // failed connect, calls fail at once for a second): a 503 meanwhile is
    // the documented answer, and a client asks again.
    let r = wait_for("the node to take a session again", Duration::from_secs(15), || {
        let r = daemons[1].api("POST", "/api/sessions", Some(json!({"name": "probe", "start": true})));
        (r.status != 503).then_some(r)
    });
    assert_eq!(r.status, 201, "{:?}", r.body);
    scan_qr_everywhere(&streams, "probe");
    assert_streams_agree(&streams, since);
    // The figure: how much later another node's stream has an event.
    let mut lag_ms: Vec<f64> = Vec::new();
    for (i, node) in NODES.iter().enumerate() {
        let (own, other) = (arrivals[i].lock().unwrap(), arrivals[1 - i].lock().unwrap());
        for e in of(&streams[i].lock().unwrap(), node, 0) {
            if let (Some(a), Some(b)) = (own.get(&e), other.get(&e)) {
                lag_ms.push(b.saturating_duration_since(*a).as_secs_f64() * 1000.0);
            }
        }
    }
    lag_ms.sort_by(f64::total_cmp);
    assert!(!lag_ms.is_empty());
    eprintln!(
        "relay lag (local SSE → other node's SSE), {} events: median {:.1} ms, max {:.1} ms",
        lag_ms.len(),
        lag_ms[lag_ms.len() / 2],
        lag_ms[lag_ms.len() - 1]
    );
    let metrics = daemons[0].api("GET", "/metrics", None);
    let text = String::from_utf8_lossy(&metrics.bytes);
    // Every sample carries its node in cluster mode.
    let received = text.lines().find(|l| l.starts_with("wasup_events_relay_total{node=\"node-a\",result=\"received\"}"));
    assert!(received.is_some_and(|l| !l.ends_with(" 0")), "{text}");
}

/// Config of an in-process node: `hook` on `session.*`, fast retries.
fn hooks_config(pg: &TempPostgres, node: &str, hook: &str) -> wasup::config::Config {
    let text = format!(
        "[store]\nbackend = \"postgres\"\nurl = \"{}\"\ntimeout = \"2s\"\n[cluster]\nnode = \"{node}\"\nadvertise = \"http://127.0.0.1:1\"\nlease_ttl = \"3s\"\n\
         [[webhooks]]\nurl = \"{hook}\"\nsecret = \"s\"\nevents = [\"session.*\"]\n\
         [webhook_delivery]\nbackoff_base = \"50ms\"\nbackoff_cap = \"300ms\"\ntimeout = \"2s\"\n",
        pg.url()
    );
    wasup::config::Config::parse(&text, std::path::Path::new("t")).unwrap()
}

/// One node's webhooks on the shared store, and its bus.
struct Node {
    store: wasup::store::Store,
    webhooks: wasup::webhooks::Webhooks,
    bus: Events,
}

impl Node {
    fn start(pg: &TempPostgres, name: &str, hook: &str) -> Node {
        let config = hooks_config(pg, name, hook);
        let store = wasup::store::Store::postgres(&pg.url(), Duration::from_secs(2), name, Duration::from_secs(3)).unwrap();
        let webhooks = wasup::webhooks::Webhooks::start(&config, store.clone()).unwrap();
        let bus = Events::new().with_sink(webhooks.sink()).with_node(name);
        let node = Node { store, webhooks, bus };
        // Its heartbeat row (`nodes`), as its Cluster actor would write it.
        node.heart().beat(&[]).unwrap();
        node
    }

    /// Its side of the cluster tables, to beat.
    fn heart(&self) -> wasup::cluster::ClusterDb {
        let name = self.bus.node().unwrap_or_default();
        wasup::cluster::ClusterDb::new(self.store.pg().unwrap().clone(), name, "http://127.0.0.1:1", 10, Duration::from_secs(3))
    }

    fn publish(&self, session: &str) {
        self.bus.publish(Event::session(EventName::SessionStatus, session).state("SCAN_QR", None));
    }

    fn pending(&self) -> u64 {
        self.webhooks.stats().pending.load(Ordering::Relaxed)
    }
}

#[test]
fn a_dead_nodes_deliveries_are_adopted_once_and_dead_letters_are_shared() {
    let Some(pg) = postgres("cluster event") else { return };
    let port = free_port();
    let hook = format!("http://127.0.0.1:{port}/hook");
    // node-x writes three deliveries nobody takes yet, then dies (stops
    // beating); node-w, live, has two of its own.
    let x = Node::start(&pg, "node-x", &hook);
    let w = Node::start(&pg, "node-w", &hook);
    let beating = Arc::new(Mutex::new(vec![w.heart()]));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let beater = {
        let (beating, stop) = (beating.clone(), stop.clone());
        // The live nodes' heartbeats, as their Cluster actors would write
        // them (every lease_ttl / 3 at most).
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for db in beating.lock().unwrap().iter() {
                    // Harmless if it fails: a node that misses beats is
                    // taken for dead, and the assertions say so.
                    let _ = db.beat(&[]);
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    for i in 0..3 {
        x.publish(&format!("x{i}"));
    }
    w.publish("w0");
    w.publish("w1");
    wait_for("pending deliveries", Duration::from_secs(20), || (x.pending() == 3 && w.pending() == 2).then_some(()));
    x.webhooks.stop(Duration::from_secs(5));
    let stored = x.store.deliveries().unwrap();
    assert_eq!(stored.iter().filter(|d| d.node.as_deref() == Some("node-x")).count(), 3, "{stored:?}");

    // Two live nodes with the same hook race to adopt node-x's once its
    // heartbeat is older than lease_ttl (3 s); node-w keeps beating.
    let y = Node::start(&pg, "node-y", &hook);
    let z = Node::start(&pg, "node-z", &hook);
    beating.lock().unwrap().extend([y.heart(), z.heart()]);
    let receiver = Receiver::start_on(port);
    wait_for("node-x's deliveries adopted and every delivery sent", Duration::from_secs(30), || {
        (x.store.deliveries().unwrap().is_empty() && receiver.received().len() >= 5).then_some(())
    });
    stays("no delivery twice", Duration::from_secs(2), || receiver.received().len() == 5);
    let mut by_session: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in receiver.received() {
        by_session
            .entry(r.json()["session"].as_str().unwrap().to_string())
            .or_default()
            .push(r.header("X-Wasup-Delivery").unwrap().to_string());
        assert_eq!(r.status, 200);
    }
    assert_eq!(by_session.keys().cloned().collect::<Vec<_>>(), ["w0", "w1", "x0", "x1", "x2"]);
    for (session, ids) in &by_session {
        assert_eq!(ids.len(), 1, "{session} POSTed {} times", ids.len());
        if session.starts_with('x') {
            assert!(stored.iter().any(|d| d.id == ids[0]), "{session} came with a new id: {ids:?}");
        }
    }
    // Every live node adopts (node-w too), node-x's three only.
    let delivered = |n: &Node| n.webhooks.stats().delivered.load(Ordering::Relaxed);
    let adopted = |n: &Node| n.webhooks.stats().adopted.load(Ordering::Relaxed);
    assert_eq!(adopted(&w) + adopted(&y) + adopted(&z), 3, "only node-x's deliveries are adopted");
    assert_eq!(delivered(&w), 2 + adopted(&w), "node-w sends its own and those it adopted");
    assert_eq!((delivered(&y), delivered(&z)), (adopted(&y), adopted(&z)), "node-y and node-z send what they adopted");

    // A dead letter node-y makes is counted by node-z at its next round and
    // replayed from node-z, which sends it.
    receiver.answer(400);
    y.publish("dead");
    let dead = wait_for("a dead letter", Duration::from_secs(20), || y.store.dead_letters(10).unwrap().into_iter().next());
    assert_eq!(dead.node.as_deref(), Some("node-y"));
    wait_for("node-z counting it", Duration::from_secs(10), || {
        (z.webhooks.stats().dead_letters.load(Ordering::Relaxed) == 1).then_some(())
    });
    receiver.answer(200);
    let before = delivered(&z);
    match z.webhooks.replay(&dead.id).unwrap() {
        wasup::webhooks::Replay::Scheduled(d) => assert_eq!(d.node.as_deref(), Some("node-z")),
        other => panic!("not replayed: {other:?}"),
    }
    receiver
        .wait_for("the replayed delivery", Duration::from_secs(20), |r| r.status == 200 && r.header("X-Wasup-Delivery") == Some(&dead.id));
    wait_for("node-z's delivery", Duration::from_secs(10), || (delivered(&z) == before + 1 && z.pending() == 0).then_some(()));
    let attempts: Vec<u16> =
        receiver.received().iter().filter(|r| r.header("X-Wasup-Delivery") == Some(&dead.id)).map(|r| r.status).collect();
    assert_eq!(attempts, [400, 200], "refused once by node-y, sent once by node-z");
    stop.store(true, Ordering::Relaxed);
    beater.join().unwrap();
    for n in [&w, &y, &z] {
        n.webhooks.stop(Duration::from_secs(5));
    }
}
