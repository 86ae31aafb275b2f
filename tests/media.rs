//! Messages with media and messages from contacts, end to end: a daemon
//! with a paired session (real Chromium) against the simulator.
//!
//! - What contacts send (a text, a document) reaches `GET /api/events` as
//!   `message.received` with the sender, id, type, body and time.
//! - A PNG and a PDF sent through `POST /api/sessions/{name}/messages`
//!   (`multipart/form-data`) go through WhatsApp Web's media path (prepare,
//!   encrypt, upload to the sim's media host) and reach the sim with the
//!   SHA-256 of the bytes uploaded; a file over its `[media]` limit is 413
//!   and nothing is sent.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const PHONE: &str = "4915112345678";
const CONTACT: &str = "4915199990000";

#[test]
fn messages_from_contacts_are_message_received_events() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "");
    let device = daemon.pair(&sim, "acme", PHONE);
    let events = collect_events(&daemon, "acme");
    let received = |id: &str| {
        let id = id.to_string();
        let events = events.clone();
        wait_for(&format!("message.received for {id}"), Duration::from_secs(20), move || {
            events.lock().unwrap().iter().find(|e| e["event"] == "message.received" && e["detail"]["id"] == id.as_str()).cloned()
        })
    };

    // What the account itself sends is no message received.
    let r = daemon.api("POST", "/api/sessions/acme/messages", Some(json!({"to": CONTACT, "text": "our offer"})));
    assert_eq!(r.status, 201, "{:?}", r.body);

    // A text.
    let r = sim.phone("POST", &format!("/_phone/devices/{device}/incoming"), Some(json!({"from": format!("+{CONTACT}"), "body": "stop"})));
    assert_eq!(r.status, 200, "{:?}", r.body);
    let text_id = r.body["id"].as_str().unwrap().to_string();
    let at_ms = r.body["at_ms"].as_u64().unwrap();
    let e = received(&text_id);
    assert_eq!(e["session"], "acme");
    let d = &e["detail"];
    assert_eq!((&d["from"], &d["type"], &d["body"]), (&json!(CONTACT), &json!("chat"), &json!("stop")));
    // WhatsApp stamps messages in seconds.
    assert_eq!(d["at_ms"].as_u64().unwrap(), at_ms / 1000 * 1000);

    // A document with a caption.
    let report = b"quarterly numbers".repeat(200);
    let (ct, body) = form(&[("from", CONTACT), ("caption", "the report")], Some(("report.pdf", "application/pdf", &report)));
    let r = request("POST", &sim.url(&format!("/_phone/devices/{device}/incoming")), None, Some(&body), &ct);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!((&r.body["type"], &r.body["sha256"]), (&json!("document"), &json!(sha256_hex(&report))));
    let e = received(r.body["id"].as_str().unwrap());
    let d = &e["detail"];
    assert_eq!((&d["from"], &d["type"], &d["body"]), (&json!(CONTACT), &json!("document"), &json!("the report")));

    // A photo without a caption.
    let photo = png(32, 32);
    let (ct, body) = form(&[("from", CONTACT)], Some(("p.png", "image/png", &photo)));
    let r = request("POST", &sim.url(&format!("/_phone/devices/{device}/incoming")), None, Some(&body), &ct);
    assert_eq!(r.status, 200, "{:?}", r.body);
    let e = received(r.body["id"].as_str().unwrap());
    assert_eq!((&e["detail"]["type"], &e["detail"]["body"]), (&json!("image"), &json!("")));

    // Each once, none for the account's own message; and the page told the
    // sim it has them.
    let count = events.lock().unwrap().iter().filter(|e| e["event"] == "message.received").count();
    assert_eq!(count, 3);
    wait_for("the sim to see every message delivered", Duration::from_secs(10), || {
        let inbox = sim.phone("GET", &format!("/_phone/devices/{device}/incoming"), None).body;
        inbox.as_array().filter(|a| a.len() == 3 && a.iter().all(|m| m["delivered"] == true)).map(|_| ())
    });
}

