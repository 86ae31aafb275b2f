//! Paced, crash-safe campaigns against real Chromium and the simulator. The
//! simulator's message log is the truth: what WhatsApp really received.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const PHONE: &str = "4915112345678";

fn body(session: &str, to: &[String], min_ms: u64, max_ms: u64) -> Value {
    let recipients: Vec<Value> = to.iter().enumerate().map(|(i, p)| json!({"phone": format!("+{p}"), "name": format!("R{i}")})).collect();
    json!({
        "name": "spring",
        "session": session,
        "template": "Hi {{ name }}!",
        "recipients": recipients,
        "pacing": {"min_delay": format!("{min_ms}ms"), "max_delay": format!("{max_ms}ms")},
        "start": true,
    })
}

fn states(daemon: &Daemon, id: &str) -> Vec<String> {
    daemon.recipients(id).iter().map(|r| r["state"].as_str().unwrap().to_string()).collect()
}

/// The seed scenario: 10 recipients; the phone logs out after 3 sends. The
/// campaign fails, exactly the sent ones are SENT (and delivered once), the
/// rest PENDING, and the daemon keeps running.
#[test]
fn phone_logout_mid_campaign_fails_it_and_keeps_the_sent_records() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let mut daemon = Daemon::start(&sim, "");
    let device = daemon.pair(&sim, "acme", PHONE);
    let watch = HealthWatch::start(&daemon);
    let id = daemon.campaign(body("acme", &numbers(10, 20_000_000), 1500, 2000));
    daemon.wait_sent(&id, 3, Duration::from_secs(60));
    sim.phone("POST", &format!("/_phone/devices/{device}/logout"), None);
    let v = daemon.wait_campaign(&id, "FAILED", Duration::from_secs(30));
    assert!(v["reason"].as_str().unwrap().starts_with("session_logged_out"), "{v}");
    let sent = assert_exactly_once(&daemon, &sim, &device, &id);
    assert!((3..=4).contains(&sent), "{sent}");
    let s = states(&daemon, &id);
    assert_eq!(s.iter().filter(|x| *x == "PENDING").count(), 10 - sent, "{s:?}");
    assert!(daemon.is_running());
    watch.assert_always_healthy();
    // A failed campaign stays failed; its report has every recipient.
    let report = daemon.api("GET", &format!("/api/campaigns/{id}/report.csv"), None);
    assert_eq!(report.status, 200);
    assert_eq!(String::from_utf8_lossy(&report.bytes).lines().count(), 11);
}

/// The network drops mid-campaign: PAUSED, then RUNNING again by itself and
/// COMPLETED, every recipient delivered exactly once.
#[test]
fn a_network_drop_pauses_and_the_campaign_completes() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "");
    let device = daemon.pair(&sim, "acme", PHONE);
    let id = daemon.campaign(body("acme", &numbers(6, 30_000_000), 500, 800));
    daemon.wait_sent(&id, 2, Duration::from_secs(60));
    sim.phone("POST", &format!("/_phone/devices/{device}/network-drop"), Some(json!({"seconds": 5})));
    let paused = daemon.wait_campaign(&id, "PAUSED", Duration::from_secs(10));
    assert_eq!(paused["reason"], "waiting_for_session");
    daemon.wait_campaign(&id, "COMPLETED", Duration::from_secs(90));
    assert_eq!(assert_exactly_once(&daemon, &sim, &device, &id), 6);
}

