//! The simulator's page in a real Chromium (through chromedriver), driven
//! only through WhatsApp Web's module surface, with the sim's phone API
//! playing the phone. Each test is one scenario end to end, with at most one
//! Chromium at a time; nothing sleeps for synchronisation, everything polls
//! a condition against a deadline.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (or
//! `WASUP_CHROMIUM` / `WASUP_CHROMEDRIVER`). Run with
//! `cargo test --test sim_page -- --test-threads=1`.

use std::time::{Duration, Instant};

mod common;

use common::{Chromedriver, Resp, Sim};
use fantoccini::Client;
use serde_json::{json, Value};

const PHONE: &str = "4915112345678";
const ME: &str = "4915112345678@c.us";
const FRIEND: &str = "4917000000001@c.us";

// ----- the page ------------------------------------------------------------

/// Runs `script` in the page (a returned promise is awaited); `None` if
/// the page is between documents or the script threw.
async fn js(c: &Client, script: &str, args: Vec<Value>) -> Option<Value> {
    c.execute(script, args).await.ok()
}

/// Polls `script` until it returns something other than null/false.
async fn wait_js(c: &Client, what: &str, within: Duration, script: &str, args: Vec<Value>) -> Value {
    let deadline = Instant::now() + within;
    loop {
        match js(c, script, args.clone()).await {
            Some(Value::Null | Value::Bool(false)) | None => {}
            Some(v) => return v,
        }
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The page's state through the surface, or null before it booted.
const SNAPSHOT: &str = r#"
    try {
        const Socket = window.require('WAWebSocketModel').Socket;
        const Conn = window.require('WAWebConnModel').Conn;
        const me = window.require('WAWebUserPrefsMeUser').getMaybeMePnUser();
        return { state: Socket.state, synced: Socket.hasSynced, ref: Conn.ref,
                 me: me ? me._serialized : null, conn: Conn.serialize(), url: location.href };
    } catch (e) { return null; }
"#;

async fn snapshot(c: &Client) -> Value {
    js(c, SNAPSHOT, vec![]).await.unwrap_or(Value::Null)
}

/// Waits until the page's state is `state` (and `extra` holds on the
/// snapshot); returns the snapshot.
async fn wait_state(c: &Client, state: &str, within: Duration, extra: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let s = snapshot(c).await;
        if s["state"] == state && extra(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {state}; last snapshot {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Builds the full QR string from the surface, as a client does.
const QR_STRING: &str = r#"
    return (async () => {
        const ref = window.require('WAWebConnModel').Conn.ref;
        if (!ref) return null;
        const B64 = window.require('WABase64');
        const reg = await window.require('WAWebSignalStoreApi').waSignalStore.getRegistrationInfo();
        const noise = await window.require('WAWebUserPrefsInfoStore').waNoiseInfo.get();
        const adv = await window.require('WAWebUserPrefsMultiDevice').getADVSecretKey();
        const platform = window.require('WAWebCompanionRegClientUtils').DEVICE_PLATFORM;
        return [ref, B64.encodeB64(noise.staticKeyPair.pubKey),
                B64.encodeB64(reg.identityKeyPair.pubKey), adv, platform].join(',');
    })();
"#;

async fn qr_string(c: &Client) -> String {
    let v = wait_js(c, "a QR string", Duration::from_secs(10), QR_STRING, vec![]).await;
    v.as_str().map(str::to_owned).unwrap_or_default()
}

/// Sends `body` to `to` through the surface; resolves once the message is
/// in `Msg` (and, with `await_result`, once the server answered). Returns
/// `{key, id, ack, result}` or `{error}`.
const SEND: &str = r#"
    const [to, body, awaitResult] = arguments;
    return (async () => {
        try {
            const wid = window.require('WAWebWidFactory').createWid(to);
            let chat = window.require('WAWebCollections').Chat.get(wid);
            if (!chat) {
                const exists = await window.require('WAWebQueryExistsJob').queryWidExists(wid);
                if (!exists) return { error: 'not on WhatsApp' };
                chat = (await window.require('WAWebFindChatAction').findOrCreateLatestChat(wid)).chat;
            }
            const MsgKey = window.require('WAWebMsgKey');
            const me = window.require('WAWebUserPrefsMeUser').getMaybeMePnUser();
            const id = await MsgKey.newId();
            const key = new MsgKey({ from: me, to: wid, id, selfDir: 'out' });
            const [msgPromise, resultPromise] = window.require('WAWebSendMsgChatAction')
                .addAndSendMsgToChat(chat, { id: key, body, type: 'chat', from: me, to: wid,
                                             t: Math.floor(Date.now() / 1000), ack: 0 });
            window.__results = window.__results || {};
            window.__results[key._serialized] = null;
            resultPromise.then((r) => { window.__results[key._serialized] = r; });
            const msg = await msgPromise;
            const result = awaitResult ? await resultPromise : null;
            return { key: key._serialized, id, ack: msg.ack, result };
        } catch (e) { return { error: String(e.message) }; }
    })();
"#;

async fn send(c: &Client, to: &str, body: &str, await_result: bool) -> Value {
    js(c, SEND, vec![json!(to), json!(body), json!(await_result)]).await.unwrap_or(Value::Null)
}

async fn msg_ack(c: &Client, key: &str) -> Value {
    let script = "const m = window.require('WAWebCollections').Msg.get(arguments[0]); return m ? m.ack : null;";
    js(c, script, vec![json!(key)]).await.unwrap_or(Value::Null)
}

/// Goes from a fresh page to CONNECTED + hasSynced by scanning its QR.
async fn pair(c: &Client, sim: &Sim) -> String {
    wait_state(c, "UNPAIRED", Duration::from_secs(15), |s| s["ref"].is_string()).await;
    js(c, "window.__mark = 'before pairing'; return true;", vec![]).await;
    let qr = qr_string(c).await;
    let Resp { status, body: answer, .. } = sim.try_scan(&qr, PHONE);
    assert_eq!(status, 200, "scan: {answer}");
    let device = answer["device"].as_str().unwrap_or_default().to_owned();
    assert!(!device.is_empty());
    // The page reloads itself: the mark is gone, the new page logs in.
    let s = wait_state(c, "CONNECTED", Duration::from_secs(15), |s| s["synced"] == true).await;
    let mark = js(c, "return window.__mark === undefined;", vec![]).await;
    assert_eq!(mark, Some(json!(true)), "the page did not reload after pairing");
    assert_eq!(s["me"], ME);
    assert_eq!(s["ref"], Value::Null);
    assert_eq!(s["conn"]["pushname"], "Acme");
    assert_eq!(s["conn"]["connected"], true);
    device
}

fn unique(list: &[Value], id: &str) -> usize {
    list.iter().filter(|m| m["id"] == id).count()
}

// ----- scenarios --------------------------------------------------------------

/// Pair by scanning, send, read acks, restart the browser on the same
/// profile (no QR), then the phone logs the device out.
#[tokio::test]
async fn pair_send_restart_and_phone_logout() {
    let sim = Sim::start(&["--qr-first=60s", "--sync-delay=300ms", "--boot-delay=200ms"]);
    let driver = Chromedriver::start();
    let profile = tempfile::tempdir().expect("profile dir");
    let started = Instant::now();

    let c = driver.browser(profile.path()).await;
    c.goto(&sim.url("/")).await.expect("open the page");
    let surface = wait_js(
        &c,
        "the page to boot",
        Duration::from_secs(10),
        r#"
        if (!window.Debug || !window.Debug.VERSION) return null;
        const out = { version: window.Debug.VERSION };
        try { window.require('NoSuchModule'); } catch (e) { out.unknown = e.message; }
        try { window.require('WAWebWidFactory').createWid('12@c.us'); } catch (e) { out.badWid = e.message; }
        const W = window.require('WAWebWidFactory');
        out.user = W.createWid('4915112345678@c.us').isUser();
        out.group = W.createWid('4915112345678-1600000000@g.us')._serialized;
        out.newId = window.require('WAWebMsgKey').newId();
        const MsgKey = window.require('WAWebMsgKey');
        const key = new MsgKey({ from: W.createWid('4915112345678@c.us'), to: W.createWid('4917000000001@c.us'),
                                 id: '3EB0AAAAAAAAAAAAAAAA', selfDir: 'out' });
        out.key = [key.toString(), key._serialized, key.fromMe, key.remote._serialized, key.id];
        out.meBefore = window.require('WAWebUserPrefsMeUser').getMaybeMePnUser();
        return out;
    "#,
        vec![],
    )
    .await;
    assert!(surface["version"].as_str().is_some_and(|v| v.starts_with("2.3000.")));
    assert_eq!(surface["unknown"], "Requiring unknown module \"NoSuchModule\"");
    assert_eq!(surface["badWid"], "wid error: invalid wid");
    assert_eq!(surface["user"], true);
    assert_eq!(surface["group"], "4915112345678-1600000000@g.us");
    let new_id = surface["newId"].as_str().unwrap_or_default();
    assert!(new_id.len() == 20 && new_id.starts_with("3EB0") && new_id.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase()));
    let k = "true_4917000000001@c.us_3EB0AAAAAAAAAAAAAAAA";
    assert_eq!(surface["key"], json!([k, k, true, FRIEND, "3EB0AAAAAAAAAAAAAAAA"]));
    assert_eq!(surface["meBefore"], Value::Null);

    let device = pair(&c, &sim).await;

    // Send once: the phone's log has it once; acks advance SERVER → DEVICE → READ.
    let sent = send(&c, FRIEND, "hello from the sim test", true).await;
    assert_eq!(sent["result"], json!({"messageSendResult": "OK"}), "send: {sent}");
    let key = sent["key"].as_str().unwrap_or_default().to_owned();
    let id = sent["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(key, format!("true_{FRIEND}_{id}"));
    let log = sim.messages(&device);
    assert_eq!(unique(&log, &id), 1, "log: {log:?}");
    let entry = log.iter().find(|m| m["id"] == id).cloned().unwrap_or_default();
    assert_eq!((entry["to"].as_str(), entry["body"].as_str()), (Some(FRIEND), Some("hello from the sim test")));
    assert!(entry["at_ms"].as_u64().is_some_and(|t| t > 1_600_000_000_000));
    assert!(msg_ack(&c, &key).await.as_i64().is_some_and(|a| a >= 1));
    wait_js(
        &c,
        "DEVICE ack",
        Duration::from_secs(5),
        "const m = window.require('WAWebCollections').Msg.get(arguments[0]); return !!m && m.ack === 2;",
        vec![json!(key)],
    )
    .await;
    js(
        &c,
        r#"window.__acks = [];
        window.require('WAWebCollections').Msg.on('change:ack', (m, ack) => window.__acks.push([m.id._serialized, ack]));
        return true;"#,
        vec![],
    )
    .await;
    sim.device_action(&device, "ack", Some(json!({"id": id, "ack": "READ"})));
    let acks =
        wait_js(&c, "READ ack event", Duration::from_secs(5), "return (window.__acks || []).length ? window.__acks : null;", vec![]).await;
    assert_eq!(acks, json!([[key, 3]]));

    // Numbers not on WhatsApp.
    let status = sim.phone("POST", "/_phone/unregistered", Some(json!({"numbers": ["+4917000000009"]}))).status;
    assert_eq!(status, 200);
    let lookups = js(
        &c,
        r#"return (async () => {
        const wid = window.require('WAWebWidFactory').createWid('4917000000009@c.us');
        const exists = await window.require('WAWebQueryExistsJob').queryWidExists(wid);
        let err = null;
        try { await window.require('WAWebFindChatAction').findOrCreateLatestChat(wid); }
        catch (e) { err = e.message; }
        return { exists, err };
    })();"#,
        vec![],
    )
    .await;
    assert_eq!(lookups, Some(json!({"exists": null, "err": "No LID for user"})));

    // A browser restarted on the same profile comes back without a QR, and
    // history sync brings the message back.
    c.close().await.expect("close the browser");
    let c = driver.browser(profile.path()).await;
    c.goto(&sim.url("/")).await.expect("open the page again");
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = Vec::new();
    loop {
        let s = snapshot(&c).await;
        if let Some(state) = s["state"].as_str() {
            if seen.last().map(String::as_str) != Some(state) {
                seen.push(state.to_owned());
            }
        }
        if s["state"] == "CONNECTED" && s["synced"] == true {
            assert_eq!(s["me"], ME);
            break;
        }
        assert!(Instant::now() < deadline, "no reconnect after a browser restart: {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!seen.iter().any(|s| s.starts_with("UNPAIRED")), "asked for a QR again: {seen:?}");
    assert_eq!(msg_ack(&c, &key).await, json!(3), "history sync did not bring the message back");
    assert_eq!(sim.device_state(&device), "active");

    // The phone logs the device out: Cmd emits logout, the page navigates to
    // post_logout=1 and shows a fresh QR with fresh keys.
    let old_qr = qr_string_keys(&c).await;
    js(&c, "window.require('WAWebCmd').Cmd.on('logout', () => sessionStorage.setItem('saw_logout', '1')); return true;", vec![]).await;
    sim.device_action(&device, "logout", None);
    let s = wait_state(&c, "UNPAIRED", Duration::from_secs(15), |s| {
        s["ref"].is_string() && s["url"].as_str().is_some_and(|u| u.contains("post_logout=1"))
    })
    .await;
    assert_eq!(s["me"], Value::Null);
    assert_eq!(js(&c, "return sessionStorage.getItem('saw_logout');", vec![]).await, Some(json!("1")));
    let new_qr = qr_string_keys(&c).await;
    assert_ne!(old_qr, new_qr, "keys were not renewed after the logout");
    assert_eq!(sim.device_state(&device), "logged_out");
    c.close().await.expect("close the browser");
    eprintln!("pair_send_restart_and_phone_logout: {:?}", started.elapsed());
}

/// The identity part of the QR string (keys only), readable even without a ref.
async fn qr_string_keys(c: &Client) -> Value {
    js(
        c,
        r#"return (async () => {
        const B64 = window.require('WABase64');
        const reg = await window.require('WAWebSignalStoreApi').waSignalStore.getRegistrationInfo();
        const noise = await window.require('WAWebUserPrefsInfoStore').waNoiseInfo.get();
        const adv = await window.require('WAWebUserPrefsMultiDevice').getADVSecretKey();
        return [B64.encodeB64(noise.staticKeyPair.pubKey), B64.encodeB64(reg.identityKeyPair.pubKey), adv];
    })();"#,
        vec![],
    )
    .await
    .unwrap_or(Value::Null)
}

/// QR refs rotate on the server's schedule, old refs are gone (410),
/// unknown ones never existed (404), the batch ends in UNPAIRED_IDLE, a
/// refresh brings new refs; the page logs itself out; then the account
/// gets blocked (TOS_BLOCK).
#[tokio::test]
async fn qr_refs_rotate_expire_and_go_idle() {
    let sim = Sim::start(&["--qr-first=3s", "--qr-next=1s", "--qr-refs=3", "--boot-delay=100ms", "--sync-delay=200ms"]);
    let driver = Chromedriver::start();
    let profile = tempfile::tempdir().expect("profile dir");
    let started = Instant::now();
    let c = driver.browser(profile.path()).await;
    c.goto(&sim.url("/")).await.expect("open the page");

    let s = wait_state(&c, "UNPAIRED", Duration::from_secs(10), |s| s["ref"].is_string()).await;
    let r0 = s["ref"].as_str().unwrap_or_default().to_owned();
    js(
        &c,
        r#"window.__refs = [];
        window.require('WAWebConnModel').Conn.on('change:ref', (m, ref) => window.__refs.push([ref, performance.now()]));
        return true;"#,
        vec![],
    )
    .await;
    let q0 = qr_string(&c).await;
    assert!(q0.starts_with(&format!("{r0},")) && q0.ends_with(",WEB") && q0.split(',').count() == 5);
    let keys = q0[r0.len()..].to_owned();

    // Unknown ref: 404. The right ref with other keys: 400. A bad phone: 400.
    assert_eq!(sim.try_scan(&format!("2@neverhandedout{keys}"), PHONE).status, 404);
    let other = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    assert_eq!(sim.try_scan(&format!("{r0},{other},{other},{other},WEB"), PHONE).status, 400);
    let Resp { status, body: bad, .. } = sim.phone("POST", "/_phone/scan", Some(json!({"qr": q0, "phone": "12"})));
    assert_eq!(status, 400);
    assert!(bad["error"].is_string());
    assert_eq!(sim.phone("POST", "/_phone/scan", Some(json!({"qr": 1}))).status, 400);

    // Rotation: the old ref expires (410).
    let s = wait_state(&c, "UNPAIRED", Duration::from_secs(5), |s| s["ref"].is_string() && s["ref"] != r0.as_str()).await;
    let r1 = s["ref"].as_str().unwrap_or_default().to_owned();
    let Resp { status, body: gone, .. } = sim.try_scan(&format!("{r0}{keys}"), PHONE);
    assert_eq!(status, 410, "{gone}");

    // After the batch: UNPAIRED_IDLE, no ref, and the last ref is gone too.
    wait_state(&c, "UNPAIRED_IDLE", Duration::from_secs(5), |s| s["ref"].is_null()).await;
    let refs = js(&c, "return window.__refs;", vec![]).await.unwrap_or(Value::Null);
    let refs = refs.as_array().cloned().unwrap_or_default();
    let names: Vec<Value> = refs.iter().map(|r| r[0].clone()).collect();
    assert_eq!(names.len(), 3, "ref changes: {refs:?}");
    assert_eq!((&names[0], &names[2]), (&json!(r1), &Value::Null));
    let r2 = names[1].as_str().unwrap_or_default().to_owned();
    assert!(r2 != r0 && r2 != r1);
    let lived = refs[2][1].as_f64().unwrap_or(0.0) - refs[1][1].as_f64().unwrap_or(0.0);
    assert!((600.0..2000.0).contains(&lived), "a later ref lived {lived} ms, not ~1 s");
    assert_eq!(sim.try_scan(&format!("{r2}{keys}"), PHONE).status, 410);
    let shown = js(&c, "const b = document.getElementById('reload-qr'); return !b.hidden && b.textContent;", vec![]).await;
    assert_eq!(shown, Some(json!("Click to reload the QR code")));

    // Refresh: a new batch, and its ref pairs.
    js(&c, "window.require('WAWebCmd').Cmd.refreshQR(); return true;", vec![]).await;
    let s = wait_state(&c, "UNPAIRED", Duration::from_secs(5), |s| s["ref"].is_string()).await;
    assert!(![&r0, &r1, &r2].iter().any(|r| s["ref"] == r.as_str()));
    let device = pair(&c, &sim).await;

    // Logging out from the page: the server forgets the device, the page
    // navigates to post_logout=1 and shows a new QR.
    js(&c, "window.require('WAWebSocketModel').Socket.logout(); return true;", vec![]).await;
    wait_state(&c, "UNPAIRED", Duration::from_secs(10), |s| {
        s["ref"].is_string() && s["url"].as_str().is_some_and(|u| u.contains("post_logout=1"))
    })
    .await;
    assert_eq!(sim.device_state(&device), "logged_out");
    let device = pair(&c, &sim).await;

    // Blocked: TOS_BLOCK now, and again after a reload (the credential is refused).
    sim.device_action(&device, "ban", None);
    wait_state(&c, "TOS_BLOCK", Duration::from_secs(5), |_| true).await;
    c.refresh().await.expect("reload");
    wait_state(&c, "TOS_BLOCK", Duration::from_secs(10), |_| true).await;
    assert_eq!(sim.device_state(&device), "banned");
    c.close().await.expect("close the browser");
    eprintln!("qr_refs_rotate_expire_and_go_idle: {:?}", started.elapsed());
}

/// A network drop flaps TIMEOUT/OPENING and comes back by itself, flushing
/// the outbox exactly once; a conflict waits for a takeover; the reach-out
/// timelock refuses new chats with 463; device_removed voids the
/// credential in place; SIGTERM stops the sim cleanly.
#[tokio::test]
async fn network_drop_conflict_timelock_and_device_removed() {
    let mut sim = Sim::start(&["--boot-delay=100ms", "--sync-delay=200ms"]);
    let driver = Chromedriver::start();
    let profile = tempfile::tempdir().expect("profile dir");
    let started = Instant::now();
    let c = driver.browser(profile.path()).await;
    c.goto(&sim.url("/")).await.expect("open the page");
    let device = pair(&c, &sim).await;

    js(
        &c,
        r#"window.__states = []; window.__synced = []; window.__cmdLogout = 0; window.__mark = 'same page';
        const S = window.require('WAWebSocketModel').Socket;
        S.on('change:state', (m, s) => window.__states.push(s));
        S.on('change:hasSynced', (m, v) => window.__synced.push(v));
        window.require('WAWebCmd').Cmd.on('logout', () => { window.__cmdLogout += 1; });
        // Watch how the page's next sockets end (a network failure has no close frame).
        window.__closeCodes = [];
        const Native = window.WebSocket;
        window.WebSocket = class extends Native {
            constructor(...args) {
                super(...args);
                this.addEventListener('close', (e) => window.__closeCodes.push(e.code));
            }
        };
        return true;"#,
        vec![],
    )
    .await;

    let first = send(&c, FRIEND, "before the drop", true).await;
    assert_eq!(first["result"], json!({"messageSendResult": "OK"}), "{first}");

    // Network drop: TIMEOUT at once; a message sent meanwhile waits at ack 0.
    sim.device_action(&device, "network-drop", Some(json!({"seconds": 3})));
    wait_state(&c, "TIMEOUT", Duration::from_secs(5), |_| true).await;
    let queued = send(&c, FRIEND, "sent while offline", false).await;
    let key = queued["key"].as_str().unwrap_or_default().to_owned();
    let id = queued["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(queued["ack"], 0, "{queued}");
    assert_eq!(sim.messages(&device).len(), 1);
    let s = wait_state(&c, "CONNECTED", Duration::from_secs(15), |_| true).await;
    assert_eq!(s["synced"], true);
    let states = js(&c, "return window.__states;", vec![]).await.unwrap_or(Value::Null);
    let states: Vec<&str> = states.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    assert_eq!(states.first(), Some(&"TIMEOUT"), "{states:?}");
    assert_eq!(states.last(), Some(&"CONNECTED"), "{states:?}");
    assert!(states.iter().filter(|s| **s == "OPENING").count() >= 2, "no flapping while down: {states:?}");
    assert!(states.iter().all(|s| ["TIMEOUT", "OPENING", "CONNECTED"].contains(s)), "{states:?}");
    assert_eq!(js(&c, "return window.__synced;", vec![]).await, Some(json!([])), "hasSynced flapped");
    let codes = js(&c, "return window.__closeCodes;", vec![]).await.unwrap_or(Value::Null);
    let codes = codes.as_array().cloned().unwrap_or_default();
    assert!(!codes.is_empty() && codes.iter().all(|c| *c == 1006), "refused reconnects closed with {codes:?}");
    let result =
        wait_js(&c, "the queued send's result", Duration::from_secs(5), "return (window.__results || {})[arguments[0]];", vec![json!(key)])
            .await;
    assert_eq!(result, json!({"messageSendResult": "OK"}));
    assert!(msg_ack(&c, &key).await.as_i64().is_some_and(|a| a >= 1));
    assert_eq!(unique(&sim.messages(&device), &id), 1);

    // Conflict: CONFLICT until the page takes over.
    sim.device_action(&device, "conflict", None);
    wait_state(&c, "CONFLICT", Duration::from_secs(5), |_| true).await;
    js(&c, "window.require('WAWebSocketModel').Socket.takeover(); return true;", vec![]).await;
    wait_state(&c, "CONNECTED", Duration::from_secs(5), |_| true).await;

    // Reach-out timelock: the known chat still works, a new one gets 463.
    sim.device_action(&device, "timelock", Some(json!({"seconds": 60})));
    let ok = send(&c, FRIEND, "to a known chat", true).await;
    assert_eq!(ok["result"], json!({"messageSendResult": "OK"}), "{ok}");
    let refused = send(&c, "4917000000002@c.us", "to a new chat", true).await;
    assert_eq!(refused["result"], json!({"messageSendResult": "ERROR", "errorCode": 463}), "{refused}");
    assert_eq!(msg_ack(&c, refused["key"].as_str().unwrap_or_default()).await, json!(-1));
    let log = sim.messages(&device);
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(log.iter().all(|m| m["to"] == FRIEND));

    // device_removed: UNPAIRED with a new QR, same page, no Cmd logout.
    sim.device_action(&device, "device-removed", None);
    let s = wait_state(&c, "UNPAIRED", Duration::from_secs(10), |s| s["ref"].is_string()).await;
    assert_eq!(s["me"], Value::Null);
    assert_eq!(js(&c, "return [window.__mark, window.__cmdLogout];", vec![]).await, Some(json!(["same page", 0])));
    assert_eq!(sim.device_state(&device), "removed");
    let status = sim.phone("POST", &format!("/_phone/devices/{device}/logout"), None).status;
    assert_eq!(status, 409);
    assert_eq!(sim.phone("POST", "/_phone/devices/nope/logout", None).status, 404);
    c.close().await.expect("close the browser");

    // SIGTERM stops the sim cleanly.
    let status = sim.stop(Duration::from_secs(10)).expect("the sim ignored SIGTERM");
    assert!(status.success(), "the sim exited with {status}");
    eprintln!("network_drop_conflict_timelock_and_device_removed: {:?}", started.elapsed());
}
