//! The seeds' conformance suite: every scenario and stated target of the
//! five production write-ups in `shared/seeds/` (000 in Persian, 004 in
//! Russian) as a test named after it, end to end: the real binary as
//! simulator and daemon, real Chromium and chromedriver (at most two
//! scenarios with browsers at once, [`browser_permit`]), real sled in temp
//! dirs, real HTTP on loopback; faults through the simulator's phone API
//! and the daemon's debug-only fault routes. Read alone, the test names
//! retell the seeds. Where wasup does something other than a seed's
//! Node.js code (it pauses where waiting helps, keeps a `DRAFT` whose start
//! was refused), the test's doc says so.
//!
//! Each seed section (its heading, quoted) → its test. A test may serve
//! several sections that state the same thing.
//!
//! **000_campaign-disconnect-handling.fa.md**
//! - `### 1. **Disconnect قبل از شروع کمپین**`, `### تست 1: Disconnect قبل از
//!   شروع`, table row `QR Disconnect` → `seed000_test1_disconnect_before_start_fails_at_once`
//! - `### 2. **Disconnect در حین ارسال پیام**`, `### تست 2: Disconnect در حین
//!   ارسال`, `### 1. **Event-Based Protection**`, row `Disconnect حین ارسال`,
//!   `### 1. **Disconnect Events**` (message) →
//!   `seed000_test2_logout_after_three_sends_fails_the_campaign_and_keeps_the_sent`
//! - `### 2. **Pre-Send Connection Check**`, `### 2. **Disconnect در حین ارسال
//!   (Pre-Check)**`, timeouts row `State Check` →
//!   `seed000_pre_send_check_nothing_is_sent_while_the_session_is_not_connected`
//! - `### 3. **Error-Based Detection**`, row `خطای Protocol`, `### 3.
//!   **Disconnect در حین ارسال (Error-Based)**` →
//!   `seed000_error_based_detection_a_page_crash_mid_campaign_stops_sending_and_nobody_gets_two`
//! - `### 3. **Disconnect بعد از اتمام کمپین**` →
//!   `seed000_scenario3_a_disconnect_after_the_campaign_ended_keeps_its_report`
//! - `### 4. **تلاش برای Generate QR جدید بعد از Disconnect**`, `### تست 3: QR
//!   جدید بعد از Disconnect`, `### 4. **Cleanup Session Protection**`, row `QR
//!   جدید بعد از Disconnect`, `### 4. **Session Cleanup در جریان**` →
//!   `seed000_test3_a_new_qr_right_after_a_disconnect_comes_once_the_old_session_is_cleaned`
//! - `### تست 4: Multiple Disconnects`, summary item 7 (session isolation) →
//!   `seed000_test4_other_sessions_disconnecting_leave_the_running_campaign_alone`
//! - row `Auth Failure` → `seed000_auth_failure_fails_the_restored_campaign_at_once`
//! - `## ضمانت No-Crash`, `### مشکل: Server Crash بعد از Logout` and its six
//!   fixes, summary item 2 → `seed000_no_crash_guarantee_the_daemon_outlives_every_listed_failure`
//! - `## تنظیمات و Timeouts`, row `Client Init Timeout` →
//!   `seed000_client_init_timeout_a_page_that_never_loads_is_given_up_and_retried`
//! - summary items 1, 3, 4, 5, 6 → the tests above (6, "user-friendly
//!   messages": the 409 of test 1, the WebSocket messages of test 2 and
//!   the pre-send check).
//!
//! **001_api-gateway-troubleshooting.md**
//! - `### Root Causes` 1 (browser session crash), `## Problem: "Session
//!   closed" Error`, `#### 3. Enhanced Error Handling` →
//!   `seed001_session_closed_a_killed_browser_is_restarted_without_a_qr_and_sends_again`
//! - `### Root Causes` 2 (memory), `#### 4. Browser Optimization`, PM2's
//!   `max_memory_restart` → `seed001_memory_issues_a_browser_over_its_memory_limit_is_recycled_without_a_qr`
//! - `### Root Causes` 3 (network instability) →
//!   `seed001_network_instability_a_dropped_network_heals_without_a_browser_restart`
//! - `### Root Causes` 4 (the WhatsApp Web session expires) →
//!   `seed004_device_removed_is_seen_at_once_alerted_and_relinked_by_a_new_qr`
//! - `#### 1. Session Health Monitoring` → `seed001_health_check_every_30s_is_tracked_per_session`
//! - `#### 2. Message Queue System` (queue, retries) →
//!   `seed001_message_queue_a_send_cut_off_by_a_crash_is_retried_without_a_duplicate`;
//!   (2 min timeout) → `seed001_timeout_protection_a_slow_send_is_answered_in_bounded_time`
//! - `### Health Check (Enhanced)`, `### Check Health` →
//!   `seed001_health_endpoint_reports_liveness_sessions_and_their_queue`
//! - `### Session Recovery`, `### Manual Recovery` →
//!   `seed001_recover_session_brings_a_failed_session_back_without_a_qr`
//! - `### Queue Status`, `### Clear Queue` →
//!   `seed001_queue_status_shows_what_waits_and_clear_queue_sends_nothing_more`
//! - `## PM2 Restart Policy` → `seed001_pm2_restart_policy_a_dead_browser_is_restarted_with_growing_backoff`
//! - `## Emergency Recovery` → `seed001_emergency_recovery_stop_clear_start_and_scan_again`
//!
//! **002_session-persistence.md**
//! - `### 1. **Proper Session Persistence**`, lifecycle 1 (first-time
//!   setup: a QR scanned, the session saved) and 2 (Server Restart), `###
//!   Problem: Session not persisting after restart`, security 2 (graceful
//!   shutdown), `### 4. **Improved Session Monitoring**` ("Stops
//!   monitoring during shutdown") → `seed002_a_session_survives_a_daemon_restart_without_a_qr`
//! - `### 2. **Enhanced Disconnection Handling**`, `### 3. **Smart
//!   Reconnection Logic**` (logout versus connection loss), lifecycle 3,
//!   `### Session Clearing Scenarios` →
//!   `seed002_a_logout_clears_the_session_while_a_lost_connection_keeps_it`
//! - `### 3. **Smart Reconnection Logic**` (backoff, 5 attempts), `###
//!   Problem: Connection keeps dropping`, important note 3 →
//!   `seed002_reconnects_back_off_and_stop_after_the_budget`
//! - `### 1. Enhanced Status`, `### 3. **Smart Reconnection Logic**` (reset on
//!   success), `### 4. **Improved Session Monitoring**` ("health checks with
//!   client info validation": the account is read from the page) →
//!   `seed002_status_shows_the_account_and_reconnect_attempts_which_reset_once_healthy`
//! - `### 4. **Improved Session Monitoring**` ("Graceful recovery on session
//!   corruption": credentials the page no longer accepts are wiped and a
//!   new QR offered) → `seed004_device_removed_is_seen_at_once_alerted_and_relinked_by_a_new_qr`;
//!   important note 4 (manual intervention when auto-recovery fails) →
//!   `seed001_recover_session_brings_a_failed_session_back_without_a_qr`
//! - `### 2. Clear Session`, `### 3. Enhanced Disconnect`, `## Quick
//!   Reference`, `### Problem: "WhatsApp client is not ready"` →
//!   `seed002_clear_session_logs_out_wipes_the_profile_and_offers_a_fresh_qr`
//! - `## Security Considerations` 1 → `seed002_session_files_are_private_and_secrets_stay_out_of_the_log`
//! - `## Important Notes` 2 (rate limiting) → `seed002_rate_limiting_the_numbers_sends_are_spaced_by_its_gap`
//! - `### 4. **Improved Session Monitoring**` ("Monitor auto-restart after
//!   errors") → `seed003_error_resilience_a_panicking_session_is_rebuilt_and_the_daemon_stays_up`;
//!   `### Problem: "Session closed" errors during messaging` →
//!   `seed001_session_closed_a_killed_browser_is_restarted_without_a_qr_and_sends_again`
//!
//! **003_connection-persistence.md**
//! - `### **Test 1: Connection Persistence**`, benefit "Browser
//!   Independence" → `seed003_test1_the_connection_persists_across_viewers_and_a_daemon_restart`
//! - `### **Test 2: Dashboard State Sync**`, `### **Dashboard Indicators:**`,
//!   `#### **Real-time State Synchronization:**` →
//!   `seed003_test2_the_dashboard_shows_the_true_state_and_the_heartbeat_live`
//! - `### **Test 3: Auto-recovery**`, `#### **Improved Session Detection:**`,
//!   `#### **Smarter Connection State Loading:**` → `seed003_test3_a_killed_daemon_comes_back_without_a_qr`
//! - `### **3. Advanced Heartbeat Monitoring**`, `#### **Automatic
//!   Reconnection Logic:**` → `seed003_heartbeat_reconnects_after_three_missed_beats`
//! - `### **Connection Flow:**` (a valid session restored without a QR,
//!   heartbeat, reconnection, a new QR only for an invalid session) →
//!   `seed003_test3_a_killed_daemon_comes_back_without_a_qr`,
//!   `seed003_heartbeat_reconnects_after_three_missed_beats`,
//!   `seed003_no_unnecessary_qr_every_kind_of_restart_keeps_the_link`; the
//!   `### **Before vs After:**` table's rows restate sections mapped here.
//! - `### **2. Optimized WhatsApp Client Configuration**` (no takeover on
//!   conflict) → `seed003_no_takeover_on_conflict_and_its_campaigns_fail_fast`;
//!   (`restartOnAuthFail: false`) → `seed004_device_removed_is_seen_at_once_alerted_and_relinked_by_a_new_qr`
//! - `#### **Error Resilience:**` → `seed003_error_resilience_a_panicking_session_is_rebuilt_and_the_daemon_stays_up`
//! - `## 🎯 **PROBLEM IDENTIFIED**`, `## 🎉 **BENEFITS ACHIEVED**` (no
//!   unnecessary QR, no random disconnections) →
//!   `seed003_no_unnecessary_qr_every_kind_of_restart_keeps_the_link`
//!
//! **004_device-removed-postmortem.ru.md**
//! - `## 🔴 Проблема`, `### Симптомы`, `### Immediate Fix`, `#### 3. Скрипт
//!   автовосстановления` (Telegram), `## 📝 Checklist для будущих инцидентов
//!   с WhatsApp` → `seed004_device_removed_is_seen_at_once_alerted_and_relinked_by_a_new_qr`
//! - metric 1 (key files < 100), `#### 2. Мониторинг здоровья сессий`, `###
//!   3. Отсутствие мониторинга` → `seed004_target_key_files_are_counted_and_over_the_limit_alerted_once`,
//!   `seed004_key_files_over_the_limit_are_purged_once_when_configured`
//! - `### Анализ корневых причин` 1 (old encryption sessions pile up) →
//!   the key-file tests below; 4 (WhatsApp revokes the device) → the
//!   `device_removed` test above; `### Проверка статуса` (status, key-file
//!   count, error log) → `seed004_targets_are_reported_per_session_against_the_seeds_figures`
//!   (the log's fields are `tests/service.rs`'s)
//! - `### 2. Частые переподключения`, metric 2 (≤ 10 reconnects a day) →
//!   `seed004_reconnects_are_counted_per_session_over_24h`;
//!   `seed004_target_at_most_10_reconnects_a_day_alerts_once_on_the_11th`
//! - metric 3 (99.9 % uptime) → `seed004_target_uptime_99_9_percent_is_reported_per_session`
//! - metric 4 (recovery < 5 min), the incident's 2 h resolution →
//!   `seed004_target_recovery_under_5_minutes_after_a_crash`;
//!   `seed004_target_recovery_time_is_reported_per_session`
//! - `### Ключевые метрики для отслеживания` (all four in the session view) →
//!   `seed004_targets_are_reported_per_session_against_the_seeds_figures`
//!
//! **Not turned into tests**, and why:
//! - 000 `### 4.` (a 1 s cleanup delay) and the Puppeteer flags of
//!   `#### 6.`: their client's internals, not promises; `## پشتیبانی`
//!   (support) is advice.
//! - 001 `## Log Messages to Watch For`, `## Prevention Tips`, `##
//!   Performance Optimization` (RAM sizes), `## Changelog`: wording and
//!   advice. wasup's own log fields are tested in `tests/service.rs`, its
//!   memory in `wasup bench`.
//! - 002 `## Session Storage Details`, security 3 (watch the logs) and note
//!   1 (WhatsApp's device limit): descriptions, not behaviour.
//! - 003 `qrMaxRetries`, `authTimeoutMs`, `backupSyncIntervalMs`, the 6 h
//!   state file, `### **4. Improved Bot Architecture**`, `## 📊 **MONITORING
//!   CONNECTION HEALTH**` (log lines, files): their client's settings and
//!   code layout, and the Puppeteer args of `#### **Enhanced LocalAuth
//!   Settings:**` (wasup's own Chromium flags are in `page.rs`). (Its `###
//!   **Dashboard Indicators:**` are tested in `seed003_test2_…`.)
//! - 004 `#### 1. Автоматическая очистка при переподключении` and best
//!   practice 1 (wipe the keys at every reconnect): deliberately not done,
//!   since that would ask for a QR at every reconnect (seed 003's very
//!   problem); the keys are wiped on a logout, `device_removed`, or over the
//!   key-file limit with `action = "cleanup"`. `## 🚀 Развертывание` (PM2
//!   commands) and `## 🎯 Выводы и уроки`: deployment notes and lessons.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// The phone of the session most scenarios pair.
const PHONE: &str = "4915112345678";
/// Phones of further sessions.
const PHONE_B: &str = "4915187654321";
const PHONE_C: &str = "4915187650000";