#[test]
fn photos_and_documents_arrive_unchanged_and_files_over_their_limit_are_413() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "");
    let device = daemon.pair(&sim, "acme", PHONE);
    let url = format!("{}/api/sessions/acme/messages", daemon.base);
    let send = |ct: &str, body: &[u8]| request("POST", &url, Some(&daemon.token), Some(body), ct);
    let logged = |id: &str| {
        wait_for(&format!("{id} in the sim"), Duration::from_secs(20), || sim.messages(&device).into_iter().find(|m| m["id"] == id))
    };

    // A photo with a caption.
    let photo = png(64, 48);
    let (ct, body) = form(&[("to", "+4915123456789"), ("caption", "our spring offer")], Some(("offer.png", "image/png", &photo)));
    let started = Instant::now();
    let r = send(&ct, &body);
    eprintln!("photo of {} bytes sent in {:?}", photo.len(), started.elapsed());
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["to"], "4915123456789@c.us");
    let m = logged(r.body["id"].as_str().unwrap());
    assert_eq!(
        (&m["type"], &m["mimetype"], &m["size"], &m["sha256"], &m["body"]),
        (&json!("image"), &json!("image/png"), &json!(photo.len()), &json!(sha256_hex(&photo)), &json!("our spring offer")),
        "{m}"
    );

    // A document, no caption.
    let doc = pdf();
    let (ct, body) = form(&[("to", "4915123456789")], Some(("terms.pdf", "application/pdf", &doc)));
    let r = send(&ct, &body);
    assert_eq!(r.status, 201, "{:?}", r.body);
    let m = logged(r.body["id"].as_str().unwrap());
    assert_eq!(
        (&m["type"], &m["mimetype"], &m["filename"], &m["size"], &m["sha256"], &m["body"]),
        (&json!("document"), &json!("application/pdf"), &json!("terms.pdf"), &json!(doc.len()), &json!(sha256_hex(&doc)), &json!("")),
        "{m}"
    );

    // A 1 MiB document: copied into the page in pieces, unchanged.
    let big: Vec<u8> = (0..1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let (ct, body) = form(&[("to", "4915123456789")], Some(("data.bin", "application/octet-stream", &big)));
    let started = Instant::now();
    let r = send(&ct, &body);
    eprintln!("document of {} bytes sent in {:?}", big.len(), started.elapsed());
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(logged(r.body["id"].as_str().unwrap())["sha256"], sha256_hex(&big));

    // A photo wider than WhatsApp Web's 1600 px goes out scaled down, as JPEG.
    let wide = png(2000, 40);
    let (ct, body) = form(&[("to", "4915123456789")], Some(("wide.png", "image/png", &wide)));
    let r = send(&ct, &body);
    assert_eq!(r.status, 201, "{:?}", r.body);
    let m = logged(r.body["id"].as_str().unwrap());
    assert_eq!((&m["type"], &m["mimetype"]), (&json!("image"), &json!("image/jpeg")), "{m}");
    assert!(m["sha256"].is_string() && m["sha256"] != json!(sha256_hex(&wide)), "{m}");

    // Over the image limit (5 MB): 413 naming the limit, nothing sent.
    let before = sim.messages(&device).len();
    let mut huge = png(8, 8);
    huge.resize(5_000_001, 0);
    let (ct, body) = form(&[("to", "4915123456789")], Some(("huge.png", "image/png", &huge)));
    let r = send(&ct, &body);
    assert_eq!(r.status, 413, "{:?}", r.body);
    assert!(r.body["error"].as_str().is_some_and(|e| e.contains("media.image_max") && e.contains("5000000")), "{:?}", r.body);
    assert_eq!(sim.messages(&device).len(), before);
    // Exactly at the limit the file is taken (a PNG with trailing bytes the
    // page's decoder ignores), and arrives unchanged.
    huge.truncate(5_000_000);
    let (ct, body) = form(&[("to", "4915123456789")], Some(("huge.png", "image/png", &huge)));
    let started = Instant::now();
    let r = send(&ct, &body);
    eprintln!("photo of {} bytes sent in {:?}", huge.len(), started.elapsed());
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(logged(r.body["id"].as_str().unwrap())["sha256"], sha256_hex(&huge));
    let before = before + 1;
    // Bad forms: 4xx with a JSON error, nothing sent.
    let not_png = b"GIF89a not a png".to_vec();
    for (fields, file, status) in [
        (vec![("to", "4915123456789")], Some(("x.png", "image/png", not_png.as_slice())), 422),
        (vec![("to", "4915123456789")], None, 400),
        (vec![], Some(("x.pdf", "application/pdf", doc.as_slice())), 400),
        (vec![("to", "4915123456789"), ("text", "hi")], Some(("x.pdf", "application/pdf", doc.as_slice())), 400),
        (vec![("to", "4915123456789")], Some(("x.pdf", "application/pdf", &[][..])), 400),
    ] {
        let (ct, body) = form(&fields, file);
        let r = send(&ct, &body);
        assert_eq!(r.status, status, "{fields:?}: {:?}", r.body);
        assert!(r.body["error"].is_string(), "{:?}", r.body);
    }
    // A JSON body on the same route still has the 1 MiB bound.
    let long = json!({"to": "4915123456789", "text": "x".repeat(1024 * 1024)}).to_string();
    assert_eq!(send("application/json", long.as_bytes()).status, 413);
    assert_eq!(sim.messages(&device).len(), before, "a refused send reached the sim");
}
