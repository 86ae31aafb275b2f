//! Bad input gets a clear 4xx with `{"error": …}` and changes nothing. No
//! browser is needed: the session under test is never started.

mod common;

use common::*;
use serde_json::{json, Value};

fn assert_error(r: &Resp, status: u16, needle: &str) {
    assert_eq!(r.status, status, "{:?}", r.body);
    let msg = r.body["error"].as_str().unwrap_or_else(|| panic!("no JSON error body: {:?}", r.body));
    assert!(msg.to_lowercase().contains(needle), "error {msg:?} does not mention {needle:?}");
}

#[test]
fn bad_input_changes_nothing_and_says_what_was_wrong() {
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "");
    let r = daemon.api("POST", "/api/sessions", Some(json!({"name": "acme", "start": false})));
    assert_eq!(r.status, 201, "{:?}", r.body);
    let snapshot = || -> Value { daemon.api("GET", "/api/sessions", None).body };
    let before = snapshot();
    let url = |p: &str| format!("{}{p}", daemon.base);
    let tok = Some(daemon.token.as_str());

    // Malformed JSON.
    let r = request("POST", &url("/api/sessions"), tok, Some(b"{\"name\": "), "application/json");
    assert_error(&r, 400, "json");
    // Wrong shape: unknown field, missing field.
    let r = daemon.api("POST", "/api/sessions", Some(json!({"nam": "x"})));
    assert_error(&r, 400, "nam");
    // Invalid session names, in the body and in the path.
    let r = daemon.api("POST", "/api/sessions", Some(json!({"name": "../x"})));
    assert_error(&r, 400, "invalid session name");
    let r = daemon.api("GET", "/api/sessions/..%2Fx", None);
    assert_error(&r, 400, "invalid session name");
    let r = daemon.api("POST", "/api/sessions", Some(json!({"name": "x".repeat(65)})));
    assert_error(&r, 400, "invalid session name");
    // Duplicate.
    let r = daemon.api("POST", "/api/sessions", Some(json!({"name": "acme"})));
    assert_error(&r, 409, "already exists");
    // Unknown session, for every verb.
    for (m, p) in [
        ("GET", "/api/sessions/nope"),
        ("DELETE", "/api/sessions/nope"),
        ("POST", "/api/sessions/nope/start"),
        ("POST", "/api/sessions/nope/stop"),
        ("POST", "/api/sessions/nope/restart"),
        ("POST", "/api/sessions/nope/logout"),
        ("GET", "/api/sessions/nope/qr"),
        ("GET", "/api/sessions/nope/history"),
    ] {
        assert_error(&daemon.api(m, p, None), 404, "no session");
    }
    let r = daemon.api("POST", "/api/sessions/nope/messages", Some(json!({"to": "+4915112345678", "text": "hi"})));
    assert_error(&r, 404, "no session");
    // Bad numbers.
    for to in ["hello", "+49 1", "12", "4915x12345678@c.us"] {
        let r = daemon.api("POST", "/api/sessions/acme/messages", Some(json!({"to": to, "text": "hi"})));
        assert_error(&r, 422, "valid");
    }
    let r = daemon.api("POST", "/api/sessions/acme/messages", Some(json!({"to": "+4915112345678", "text": "  "})));
    assert_error(&r, 422, "empty");
    // Send while not connected; QR while not scanning.
    let r = daemon.api("POST", "/api/sessions/acme/messages", Some(json!({"to": "+4915112345678", "text": "hi"})));
    assert_error(&r, 409, "not connected");
    assert_error(&daemon.api("GET", "/api/sessions/acme/qr", None), 409, "scan_qr");
    assert_error(&daemon.api("GET", "/api/sessions/acme/qr?format=gif", None), 400, "format");
    // Missing or wrong token.
    let r = request("GET", &url("/api/sessions"), None, None, "");
    assert_error(&r, 401, "missing bearer token");
    let r = request("GET", &url("/api/sessions"), Some("wrong"), None, "");
    assert_error(&r, 401, "invalid bearer token");
    let r = request("POST", &url("/api/sessions"), Some("wrong"), Some(b"{\"name\":\"evil\"}"), "application/json");
    assert_error(&r, 401, "invalid bearer token");
    // Oversized body (limit 1 MiB by default).
    let big = format!("{{\"name\": \"{}\"}}", "a".repeat(2 * 1024 * 1024));
    let r = request("POST", &url("/api/sessions"), tok, Some(big.as_bytes()), "application/json");
    assert_error(&r, 413, "larger than");
    // Unknown route.
    assert_error(&daemon.api("GET", "/api/nothing", None), 404, "no route");

    assert_eq!(snapshot(), before, "bad input changed the sessions");
    assert_eq!(daemon.history_states("acme"), ["STOPPED(created)"]);
    // /health needs no token.
    assert_eq!(request("GET", &url("/health"), None, None, "").status, 200);
}

/// A config with a typo'd key is refused at start with the key's name.
#[test]
fn unknown_config_keys_are_rejected_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[http]\nlisten = \"127.0.0.1:0\"\nlisen = 1\n").unwrap();
    let out = std::process::Command::new(BIN).args(["serve", "--config"]).arg(&config).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lisen"), "{err}");
}
