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

fn multipart(parts: &[(&str, &str)]) -> (String, Vec<u8>) {
    let boundary = "wasup-test-boundary-7d93";
    let mut body = String::new();
    for (name, value) in parts {
        let filename = if *name == "csv" { "; filename=\"recipients.csv\"" } else { "" };
        body.push_str(&format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"{filename}\r\n\r\n{value}\r\n"));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    (format!("multipart/form-data; boundary={boundary}"), body.into_bytes())
}

/// A CSV with bad rows gets 400 listing each bad line, and nothing is stored.
#[test]
fn campaigns_with_bad_input_are_refused_whole() {
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "");
    assert_eq!(daemon.api("POST", "/api/sessions", Some(json!({"name": "acme", "start": false}))).status, 201);
    let url = format!("{}/api/campaigns", daemon.base);
    let tok = Some(daemon.token.as_str());
    let csv = "phone,name\n+4915112345678,Ana\nnot a number,Ben\n,Cid\n+4915123456789\n+4915123456789,Dup\n";
    let (ct, bytes) = multipart(&[("name", "spring"), ("session", "acme"), ("template", "Hi {{ name }}!"), ("csv", csv)]);
    let r = request("POST", &url, tok, Some(&bytes), &ct);
    assert_eq!(r.status, 400, "{:?}", r.body);
    let lines: Vec<u64> = r.body["rows"].as_array().unwrap().iter().map(|e| e["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, [5], "a short row is unreadable before numbers are checked: {:?}", r.body);
    let csv = "phone,name\n+4915112345678,Ana\nnot a number,Ben\n,Cid\n+4915123456789,Dup\n+4915123456789,Dup2\n";
    let (ct, bytes) = multipart(&[("name", "spring"), ("session", "acme"), ("template", "Hi {{ name }}!"), ("csv", csv)]);
    let r = request("POST", &url, tok, Some(&bytes), &ct);
    assert_eq!(r.status, 400, "{:?}", r.body);
    let rows = r.body["rows"].as_array().unwrap();
    let lines: Vec<u64> = rows.iter().map(|e| e["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, [3, 4], "{:?}", r.body);
    assert!(rows[0]["error"].as_str().unwrap().contains("not a number"));
    assert!(rows[1]["error"].as_str().unwrap().contains("phone is missing"));
    // Template variables that a row lacks, a broken template, an unknown session.
    let r = daemon.api(
        "POST",
        "/api/campaigns",
        Some(json!({"name": "x", "session": "acme", "template": "Hi {{ name }}", "recipients": [{"phone": "+4915112345678"}]})),
    );
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(r.body["rows"][0]["error"].as_str().unwrap().contains("template"), "{:?}", r.body);
    let r = daemon.api(
        "POST",
        "/api/campaigns",
        Some(json!({"name": "x", "session": "acme", "template": "Hi {{ name", "recipients": [{"phone": "+4915112345678"}]})),
    );
    assert_error(&r, 400, "template");
    let r = daemon.api(
        "POST",
        "/api/campaigns",
        Some(json!({"name": "x", "session": "nope", "template": "Hi", "recipients": [{"phone": "+4915112345678"}]})),
    );
    assert_error(&r, 422, "no session");
    let r = daemon.api("POST", "/api/campaigns", Some(json!({"name": "x", "session": "acme", "template": "Hi", "recipients": [{"phone": "+4915112345678"}], "pacing": {"min_delay": "5s", "max_delay": "1s"}})));
    assert_error(&r, 400, "max_delay");
    let r = daemon.api(
        "POST",
        "/api/campaigns",
        Some(json!({"name": "x", "session": "acme", "template": "Hi", "recipients": [], "csv": "phone\n"})),
    );
    assert_error(&r, 400, "either");
    assert_eq!(daemon.api("GET", "/api/campaigns", None).body, json!([]), "nothing was stored");
    assert_error(&daemon.api("GET", "/api/campaigns/cmp_0000000000000000", None), 404, "no campaign");
    assert_error(&daemon.api("POST", "/api/campaigns/../start", None), 404, "");

    // A good upload: duplicates dropped and counted; a draft until started.
    let csv = "phone,name\n+4915112345678,Ana\n0151 12345678,Ana again\n+4915123456789,Ben\n";
    let (ct, bytes) = multipart(&[
        ("name", "spring"),
        ("session", "acme"),
        ("template", "Hi {{ name }}!"),
        ("csv", csv),
        ("default_country", "DE"),
        ("min_delay", "1s"),
        ("max_delay", "2s"),
    ]);
    let r = request("POST", &url, tok, Some(&bytes), &ct);
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!((r.body["state"].as_str(), r.body["total"].as_u64(), r.body["duplicates"].as_u64()), (Some("DRAFT"), Some(2), Some(1)));
    let id = r.body["id"].as_str().unwrap();
    assert_error(&daemon.api("POST", &format!("/api/campaigns/{id}/pause"), None), 409, "cannot pause");
    let q = daemon.api("GET", "/api/sessions/acme/queue", None);
    assert_eq!(q.body["pending"], 2, "{:?}", q.body);
    let r = daemon.api("DELETE", "/api/sessions/acme/queue", None);
    assert_eq!(r.body["cancelled_campaigns"], 1, "{:?}", r.body);
    assert_eq!(daemon.campaign_view(id)["state"], "CANCELLED");
}
