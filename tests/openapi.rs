//! `GET /api/openapi.json`: the document is OpenAPI 3, and every operation in
//! it, called as the document describes it (path and query parameters,
//! request bodies from the schemas' examples), is accepted by the daemon with
//! a status the document lists. Every route of the README's API tables is in
//! the document. No browser: the daemon's Chromium and chromedriver paths
//! point nowhere, so a session that is told to start fails at once.

mod common;

use std::collections::BTreeSet;
use std::io::Read as _;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];
const SESSION: &str = "acme";
/// A valid CSV for the multipart upload.
const CSV: &str = "phone,name\n+4915112345678,Ana\n+4915123456789,Ben\n";

/// One operation of the document.
struct Operation {
    method: String,
    path: String,
    op: Value,
}

fn operations(doc: &Value) -> Vec<Operation> {
    let mut all = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                all.push(Operation { method: method.to_string(), path: path.clone(), op: op.clone() });
            }
        }
    }
    all
}

/// Follows a `$ref` to `#/components/schemas/…`.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("unexpected $ref {r}"));
            let target = &doc["components"]["schemas"][name];
            assert!(!target.is_null(), "$ref {r} points nowhere");
            target
        }
        None => schema,
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The media type without parameters, lower case.
fn essence(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

fn multipart(parts: &[(String, String, bool)]) -> (String, Vec<u8>) {
    let boundary = "wasup-openapi-boundary-5c1e";
    let mut body = String::new();
    for (name, value, file) in parts {
        let filename = if *file { format!("; filename=\"{name}.csv\"\r\nContent-Type: text/csv") } else { String::new() };
        body.push_str(&format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"{filename}\r\n\r\n{value}\r\n"));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    (format!("multipart/form-data; boundary={boundary}"), body.into_bytes())
}

/// The bodies to send for an operation, one per documented content type:
/// `(content type, bytes)`; a single `None` when it takes no body.
fn bodies(doc: &Value, o: &Operation) -> Vec<Option<(String, Vec<u8>)>> {
    let Some(content) = o.op["requestBody"]["content"].as_object() else { return vec![None] };
    let mut out = Vec::new();
    for (media, spec) in content {
        let schema = resolve(doc, &spec["schema"]);
        match media.as_str() {
            "application/json" => {
                let example = spec.get("example").or_else(|| schema.get("example"));
                let example = example.unwrap_or_else(|| panic!("{} {}: the JSON body has no example", o.method, o.path));
                out.push(Some((media.clone(), example.to_string().into_bytes())));
            }
            "multipart/form-data" => {
                let properties = schema["properties"].as_object().expect("form properties");
                let required: BTreeSet<&str> = schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                let mut parts = Vec::new();
                for (name, property) in properties {
                    let binary = property["format"] == "binary";
                    let value = if binary {
                        CSV.to_string()
                    } else if let Some(example) = property.get("example") {
                        example.as_str().map(str::to_string).unwrap_or_else(|| example.to_string())
                    } else if required.contains(name.as_str()) {
                        panic!("{} {}: required form part {name} has no example", o.method, o.path)
                    } else {
                        continue;
                    };
                    parts.push((name.clone(), value, binary));
                }
                assert!(parts.iter().any(|(_, _, file)| *file), "{} {}: the form has no file part", o.method, o.path);
                let (ct, bytes) = multipart(&parts);
                out.push(Some((ct, bytes)));
            }
            "text/csv" => out.push(Some((media.clone(), b"phone\n+4915199990000\n".to_vec()))),
            other => panic!("{} {}: no way to build a {other} body", o.method, o.path),
        }
    }
    out
}

/// The URL for an operation: path parameters filled in, every documented
/// query parameter set to its example.
fn url(base: &str, o: &Operation, campaign: &str, dead_letter: &str) -> String {
    let params: Vec<&Value> = o.op["parameters"].as_array().into_iter().flatten().collect();
    let mut path = o.path.clone();
    for segment in o.path.split('/').filter(|s| s.starts_with('{')) {
        let name = segment.trim_matches(|c| c == '{' || c == '}');
        assert!(
            params.iter().any(|p| p["in"] == "path" && p["name"] == name),
            "{} {}: path parameter {name} is not documented",
            o.method,
            o.path
        );
        let value = match name {
            "name" => SESSION,
            "id" => campaign,
            "delivery" => dead_letter,
            other => panic!("{} {}: no value for path parameter {other}", o.method, o.path),
        };
        path = path.replace(segment, value);
    }
    let mut query = Vec::new();
    for p in params.iter().filter(|p| p["in"] == "query") {
        let name = p["name"].as_str().unwrap();
        match p.get("example").and_then(Value::as_str) {
            Some(example) => query.push(format!("{}={}", percent_encode(name), percent_encode(example))),
            None => assert!(p["required"] != true, "{} {}: required query parameter {name} has no example", o.method, o.path),
        }
    }
    let query = if query.is_empty() { String::new() } else { format!("?{}", query.join("&")) };
    format!("{base}{path}{query}")
}

/// Statuses the operation documents.
fn documented(o: &Operation) -> BTreeSet<u16> {
    o.op["responses"].as_object().unwrap().keys().filter_map(|s| s.parse().ok()).collect()
}

/// The answer's body has what the documented schema requires.
fn check_body(doc: &Value, o: &Operation, r: &Resp) {
    let Some(content) = o.op["responses"][r.status.to_string()]["content"].as_object() else { return };
    let got = essence(&r.content_type);
    let spec = content
        .iter()
        .find(|(media, _)| essence(media) == got)
        .unwrap_or_else(|| panic!("{} {}: answered {got}, documented {:?}", o.method, o.path, content.keys().collect::<Vec<_>>()))
        .1;
    if got != "application/json" || spec.get("schema").is_none() {
        return;
    }
    let schema = resolve(doc, &spec["schema"]);
    let (items, schema) = if schema["type"] == "array" {
        (r.body.as_array().cloned().expect("an array"), resolve(doc, &schema["items"]))
    } else {
        (vec![r.body.clone()], schema)
    };
    let required: Vec<&str> = schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    for item in items {
        for field in &required {
            assert!(item.get(field).is_some(), "{} {}: answer lacks required {field}: {item}", o.method, o.path);
        }
    }
}

/// The order to call operations in: the ones that end things last, the
/// session's deletion very last.
fn rank(o: &Operation) -> u8 {
    match (o.method.as_str(), o.path.as_str()) {
        ("delete", "/api/sessions/{name}") => 3,
        ("delete", _) => 2,
        (_, p) if p.ends_with("/cancel") || p.ends_with("/logout") => 1,
        _ => 0,
    }
}

/// The id of a dead letter, once there is one.
fn dead_letter(daemon: &Daemon) -> String {
    wait_for("a dead letter", Duration::from_secs(30), || {
        let r = daemon.api("GET", "/api/webhooks/dead-letters", None);
        r.body.as_array()?.first()?["id"].as_str().map(str::to_string)
    })
}

#[test]
fn every_documented_operation_is_accepted() {
    let sim = Sim::start(&[]);
    // A webhook that refuses everything, so there are dead letters for the
    // `{delivery}` paths.
    let hooks = Receiver::start();
    hooks.answer(400);
    let daemon = Daemon::start(
        &sim,
        &format!(
            "[browser]\nchromium = \"/nonexistent/chromium\"\nchromedriver = \"/nonexistent/chromedriver\"\n[[webhooks]]\nurl = \"{}/hook\"\nsecret = \"s\"\nevents = [\"session.status\"]\n",
            hooks.base
        ),
    );
    let token = Some(daemon.token.as_str());
    let r = daemon.api("POST", "/api/sessions", Some(json!({"name": SESSION, "start": false})));
    assert_eq!(r.status, 201, "{:?}", r.body);
    // Its browser cannot start: session.status events, refused by the hook.
    let r = daemon.api("POST", "/api/sessions", Some(json!({"name": "hooked", "start": true})));
    assert_eq!(r.status, 201, "{:?}", r.body);
    let dead = dead_letter(&daemon);

    // The document, under the token like the rest of /api.
    let unauthorized = request("GET", &format!("{}/api/openapi.json", daemon.base), None, None, "");
    assert_eq!(unauthorized.status, 401);
    let r = daemon.api("GET", "/api/openapi.json", None);
    assert_eq!(r.status, 200);
    assert_eq!(essence(&r.content_type), "application/json");
    let doc = r.body;
    let version = doc["openapi"].as_str().expect("an openapi field");
    assert!(version.starts_with("3."), "OpenAPI {version}");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    let ops = operations(&doc);
    assert!(ops.len() >= 25, "only {} operations", ops.len());
    assert!(ops.iter().all(|o| !o.path.contains("_fault")), "fault injection is documented");

    // A draft campaign on the session, for the `{id}` paths.
    let campaign = daemon.campaign(json!({
        "name": "openapi", "session": SESSION, "template": "Hi {{ name }}",
        "recipients": [{"phone": "+4915112345678", "name": "Ana"}],
    }));

    let mut ordered: Vec<&Operation> = ops.iter().collect();
    ordered.sort_by_key(|o| rank(o));
    for o in ordered {
        let what = format!("{} {}", o.method.to_uppercase(), o.path);
        if o.path.contains("{delivery}") {
            // A replay makes it pending until the hook refuses it again.
            wait_for("the dead letter back", Duration::from_secs(30), || {
                let r = daemon.api("GET", "/api/webhooks/dead-letters?limit=1000", None);
                r.body.as_array()?.iter().any(|d| d["id"] == dead.as_str()).then_some(())
            });
        }
        let url = url(&daemon.base, o, &campaign, &dead);
        let statuses = documented(o);
        let success_type = o.op["responses"]["200"]["content"].as_object().and_then(|c| c.keys().next().cloned());

        if statuses.contains(&101) {
            // A WebSocket: a plain GET without the upgrade headers is refused.
            let r = request(&o.method.to_uppercase(), &url, token, None, "");
            eprintln!("{what}: {} {}", r.status, r.body);
            assert!(
                (400..500).contains(&r.status) && statuses.contains(&r.status),
                "{what}: {} {:?} (documented {statuses:?})",
                r.status,
                r.body
            );
            assert!(r.body["error"].is_string(), "{what}: {:?}", r.body);
            continue;
        }
        if success_type.as_deref() == Some("text/event-stream") {
            // A stream: the status, the content type and a first chunk, then hang up.
            let mut resp =
                wasup::launch::stream(&url, Some(&daemon.token), Some(Duration::from_secs(10))).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(statuses.contains(&resp.status), "{what}: {} (documented {statuses:?})", resp.status);
            assert_eq!(resp.status, 200, "{what}");
            assert_eq!(essence(&resp.content_type), "text/event-stream", "{what}");
            let mut first = [0u8; 64];
            let n = resp.reader.read(&mut first).unwrap_or_else(|e| panic!("{what}: reading the stream: {e}"));
            assert!(n > 0, "{what}: the stream ended");
            eprintln!("{what}: 200 {:?}", String::from_utf8_lossy(&first[..n]));
            continue;
        }

        for body in bodies(&doc, o) {
            let (ct, bytes) = match &body {
                Some((ct, bytes)) => (ct.as_str(), Some(bytes.as_slice())),
                None => ("", None),
            };
            let tok = if o.path.starts_with("/api/") { token } else { None };
            let r = request(&o.method.to_uppercase(), &url, tok, bytes, ct);
            let error = r.body["error"].as_str().unwrap_or("").to_string();
            let body: String = if error.is_empty() { r.body.to_string().chars().take(300).collect() } else { String::new() };
            let shown = format!("{what} ({}): {} {error:?} {body}", essence(ct), r.status);
            eprintln!("{shown}");
            assert!(statuses.contains(&r.status), "{shown}: not a documented status {statuses:?}");
            assert!(!(r.status == 404 && error.contains("no route")), "{shown}");
            assert_ne!(r.status, 405, "{shown}");
            assert_ne!(r.status, 415, "{shown}");
            assert_ne!(r.status, 413, "{shown}");
            // Built from the document, the request is well formed: no 400 at
            // all (invalid JSON, unknown field or query parameter, bad form),
            // and no 404 or 422 for the session and campaign that exist.
            assert!(![400, 404, 422].contains(&r.status), "{shown}");
            assert!(r.status < 500, "{shown}");
            if r.status >= 400 {
                assert!(!error.is_empty(), "{shown}: an error without {{\"error\": …}}");
            } else {
                check_body(&doc, o, &r);
            }
        }
    }
    // The last operation deleted the session.
    assert_eq!(daemon.api("GET", &format!("/api/sessions/{SESSION}"), None).status, 404);
}

/// `(METHOD, path)` of every route in the README's API tables.
fn readme_routes() -> BTreeSet<(String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let mut routes = BTreeSet::new();
    let mut in_api = false;
    let mut in_simulator = false;
    for line in readme.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            in_api = title.trim() == "API";
            in_simulator = false;
            continue;
        }
        if let Some(title) = line.strip_prefix("### ") {
            in_simulator = title.to_lowercase().contains("simulator");
            continue;
        }
        if !in_api || in_simulator || !line.starts_with('|') {
            continue;
        }
        // The first cell, up to the first " | ".
        let first = line[1..].split(" | ").next().unwrap_or("");
        let mut last: Option<(String, String)> = None;
        for (i, span) in first.split('`').enumerate() {
            if i % 2 == 0 {
                continue; // Outside backticks.
            }
            let mut words = span.split_whitespace();
            let (Some(method), Some(path)) = (words.next(), words.next()) else {
                // `/pause` after `POST /api/campaigns/{id}/start`.
                if let (Some((method, previous)), true) = (&last, span.starts_with('/') && !span.contains(' ')) {
                    let parent = &previous[..previous.rfind('/').unwrap()];
                    routes.insert((method.clone(), format!("{parent}{span}")));
                }
                continue;
            };
            if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method) || !path.starts_with('/') {
                continue;
            }
            let path = path.split('?').next().unwrap().to_string();
            routes.insert((method.to_string(), path.clone()));
            last = Some((method.to_string(), path));
        }
    }
    routes
}

#[test]
fn every_route_in_the_readme_is_documented() {
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "[browser]\nchromium = \"/nonexistent/chromium\"\nchromedriver = \"/nonexistent/chromedriver\"\n");
    let r = daemon.api("GET", "/api/openapi.json", None);
    assert_eq!(r.status, 200);
    let documented: BTreeSet<(String, String)> = operations(&r.body).into_iter().map(|o| (o.method.to_uppercase(), o.path)).collect();
    let readme = readme_routes();
    assert!(readme.len() >= 25, "the README's API tables were not found: {readme:?}");
    for expected in
        [("GET", "/health"), ("POST", "/api/campaigns/{id}/cancel"), ("DELETE", "/api/sessions/{name}/queue"), ("GET", "/api/events")]
    {
        assert!(readme.contains(&(expected.0.to_string(), expected.1.to_string())), "README parsing missed {expected:?}: {readme:?}");
    }
    let missing: Vec<_> = readme.difference(&documented).collect();
    assert!(missing.is_empty(), "in the README's API tables but not in the OpenAPI document: {missing:?}");
}
