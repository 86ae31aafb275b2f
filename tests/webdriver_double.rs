//! The browser test double (`wasup webdriver-double`, used by `wasup bench
//! --cluster` only) against the real daemon: it must keep answering the
//! commands the page adapter sends, so the cluster bench measures leases
//! and placement rather than a double that fell out of step. And it says
//! so, with a W3C error, for what it does not model.

mod common;

use std::time::Duration;

use common::{Daemon, BIN};
use serde_json::{json, Value};

#[test]
fn a_session_on_the_double_connects_sends_and_reconnects_as_the_same_account() {
    let dir = tempfile::tempdir().unwrap();
    let chromedriver = wasup::webdriver_double::write_wrapper(std::path::Path::new(BIN), dir.path()).unwrap();
    // The daemon's default events mode asks for BiDi; the double offers
    // none, so the page is polled (as with a chromedriver without BiDi).
    let extra = format!("[browser]\nchromedriver = \"{}\"\n", chromedriver.display());
    let d = Daemon::start_at("http://127.0.0.1:9", "", &extra, &[], |_| {});
    let r = d.api("POST", "/api/sessions", Some(json!({"name": "acme"})));
    assert_eq!(r.status, 201, "{:?}", r.body);
    let view = d.wait_state("acme", "CONNECTED", Duration::from_secs(30));
    let me = view["me"]["wid"].as_str().unwrap_or_default().to_string();
    assert!(me.starts_with("1555") && me.ends_with("@c.us") && me.len() == 16, "{view}");
    assert_eq!(view["events"], "poll");

    for (i, to) in ["+49 151 99990001", "+4915199990002"].iter().enumerate() {
        let r = d.api("POST", "/api/sessions/acme/messages", Some(json!({"to": to, "text": format!("hello {i}")})));
        assert_eq!((r.status, &r.body["ack"]), (201, &json!("SERVER")), "{:?}", r.body);
    }

    let r = d.api("POST", "/api/sessions/acme/restart", None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    let again = common::wait_for("the session to reconnect after its restart", Duration::from_secs(30), || {
        let v = d.session("acme");
        (v["state"] == "CONNECTED" && v["since_ms"] != view["since_ms"]).then_some(v)
    });
    assert_eq!(again["me"]["wid"], json!(me), "the same profile is the same account");
    let states = d.history_states("acme");
    assert!(!states.iter().any(|s| s == "SCAN_QR"), "{states:?}");
}

#[test]
fn the_double_refuses_what_it_does_not_model() {
    let port = common::free_port();
    let mut double = wasup::launch::ChildGuard::spawn(
        std::process::Command::new(BIN).args(["webdriver-double", &format!("--port={port}"), "--log-level=OFF"]),
        Duration::from_secs(5),
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    common::wait_for("the double to listen", Duration::from_secs(10), || common::answers(&format!("{base}/status")).then_some(()));
    let call = |method: &str, path: &str, body: Value| {
        let bytes = serde_json::to_vec(&body).unwrap();
        common::request(method, &format!("{base}{path}"), None, Some(&bytes), "application/json")
    };
    let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {"args": ["--user-data-dir=/profiles/acme"]}}}});
    let r = call("POST", "/session", caps);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.body["value"]["capabilities"]["webSocketUrl"].is_null(), "no BiDi: {:?}", r.body);
    let id = r.body["value"]["sessionId"].as_str().unwrap().to_string();

    let stage = json!({"script": "return window.__wasup ? window.__wasup.stage(arguments[0], arguments[1], arguments[2]) : false;", "args": ["k", 0, ""]});
    let r = call("POST", &format!("/session/{id}/execute/sync"), stage);
    assert_eq!((r.status, &r.body["value"]["error"]), (500, &json!("unsupported operation")), "{:?}", r.body);
    let r = call("POST", &format!("/session/{id}/window/rect"), json!({}));
    assert_eq!((r.status, &r.body["value"]["error"]), (404, &json!("unknown command")), "{:?}", r.body);

    let r = call("DELETE", &format!("/session/{id}"), json!({}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = call("POST", &format!("/session/{id}/execute/sync"), json!({"script": "return 1", "args": []}));
    assert_eq!((r.status, &r.body["value"]["error"]), (404, &json!("invalid session id")), "{:?}", r.body);
    double.kill();
}
