//! Reading process facts from `/proc` (Linux): resident and proportional
//! memory of a process tree, CPU time (and CPU used by a set of processes
//! over a window), which processes use a browser profile and which of a
//! browser's renderers runs the page; and giving the heap's free pages back.

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

/// The fields of `/proc/<pid>/stat` this module reads: parent, start time
/// (clock ticks after boot) and CPU time used (utime + stime, clock ticks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    /// Exited (a zombie not yet reaped by its parent, or dead).
    exited: bool,
    ppid: u32,
    start_ticks: u64,
    cpu_ticks: u64,
}

/// Parses a `/proc/<pid>/stat` line (proc(5)): the fields after the
/// parenthesised command name (which may contain spaces and parentheses)
/// are state, ppid, …, utime (14th field of the line), stime (15th), …,
/// starttime (22nd).
fn parse_stat(stat: &str) -> Option<Stat> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(Stat {
        exited: matches!(fields.first(), Some(&"Z" | &"X" | &"x")),
        ppid: u32::try_from(field(4)?).ok()?,
        cpu_ticks: field(14)? + field(15)?,
        start_ticks: field(22)?,
    })
}

fn read_stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 if it fails).
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

/// `ticks` clock ticks as a duration.
pub fn ticks_to_duration(ticks: u64) -> std::time::Duration {
    std::time::Duration::from_millis(ticks.saturating_mul(1000) / ticks_per_second())
}

/// CPU time a process has used (user + system), from `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32) -> Option<std::time::Duration> {
    read_stat(pid).map(|s| ticks_to_duration(s.cpu_ticks))
}

/// One reading of a process's CPU time. A process is its pid and its start
/// time together, so a pid the kernel reused for another process during a
/// window is not taken for the first one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuReading {
    pub pid: u32,
    /// When it started, clock ticks after boot.
    pub start_ticks: u64,
    /// User + system CPU time used so far, clock ticks.
    pub cpu_ticks: u64,
}

/// Reads `pid`'s CPU time now; `None` if it is gone.
pub fn cpu_reading(pid: u32) -> Option<CpuReading> {
    read_stat(pid).map(|s| CpuReading { pid, start_ticks: s.start_ticks, cpu_ticks: s.cpu_ticks })
}

/// Whether the process `reading` was taken of is still running: its pid
/// exists, with the same start time, and has not exited (a zombie waiting
/// for its parent has).
pub fn is_running(reading: &CpuReading) -> bool {
    read_stat(reading.pid).is_some_and(|s| s.start_ticks == reading.start_ticks && !s.exited)
}

/// CPU used by a set of processes over a window, from readings of the set
/// taken at its start and at its end (see [`cpu_used`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuUse {
    /// Clock ticks.
    pub ticks: u64,
    /// Processes read at the end and not at the start: counted whole (they
    /// started during the window, or joined the set then).
    pub appeared: usize,
    /// Processes read at the start and gone at the end: their time after
    /// the start reading is not counted (the kernel keeps it only in the
    /// parent's `cutime`, which mixes in their time before the window).
    pub vanished: usize,
}

/// CPU used over a window by the processes of `start` and `end` (readings
/// at the window's start and end): the growth of each process in both,
/// plus the whole time of each process only at the end; nothing for one
/// only at the start. A process is matched by pid and start time.
pub fn cpu_used(start: &[CpuReading], end: &[CpuReading]) -> CpuUse {
    let before: HashMap<(u32, u64), u64> = start.iter().map(|r| ((r.pid, r.start_ticks), r.cpu_ticks)).collect();
    let mut used = CpuUse::default();
    for r in end {
        match before.get(&(r.pid, r.start_ticks)) {
            Some(&was) => used.ticks += r.cpu_ticks.saturating_sub(was),
            None => {
                used.ticks += r.cpu_ticks;
                used.appeared += 1;
            }
        }
    }
    let after: std::collections::HashSet<(u32, u64)> = end.iter().map(|r| (r.pid, r.start_ticks)).collect();
    used.vanished = start.iter().filter(|r| !after.contains(&(r.pid, r.start_ticks))).count();
    used
}

/// One process as read from `/proc` by [`scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcEntry {
    pub pid: u32,
    pub ppid: u32,
    /// Its command line, one argument each (empty for kernel threads).
    pub args: Vec<String>,
}

/// Every process now: pid, parent and command line, read from `/proc` in
/// one pass. Processes that exit while it reads are left out.
pub fn scan() -> Vec<ProcEntry> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Some(stat) = read_stat(pid) else { continue };
        let args = std::fs::read(entry.path().join("cmdline"))
            .map(|c| c.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect())
            .unwrap_or_default();
        out.push(ProcEntry { pid, ppid: stat.ppid, args });
    }
    out
}

/// `root` and all its descendants among `procs`, `root` first, parents
/// before children.
pub fn descendants(procs: &[ProcEntry], root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for p in procs {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(c) = children.get(&out[i]) {
            out.extend(c.iter().filter(|&&c| c != root));
        }
        i += 1;
    }
    out
}