/// The daemon is killed with SIGKILL three times during a campaign (between
/// sends, just after a recipient went SENDING, just after WhatsApp got a
/// message) and restarted each time: it completes, everyone exactly once.
#[test]
fn a_daemon_killed_three_times_completes_the_campaign_exactly_once() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let mut daemon = Daemon::start(&sim, "");
    let device = daemon.pair(&sim, "acme", PHONE);
    // WhatsApp takes 400 ms to accept each message, so that a recipient
    // stays SENDING long enough for the test to see it (pushed acks make a
    // send take a few ms otherwise).
    sim.device_action(&device, "slow", Some(json!({"ms": 400})));
    let id = daemon.campaign(body("acme", &numbers(9, 40_000_000), 300, 600));

    // 1: between sends.
    daemon.wait_sent(&id, 2, Duration::from_secs(60));
    daemon.kill();
    daemon.start_again();
    // 2: as soon as a recipient is SENDING (stored, maybe not yet sent).
    wait_for("a SENDING recipient", Duration::from_secs(60), || states(&daemon, &id).iter().any(|s| s == "SENDING").then_some(()));
    daemon.kill();
    daemon.start_again();
    // 3: as soon as WhatsApp got one more message.
    let before = sim.messages(&device).len();
    wait_for("one more delivery", Duration::from_secs(60), || (sim.messages(&device).len() > before).then_some(()));
    daemon.kill();
    daemon.start_again();

    daemon.wait_campaign(&id, "COMPLETED", Duration::from_secs(120));
    assert_eq!(assert_exactly_once(&daemon, &sim, &device, &id), 9);
}

/// Unregistered numbers are SKIPPED, malformed ones FAILED, with reasons;
/// the rest are sent.
#[test]
fn unregistered_and_malformed_numbers_do_not_stop_the_rest() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "[campaigns]\ntyping_per_char = \"20ms\"\n");
    let device = daemon.pair(&sim, "acme", PHONE);
    let good = numbers(3, 50_000_000);
    let unregistered = "4915199900000";
    sim.phone("POST", "/_phone/unregistered", Some(json!({"numbers": [unregistered]})));
    let mut b = body("acme", &good, 100, 200);
    let list = b["recipients"].as_array_mut().unwrap();
    list.insert(1, json!({"phone": format!("+{unregistered}"), "name": "Ghost"}));
    list.insert(2, json!({"phone": "12345", "name": "Typo"}));
    b["invalid_numbers"] = json!("fail");
    b["pacing"]["typing"] = json!(true);
    let id = daemon.campaign(b);
    let v = daemon.wait_campaign(&id, "COMPLETED", Duration::from_secs(60));
    assert_eq!(v["counts"]["SENT"], 3, "{v}");
    let rs = daemon.recipients(&id);
    let ghost = rs.iter().find(|r| r["phone"] == format!("+{unregistered}")).unwrap();
    assert_eq!((ghost["state"].as_str(), ghost["reason"].as_str()), (Some("SKIPPED"), Some("not_on_whatsapp")));
    let typo = rs.iter().find(|r| r["phone"] == "12345").unwrap();
    assert_eq!(typo["state"], "FAILED");
    assert!(typo["reason"].as_str().unwrap().starts_with("invalid_number"), "{typo}");
    let failed = daemon.api("GET", &format!("/api/campaigns/{id}/recipients?state=FAILED"), None);
    assert_eq!(failed.body.as_array().unwrap().len(), 1);
    assert_eq!(assert_exactly_once(&daemon, &sim, &device, &id), 3);

    // With typing on, each message was preceded by "typing…" in its chat,
    // for about 20 ms per character.
    let typing = sim.phone("GET", &format!("/_phone/devices/{device}/chat-states"), None).body;
    for m in sim.messages(&device) {
        let to = m["to"].as_str().unwrap();
        let sent_at = m["at_ms"].as_u64().unwrap();
        let shown = typing
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["to"] == to && t["state"] == "composing")
            .map(|t| t["at_ms"].as_u64().unwrap())
            .max();
        let shown = shown.unwrap_or_else(|| panic!("no typing shown to {to}: {typing}"));
        let expected = 20 * m["body"].as_str().unwrap().chars().count() as u64;
        assert!(shown <= sent_at && sent_at - shown + 50 >= expected, "typing at {shown}, sent at {sent_at}, expected ≥ {expected} ms");
    }

    // Acks keep updating recipients after the send (and after COMPLETED).
    let first = rs.iter().find(|r| r["state"] == "SENT").unwrap();
    let message_id = first["message_id"].as_str().unwrap().to_string();
    let r = sim.phone("POST", &format!("/_phone/devices/{device}/ack"), Some(json!({"id": message_id, "ack": "READ"})));
    assert_eq!(r.status, 200, "{:?}", r.body);
    wait_for("ack READ on the recipient", Duration::from_secs(10), || {
        daemon.recipients(&id).iter().any(|r| r["message_id"] == message_id.as_str() && r["ack"] == "READ").then_some(())
    });
}