// ----- helpers ---------------------------------------------------------------

/// A campaign on `session` to `to` with its own gap `min_ms`–`max_ms`.
fn campaign_body(session: &str, to: &[String], min_ms: u64, max_ms: u64, start: bool) -> Value {
    let recipients: Vec<Value> = to.iter().enumerate().map(|(i, p)| json!({"phone": format!("+{p}"), "name": format!("R{i}")})).collect();
    json!({
        "name": "seed",
        "session": session,
        "template": "Hi {{ name }}!",
        "recipients": recipients,
        "pacing": {"min_delay": format!("{min_ms}ms"), "max_delay": format!("{max_ms}ms")},
        "start": start,
    })
}

/// The daemon's documented defaults (`config.toml` with every key absent).
fn defaults() -> wasup::config::Config {
    wasup::config::Config::parse("", std::path::Path::new("defaults.toml")).expect("the defaults parse")
}

fn profile(daemon: &Daemon, name: &str) -> PathBuf {
    daemon.state_dir().join("profiles").join(name)
}

/// SIGKILLs the renderers of session `name`'s browser (WhatsApp Web's tab
/// crashes: "Protocol error … Session closed" in Puppeteer's words).
fn crash_page(daemon: &Daemon, name: &str) {
    let main = wasup::procfs::browser_pid(&profile(daemon, name)).expect("a browser on the profile");
    let renderers: Vec<u32> = wasup::procfs::tree(main)
        .into_iter()
        .filter(|p| std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains("--type=renderer")))
        .collect();
    assert!(!renderers.is_empty(), "no renderer under browser {main}");
    for pid in renderers {
        // SAFETY: kill(2) on a process of the browser this test's daemon started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
}

/// SIGKILLs session `name`'s browser (its main process).
fn kill_browser(daemon: &Daemon, name: &str) -> u32 {
    let main = wasup::procfs::browser_pid(&profile(daemon, name)).expect("a browser on the profile");
    // SAFETY: kill(2) on the browser this test's daemon started.
    unsafe { libc::kill(main as i32, libc::SIGKILL) };
    main
}

/// The daemon's chromedriver (its child).
fn chromedriver_of(daemon: &Daemon) -> u32 {
    let pid = daemon.pid();
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    let drivers: Vec<u32> = children
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.contains("chromedriver")))
        .collect();
    assert_eq!(drivers.len(), 1, "expected one chromedriver child of the daemon");
    drivers[0]
}

/// Every frame of `GET /api/ws` (the WebSocket), collected by a thread.
fn websocket(daemon: &Daemon) -> Arc<Mutex<Vec<Value>>> {
    use tungstenite::client::IntoClientRequest as _;
    let mut req = format!("{}/api/ws", daemon.base.replace("http://", "ws://")).into_client_request().expect("a WebSocket request");
    req.headers_mut().insert("Authorization", format!("Bearer {}", daemon.token).parse().expect("a header value"));
    let (mut socket, _) = tungstenite::connect(req).expect("WebSocket");
    let frames: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = frames.clone();
    std::thread::spawn(move || {
        while let Ok(msg) = socket.read() {
            if let tungstenite::Message::Text(t) = msg {
                if let Ok(v) = serde_json::from_str::<Value>(&t) {
                    sink.lock().unwrap().push(v);
                }
            }
        }
    });
    frames
}

/// Waits for a collected frame or event matching `pred`.
fn wait_frame(frames: &Mutex<Vec<Value>>, what: &str, within: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    wait_for(what, within, || frames.lock().unwrap().iter().find(|v| pred(v)).cloned())
}

/// One series of `/metrics`, if present.
fn metric(daemon: &Daemon, series: &str) -> Option<f64> {
    let r = daemon.api("GET", "/metrics", None);
    assert_eq!(r.status, 200);
    String::from_utf8_lossy(&r.bytes).lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// `state(reason)` of every status change since the session first
/// connected.
fn since_pairing(daemon: &Daemon, name: &str) -> Vec<String> {
    let states = daemon.history_states(name);
    let first = states.iter().position(|s| s == "CONNECTED").expect("was connected");
    states[first..].to_vec()
}

/// `(state, reason, at_ms)` of every status change, oldest first.
fn history(daemon: &Daemon, name: &str) -> Vec<(String, String, u64)> {
    events(daemon, name, "session.status")
        .iter()
        .map(|h| {
            (
                h["state"].as_str().unwrap_or_default().to_string(),
                h["reason"].as_str().unwrap_or_default().to_string(),
                h["at_ms"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

/// Waits until the history of `name` has `entry` (`STATE` or
/// `STATE(reason)`) after the first `skip` status changes.
fn wait_history(daemon: &Daemon, name: &str, entry: &str, skip: usize, within: Duration) {
    wait_for(&format!("{entry} in the history of {name}"), within, || {
        daemon.history_states(name).iter().skip(skip).any(|s| s == entry).then_some(())
    });
}

/// Waits until `name` left CONNECTED (any other state) and came back.
fn wait_reconnected(daemon: &Daemon, name: &str, skip: usize, within: Duration) {
    wait_for(&format!("{name} back CONNECTED after a loss"), within, || {
        let states = daemon.history_states(name);
        let lost = states.iter().skip(skip).position(|s| !s.starts_with("CONNECTED"))?;
        let back = states.iter().skip(skip + lost).any(|s| s == "CONNECTED");
        (back && daemon.session(name)["state"] == "CONNECTED").then_some(())
    });
}

fn campaign_count(daemon: &Daemon) -> usize {
    daemon.api("GET", "/api/campaigns", None).body.as_array().map_or(0, Vec::len)
}

/// Writes a marker into `name`'s profile (stands for its credentials).
fn mark_profile(daemon: &Daemon, name: &str) -> PathBuf {
    let marker = profile(daemon, name).join("wasup-test-marker");
    std::fs::write(&marker, b"credentials live here").expect("write into the profile");
    marker
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn webhook_config(receiver: &Receiver) -> String {
    format!("[[alerts.webhooks]]\nurl = \"{}/hook\"\nsecret = \"hook-secret\"\n[alerts]\nretry_base = \"100ms\"\n", receiver.base)
}

// ----- seed 000: campaign disconnect handling (Persian) ----------------------

/// Seed 000, `### تست 1: Disconnect قبل از شروع` (test 1, disconnect before
/// the start), with `### 1. **Disconnect قبل از شروع کمپین**` and the
/// table row `QR Disconnect`: the phone logs out after the QR was scanned,
/// then the operator starts the campaign. The seed expects the start to
/// fail at once with "WhatsApp account must be connected before starting
/// campaign". Here the start is refused at once (409) with what to do, and
/// the campaign stays a `DRAFT` (a refused command changes nothing); a
/// create with `start` is refused the same way and creates nothing.
#[test]
fn seed000_test1_disconnect_before_start_fails_at_once() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "");
    let device = daemon.pair(&sim, "acme", PHONE);
    let body = campaign_body("acme", &numbers(3, 50_000_000), 100, 200, false);
    let id = daemon.campaign(body.clone());
    sim.device_action(&device, "logout", None);
    daemon.wait_state("acme", "SCAN_QR", Duration::from_secs(60));

    let asked = Instant::now();
    let r = daemon.api("POST", &format!("/api/campaigns/{id}/start"), None);
    assert!(asked.elapsed() < Duration::from_secs(5), "the refusal took {:?}", asked.elapsed());
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert_eq!(r.body["error"], "session acme is SCAN_QR: scan its QR (GET /api/sessions/acme/qr) before starting a campaign");
    assert_eq!(daemon.campaign_view(&id)["state"], "DRAFT", "a refused start changed the campaign");

    let before = campaign_count(&daemon);
    let mut started = body;
    started["start"] = json!(true);
    let r = daemon.api("POST", "/api/campaigns", Some(started));
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert!(r.body["error"].as_str().unwrap_or_default().starts_with("session acme is SCAN_QR: scan its QR"), "{:?}", r.body);
    assert_eq!(campaign_count(&daemon), before, "a refused create stored a campaign");
    assert!(sim.messages(&device).is_empty());
}

/// Seed 000, `### تست 2: Disconnect در حین ارسال` (test 2, disconnect while
/// sending), with `### 2. **Disconnect در حین ارسال پیام**`, `### 1.
/// **Event-Based Protection**`, the table row `Disconnect حین ارسال` and
/// the message `### 1. **Disconnect Events**`: 10 recipients, the phone
/// logs out after 3 sends. The sending stops, the campaign is `FAILED`,
/// the messages already sent are kept (each delivered exactly once, the
/// rest `PENDING`), the daemon never stops answering, and the WebSocket
/// carries the seed's `{"type": "status_update", "status": "failed",
/// "message": "WhatsApp disconnected during operation"}`.
#[test]
fn seed000_test2_logout_after_three_sends_fails_the_campaign_and_keeps_the_sent() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let mut daemon = Daemon::start(&sim, "");
    let device = daemon.pair(&sim, "acme", PHONE);
    let watch = HealthWatch::start(&daemon);
    let frames = websocket(&daemon);
    let id = daemon.campaign(campaign_body("acme", &numbers(10, 51_000_000), 800, 1000, true));
    daemon.wait_sent(&id, 3, Duration::from_secs(60));
    sim.device_action(&device, "logout", None);
    let v = daemon.wait_campaign(&id, "FAILED", Duration::from_secs(30));
    assert!(v["reason"].as_str().unwrap_or_default().starts_with("session_logged_out: phone_logout"), "{v}");
    let sent = assert_exactly_once(&daemon, &sim, &device, &id);
    assert!((3..=4).contains(&sent), "{sent} sent");
    let pending = daemon.recipients(&id).iter().filter(|r| r["state"] == "PENDING").count();
    assert_eq!(pending, 10 - sent);
    let failed = wait_frame(&frames, "the seed's status_update", Duration::from_secs(10), |f| f["type"] == "status_update");
    assert_eq!((&failed["status"], &failed["message"]), (&json!("failed"), &json!("WhatsApp disconnected during operation")), "{failed}");
    assert_eq!(failed["campaign"], id.as_str());
    let report = daemon.api("GET", &format!("/api/campaigns/{id}/report.csv"), None);
    assert_eq!(String::from_utf8_lossy(&report.bytes).lines().count(), 11, "the report lists every recipient");
    assert!(daemon.is_running());
    watch.assert_always_healthy();
}

/// Seed 000, `### 2. **Pre-Send Connection Check**` (the state is checked
/// before every message), with the message `### 2. **Disconnect در حین
/// ارسال (Pre-Check)**` and the timeouts row `State Check | هر پیام`
/// (before every message): the network drops mid-campaign. The campaign
/// pauses (`waiting_for_session`), the WebSocket carries the seed's
/// `{"type": "error", "message": "WhatsApp disconnected during message
/// sending"}`, no message reaches WhatsApp while the session is not
/// `CONNECTED`, and since waiting helps here (the page comes back by
/// itself) the campaign completes, each recipient exactly once.
#[test]
fn seed000_pre_send_check_nothing_is_sent_while_the_session_is_not_connected() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "");
    let device = daemon.pair(&sim, "acme", PHONE);
    let frames = websocket(&daemon);
    let id = daemon.campaign(campaign_body("acme", &numbers(6, 52_000_000), 300, 500, true));
    daemon.wait_sent(&id, 2, Duration::from_secs(60));
    sim.device_action(&device, "network-drop", Some(json!({"seconds": 4})));
    let paused = daemon.wait_campaign(&id, "PAUSED", Duration::from_secs(10));
    assert_eq!(paused["reason"], "waiting_for_session");
    let error = wait_frame(&frames, "the seed's pre-check error", Duration::from_secs(10), |f| f["type"] == "error");
    assert_eq!(error["message"], "WhatsApp disconnected during message sending", "{error}");
    daemon.wait_campaign(&id, "COMPLETED", Duration::from_secs(90));
    assert_eq!(assert_exactly_once(&daemon, &sim, &device, &id), 6);
    // No message was accepted between leaving CONNECTED and coming back.
    let h = history(&daemon, "acme");
    let first = h.iter().position(|(s, _, _)| s == "CONNECTED").expect("connected");
    let mut windows = Vec::new();
    let mut left = None;
    for (state, _, at) in &h[first..] {
        match (state.as_str(), left) {
            ("CONNECTED", Some(from)) => {
                windows.push((from, *at));
                left = None;
            }
            ("CONNECTED", None) => {}
            (_, None) => left = Some(*at),
            _ => {}
        }
    }
    assert!(!windows.is_empty(), "the session never left CONNECTED: {h:?}");
    for m in sim.messages(&device) {
        let at = m["at_ms"].as_u64().unwrap_or_default();
        assert!(!windows.iter().any(|(from, to)| at > *from && at < *to), "sent at {at} while not CONNECTED {windows:?}");
    }
}

/// Seed 000, `### 3. **Error-Based Detection**` (a disconnection error
/// while sending, "Protocol error", "Session closed", "Execution context
/// was destroyed", stops the sending at once), with the table row `خطای
/// Protocol` and the message `### 3. **Disconnect در حین ارسال
/// (Error-Based)**`: the page crashes mid-campaign. The sending stops at
/// once (`PAUSED`, `waiting_for_session`); the seed then fails the
/// campaign, but here the session restarts by itself, so the campaign goes
/// on once it is back, and no recipient is sent twice. The seed's message
/// for it ("Campaign stopped: WhatsApp connection lost during message
/// sending") would be untrue here: the WebSocket carries the pause's
/// `{"type": "error", "message": "WhatsApp disconnected during message
/// sending"}` instead.
#[test]
fn seed000_error_based_detection_a_page_crash_mid_campaign_stops_sending_and_nobody_gets_two() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let mut daemon = Daemon::start(&sim, "");
    let device = daemon.pair(&sim, "acme", PHONE);
    let watch = HealthWatch::start(&daemon);
    let events = collect_events(&daemon, "acme");
    let frames = websocket(&daemon);
    let id = daemon.campaign(campaign_body("acme", &numbers(6, 53_000_000), 300, 500, true));
    daemon.wait_sent(&id, 2, Duration::from_secs(60));
    crash_page(&daemon, "acme");
    wait_history(&daemon, "acme", "RECONNECTING(page_crashed)", 0, Duration::from_secs(30));
    wait_frame(&events, "the campaign paused for its session", Duration::from_secs(10), |e| {
        e["event"] == "campaign.status" && e["state"] == "PAUSED" && e["reason"] == "waiting_for_session"
    });
    let error = wait_frame(&frames, "the pause's error frame", Duration::from_secs(10), |f| f["type"] == "error");
    assert_eq!((&error["message"], &error["campaign"]), (&json!("WhatsApp disconnected during message sending"), &json!(id)), "{error}");
    daemon.wait_campaign(&id, "COMPLETED", Duration::from_secs(90));
    assert_eq!(assert_exactly_once(&daemon, &sim, &device, &id), 6);
    assert!(daemon.is_running());
    watch.assert_always_healthy();
}

/// Seed 000, `### 3. **Disconnect بعد از اتمام کمپین**` (disconnect after
/// the campaign ended): the report is kept and the results do not change.
#[test]
fn seed000_scenario3_a_disconnect_after_the_campaign_ended_keeps_its_report() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "");
    let device = daemon.pair(&sim, "acme", PHONE);
    let id = daemon.campaign(campaign_body("acme", &numbers(3, 54_000_000), 100, 200, true));
    daemon.wait_campaign(&id, "COMPLETED", Duration::from_secs(60));
    let outcome = |daemon: &Daemon| -> Vec<(Value, Value, Value)> {
        daemon.recipients(&id).iter().map(|r| (r["phone"].clone(), r["state"].clone(), r["message_id"].clone())).collect()
    };
    let before = outcome(&daemon);
    sim.device_action(&device, "logout", None);
    wait_history(&daemon, "acme", "LOGGED_OUT(phone_logout)", 0, Duration::from_secs(30));
    let v = daemon.campaign_view(&id);
    assert_eq!((&v["state"], &v["reason"], &v["counts"]["SENT"]), (&json!("COMPLETED"), &Value::Null, &json!(3)), "{v}");
    assert_eq!(outcome(&daemon), before);
    let report = daemon.api("GET", &format!("/api/campaigns/{id}/report.csv"), None);
    assert_eq!(report.status, 200);
    assert_eq!(String::from_utf8_lossy(&report.bytes).lines().filter(|l| l.contains(",SENT,")).count(), 3);
}

