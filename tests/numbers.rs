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

/// A contact replies "Stop!" mid-campaign: it goes on the session's
/// opt-out list, `contact.opted_out` reaches a webhook, the running
/// campaign skips it and so does a second one, and a one-off send to it is
/// 409 (unless `ignore_opt_out`). A sent contact's reply is recorded.
#[test]
fn a_stop_reply_opts_the_contact_out_of_every_campaign() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let hook = Receiver::start();
    let config = format!("[[webhooks]]\nurl = \"{}/hook\"\nsecret = \"s3cret\"\nevents = [\"contact.opted_out\"]\n", hook.base);
    let daemon = Daemon::start(&sim, &config);
    let device = daemon.pair(&sim, "acme", PHONE);
    let people = numbers(6, 13_000_000);
    let id = daemon.campaign(body("spring", &people, 1500, 1800, "Hi"));
    daemon.wait_sent(&id, 1, Duration::from_secs(60));
    // The first recipient (sent) replies; the last (not yet sent) opts out.
    let incoming = |from: &str, text: &str| {
        let r = sim.phone("POST", &format!("/_phone/devices/{device}/incoming"), Some(json!({"from": from, "body": text})));
        assert_eq!(r.status, 200, "{:?}", r.body);
    };
    incoming(&people[0], "thanks!");
    incoming(&people[5], "Stop!");
    let got = hook.wait_for("contact.opted_out at the webhook", Duration::from_secs(30), |r| {
        serde_json::from_slice::<Value>(&r.body).is_ok_and(|b| b["event"] == "contact.opted_out")
    });
    let event: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(event["detail"]["phone"], people[5].as_str(), "{event}");
    let v = daemon.wait_campaign(&id, "COMPLETED", Duration::from_secs(90));
    let rs = daemon.recipients(&id);
    assert_eq!((rs[5]["state"].as_str(), rs[5]["reason"].as_str()), (Some("SKIPPED"), Some("opted_out")), "{:?}", rs[5]);
    assert!(rs[0]["replied_at_ms"].as_u64().is_some(), "{:?}", rs[0]);
    assert_eq!(v["replies"], 1, "{v}");
    let log = deliveries(&sim, &device);
    assert_eq!(log.get(&format!("{}@c.us", people[5])), None, "the opted-out contact got a message: {log:?}");
    assert_eq!(log.values().sum::<usize>(), 5);
    // The list has it, from the reply.
    let list = daemon.api("GET", "/api/sessions/acme/opt-outs", None).json().unwrap();
    assert_eq!(list, json!([{"phone": people[5], "at_ms": list[0]["at_ms"], "source": "reply"}]));
    // A second campaign skips it and says so up front.
    let second = daemon.api("POST", "/api/campaigns", Some(body("again", &[people[5].clone(), people[1].clone()], 100, 200, "Again")));
    assert_eq!(second.status, 201, "{:?}", second.body);
    let second = second.json().unwrap();
    assert_eq!(second["will_skip_opted_out"], 1, "{second}");
    let second_id = second["id"].as_str().unwrap().to_string();
    daemon.wait_campaign(&second_id, "COMPLETED", Duration::from_secs(60));
    let rs = daemon.recipients(&second_id);
    assert_eq!(rs[0]["reason"], "opted_out", "{:?}", rs[0]);
    assert_eq!(rs[1]["state"], "SENT", "{:?}", rs[1]);
    // A one-off send is refused, unless the request overrides the list.
    let to = format!("+{}", people[5]);
    let r = daemon.api("POST", "/api/sessions/acme/messages", Some(json!({"to": to, "text": "hello?"})));
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert!(String::from_utf8_lossy(&r.bytes).contains("opt-out"), "{:?}", r.body);
    let r = daemon.api("POST", "/api/sessions/acme/messages", Some(json!({"to": to, "text": "hello?", "ignore_opt_out": true})));
    assert_eq!(r.status, 201, "{:?}", r.body);
    // Import and removal through the API.
    let csv = format!("phone,name\n+{},Zed\n", people[2]);
    let r = daemon
        .client()
        .send("POST", "/api/sessions/acme/opt-outs", wasup::launch::Body::Bytes { content_type: "text/csv", bytes: csv.as_bytes() })
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = daemon.api("DELETE", &format!("/api/sessions/acme/opt-outs?phone=%2B{}", people[5]), None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    let list = daemon.api("GET", "/api/sessions/acme/opt-outs", None).json().unwrap();
    assert_eq!(list, json!([{"phone": people[2], "at_ms": list[0]["at_ms"], "source": "import"}]));
}
