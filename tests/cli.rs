//! The CLI against a running daemon: output, exit codes, one-line errors.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::*;

fn wasup(daemon: &Daemon, token: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .args(["--api", &daemon.base, "--token", token, "--config", "/nonexistent/wasup.toml"])
        .env_remove("WASUP_TOKEN")
        .env_remove("WASUP_API")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Errors are one line on stderr and exit code 1; lists are tables.
#[test]
fn session_commands_print_tables_and_fail_with_one_clear_line() {
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "");
    let tok = daemon.token.clone();
    let out = wasup(&daemon, &tok, &["session", "list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("NAME"), "{}", text(&out.stdout));

    let out = wasup(&daemon, &tok, &["session", "create", "acme", "--no-start"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = wasup(&daemon, &tok, &["session", "list"]);
    let listing = text(&out.stdout);
    assert!(listing.lines().any(|l| l.starts_with("acme") && l.contains("STOPPED")), "{listing}");

    for (args, token, needle) in [
        (vec!["session", "start", "nope"], tok.as_str(), "HTTP 404: no session named \"nope\""),
        (vec!["session", "list"], "wrong-token", "HTTP 401: invalid bearer token"),
        (vec!["qr", "acme"], tok.as_str(), "HTTP 409"),
        (vec!["session", "create", "../x"], tok.as_str(), "HTTP 400: invalid session name"),
    ] {
        let out = wasup(&daemon, token, &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: not one line: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let out =
        Command::new(BIN).args(["status", "--api", "http://127.0.0.1:9", "--token", "x", "--config", "/nonexistent"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot reach the daemon"), "{}", text(&out.stderr));
}

/// `wasup qr` draws a code; a campaign created from a CSV file is watched
/// to its end.
#[test]
fn qr_draws_a_code_and_a_campaign_is_watched_to_completion() {
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let daemon = Daemon::start(&sim, "");
    let tok = daemon.token.clone();
    let out = wasup(&daemon, &tok, &["session", "create", "acme"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    daemon.wait_state("acme", "SCAN_QR", Duration::from_secs(60));
    let out = wasup(&daemon, &tok, &["qr", "acme"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let drawn = text(&out.stdout);
    assert!(drawn.lines().filter(|l| l.contains('█') || l.contains('▀') || l.contains('▄')).count() > 20, "{drawn}");

    sim.scan(&daemon.qr("acme"), "4915112345678");
    daemon.wait_state("acme", "CONNECTED", Duration::from_secs(60));
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("r.csv");
    std::fs::write(&csv, "phone,name\n+4915123456789,Ana\n0151 23456780,Ben\n").unwrap();
    let out = wasup(
        &daemon,
        &tok,
        &[
            "campaign",
            "create",
            "--session",
            "acme",
            "--template",
            "Hi {{ name }}",
            "--csv",
            csv.to_str().unwrap(),
            "--min-delay",
            "100ms",
            "--max-delay",
            "200ms",
            "--default-country",
            "DE",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let created = text(&out.stdout);
    let id = created.split_whitespace().nth(2).unwrap().to_string();
    assert!(id.starts_with("cmp_"), "{created}");
    let out = wasup(&daemon, &tok, &["campaign", "watch", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("COMPLETED: 2 sent"), "{}", text(&out.stdout));
    let out = wasup(&daemon, &tok, &["status"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("CONNECTED"), "{}", text(&out.stdout));
}
