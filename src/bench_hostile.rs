//! `wasup bench`'s `/health` under hostile load: five clients loop on the
//! most expensive requests the API takes while `/health` is timed.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::bench::{mib, ms, percentile, Row};
use crate::launch::{Api, Body};
use crate::procfs;

/// The hostile figures of one run: `/health` latencies (sorted), the
/// statuses the hostile clients got, and the daemon's RSS after, bytes.
pub struct Hostile {
    health: Vec<Duration>,
    statuses: Vec<u16>,
    rss_after: u64,
}

/// Runs five hostile clients against `api` for `window` (three campaign
/// creations in a loop: a nested loop of 10^8 iterations, a 100 MB string
/// repeat, a 99,000-row CSV of invalid numbers kept as FAILED recipients;
/// and two `/metrics` pollers) while `/health` is asked every 50 ms.
/// Errors: `/health` did not answer 200 within 5 s.
pub fn hostile_load(api: &Api, session: &str, window: Duration, pid: u32) -> anyhow::Result<Hostile> {
    let csv: String = std::iter::once("phone\n".to_string()).chain((0..99_000).map(|i| format!("x{i}\n"))).collect();
    let bodies = [
        json!({"name": "hostile", "session": session, "template": "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}", "recipients": [{"phone": "+4915112345678"}]}),
        json!({"name": "hostile", "session": session, "template": "{{ 'x' * 100000000 }}", "recipients": [{"phone": "+4915112345678"}, {"phone": "+4915112345679"}, {"phone": "+4915112345670"}]}),
        json!({"name": "hostile", "session": session, "template": "Hi", "csv": csv, "invalid_numbers": "fail", "start": false}),
    ];
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hostile = api.clone().with_timeout(Duration::from_secs(120));
    let client = |body: Option<Value>| {
        let (stop, hostile) = (stop.clone(), hostile.clone());
        let (path, method) = match body {
            Some(_) => ("/api/campaigns", "POST"),
            None => ("/metrics", "GET"),
        };
        std::thread::spawn(move || {
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                statuses.push(hostile.send(method, path, Body::json(body.as_ref())).map_or(0, |r| r.status));
            }
            statuses
        })
    };
    let mut clients: Vec<_> = bodies.into_iter().map(|b| client(Some(b))).collect();
    clients.extend([client(None), client(None)]);
    let mut health = Vec::new();
    let probe = Api::new(api.base.clone(), String::new()).unpooled().with_timeout(Duration::from_secs(5));
    let until = Instant::now() + window;
    let mut failure = None;
    while Instant::now() < until {
        let started = Instant::now();
        match probe.send("GET", "/health", Body::Empty) {
            Ok(r) if r.status == 200 => health.push(started.elapsed()),
            other => {
                failure = Some(format!("/health under hostile load: {:?}", other.map(|r| r.status)));
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let statuses: Vec<u16> = clients.into_iter().flat_map(|c| c.join().unwrap_or_default()).collect();
    if let Some(f) = failure {
        anyhow::bail!(f);
    }
    health.sort();
    Ok(Hostile { health, statuses, rss_after: procfs::rss_bytes(pid).unwrap_or(0) })
}

/// The two table rows of a hostile run.
pub fn hostile_rows(rows: &mut Vec<Row>, h: &Hostile, sessions: &str) {
    let created = h.statuses.iter().filter(|s| **s == 201).count();
    let refused = h.statuses.iter().filter(|s| **s == 400).count();
    let server_errors = h.statuses.iter().filter(|s| **s == 0 || **s >= 500).count();
    rows.push((
        format!("/health under hostile load, {sessions}"),
        format!(
            "p50 {}, p99 {}, max {} (n={}; hostile: {created} stored, {refused} refused, {server_errors} 5xx or dropped)",
            ms(percentile(&h.health, 50.0)),
            ms(percentile(&h.health, 99.0)),
            ms(*h.health.last().unwrap_or(&Duration::ZERO)),
            h.health.len()
        ),
        "p99 ≤ 50 ms".into(),
    ));
    rows.push((format!("daemon RSS after the hostile load, {sessions}"), mib(h.rss_after), "—".into()));
}
