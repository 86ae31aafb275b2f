//! `wasup webdriver-double`: a browser test double for the cluster bench
//! ([`crate::bench_cluster`]), never for a real session.
//!
//! It stands in for chromedriver (`[browser] chromedriver` points at a
//! wrapper that runs it; it takes chromedriver's `--port` and
//! `--log-level`) and answers only the W3C WebDriver commands a polled page
//! ([`crate::whatsapp::page::Page`] with `whatsapp.events = "poll"`) sends,
//! as if each new session opened a WhatsApp Web already logged in:
//!
//! | command | answer |
//! |---|---|
//! | `GET /status` | ready |
//! | `POST /session` | a new session id; no browser is started, and no `webSocketUrl` (no BiDi) |
//! | `POST /session/{id}/url`, `GET …/url` | done; the URL last navigated to |
//! | `execute/sync` draining the adapter's queue | the first time a `state: CONNECTED` and a `synced` event; then none; the snapshot says `CONNECTED`, synced, `me` = a number derived from the profile dir (the same profile is the same account on every node) |
//! | `execute/sync` `return 1` (probe) | `1` |
//! | `execute/sync` looking a sent message up | its ack (1) if this session sent it, else nothing |
//! | `execute/async` sending a text | ack 1 (the server has it); `existed` for a key id sent before |
//! | `execute/async` typing | done |
//! | `DELETE /session/{id}` | done |
//!
//! Any other script (media, logout, takeover) answers the W3C error
//! `unsupported operation`, and any other command `unknown command`: the
//! double does not pretend. The lease
//! and placement logic are what the cluster bench measures, not the page;
//! the real page and Chromium are measured by the rest of `wasup bench` and
//! the tests, against the simulator.

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::sync::Mutex;

use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::Context as _;
use serde::Deserialize;
use serde_json::{json, Value};

/// Options of `wasup webdriver-double` (chromedriver's own names).
#[derive(clap::Args, Debug, Clone)]
pub struct DoubleArgs {
    /// Loopback port to listen on.
    #[arg(long)]
    pub port: u16,
    /// Accepted for chromedriver compatibility; the double logs nothing.
    #[arg(long = "log-level", default_value = "OFF")]
    pub log_level: String,
}

/// One WebDriver session: one "logged-in page".
struct Fake {
    /// Own chat id, `<digits>@c.us`.
    me: String,
    /// The adapter's load id of this "document".
    load: String,
    /// Drains answered so far (the snapshot's `seq`).
    seq: u64,
    /// Key ids of the texts sent through this session.
    sent: HashSet<String>,
    /// The URL last navigated to (`about:blank` at first).
    url: String,
}

#[derive(Default)]
struct Doubles {
    sessions: Mutex<HashMap<String, Fake>>,
}

/// A W3C WebDriver error answer (`value.error`, `value.message`).
fn error(status: actix_web::http::StatusCode, error: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({"value": {"error": error, "message": message, "stacktrace": ""}}))
}

fn unsupported(what: &str) -> HttpResponse {
    let message = format!("wasup webdriver-double does not model {what}");
    error(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR, "unsupported operation", &message)
}

fn no_session() -> HttpResponse {
    error(actix_web::http::StatusCode::NOT_FOUND, "invalid session id", "no such session (wasup webdriver-double)")
}

fn ok(value: Value) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "value": value }))
}

/// The account number a profile dir stands for: `1555` and seven digits of
/// the FNV-1a hash of its path, so every node that opens the same shared
/// profile is the same account.
pub fn number_of(profile: &str) -> String {
    let hash = profile.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3));
    format!("1555{:07}", hash % 10_000_000)
}

/// Writes `dir/webdriver-double`, an executable stand-in for chromedriver
/// that runs `exe webdriver-double` with the arguments it is given (point
/// `[browser] chromedriver` at it). Returns its path.
///
/// Errors: the file could not be written or made executable.
pub fn write_wrapper(exe: &std::path::Path, dir: &std::path::Path) -> std::io::Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join("webdriver-double");
    std::fs::write(&path, format!("#!/bin/sh\nexec '{}' webdriver-double \"$@\"\n", exe.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

fn new_id() -> String {
    use rand::Rng as _;
    format!("{:032x}", rand::thread_rng().gen::<u128>())
}

async fn status() -> HttpResponse {
    ok(json!({"ready": true, "message": "wasup webdriver-double (a test double, not a browser)"}))
}

async fn new_session(doubles: web::Data<Doubles>, body: web::Json<Value>) -> HttpResponse {
    let args = body
        .pointer("/capabilities/alwaysMatch/goog:chromeOptions/args")
        .or_else(|| body.pointer("/capabilities/firstMatch/0/goog:chromeOptions/args"))
        .and_then(Value::as_array);
    let profile =
        args.into_iter().flatten().filter_map(Value::as_str).find_map(|a| a.strip_prefix("--user-data-dir=")).unwrap_or("").to_string();
    let id = new_id();
    let fake =
        Fake { me: format!("{}@c.us", number_of(&profile)), load: new_id(), seq: 0, sent: HashSet::new(), url: "about:blank".into() };
    doubles.sessions.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), fake);
    ok(json!({
        "sessionId": id,
        "capabilities": {"browserName": "wasup-webdriver-double", "browserVersion": env!("CARGO_PKG_VERSION"), "pageLoadStrategy": "eager"},
    }))
}

