//! How the page's events reach the daemon (`whatsapp.events`): pushed over
//! WebDriver BiDi by default. What is in flight when WhatsApp Web reloads
//! itself arrives once; a BiDi connection that drops is an end of its own,
//! restarted like the others.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const PHONE: &str = "4915112345678";
const CONTACT: &str = "4915199990000";

fn logins(sim: &Sim, device: &str) -> u64 {
    sim.devices().into_iter().find(|d| d["device"] == device).and_then(|d| d["logins"].as_u64()).unwrap_or(0)
}

fn count(events: &std::sync::Mutex<Vec<Value>>, pred: impl Fn(&Value) -> bool) -> usize {
    events.lock().unwrap().iter().filter(|e| pred(e)).count()
}

/// A paired session `acme` whose page pushes its events, on a daemon with
/// `whatsapp` lines added to its `[whatsapp]` table; `None` when the suite
/// runs polled (`WASUP_TEST_EVENTS=poll`: nothing is pushed, so these
/// scenarios do not apply).
fn pushing(whatsapp: &str) -> Option<(BrowserPermit, Sim, Daemon)> {
    if std::env::var("WASUP_TEST_EVENTS").is_ok_and(|m| m == "poll") {
        return None;
    }
    let permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start_tuned(&sim, whatsapp, "");
    daemon.pair(&sim, "acme", PHONE);
    assert_eq!(daemon.session("acme")["events"], "bidi");
    Some((permit, sim, daemon))
}

/// Injects the debug-only page fault `kind` into `acme` (202 expected);
/// whether it could be made.
fn fault(daemon: &Daemon, kind: &str) -> bool {
    let r = daemon.api("POST", &format!("/api/sessions/acme/_fault/{kind}"), None);
    assert_eq!(r.status, 202, "{kind}: {:?}", r.body);
    r.body["done"].as_bool().unwrap_or_else(|| panic!("{kind}: no done in {:?}", r.body))
}

/// A text through the API is sent and acked by the server.
fn sends(daemon: &Daemon, text: &str) {
    let r = daemon.api("POST", "/api/sessions/acme/messages", Some(json!({"to": format!("+{CONTACT}"), "text": text})));
    assert_eq!((r.status, &r.body["ack"]), (201, &json!("SERVER")), "{:?}", r.body);
}

