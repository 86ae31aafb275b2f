//! A full disk mid-campaign, with real Chromium and the simulator: the
//! store's filesystem (a small tmpfs mounted for the test) fills up, the
//! campaign pauses with `store_error`, `/health` says `degraded`, nothing
//! is sent meanwhile; space is freed, the store is reopened, the campaign
//! resumes and completes, and every recipient is in the simulator's log
//! exactly once.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// A tmpfs mounted at a path for the test's life.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None` where mounting is not allowed (not root).
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at.to_path_buf()))
    }

    /// Fills it with one file; returns the file's path.
    fn fill(&self) -> PathBuf {
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let mut small = [0u8; 512];
        while f.write_all(&small).is_ok() {
            small[0] = small[0].wrapping_add(1);
        }
        let _ = f.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_pauses_the_campaign_and_no_recipient_is_sent_twice() {
    let probe = tempfile::tempdir().unwrap();
    if Tmpfs::mount(&probe.path().join("m"), "1m").is_none() {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root); the full-disk scenario did not run");
        return;
    }
    let _permit = browser_permit();
    let sim = Sim::start(&[]);
    let mut mounted = None;
    // Only the store's directory is on the small filesystem: what is under
    // test is the store; Chromium's profile stays on the big disk.
    let hooks = Receiver::start();
    let alerts =
        format!("[[alerts.webhooks]]\nurl = \"{}/hook\"\nsecret = \"hook-secret\"\n[alerts]\nretry_base = \"100ms\"\n", hooks.base);
    let daemon = Daemon::start_full(&sim, &alerts, &[], |state| {
        mounted = Tmpfs::mount(&state.join("db"), "24m");
    });
    let fs = mounted.expect("mounted the store's tmpfs");
    let device = daemon.pair(&sim, "acme", "4915112345678");
    let to = numbers(8, 70_000_000);
    let recipients: Vec<Value> = to.iter().map(|p| json!({"phone": format!("+{p}")})).collect();
    let id = daemon.campaign(json!({
        "name": "disk", "session": "acme", "template": "Hello!", "recipients": recipients,
        "pacing": {"min_delay": "300ms", "max_delay": "500ms"}, "start": true,
    }));
    daemon.wait_sent(&id, 2, Duration::from_secs(60));

    let filler = fs.fill();
    store_failure_stops_sends(&daemon, &sim, &device);
    let during = deliveries(&sim, &device).values().sum::<usize>();
    let paused = daemon.log().contains("store_error");
    assert!(paused, "the campaign did not pause with store_error:\n{}", daemon.log());

    let alert = hooks.wait_for("a store.failing alert", Duration::from_secs(30), |r| r.json()["event"] == "store.failing");
    assert!(alert.json()["message"].as_str().unwrap().contains("No space left"), "{:?}", alert.json());
    // An operator command that cannot be recorded is refused and changes
    // nothing (else a restart would undo what the operator was told).
    let stop = daemon.api("POST", "/api/sessions/acme/stop", None);
    assert_eq!(stop.status, 503, "{:?}", stop.body);
    assert!(stop.body["error"].as_str().is_some_and(|e| !e.is_empty()), "{:?}", stop.body);
    assert_eq!(daemon.api("GET", "/api/sessions/acme", None).body["state"], "CONNECTED");

    std::fs::remove_file(filler).unwrap();
    wait_for("/health ok again", Duration::from_secs(30), || (health(&daemon).0 == 200).then_some(()));
    let v = daemon.wait_campaign(&id, "COMPLETED", Duration::from_secs(90));
    assert_eq!(v["counts"]["SENT"], 8, "{v}");
    let log = deliveries(&sim, &device);
    for p in &to {
        assert_eq!(log.get(&format!("{p}@c.us")), Some(&1), "{p} not delivered exactly once: {log:?}");
    }
    assert_eq!(log.values().sum::<usize>(), 8, "{log:?}");
    assert!(during < 8, "the disk filled too late to test anything ({during} sent)");
    let history = daemon.api("GET", "/api/sessions/acme", None);
    assert_eq!(history.body["state"], "CONNECTED", "{:?}", history.body);
    hooks.wait_for("a store.recovered alert", Duration::from_secs(30), |r| r.json()["event"] == "store.recovered");
}
