//! `wasup bench --cluster` at a small scale (30 sessions on 3 nodes on the
//! browser test double, a throwaway PostgreSQL): the bench runs end to end,
//! and what it measured holds the cluster's promises. Every session is
//! placed, the nodes share them, and a SIGKILLed node's sessions come back
//! on the others without a QR.

mod common;

use std::process::Command;

use common::BIN;

#[test]
fn the_cluster_bench_places_fails_over_and_prints_every_figure() {
    let Some(pg) = common::postgres("cluster bench") else { return };
    // The bench starts a server of its own.
    drop(pg);
    let out = Command::new(BIN)
        .args(["bench", "--cluster", "--cluster-sessions", "30", "--lease-ttl", "6s", "--db-window", "3s", "--api-requests", "10"])
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the bench failed: {stderr}\n{stdout}");
    let row = |figure: &str| -> String {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {figure}")))
            .unwrap_or_else(|| panic!("no row {figure:?} in\n{stdout}"))
            .to_string()
    };
    let placed = row("cluster placement, 30 sessions on 3 nodes");
    assert!(placed.contains("all CONNECTED") && placed.contains("node-a 10, node-b 10, node-c 10"), "fair placement: {placed}");
    let db = row("DB statements per idle session");
    assert!(db.contains("/s (all: "), "{db}");
    row("API read GET /api/sessions/{name}");
    row("API send POST …/messages");
    let failover = row("failover of a SIGKILLed node's 10 sessions");
    assert!(failover.contains(" 0 SCAN_QR"), "no QR after a failover: {failover}");
    let now = failover.split("now ").nth(1).unwrap_or_default();
    let survivors: u32 =
        now.split(", ").filter_map(|part| part.split_whitespace().nth(1)?.trim_end_matches([')', '|', ' ']).parse::<u32>().ok()).sum();
    assert!(!now.contains("node-a"), "the killed node runs nothing: {failover}");
    assert_eq!(survivors, 30, "every session runs on a survivor: {failover}");
}
