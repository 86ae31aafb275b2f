//! whatsapp-web.js 1.34.7, unmodified, against `wasup sim`: the scenarios of
//! `tests/wwebjs/scenarios.js` (pair by QR, `getState()`, `client.info`,
//! every module the library requires, a send with its acks, an incoming
//! message, a photo and a document sent as `MessageMedia` (their SHA-256 in
//! the sim's log), an incoming document downloaded, a restart on the same `LocalAuth` profile, a phone logout),
//! run by Node with Debian's Chromium against a simulator this test starts.
//!
//! Needs Node 20+ and the packages of `tests/wwebjs/package-lock.json`
//! (`bash scripts/deps` runs `npm ci` there).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

/// The scenarios end within their own 240 s watchdog; this is the backstop.
const DEADLINE: Duration = Duration::from_secs(300);

#[test]
fn whatsapp_web_js_runs_unmodified_on_the_simulator() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/wwebjs");
    assert!(
        dir.join("node_modules/whatsapp-web.js/package.json").exists(),
        "whatsapp-web.js is not installed in tests/wwebjs: run `bash scripts/deps` (npm ci)"
    );
    let _permit = common::browser_permit();
    // whatsapp-web.js listens for the history sync (`hasSynced`) only once
    // its injection after the post-scan reload is done; real WhatsApp Web
    // takes seconds to sync, so give the simulator a realistic delay.
    let sim = common::Sim::start(&["--sync-delay", "2s"]);
    let data = tempfile::tempdir().expect("a temp dir for LocalAuth");
    let out = tempfile::NamedTempFile::new().expect("a temp file for the output");
    let mut child = Command::new("node")
        .arg("scenarios.js")
        .current_dir(&dir)
        .env("WASUP_SIM", &sim.base)
        .env("WASUP_WWEBJS_DIR", data.path())
        .stdin(Stdio::null())
        .stdout(out.reopen().expect("the output file").try_clone().map(Stdio::from).expect("stdout"))
        .stderr(out.reopen().map(Stdio::from).expect("stderr"))
        .spawn()
        .expect("start node (Node 20+ must be installed)");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break Some(status);
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = std::fs::read_to_string(out.path()).unwrap_or_default();
    println!("{output}");
    let passed = output.lines().filter(|l| l.starts_with("ok ")).count();
    assert!(status.is_some_and(|s| s.success()), "the whatsapp-web.js scenarios failed (exit {status:?}):\n{output}");
    assert_eq!(passed, 9, "every scenario reports ok:\n{output}");
}