/// The page reloads itself (a new WhatsApp Web version) right after an ack
/// and a contact's message arrived, then the phone logs the device out,
/// which navigates the page again. The ack, the message and the logout each
/// come out once (the adapter of each new document pushes again what the
/// previous one had stored), and nothing is restarted.
#[test]
fn what_is_in_flight_across_a_reload_arrives_once() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "");
    let device = daemon.pair(&sim, "acme", PHONE);
    let expected_mode = std::env::var("WASUP_TEST_EVENTS").unwrap_or_else(|_| "bidi".into());
    assert_eq!(daemon.session("acme")["events"], expected_mode.as_str());
    let stream = collect_events(&daemon, "acme");

    // A campaign that sends its first message and then waits a minute: it
    // is still running when that message's ack comes.
    let campaign = daemon.campaign(json!({
        "name": "reload", "session": "acme", "template": "hello",
        "recipients": [{"phone": "+4915120000001"}, {"phone": "+4915120000002"}],
        "pacing": {"min_delay": "60s", "max_delay": "60s"}, "start": true,
    }));
    daemon.wait_sent(&campaign, 1, Duration::from_secs(60));
    let message_id = daemon.recipients(&campaign)[0]["message_id"].as_str().unwrap().to_string();
    let before = logins(&sim, &device);

    // Back to back: the frames reach the page in this order.
    sim.device_action(&device, "ack", Some(json!({"id": message_id, "ack": "READ"})));
    let r =
        sim.phone("POST", &format!("/_phone/devices/{device}/incoming"), Some(json!({"from": format!("+{CONTACT}"), "body": "hi there"})));
    assert_eq!(r.status, 200, "{:?}", r.body);
    let incoming = r.body["id"].as_str().unwrap().to_string();
    sim.device_action(&device, "reload", None);

    wait_for("the reloaded page to log in again", Duration::from_secs(30), || (logins(&sim, &device) > before).then_some(()));
    wait_for("ack READ on the recipient", Duration::from_secs(20), || {
        daemon.recipients(&campaign).iter().any(|r| r["ack"] == "READ").then_some(())
    });
    wait_for("message.received", Duration::from_secs(20), || {
        (count(&stream, |e| e["event"] == "message.received" && e["detail"]["id"] == incoming.as_str()) > 0).then_some(())
    });
    daemon.wait_state("acme", "CONNECTED", Duration::from_secs(30));

    // The phone logs the device out: the page queues the logout and
    // navigates to `?post_logout=1`.
    sim.device_action(&device, "logout", None);
    daemon.wait_state("acme", "SCAN_QR", Duration::from_secs(60));

    let acks =
        count(&stream, |e| e["event"] == "message.ack" && e["detail"]["message_id"] == message_id.as_str() && e["detail"]["ack"] == "READ");
    assert_eq!(acks, 1, "the READ ack");
    let received = count(&stream, |e| e["event"] == "message.received" && e["detail"]["id"] == incoming.as_str());
    assert_eq!(received, 1, "the contact's message");
    let states = daemon.history_states("acme");
    assert_eq!(states.iter().filter(|s| *s == "LOGGED_OUT(phone_logout)").count(), 1, "{states:?}");
    // The reloaded page connects again (`OPENING`, then `CONNECTED`), which
    // may show as RECONNECTING(page_reconnecting); no run ended before the
    // logout.
    let logout = states.iter().position(|s| s == "LOGGED_OUT(phone_logout)").unwrap();
    assert!(states[..logout].iter().all(|s| !s.starts_with("RECONNECTING") || s == "RECONNECTING(page_reconnecting)"), "{states:?}");
    assert!(events(&daemon, "acme", "session.restart_scheduled").is_empty());
}

/// The BiDi connection alone drops (browser and chromedriver still answer):
/// the session's run ends with `bidi_lost`, it is restarted with backoff on
/// the same profile and comes back pushing its events, without a QR.
#[test]
fn a_dropped_bidi_connection_is_detected_and_recovered() {
    let Some((_permit, sim, daemon)) = pushing("") else { return };

    assert!(fault(&daemon, "bidi-drop"), "the bidi-drop fault was not made");
    wait_for("RECONNECTING(bidi_lost)", Duration::from_secs(30), || {
        daemon.history_states("acme").iter().any(|s| s == "RECONNECTING(bidi_lost)").then_some(())
    });
    let view = daemon.wait_state("acme", "CONNECTED", Duration::from_secs(60));
    assert_eq!((&view["attempt"], &view["events"]), (&json!(1), &json!("bidi")), "{view}");
    assert_eq!(sim.devices().len(), 1, "a dropped connection must not link a new device");
    let states = daemon.history_states("acme");
    let lost = states.iter().position(|s| s == "RECONNECTING(bidi_lost)").unwrap();
    assert!(!states[lost..].iter().any(|s| s.starts_with("SCAN_QR") || s.starts_with("LOGGED_OUT")), "{states:?}");

    // Sends work through the new connection, their acks pushed.
    sends(&daemon, "still here");
}