/// Seed 000, `### تست 3: QR جدید بعد از Disconnect` (test 3, a new QR
/// after a disconnect), with `### 4. **تلاش برای Generate QR جدید بعد از
/// Disconnect**`, `### 4. **Cleanup Session Protection**`, the table row
/// `QR جدید بعد از Disconnect` and the message `### 4. **Session Cleanup
/// در جریان**`: the phone logs out and the operator asks for a new QR at
/// once, and again until there is one. While the old session is being
/// cleaned up the answer is a 409 that says so in JSON; then the old
/// session is gone (its profile wiped), a new QR is there, scanning it
/// links again, and the daemon never stopped.
#[test]
fn seed000_test3_a_new_qr_right_after_a_disconnect_comes_once_the_old_session_is_cleaned() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let mut daemon = Daemon::start(&sim, "");
    let watch = HealthWatch::start(&daemon);
    let old = daemon.pair(&sim, "acme", PHONE);
    let marker = mark_profile(&daemon, "acme");
    sim.device_action(&old, "logout", None);
    let mut refusals = Vec::new();
    let qr = wait_for("a new QR", Duration::from_secs(60), || {
        let r = daemon.api("GET", "/api/sessions/acme/qr?format=raw", None);
        if r.status == 200 {
            return r.body["qr"].as_str().map(str::to_string);
        }
        refusals.push((r.status, r.body["error"].as_str().unwrap_or_default().to_string()));
        None
    });
    for (status, error) in &refusals {
        assert_eq!(*status, 409, "{error}");
        assert!(error.starts_with("session \"acme\" is "), "{error}");
    }
    assert!(!marker.exists(), "the old session's profile was not wiped");
    assert_eq!(sim.device_state(&old), "logged_out");
    let new = sim.scan(&qr, PHONE);
    assert_ne!(new, old);
    daemon.wait_state("acme", "CONNECTED", Duration::from_secs(60));
    assert!(daemon.is_running());
    watch.assert_always_healthy();
}

/// Seed 000, `### تست 4: Multiple Disconnects` (test 4), with the summary
/// item `Session isolation - یک کمپین روی دیگری تاثیر نمی‌گذارد` (one
/// campaign does not affect another): three linked sessions, a campaign
/// running on one, drafts on the others; the other two phones log out at
/// once. Only their sessions are cleaned up (back to `SCAN_QR`, drafts
/// untouched); the running campaign completes, each recipient exactly
/// once, its session never leaving `CONNECTED`; the daemon stays up.
#[test]
fn seed000_test4_other_sessions_disconnecting_leave_the_running_campaign_alone() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "");
    let watch = HealthWatch::start(&daemon);
    let device = daemon.pair(&sim, "acme", PHONE);
    let b = daemon.pair(&sim, "beta", PHONE_B);
    let c = daemon.pair(&sim, "gamma", PHONE_C);
    let drafts = [
        daemon.campaign(campaign_body("beta", &numbers(2, 55_100_000), 100, 200, false)),
        daemon.campaign(campaign_body("gamma", &numbers(2, 55_200_000), 100, 200, false)),
    ];
    let id = daemon.campaign(campaign_body("acme", &numbers(6, 55_000_000), 400, 600, true));
    daemon.wait_sent(&id, 1, Duration::from_secs(60));
    let acme_before = daemon.history_states("acme").len();
    sim.device_action(&b, "logout", None);
    sim.device_action(&c, "logout", None);
    daemon.wait_state("beta", "SCAN_QR", Duration::from_secs(60));
    daemon.wait_state("gamma", "SCAN_QR", Duration::from_secs(60));
    daemon.wait_campaign(&id, "COMPLETED", Duration::from_secs(60));
    assert_eq!(assert_exactly_once(&daemon, &sim, &device, &id), 6);
    assert_eq!(daemon.history_states("acme").len(), acme_before, "acme changed state: {:?}", daemon.history_states("acme"));
    for draft in &drafts {
        assert_eq!(daemon.campaign_view(draft)["state"], "DRAFT");
    }
    watch.assert_always_healthy();
}

/// Seed 000, the table row `Auth Failure` (`FAILED`, "WhatsApp
/// authentication failed"): the daemon stops mid-campaign and WhatsApp
/// revokes the device meanwhile, so the stored credentials fail at the
/// next start. The restored campaign fails at once
/// (`session_logged_out: device_removed`), not after
/// `campaigns.resume_grace` (10 min). The failure's reason says why; the
/// seed's wording is not used (the WebSocket's `status_update` frame for a
/// campaign failed with its session is test 2's).
#[test]
fn seed000_auth_failure_fails_the_restored_campaign_at_once() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let mut daemon = Daemon::start(&sim, "");
    let device = daemon.pair(&sim, "acme", PHONE);
    let id = daemon.campaign(campaign_body("acme", &numbers(4, 56_000_000), 60_000, 60_000, true));
    daemon.wait_sent(&id, 1, Duration::from_secs(60));
    assert!(daemon.stop(), "the daemon did not stop on SIGTERM");
    let r = sim.phone("POST", &format!("/_phone/devices/{device}/device-removed"), None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    let started = Instant::now();
    daemon.start_again();
    let v = daemon.wait_campaign(&id, "FAILED", Duration::from_secs(120));
    assert!(v["reason"].as_str().unwrap_or_default().starts_with("session_logged_out: device_removed"), "{v}");
    // At once: well under the 10 min resume_grace a waiting campaign gets.
    assert!(started.elapsed() < Duration::from_secs(45), "took {:?}", started.elapsed());
    assert_eq!(sim.messages(&device).len(), 1, "nothing is sent with revoked credentials");
}

/// Seed 000, `## ضمانت No-Crash` (the no-crash guarantee), with `### مشکل:
/// Server Crash بعد از Logout` (a crash after a logout) and the summary
/// item `سرور کرش نمی‌کند در هیچ حالتی` (the server never crashes): two
/// linked sessions go through the guarantee's list, in one daemon:
/// network failures on both at once (multiple concurrent disconnects), a
/// browser crash, a page crash (protocol and session errors), WhatsApp Web
/// reloading itself ("Execution context was destroyed"), and a logout
/// while the session is reconnecting (logout while connecting). The same
/// daemon process answers `/health` throughout; the unharmed session is
/// `CONNECTED`, the logged-out one offers a QR.
#[test]
fn seed000_no_crash_guarantee_the_daemon_outlives_every_listed_failure() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let mut daemon = Daemon::start(&sim, "");
    let a = daemon.pair(&sim, "acme", PHONE);
    let b = daemon.pair(&sim, "beta", PHONE_B);
    let pid = daemon.pid();
    let watch = HealthWatch::start(&daemon);

    // Network failures, both sessions at once.
    let (ha, hb) = (daemon.history_states("acme").len(), daemon.history_states("beta").len());
    sim.device_action(&a, "network-drop", Some(json!({"seconds": 3})));
    sim.device_action(&b, "network-drop", Some(json!({"seconds": 3})));
    wait_reconnected(&daemon, "acme", ha, Duration::from_secs(60));
    wait_reconnected(&daemon, "beta", hb, Duration::from_secs(60));
    // A browser crash.
    let hb = daemon.history_states("beta").len();
    kill_browser(&daemon, "beta");
    wait_reconnected(&daemon, "beta", hb, Duration::from_secs(60));
    // A page crash.
    let ha = daemon.history_states("acme").len();
    crash_page(&daemon, "acme");
    wait_reconnected(&daemon, "acme", ha, Duration::from_secs(60));
    // WhatsApp Web reloads itself: every script context is destroyed.
    sim.device_action(&b, "reload", None);
    // A logout while connecting.
    let ha = daemon.history_states("acme").len();
    sim.device_action(&a, "network-drop", Some(json!({"seconds": 6})));
    wait_for("acme reconnecting", Duration::from_secs(10), || {
        daemon.history_states("acme").iter().skip(ha).any(|s| s.starts_with("RECONNECTING")).then_some(())
    });
    sim.device_action(&a, "logout", None);
    daemon.wait_state("acme", "SCAN_QR", Duration::from_secs(60));

    daemon.wait_state("beta", "CONNECTED", Duration::from_secs(60));
    assert_eq!(daemon.pid(), pid);
    assert!(daemon.is_running());
    assert!(!daemon.log().contains("panicked"), "a panic in the log");
    watch.assert_always_healthy();
}

