//! Cluster mode's API: two daemons (node-a, node-b) on one throwaway
//! PostgreSQL ([`wasup::pg_harness::TempPostgres`]), sharing one profiles
//! dir, with real Chromium against the simulator. Any node answers: the
//! other node shows the session's `node`, forwards a send (delivered
//! once), a restart and the QR to the owner, answers 503 with
//! `Retry-After` when no node runs what a request needs, and never
//! forwards a forwarded request again. A drain moves the session to the
//! other node without a QR. On sled the same routes say there is no
//! cluster.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use wasup::pg_harness::TempPostgres;

/// A node of the cluster: its API advertised at its own base URL, the
/// shared profiles dir, a short lease.
fn node_config(pg: &TempPostgres, node: &str, profiles: &Path) -> String {
    cluster_node(&pg.url(), node, Duration::from_secs(6), profiles)
}

/// The node holding `session`'s live lease, as `GET /api/nodes` on `d` says.
fn owner(d: &Daemon, session: &str) -> Option<String> {
    let r = d.api("GET", "/api/nodes", None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["nodes"].as_array()?.iter().find(|n| n["sessions"].as_array().is_some_and(|s| s.contains(&json!(session))))?["name"]
        .as_str()
        .map(str::to_string)
}

/// `method path` on `d` with `X-Wasup-Forwarded` set (as a node forwards).
fn forwarded(d: &Daemon, method: &str, path: &str, body: Value) -> (u16, Value) {
    let req = ureq::request(method, &format!("{}{path}", d.base))
        .set("Authorization", &format!("Bearer {}", d.token))
        .set("X-Wasup-Forwarded", "a-test");
    let resp = match req.send_json(body) {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {path}: {e}"),
    };
    let status = resp.status();
    (status, resp.into_json().unwrap_or(Value::Null))
}

/// The `wasup` CLI against `d`.
fn cli(d: &Daemon, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .args(["--api", &d.base, "--token", &d.token, "--config", "/nonexistent/wasup.toml"])
        .env_remove("WASUP_TOKEN")
        .env_remove("WASUP_API")
        .output()
        .unwrap();
    assert!(out.status.success(), "wasup {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn any_node_answers_forwards_to_the_owner_and_a_drain_moves_the_session() {
    let Some(pg) = postgres("cluster API") else { return };
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let profiles = tempfile::tempdir().unwrap();
    let mut a = Daemon::start(&sim, &node_config(&pg, "node-a", profiles.path()));
    let mut b = Daemon::start(&sim, &node_config(&pg, "node-b", profiles.path()));
    let begun = Instant::now();
    wait_for("both nodes live", Duration::from_secs(30), || {
        let v = a.api("GET", "/api/nodes", None).body;
        let live = v["nodes"].as_array()?.iter().filter(|n| n["live"] == true).count();
        (live == 2).then_some(())
    });
    let v = b.api("GET", "/api/nodes", None).body;
    assert_eq!((&v["cluster"], &v["node"]), (&json!(true), &json!("node-b")), "{v}");
    assert!(v["nodes"].as_array().unwrap().iter().all(|n| n["heartbeat_age_ms"].as_u64().is_some_and(|ms| ms < 6000)), "{v}");

    // Created through node-a; placement puts it on either node, and the
    // other one serves its QR from the owner.
    let r = a.api("POST", "/api/sessions", Some(json!({"name": "acme", "start": true})));
    assert_eq!(r.status, 201, "{:?}", r.body);
    let owner_name = wait_for("acme's owner", Duration::from_secs(30), || owner(&a, "acme"));
    let (owner_d, other) = if owner_name == "node-a" { (&a, &b) } else { (&b, &a) };
    other.wait_state("acme", "SCAN_QR", Duration::from_secs(90));
    let qr = wait_for("a QR through the other node", Duration::from_secs(30), || {
        let r = other.api("GET", "/api/sessions/acme/qr?format=raw", None);
        (r.status == 200).then(|| {
            assert_eq!(r.header("x-wasup-node"), Some(owner_name.as_str()), "answered by the owner");
            r.body["qr"].as_str().unwrap().to_string()
        })
    });
    let png = other.api("GET", "/api/sessions/acme/qr", None);
    assert_eq!((png.status, png.content_type.as_str()), (200, "image/png"), "{:?}", png.body);
    assert!(png.bytes.starts_with(b"\x89PNG"), "the owner's PNG, as it sent it");
    let device = sim.scan(&qr, "4915112345678");
    other.wait_state("acme", "CONNECTED", Duration::from_secs(60));
    let paired_in = begun.elapsed();
    for d in [&a, &b] {
        assert_eq!(d.session("acme")["node"], json!(owner_name), "GET /api/sessions/acme on {}", d.base);
        let list = d.api("GET", "/api/sessions", None).body;
        assert_eq!(list[0]["node"], json!(owner_name), "{list}");
    }
    assert!(cli(other, &["session", "list"]).lines().any(|l| l.starts_with("acme") && l.contains(&owner_name)));
    let nodes = cli(other, &["node", "list"]);
    assert!(nodes.lines().any(|l| l.starts_with(&owner_name) && l.contains("acme")), "{nodes}");

    // A send through the other node goes to the owner and arrives once.
    let t0 = Instant::now();
    let r = other.api("POST", "/api/sessions/acme/messages", Some(json!({"to": "+49 151 99990001", "text": "via the other node"})));
    let forwarded_send = t0.elapsed();
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.header("x-wasup-node"), Some(owner_name.as_str()), "answered by the owner");
    assert_eq!(deliveries(&sim, &device).get("4915199990001@c.us"), Some(&1));
    // A forwarded request is answered where it arrives: the other node
    // does not run acme, so it does not send (and does not pass it on).
    let (status, body) = forwarded(other, "POST", "/api/sessions/acme/messages", json!({"to": "+4915199990002", "text": "no"}));
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].as_str().unwrap_or("").contains("lease"), "{body}");
    // The owner answers a forwarded one itself.
    // Once more, for the figure (the first send of a session is slower).
    let t0 = Instant::now();
    let r = other.api("POST", "/api/sessions/acme/messages", Some(json!({"to": "+49 151 99990007", "text": "again"})));
    let forwarded_send = (forwarded_send, t0.elapsed());
    assert_eq!(r.status, 201, "{:?}", r.body);
    let t0 = Instant::now();
    let (status, body) = forwarded(owner_d, "POST", "/api/sessions/acme/messages", json!({"to": "+4915199990003", "text": "yes"}));
    let direct_send = t0.elapsed();
    assert_eq!(status, 201, "{body}");

    // A restart through the other node happens on the owner.
    let r = other.api("POST", "/api/sessions/acme/restart", None);
    assert_eq!((r.status, r.header("x-wasup-node")), (200, Some(owner_name.as_str())), "{:?}", r.body);
    assert_eq!(r.body["node"], json!(owner_name));
    wait_for("acme restarted", Duration::from_secs(60), || {
        let states = owner_d.history_states("acme");
        let paired = states.iter().position(|s| s == "CONNECTED")?;
        states[paired + 1..].iter().any(|s| s.starts_with("CONNECTED")).then_some(())
    });

    // Campaigns through the other node: one created with start (forwarded
    // whole, it runs on the owner), one created as a draft (stored where
    // it arrives) and started there (forwarded by its session).
    let campaign = |phones: &[&str], start: bool| {
        let recipients: Vec<Value> = phones.iter().map(|p| json!({"phone": format!("+{p}")})).collect();
        let body = json!({"name": "c", "session": "acme", "template": "Hello!", "recipients": recipients,
            "pacing": {"min_delay": "100ms", "max_delay": "200ms"}, "start": start});
        let r = other.api("POST", "/api/campaigns", Some(body));
        assert_eq!(r.status, 201, "{:?}", r.body);
        (r.body["id"].as_str().unwrap().to_string(), r.header("x-wasup-node").map(str::to_string))
    };
    let (started, by) = campaign(&["4915199990101", "4915199990102"], true);
    assert_eq!(by.as_deref(), Some(owner_name.as_str()), "a started campaign is created by the owner");
    let (draft, by) = campaign(&["4915199990103"], false);
    assert_eq!(by, None, "a draft is stored where it arrives");
    let r = other.api("POST", &format!("/api/campaigns/{draft}/start"), None);
    assert_eq!((r.status, r.header("x-wasup-node")), (200, Some(owner_name.as_str())), "{:?}", r.body);
    for id in [&started, &draft] {
        other.wait_campaign(id, "COMPLETED", Duration::from_secs(60));
    }

    // No node runs "idle" (created stopped): its logout needs a browser.
    let r = other.api("POST", "/api/sessions", Some(json!({"name": "idle", "start": false})));
    assert_eq!((r.status, &r.body["node"]), (201, &Value::Null), "{:?}", r.body);
    let r = other.api("POST", "/api/sessions/idle/logout", None);
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(r.header("retry-after"), Some("2"), "lease_ttl 6 s / 3");
    assert!(r.body["error"].as_str().unwrap_or("").contains("no node runs session \"idle\""), "{:?}", r.body);

    // Metrics: every sample names its node; each node counts what it runs.
    for (d, name, held) in [(owner_d, owner_name.as_str(), 1), (other, if owner_name == "node-a" { "node-b" } else { "node-a" }, 0)] {
        let text = String::from_utf8(d.api("GET", "/metrics", None).bytes).unwrap();
        let label = format!("node=\"{name}\"");
        assert!(text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).all(|l| l.contains(&label)), "{text}");
        assert!(text.contains(&format!("wasup_cluster_leases{{{label}}} {held}")), "{text}");
        assert!(text.contains(&format!("wasup_cluster_fenced{{{label}}} 0")), "{text}");
        let acme = format!("wasup_session_state{{{label},session=\"acme\",state=\"CONNECTED\"}} 1");
        assert_eq!(text.contains(&acme), held == 1, "{text}");
    }

    // Drain the owner through the other node: acme moves, no QR.
    let other_name = if owner_name == "node-a" { "node-b" } else { "node-a" }.to_string();
    let t0 = Instant::now();
    let drained_ms = wasup::session_state::now_ms();
    let r = other.api("POST", &format!("/api/nodes/{owner_name}/drain"), None);
    assert_eq!((r.status, &r.body["draining"]), (200, &json!(true)), "{:?}", r.body);
    // (Until the other node starts it, the record says what the owner
    // last wrote: CONNECTED before the drain.)
    wait_for("acme CONNECTED again, on the other node", Duration::from_secs(90), || {
        let v = a.session("acme");
        let again = v["since_ms"].as_u64().is_some_and(|ms| ms > drained_ms);
        (v["node"] == json!(other_name) && v["state"] == "CONNECTED" && again).then_some(())
    });
    let moved_in = t0.elapsed();
    let nodes = a.api("GET", "/api/nodes", None).body;
    let drained = nodes["nodes"].as_array().unwrap().iter().find(|n| n["name"] == json!(owner_name)).cloned().unwrap();
    assert_eq!((&drained["draining"], &drained["sessions"]), (&json!(true), &json!([])), "{nodes}");
    let states = a.history_states("acme");
    let paired = states.iter().position(|s| s == "CONNECTED").expect("paired");
    assert!(!states[paired..].iter().any(|s| s.starts_with("SCAN_QR")), "the move asked for a QR: {states:?}");
    let r = other.api("POST", "/api/sessions/acme/messages", Some(json!({"to": "+4915199990004", "text": "after the drain"})));
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.header("x-wasup-node"), None, "answered by the node it arrived at, which runs acme now");
    let log = deliveries(&sim, &device);
    let sent = ["4915199990001", "4915199990007", "4915199990003", "4915199990004", "4915199990101", "4915199990102", "4915199990103"];
    for n in sent {
        assert_eq!(log.get(&format!("{n}@c.us")), Some(&1), "{n}: {log:?}");
    }
    assert_eq!(log.values().sum::<usize>(), sent.len(), "{log:?}");
    let r = a.api("POST", "/api/nodes/node-z/drain", None);
    assert_eq!(r.status, 404, "{:?}", r.body);
    let out = cli(&a, &["node", "undrain", &owner_name]);
    assert!(out.contains("takes sessions again"), "{out}");
    assert_eq!(owner(&a, "acme").as_deref(), Some(other_name.as_str()), "an undrain moves nothing back");

    // The node running acme dies: until its lease expires, a send through
    // the survivor finds the owner gone: 503 with Retry-After, nothing sent.
    let (dead, survivor) = if other_name == "node-b" { (&mut b, &a) } else { (&mut a, &b) };
    let killed_ms = wasup::session_state::now_ms();
    dead.kill();
    let r = survivor.api("POST", "/api/sessions/acme/messages", Some(json!({"to": "+4915199990005", "text": "owner gone"})));
    assert_eq!((r.status, r.header("retry-after")), (503, Some("2")), "{:?}", r.body);
    assert!(r.body["error"].as_str().unwrap_or("").contains("does not answer"), "{:?}", r.body);
    // Once the lease expired the survivor runs acme (its start ends the
    // dead node's browser on the shared profile), and sends again. (Until
    // it starts, the record still says what the dead node last wrote.)
    wait_for("acme CONNECTED again on the survivor", Duration::from_secs(90), || {
        let v = survivor.session("acme");
        let again = v["since_ms"].as_u64().is_some_and(|ms| ms > killed_ms);
        (v["node"] == json!(owner_name) && v["state"] == "CONNECTED" && again).then_some(())
    });
    let r = survivor.api("POST", "/api/sessions/acme/messages", Some(json!({"to": "+4915199990006", "text": "taken over"})));
    assert_eq!(r.status, 201, "{:?}", r.body);
    let log = deliveries(&sim, &device);
    assert_eq!((log.get("4915199990005@c.us"), log.get("4915199990006@c.us")), (None, Some(&1)), "{log:?}");
    eprintln!(
        "cluster API: paired in {paired_in:?}, sends through the other node took {:?} then {:?} (one at the owner {direct_send:?}), the drain moved acme in {moved_in:?}, all in {:?}",
        forwarded_send.0,
        forwarded_send.1,
        begun.elapsed()
    );
}

#[test]
fn on_sled_there_are_no_nodes() {
    let sim = Sim::start(&[]);
    let d = Daemon::start(&sim, "");
    let r = d.api("GET", "/api/nodes", None);
    assert_eq!((r.status, r.body.clone()), (200, json!({"cluster": false, "node": null, "nodes": []})));
    let r = d.api("POST", "/api/nodes/node-a/drain", None);
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert!(r.body["error"].as_str().unwrap_or("").contains("not in cluster mode"), "{:?}", r.body);
    let r = d.api("POST", "/api/nodes/bad%20name/undrain", None);
    assert_eq!(r.status, 400, "{:?}", r.body);
    let r = d.api("POST", "/api/sessions", Some(json!({"name": "acme", "start": false})));
    assert_eq!((r.status, r.body.get("node")), (201, Some(&Value::Null)), "{:?}", r.body);
    let text = String::from_utf8(d.api("GET", "/metrics", None).bytes).unwrap();
    assert!(!text.contains("node=") && !text.contains("wasup_cluster_"), "{text}");
    assert!(cli(&d, &["node", "list"]).contains("not a cluster"));
}
