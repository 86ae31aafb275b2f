//! Running as a service: the systemd notify protocol, `/metrics`, and the
//! live event streams (SSE and WebSocket).

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Datagrams (or events) with the time each arrived.
type Received<T> = Arc<Mutex<Vec<(Instant, T)>>>;

/// Collects notify datagrams with the time each arrived.
fn notify_socket(dir: &std::path::Path) -> (String, Received<String>) {
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = sock.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            sink.lock().unwrap().push((Instant::now(), text));
        }
    });
    (path.display().to_string(), got)
}

fn watchdog_times(got: &Received<String>) -> Vec<Instant> {
    got.lock().unwrap().iter().filter(|(_, m)| m.lines().any(|l| l == "WATCHDOG=1")).map(|(t, _)| *t).collect()
}

/// READY=1 once the port listens; WATCHDOG=1 at half the configured rate,
/// and none while the Supervisor is wedged; STOPPING=1 on SIGTERM.
#[test]
fn the_notify_protocol_follows_the_actor_system() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, got) = notify_socket(dir.path());
    let sim = Sim::start(&[]);
    let daemon = Daemon::start_with_env(&sim, "", &[("NOTIFY_SOCKET", &socket), ("WATCHDOG_USEC", "400000")]);
    let ready = wait_for("READY=1", Duration::from_secs(10), || {
        got.lock().unwrap().iter().find(|(_, m)| m.lines().any(|l| l == "READY=1")).cloned()
    });
    assert!(ready.1.contains("STATUS=no sessions"), "{:?}", ready.1);
    assert_eq!(request("GET", &format!("{}/health", daemon.base), None, None, "").status, 200);
    wait_for("5 watchdog pings", Duration::from_secs(5), || (watchdog_times(&got).len() >= 5).then_some(()));

    // Wedge the Supervisor for 3 s: the pings stop, then come back.
    let r = daemon.api("POST", "/api/_fault/wedge/3", None);
    assert_eq!(r.status, 202, "{:?}", r.body);
    let wedged_at = Instant::now();
    wait_for("pings after the wedge", Duration::from_secs(10), || {
        watchdog_times(&got).iter().any(|t| t.duration_since(wedged_at) > Duration::from_millis(3200)).then_some(())
    });
    let times = watchdog_times(&got);
    let gap = times.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(gap >= Duration::from_millis(2500), "longest gap between pings {gap:?}: pings went on while wedged");
    assert!(
        !times.iter().any(|t| *t > wedged_at + Duration::from_millis(300) && *t < wedged_at + Duration::from_millis(2700)),
        "a ping while the supervisor was wedged"
    );

    daemon.signal_term();
    wait_for("STOPPING=1", Duration::from_secs(30), || {
        got.lock().unwrap().iter().any(|(_, m)| m.lines().any(|l| l == "STOPPING=1")).then_some(())
    });
}

/// Parses Prometheus text: every sample line is `name{labels} value`.
fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name_end = series.find('{').unwrap_or(series.len());
        assert!(series[..name_end].bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "bad metric name in {line:?}");
        if name_end < series.len() {
            assert!(series.ends_with('}'), "bad labels in {line:?}");
        }
        samples.push((series.to_string(), value));
    }
    samples
}

fn metric(daemon: &Daemon, series: &str) -> Option<f64> {
    let r = request("GET", &format!("{}/metrics", daemon.base), Some(&daemon.token), None, "");
    assert_eq!(r.status, 200);
    assert!(r.content_type.starts_with("text/plain"));
    parse_metrics(&String::from_utf8_lossy(&r.bytes)).into_iter().find(|(s, _)| s == series).map(|(_, v)| v)
}