/// Seed 000, `## تنظیمات و Timeouts` (settings and timeouts), the row
/// `Client Init Timeout | 30 ثانیه` (at most 30 s for the client to
/// initialise): `whatsapp.load_timeout` defaults to the seed's 30 s, and a
/// page that never loads within it (here 2 s, against a server that
/// accepts and never answers) ends the start (`start_failed`) and is
/// retried after a backoff, while the daemon keeps answering.
#[test]
fn seed000_client_init_timeout_a_page_that_never_loads_is_given_up_and_retried() {
    assert_eq!(defaults().whatsapp.load_timeout, Duration::from_secs(30));
    let _permit = browser_permit();
    let hole = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let base = format!("http://{}", hole.local_addr().expect("its address"));
    std::thread::spawn(move || {
        // Accepts and holds every connection without a byte of answer.
        let held: Vec<_> = hole.incoming().flatten().collect();
        drop(held);
    });
    let daemon = Daemon::start_at(&base, "load_timeout = \"2s\"", "", &[], |_| {});
    let watch = HealthWatch::start(&daemon);
    let r = daemon.api("POST", "/api/sessions", Some(json!({"name": "acme", "start": true})));
    assert_eq!(r.status, 201, "{:?}", r.body);
    wait_history(&daemon, "acme", "RECONNECTING(start_failed)", 0, Duration::from_secs(60));
    let h = history(&daemon, "acme");
    let started = h.iter().find(|(s, r, _)| s == "STARTING" && r.is_empty()).map(|(_, _, at)| *at).expect("a start");
    let gave_up = h.iter().find(|(s, r, _)| s == "RECONNECTING" && r == "start_failed").map(|(_, _, at)| *at).expect("an end");
    let took = gave_up.saturating_sub(started);
    assert!((2_000..20_000).contains(&took), "the start was given up after {took} ms; load_timeout is 2 s");
    wait_for("a retry", Duration::from_secs(30), || (!events(&daemon, "acme", "session.restart_scheduled").is_empty()).then_some(()));
    watch.assert_always_healthy();
}

// ----- seed 001: API gateway troubleshooting ("Session closed") --------------

/// Seed 001, `### Root Causes` 1 (**Browser Session Crash**: "Puppeteer
/// browser session unexpectedly closes", the `Session closed` error of
/// `## Problem: "Session closed" Error`), with `#### 3. Enhanced Error
/// Handling` (automatic session recovery, graceful restart): the browser is
/// killed. The session is restarted on its profile without a QR, and
/// messages can be sent again, exactly once each.
#[test]
fn seed001_session_closed_a_killed_browser_is_restarted_without_a_qr_and_sends_again() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "");
    let device = daemon.pair(&sim, "acme", PHONE);
    let watch = HealthWatch::start(&daemon);
    let old = kill_browser(&daemon, "acme");
    wait_history(&daemon, "acme", "RECONNECTING(browser_died)", 0, Duration::from_secs(30));
    daemon.wait_state("acme", "CONNECTED", Duration::from_secs(60));
    assert_ne!(wasup::procfs::browser_pid(&profile(&daemon, "acme")), Some(old), "the same browser");
    let after = since_pairing(&daemon, "acme");
    assert!(!after.iter().any(|s| s.starts_with("SCAN_QR") || s.starts_with("LOGGED_OUT")), "{after:?}");
    let r = daemon.api("POST", "/api/sessions/acme/messages", Some(json!({"to": "+4915123456789", "text": "back"})));
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(sim.messages(&device).len(), 1);
    assert_eq!(sim.devices().len(), 1, "a restart must not link a new device");
    watch.assert_always_healthy();
}

/// Seed 001, `### Root Causes` 2 (**Memory Issues**) with `#### 4. Browser
/// Optimization` and `## PM2 Restart Policy` (`"max_memory_restart":
/// "1G"`): `health.memory.max` defaults to the seed's 1 GiB; a browser over
/// its limit (here 20 MiB) is recycled on the same profile and connected
/// again without a QR.
#[test]
fn seed001_memory_issues_a_browser_over_its_memory_limit_is_recycled_without_a_qr() {
    assert_eq!(defaults().health.memory.max.as_u64(), 1 << 30);
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "[health.memory]\ninterval = \"1s\"\nmax = \"20MiB\"\n");
    daemon.pair(&sim, "acme", PHONE);
    wait_for("a memory recycle, then CONNECTED", Duration::from_secs(60), || {
        let after = since_pairing(&daemon, "acme");
        let i = after.iter().position(|s| s == "RECONNECTING(health_check_failed)")?;
        after[i..].iter().any(|s| s == "CONNECTED").then_some(())
    });
    let recycle = events(&daemon, "acme", "session.health");
    assert!(recycle.iter().any(|e| e["reason"] == "memory"), "{recycle:?}");
    let after = since_pairing(&daemon, "acme");
    assert!(!after.iter().any(|s| s.starts_with("SCAN_QR") || s.starts_with("LOGGED_OUT")), "{after:?}");
    assert_eq!(sim.devices().len(), 1, "recycling must not link a new device");
}

/// Seed 001, `### Root Causes` 3 (**Network Instability**): the network
/// drops for 5 s. The page reconnects by itself: no browser restart, no
/// restart counted, no QR, and it sends again.
#[test]
fn seed001_network_instability_a_dropped_network_heals_without_a_browser_restart() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "");
    let device = daemon.pair(&sim, "acme", PHONE);
    let browser = wasup::procfs::browser_pid(&profile(&daemon, "acme")).expect("a browser");
    let before = daemon.history_states("acme").len();
    sim.device_action(&device, "network-drop", Some(json!({"seconds": 5})));
    daemon.wait_state("acme", "RECONNECTING", Duration::from_secs(5));
    wait_reconnected(&daemon, "acme", before, Duration::from_secs(40));
    let view = daemon.session("acme");
    assert_eq!((&view["attempt"], &view["restarts_in_window"]), (&json!(0), &json!(0)), "{view}");
    assert!(events(&daemon, "acme", "session.restart_scheduled").is_empty());
    assert_eq!(wasup::procfs::browser_pid(&profile(&daemon, "acme")), Some(browser), "the browser was restarted");
    let r = daemon.api("POST", "/api/sessions/acme/messages", Some(json!({"to": "+4915123456789", "text": "back"})));
    assert_eq!(r.status, 201, "{:?}", r.body);
}

/// Seed 001, `#### 1. Session Health Monitoring` ("Health Check: Runs
/// every 30 seconds", "Tracks last health check and session status"):
/// `heartbeat.interval` defaults to the seed's 30 s; each session's view
/// carries its last healthy heartbeat, which moves on at every interval
/// (here 1 s).
#[test]
fn seed001_health_check_every_30s_is_tracked_per_session() {
    assert_eq!(defaults().heartbeat.interval, Duration::from_secs(30));
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start_tuned(&sim, "check_interval = \"500ms\"", "[heartbeat]\ninterval = \"1s\"\n");
    daemon.pair(&sim, "acme", PHONE);
    let mut beats: Vec<u64> = Vec::new();
    wait_for("four heartbeats", Duration::from_secs(30), || {
        if let Some(b) = daemon.session("acme")["last_heartbeat_ms"].as_u64() {
            if beats.last() != Some(&b) {
                beats.push(b);
            }
        }
        (beats.len() >= 4).then_some(())
    });
    for w in beats.windows(2) {
        let gap = w[1] - w[0];
        assert!((500..=5_000).contains(&gap), "heartbeats {gap} ms apart with a 1 s interval: {beats:?}");
    }
    assert!(now_ms().saturating_sub(*beats.last().unwrap_or(&0)) < 5_000, "the last heartbeat is stale: {beats:?}");
}

/// Seed 001, `#### 2. Message Queue System` ("Queue Processing", "Retry
/// Logic: Failed messages are retried automatically"): a campaign's
/// recipients are sent one at a time; the daemon is killed while a send
/// is under way (WhatsApp takes 400 ms to accept each message) and
/// started again. The send in doubt is looked up and retried only if it
/// never arrived: the campaign completes, each recipient exactly once.
#[test]
fn seed001_message_queue_a_send_cut_off_by_a_crash_is_retried_without_a_duplicate() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let mut daemon = Daemon::start(&sim, "");
    let device = daemon.pair(&sim, "acme", PHONE);
    sim.device_action(&device, "slow", Some(json!({"ms": 400})));
    let id = daemon.campaign(campaign_body("acme", &numbers(5, 57_000_000), 200, 400, true));
    wait_for("a SENDING recipient", Duration::from_secs(60), || {
        daemon.recipients(&id).iter().any(|r| r["state"] == "SENDING").then_some(())
    });
    daemon.kill();
    daemon.start_again();
    daemon.wait_campaign(&id, "COMPLETED", Duration::from_secs(90));
    assert_eq!(assert_exactly_once(&daemon, &sim, &device, &id), 5);
}

/// Seed 001, `#### 2. Message Queue System` ("Timeout Protection: Messages
/// timeout after 2 minutes"): `whatsapp.send_timeout` defaults to the
/// seed's 2 min. A send to a WhatsApp that takes 5 s to accept is answered
/// within `whatsapp.ack_wait` (here 1 s) with its id and ack `PENDING`,
/// not held; the message still arrives once, under that id, and its ack
/// follows.
#[test]
fn seed001_timeout_protection_a_slow_send_is_answered_in_bounded_time() {
    assert_eq!(defaults().whatsapp.send_timeout, Duration::from_secs(120));
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start_tuned(&sim, "ack_wait = \"1s\"", "");
    let device = daemon.pair(&sim, "acme", PHONE);
    sim.device_action(&device, "slow", Some(json!({"ms": 5000})));
    let asked = Instant::now();
    let r = daemon.api("POST", "/api/sessions/acme/messages", Some(json!({"to": "+4915123456789", "text": "slow"})));
    let took = asked.elapsed();
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["ack"], "PENDING", "{:?}", r.body);
    assert!(took < Duration::from_millis(4500), "answered after {took:?}");
    let id = r.body["id"].as_str().expect("a message id").to_string();
    let log = wait_for("the message at WhatsApp", Duration::from_secs(20), || {
        let log = sim.messages(&device);
        (!log.is_empty()).then_some(log)
    });
    assert_eq!(log.len(), 1);
    assert!(id.ends_with(log[0]["id"].as_str().unwrap_or("?")), "{id} vs {:?}", log[0]);
}

/// Seed 001, `## New API Endpoints`, `### Health Check (Enhanced)` (`GET
/// /api/health`: session health, queue length, last health check, restart
/// status) and `## Monitoring Commands`, `### Check Health`: `/health`
/// answers without a token; the session's view carries its state, last
/// heartbeat and restart status; its queue says how many messages wait;
/// `/metrics` counts sessions by state.
#[test]
fn seed001_health_endpoint_reports_liveness_sessions_and_their_queue() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start_tuned(&sim, "check_interval = \"500ms\"", "[heartbeat]\ninterval = \"1s\"\n");
    daemon.pair(&sim, "acme", PHONE);
    assert_eq!(health(&daemon), (200, json!({"status": "ok"})));
    let view = wait_for("a heartbeat in the view", Duration::from_secs(20), || {
        let list = daemon.api("GET", "/api/sessions", None).body;
        let v = list.as_array()?.iter().find(|s| s["name"] == "acme")?.clone();
        v["last_heartbeat_ms"].as_u64().map(|_| v)
    });
    assert_eq!((&view["state"], &view["attempt"], &view["restarts_in_window"]), (&json!("CONNECTED"), &json!(0), &json!(0)), "{view}");
    assert!(view.get("next_attempt_ms").is_some(), "{view}");
    daemon.campaign(campaign_body("acme", &numbers(3, 58_000_000), 100, 200, false));
    let q = daemon.api("GET", "/api/sessions/acme/queue", None);
    assert_eq!((q.status, &q.body["pending"]), (200, &json!(3)), "{:?}", q.body);
    assert_eq!(metric(&daemon, "wasup_sessions{state=\"CONNECTED\"}"), Some(1.0));
}

