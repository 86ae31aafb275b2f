//! A throwaway PostgreSQL server for tests and benches: `initdb` in a temp
//! dir, `postgres` listening only on a unix socket in that dir, a `wasup`
//! role and database, stopped and removed when dropped.
//!
//! The binaries come from `WASUP_PG_BIN` or the newest Debian
//! `/usr/lib/postgresql/<version>/bin` (package `postgresql`). PostgreSQL
//! refuses to run as root, so under root the server runs as the `postgres`
//! user the Debian package creates.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::launch::{wait_until, ChildGuard, TempDir};

/// A running throwaway server; see the module doc.
pub struct TempPostgres {
    bin: PathBuf,
    dir: TempDir,
    user: Option<(u32, u32)>,
    server: Option<ChildGuard>,
    /// Server settings given at start (`name=value`, each a `-c`).
    settings: Vec<String>,
}

/// Where PostgreSQL's binaries are, if anywhere.
pub fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("WASUP_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// The uid and gid of `name` from /etc/passwd.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.first() == Some(&name)).then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?))).flatten()
    })
}

impl TempPostgres {
    /// Whether a server can be started here (the binaries exist).
    pub fn available() -> bool {
        bin_dir().is_some()
    }

    /// Creates and starts a server; returns once it takes connections.
    ///
    /// Errors: no binaries, no `postgres` user under root, `initdb` or the
    /// server failed (their output is in the error).
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(&[])
    }

    /// Like [`TempPostgres::start`], with server settings (`name=value`,
    /// e.g. `shared_preload_libraries=pg_stat_statements`), kept for
    /// [`TempPostgres::start_server`].
    ///
    /// Errors: as for [`TempPostgres::start`].
    pub fn start_with(settings: &[&str]) -> anyhow::Result<Self> {
        let bin = bin_dir().context("no PostgreSQL binaries: install Debian's postgresql or set WASUP_PG_BIN")?;
        let dir = TempDir::new("wasup-pg")?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let user = if root {
            Some(user_ids("postgres").context("running as root needs the 'postgres' user (Debian's postgresql package)")?)
        } else {
            None
        };
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.0.as_path(), Some(uid), Some(gid))?;
        }
        let settings = settings.iter().map(|s| s.to_string()).collect();
        let mut pg = Self { bin, dir, user, server: None, settings };
        pg.run("initdb", &["-D", &pg.data().to_string_lossy(), "-U", "wasup", "-A", "trust", "-E", "UTF8", "--no-sync"])?;
        pg.start_server()?;
        pg.run("createdb", &["-h", &pg.socket_dir().to_string_lossy(), "-U", "wasup", "wasup"])?;
        Ok(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.0.as_path().join("data")
    }

    /// The directory of the server's unix socket.
    pub fn socket_dir(&self) -> &Path {
        self.dir.0.as_path()
    }

    /// The URL for `[store] url`.
    pub fn url(&self) -> String {
        format!("postgres://wasup@/wasup?host={}", self.socket_dir().display())
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let out = self.command(program).args(args).stdin(Stdio::null()).output().with_context(|| format!("cannot run {program}"))?;
        if !out.status.success() {
            bail!("{program} failed ({}): {}{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// Runs `sql` with `psql` as the `wasup` role on the `wasup` database;
    /// returns its output, unaligned with no headers (`|` between columns,
    /// a line per row).
    ///
    /// Errors: psql could not run or the statement failed (its output).
    pub fn psql(&self, sql: &str) -> anyhow::Result<String> {
        let socket = self.socket_dir().to_string_lossy().into_owned();
        let args = ["-h", &socket, "-U", "wasup", "-d", "wasup", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql];
        let out = self.command("psql").args(args).stdin(Stdio::null()).output().context("cannot run psql")?;
        if !out.status.success() {
            bail!("psql failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts the server (again, after [`TempPostgres::stop`]); returns once
    /// it takes connections.
    ///
    /// Errors: it did not start within 30 s.
    pub fn start_server(&mut self) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.0.as_path().join("server.log"))?;
        if let Some((uid, gid)) = self.user {
            std::os::unix::fs::chown(self.dir.0.as_path().join("server.log"), Some(uid), Some(gid))?;
        }
        let mut cmd = self.command("postgres");
        cmd.args(["-D", &self.data().to_string_lossy(), "-k", &self.socket_dir().to_string_lossy(), "-c", "listen_addresses="])
            .args(self.settings.iter().flat_map(|s| ["-c", s.as_str()]))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        self.server = Some(ChildGuard::spawn(&mut cmd, Duration::from_secs(10)).context("cannot start postgres")?);
        let socket = self.socket_dir().to_string_lossy().into_owned();
        let ready = wait_until("PostgreSQL to take connections", Duration::from_secs(30), Duration::from_millis(100), || {
            let ok = self.command("pg_isready").args(["-q", "-h", &socket]).status().is_ok_and(|s| s.success());
            ok.then_some(())
        });
        if ready.is_err() {
            let log = std::fs::read_to_string(self.dir.0.as_path().join("server.log")).unwrap_or_default();
            bail!("PostgreSQL did not start: {log}");
        }
        Ok(())
    }

    /// Stops the server with PostgreSQL's fast shutdown (SIGINT: clients
    /// are disconnected at once, as when an operator stops it), SIGKILL if
    /// it is still running 10 s later.
    pub fn stop(&mut self) {
        if let Some(server) = self.server.as_mut() {
            server.signal(libc::SIGINT);
            // Harmless if it times out: dropping the guard kills it.
            let _ = wait_until("PostgreSQL to stop", Duration::from_secs(10), Duration::from_millis(50), || {
                (!server.is_running()).then_some(())
            });
        }
        self.server = None;
    }
}

impl Drop for TempPostgres {
    /// The server stops before its directory is removed.
    fn drop(&mut self) {
        self.stop();
    }
}
