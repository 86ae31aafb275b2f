//! Durable, signed webhooks against the real daemon: a receiver that is down
//! while events happen, and across a SIGKILL of the daemon, still gets every
//! event once it is back (de-duplicated by `X-Wasup-Delivery`, every
//! signature valid); a receiver that refuses a body makes it a dead letter
//! at once, which the API lists, replays and deletes.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

const SECRET: &str = "hook-secret-5f1c0e";
const PHONE: &str = "4915112345678";
/// What the event hook subscribes to.
const SUBSCRIBED: [&str; 3] = ["session.status", "message.", "campaign."];

fn subscribed(event: &str) -> bool {
    SUBSCRIBED.iter().any(|s| if s.ends_with('.') { event.starts_with(s) } else { event == *s })
}

fn retry_fast() -> &'static str {
    "[webhook_delivery]\nbackoff_base = \"100ms\"\nbackoff_cap = \"1s\"\ntimeout = \"2s\"\nretry_for = \"10m\"\n"
}

/// Asserts `r` is a well-formed, correctly signed webhook request; returns
/// its delivery id.
fn check_signed(r: &Received, secret: &str) -> String {
    let sig = r.header("X-Wasup-Signature").expect("signature header");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&r.body);
    assert_eq!(
        sig,
        format!("sha256={}", hex::encode(mac.finalize().into_bytes())),
        "bad signature on {}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let id = r.header("X-Wasup-Delivery").expect("delivery id").to_string();
    assert!(id.len() == 20 && id.starts_with("dlv_") && id[4..].bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    assert_eq!(r.header("X-Wasup-Event"), r.json()["event"].as_str(), "X-Wasup-Event is the body's event");
    id
}

fn webhooks(daemon: &Daemon) -> Value {
    let r = daemon.api("GET", "/api/webhooks", None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body
}

/// Every event's JSON as the SSE stream carried it, in order.
fn record_events(daemon: &Daemon) -> Arc<Mutex<Vec<String>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let resp = daemon.client().stream("/api/events", None).expect("SSE stream");
    assert_eq!(resp.status, 200);
    std::thread::spawn(move || {
        for line in BufReader::new(resp.reader).lines() {
            let Ok(line) = line else { break };
            if let Some(data) = line.strip_prefix("data: ") {
                sink.lock().unwrap().push(data.to_string());
            }
        }
    });
    seen
}

fn event_of(json: &str) -> String {
    serde_json::from_str::<Value>(json).unwrap()["event"].as_str().unwrap_or_default().to_string()
}

/// The scenario of the issue: the receiver is down while a session pairs, a
/// campaign runs, a message is acked and one is sent through the API; the
/// daemon is SIGKILLed and started again; then the receiver comes up on its
/// port and gets every one of those events, each under one delivery id,
/// signed.
#[test]
fn a_receiver_down_across_a_sigkill_gets_every_event_once_back() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let port = free_port();
    let config = format!(
        "[[webhooks]]\nurl = \"http://127.0.0.1:{port}/hook\"\nsecret = \"{SECRET}\"\nevents = [\"session.status\", \"message.*\", \"campaign.*\"]\n{}",
        retry_fast()
    );
    let mut daemon = Daemon::start(&sim, &config);
    let hooks = webhooks(&daemon);
    assert_eq!(hooks["webhooks"][0]["url"], format!("http://127.0.0.1:{port}/hook"));
    assert_eq!(hooks["webhooks"][0]["kind"], "events");
    assert!(!hooks.to_string().contains(SECRET), "the API shows a secret: {hooks}");
    let seen = record_events(&daemon);

    let device = daemon.pair(&sim, "acme", PHONE);
    let recipients: Vec<Value> = numbers(3, 40_000_000).iter().map(|p| json!({"phone": format!("+{p}")})).collect();
    let id = daemon.campaign(json!({
        "name": "hooks", "session": "acme", "template": "Hello!", "recipients": recipients,
        "pacing": {"min_delay": "300ms", "max_delay": "500ms"}, "start": true,
    }));
    daemon.wait_campaign(&id, "COMPLETED", Duration::from_secs(60));
    let message_id = daemon.recipients(&id)[0]["message_id"].as_str().unwrap().to_string();
    sim.device_action(&device, "ack", Some(json!({"id": message_id, "ack": "READ"})));
    let r = daemon.api("POST", "/api/sessions/acme/messages", Some(json!({"to": "+4915123456789", "text": "direct"})));
    assert_eq!(r.status, 201, "{:?}", r.body);
    wait_for("message.ack on the stream", Duration::from_secs(20), || {
        seen.lock().unwrap().iter().any(|e| event_of(e) == "message.ack").then_some(())
    });

    // Every subscribed event the stream saw is waiting in the outbox.
    let expected: Vec<String> = wait_for("the outbox to hold every subscribed event", Duration::from_secs(30), || {
        let events: Vec<String> = seen.lock().unwrap().iter().filter(|e| subscribed(&event_of(e))).cloned().collect();
        let pending = webhooks(&daemon)["pending"].as_u64()?;
        (pending == events.len() as u64).then_some(events)
    });
    let names: std::collections::BTreeSet<String> = expected.iter().map(|e| event_of(e)).collect();
    for name in ["session.status", "campaign.status", "campaign.progress", "message.sent", "message.ack"] {
        assert!(names.contains(name), "no {name} among {names:?}");
    }
    assert!(webhooks(&daemon)["failed_attempts"].as_u64().unwrap() >= 1, "nothing was attempted while the receiver was down");

    daemon.kill();
    daemon.start_again();
    let resumed = webhooks(&daemon);
    assert!(resumed["pending"].as_u64().unwrap() >= expected.len() as u64, "the outbox was not resumed: {resumed}");

    let receiver = Receiver::start_on(port);
    wait_for("every event at the receiver", Duration::from_secs(60), || {
        let bodies: Vec<String> = receiver.received().iter().map(|r| String::from_utf8_lossy(&r.body).into_owned()).collect();
        expected.iter().all(|e| bodies.contains(e)).then_some(())
    });
    wait_for("an empty outbox", Duration::from_secs(60), || (webhooks(&daemon)["pending"] == 0).then_some(()));

    // De-duplicated by delivery id: one body per id, and each event of the
    // stream under exactly one id.
    let mut by_id: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for r in receiver.received() {
        assert_eq!(r.path, "/hook");
        let id = check_signed(&r, SECRET);
        let body = by_id.entry(id.clone()).or_insert_with(|| r.body.clone());
        assert_eq!(body, &r.body, "delivery {id} came with two bodies");
    }
    let mut ids_per_body: BTreeMap<String, usize> = BTreeMap::new();
    for body in by_id.values() {
        *ids_per_body.entry(String::from_utf8_lossy(body).into_owned()).or_default() += 1;
    }
    let mut times_seen: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &expected {
        *times_seen.entry(e.as_str()).or_default() += 1;
    }
    for (event, n) in times_seen {
        assert_eq!(ids_per_body.get(event), Some(&n), "{event} was published {n} time(s) but delivered under other ids");
    }
    eprintln!("{} events expected, {} delivery ids received, {} requests", expected.len(), by_id.len(), receiver.received().len());
    assert!(!daemon.log().contains(SECRET), "the secret reached the log");
}