/// Seed 001, `### Session Recovery` (`POST /api/recover-session`: manually
/// trigger session recovery) and `## Monitoring Commands`, `### Manual
/// Recovery`: a session that spent its restart budget (here 1 restart)
/// is `FAILED`; `POST /api/sessions/{name}/recover` clears the budget and
/// brings it back on its profile, without a QR.
#[test]
fn seed001_recover_session_brings_a_failed_session_back_without_a_qr() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "max_restarts = 1\n");
    let device = daemon.pair(&sim, "acme", PHONE);
    let before = daemon.history_states("acme").len();
    crash_page(&daemon, "acme");
    wait_reconnected(&daemon, "acme", before, Duration::from_secs(60));
    crash_page(&daemon, "acme");
    let failed = daemon.wait_state("acme", "FAILED", Duration::from_secs(30));
    assert_eq!(failed["reason"], "restart_budget_spent");
    let r = daemon.api("POST", "/api/sessions/acme/recover", None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    daemon.wait_state("acme", "CONNECTED", Duration::from_secs(60));
    let after = since_pairing(&daemon, "acme");
    assert!(!after.iter().any(|s| s.starts_with("SCAN_QR") || s.starts_with("LOGGED_OUT")), "{after:?}");
    assert_eq!(daemon.session("acme")["restarts_in_window"], 0);
    let r = daemon.api("POST", "/api/sessions/acme/messages", Some(json!({"to": "+4915123456789", "text": "recovered"})));
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(sim.messages(&device).len(), 1);
}

/// Seed 001, `### Queue Status` (`GET /api/queue-status`) and `### Clear
/// Queue` (`POST /api/clear-queue`: clear all pending messages): the
/// session's queue shows what its running campaign still has to send;
/// clearing it cancels the campaign and nothing more is sent.
#[test]
fn seed001_queue_status_shows_what_waits_and_clear_queue_sends_nothing_more() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "");
    let device = daemon.pair(&sim, "acme", PHONE);
    let id = daemon.campaign(campaign_body("acme", &numbers(6, 59_000_000), 1500, 2000, true));
    daemon.wait_sent(&id, 1, Duration::from_secs(60));
    let q = daemon.api("GET", "/api/sessions/acme/queue", None);
    assert_eq!(q.status, 200, "{:?}", q.body);
    let pending = q.body["pending"].as_u64().unwrap_or_default();
    assert!((1..=5).contains(&pending), "{:?}", q.body);
    assert_eq!(q.body["campaigns"][0]["id"], id.as_str());
    let r = daemon.api("DELETE", "/api/sessions/acme/queue", None);
    assert_eq!((r.status, &r.body["cancelled_campaigns"]), (200, &json!(1)), "{:?}", r.body);
    assert_eq!(daemon.campaign_view(&id)["state"], "CANCELLED");
    let sent = sim.messages(&device).len();
    stays("nothing more sent", Duration::from_secs(3), || sim.messages(&device).len() == sent);
    assert_eq!(daemon.api("GET", "/api/sessions/acme/queue", None).body["pending"], 0);
}

/// Seed 001, `## PM2 Restart Policy` (`"autorestart": true`,
/// `"restart_delay": 10000`, `"exp_backoff_restart_delay": 100`): a
/// browser that dies at every start is started again after a backoff that
/// doubles per attempt (full jitter within `min(cap, base·2^attempt)`;
/// defaults 5 s and 5 min); the daemon itself runs under systemd with
/// `Restart=` and a watchdog.
#[test]
fn seed001_pm2_restart_policy_a_dead_browser_is_restarted_with_growing_backoff() {
    let d = defaults();
    assert_eq!((d.restart.backoff_base, d.restart.backoff_cap), (Duration::from_secs(5), Duration::from_secs(300)));
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/wasup.service")).expect("the systemd unit");
    assert!(unit.lines().any(|l| l.starts_with("Restart=")) && unit.contains("WatchdogSec="), "{unit}");
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(
        &sim,
        "backoff_base = \"100ms\"\nbackoff_cap = \"800ms\"\nmax_restarts = 100\n[browser]\nchromium = \"/bin/false\"\n",
    );
    let r = daemon.api("POST", "/api/sessions", Some(json!({"name": "acme"})));
    assert_eq!(r.status, 201, "{:?}", r.body);
    let scheduled = wait_for("five restarts", Duration::from_secs(60), || {
        let e = events(&daemon, "acme", "session.restart_scheduled");
        (e.len() >= 5).then_some(e)
    });
    for (i, e) in scheduled.iter().take(5).enumerate() {
        let attempt = i as u64 + 1;
        assert_eq!(e["detail"]["attempt"], attempt, "{e}");
        let bound = 800.min(100 << attempt);
        let delay = e["detail"]["delay_ms"].as_u64().unwrap_or(u64::MAX);
        assert!(delay <= bound, "attempt {attempt}: {delay} ms over its bound {bound} ms");
    }
    assert!(daemon.session("acme")["attempt"].as_u64().unwrap_or_default() >= 5);
}

/// Seed 001, `## Emergency Recovery` (stop the service, clear the session
/// data, start it, re-scan the QR): `POST …/stop`, `POST …/logout` (the
/// profile is wiped), `POST …/start`, scan the new QR: linked again.
#[test]
fn seed001_emergency_recovery_stop_clear_start_and_scan_again() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "");
    let old = daemon.pair(&sim, "acme", PHONE);
    let marker = mark_profile(&daemon, "acme");
    let r = daemon.api("POST", "/api/sessions/acme/stop", None);
    assert_eq!((r.status, &r.body["state"]), (200, &json!("STOPPED")), "{:?}", r.body);
    let r = daemon.api("POST", "/api/sessions/acme/logout", None);
    assert_eq!((r.status, &r.body["state"]), (200, &json!("LOGGED_OUT")), "{:?}", r.body);
    // The wipe runs on the blocking pool; nothing can start on the profile
    // until it is done.
    wait_for("the session data cleared", Duration::from_secs(10), || (!marker.exists()).then_some(()));
    let r = daemon.api("POST", "/api/sessions/acme/start", None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    daemon.wait_state("acme", "SCAN_QR", Duration::from_secs(60));
    let new = sim.scan(&daemon.qr("acme"), PHONE);
    assert_ne!(new, old);
    let view = daemon.wait_state("acme", "CONNECTED", Duration::from_secs(60));
    assert_eq!(view["me"]["wid"], format!("{PHONE}@c.us"));
}

// ----- seed 002: session persistence -----------------------------------------

/// Seed 002, `### 1. **Proper Session Persistence**` ("Session survives
/// server restarts"), with `### Session Lifecycle` 2 (**Server Restart**:
/// no QR scan needed if the session is valid), `### Problem: Session not
/// persisting after restart` and `## Security Considerations` 2
/// (**Graceful Shutdown** "prevents orphaned sessions") and `### 4.
/// **Improved Session Monitoring**` ("Stops monitoring during shutdown"):
/// a SIGTERM stops the daemon in time, with no reconnect recorded for the
/// browsers it closes, and leaves no browser behind; the profile stays on
/// disk, private (0700); the next start connects on it without a QR, as
/// the same linked device, and sends.
#[test]
fn seed002_a_session_survives_a_daemon_restart_without_a_qr() {
    use std::os::unix::fs::PermissionsExt as _;
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let mut daemon = Daemon::start(&sim, "");
    let device = daemon.pair(&sim, "acme", PHONE);
    let dir = profile(&daemon, "acme");
    assert!(daemon.stop(), "the daemon did not stop on SIGTERM in time");
    wait_for("no browser left on the profile", Duration::from_secs(10), || wasup::procfs::browser_pid(&dir).is_none().then_some(()));
    let mode = std::fs::metadata(&dir).expect("the profile is kept").permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "profile mode {mode:o}");
    assert!(std::fs::read_dir(&dir).expect("the profile").count() > 0, "the profile is empty");
    daemon.start_again();
    let view = daemon.wait_state("acme", "CONNECTED", Duration::from_secs(60));
    assert_eq!(view["me"]["wid"], format!("{PHONE}@c.us"));
    let states = daemon.history_states("acme");
    let shutdown = states.iter().rposition(|s| s == "STOPPED(daemon_shutdown)").expect("the shutdown recorded");
    assert!(!states[shutdown..].iter().any(|s| s.starts_with("SCAN_QR") || s.starts_with("LOGGED_OUT")), "{states:?}");
    // Supervision stopped with the daemon: the browsers closing under it
    // were not taken for a failure (no reconnect before the stop).
    assert_eq!(states[shutdown - 1], "CONNECTED", "{states:?}");
    let devices = sim.devices();
    assert_eq!((devices.len(), &devices[0]["device"]), (1, &json!(device)), "{devices:?}");
    let r = daemon.api("POST", "/api/sessions/acme/messages", Some(json!({"to": "+4915123456789", "text": "after the restart"})));
    assert_eq!(r.status, 201, "{:?}", r.body);
}

/// Seed 002, `### 3. **Smart Reconnection Logic**` ("Different handling
/// for logout vs connection loss"), with `### 2. **Enhanced Disconnection
/// Handling**`, `### Session Lifecycle` 3 (**Connection Loss**) and
/// `### Session Clearing Scenarios` ("User logout from WhatsApp app"): a
/// lost connection comes back on the kept profile without a QR; a logout
/// from the phone clears the profile and offers a new QR, with no retry of
/// the dead credentials.
#[test]
fn seed002_a_logout_clears_the_session_while_a_lost_connection_keeps_it() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "");
    let device = daemon.pair(&sim, "acme", PHONE);
    let marker = mark_profile(&daemon, "acme");
    let before = daemon.history_states("acme").len();
    sim.device_action(&device, "network-drop", Some(json!({"seconds": 3})));
    wait_reconnected(&daemon, "acme", before, Duration::from_secs(40));
    assert!(marker.exists(), "a lost connection cleared the profile");
    sim.device_action(&device, "logout", None);
    wait_history(&daemon, "acme", "LOGGED_OUT(phone_logout)", before, Duration::from_secs(30));
    daemon.wait_state("acme", "SCAN_QR", Duration::from_secs(60));
    assert!(!marker.exists(), "a logout kept the profile");
    assert!(events(&daemon, "acme", "session.restart_scheduled").is_empty(), "retried after a logout");
}

/// Seed 002, `### 3. **Smart Reconnection Logic**` ("Exponential backoff
/// (5s, 10s, 15s, 20s, 25s, max 30s)", "Maximum 5 reconnection attempts")
/// with `### Problem: Connection keeps dropping` ("Clear session if > 5
/// failed attempts") and `## Important Notes` 3 ("Error Recovery:
/// Automatic but respects WhatsApp's limits"): with the seed's budget of 5
/// (the default is 10 an hour, backoff 5 s to 5 min), a browser that fails
/// every start is retried exactly 5 times within the backoff bounds, then
/// `FAILED` with an alert, and not retried again: a human decides.
#[test]
fn seed002_reconnects_back_off_and_stop_after_the_budget() {
    let d = defaults();
    assert_eq!((d.restart.max_restarts, d.restart.window), (10, Duration::from_secs(3600)));
    let hooks = Receiver::start();
    let sim = Sim::start(&[]);
    let config = format!(
        "backoff_base = \"100ms\"\nbackoff_cap = \"600ms\"\nmax_restarts = 5\n[browser]\nchromium = \"/bin/false\"\n{}",
        webhook_config(&hooks)
    );
    let daemon = Daemon::start(&sim, &config);
    let r = daemon.api("POST", "/api/sessions", Some(json!({"name": "acme"})));
    assert_eq!(r.status, 201, "{:?}", r.body);
    let view = daemon.wait_state("acme", "FAILED", Duration::from_secs(60));
    assert_eq!(view["reason"], "restart_budget_spent");
    let scheduled = events(&daemon, "acme", "session.restart_scheduled");
    assert_eq!(scheduled.len(), 5, "{scheduled:?}");
    for e in &scheduled {
        let attempt = e["detail"]["attempt"].as_u64().unwrap_or_default();
        let delay = e["detail"]["delay_ms"].as_u64().unwrap_or(u64::MAX);
        assert!(delay <= 600.min(100 << attempt), "attempt {attempt}: {delay} ms");
    }
    hooks.wait_for("a FAILED alert", Duration::from_secs(10), |r| r.json()["state"] == "FAILED");
    stays("FAILED, no more retries", Duration::from_secs(2), || {
        daemon.session("acme")["state"] == "FAILED" && events(&daemon, "acme", "session.restart_scheduled").len() == 5
    });
}