/// `/metrics` parses and its session gauges follow a phone logout; the SSE
/// stream and the WebSocket deliver `session.status` as it happens, and the
/// WebSocket the seeds' shape when a campaign loses its session.
#[test]
fn metrics_and_live_events_follow_a_phone_logout() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "");
    let device = daemon.pair(&sim, "acme", "4915112345678");
    assert_eq!(metric(&daemon, "wasup_sessions{state=\"CONNECTED\"}"), Some(1.0));
    assert_eq!(metric(&daemon, "wasup_session_state{session=\"acme\",state=\"CONNECTED\"}"), Some(1.0));

    // SSE, filtered to the session.
    let sse_events: Received<Value> = Arc::default();
    {
        let sink = sse_events.clone();
        let resp = daemon.client().stream("/api/events?session=acme", None).expect("SSE stream");
        assert!(resp.status < 400, "SSE stream: {}", resp.status);
        assert_eq!(resp.content_type, "text/event-stream");
        std::thread::spawn(move || {
            for line in BufReader::new(resp.reader).lines() {
                let Ok(line) = line else { break };
                if let Some(data) = line.strip_prefix("data: ") {
                    if let Ok(v) = serde_json::from_str::<Value>(data) {
                        sink.lock().unwrap().push((Instant::now(), v));
                    }
                }
            }
        });
    }
    // WebSocket, with the token.
    let ws_events: Received<Value> = Arc::default();
    {
        use tungstenite::client::IntoClientRequest as _;
        let mut req = format!("{}/api/ws", daemon.base.replace("http://", "ws://")).into_client_request().unwrap();
        req.headers_mut().insert("Authorization", format!("Bearer {}", daemon.token).parse().unwrap());
        let (mut socket, _) = tungstenite::connect(req).expect("WebSocket");
        let sink = ws_events.clone();
        std::thread::spawn(move || {
            while let Ok(msg) = socket.read() {
                if let tungstenite::Message::Text(t) = msg {
                    if let Ok(v) = serde_json::from_str::<Value>(&t) {
                        sink.lock().unwrap().push((Instant::now(), v));
                    }
                }
            }
        });
    }
    // A campaign that will lose its session.
    let r = daemon.api(
        "POST",
        "/api/campaigns",
        Some(json!({
            "name": "c", "session": "acme", "template": "hi", "start": true,
            "recipients": [{"phone": "+4915123456789"}, {"phone": "+4915123456780"}, {"phone": "+4915123456781"}],
            "pacing": {"min_delay": "3s", "max_delay": "4s"},
        })),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    daemon.wait_sent(r.body["id"].as_str().unwrap(), 1, Duration::from_secs(20));

    sim.phone("POST", &format!("/_phone/devices/{device}/logout"), None);
    for (name, events) in [("SSE", &sse_events), ("WebSocket", &ws_events)] {
        let (received, e) = wait_for(&format!("LOGGED_OUT over {name}"), Duration::from_secs(10), || {
            events.lock().unwrap().iter().find(|(_, e)| e["event"] == "session.status" && e["state"] == "LOGGED_OUT").cloned()
        });
        assert_eq!(e["session"], "acme");
        // Delivered within a second of the daemon recording it.
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        let recorded_ago = Duration::from_millis(now_ms.saturating_sub(e["at_ms"].as_u64().unwrap()));
        let delivered_after = recorded_ago.saturating_sub(received.elapsed());
        assert!(delivered_after < Duration::from_secs(1), "{name} delivered {delivered_after:?} after the change");
    }
    wait_for("the seed's status_update over the WebSocket", Duration::from_secs(10), || {
        ws_events
            .lock()
            .unwrap()
            .iter()
            .find(|(_, e)| {
                e["type"] == "status_update" && e["status"] == "failed" && e["message"] == "WhatsApp disconnected during operation"
            })
            .cloned()
    });
    wait_for("CONNECTED gauge at 0", Duration::from_secs(10), || {
        (metric(&daemon, "wasup_sessions{state=\"CONNECTED\"}") == Some(0.0)).then_some(())
    });
    assert!(metric(&daemon, "wasup_messages_total{result=\"sent\"}").unwrap() >= 1.0);
    assert!(metric(&daemon, "wasup_http_requests_total{route=\"/api/sessions/{name}\",status=\"200\"}").unwrap() >= 1.0);
    assert!(metric(&daemon, "wasup_session_reconnects{session=\"acme\",window=\"24h\"}").is_some());
    // The SSE filter kept other sessions' events out, and no QR string went out.
    assert!(sse_events.lock().unwrap().iter().all(|(_, e)| e["session"] == "acme"));
    assert!(ws_events.lock().unwrap().iter().all(|(_, e)| !e.to_string().contains(",WEB")));
}

