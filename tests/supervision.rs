//! The restart policy against real faults: real Chromium, chromedriver and
//! the simulator. Each scenario asserts the final state, the restart
//! attempts, and that the daemon answered `/health` throughout.

mod common;

use std::time::Duration;

use common::*;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

const PHONE: &str = "4915112345678";

fn webhook_config(receiver: &Receiver) -> String {
    format!("[[alerts.webhooks]]\nurl = \"{}/hook\"\nsecret = \"hook-secret\"\n[alerts]\nretry_base = \"100ms\"\n", receiver.base)
}

fn assert_signed(r: &Received) {
    let sig = r.header("X-Wasup-Signature").expect("signature header");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"hook-secret").unwrap();
    mac.update(&r.body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(sig, expected, "bad signature on {}", String::from_utf8_lossy(&r.body));
}

fn statuses_after_pairing(daemon: &Daemon) -> Vec<String> {
    let states = daemon.history_states("acme");
    let first = states.iter().position(|s| s == "CONNECTED").expect("was connected");
    states[first..].to_vec()
}

/// The renderer dies ("session deleted because of page crash"): the browser
/// is restarted with backoff and the session is back without a QR.
#[test]
fn a_crashed_page_is_restarted_without_a_qr() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "");
    daemon.pair(&sim, "acme", PHONE);
    let watch = HealthWatch::start(&daemon);
    let profile = daemon.state_dir().join("profiles").join("acme");
    let main = wasup::procfs::browser_pid(&profile).expect("browser running");
    let renderers: Vec<u32> = wasup::procfs::tree(main)
        .into_iter()
        .filter(|p| std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains("--type=renderer")))
        .collect();
    assert!(!renderers.is_empty());
    for pid in renderers {
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    wait_for("a restart after the crash", Duration::from_secs(60), || {
        (!events(&daemon, "acme", "session.restart_scheduled").is_empty()).then_some(())
    });
    let view = daemon.wait_state("acme", "CONNECTED", Duration::from_secs(60));
    assert_eq!(view["attempt"], 1, "{view}");
    let after = statuses_after_pairing(&daemon);
    assert!(after.iter().any(|s| s == "RECONNECTING(page_crashed)"), "{after:?}");
    assert!(!after.iter().any(|s| s.starts_with("SCAN_QR")), "{after:?}");
    watch.assert_always_healthy();
}

/// The network drops for 10 s: the page reconnects by itself; the browser is
/// not restarted and no restart is scheduled.
#[test]
fn a_network_drop_heals_without_a_browser_restart() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "");
    let device = daemon.pair(&sim, "acme", PHONE);
    let watch = HealthWatch::start(&daemon);
    let profile = daemon.state_dir().join("profiles").join("acme");
    let browser = wasup::procfs::browser_pid(&profile).expect("browser running");
    let r = sim.phone("POST", &format!("/_phone/devices/{device}/network-drop"), Some(json!({"seconds": 10})));
    assert_eq!(r.status, 200, "{:?}", r.body);
    daemon.wait_state("acme", "RECONNECTING", Duration::from_secs(5));
    let view = daemon.wait_state("acme", "CONNECTED", Duration::from_secs(40));
    assert_eq!(view["attempt"], 0, "{view}");
    assert_eq!(view["restarts_in_window"], 0, "{view}");
    assert!(events(&daemon, "acme", "session.restart_scheduled").is_empty());
    assert_eq!(wasup::procfs::browser_pid(&profile), Some(browser), "the browser was restarted");
    let after = statuses_after_pairing(&daemon);
    assert!(!after.iter().any(|s| s.starts_with("STARTING") || s.starts_with("SCAN_QR")), "{after:?}");
    let r = daemon.api("POST", "/api/sessions/acme/messages", Some(json!({"to": "+4915123456789", "text": "back"})));
    assert_eq!(r.status, 201, "{:?}", r.body);
    watch.assert_always_healthy();
}