/// A 400 makes a delivery a dead letter at once (no retry); the API lists
/// it; a replay sends the same id and body again, retried through a 503
/// until delivered; a dead letter can be deleted. Alerts go through the same
/// outbox, signed, with a delivery id. No browser: the session's Chromium
/// cannot start, which makes `session.status` events and a `FAILED` alert.
#[test]
fn a_refused_delivery_is_a_dead_letter_until_replayed() {
    let sim = Sim::start(&[]);
    let receiver = Receiver::start();
    receiver.answer(400);
    let alerts = Receiver::start();
    let config = format!(
        "max_restarts = 1\n[browser]\nchromium = \"/nonexistent/chromium\"\nchromedriver = \"/nonexistent/chromedriver\"\n\
         [[webhooks]]\nurl = \"{}/hook?token=abc\"\nsecret = \"{SECRET}\"\nevents = [\"session.status\"]\n\
         [[alerts.webhooks]]\nurl = \"{}/alert\"\nsecret = \"alert-secret\"\n{}",
        receiver.base,
        alerts.base,
        retry_fast()
    );
    let daemon = Daemon::start(&sim, &config);
    let r = daemon.api("POST", "/api/sessions", Some(json!({"name": "acme", "start": true})));
    assert_eq!(r.status, 201, "{:?}", r.body);
    daemon.wait_state("acme", "FAILED", Duration::from_secs(60));

    // The alert, through the outbox.
    let alert = alerts.wait_for("the FAILED alert", Duration::from_secs(20), |r| r.json()["state"] == "FAILED");
    check_signed(&alert, "alert-secret");
    assert_eq!(alert.json()["session"], "acme");
    assert_eq!(alert.header("X-Wasup-Event"), Some("session.status"));

    // Every session.status refused once, never retried.
    let hooks = wait_for("no pending deliveries", Duration::from_secs(20), || {
        let w = webhooks(&daemon);
        (w["pending"] == 0 && w["dead_letters"].as_u64()? > 0).then_some(w)
    });
    let refused = receiver.received();
    let mut ids: Vec<String> = refused.iter().map(|r| check_signed(r, SECRET)).collect();
    let attempts = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), attempts, "a refused delivery was retried");
    assert_eq!(hooks["dead_letters"], attempts as u64, "{hooks}");
    assert_eq!(hooks["dead_lettered"], attempts as u64, "{hooks}");
    let shown = hooks["webhooks"].as_array().unwrap();
    assert_eq!(shown[0]["url"], format!("{}/hook", receiver.base), "the query (a token) is not shown");
    assert_eq!(shown[1]["kind"], "alerts");

    let r = daemon.api("GET", "/api/webhooks/dead-letters", None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    let dead = r.body.as_array().unwrap().clone();
    assert_eq!(dead.len(), attempts);
    for d in &dead {
        assert_eq!(
            (d["attempts"].as_u64(), d["last_status"].as_u64(), d["event"].as_str()),
            (Some(1), Some(400), Some("session.status")),
            "{d}"
        );
        assert!(d["last_error"].as_str().unwrap().contains("400"), "{d}");
        assert_eq!(d["body"]["event"], "session.status");
        assert_eq!(d["webhook"], shown[0]["id"]);
        assert!(d["dead_at_ms"].is_u64() && d["next_at_ms"].is_null(), "{d}");
    }
    let ids_listed: Vec<&str> = dead.iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert!(ids_listed.windows(2).all(|w| w[0] < w[1]), "oldest first: {ids_listed:?}");
    assert_eq!(daemon.api("GET", "/api/webhooks/dead-letters?limit=0", None).status, 400);

    // Replay: a 503 is retried, a 200 delivers; same id, same body.
    let first = dead[0]["id"].as_str().unwrap().to_string();
    let original = refused.iter().find(|r| r.header("X-Wasup-Delivery") == Some(first.as_str())).unwrap().body.clone();
    receiver.answer(503);
    let r = daemon.api("POST", &format!("/api/webhooks/dead-letters/{first}/replay"), None);
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!((r.body["id"].as_str(), r.body["attempts"].as_u64()), (Some(first.as_str()), Some(0)));
    let retried = |status: u16| {
        receiver.received().iter().filter(|r| r.header("X-Wasup-Delivery") == Some(first.as_str()) && r.status == status).count()
    };
    wait_for("two 503 answers", Duration::from_secs(20), || (retried(503) >= 2).then_some(()));
    receiver.answer(200);
    wait_for("the replay delivered", Duration::from_secs(20), || (retried(200) == 1).then_some(()));
    let delivered = receiver.received().into_iter().find(|r| r.status == 200).unwrap();
    check_signed(&delivered, SECRET);
    assert_eq!(delivered.body, original, "a replay sends the same body");
    // Delivered: the replay and the alerts.
    let delivered_total = 1 + alerts.received().len() as u64;
    let w = wait_for("the replay counted", Duration::from_secs(10), || {
        let w = webhooks(&daemon);
        (w["delivered"] == delivered_total && w["pending"] == 0).then_some(w)
    });
    assert_eq!(w["dead_letters"], attempts as u64 - 1, "{w}");
    let r = daemon.api("POST", &format!("/api/webhooks/dead-letters/{first}/replay"), None);
    assert_eq!(r.status, 404, "{:?}", r.body);
    assert!(r.body["error"].as_str().unwrap().contains(&first), "{:?}", r.body);

    // Delete one.
    if let Some(second) = dead.get(1).and_then(|d| d["id"].as_str()) {
        let r = daemon.api("DELETE", &format!("/api/webhooks/dead-letters/{second}"), None);
        assert_eq!((r.status, r.body["id"].as_str()), (200, Some(second)), "{:?}", r.body);
        assert_eq!(daemon.api("DELETE", &format!("/api/webhooks/dead-letters/{second}"), None).status, 404);
        let left = daemon.api("GET", "/api/webhooks/dead-letters", None).body;
        assert!(left.as_array().unwrap().iter().all(|d| d["id"] != second), "{left}");
    }
    let metrics = request("GET", &format!("{}/metrics", daemon.base), Some(&daemon.token), None, "");
    let text = String::from_utf8_lossy(&metrics.bytes);
    assert!(text.contains(&format!("wasup_webhook_deliveries_total{{result=\"delivered\"}} {delivered_total}")), "{text}");
    assert!(text.contains("wasup_webhook_deliveries_pending 0"), "{text}");
    assert!(!daemon.log().contains(SECRET) && !daemon.log().contains("token=abc"), "a secret reached the log");
}
