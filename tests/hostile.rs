//! Hostile and oversized input against a real daemon over loopback (no
//! browser: sessions are created but not started). Every bad request gets a
//! 4xx with a JSON body that says what was wrong, nothing is stored, and
//! `/health` keeps answering while hostile requests run.

mod common;

use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use common::*;
use proptest::prelude::*;
use serde_json::{json, Value};

fn error_of(r: &Resp) -> String {
    r.body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no JSON error body: {} {:?}", r.status, String::from_utf8_lossy(&r.bytes)))
        .to_string()
}

fn campaigns(daemon: &Daemon) -> usize {
    daemon.api("GET", "/api/campaigns", None).body.as_array().map_or(0, Vec::len)
}

fn sessions(daemon: &Daemon) -> usize {
    daemon.api("GET", "/api/sessions", None).body.as_array().map_or(0, Vec::len)
}

/// Raw HTTP over TCP: what `ureq` will not send (a short body, a slow one).
fn raw(base: &str, request: &[u8], then_wait: Duration) -> String {
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request).unwrap();
    std::thread::sleep(then_wait);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

const SMALL: &str = "[limits]\nrecipients = 3\nsessions = 2\nstreams = 1\nbody_timeout = \"1s\"\ntemplate_bytes = 100\n";

#[test]
fn each_limit_holds_at_the_limit_and_refuses_one_past_it() {
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, SMALL);
    // Sessions: 2 fit, a third is refused and not stored.
    for name in ["a", "b"] {
        assert_eq!(daemon.api("POST", "/api/sessions", Some(json!({"name": name, "start": false}))).status, 201);
    }
    let r = daemon.api("POST", "/api/sessions", Some(json!({"name": "c", "start": false})));
    assert_eq!(r.status, 400);
    assert!(error_of(&r).contains("limits.sessions"));
    assert_eq!(sessions(&daemon), 2);

    // Recipients: 3 fit, 4 are refused.
    let people = |n: usize| numbers(n, 1_000).iter().map(|p| json!({"phone": format!("+{p}")})).collect::<Vec<_>>();
    let body = |n: usize| json!({"name": "x", "session": "a", "template": "Hi", "recipients": people(n)});
    assert_eq!(daemon.api("POST", "/api/campaigns", Some(body(3))).status, 201);
    let r = daemon.api("POST", "/api/campaigns", Some(body(4)));
    assert_eq!(r.status, 400);
    assert!(error_of(&r).contains("limits.recipients"));
    let csv = |n: usize| format!("phone\n{}", numbers(n, 2_000).iter().map(|p| format!("+{p}\n")).collect::<String>());
    let r = daemon.api("POST", "/api/campaigns", Some(json!({"name": "x", "session": "a", "template": "Hi", "csv": csv(4)})));
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(error_of(&r).contains("limits.recipients"));

    // Template size: 100 bytes fit, 101 do not.
    let t = |n: usize| json!({"name": "x", "session": "a", "template": "x".repeat(n), "recipients": people(1)});
    assert_eq!(daemon.api("POST", "/api/campaigns", Some(t(100))).status, 201);
    let r = daemon.api("POST", "/api/campaigns", Some(t(101)));
    assert_eq!(r.status, 413);
    assert!(error_of(&r).contains("limits.template_bytes"));

    // Pacing: a gap of 24 h fits; more, or an absurd one, is a 400 even
    // with start: true, and nothing is stored (no client retry duplicates).
    // (A start on session "a", which is STOPPED, would be a 409: the fit
    // is checked on a draft.)
    let paced = |gap: &str, start: bool| json!({"name": "x", "session": "a", "template": "Hi", "recipients": people(1), "start": start, "pacing": {"min_delay": "1s", "max_delay": gap}});
    assert_eq!(daemon.api("POST", "/api/campaigns", Some(paced("24h", false))).status, 201);
    let before = campaigns(&daemon);
    for gap in ["24h 1s", "400000000000years"] {
        let r = daemon.api("POST", "/api/campaigns", Some(paced(gap, true)));
        assert_eq!(r.status, 400, "{gap}: {:?}", r.body);
        assert!(error_of(&r).contains("max_delay"), "{gap}");
    }
    assert_eq!(campaigns(&daemon), before);

    // Streams: one fits, a second is 429 while the first is open.
    let first = daemon.client().stream("/api/events", None).unwrap();
    assert_eq!(first.status, 200);
    let r = request("GET", &format!("{}/api/events", daemon.base), Some(&daemon.token), None, "");
    assert_eq!(r.status, 429);
    assert!(error_of(&r).contains("limits.streams"));
    drop(first);
    wait_for("the stream's place to be free", Duration::from_secs(20), || {
        let ok = daemon.client().stream("/api/events", None).ok().filter(|s| s.status < 400);
        ok.map(drop)
    });

    // A body sent too slowly: 408 with a JSON body.
    let slow = format!(
        "POST /api/sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{{\"name\"",
        daemon.token
    );
    let answer = raw(&daemon.base, slow.as_bytes(), Duration::ZERO);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("limits.body_timeout"), "{answer}");
    assert!(daemon.is_running_check());
}

