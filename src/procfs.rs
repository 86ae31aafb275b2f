//! Reading process facts from `/proc` (Linux): resident and proportional
//! memory of a process tree, and which processes use a browser profile; and
//! giving the heap's free pages back.

use std::collections::HashMap;
use std::path::Path;

/// Resident set size of one process, in bytes (`VmRSS` of
/// `/proc/<pid>/status`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    kib_field(&status, "VmRSS:")
}

/// Proportional set size of one process, in bytes (`Pss` of
/// `/proc/<pid>/smaps_rollup`): shared pages are divided among the processes
/// that share them, so the PSS of a tree adds up without double counting.
pub fn pss_bytes(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    kib_field(&rollup, "Pss:")
}

fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU time a process has used (user + system), from `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32) -> Option<std::time::Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line, in clock ticks.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as u64 } else { 100 };
    Some(std::time::Duration::from_millis((utime + stime) * 1000 / ticks))
}

/// `pid` and all its descendants.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(p) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
            // The command name is in parentheses and may contain spaces.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { continue };
            if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse::<u32>().ok()) {
                children.entry(ppid).or_default().push(p);
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        if let Some(c) = children.get(&out[i]) {
            out.extend(c);
        }
        i += 1;
    }
    out
}

/// A process whose command line names a browser profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProfileProcess {
    pub pid: u32,
    /// The browser's main process (its children have a `--type=` flag).
    pub main: bool,
}

/// Every process whose command line has `--user-data-dir=<profile>`.
pub fn profile_processes(profile: &Path) -> Vec<ProfileProcess> {
    let needle = format!("--user-data-dir={}", profile.display());
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let mut args = cmdline.split(|b| *b == 0);
        if args.clone().any(|a| a == needle.as_bytes()) {
            found.push(ProfileProcess { pid, main: !args.any(|a| a.starts_with(b"--type=")) });
        }
    }
    found
}

/// The browser's main process on `profile`.
pub fn browser_pid(profile: &Path) -> Option<u32> {
    profile_processes(profile).into_iter().find(|p| p.main).map(|p| p.pid)
}

/// PSS of the browser's whole process tree on `profile`, in bytes.
pub fn browser_pss_bytes(profile: &Path) -> Option<u64> {
    let main = browser_pid(profile)?;
    Some(tree(main).into_iter().filter_map(pss_bytes).sum())
}

/// Gives the heap's free pages back to the kernel (glibc's `malloc_trim`),
/// after work that briefly held hundreds of MB (a large upload's check, a
/// large campaign's write), so the daemon's RSS falls back.
pub fn release_free_memory() {
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn own_memory_is_readable() {
        let me = std::process::id();
        assert!(super::rss_bytes(me).unwrap() > 0);
        assert!(super::pss_bytes(me).unwrap() > 0);
        assert_eq!(super::tree(me)[0], me);
        let before = super::cpu_time(me).unwrap();
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0 && super::cpu_time(me).unwrap() >= before);
    }
}