/// Phone logout: LOGGED_OUT, an alert, the profile wiped, a new QR.
#[test]
fn phone_logout_wipes_the_profile_and_alerts() {
    let _permit = browser_permit();
    let hooks = Receiver::start();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, &webhook_config(&hooks));
    let device = daemon.pair(&sim, "acme", PHONE);
    let profile = daemon.state_dir().join("profiles").join("acme");
    std::fs::write(profile.join("wasup-test-marker"), b"old credentials live here").unwrap();
    sim.phone("POST", &format!("/_phone/devices/{device}/logout"), None);
    let alert = hooks.wait_for("a LOGGED_OUT alert", Duration::from_secs(30), |r| r.json()["state"] == "LOGGED_OUT");
    assert_signed(&alert);
    assert_eq!(alert.json()["session"], "acme");
    assert_eq!(alert.json()["reason"], "phone_logout");
    daemon.wait_state("acme", "SCAN_QR", Duration::from_secs(60));
    assert!(!profile.join("wasup-test-marker").exists(), "profile not wiped");
    assert!(events(&daemon, "acme", "session.restart_scheduled").is_empty(), "retried a logged-out device");
}

/// The operator's commands as their plans say: stop closes the browser and
/// stays stopped, recover is refused outside FAILED/BLOCKED, and delete
/// answers once the browser is closed and the profile wiped; the name is
/// free again.
#[test]
fn operator_commands_stop_refuse_and_delete() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "");
    let r = daemon.api("POST", "/api/sessions", Some(json!({"name": "acme", "start": true})));
    assert_eq!(r.status, 201, "{:?}", r.body);
    daemon.wait_state("acme", "SCAN_QR", Duration::from_secs(90));
    let profile = daemon.state_dir().join("profiles").join("acme");
    assert!(wasup::procfs::browser_pid(&profile).is_some(), "no browser on the profile");

    let r = daemon.api("POST", "/api/sessions/acme/stop", None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        (r.body["state"].as_str(), r.body["reason"].as_str(), r.body["desired"].as_str()),
        (Some("STOPPED"), Some("operator"), Some("stopped"))
    );
    // Chromium's last processes may take a moment to exit after the close.
    wait_for("the browser to exit", Duration::from_secs(10), || wasup::procfs::browser_pid(&profile).is_none().then_some(()));
    let r = daemon.api("POST", "/api/sessions/acme/recover", None);
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert_eq!(daemon.session("acme")["desired"], "stopped", "a refused command changed the desired state");

    let r = daemon.api("POST", "/api/sessions/acme/start", None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    daemon.wait_state("acme", "SCAN_QR", Duration::from_secs(90));
    std::fs::write(profile.join("wasup-test-marker"), b"credentials").unwrap();
    let r = daemon.api("DELETE", "/api/sessions/acme", None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(!profile.exists(), "the delete answered before the profile was wiped");
    assert_eq!(wasup::procfs::browser_pid(&profile), None, "a browser outlived the delete");
    assert_eq!(daemon.api("GET", "/api/sessions/acme", None).status, 404);
    let r = daemon.api("POST", "/api/sessions", Some(json!({"name": "acme", "start": false})));
    assert_eq!(r.status, 201, "{:?}", r.body);
}

/// Opened elsewhere with `restart.conflict = "stay"`: CONFLICT, and it stays.
#[test]
fn conflict_stays_by_default_and_takes_over_when_configured() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "");
    let device = daemon.pair(&sim, "acme", PHONE);
    sim.phone("POST", &format!("/_phone/devices/{device}/conflict"), None);
    daemon.wait_state("acme", "CONFLICT", Duration::from_secs(10));
    stays("CONFLICT", Duration::from_secs(3), || daemon.session("acme")["state"] == "CONFLICT");
    assert!(events(&daemon, "acme", "session.restart_scheduled").is_empty());
    drop(daemon);

    // Keys without a table header extend the harness's [restart] table.
    let daemon = Daemon::start(&sim, "conflict = \"takeover\"\ntakeover_after = \"1s\"\n");
    let device = daemon.pair(&sim, "acme", "4915199999999");
    sim.phone("POST", &format!("/_phone/devices/{device}/conflict"), None);
    daemon.wait_state("acme", "CONFLICT", Duration::from_secs(10));
    daemon.wait_state("acme", "CONNECTED", Duration::from_secs(20));
}

