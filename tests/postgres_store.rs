//! The daemon on the PostgreSQL store (`[store] backend = "postgres"`),
//! with real Chromium against the simulator and a throwaway PostgreSQL
//! ([`wasup::pg_harness::TempPostgres`]): a campaign goes on across a
//! PostgreSQL restart (paused while it is down, `/health` degraded,
//! exactly once in the end) and across a daemon SIGKILL (the session comes
//! back without a QR, the state read back from PostgreSQL); a second daemon
//! with the same `cluster.node` does not start.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use wasup::pg_harness::TempPostgres;

fn store_config(pg: &TempPostgres, node: &str) -> String {
    format!(
        "[store]\nbackend = \"postgres\"\nurl = \"{}\"\ntimeout = \"2s\"\n[cluster]\nnode = \"{node}\"\nadvertise = \"http://127.0.0.1:1\"\n",
        pg.url()
    )
}

#[test]
fn a_postgres_restart_pauses_the_campaign_and_a_daemon_kill_loses_nothing() {
    let Some(mut pg) = postgres("PostgreSQL") else { return };
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let mut daemon = Daemon::start(&sim, &store_config(&pg, "node-a"));
    let device = daemon.pair(&sim, "acme", "4915112345678");
    let to = numbers(8, 71_000_000);
    let recipients: Vec<Value> = to.iter().map(|p| json!({"phone": format!("+{p}")})).collect();
    let id = daemon.campaign(json!({
        "name": "pg", "session": "acme", "template": "Hello!", "recipients": recipients,
        "pacing": {"min_delay": "300ms", "max_delay": "500ms"}, "start": true,
    }));
    daemon.wait_sent(&id, 2, Duration::from_secs(60));

    pg.stop();
    let at_failure = store_failure_stops_sends(&daemon, &sim, &device);
    assert!(daemon.log().contains("store_error"), "the campaign did not pause with store_error:\n{}", daemon.log());
    assert!(daemon.is_running(), "the daemon must outlive its database");

    pg.start_server().expect("PostgreSQL starts again");
    wait_for("/health ok again", Duration::from_secs(30), || (health(&daemon).0 == 200).then_some(()));
    daemon.wait_sent(&id, at_failure as u64 + 2, Duration::from_secs(60));

    // SIGKILL mid-campaign: what the new daemon knows comes from PostgreSQL.
    daemon.kill();
    daemon.start_again();
    daemon.wait_state("acme", "CONNECTED", Duration::from_secs(60));
    let v = daemon.wait_campaign(&id, "COMPLETED", Duration::from_secs(120));
    assert_eq!(v["counts"]["SENT"], 8, "{v}");
    let log = deliveries(&sim, &device);
    for p in &to {
        assert_eq!(log.get(&format!("{p}@c.us")), Some(&1), "{p} not delivered exactly once: {log:?}");
    }
    assert_eq!(log.values().sum::<usize>(), 8, "{log:?}");
    let states = daemon.history_states("acme");
    let paired = states.iter().position(|s| s == "CONNECTED").expect("paired once");
    assert!(!states[paired..].iter().any(|s| s == "SCAN_QR"), "a restart asked for a QR: {states:?}");
}

#[test]
fn a_second_daemon_with_the_same_node_name_does_not_start() {
    let Some(pg) = postgres("PostgreSQL") else { return };
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, &store_config(&pg, "node-a"));
    assert_eq!(health(&daemon).0, 200);
    let dir = tempfile::tempdir().unwrap();
    let setup = wasup::launch::DaemonSetup::new(dir.path(), &sim.base, &store_config(&pg, "node-a")).unwrap();
    let mut second = std::process::Command::new(env!("CARGO_BIN_EXE_wasup"))
        .args(["serve", "--config"])
        .arg(&setup.config)
        .env("WASUP_TOKEN", "test-token-0123456789")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_for("the second daemon to give up", Duration::from_secs(30), || second.try_wait().unwrap());
    assert!(!status.success(), "a second process of node-a started");
    let mut err = String::new();
    std::io::Read::read_to_string(second.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.contains("another wasup process runs as node \"node-a\""), "{err}");
    assert_eq!(health(&daemon).0, 200, "the first node goes on");
}