/// Under systemd the log goes to journald with `SESSION=`, `EVENT=`,
/// `REASON=` and fitting priorities. The daemon runs in a private mount
/// namespace where the journal's socket is one this test owns.
#[test]
fn journald_entries_carry_session_event_reason_and_priority() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    std::fs::create_dir(&journal).unwrap();
    let sock = UnixDatagram::bind(journal.join("socket")).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let port = free_port();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\n[state]\ndir = \"{}\"\n[whatsapp]\nurl = \"http://127.0.0.1:9/\"\n[browser]\nchromium = \"/bin/false\"\n[restart]\nmax_restarts = 1\nbackoff_base = \"100ms\"\nbackoff_cap = \"200ms\"\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let script = "mkdir -p /run/systemd/journal && mount --bind \"$1\" /run/systemd/journal && shift && exec \"$@\"";
    let mut child = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(&journal)
        .arg(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env("WASUP_LOG", "journald")
        .env("WASUP_TOKEN", "journal-test-token")
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("unshare");
    let base = format!("http://127.0.0.1:{port}");
    wait_for("the daemon", Duration::from_secs(20), || answers(&format!("{base}/health")).then_some(()));
    let r = request("POST", &format!("{base}/api/sessions"), Some("journal-test-token"), Some(br#"{"name": "acme"}"#), "application/json");
    assert_eq!(r.status, 201, "{:?}", r.body);

    // Collect entries until the session FAILED (its browser cannot start).
    let mut entries: Vec<std::collections::BTreeMap<String, String>> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let failed = |e: &std::collections::BTreeMap<String, String>| e.get("STATE").map(String::as_str) == Some("FAILED");
    while Instant::now() < deadline && !entries.iter().any(failed) {
        let mut buf = vec![0u8; 65536];
        if let Ok(n) = sock.recv(&mut buf) {
            entries.push(parse_journal_entry(&buf[..n]));
        }
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let find = |pred: &dyn Fn(&std::collections::BTreeMap<String, String>) -> bool| entries.iter().find(|e| pred(e)).cloned();
    let status = find(&|e| failed(e) && e.get("EVENT").map(String::as_str) == Some("session.status"))
        .unwrap_or_else(|| panic!("no FAILED session.status entry among {entries:#?}"));
    assert_eq!(status.get("SESSION").map(String::as_str), Some("acme"));
    assert_eq!(status.get("REASON").map(String::as_str), Some("restart_budget_spent"));
    assert_eq!(status.get("PRIORITY").map(String::as_str), Some("3"), "FAILED is an error");
    assert_eq!(status.get("SYSLOG_IDENTIFIER").map(String::as_str), Some("wasup"));
    let ended = find(&|e| e.get("EVENT").map(String::as_str) == Some("session.ended")).expect("a session.ended entry");
    assert_eq!(ended.get("PRIORITY").map(String::as_str), Some("4"), "an end is a warning");
    assert_eq!(ended.get("REASON").map(String::as_str), Some("start_failed"));
    assert!(entries.iter().all(|e| !e.values().any(|v| v.contains("journal-test-token"))), "the token was logged");
}

/// journald's native protocol: `KEY=value\n`, or `KEY\n` + a 64-bit
/// little-endian length + the value + `\n` for values that may hold newlines.
fn parse_journal_entry(mut data: &[u8]) -> std::collections::BTreeMap<String, String> {
    let mut entry = std::collections::BTreeMap::new();
    while let Some(nl) = data.iter().position(|b| *b == b'\n') {
        let line = &data[..nl];
        data = &data[nl + 1..];
        if let Some(eq) = line.iter().position(|b| *b == b'=') {
            entry.insert(String::from_utf8_lossy(&line[..eq]).into_owned(), String::from_utf8_lossy(&line[eq + 1..]).into_owned());
        } else if data.len() >= 8 {
            let len = u64::from_le_bytes(data[..8].try_into().unwrap()) as usize;
            let value = &data[8..(8 + len).min(data.len())];
            entry.insert(String::from_utf8_lossy(line).into_owned(), String::from_utf8_lossy(value).into_owned());
            data = data.get(8 + len + 1..).unwrap_or(&[]);
        }
    }
    entry
}