/// Seed 002, `### 1. Enhanced Status (GET /api/whatsapp/status)` (state,
/// phone, push name, `reconnectAttempts`) and `### 3. **Smart Reconnection
/// Logic**` ("Reset attempts on successful connection"): the view shows
/// the linked account and the restart attempts; after a page crash the
/// attempt is 1, and once the session has been healthy for
/// `restart.reset_after` (here 1 s) the next crash counts from 1 again.
#[test]
fn seed002_status_shows_the_account_and_reconnect_attempts_which_reset_once_healthy() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "reset_after = \"1s\"\n");
    daemon.pair(&sim, "acme", PHONE);
    let v = daemon.session("acme");
    assert_eq!((&v["state"], &v["desired"], &v["attempt"]), (&json!("CONNECTED"), &json!("running"), &json!(0)), "{v}");
    assert_eq!((&v["me"]["wid"], &v["me"]["pushname"]), (&json!(format!("{PHONE}@c.us")), &json!("Acme")), "{v}");
    for round in 1..=2 {
        let before = daemon.history_states("acme").len();
        crash_page(&daemon, "acme");
        wait_reconnected(&daemon, "acme", before, Duration::from_secs(60));
        let v = daemon.session("acme");
        assert_eq!((&v["attempt"], &v["restarts_in_window"]), (&json!(1), &json!(round)), "round {round}: {v}");
        // Healthy for longer than reset_after before the next crash.
        wait_for("1 s connected", Duration::from_secs(10), || {
            (now_ms().saturating_sub(daemon.session("acme")["since_ms"].as_u64().unwrap_or(u64::MAX)) > 1_200).then_some(())
        });
    }
    let attempts: Vec<Value> =
        events(&daemon, "acme", "session.restart_scheduled").iter().map(|e| e["detail"]["attempt"].clone()).collect();
    assert_eq!(attempts, [json!(1), json!(1)]);
}

/// Seed 002, `### 2. Clear Session (POST /api/whatsapp/clear-session)` and
/// `### 3. Enhanced Disconnect (POST /api/whatsapp/disconnect)` ("Properly
/// logout and clear session data"), with `## Quick Reference`: `POST
/// …/logout` tells WhatsApp (the phone sees the device logged out), clears
/// the profile and offers a fresh QR at once; scanning it links again.
#[test]
fn seed002_clear_session_logs_out_wipes_the_profile_and_offers_a_fresh_qr() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "");
    let old = daemon.pair(&sim, "acme", PHONE);
    let marker = mark_profile(&daemon, "acme");
    let r = daemon.api("POST", "/api/sessions/acme/logout", None);
    assert_eq!((r.status, &r.body["state"], &r.body["reason"]), (200, &json!("LOGGED_OUT"), &json!("operator_logout")), "{:?}", r.body);
    assert_eq!(sim.device_state(&old), "logged_out", "WhatsApp was not told");
    daemon.wait_state("acme", "SCAN_QR", Duration::from_secs(60));
    assert!(!marker.exists(), "the session data was not cleared");
    let new = sim.scan(&daemon.qr("acme"), PHONE);
    assert_ne!(new, old);
    daemon.wait_state("acme", "CONNECTED", Duration::from_secs(60));
}

/// Seed 002, `## Security Considerations` 1 (**Session Files**: "Contain
/// sensitive authentication data", "Set proper file permissions"): the
/// profiles directory and each profile are private (0700), and neither the
/// API token nor a QR string ever reaches the log.
#[test]
fn seed002_session_files_are_private_and_secrets_stay_out_of_the_log() {
    use std::os::unix::fs::PermissionsExt as _;
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "");
    let r = daemon.api("POST", "/api/sessions", Some(json!({"name": "acme", "start": true})));
    assert_eq!(r.status, 201, "{:?}", r.body);
    daemon.wait_state("acme", "SCAN_QR", Duration::from_secs(60));
    let qr = daemon.qr("acme");
    for dir in [profile(&daemon, "acme"), daemon.state_dir().join("profiles")] {
        let mode = std::fs::metadata(&dir).expect("the directory").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} has mode {mode:o}", dir.display());
    }
    let log = daemon.log();
    assert!(!log.is_empty());
    assert!(!log.contains(&daemon.token), "the token is in the log");
    assert!(!log.contains(&qr), "a QR string is in the log");
}

/// Seed 002, `## Important Notes` 2 (**Rate Limiting**: "Built-in delays
/// prevent WhatsApp blocks"): the number's gap (`numbers.min_delay`,
/// default 20 s; here 400 ms) holds between every two messages WhatsApp
/// accepts from the number, since it counts from the end of the previous
/// send.
#[test]
fn seed002_rate_limiting_the_numbers_sends_are_spaced_by_its_gap() {
    let d = defaults();
    assert_eq!((d.numbers.min_delay, d.numbers.max_delay), (Duration::from_secs(20), Duration::from_secs(45)));
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "[numbers]\nmin_delay = \"400ms\"\nmax_delay = \"500ms\"\n");
    let device = daemon.pair(&sim, "acme", PHONE);
    let id = daemon.campaign(campaign_body("acme", &numbers(5, 60_500_000), 0, 0, true));
    daemon.wait_campaign(&id, "COMPLETED", Duration::from_secs(60));
    let mut at: Vec<u64> = sim.messages(&device).iter().map(|m| m["at_ms"].as_u64().unwrap_or_default()).collect();
    at.sort_unstable();
    assert_eq!(at.len(), 5);
    for w in at.windows(2) {
        let gap = w[1] - w[0];
        assert!(gap >= 400, "WhatsApp accepted two sends {gap} ms apart; the number's gap is at least 400 ms: {at:?}");
    }
}

// ----- seed 003: connection persistence --------------------------------------

/// Seed 003, `### **Test 1: Connection Persistence**` (connect by QR, see it
/// in the dashboard, close the browser and reopen it: still connected;
/// restart the bot: it reconnects without a QR), with `🎉 **BENEFITS
/// ACHIEVED**` ("Browser Independence: Connection persists across browser
/// sessions"): a viewer of the live events comes and goes without touching
/// the session; the daemon restarts and the session is back on the same
/// linked device, with no QR.
#[test]
fn seed003_test1_the_connection_persists_across_viewers_and_a_daemon_restart() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let mut daemon = Daemon::start(&sim, "");
    let device = daemon.pair(&sim, "acme", PHONE);
    let before = daemon.history_states("acme");
    let viewer = daemon.client().stream("/api/events?session=acme", None).expect("a live event stream");
    assert_eq!(viewer.status, 200);
    drop(viewer);
    let again = daemon.client().stream("/api/events?session=acme", None).expect("the stream reopened");
    assert_eq!(again.status, 200);
    drop(again);
    stays("acme untouched by its viewers", Duration::from_secs(1), || daemon.history_states("acme") == before);
    daemon.restart();
    daemon.wait_state("acme", "CONNECTED", Duration::from_secs(60));
    let states = daemon.history_states("acme");
    let shutdown = states.iter().rposition(|s| s == "STOPPED(daemon_shutdown)").expect("the shutdown recorded");
    assert!(!states[shutdown..].iter().any(|s| s.starts_with("SCAN_QR")), "{states:?}");
    assert_eq!(sim.devices().len(), 1);
    assert_eq!(sim.device_state(&device), "active");
}

/// Polls `script` in the page until it returns something other than
/// null/false; panics after `within`.
async fn wait_page(c: &fantoccini::Client, what: &str, within: Duration, script: &str, args: Vec<Value>) -> Value {
    let deadline = Instant::now() + within;
    loop {
        match c.execute(script, args.clone()).await {
            Ok(Value::Null | Value::Bool(false)) | Err(_) => {}
            Ok(v) => return v,
        }
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The session card of `arguments[0]` as `{state, colour, heartbeat, qr}`
/// when its state is `arguments[1]` (any state if null).
const CARD: &str = r#"
    const [name, want] = arguments;
    const card = [...document.querySelectorAll('[data-session]')].find((x) => x.getAttribute('data-session') === name);
    if (!card || (want !== null && card.getAttribute('data-state') !== want)) return null;
    const dt = [...card.querySelectorAll('dt')].find((d) => d.textContent === 'heartbeat');
    const dd = dt && dt.nextElementSibling;
    return {
        state: card.getAttribute('data-state'),
        colour: [...card.classList].find((c) => c.startsWith('state-')) || null,
        heartbeat: dd ? Number(dd.getAttribute('data-time')) : null,
        qr: document.querySelector(`img[data-qr="${name}"]`) !== null,
    };
"#;

/// Seed 003, `### **Test 2: Dashboard State Sync**` (the dashboard shows
/// the actual state, no QR when connected, real-time heartbeat updates),
/// with `### **Dashboard Indicators:**` (green connected with an active
/// heartbeat, yellow connecting, red disconnected and requiring
/// authentication) and `#### **Real-time State Synchronization:**` ("Only
/// show QR if definitely not connected"): in a real Chromium the dashboard
/// shows the session green, without a QR (the API has none either) and
/// with its heartbeat; a network drop turns it yellow live, and it comes
/// back green with a newer heartbeat; when the phone logs it out it turns
/// red, with the QR to scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed003_test2_the_dashboard_shows_the_true_state_and_the_heartbeat_live() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start_tuned(&sim, "check_interval = \"500ms\"", "[heartbeat]\ninterval = \"1s\"\n");
    let device = daemon.pair(&sim, "acme", PHONE);
    wait_for("a heartbeat", Duration::from_secs(20), || daemon.session("acme")["last_heartbeat_ms"].as_u64());
    assert_eq!(daemon.api("GET", "/api/sessions/acme/qr", None).status, 409, "a QR while connected");

    let driver = Chromedriver::start();
    let browser_profile = tempfile::tempdir().expect("a temp dir");
    let c = driver.browser(browser_profile.path()).await;
    c.goto(&format!("{}/dashboard", daemon.base)).await.expect("open the dashboard");
    let token = c.wait().at_most(Duration::from_secs(10)).for_element(fantoccini::Locator::Css("#token")).await.expect("the token form");
    token.send_keys(&daemon.token).await.expect("type the token");
    c.find(fantoccini::Locator::Css("#login-form button[type=submit]")).await.expect("the button").click().await.expect("log in");

    let shown =
        wait_page(&c, "acme CONNECTED with a heartbeat", Duration::from_secs(20), CARD, vec![json!("acme"), json!("CONNECTED")]).await;
    assert_eq!((&shown["colour"], &shown["qr"]), (&json!("state-green"), &json!(false)), "{shown}");
    let first = shown["heartbeat"].as_u64().expect("the heartbeat shown");

    sim.device_action(&device, "network-drop", Some(json!({"seconds": 4})));
    let lost = wait_page(&c, "acme RECONNECTING", Duration::from_secs(10), CARD, vec![json!("acme"), json!("RECONNECTING")]).await;
    assert_eq!(lost["colour"], "state-yellow", "{lost}");
    let back = wait_page(
        &c,
        "acme CONNECTED again with a newer heartbeat",
        Duration::from_secs(60),
        &format!("const r = (function() {{ {CARD} }}).apply(null, arguments); return r && r.heartbeat > {first} ? r : null;"),
        vec![json!("acme"), json!("CONNECTED")],
    )
    .await;
    assert_eq!((&back["colour"], &back["qr"]), (&json!("state-green"), &json!(false)), "{back}");

    sim.device_action(&device, "logout", None);
    let qr = format!("const r = (function() {{ {CARD} }}).apply(null, arguments); return r && r.qr ? r : null;");
    let unlinked = wait_page(&c, "acme SCAN_QR with its QR", Duration::from_secs(60), &qr, vec![json!("acme"), json!("SCAN_QR")]).await;
    assert_eq!(unlinked["colour"], "state-red", "{unlinked}");
    c.close().await.expect("close the browser");
}

/// Seed 003, `### **Test 3: Auto-recovery**` (kill the bot process,
/// restart it: it reconnects, and the dashboard shows the restoration),
/// with `#### **Smarter Connection State Loading:**` and `#### **Improved
/// Session Detection:**` (a valid stored session is restored, no QR): the
/// daemon is SIGKILLed (its browser left behind) and started again. The
/// stored state is not trusted (`STARTING(queued)` first, shown to every
/// viewer), the stale browser is replaced, and the session connects on its
/// profile without a QR.
#[test]
fn seed003_test3_a_killed_daemon_comes_back_without_a_qr() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let mut daemon = Daemon::start(&sim, "");
    daemon.pair(&sim, "acme", PHONE);
    let stale = wasup::procfs::browser_pid(&profile(&daemon, "acme")).expect("a browser");
    daemon.kill();
    daemon.start_again();
    daemon.wait_state("acme", "CONNECTED", Duration::from_secs(60));
    // (The last history entries before a SIGKILL may be lost: they are
    // records, not flushed one by one.)
    let states = daemon.history_states("acme");
    let restored = states.iter().rposition(|s| s == "STARTING(queued)").unwrap_or_else(|| panic!("no restoration shown: {states:?}"));
    let after = &states[restored..];
    assert!(!after.iter().any(|s| s.starts_with("SCAN_QR") || s.starts_with("LOGGED_OUT")), "{after:?}");
    assert_ne!(wasup::procfs::browser_pid(&profile(&daemon, "acme")), Some(stale), "the stale browser is still the one");
    assert_eq!(sim.devices().len(), 1);
}