/// A renderer of another tab in the session's browser crashes (one the page
/// opened, say for a link): the crash is pushed like the page's own, but it
/// names another tab's CDP session, so the page's run goes on. No restart,
/// no `page_crashed`, and sends still work.
#[test]
fn a_crash_in_another_tab_leaves_the_session_alone() {
    let Some((_permit, _sim, daemon)) = pushing("") else { return };

    assert!(fault(&daemon, "other-tab-crash"), "the other-tab-crash fault was not made");
    wait_for("the other tab's crash to be judged", Duration::from_secs(20), || {
        daemon.log().contains("a renderer of another tab in the session's browser crashed").then_some(())
    });

    // Past the next classic check (whatsapp.check_interval, 5 s), which
    // would notice a page that went with the other tab.
    stays("CONNECTED with no restart", Duration::from_secs(6), || {
        let view = daemon.session("acme");
        view["state"] == "CONNECTED" && view["attempt"] == 0
    });
    let states = daemon.history_states("acme");
    assert!(!states.iter().any(|s| s.starts_with("RECONNECTING")), "{states:?}");
    assert!(events(&daemon, "acme", "session.restart_scheduled").is_empty());
    sends(&daemon, "still here");
}

/// The page's own renderer crashes alone (chromedriver's BiDi mapper lives
/// on): the crash is pushed and ends the run as `page_crashed` at once, from
/// the pushed event (the classic check would have reported it otherwise,
/// up to `whatsapp.check_interval` later); the session comes back without
/// a QR.
#[test]
fn the_pages_own_renderer_crash_is_pushed_and_restarted() {
    let Some((_permit, sim, daemon)) = pushing("") else { return };

    assert!(fault(&daemon, "own-tab-crash"), "the own-tab-crash fault was not made");
    wait_for("RECONNECTING(page_crashed)", Duration::from_secs(30), || {
        daemon.history_states("acme").iter().any(|s| s == "RECONNECTING(page_crashed)").then_some(())
    });
    assert!(daemon.log().contains("the renderer crashed (Inspector.targetCrashed)"), "the end did not come from the pushed crash");
    let view = daemon.wait_state("acme", "CONNECTED", Duration::from_secs(60));
    assert_eq!((&view["attempt"], &view["events"]), (&json!(1), &json!("bidi")), "{view}");
    assert_eq!(sim.devices().len(), 1, "a crash must not link a new device");
}

/// A session whose BiDi connection keeps dropping (`bidi_lost`) polls its
/// page from the run after the `whatsapp.bidi_fallback_after`-th drop, with
/// one `session.health` event (`bidi_fallback`), and keeps working; an
/// operator's restart tries pushed events again.
#[test]
fn repeated_bidi_losses_fall_back_to_polling_until_an_operator_restart() {
    let Some((_permit, sim, daemon)) = pushing("bidi_fallback_after = 2") else { return };

    for drop in 1..=2 {
        assert!(fault(&daemon, "bidi-drop"), "drop {drop} was not made");
        wait_for("RECONNECTING(bidi_lost)", Duration::from_secs(30), || {
            (daemon.history_states("acme").iter().filter(|s| *s == "RECONNECTING(bidi_lost)").count() == drop).then_some(())
        });
        daemon.wait_state("acme", "CONNECTED", Duration::from_secs(60));
    }
    let view = daemon.session("acme");
    assert_eq!((&view["attempt"], &view["events"]), (&json!(2), &json!("poll")), "{view}");
    let fallbacks = events(&daemon, "acme", "session.health");
    assert_eq!(fallbacks.len(), 1, "{fallbacks:?}");
    assert_eq!(fallbacks[0]["reason"], "bidi_fallback", "{fallbacks:?}");
    assert_eq!((&fallbacks[0]["detail"]["bidi_lost"], &fallbacks[0]["detail"]["events"]), (&json!(2), &json!("poll")));
    assert_eq!(sim.devices().len(), 1, "no new device");

    // Polled, the session still sends and hears its acks.
    sends(&daemon, "polled");
    // With nothing to drop, the fault says so and changes nothing.
    assert!(!fault(&daemon, "bidi-drop"), "a polled page has no BiDi connection to drop");

    // The operator's restart tries BiDi again.
    let r = daemon.api("POST", "/api/sessions/acme/restart", None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    let view = daemon.wait_state("acme", "CONNECTED", Duration::from_secs(60));
    assert_eq!(view["events"], "bidi", "{view}");
}
