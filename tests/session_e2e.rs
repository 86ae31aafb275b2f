//! One real session end to end: the daemon drives real Chromium through
//! chromedriver against the simulator; the test plays the operator (HTTP
//! API) and the phone (the sim's control API).

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const PHONE: &str = "4915112345678";

/// Pair by QR: the session reaches CONNECTED and `me` is the phone's number.
/// Send a text: the sim's log holds exactly that text to that chat id, once.
/// The phone logs the device out: LOGGED_OUT, the daemon keeps serving, and
/// a new QR is offered.
#[test]
fn pair_send_and_phone_logout() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "");
    let device = daemon.pair(&sim, "acme", PHONE);

    let view = daemon.session("acme");
    assert_eq!(view["me"]["wid"], format!("{PHONE}@c.us"), "{view}");
    assert_eq!(view["me"]["pushname"], "Acme");

    let r = daemon.api(
        "POST",
        "/api/sessions/acme/messages",
        Some(json!({"to": "+49 151 23456789", "text": "Hallo Ana, your order shipped."})),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["to"], "4915123456789@c.us");
    let id = r.body["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("3EB0") && id.len() == 20, "{id}");
    assert!(["SERVER", "DEVICE", "READ"].contains(&r.body["ack"].as_str().unwrap()), "{:?}", r.body);

    let log = sim.messages(&device);
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["id"], id.as_str());
    assert_eq!(log[0]["to"], "4915123456789@c.us");
    assert_eq!(log[0]["body"], "Hallo Ana, your order shipped.");

    let old_qr_free = daemon.api("GET", "/api/sessions/acme/qr?format=raw", None);
    assert_eq!(old_qr_free.status, 409, "no QR while connected: {:?}", old_qr_free.body);

    // The phone logs the device out.
    let r = sim.phone("POST", &format!("/_phone/devices/{device}/logout"), None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    wait_for("LOGGED_OUT in the history", Duration::from_secs(30), || {
        daemon.history_states("acme").iter().any(|s| s == "LOGGED_OUT(phone_logout)").then_some(())
    });
    let view = daemon.wait_state("acme", "SCAN_QR", Duration::from_secs(60));
    assert!(view["me"].is_null(), "credentials are void: {view}");
    let png = daemon.api("GET", "/api/sessions/acme/qr", None);
    assert_eq!(png.status, 200);
    assert_eq!(png.content_type, "image/png");
    assert!(png.bytes.starts_with(b"\x89PNG"));
    let svg = daemon.api("GET", "/api/sessions/acme/qr?format=svg", None);
    assert_eq!(svg.content_type, "image/svg+xml");

    // The new QR belongs to a fresh pairing: scanning it links a new device.
    let new_device = sim.scan(&daemon.qr("acme"), PHONE);
    assert_ne!(new_device, device);
    daemon.wait_state("acme", "CONNECTED", Duration::from_secs(60));

    let health = request("GET", &format!("{}/health", daemon.base), None, None, "");
    assert_eq!(health.status, 200);
    // Secrets stay out of the log: neither the token nor a QR string.
    let log = daemon.log();
    assert!(!log.contains(&daemon.token), "token in the log");
    assert!(!log.contains(",WEB"), "QR string in the log");
}

/// Stop the daemon, start it again: the session is CONNECTED again without
/// a new QR; a stopped session stays stopped.
#[test]
fn a_restarted_daemon_reconnects_without_a_qr() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let mut daemon = Daemon::start(&sim, "");
    let device = daemon.pair(&sim, "acme", PHONE);
    let r = daemon.api("POST", "/api/sessions", Some(json!({"name": "idle", "start": false})));
    assert_eq!(r.status, 201, "{:?}", r.body);

    assert!(daemon.stop(), "daemon did not exit on SIGTERM");
    daemon.restart();
    let view = daemon.wait_state("acme", "CONNECTED", Duration::from_secs(60));
    assert_eq!(view["me"]["wid"], format!("{PHONE}@c.us"));
    let states = daemon.history_states("acme");
    let stopped_at =
        states.iter().rposition(|s| s == "STOPPED(daemon_shutdown)").unwrap_or_else(|| panic!("no shutdown recorded: {states:?}"));
    let since_restart = &states[stopped_at..];
    assert!(
        !since_restart.iter().any(|s| s.starts_with("SCAN_QR") || s.starts_with("LOGGED_OUT")),
        "asked for a QR after restart: {since_restart:?}"
    );
    // Same linked device, still one device at the phone.
    let devices = sim.devices();
    assert_eq!(devices.len(), 1, "{devices:?}");
    assert_eq!(devices[0]["device"], device.as_str());
    assert_eq!(daemon.session("idle")["state"], "STOPPED");

    // It can still send after the restart.
    let r = daemon.api("POST", "/api/sessions/acme/messages", Some(json!({"to": "4915123456789@c.us", "text": "after restart"})));
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(sim.messages(&device).len(), 1);
}