/// Seed 003, `### **3. Advanced Heartbeat Monitoring**` (every 30 s;
/// "Track consecutive failures for auto-recovery": reconnect after 3):
/// `heartbeat.interval` and `heartbeat.failures` default to the seed's 30 s
/// and 3. With 1 s beats, a page that cannot reach WhatsApp for 8 s is
/// restarted after 3 missed beats (not at the first), and connects again
/// without a QR once the network is back.
#[test]
fn seed003_heartbeat_reconnects_after_three_missed_beats() {
    let d = defaults();
    assert_eq!((d.heartbeat.interval, d.heartbeat.failures), (Duration::from_secs(30), 3));
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start_tuned(&sim, "check_interval = \"500ms\"", "[heartbeat]\ninterval = \"1s\"\nfailures = 3\n");
    let device = daemon.pair(&sim, "acme", PHONE);
    let dropped = now_ms();
    sim.device_action(&device, "network-drop", Some(json!({"seconds": 8})));
    let ended = wait_for("a restart after missed heartbeats", Duration::from_secs(30), || {
        events(&daemon, "acme", "session.restart_scheduled")
            .into_iter()
            .find(|e| matches!(e["reason"].as_str(), Some("connection_lost" | "heartbeat_missed")) && e["at_ms"].as_u64() >= Some(dropped))
    });
    let after = ended["at_ms"].as_u64().unwrap_or_default() - dropped;
    assert!((1_800..20_000).contains(&after), "restarted {after} ms after the drop; 3 beats of 1 s");
    daemon.wait_state("acme", "CONNECTED", Duration::from_secs(60));
    let states = since_pairing(&daemon, "acme");
    assert!(!states.iter().any(|s| s.starts_with("SCAN_QR") || s.starts_with("LOGGED_OUT")), "{states:?}");
}

/// Seed 003, `### **2. Optimized WhatsApp Client Configuration**`
/// (`takeoverOnConflict: false`, "Don't take over existing sessions"):
/// `restart.conflict` defaults to `stay`. The account is opened elsewhere:
/// the session stays `CONFLICT` (no takeover, no restart); since only a
/// person can end that, its running campaign fails at once and a new start
/// is refused with what to do.
#[test]
fn seed003_no_takeover_on_conflict_and_its_campaigns_fail_fast() {
    assert_eq!(defaults().restart.conflict, wasup::config::ConflictPolicy::Stay);
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "");
    let device = daemon.pair(&sim, "acme", PHONE);
    let id = daemon.campaign(campaign_body("acme", &numbers(5, 61_500_000), 1000, 1500, true));
    daemon.wait_sent(&id, 1, Duration::from_secs(60));
    sim.device_action(&device, "conflict", None);
    daemon.wait_state("acme", "CONFLICT", Duration::from_secs(10));
    let v = daemon.wait_campaign(&id, "FAILED", Duration::from_secs(10));
    assert_eq!(v["reason"], "session_conflict: conflict", "{v}");
    let r = daemon.api("POST", "/api/campaigns", Some(campaign_body("acme", &numbers(2, 61_600_000), 100, 200, true)));
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert!(r.body["error"]
        .as_str()
        .unwrap_or_default()
        .starts_with("session acme is CONFLICT: its account is open in another WhatsApp Web"));
    stays("CONFLICT", Duration::from_secs(2), || daemon.session("acme")["state"] == "CONFLICT");
    assert!(events(&daemon, "acme", "session.restart_scheduled").is_empty());
}

/// Seed 003, `#### **Error Resilience:**` (an uncaught exception does not
/// end the process): a session's actor panics; the daemon process goes on
/// answering, rebuilds the session, and it is back without a QR.
#[test]
fn seed003_error_resilience_a_panicking_session_is_rebuilt_and_the_daemon_stays_up() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let mut daemon = Daemon::start(&sim, "");
    daemon.pair(&sim, "acme", PHONE);
    let pid = daemon.pid();
    let watch = HealthWatch::start(&daemon);
    let r = daemon.api("POST", "/api/sessions/acme/_fault/panic", None);
    assert_eq!(r.status, 202, "{:?}", r.body);
    wait_history(&daemon, "acme", "RECONNECTING(actor_died)", 0, Duration::from_secs(10));
    daemon.wait_state("acme", "CONNECTED", Duration::from_secs(60));
    assert!(!since_pairing(&daemon, "acme").iter().any(|s| s.starts_with("SCAN_QR")));
    assert_eq!(daemon.pid(), pid);
    assert!(daemon.is_running());
    watch.assert_always_healthy();
}

/// Seed 003, `## 🎯 **PROBLEM IDENTIFIED**` (sessions that asked for a new
/// QR for no reason) with `🎉 **BENEFITS ACHIEVED**` ("No Unnecessary QR
/// Codes", "No More Random Disconnections"): chromedriver is killed, the
/// page's event connection drops, and WhatsApp Web reloads itself. Each
/// time the session is back `CONNECTED` on its profile: never a QR, never
/// a second linked device.
#[test]
fn seed003_no_unnecessary_qr_every_kind_of_restart_keeps_the_link() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "");
    let device = daemon.pair(&sim, "acme", PHONE);
    let before = daemon.history_states("acme").len();
    // SAFETY: kill(2) on the chromedriver this test's daemon started.
    unsafe { libc::kill(chromedriver_of(&daemon) as i32, libc::SIGKILL) };
    wait_history(&daemon, "acme", "RECONNECTING(driver_died)", before, Duration::from_secs(30));
    daemon.wait_state("acme", "CONNECTED", Duration::from_secs(60));
    if daemon.session("acme")["events"] == "bidi" {
        let before = daemon.history_states("acme").len();
        let r = daemon.api("POST", "/api/sessions/acme/_fault/bidi-drop", None);
        assert_eq!(r.status, 202, "{:?}", r.body);
        wait_reconnected(&daemon, "acme", before, Duration::from_secs(60));
    }
    let logins = |sim: &Sim| sim.devices().iter().find(|d| d["device"] == device.as_str()).and_then(|d| d["logins"].as_u64());
    let reloaded_from = logins(&sim);
    sim.device_action(&device, "reload", None);
    wait_for("the reloaded page logged in again", Duration::from_secs(30), || (logins(&sim) > reloaded_from).then_some(()));
    daemon.wait_state("acme", "CONNECTED", Duration::from_secs(60));
    let states = since_pairing(&daemon, "acme");
    assert!(!states.iter().any(|s| s.starts_with("SCAN_QR") || s.starts_with("LOGGED_OUT")), "{states:?}");
    assert_eq!(sim.devices().len(), 1, "{:?}", sim.devices());
    assert_eq!(sim.device_state(&device), "active");
}

// ----- seed 004: the device_removed post-mortem (Russian) --------------------

/// Seed 004, `## 🔴 Проблема` (the problem: WhatsApp revoked the device,
/// `401 device_removed`) with `### Симптомы` (symptoms: sends fail with a
/// 500, automatic reconnection does not work), `### Immediate Fix`
/// (clear the auth data, a new QR, scan it), `#### 3. Скрипт
/// автовосстановления` (Telegram notifications) and `## 📝 Checklist для
/// будущих инцидентов с WhatsApp` (check the status through the API, new
/// session, scan the QR, check the bot answers): the device is revoked
/// mid-campaign. It is seen at once (`LOGGED_OUT(device_removed)`), the
/// campaign fails at once, an alert goes to the webhook and to Telegram,
/// a send is refused with a 409 that says why (not a 500), the revoked
/// credentials are not retried but wiped, and a fresh QR relinks the
/// number, which sends again.
#[test]
fn seed004_device_removed_is_seen_at_once_alerted_and_relinked_by_a_new_qr() {
    let _permit = browser_permit();
    let hooks = Receiver::start();
    let sim = Sim::start(&[]);
    let config = format!(
        "{}[alerts.telegram]\nbot_token = \"123456:SECRET-bot-token\"\nchat_id = \"-10042\"\napi_base = \"{}\"\n",
        webhook_config(&hooks),
        hooks.base
    );
    let daemon = Daemon::start(&sim, &config);
    let old = daemon.pair(&sim, "acme", PHONE);
    let marker = mark_profile(&daemon, "acme");
    let id = daemon.campaign(campaign_body("acme", &numbers(5, 62_000_000), 1000, 1500, true));
    daemon.wait_sent(&id, 1, Duration::from_secs(60));
    let before = daemon.history_states("acme").len();
    let r = sim.phone("POST", &format!("/_phone/devices/{old}/device-removed"), None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    wait_history(&daemon, "acme", "LOGGED_OUT(device_removed)", before, Duration::from_secs(30));
    let v = daemon.wait_campaign(&id, "FAILED", Duration::from_secs(10));
    assert!(v["reason"].as_str().unwrap_or_default().starts_with("session_logged_out: device_removed"), "{v}");
    let alert = hooks.wait_for("a LOGGED_OUT alert", Duration::from_secs(20), |r| r.json()["state"] == "LOGGED_OUT");
    assert_eq!((&alert.json()["session"], &alert.json()["reason"]), (&json!("acme"), &json!("device_removed")));
    let telegram = hooks.wait_for("a Telegram message", Duration::from_secs(20), |r| r.path.ends_with("/sendMessage"));
    assert!(telegram.json()["text"].as_str().unwrap_or_default().contains("acme is LOGGED_OUT"), "{:?}", telegram.json());
    let r = daemon.api("POST", "/api/sessions/acme/messages", Some(json!({"to": "+4915123456789", "text": "anyone?"})));
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert!(r.body["error"].as_str().unwrap_or_default().contains("not CONNECTED"), "{:?}", r.body);
    daemon.wait_state("acme", "SCAN_QR", Duration::from_secs(60));
    assert!(!marker.exists(), "the revoked credentials were kept");
    let after: Vec<String> = daemon.history_states("acme").into_iter().skip(before).collect();
    assert!(!after.iter().any(|s| s.starts_with("RECONNECTING")), "retried revoked credentials: {after:?}");
    assert!(!daemon.log().contains("SECRET-bot-token"), "the bot token is in the log");
    let new = sim.scan(&daemon.qr("acme"), PHONE);
    daemon.wait_state("acme", "CONNECTED", Duration::from_secs(60));
    let r = daemon.api("POST", "/api/sessions/acme/messages", Some(json!({"to": "+4915123456789", "text": "back"})));
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(sim.messages(&new).len(), 1);
}

/// Seed 004, `### Ключевые метрики для отслеживания` 1 (key files in the
/// auth directory: fewer than 100), with `#### 2. Мониторинг здоровья
/// сессий` (more than 100 files: warn) and `### 3. Отсутствие мониторинга`
/// (no early detection, no notifications): `health.key_files.max` defaults
/// to the seed's 100. Each session's key files are counted and shown (the
/// view and `/metrics`; a fresh session is well under 100); over the limit
/// (here 1) there is one `session.health` event and one alert per
/// crossing, not one per count. The key-files objective (`[objectives]
/// key_files`, also 100 by default, here 1 like the limit) records its
/// `session.objective` event for the same crossing but does not alert a
/// second time; nor does a daemon restart while the count stays over.
#[test]
fn seed004_target_key_files_are_counted_and_over_the_limit_alerted_once() {
    assert_eq!(defaults().health.key_files.max, 100);
    assert_eq!(defaults().objectives.targets().key_files, 100);
    let _permit = browser_permit();
    let hooks = Receiver::start();
    let sim = Sim::start(&[]);
    let mut daemon = Daemon::start(
        &sim,
        &format!("[health.key_files]\ninterval = \"500ms\"\nmax = 1\n[objectives]\nkey_files = 1\n{}", webhook_config(&hooks)),
    );
    daemon.pair(&sim, "acme", PHONE);
    let count = wait_for("a key-file count", Duration::from_secs(30), || daemon.session("acme")["key_files"].as_u64());
    assert!((2..100).contains(&count), "{count} key files: over this test's limit of 1, under the seed's 100");
    let shown = metric(&daemon, "wasup_session_key_files{session=\"acme\"}").expect("the key files in /metrics");
    assert!((2.0..100.0).contains(&shown), "{shown}");
    let alert = hooks.wait_for("a key-file alert", Duration::from_secs(30), |r| r.json()["event"] == "session.health");
    assert_eq!(alert.json()["detail"]["max"], 1);
    stays("one alert per crossing", Duration::from_secs(2), || {
        hooks.received().iter().filter(|r| r.json()["event"] == "session.health").count() == 1
    });
    assert_eq!(events(&daemon, "acme", "session.health").len(), 1);
    wait_for("the key-files objective's event", Duration::from_secs(30), || {
        events(&daemon, "acme", "session.objective").iter().any(|e| e["reason"] == "key_files").then_some(())
    });
    let alerts = || {
        let key_files = |r: &Value| r["event"] == "session.health" || r["detail"]["objective"] == "key_files";
        hooks.received().iter().filter(|r| key_files(&r.json())).count()
    };
    stays("no second alert for the same crossing", Duration::from_secs(2), || alerts() == 1);
    assert_eq!(daemon.session("acme")["state"], "CONNECTED", "action \"alert\" leaves the session up");

    // A daemon restart does not make the same crossing new.
    daemon.restart();
    daemon.wait_state("acme", "CONNECTED", Duration::from_secs(60));
    wait_for("a key-file count after the restart", Duration::from_secs(30), || daemon.session("acme")["key_files"].as_u64());
    stays("no alert after the restart", Duration::from_secs(2), || alerts() == 1);
    assert_eq!(events(&daemon, "acme", "session.health").len(), 1);
}

/// Seed 004, `#### 2. Мониторинг здоровья сессий` ("If too many files …
/// force cleanup": remove the session and create it again) with `###
/// Best Practices на будущее` 2 (watch the file system for piling keys):
/// with `health.key_files.action = "cleanup"`, a linked session over the
/// limit is purged once (`LOGGED_OUT(key_files_cleanup)`, a fresh QR); the
/// fresh, unlinked profile is not purged again.
#[test]
fn seed004_key_files_over_the_limit_are_purged_once_when_configured() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "[health.key_files]\ninterval = \"500ms\"\nmax = 1\naction = \"cleanup\"\n");
    let r = daemon.api("POST", "/api/sessions", Some(json!({"name": "acme"})));
    assert_eq!(r.status, 201, "{:?}", r.body);
    daemon.wait_state("acme", "SCAN_QR", Duration::from_secs(60));
    sim.scan(&daemon.qr("acme"), PHONE);
    wait_history(&daemon, "acme", "LOGGED_OUT(key_files_cleanup)", 0, Duration::from_secs(30));
    daemon.wait_state("acme", "SCAN_QR", Duration::from_secs(60));
    stays("one cleanup", Duration::from_secs(3), || {
        daemon.history_states("acme").iter().filter(|s| s.starts_with("LOGGED_OUT")).count() == 1
    });
}