#[test]
fn bodies_are_bounded_with_multipart_headers_and_preamble_counted() {
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "[limits]\nrecipients = 5\n");
    assert_eq!(daemon.api("POST", "/api/sessions", Some(json!({"name": "a", "start": false}))).status, 201);
    let max = 1024 * 1024;
    // JSON: exactly the limit is read (and judged on its content), one
    // byte more is 413.
    let pad = |total: usize| {
        let head = r#"{"name": "a", "start": false, "x": ""#;
        let tail = r#""}"#;
        format!("{head}{}{tail}", " ".repeat(total - head.len() - tail.len()))
    };
    let at = request("POST", &format!("{}/api/sessions", daemon.base), Some(&daemon.token), Some(pad(max).as_bytes()), "application/json");
    assert_eq!(at.status, 400, "at the limit the body is read: {:?}", at.body);
    let past =
        request("POST", &format!("{}/api/sessions", daemon.base), Some(&daemon.token), Some(pad(max + 1).as_bytes()), "application/json");
    assert_eq!(past.status, 413);
    assert!(error_of(&past).contains("max_body_bytes"));
    // Multipart: one part whose headers alone are over the limit.
    let boundary = "XyZ";
    let post_form = |form: &str| {
        let content_type = format!("multipart/form-data; boundary={boundary}");
        request("POST", &format!("{}/api/campaigns", daemon.base), Some(&daemon.token), Some(form.as_bytes()), &content_type)
    };
    let pad: String = (0..30).map(|i| format!("X-Pad-{i}: {}\r\n", "h".repeat(70_000))).collect();
    let form = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n{pad}\r\nx\r\n--{boundary}--\r\n");
    let r = post_form(&form);
    assert!([413, 400].contains(&r.status), "{:?}", r.body);
    error_of(&r);
    // Many empty parts: refused at the first repeated one.
    let mut form = String::new();
    while form.len() < 2 * max {
        form.push_str(&format!("--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\n\r\n"));
    }
    form.push_str(&format!("--{boundary}--\r\n"));
    let r = post_form(&form);
    assert!([413, 400].contains(&r.status), "{:?}", r.body);
    // A preamble alone over the limit, too.
    let form = format!("{}\r\n--{boundary}--\r\n", "p".repeat(2 * max));
    let r = post_form(&form);
    assert_eq!(r.status, 413, "{:?}", r.body);
    assert_eq!(campaigns(&daemon), 0);
}

