//! Pacing per number and opt-outs, against real Chromium and the
//! simulator, whose message log is the truth.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const PHONE: &str = "4915112345678";

fn body(name: &str, to: &[String], min_ms: u64, max_ms: u64, template: &str) -> Value {
    let recipients: Vec<Value> = to.iter().map(|p| json!({"phone": format!("+{p}")})).collect();
    json!({
        "name": name,
        "session": "acme",
        "template": template,
        "recipients": recipients,
        "pacing": {"min_delay": format!("{min_ms}ms"), "max_delay": format!("{max_ms}ms")},
        "start": true,
    })
}

/// Two campaigns on one session, each with a 100–200 ms gap of its own:
/// the number's gap (1.5–1.8 s) holds across both: every two consecutive
/// messages the simulator received are at least 1.5 s apart.
#[test]
fn two_campaigns_on_one_number_share_its_gap() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "[numbers]\nmin_delay = \"1500ms\"\nmax_delay = \"1800ms\"\n");
    let device = daemon.pair(&sim, "acme", PHONE);
    let a = daemon.campaign(body("a", &numbers(4, 10_000_000), 100, 200, "A {{ phone }}"));
    let b = daemon.campaign(body("b", &numbers(4, 11_000_000), 100, 200, "B {{ phone }}"));
    daemon.wait_campaign(&a, "COMPLETED", Duration::from_secs(90));
    daemon.wait_campaign(&b, "COMPLETED", Duration::from_secs(90));
    let log = sim.messages(&device);
    assert_eq!(log.len(), 8, "{log:?}");
    let mut at: Vec<u64> = log.iter().map(|m| m["at_ms"].as_u64().unwrap()).collect();
    at.sort();
    for w in at.windows(2) {
        assert!(w[1] - w[0] >= 1500, "two sends {} ms apart; the number's gap is 1500 ms at least: {at:?}", w[1] - w[0]);
    }
    // Both ran at once: their sends interleave.
    let bodies: Vec<char> = log.iter().map(|m| m["body"].as_str().unwrap().chars().next().unwrap()).collect();
    assert!(bodies.windows(2).any(|w| w[0] != w[1]) && bodies.iter().filter(|c| **c == 'A').count() == 4, "{bodies:?}");
    let pacing = daemon.api("GET", "/api/sessions/acme/pacing", None).json().unwrap();
    assert_eq!(pacing["sent_today"], 8, "{pacing}");
}

/// Warm-up: a new number's first day allows `start` sends (3 here); the
/// campaign waits for the next day with `next_send_why` = `warmup`, and the
/// simulator got exactly 3 messages.
#[test]
fn a_new_number_stops_at_its_first_days_warmup_cap() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "[numbers.warmup]\nenabled = true\nstart = 3\n");
    let device = daemon.pair(&sim, "acme", PHONE);
    let id = daemon.campaign(body("warm", &numbers(5, 12_000_000), 100, 200, "Hi"));
    let v = wait_for("the warm-up cap to hold the campaign", Duration::from_secs(60), || {
        let v = daemon.campaign_view(&id);
        (v["counts"]["SENT"] == 3 && v["next_send_why"] == "warmup").then_some(v)
    });
    assert_eq!(v["state"], "RUNNING", "{v}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let next = v["next_send_ms"].as_u64().unwrap();
    assert!(next > now && next % 86_400_000 == 0, "the next send should be the next UTC midnight: {v}");
    assert_eq!(v["number"]["why"], "warmup", "{v}");
    assert_eq!((v["number"]["cap_today"].as_u64(), v["number"]["warmup_day"].as_u64()), (Some(3), Some(0)), "{v}");
    assert_eq!(sim.messages(&device).len(), 3);
}
