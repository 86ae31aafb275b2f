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
    // The bench starts a server of its own.
    if !common::postgres_available("cluster bench") {
        return;
    }
    let out = Command::new(BIN)
        .args(["bench", "--cluster", "--cluster-sessions", "30", "--lease-ttl", "10s", "--db-window", "3s", "--api-requests", "10"])
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
    // Each node may run 15 (= 30 / (3 - 1)), and takes up to its fair
    // share while all three are live; a node whose heartbeat a loaded
    // machine delayed past the TTL is left out of one round, so the split
    // is only bounded here (the placement unit tests pin it exactly).
    let split = |text: &str, after: &str| -> Vec<(String, u32)> {
        let part = text.split(after).nth(1).unwrap_or_default();
        let part = part.split([';', ')']).next().unwrap_or_default();
        part.split(", ")
            .filter_map(|p| Some((p.split_whitespace().next()?.to_string(), p.split_whitespace().nth(1)?.parse().ok()?)))
            .collect()
    };
    let placed = row("cluster placement, 30 sessions on 3 nodes");
    let by_node = split(&placed, "after creation (");
    assert!(placed.contains("all CONNECTED") && by_node.len() == 3, "every node runs sessions: {placed}");
    assert!(by_node.iter().all(|(_, n)| (1..=15).contains(n)), "within max_sessions: {placed}");
    assert_eq!(by_node.iter().map(|(_, n)| n).sum::<u32>(), 30, "{placed}");
    let db = row("DB statements per idle session");
    assert!(db.contains("/s (all: "), "{db}");
    row("API read GET /api/sessions/{name}");
    row("API send POST …/messages");
    let failover = row("failover of a SIGKILLed node's");
    let victims = by_node.iter().find(|(node, _)| node == "node-a").map(|(_, n)| *n).unwrap_or(0);
    assert!(failover.contains(&format!("node's {victims} sessions")), "node-a's sessions moved: {failover}");
    assert!(failover.contains(" 0 SCAN_QR"), "no QR after a failover: {failover}");
    let survivors = split(&failover, "now ");
    assert!(!survivors.iter().any(|(node, _)| node == "node-a"), "the killed node runs nothing: {failover}");
    assert_eq!(survivors.iter().map(|(_, n)| n).sum::<u32>(), 30, "every session runs on a survivor: {failover}");
}