#[test]
fn http_conventions_405_head_json_errors_headers_and_csv_injection() {
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "");
    // 405 with Allow.
    let r = daemon.api("PUT", "/api/sessions", Some(json!({})));
    assert_eq!(r.status, 405);
    assert!(error_of(&r).contains("PUT"));
    let resp = request("DELETE", &format!("{}/health", daemon.base), None, None, "");
    assert_eq!(resp.status, 405, "{resp:?}");
    assert_eq!(resp.header("Allow"), Some("GET, HEAD"));
    // HEAD on GET routes.
    let head = request("HEAD", &format!("{}/api/sessions", daemon.base), Some(&daemon.token), None, "");
    assert_eq!(head.status, 200);
    assert_eq!(request("HEAD", &format!("{}/health", daemon.base), None, None, "").status, 200);
    // Headers on API answers, errors included.
    let ok = daemon.api("GET", "/api/sessions", None);
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("X-Content-Type-Options"), Some("nosniff"));
    assert_eq!(ok.header("Cache-Control"), Some("no-store"));
    let denied = request("GET", &format!("{}/api/sessions", daemon.base), None, None, "");
    assert_eq!(denied.status, 401);
    assert_eq!(denied.header("X-Content-Type-Options"), Some("nosniff"));
    // Errors actix-web makes itself have JSON bodies too.
    for (method, path, body, ct) in [
        ("POST", "/api/sessions", "{", "application/json"),
        ("POST", "/api/sessions", "{}", "text/plain"),
        ("GET", "/api/campaigns/x/recipients?state=NOPE&y=1", "", ""),
        ("GET", "/api/nothing", "", ""),
    ] {
        let b = (!body.is_empty()).then_some(body.as_bytes());
        let r = request(method, &format!("{}{path}", daemon.base), Some(&daemon.token), b, ct);
        assert!(r.status >= 400 && r.status < 500, "{method} {path}: {}", r.status);
        error_of(&r);
        assert!(r.content_type.starts_with("application/json"), "{method} {path}");
    }
    // And so do the errors actix-http's codec answers before the app sees
    // the request: a malformed head, too many headers, a head too slow.
    let many: String = (0..120).map(|i| format!("X-H{i}: 1\r\n")).collect();
    for (request, status) in [
        ("GARBAGE\r\n\r\n".to_string(), 400),
        (format!("GET /health HTTP/1.1\r\nHost: x\r\n{many}\r\n"), 431),
        ("GET /health HTTP/1.1\r\n".to_string(), 408),
    ] {
        // raw() reads until the daemon closes the connection (the 408
        // comes after the 5 s head timeout).
        let answer = raw(&daemon.base, request.as_bytes(), Duration::ZERO);
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no answer: {answer:?}"));
        assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{answer}");
        assert!(head.contains("content-type: application/json") && head.contains("x-content-type-options: nosniff"), "{answer}");
        let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"));
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{answer}");
    }
    // /metrics needs the token by default.
    assert_eq!(request("GET", &format!("{}/metrics", daemon.base), None, None, "").status, 401);
    assert_eq!(request("GET", &format!("{}/metrics", daemon.base), Some(&daemon.token), None, "").status, 200);
    // report.csv neutralises formulas (an invalid number kept as FAILED).
    assert_eq!(daemon.api("POST", "/api/sessions", Some(json!({"name": "a", "start": false}))).status, 201);
    let id = daemon.campaign(json!({
        "name": "x", "session": "a", "template": "Hi", "invalid_numbers": "fail",
        "csv": "phone\n\"=HYPERLINK(\"\"http://evil\"\",\"\"x\"\")\"\n+4915112345678\n",
    }));
    let report = String::from_utf8(daemon.api("GET", &format!("/api/campaigns/{id}/report.csv"), None).bytes).unwrap();
    assert!(report.contains("'=HYPERLINK"), "{report}");
    assert!(report.lines().all(|l| !l.starts_with('=') && !l.contains(",=")), "{report}");
    assert!(report.contains(",+4915112345678,"), "a valid number stays as it is: {report}");

    // Files: the state dir is 0700, the store's files 0600.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&daemon.state_dir()), 0o700);
    for entry in std::fs::read_dir(daemon.state_dir().join("db")).unwrap().flatten() {
        if entry.metadata().unwrap().is_file() {
            assert_eq!(mode(&entry.path()) & 0o077, 0, "{}", entry.path().display());
        }
    }
}