/// A terms-of-service block: BLOCKED, an alert, and no retries.
#[test]
fn a_ban_blocks_without_retries() {
    let _permit = browser_permit();
    let hooks = Receiver::start();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, &webhook_config(&hooks));
    let device = daemon.pair(&sim, "acme", PHONE);
    let watch = HealthWatch::start(&daemon);
    sim.phone("POST", &format!("/_phone/devices/{device}/ban"), None);
    daemon.wait_state("acme", "BLOCKED", Duration::from_secs(10));
    let alert = hooks.wait_for("a BLOCKED alert", Duration::from_secs(10), |r| r.json()["state"] == "BLOCKED");
    assert_signed(&alert);
    stays("BLOCKED", Duration::from_secs(3), || daemon.session("acme")["state"] == "BLOCKED");
    let view = daemon.session("acme");
    assert_eq!(view["restarts_in_window"], 0, "{view}");
    assert!(events(&daemon, "acme", "session.restart_scheduled").is_empty());
    watch.assert_always_healthy();
}

/// Key files over the threshold: a `session.health` event and one alert.
#[test]
fn key_files_over_the_threshold_raise_an_alert() {
    let _permit = browser_permit();
    let hooks = Receiver::start();
    let sim = Sim::start(&[]);
    let config = format!("[health.key_files]\ninterval = \"500ms\"\nmax = 1\n{}", webhook_config(&hooks));
    let daemon = Daemon::start(&sim, &config);
    daemon.pair(&sim, "acme", PHONE);
    let alert = hooks.wait_for("a key-file alert", Duration::from_secs(30), |r| r.json()["event"] == "session.health");
    assert_signed(&alert);
    let count = alert.json()["detail"]["key_files"].as_u64().unwrap();
    assert!(count > 1, "{count}");
    assert_eq!(alert.json()["detail"]["max"], 1);
    let view = daemon.session("acme");
    assert!(view["key_files"].as_u64().unwrap() > 1, "{view}");
    assert_eq!(events(&daemon, "acme", "session.health").len(), 1, "one event per crossing");
    // Action "alert": the session stays up and is alerted once, not every count.
    assert_eq!(view["state"], "CONNECTED");
    stays("one alert", Duration::from_secs(2), || hooks.received().iter().filter(|r| r.json()["event"] == "session.health").count() == 1);
    drop(daemon);

    // Action "cleanup": the linked session's profile is purged and re-paired
    // once; the fresh, unpaired profile is not purged again.
    let config = "[health.key_files]\ninterval = \"500ms\"\nmax = 1\naction = \"cleanup\"\n";
    let daemon = Daemon::start(&sim, config);
    let r = daemon.api("POST", "/api/sessions", Some(json!({"name": "acme"})));
    assert_eq!(r.status, 201);
    daemon.wait_state("acme", "SCAN_QR", Duration::from_secs(60));
    sim.scan(&daemon.qr("acme"), "4915199999999");
    wait_for("LOGGED_OUT(key_files_cleanup)", Duration::from_secs(30), || {
        daemon.history_states("acme").iter().any(|s| s == "LOGGED_OUT(key_files_cleanup)").then_some(())
    });
    daemon.wait_state("acme", "SCAN_QR", Duration::from_secs(60));
    stays("one cleanup", Duration::from_secs(3), || {
        daemon.history_states("acme").iter().filter(|s| s.starts_with("LOGGED_OUT")).count() == 1
    });
}

/// The browser's memory over the limit: recycled on the same profile,
/// connected again without a QR.
#[test]
fn a_browser_over_its_memory_limit_is_recycled_without_a_qr() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "[health.memory]\ninterval = \"1s\"\nmax = \"20MiB\"\n");
    let device = daemon.pair(&sim, "acme", PHONE);
    wait_for("a memory recycle", Duration::from_secs(30), || {
        let h = events(&daemon, "acme", "session.health");
        h.iter().any(|e| e["reason"] == "memory").then_some(())
    });
    wait_for("RECONNECTING(health_check_failed) then CONNECTED", Duration::from_secs(60), || {
        let after = statuses_after_pairing(&daemon);
        let i = after.iter().position(|s| s == "RECONNECTING(health_check_failed)")?;
        after[i..].iter().any(|s| s == "CONNECTED").then_some(())
    });
    let after = statuses_after_pairing(&daemon);
    assert!(!after.iter().any(|s| s.starts_with("SCAN_QR") || s.starts_with("LOGGED_OUT")), "{after:?}");
    assert_eq!(sim.devices().len(), 1, "recycling must not link a new device");
    let _ = device;
}

