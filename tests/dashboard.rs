//! The dashboard (`GET /dashboard`) in a real headless Chromium, driven
//! through its own chromedriver, against a real daemon and simulator: the
//! operator types the token, sees the session go green, the phone logs the
//! device out, and the page shows the session yellow with a QR that really
//! loaded (fetched with the token, shown from a blob URL), then green again
//! and without the QR once the new code is scanned. The token never lands in
//! storage, cookies or the URL. Nothing sleeps for synchronisation: every
//! step polls a condition against a deadline.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (or
//! `WASUP_CHROMIUM` / `WASUP_CHROMEDRIVER`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use fantoccini::{Client, Locator};
use serde_json::{json, Value};

const PHONE: &str = "4915112345678";

/// Polls `script` in the page until it returns something other than
/// null/false; panics after `within` with the last answer of `diagnose`.
async fn wait_js(c: &Client, what: &str, within: Duration, script: &str, args: Vec<Value>) -> Value {
    let deadline = Instant::now() + within;
    loop {
        match c.execute(script, args.clone()).await {
            Ok(Value::Null | Value::Bool(false)) | Err(_) => {}
            Ok(v) => return v,
        }
        if Instant::now() > deadline {
            let state = c.execute(DIAGNOSE, vec![]).await.unwrap_or(Value::Null);
            panic!("timed out after {within:?} waiting for {what}; the page: {state}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the page shows, for failure messages.
const DIAGNOSE: &str = r#"
    return {
        sessions: [...document.querySelectorAll('[data-session]')].map((e) => ({
            name: e.getAttribute('data-session'), state: e.getAttribute('data-state'), class: e.className })),
        qr: [...document.querySelectorAll('img[data-qr]')].map((i) => ({
            name: i.getAttribute('data-qr'), src: i.src.slice(0, 5), complete: i.complete, width: i.naturalWidth })),
        live: document.getElementById('live').textContent,
        notice: document.getElementById('notice').textContent,
        login_error: document.getElementById('login-error').textContent,
        events: [...document.querySelectorAll('#events li')].slice(0, 8).map((l) => l.textContent),
    };
"#;

/// The session card's state when it is `state` with colour class `class`.
const CARD_IS: &str = r#"
    const [name, state, cls] = arguments;
    const e = [...document.querySelectorAll('[data-session]')].find((x) => x.getAttribute('data-session') === name);
    return !!e && e.getAttribute('data-state') === state && e.classList.contains(cls);
"#;

/// The session's QR image once it really loaded and is visible.
const QR_SHOWN: &str = r#"
    const [name] = arguments;
    const img = document.querySelector(`img[data-qr="${name}"]`);
    if (!img || !img.complete || img.naturalWidth === 0) return null;
    const r = img.getBoundingClientRect();
    const visible = r.width > 0 && r.height > 0 && img.checkVisibility();
    return visible ? { src: img.src, width: img.naturalWidth, height: img.naturalHeight } : null;
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_sessions_live_with_their_qr() {
    let started = Instant::now();
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "");
    let device = daemon.pair(&sim, "acme", PHONE);

    // The page itself: no token needed, strict headers.
    let r = request("GET", &format!("{}/dashboard", daemon.base), None, None, "");
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type, "text/html");
    assert_eq!(r.header("Content-Type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.header("Cache-Control"), Some("no-store"));
    let csp = r.header("Content-Security-Policy").unwrap_or_default().to_string();
    for part in ["default-src 'none'", "script-src 'nonce-", "img-src 'self' blob:", "connect-src 'self'", "frame-ancestors 'none'"] {
        assert!(csp.contains(part), "CSP lacks {part}: {csp}");
    }

    let driver = Chromedriver::start();
    let profile = tempfile::tempdir().unwrap();
    let c = driver.browser(profile.path()).await;
    c.goto(&format!("{}/dashboard", daemon.base)).await.expect("open the dashboard");

    // A wrong token is refused and the form stays; then log in with the right one.
    let form = c.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css("#token")).await.expect("the token form");
    form.send_keys("not-the-token").await.expect("type a token");
    c.find(Locator::Css("#login-form button[type=submit]")).await.unwrap().click().await.unwrap();
    wait_js(
        &c,
        "the wrong token refused",
        Duration::from_secs(10),
        "return !document.getElementById('login-error').hidden && document.getElementById('dashboard').hidden;",
        vec![],
    )
    .await;
    c.find(Locator::Css("#token")).await.unwrap().send_keys(&daemon.token).await.expect("type the token");
    c.find(Locator::Css("#login-form button[type=submit]")).await.unwrap().click().await.unwrap();

    wait_js(
        &c,
        "acme CONNECTED and green",
        Duration::from_secs(10),
        CARD_IS,
        vec![json!("acme"), json!("CONNECTED"), json!("state-green")],
    )
    .await;
    wait_js(
        &c,
        "the event stream to be live",
        Duration::from_secs(10),
        "return document.getElementById('live').getAttribute('data-live') === 'on';",
        vec![],
    )
    .await;
    let login_gone = c
        .execute("return document.getElementById('login').hidden && document.getElementById('token').value === '';", vec![])
        .await
        .unwrap();
    assert_eq!(login_gone, json!(true), "the form is hidden and holds no token");
    // Anything the Content-Security-Policy blocks from here on is recorded.
    c.execute(
        "window.__violations = []; document.addEventListener('securitypolicyviolation', (e) => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));",
        vec![],
    )
    .await
    .unwrap();

    // A campaign shows up with its progress; its name is shown as text, not markup.
    let name = "<b>spring</b> & \"co\"";
    let recipients: Vec<Value> = numbers(3, 23_000_000).iter().map(|p| json!({"phone": format!("+{p}")})).collect();
    let id = daemon.campaign(json!({
        "name": name, "session": "acme", "template": "Hi!", "recipients": recipients,
        "pacing": {"min_delay": "100ms", "max_delay": "200ms"}, "start": true,
    }));
    let card = wait_js(
        &c,
        "the campaign COMPLETED with 3 of 3 done",
        Duration::from_secs(20),
        r#"
            const [id] = arguments;
            const e = [...document.querySelectorAll('[data-campaign]')].find((x) => x.getAttribute('data-campaign') === id);
            const bar = e && e.querySelector('[role=progressbar]');
            if (!e || e.getAttribute('data-state') !== 'COMPLETED' || bar.getAttribute('aria-valuenow') !== '3') return null;
            return { name: e.querySelector('.name').textContent, markup: e.querySelectorAll('b').length,
                     sent: bar.querySelector('.sent').getBoundingClientRect().width, bar: bar.getBoundingClientRect().width,
                     text: e.querySelector('[data-role=progress]').textContent };
        "#,
        vec![json!(id)],
    )
    .await;
    assert_eq!(card["name"], name, "{card}");
    assert_eq!(card["markup"], 0, "{card}");
    assert!(card["sent"].as_f64().unwrap_or(0.0) > card["bar"].as_f64().unwrap_or(0.0) * 0.99, "a full green bar: {card}");
    assert!(card["text"].as_str().unwrap_or("").starts_with("3 of 3 done"), "{card}");

    // The phone logs the device out: yellow, with a QR that really loaded.
    let r = sim.phone("POST", &format!("/_phone/devices/{device}/logout"), None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    wait_js(&c, "acme SCAN_QR and yellow", Duration::from_secs(30), CARD_IS, vec![json!("acme"), json!("SCAN_QR"), json!("state-yellow")])
        .await;
    let qr = wait_js(&c, "the QR image loaded", Duration::from_secs(10), QR_SHOWN, vec![json!("acme")]).await;
    assert!(qr["src"].as_str().unwrap_or("").starts_with("blob:"), "{qr}");
    assert!(qr["width"].as_u64().unwrap_or(0) >= 21, "{qr}");
    // The change came over the event stream, which the page lists.
    wait_js(
        &c,
        "session.status events listed",
        Duration::from_secs(5),
        "return [...document.querySelectorAll('#events li[data-event=\"session.status\"]')].some((l) => l.textContent.includes('acme') && l.textContent.includes('LOGGED_OUT'));",
        vec![],
    )
    .await;

    // The token is only in the page's memory.
    let kept = c
        .execute(
            "return { local: JSON.stringify(Object.entries(localStorage)), session: JSON.stringify(Object.entries(sessionStorage)), \
                      cookie: document.cookie, url: location.href, html: document.documentElement.outerHTML };",
            vec![],
        )
        .await
        .unwrap();
    for place in ["local", "session", "cookie", "url", "html"] {
        let text = kept[place].as_str().unwrap_or("");
        assert!(!text.contains(&daemon.token), "the token is in {place}");
    }

    // Scanning the new QR: green again, and the QR is gone.
    sim.scan(&daemon.qr("acme"), PHONE);
    wait_js(&c, "acme CONNECTED again", Duration::from_secs(30), CARD_IS, vec![json!("acme"), json!("CONNECTED"), json!("state-green")])
        .await;
    let qr_left = c.execute("return document.querySelectorAll('img[data-qr]').length;", vec![]).await.unwrap();
    assert_eq!(qr_left, json!(0), "the QR is removed once the session left SCAN_QR");

    let violations = c.execute("return window.__violations;", vec![]).await.unwrap();
    assert_eq!(violations, json!([]), "the CSP blocked something the page needs");

    c.close().await.expect("close the browser");
    drop(driver);
    eprintln!("dashboard scenario took {:?}", started.elapsed());
}