#[test]
fn metrics_can_be_public_and_a_readable_token_file_is_refused() {
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "[limits]\nstreams = 2\n");
    drop(daemon);
    // A token file others can read: the daemon refuses to start and says
    // how to fix it.
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "secret-token-value\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = dir.path().join("c.toml");
    let port = free_port();
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"{}\"\nmetrics_public = true\n[state]\ndir = \"{}\"\n",
            token.display(),
            dir.path().join("s").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wasup"))
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("WASUP_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chmod 600"), "{err}");
    assert!(!err.contains("secret-token-value"), "the token must not be printed");
    // Fixed: it starts, and with metrics_public /metrics needs no token.
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wasup"))
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("WASUP_TOKEN")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_for("the daemon to listen", Duration::from_secs(20), || answers(&format!("{base}/health")).then_some(()));
    assert_eq!(request("GET", &format!("{base}/metrics"), None, None, "").status, 200);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
}

use std::os::unix::fs::PermissionsExt as _;

/// `/health` while hostile clients loop over the requests of the issue:
/// templates that loop 10^8 times or build 100 MB, a 1 MiB CSV with every
/// number invalid, and `/metrics` scrapes. Loose bounds here; the tight
/// figure is the bench's.
#[test]
fn health_answers_while_hostile_requests_run() {
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "[limits]\nrecipients = 200000\n");
    assert_eq!(daemon.api("POST", "/api/sessions", Some(json!({"name": "a", "start": false}))).status, 201);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut hostile = Vec::new();
    let csv: String = std::iter::once("phone\n".to_string()).chain((0..120_000).map(|i| format!("x{i}\n"))).collect::<String>();
    let csv = csv[..csv.len().min(1024 * 1024 - 200)].rsplit_once('\n').unwrap().0.to_string();
    let bodies = vec![
        json!({"name": "x", "session": "a", "template": "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}", "recipients": [{"phone": "+4915112345678"}]}),
        json!({"name": "x", "session": "a", "template": "{{ 'x' * 100000000 }}", "recipients": [{"phone": "+4915112345678"}, {"phone": "+4915112345679"}, {"phone": "+4915112345670"}]}),
        json!({"name": "x", "session": "a", "template": "Hi", "csv": csv, "invalid_numbers": "fail", "start": false}),
    ];
    for body in bodies {
        let (base, token, stop) = (daemon.base.clone(), daemon.token.clone(), stop.clone());
        hostile.push(std::thread::spawn(move || {
            let mut statuses = Vec::new();
            let bytes = body.to_string().into_bytes();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                statuses.push(request("POST", &format!("{base}/api/campaigns"), Some(&token), Some(&bytes), "application/json").status);
            }
            statuses
        }));
    }
    for _ in 0..2 {
        let (base, token, stop) = (daemon.base.clone(), daemon.token.clone(), stop.clone());
        hostile.push(std::thread::spawn(move || {
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                statuses.push(request("GET", &format!("{base}/metrics"), Some(&token), None, "").status);
            }
            statuses
        }));
    }
    let probe = wasup::launch::Api::new(daemon.base.clone(), String::new()).unpooled().with_timeout(Duration::from_secs(5));
    let mut latencies = Vec::new();
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        let t = Instant::now();
        let r = probe.send("GET", "/health", wasup::launch::Body::Empty);
        latencies.push(t.elapsed());
        assert_eq!(r.map(|r| r.status).ok(), Some(200), "/health failed under hostile load");
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let statuses: Vec<u16> = hostile.into_iter().flat_map(|h| h.join().unwrap()).collect();
    assert!(statuses.iter().all(|s| *s < 500), "a hostile request got a 5xx: {statuses:?}");
    assert!(statuses.contains(&400), "the hostile templates must be refused");
    latencies.sort();
    let p50 = latencies[latencies.len() / 2];
    let p99 = latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)];
    let rss = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid()))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_string))
        .unwrap_or_default();
    eprintln!(
        "/health under hostile load: n={} p50={p50:?} p99={p99:?} max={:?}; daemon {rss}",
        latencies.len(),
        latencies.last().unwrap()
    );
    assert!(p50 < Duration::from_millis(100), "/health p50 {p50:?} under hostile load");
    // Loose (a loaded CI machine, a debug build): catches a worker held for
    // seconds, as a scan of a new campaign's recipients once did.
    assert!(p99 < Duration::from_secs(1), "/health p99 {p99:?} under hostile load");
    // The 1.2 k-row invalid CSV is stored as FAILED recipients: the
    // daemon keeps those, bounded by limits.recipients; nothing else was.
    assert!(daemon.api("GET", "/api/campaigns", None).status == 200);
}

