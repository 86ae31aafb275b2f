//! The dashboard (`GET /dashboard`) in a real headless Chromium, driven
//! through its own chromedriver, against a real daemon and simulator: the
//! operator types the token, sees the session go green, the phone logs the
//! device out, and the page shows the session red with a QR that really
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
    // Anything the Content-Security-Policy blocks is recorded, from the
    // page's first line on.
    let (c, _csp) = driver.browser_watching_csp(profile.path()).await;
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
    wait_live(&c).await;
    let login_gone = c
        .execute("return document.getElementById('login').hidden && document.getElementById('token').value === '';", vec![])
        .await
        .unwrap();
    assert_eq!(login_gone, json!(true), "the form is hidden and holds no token");

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

    // The phone logs the device out: red (it needs a scan), with a QR that
    // really loaded.
    let r = sim.phone("POST", &format!("/_phone/devices/{device}/logout"), None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    wait_js(&c, "acme SCAN_QR and red", Duration::from_secs(30), CARD_IS, vec![json!("acme"), json!("SCAN_QR"), json!("state-red")]).await;
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

/// Waits until the dashboard's event stream says it is live.
async fn wait_live(c: &Client) {
    wait_js(
        c,
        "the event stream to be live",
        Duration::from_secs(10),
        "return document.getElementById('live').getAttribute('data-live') === 'on';",
        vec![],
    )
    .await;
}

/// Clears the form control at `css` and types `text` into it.
async fn fill(c: &Client, css: &str, text: &str) {
    let e = c.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no {css}: {e}"));
    e.clear().await.unwrap_or_else(|e| panic!("clear {css}: {e}"));
    e.send_keys(text).await.unwrap_or_else(|e| panic!("type into {css}: {e}"));
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

/// The campaign card `id` once it is in `state`: its progress text.
const CAMPAIGN_IS: &str = r#"
    const [id, state] = arguments;
    const e = document.querySelector(`[data-campaign="${id}"]`);
    if (!e || e.getAttribute('data-state') !== state) return null;
    return e.querySelector('[data-role=progress]').textContent;
"#;

/// The id of the campaign card named `name`, once shown.
const CAMPAIGN_NAMED: &str = r#"
    const [name] = arguments;
    const e = [...document.querySelectorAll('[data-campaign]')].find((x) => x.querySelector('.name').textContent === name);
    return e ? e.getAttribute('data-campaign') : null;
"#;

/// Opens the new-campaign form and fills it; `csv` is a file path.
async fn fill_campaign_form(c: &Client, name: &str, csv: &std::path::Path, min_delay: &str, max_delay: &str) {
    let open = c.execute("return document.getElementById('new-campaign-box').open;", vec![]).await.unwrap();
    if open != json!(true) {
        click(c, "#new-campaign-box summary").await;
    }
    fill(c, "#new-campaign [name=name]", name).await;
    fill(c, "#new-campaign [name=template]", "Hi {{ name }}, spring is here!").await;
    fill(c, "#new-campaign [name=min_delay]", min_delay).await;
    fill(c, "#new-campaign [name=max_delay]", max_delay).await;
    // A file input takes a path typed into it; emptied first, as an
    // operator picking another file would.
    c.execute("document.querySelector('#new-campaign [name=csv]').value = '';", vec![]).await.unwrap();
    let input = c.find(Locator::Css("#new-campaign [name=csv]")).await.unwrap();
    input.send_keys(&csv.display().to_string()).await.expect("choose the CSV");
}

/// An operator works from the page alone: creates a session and pairs it
/// by the QR the page shows, sees it CONNECTED with its 24 h timeline,
/// uploads a CSV (a bad one first: the API's 400 and its rows are shown
/// and nothing is created), starts the campaign and sees it COMPLETED with
/// its sends in the per-hour chart; then starts, pauses and cancels a
/// second one. Screenshots go to `target/tmp/dashboard/` for a person to
/// look at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_creates_a_session_pairs_it_and_runs_a_campaign_from_a_csv_in_the_page() {
    let started = Instant::now();
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "");
    let files = tempfile::tempdir().unwrap();
    let shots = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&shots).expect("the screenshot directory");

    let driver = Chromedriver::start();
    let profile = tempfile::tempdir().unwrap();
    let (c, _csp) = driver.browser_watching_csp(profile.path()).await;
    c.set_window_size(1280, 1400).await.expect("window size");
    c.goto(&format!("{}/dashboard", daemon.base)).await.expect("open the dashboard");
    let form = c.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css("#token")).await.expect("the token form");
    form.send_keys(&daemon.token).await.expect("type the token");
    click(&c, "#login-form button[type=submit]").await;
    wait_live(&c).await;

    // Create the session in the page; its QR appears, with the string it encodes.
    fill(&c, "#new-session-name", "shop").await;
    click(&c, "#new-session button[type=submit]").await;
    let qr = wait_js(
        &c,
        "shop's QR shown",
        Duration::from_secs(90),
        r#"
            const img = document.querySelector('img[data-qr="shop"]');
            if (!img || !img.complete || img.naturalWidth === 0 || !img.checkVisibility()) return null;
            return img.getAttribute('data-qr-value');
        "#,
        vec![],
    )
    .await;
    let qr = qr.as_str().expect("the QR string").to_string();
    assert_eq!(daemon.session("shop")["state"], "SCAN_QR");
    c.screenshot().await.map(|png| std::fs::write(shots.join("1-scan-qr.png"), png)).expect("screenshot").expect("write it");

    // Creating it again: the API's 409 is shown, nothing else changes.
    fill(&c, "#new-session-name", "shop").await;
    click(&c, "#new-session button[type=submit]").await;
    let refused = wait_js(
        &c,
        "the duplicate refused",
        Duration::from_secs(10),
        "const p = document.getElementById('new-session-error'); return !p.hidden && p.textContent;",
        vec![],
    )
    .await;
    assert!(refused.as_str().unwrap_or("").contains("already exists") && refused.as_str().unwrap_or("").contains("409"), "{refused}");

    // The phone scans what the page shows: CONNECTED, green, no QR.
    let device = sim.scan(&qr, PHONE);
    wait_js(
        &c,
        "shop CONNECTED and green",
        Duration::from_secs(60),
        CARD_IS,
        vec![json!("shop"), json!("CONNECTED"), json!("state-green")],
    )
    .await;
    wait_js(&c, "the QR gone", Duration::from_secs(10), "return document.querySelectorAll('img[data-qr]').length === 0;", vec![]).await;

    // The 24 h timeline: a CONNECTED segment that reaches now, and the
    // states before it, with a legend.
    let timeline = wait_js(
        &c,
        "a CONNECTED segment in shop's timeline",
        Duration::from_secs(20),
        r#"
            const card = document.querySelector('[data-session="shop"]');
            const bar = card && card.querySelector('svg[data-role=timeline]');
            const seg = bar && bar.querySelector('rect[data-state=CONNECTED]');
            if (!seg) return null;
            return { states: [...bar.querySelectorAll('rect[data-state]')].map((r) => r.getAttribute('data-state')),
                     width: seg.getBoundingClientRect().width, to: Number(seg.getAttribute('data-to-ms')), now: Date.now(),
                     legend: [...card.querySelectorAll('[data-legend]')].map((l) => l.getAttribute('data-legend')) };
        "#,
        vec![],
    )
    .await;
    let states: Vec<&str> = timeline["states"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(states.last(), Some(&"CONNECTED"), "{timeline}");
    assert!(states.contains(&"SCAN_QR"), "the wait for the scan is on the bar: {timeline}");
    assert!(timeline["width"].as_f64().unwrap_or(0.0) > 0.0, "{timeline}");
    assert!(timeline["now"].as_f64().unwrap_or(0.0) - timeline["to"].as_f64().unwrap_or(0.0) < 120_000.0, "reaches now: {timeline}");
    assert!(timeline["legend"].as_array().unwrap().contains(&json!("CONNECTED")), "{timeline}");

    // Objectives (seed 004): shown as the API gives them, one row each with
    // its verdict; no block when the session view has none. (Both are read
    // again until they agree: a verdict may change between the two reads.)
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let view = daemon.session("shop");
        let mut expected: Vec<(String, String)> = view["objectives"]
            .as_object()
            .map(|o| o.iter().map(|(k, v)| (k.clone(), if v["met"].is_null() { "null".into() } else { v["met"].to_string() })).collect())
            .unwrap_or_default();
        let shown = c
            .execute(
                "return [...document.querySelectorAll('[data-session=\"shop\"] [data-objective]')].map((r) => [r.getAttribute('data-objective'), r.getAttribute('data-met')]);",
                vec![],
            )
            .await
            .unwrap();
        let mut shown: Vec<(String, String)> = serde_json::from_value(shown).expect("[key, met] pairs");
        shown.sort();
        expected.sort();
        if shown == expected {
            break;
        }
        assert!(Instant::now() < deadline, "objectives in the page {shown:?} vs the API {}", view["objectives"]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A CSV with a bad row: the API's 400 and the row are shown; nothing is created.
    let bad = files.path().join("bad.csv");
    std::fs::write(&bad, "phone,name\n+4915124000000,Ana\nnot a number,Ben\n").unwrap();
    fill_campaign_form(&c, "spring", &bad, "100ms", "200ms").await;
    click(&c, "#new-campaign button[type=submit]").await;
    let refused = wait_js(
        &c,
        "the bad CSV refused",
        Duration::from_secs(20),
        "const p = document.getElementById('new-campaign-error'); return !p.hidden && p.textContent;",
        vec![],
    )
    .await;
    let refused = refused.as_str().unwrap_or("").to_string();
    assert!(refused.contains("HTTP 400") && refused.contains("line 3"), "{refused}");
    c.screenshot().await.map(|png| std::fs::write(shots.join("2-bad-csv.png"), png)).expect("screenshot").expect("write it");
    assert_eq!(daemon.api("GET", "/api/campaigns", None).body, json!([]), "nothing created");

    // The good CSV: a DRAFT, started with its button, COMPLETED in the page.
    let good = files.path().join("spring.csv");
    let phones = numbers(3, 24_000_000);
    let rows: String = phones.iter().enumerate().map(|(i, p)| format!("+{p},Friend {i}\n")).collect();
    std::fs::write(&good, format!("phone,name\n{rows}")).unwrap();
    fill_campaign_form(&c, "spring", &good, "100ms", "200ms").await;
    click(&c, "#new-campaign button[type=submit]").await;
    let id = wait_js(&c, "the campaign card", Duration::from_secs(20), CAMPAIGN_NAMED, vec![json!("spring")]).await;
    let id = id.as_str().unwrap().to_string();
    wait_js(&c, "spring a DRAFT", Duration::from_secs(10), CAMPAIGN_IS, vec![json!(id), json!("DRAFT")]).await;
    let ok = c.execute("const p = document.getElementById('new-campaign-ok'); return !p.hidden && p.textContent;", vec![]).await.unwrap();
    assert!(ok.as_str().unwrap_or("").contains("3 recipients"), "{ok}");
    assert_eq!(daemon.campaign_view(&id)["pacing"]["min_delay"], "100ms", "the form's pacing reached the API");
    click(&c, &format!("[data-campaign=\"{id}\"] button[data-action=start]")).await;
    let progress = wait_js(&c, "spring COMPLETED", Duration::from_secs(60), CAMPAIGN_IS, vec![json!(id), json!("COMPLETED")]).await;
    assert!(progress.as_str().unwrap_or("").starts_with("3 of 3 done"), "{progress}");
    let delivered = deliveries(&sim, &device);
    for p in &phones {
        assert_eq!(delivered.get(&format!("{p}@c.us")), Some(&1), "{p} got it once: {delivered:?}");
    }

    // Its sends per hour: 24 bars, the 3 sends among them.
    let chart = wait_js(
        &c,
        "3 sends in the per-hour chart",
        Duration::from_secs(20),
        r#"
            const [id] = arguments;
            const bars = [...document.querySelectorAll(`[data-campaign="${id}"] svg[data-role=sends-chart] rect[data-sent]`)];
            const sent = bars.reduce((a, b) => a + Number(b.getAttribute('data-sent')), 0);
            return sent === 3 ? { bars: bars.length, tallest: Math.max(...bars.map((b) => b.getBoundingClientRect().height)) } : null;
        "#,
        vec![json!(id)],
    )
    .await;
    assert_eq!(chart["bars"], 24, "{chart}");
    let hours = daemon.campaign_view(&id)["sends_per_hour"].as_array().cloned().expect("sends_per_hour in the campaign");
    assert_eq!(hours.len(), 24);
    assert_eq!(hours.iter().filter_map(|h| h["sent"].as_u64()).sum::<u64>(), 3, "{hours:?}");
    let listed = daemon.api("GET", "/api/campaigns", None).body;
    assert!(listed[0].get("sends_per_hour").is_none(), "the list leaves it out: {listed}");
    assert!(chart["tallest"].as_f64().unwrap_or(0.0) > 10.0, "a visible bar: {chart}");
    c.screenshot().await.map(|png| std::fs::write(shots.join("3-completed.png"), png)).expect("screenshot").expect("write it");

    // A second one started from the form, then paused and cancelled with its buttons.
    let slow = files.path().join("slow.csv");
    std::fs::write(&slow, "phone,name\n+4915124100000,Ana\n+4915124100001,Ben\n+4915124100002,Cid\n").unwrap();
    fill_campaign_form(&c, "slow", &slow, "60s", "90s").await;
    click(&c, "#new-campaign [name=start]").await;
    click(&c, "#new-campaign button[type=submit]").await;
    let slow_id = wait_js(&c, "the slow campaign's card", Duration::from_secs(20), CAMPAIGN_NAMED, vec![json!("slow")]).await;
    let slow_id = slow_id.as_str().unwrap().to_string();
    wait_js(&c, "slow RUNNING", Duration::from_secs(10), CAMPAIGN_IS, vec![json!(slow_id), json!("RUNNING")]).await;
    click(&c, &format!("[data-campaign=\"{slow_id}\"] button[data-action=pause]")).await;
    wait_js(&c, "slow PAUSED", Duration::from_secs(10), CAMPAIGN_IS, vec![json!(slow_id), json!("PAUSED")]).await;
    click(&c, &format!("[data-campaign=\"{slow_id}\"] button[data-action=cancel]")).await;
    c.accept_alert().await.expect("confirm the cancel");
    wait_js(&c, "slow CANCELLED", Duration::from_secs(10), CAMPAIGN_IS, vec![json!(slow_id), json!("CANCELLED")]).await;
    assert_eq!(daemon.campaign_view(&slow_id)["state"], "CANCELLED");
    let buttons = c
        .execute(
            "const [id] = arguments; return document.querySelectorAll(`[data-campaign=\"${id}\"] button`).length;",
            vec![json!(slow_id)],
        )
        .await
        .unwrap();
    assert_eq!(buttons, json!(0), "an ended campaign offers no action");

    let shot = shots.join("4-cancelled.png");
    c.screenshot().await.map(|png| std::fs::write(&shot, png)).expect("screenshot").expect("write it");
    eprintln!("dashboard screenshots in {}", shots.display());
    let violations = c.execute("return window.__violations;", vec![]).await.unwrap();
    assert_eq!(violations, json!([]), "the CSP blocked something the page needs");

    c.close().await.expect("close the browser");
    drop(driver);
    eprintln!("dashboard operator scenario took {:?}", started.elapsed());
}