/// `pid` and all its descendants.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut procs = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(p) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            if let Some(stat) = read_stat(p) {
                procs.push(ProcEntry { pid: p, ppid: stat.ppid, args: Vec::new() });
            }
        }
    }
    descendants(&procs, pid)
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

/// The browser's main process on `profile` among `procs` (a [`scan`]):
/// the one naming `--user-data-dir=<profile>` without a `--type=` flag.
pub fn browser_main(procs: &[ProcEntry], profile: &Path) -> Option<u32> {
    let needle = format!("--user-data-dir={}", profile.display());
    procs.iter().find(|p| p.args.contains(&needle) && !p.args.iter().any(|a| a.starts_with("--type="))).map(|p| p.pid)
}

/// PSS of the browser's whole process tree on `profile`, in bytes.
pub fn browser_pss_bytes(profile: &Path) -> Option<u64> {
    let main = browser_pid(profile)?;
    Some(tree(main).into_iter().filter_map(pss_bytes).sum())
}

/// What [`page_renderer`] reads of one of a browser's renderer processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RendererFacts {
    pub pid: u32,
    /// Its command line, arguments joined by spaces (a renderer rewrites
    /// its own into one string).
    pub cmdline: String,
    /// Whether it has a font file mapped (`/proc/<pid>/maps`).
    pub maps_a_font: bool,
}

/// The renderer process of the page (the tab WhatsApp Web runs in) of the
/// browser on `profile`, to kill it as a page crash would.
///
/// A browser on this machine (Chromium 156, headless, measured with
/// `/proc` while a session was connected to the simulator) has these
/// renderers, told apart as [`pick_page_renderer`] does:
/// - the browser UI's (the omnibox popup): `--top-chrome-webui`;
/// - chromedriver's BiDi "mapper", a hidden `about:blank` tab, when the
///   session asked for BiDi: renders no text, so maps no font;
/// - the spare renderer Chromium starts ahead of the next navigation, the
///   newest one: has run no page, so maps no font;
/// - the page's, the only other one that has drawn text: it maps the
///   system fonts (`/usr/share/fonts/…`).
///
/// The launch order does not tell them apart: a navigation takes the spare
/// and a new spare is started, so the page's renderer is neither the newest
/// nor the oldest, and the mapper's tab is made before the page navigates.
///
/// Errors: no browser on `profile`, or not exactly one renderer fits (the
/// message lists them).
pub fn page_renderer(profile: &Path) -> Result<u32, String> {
    let main = browser_pid(profile).ok_or_else(|| format!("no browser on {}", profile.display()))?;
    let renderers: Vec<RendererFacts> = tree(main)
        .into_iter()
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if !cmdline.contains("--type=renderer") {
                return None;
            }
            let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
            Some(RendererFacts { pid, cmdline, maps_a_font: maps.lines().any(is_font_mapping) })
        })
        .collect();
    pick_page_renderer(&renderers)
}

/// Whether a `/proc/<pid>/maps` line maps a font file.
fn is_font_mapping(line: &str) -> bool {
    let path = line.split_whitespace().nth(5).unwrap_or("");
    path.contains("/fonts/") || [".ttf", ".otf", ".ttc", ".pfb"].iter().any(|ext| path.ends_with(ext))
}