/// Arbitrary JSON, CSV and multipart bodies on the create and send routes
/// (proptest, a bounded number of cases): never a 5xx, always a JSON error
/// on a 4xx, and nothing is stored on a 4xx.
#[test]
fn arbitrary_bodies_never_get_a_5xx_and_a_4xx_stores_nothing() {
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "");
    assert_eq!(daemon.api("POST", "/api/sessions", Some(json!({"name": "s", "start": false}))).status, 201);
    let config = proptest::test_runner::Config { cases: 96, failure_persistence: None, ..Default::default() };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let strategy = (0usize..3, 0usize..4, "\\PC{0,200}", json_value());
    runner
        .run(&strategy, |(route, kind, text, json)| {
            let before = (campaigns(&daemon), sessions(&daemon));
            let (bytes, ct) = match kind {
                0 => (json.to_string().into_bytes(), "application/json".to_string()),
                1 => (text.clone().into_bytes(), "application/json".to_string()),
                2 => (
                    json!({"name": "p", "session": "s", "template": text.clone(), "csv": format!("phone,name\n{text}\n")}).to_string().into_bytes(),
                    "application/json".to_string(),
                ),
                _ => {
                    let body = format!("--B\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\n{text}\r\n--B\r\nContent-Disposition: form-data; name=\"session\"\r\n\r\ns\r\n--B\r\nContent-Disposition: form-data; name=\"template\"\r\n\r\nHi {{{{ name }}}}\r\n--B\r\nContent-Disposition: form-data; name=\"csv\"; filename=\"a.csv\"\r\n\r\nphone,name\n{text}\r\n--B--\r\n");
                    (body.into_bytes(), "multipart/form-data; boundary=B".to_string())
                }
            };
            let path = ["/api/campaigns", "/api/sessions", "/api/sessions/s/messages"][route];
            let r = request("POST", &format!("{}{path}", daemon.base), Some(&daemon.token), Some(&bytes), &ct);
            prop_assert!(r.status < 500, "{} {}: {:?}", path, r.status, String::from_utf8_lossy(&r.bytes));
            if r.status >= 400 {
                prop_assert!(r.body["error"].is_string(), "{} {}: no JSON error", path, r.status);
                prop_assert_eq!((campaigns(&daemon), sessions(&daemon)), before);
            }
            Ok(())
        })
        .unwrap();
    assert!(daemon.is_running_check());
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "\\PC{0,30}".prop_map(Value::from),
        prop::sample::select(vec!["+4915112345678", "s", "20s", "400000000000years", "{{ x }}", "fail", "DE"]).prop_map(Value::from),
    ];
    let keys = prop::sample::select(vec![
        "name",
        "session",
        "template",
        "recipients",
        "csv",
        "pacing",
        "start",
        "min_delay",
        "max_delay",
        "phone",
        "to",
        "text",
        "invalid_numbers",
        "default_country",
        "quiet_hours",
    ]);
    leaf.prop_recursive(3, 24, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(keys.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

trait Alive {
    fn is_running_check(&self) -> bool;
}

impl Alive for Daemon {
    fn is_running_check(&self) -> bool {
        answers(&format!("{}/health", self.base))
    }
}