/// Seed 004, `### 2. Частые переподключения` (259 reconnects in 8 days,
/// unnoticed) with `### Ключевые метрики для отслеживания` 2 (reconnects:
/// at most 10 a day): every reconnect is counted per session, over the
/// last 24 h and in total (`wasup_session_reconnects`), as the history
/// records them.
#[test]
fn seed004_reconnects_are_counted_per_session_over_24h() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "");
    let device = daemon.pair(&sim, "acme", PHONE);
    let series = "wasup_session_reconnects{session=\"acme\",window=\"24h\"}";
    assert_eq!(metric(&daemon, series), Some(0.0));
    for _ in 0..2 {
        let before = daemon.history_states("acme").len();
        sim.device_action(&device, "network-drop", Some(json!({"seconds": 2})));
        wait_reconnected(&daemon, "acme", before, Duration::from_secs(40));
    }
    let recorded = daemon.history_states("acme").iter().filter(|s| s.starts_with("RECONNECTING")).count();
    assert!(recorded >= 2, "{:?}", daemon.history_states("acme"));
    assert_eq!(metric(&daemon, series), Some(recorded as f64));
    assert_eq!(metric(&daemon, "wasup_session_reconnects{session=\"acme\",window=\"total\"}"), Some(recorded as f64));
}

/// Seed 004, `### Ключевые метрики для отслеживания` 4 (recovery time:
/// under 5 minutes) against the incident's `**Resolution Time**: 2 часа`
/// and `### После исправления` ("Автоматическое восстановление при
/// сбоях"): the page crashes; the session is `CONNECTED` again, measured
/// from the daemon's own history, well within 5 minutes (printed).
#[test]
fn seed004_target_recovery_under_5_minutes_after_a_crash() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "");
    daemon.pair(&sim, "acme", PHONE);
    let before = daemon.history_states("acme").len();
    crash_page(&daemon, "acme");
    wait_reconnected(&daemon, "acme", before, Duration::from_secs(60));
    let h = history(&daemon, "acme");
    let lost = h.iter().skip(before).find(|(s, _, _)| s != "CONNECTED").map(|(_, _, at)| *at).expect("left CONNECTED");
    let back = h.iter().skip(before).find(|(s, _, at)| s == "CONNECTED" && *at >= lost).map(|(_, _, at)| *at).expect("back");
    let recovery = back - lost;
    eprintln!("seed 004: recovery after a page crash took {recovery} ms (target: under 300000 ms)");
    assert!(recovery < 300_000, "recovery took {recovery} ms");
}

/// The session's `objectives` in its view, waiting until they are there.
fn objectives(daemon: &Daemon, name: &str) -> Value {
    let v = daemon.session(name);
    assert!(v["objectives"].is_object(), "no objectives in the session view: {v}");
    v["objectives"].clone()
}

/// Seed 004, `### Ключевые метрики для отслеживания` (the targets: < 100
/// key files, ≤ 10 reconnects a day, 99.9 % uptime, < 5 min recovery):
/// each session's view reports every objective against its default
/// target; a fresh session meets them, with no recovery measured yet.
#[test]
fn seed004_targets_are_reported_per_session_against_the_seeds_figures() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "[health.key_files]\ninterval = \"500ms\"\n");
    daemon.pair(&sim, "acme", PHONE);
    let files = wait_for("a key-file count", Duration::from_secs(30), || daemon.session("acme")["key_files"].as_u64());
    let o = objectives(&daemon, "acme");
    let target = |k: &str| o[k]["target"].as_f64().unwrap_or_else(|| panic!("{k} has no target: {o}"));
    assert_eq!(
        [
            target("uptime_24h"),
            target("uptime_7d"),
            target("reconnects_24h"),
            target("recovery_last_ms"),
            target("recovery_p95_7d_ms"),
            target("key_files")
        ],
        [0.999, 0.999, 10.0, 300_000.0, 300_000.0, 100.0],
        "{o}"
    );
    assert_eq!((o["reconnects_24h"]["value"].as_f64(), &o["reconnects_24h"]["met"]), (Some(0.0), &json!(true)), "{o}");
    assert_eq!((&o["recovery_last_ms"]["value"], &o["recovery_last_ms"]["met"]), (&Value::Null, &Value::Null), "{o}");
    let shown = o["key_files"]["value"].as_u64().expect("key files");
    assert!(shown.abs_diff(files) <= 5 && o["key_files"]["met"] == true, "{o}");
    let listed = daemon.api("GET", "/api/sessions", None).body;
    assert!(listed[0]["objectives"].is_object(), "{listed}");
}

/// Seed 004, `### Ключевые метрики для отслеживания` 2 (at most 10
/// reconnects a day) with `### 3. Отсутствие мониторинга` (no early
/// warning; the issue: 259 reconnects in 8 days went unnoticed): a session
/// made to reconnect 11 times is over its target and raises exactly one
/// `session.objective` alert for it, not one per reconnect after that. A
/// reconnect here is a restart of the session's browser (its browser
/// killed), as the seed's client re-initialisations were; the restart
/// budget is raised so that it does not give up first. The uptime target
/// is set to 0 so that the outages cannot cross it: the one alert counted
/// is every `session.objective` alert the session raised.
#[test]
fn seed004_target_at_most_10_reconnects_a_day_alerts_once_on_the_11th() {
    let _permit = browser_permit();
    let hooks = Receiver::start();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, &format!("max_restarts = 50\n[objectives]\nuptime = 0\n{}", webhook_config(&hooks)));
    daemon.pair(&sim, "acme", PHONE);
    let objective_alerts = || hooks.received().iter().filter(|r| r.json()["event"] == "session.objective").count();
    for round in 1..=12 {
        let before = daemon.history_states("acme").len();
        kill_browser(&daemon, "acme");
        wait_reconnected(&daemon, "acme", before, Duration::from_secs(60));
        if round == 10 {
            let o = objectives(&daemon, "acme");
            assert_eq!((o["reconnects_24h"]["value"].as_f64(), &o["reconnects_24h"]["met"]), (Some(10.0), &json!(true)), "{o}");
            assert_eq!(objective_alerts(), 0, "an alert at 10 reconnects");
        }
        if round == 11 {
            hooks.wait_for("a session.objective alert", Duration::from_secs(20), |r| {
                r.json()["event"] == "session.objective" && r.json()["detail"]["objective"] == "reconnects_24h"
            });
        }
    }
    let o = objectives(&daemon, "acme");
    assert_eq!((o["reconnects_24h"]["value"].as_f64(), &o["reconnects_24h"]["met"]), (Some(12.0), &json!(false)), "{o}");
    stays("exactly one alert", Duration::from_secs(2), || objective_alerts() == 1);
    let alert = hooks.received().into_iter().find(|r| r.json()["event"] == "session.objective").expect("the alert");
    assert_eq!(alert.json()["detail"]["objective"], "reconnects_24h", "{}", alert.json());
}

/// Seed 004, `### Ключевые метрики для отслеживания` 3 (session uptime:
/// aim for 99.9 %): uptime is the time `CONNECTED` over the time the
/// session was meant to run. After pairing and a network drop, the view's
/// 24 h and 7 d figures match the history's, are under the target, and
/// say so.
#[test]
fn seed004_target_uptime_99_9_percent_is_reported_per_session() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "");
    let device = daemon.pair(&sim, "acme", PHONE);
    let before = daemon.history_states("acme").len();
    sim.device_action(&device, "network-drop", Some(json!({"seconds": 2})));
    wait_reconnected(&daemon, "acme", before, Duration::from_secs(40));
    let asked = now_ms();
    let o = objectives(&daemon, "acme");
    // The expected ratio from the history: CONNECTED time over the time
    // since the session was first started.
    let h = history(&daemon, "acme");
    let start = h.iter().find(|(s, _, _)| s == "STARTING").map(|(_, _, at)| *at).expect("a start");
    let mut up = 0;
    let mut since = None;
    for (state, _, at) in &h {
        match (state.as_str(), since) {
            ("CONNECTED", None) => since = Some(*at),
            (s, Some(from)) if s != "CONNECTED" => {
                up += at - from;
                since = None;
            }
            _ => {}
        }
    }
    up += since.map_or(0, |from| asked - from);
    let expected = up as f64 / (asked - start) as f64;
    for window in ["uptime_24h", "uptime_7d"] {
        let value = o[window]["value"].as_f64().unwrap_or_else(|| panic!("no {window}: {o}"));
        assert!((value - expected).abs() < 0.03, "{window} {value}, expected about {expected}: {o}");
        assert!(value < 0.999);
        assert_eq!((o[window]["target"].as_f64(), &o[window]["met"]), (Some(0.999), &json!(false)), "{o}");
    }
}

/// Seed 004, `### Ключевые метрики для отслеживания` 4 (recovery time:
/// under 5 minutes): the view reports the last recovery (leaving
/// `CONNECTED` not by the operator, to `CONNECTED` again) as the history
/// measures it, and its 7-day p95; an operator's stop and start is not a
/// recovery.
#[test]
fn seed004_target_recovery_time_is_reported_per_session() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "");
    daemon.pair(&sim, "acme", PHONE);
    let before = daemon.history_states("acme").len();
    crash_page(&daemon, "acme");
    wait_reconnected(&daemon, "acme", before, Duration::from_secs(60));
    let h = history(&daemon, "acme");
    let lost = h.iter().skip(before).find(|(s, _, _)| s != "CONNECTED").map(|(_, _, at)| *at).expect("left CONNECTED");
    let back = h.iter().skip(before).find(|(s, _, at)| s == "CONNECTED" && *at >= lost).map(|(_, _, at)| *at).expect("back");
    let o = objectives(&daemon, "acme");
    let last = o["recovery_last_ms"]["value"].as_u64().unwrap_or_else(|| panic!("no recovery: {o}"));
    assert!(last.abs_diff(back - lost) <= 1_000, "reported {last} ms, the history says {} ms", back - lost);
    assert_eq!((o["recovery_last_ms"]["target"].as_f64(), &o["recovery_last_ms"]["met"]), (Some(300_000.0), &json!(true)), "{o}");
    assert_eq!(o["recovery_p95_7d_ms"]["value"].as_u64(), Some(last), "{o}");
    for command in ["stop", "start"] {
        let r = daemon.api("POST", &format!("/api/sessions/acme/{command}"), None);
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    daemon.wait_state("acme", "CONNECTED", Duration::from_secs(60));
    assert_eq!(objectives(&daemon, "acme")["recovery_last_ms"]["value"].as_u64(), Some(last), "an operator's stop counted as a recovery");
}