/// WhatsApp revokes the device (`device_removed`): the session is logged out
/// for good (no retry with the old credentials) and a fresh QR is offered.
#[test]
fn device_removed_offers_a_fresh_qr() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "");
    let device = daemon.pair(&sim, "acme", PHONE);
    let r = sim.phone("POST", &format!("/_phone/devices/{device}/device-removed"), None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    wait_for("LOGGED_OUT(device_removed)", Duration::from_secs(30), || {
        daemon.history_states("acme").iter().any(|s| s == "LOGGED_OUT(device_removed)").then_some(())
    });
    daemon.wait_state("acme", "SCAN_QR", Duration::from_secs(60));
    // The profile was wiped: the old credentials are gone from disk too.
    let states = daemon.history_states("acme");
    assert!(!states.iter().any(|s| s.starts_with("RECONNECTING")), "retried revoked credentials: {states:?}");
}

fn children_of(pid: u32) -> Vec<u32> {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) else { return Vec::new() };
    text.split_whitespace().filter_map(|p| p.parse().ok()).collect()
}

/// The browser is killed with SIGKILL ("Session closed"), then chromedriver
/// is: each time the daemon keeps serving and the session comes back on its
/// profile, without a QR, and can send again.
#[test]
fn killed_browser_and_chromedriver_are_healed_without_a_qr() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let mut daemon = Daemon::start(&sim, "");
    let device = daemon.pair(&sim, "acme", PHONE);
    let profile = daemon.state_dir().join("profiles").join("acme");

    let killed = kill_matching(&format!("--user-data-dir={}", profile.display()));
    assert!(killed > 0, "no browser found on the profile");
    wait_for("RECONNECTING(browser_died)", Duration::from_secs(30), || {
        daemon.history_states("acme").iter().any(|s| s.starts_with("RECONNECTING(")).then_some(())
    });
    daemon.wait_state("acme", "CONNECTED", Duration::from_secs(60));

    // chromedriver is the daemon's child; kill it.
    let daemon_pid = daemon.pid();
    let drivers: Vec<u32> = children_of(daemon_pid)
        .into_iter()
        .filter(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.contains("chromedriver")))
        .collect();
    assert_eq!(drivers.len(), 1, "expected one chromedriver child");
    unsafe { libc::kill(drivers[0] as i32, libc::SIGKILL) };
    // The page itself may live on until the session notices the driver is
    // gone; then it restarts on a new chromedriver.
    wait_for("RECONNECTING(driver_died)", Duration::from_secs(30), || {
        daemon.history_states("acme").iter().any(|s| s == "RECONNECTING(driver_died)").then_some(())
    });
    daemon.wait_state("acme", "CONNECTED", Duration::from_secs(60));
    assert!(daemon.is_running());

    let states = daemon.history_states("acme");
    let after_pairing = states.iter().position(|s| s == "CONNECTED").unwrap();
    assert!(
        !states[after_pairing..].iter().any(|s| s.starts_with("SCAN_QR") || s.starts_with("LOGGED_OUT")),
        "asked for a QR after a crash: {states:?}"
    );
    let r = daemon.api("POST", "/api/sessions/acme/messages", Some(json!({"to": "+4915123456789", "text": "still here"})));
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(sim.messages(&device).len(), 1);
    assert_eq!(sim.devices().len(), 1, "a crash must not link a new device");
}