/// The page's renderer among a browser's `renderers`: the one renderer
/// that is not the browser UI's (`--top-chrome-webui`) nor an extension's
/// (`--extension-process`) and maps a font (see [`page_renderer`]).
///
/// Errors: none or several fit; the message lists every renderer.
pub fn pick_page_renderer(renderers: &[RendererFacts]) -> Result<u32, String> {
    let fits: Vec<u32> = renderers
        .iter()
        .filter(|r| r.maps_a_font && !r.cmdline.contains("--top-chrome-webui") && !r.cmdline.contains("--extension-process"))
        .map(|r| r.pid)
        .collect();
    match fits.as_slice() {
        [one] => Ok(*one),
        _ => Err(format!(
            "{} renderers look like the page's ({:?}) among {:?}",
            fits.len(),
            fits,
            renderers.iter().map(|r| (r.pid, r.maps_a_font)).collect::<Vec<_>>()
        )),
    }
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
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_stat_line_is_read_past_a_command_name_with_spaces() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
        // majflt cmajflt utime stime cutime cstime prio nice threads
        // itrealvalue starttime …
        let line = "42 (a) b (c)) S 7 42 42 0 -1 4194560 100 0 0 0 25 5 3 1 20 0 1 0 123456 1000 50";
        assert_eq!(parse_stat(line), Some(Stat { exited: false, ppid: 7, start_ticks: 123456, cpu_ticks: 30 }));
        let zombie = line.replacen(") S ", ") Z ", 1);
        assert!(parse_stat(&zombie).is_some_and(|s| s.exited));
        assert_eq!(parse_stat("42 (a) S 7"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    fn r(pid: u32, start_ticks: u64, cpu_ticks: u64) -> CpuReading {
        CpuReading { pid, start_ticks, cpu_ticks }
    }

    #[test]
    fn cpu_over_a_window_counts_what_can_be_counted() {
        // 1 grows by 10; 2 vanishes (not counted); 3 appears with 7 (counted
        // whole); pid 4 was reused by another process (start time 9 → 50):
        // the old one vanished, the new one appeared with 2.
        let start = [r(1, 5, 100), r(2, 6, 40), r(4, 9, 500)];
        let end = [r(1, 5, 110), r(3, 70, 7), r(4, 50, 2)];
        assert_eq!(cpu_used(&start, &end), CpuUse { ticks: 19, appeared: 2, vanished: 2 });
        assert_eq!(cpu_used(&start, &start), CpuUse::default());
        assert_eq!(cpu_used(&[], &[]), CpuUse::default());
        // A reading that went down (it cannot, but never underflow).
        assert_eq!(cpu_used(&[r(1, 5, 100)], &[r(1, 5, 90)]).ticks, 0);
    }

    #[test]
    fn descendants_are_the_whole_subtree_and_nothing_else() {
        let p = |pid, ppid| ProcEntry { pid, ppid, args: Vec::new() };
        let procs = [p(1, 0), p(10, 1), p(11, 10), p(12, 10), p(13, 12), p(20, 1), p(21, 20)];
        assert_eq!(descendants(&procs, 10), vec![10, 11, 12, 13]);
        assert_eq!(descendants(&procs, 13), vec![13]);
        assert_eq!(descendants(&procs, 99), vec![99]);
    }

    #[test]
    fn the_browser_main_is_the_profile_process_without_a_type() {
        let p = |pid, args: &[&str]| ProcEntry { pid, ppid: 1, args: args.iter().map(|a| a.to_string()).collect() };
        let procs = [
            p(5, &["chromium", "--type=zygote", "--user-data-dir=/s/profiles/a"]),
            p(6, &["chromium --type=renderer --user-data-dir=/s/profiles/a"]),
            p(7, &["chromium", "--user-data-dir=/s/profiles/ab"]),
            p(8, &["chromium", "--headless", "--user-data-dir=/s/profiles/a"]),
        ];
        assert_eq!(browser_main(&procs, Path::new("/s/profiles/a")), Some(8));
        assert_eq!(browser_main(&procs, Path::new("/s/profiles/ab")), Some(7));
        assert_eq!(browser_main(&procs, Path::new("/s/profiles/c")), None);
    }

    #[test]
    fn the_page_renderer_is_the_one_content_renderer_that_drew_text() {
        let f = |pid, cmdline: &str, maps_a_font| RendererFacts { pid, cmdline: cmdline.into(), maps_a_font };
        let ui = f(5, "chromium --type=renderer --top-chrome-webui --renderer-client-id=5", true);
        let mapper = f(8, "chromium --type=renderer --renderer-client-id=8", false);
        let page = f(9, "chromium --type=renderer --renderer-client-id=9", true);
        let spare = f(10, "chromium --type=renderer --renderer-client-id=10", false);
        assert_eq!(pick_page_renderer(&[ui.clone(), mapper.clone(), page.clone(), spare.clone()]), Ok(9));
        assert_eq!(pick_page_renderer(&[ui.clone(), page.clone(), spare.clone()]), Ok(9));
        assert!(pick_page_renderer(&[ui.clone(), mapper.clone(), spare]).is_err());
        let other_page = f(11, "chromium --type=renderer --renderer-client-id=11", true);
        assert!(pick_page_renderer(&[ui, page, other_page, mapper]).is_err());
        assert!(pick_page_renderer(&[]).is_err());
    }

    #[test]
    fn font_mappings_are_told_from_other_files() {
        assert!(is_font_mapping("7f00-7f10 r--p 00000000 08:01 123 /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"));
        assert!(is_font_mapping("7f00-7f10 r--p 00000000 08:01 123 /home/u/.local/share/x/Noto.otf"));
        assert!(!is_font_mapping("7f00-7f10 r-xp 00000000 08:01 123 /usr/lib/chromium/chromium"));
        assert!(!is_font_mapping("7f00-7f10 rw-p 00000000 00:00 0"));
    }

    #[test]
    fn own_memory_is_readable() {
        let me = std::process::id();
        assert!(rss_bytes(me).unwrap() > 0);
        assert!(pss_bytes(me).unwrap() > 0);
        assert_eq!(tree(me)[0], me);
        assert!(scan().iter().any(|p| p.pid == me && !p.args.is_empty()));
        let reading = cpu_reading(me).unwrap();
        assert!(is_running(&reading));
        assert!(!is_running(&CpuReading { start_ticks: reading.start_ticks + 1, ..reading }));
        let before = cpu_time(me).unwrap();
        // Spin until the process has used 30 ms more (a loaded machine may
        // give it less than the wall time), within 10 s.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut x = 0u64;
        while cpu_time(me).unwrap() < before + Duration::from_millis(30) && Instant::now() < deadline {
            for _ in 0..100_000 {
                x = x.wrapping_add(std::hint::black_box(1));
            }
        }
        assert!(x > 0);
        let used = cpu_used(&[reading], &[cpu_reading(me).unwrap()]);
        assert_eq!((used.appeared, used.vanished), (0, 0));
        assert!(ticks_to_duration(used.ticks) >= Duration::from_millis(30), "{used:?}");
    }
}