async fn delete_session(doubles: web::Data<Doubles>, id: web::Path<String>) -> HttpResponse {
    match doubles.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(id.as_str()) {
        Some(_) => ok(Value::Null),
        None => no_session(),
    }
}

async fn navigate(doubles: web::Data<Doubles>, id: web::Path<String>, body: web::Json<Value>) -> HttpResponse {
    let mut sessions = doubles.sessions.lock().unwrap_or_else(|p| p.into_inner());
    let Some(fake) = sessions.get_mut(id.as_str()) else { return no_session() };
    match body.get("url").and_then(Value::as_str) {
        Some(url) => {
            fake.url = url.to_string();
            ok(Value::Null)
        }
        None => error(actix_web::http::StatusCode::BAD_REQUEST, "invalid argument", "no url"),
    }
}

async fn current_url(doubles: web::Data<Doubles>, id: web::Path<String>) -> HttpResponse {
    match doubles.sessions.lock().unwrap_or_else(|p| p.into_inner()).get(id.as_str()) {
        Some(fake) => ok(json!(fake.url)),
        None => no_session(),
    }
}

/// An `execute/sync` or `execute/async` body.
#[derive(Deserialize)]
struct Script {
    script: String,
    #[serde(default)]
    args: Vec<Value>,
}

fn arg(args: &[Value], i: usize) -> String {
    args.get(i).and_then(Value::as_str).unwrap_or_default().to_string()
}

/// The answer to one script, recognised by the adapter call it makes.
fn run_script(fake: &mut Fake, script: &Script, is_async: bool) -> HttpResponse {
    let s = script.script.as_str();
    if !is_async && s.contains("window.__wasup.drain()") {
        let events = if fake.seq == 0 {
            json!([
                {"k": "state", "state": "CONNECTED", "n": format!("{}.0", fake.load)},
                {"k": "synced", "value": true, "n": format!("{}.1", fake.load)},
            ])
        } else {
            json!([])
        };
        fake.seq += 1;
        let snap = json!({
            "state": "CONNECTED", "synced": true, "me": fake.me, "pushname": "double", "qr": null,
            "post_logout": false, "load": fake.load, "load_no": 1, "seq": fake.seq,
        });
        return ok(json!({"events": events, "snap": snap}));
    }
    if !is_async && s.trim() == "return 1" {
        return ok(json!(1));
    }
    if !is_async && s.contains("window.__wasup.lookup(") {
        let found = fake.sent.contains(&arg(&script.args, 1)).then(|| json!({"ack": 1}));
        return ok(json!({ "found": found }));
    }
    if is_async && s.contains("window.__wasup.send(") {
        let (to, id) = (arg(&script.args, 0), arg(&script.args, 2));
        let existed = !fake.sent.insert(id.clone());
        return ok(json!({"id": id, "to": to, "ack": 1, "existed": existed}));
    }
    if is_async && s.contains("window.__wasup.composing(") {
        return ok(json!(true));
    }
    unsupported("this script (only the poll, probe, lookup, text send and typing are)")
}

async fn execute(doubles: web::Data<Doubles>, path: web::Path<(String, String)>, body: web::Json<Script>) -> HttpResponse {
    let (id, kind) = path.into_inner();
    let is_async = match kind.as_str() {
        "sync" => false,
        "async" => true,
        _ => return unsupported("this execute command"),
    };
    let mut sessions = doubles.sessions.lock().unwrap_or_else(|p| p.into_inner());
    match sessions.get_mut(&id) {
        Some(fake) => run_script(fake, &body, is_async),
        None => no_session(),
    }
}

async fn other(request: actix_web::HttpRequest) -> HttpResponse {
    let message = format!("wasup webdriver-double does not know {} {}", request.method(), request.path());
    error(actix_web::http::StatusCode::NOT_FOUND, "unknown command", &message)
}

/// Serves the double on `127.0.0.1:<port>` until killed (chromedriver
/// dies with the daemon the same way).
///
/// Errors: the port cannot be bound.
pub fn run(args: DoubleArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", args.port)).with_context(|| format!("cannot listen on 127.0.0.1:{}", args.port))?;
    actix_web::rt::System::new().block_on(serve(listener))
}

/// Serves the double on `listener` (inside an actix system).
///
/// Errors: the server could not start on it.
pub async fn serve(listener: TcpListener) -> anyhow::Result<()> {
    let doubles = web::Data::new(Doubles::default());
    HttpServer::new(move || {
        App::new()
            .app_data(doubles.clone())
            .app_data(web::JsonConfig::default().limit(16 * 1024 * 1024))
            .route("/status", web::get().to(status))
            .route("/session", web::post().to(new_session))
            .route("/session/{id}", web::delete().to(delete_session))
            .route("/session/{id}/url", web::post().to(navigate))
            .route("/session/{id}/url", web::get().to(current_url))
            .route("/session/{id}/execute/{kind}", web::post().to(execute))
            .default_service(web::to(other))
    })
    .workers(1)
    .listen(listener)
    .context("cannot serve on the listener")?
    .run()
    .await
    .context("the double's server failed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_profile_is_the_same_account() {
        let a = number_of("/srv/wasup/profiles/acme");
        assert_eq!(a, number_of("/srv/wasup/profiles/acme"));
        assert_ne!(a, number_of("/srv/wasup/profiles/other"));
        assert!(a.len() == 11 && a.starts_with("1555") && a.bytes().all(|b| b.is_ascii_digit()), "{a}");
    }
}