/// The gaps the sim sees lie within [min_delay, max_delay] (± 250 ms for the
/// page's round trip); the daily cap holds across two campaigns on one
/// session.
#[test]
fn gaps_lie_within_the_pacing_and_the_daily_cap_is_shared() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "[campaigns]\ndaily_cap = 7\n");
    let device = daemon.pair(&sim, "acme", PHONE);
    let (min, max) = (1000u64, 1600u64);
    let a = daemon.campaign(body("acme", &numbers(5, 60_000_000), min, max));
    daemon.wait_campaign(&a, "COMPLETED", Duration::from_secs(60));
    let log = sim.messages(&device);
    let at: Vec<u64> = log.iter().map(|m| m["at_ms"].as_u64().unwrap()).collect();
    for w in at.windows(2) {
        let gap = w[1] - w[0];
        assert!(gap + 250 >= min && gap <= max + 250, "gap {gap} ms outside [{min}, {max}] ± 250: {at:?}");
    }
    // Second campaign: 4 recipients, but only 2 sends left today.
    let b = daemon.campaign(body("acme", &numbers(4, 61_000_000), 100, 200));
    wait_for("the cap to hold", Duration::from_secs(30), || {
        let v = daemon.campaign_view(&b);
        (v["counts"]["SENT"] == 2 && v["next_send_ms"].as_u64().is_some()).then_some(v)
    });
    let v = daemon.campaign_view(&b);
    assert_eq!(v["sent_today"], 7, "{v}");
    assert_eq!(v["state"], "RUNNING");
    let next = v["next_send_ms"].as_u64().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    assert!(next > now && next % 86_400_000 == 0, "next send should be the next UTC midnight: {next}");
    assert_eq!(sim.messages(&device).len(), 7);
}

/// Two sessions' campaigns do not affect each other: one session's phone
/// logs out; its campaign fails, the other completes.
#[test]
fn two_sessions_campaigns_are_independent() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "");
    let dev_a = daemon.pair(&sim, "alpha", PHONE);
    let dev_b = daemon.pair(&sim, "beta", "4915187654321");
    let a = daemon.campaign(body("alpha", &numbers(6, 70_000_000), 700, 900));
    let b = daemon.campaign(body("beta", &numbers(4, 71_000_000), 300, 500));
    daemon.wait_sent(&a, 1, Duration::from_secs(30));
    sim.phone("POST", &format!("/_phone/devices/{dev_a}/logout"), None);
    daemon.wait_campaign(&a, "FAILED", Duration::from_secs(30));
    daemon.wait_campaign(&b, "COMPLETED", Duration::from_secs(60));
    assert_eq!(assert_exactly_once(&daemon, &sim, &dev_b, &b), 4);
    assert_exactly_once(&daemon, &sim, &dev_a, &a);
}

/// SIGTERM during a campaign: the daemon stops cleanly (campaign stored as
/// running), and the next start completes it with every recipient exactly
/// once.
#[test]
fn sigterm_during_a_campaign_then_start_again_completes_it_exactly_once() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let mut daemon = Daemon::start(&sim, "");
    let device = daemon.pair(&sim, "acme", PHONE);
    let id = daemon.campaign(body("acme", &numbers(6, 80_000_000), 400, 700));
    daemon.wait_sent(&id, 2, Duration::from_secs(60));
    assert!(daemon.stop(), "the daemon did not exit on SIGTERM");
    assert!(daemon.log().contains("halting campaigns"), "no orderly shutdown in the log");
    daemon.start_again();
    daemon.wait_campaign(&id, "COMPLETED", Duration::from_secs(90));
    assert_eq!(assert_exactly_once(&daemon, &sim, &device, &id), 6);
}