/// A session that fails on every start ends FAILED after exactly the
/// budget's restarts, with an alert; `recover` gives it a fresh budget.
#[test]
fn a_session_failing_every_start_ends_failed_after_exactly_the_budget() {
    let _permit = browser_permit();
    let hooks = Receiver::start();
    let sim = Sim::start(&[]);
    let config = format!(
        "max_restarts = 3\nwindow = \"1h\"\n[browser]\nchromium = \"/bin/false\"\n{}[alerts.telegram]\nbot_token = \"123456:SECRET-bot-token\"\nchat_id = \"-10042\"\napi_base = \"{}\"\n",
        webhook_config(&hooks),
        hooks.base
    );
    let daemon = Daemon::start(&sim, &config);
    let watch = HealthWatch::start(&daemon);
    let r = daemon.api("POST", "/api/sessions", Some(json!({"name": "acme"})));
    assert_eq!(r.status, 201);
    let view = daemon.wait_state("acme", "FAILED", Duration::from_secs(60));
    assert_eq!(view["reason"], "restart_budget_spent");
    assert_eq!(events(&daemon, "acme", "session.restart_scheduled").len(), 3);
    let starts = daemon.history_states("acme").iter().filter(|s| s.as_str() == "STARTING").count();
    assert_eq!(starts, 4, "the first start and 3 restarts");
    let alert = hooks.wait_for("a FAILED alert", Duration::from_secs(10), |r| r.json()["state"] == "FAILED");
    assert_signed(&alert);
    let telegram = hooks.wait_for("a Telegram message", Duration::from_secs(10), |r| r.path.ends_with("/sendMessage"));
    assert_eq!(telegram.path, "/bot123456:SECRET-bot-token/sendMessage");
    assert_eq!(telegram.json()["chat_id"], "-10042");
    assert!(telegram.json()["text"].as_str().unwrap().contains("acme is FAILED"), "{:?}", telegram.json());
    assert!(!daemon.log().contains("SECRET-bot-token"), "bot token in the log");
    stays("FAILED", Duration::from_secs(2), || daemon.session("acme")["state"] == "FAILED");
    assert_eq!(events(&daemon, "acme", "session.restart_scheduled").len(), 3, "no restart after FAILED");

    // recover: 409 for a healthy session, clears the budget here.
    let r = daemon.api("POST", "/api/sessions/acme/recover", None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    wait_for("FAILED again after a fresh budget", Duration::from_secs(60), || {
        (events(&daemon, "acme", "session.restart_scheduled").len() == 6 && daemon.session("acme")["state"] == "FAILED").then_some(())
    });
    watch.assert_always_healthy();
}

/// The Session actor panics (a bug): the Supervisor notices its closed
/// mailbox, kills its browser and rebuilds it; back without a QR.
#[test]
fn a_panicked_session_actor_is_rebuilt() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let mut daemon = Daemon::start(&sim, "");
    daemon.pair(&sim, "acme", PHONE);
    let watch = HealthWatch::start(&daemon);
    let r = daemon.api("POST", "/api/sessions/acme/_fault/panic", None);
    assert_eq!(r.status, 202, "{:?}", r.body);
    wait_for("RECONNECTING(actor_died)", Duration::from_secs(10), || {
        daemon.history_states("acme").iter().any(|s| s == "RECONNECTING(actor_died)").then_some(())
    });
    daemon.wait_state("acme", "CONNECTED", Duration::from_secs(60));
    let after = statuses_after_pairing(&daemon);
    assert!(!after.iter().any(|s| s.starts_with("SCAN_QR")), "{after:?}");
    assert!(daemon.is_running());
    assert!(daemon.log().contains("fault injection: session acme panics"));
    watch.assert_always_healthy();
}
