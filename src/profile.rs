//! Browser profiles: one Chromium user-data dir per session under
//! `<profiles dir>/<name>` (`state.profiles_dir`, default
//! `<state.dir>/profiles`), mode 0700, since it holds the linked device's
//! credentials (IndexedDB) and keys.

use std::io;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// `<profiles_dir>/<name>` (`profiles_dir` from
/// [`crate::config::StateConfig::profiles`]). `name` must have passed
/// [`crate::session_state::validate_name`].
pub fn path(profiles_dir: &Path, name: &str) -> PathBuf {
    profiles_dir.join(name)
}

/// Creates the profile dir (and `profiles/`) with mode 0700, and tightens
/// an existing one.
pub fn prepare(profile: &Path) -> io::Result<()> {
    if let Some(parent) = profile.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(parent)?;
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(profile)?;
    std::fs::set_permissions(profile, std::fs::Permissions::from_mode(0o700))
}

/// Deletes the profile (credentials, keys, everything).
pub fn wipe(profile: &Path) -> io::Result<()> {
    kill_browsers(profile);
    match std::fs::remove_dir_all(profile) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Kills every process whose command line uses this profile, so a stale
/// Chromium (left by a killed daemon or chromedriver) cannot hold it: a
/// second browser on a profile in use fails with "user data directory is
/// already in use"; then removes Chromium's `Singleton*` lock files.
/// Returns how many processes were killed.
pub fn kill_browsers(profile: &Path) -> usize {
    let mut killed = 0;
    for process in crate::procfs::profile_processes(profile) {
        // SAFETY: plain kill(2) on a pid read from /proc.
        if unsafe { libc::kill(process.pid as libc::pid_t, libc::SIGKILL) } == 0 {
            killed += 1;
        }
    }
    // Chromium's own lock files would make the next start refuse: left by
    // a browser killed here, or (a profile shared by cluster nodes) by one
    // on a machine that died, which names that host. No browser uses the
    // profile now (on this machine none is left; on others the session's
    // lease rules it out). Harmless if one is missing.
    for lock in ["SingletonLock", "SingletonSocket", "SingletonCookie"] {
        let _ = std::fs::remove_file(profile.join(lock));
    }
    killed
}

/// Files under `dir`, recursively (0 if it does not exist). Symlinks are
/// not followed.
pub fn count_files(dir: &Path) -> u64 {
    let mut count = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(entry.path()),
                Ok(t) if t.is_file() => count += 1,
                _ => {}
            }
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_private_and_wipeable() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(&dir.path().join("profiles"), "acme");
        prepare(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let mode = std::fs::metadata(p.parent().unwrap()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::write(p.join("key"), b"x").unwrap();
        std::fs::create_dir_all(p.join("Default/IndexedDB/db")).unwrap();
        std::fs::write(p.join("Default/IndexedDB/db/1.log"), b"x").unwrap();
        std::fs::write(p.join("Default/IndexedDB/db/2.ldb"), b"x").unwrap();
        assert_eq!(count_files(&p.join("Default/IndexedDB")), 2);
        assert_eq!(count_files(&p), 3);
        assert_eq!(count_files(&p.join("missing")), 0);
        wipe(&p).unwrap();
        assert!(!p.exists());
        wipe(&p).unwrap();
    }

    #[test]
    fn stale_processes_on_a_profile_are_killed() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path(), "stale");
        // `sh -c` keeps its `$0` in its command line, like a browser its
        // flags; `read` blocks without forking (a forked child would briefly
        // carry the same command line).
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("read _")
            .arg(format!("--user-data-dir={}", p.display()))
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The child's command line shows in /proc once its exec is done.
        let needle = format!("--user-data-dir={}", p.display());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !std::fs::read(format!("/proc/{}/cmdline", child.id())).is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == needle.as_bytes())) {
            assert!(std::time::Instant::now() < deadline, "child never showed its command line");
            std::thread::yield_now();
        }
        assert_eq!(kill_browsers(&p), 1);
        let status = child.wait().unwrap();
        assert!(!status.success());
    }
}
