//! The Driver actor: owns the chromedriver child process.
//!
//! It starts chromedriver on a free loopback port, tells Sessions where it
//! is ([`GetDriverUrl`]), and starts a new one if it exits. A new
//! chromedriver listens on a new port, so Sessions still holding the old URL
//! fail to connect, end with `driver_died`, and ask again when they restart.
//! chromedriver gets `PR_SET_PDEATHSIG`, so it dies with the daemon even when
//! the daemon is killed with SIGKILL.

use std::os::unix::process::CommandExt as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::config::Config;

/// Why no chromedriver URL could be given.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DriverError {
    #[error("chromedriver is not available: {0}")]
    Unavailable(String),
}

/// Asks for the chromedriver URL, waiting until it answers.
#[derive(Message)]
#[rtype(result = "Result<String, DriverError>")]
pub struct GetDriverUrl;

#[derive(Message)]
#[rtype(result = "()")]
struct Ready {
    generation: u64,
    url: String,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Exited {
    generation: u64,
    what: String,
}

/// The chromedriver owner. See the module docs.
pub struct Driver {
    config: Arc<Config>,
    generation: u64,
    url: Option<String>,
    pid: Option<u32>,
    waiters: Vec<oneshot::Sender<Result<String, DriverError>>>,
    started_at: Instant,
    failures: u32,
    last_error: Option<String>,
}

impl Driver {
    pub fn new(config: Arc<Config>) -> Self {
        Self { config, generation: 0, url: None, pid: None, waiters: Vec::new(), started_at: Instant::now(), failures: 0, last_error: None }
    }

    fn spawn_chromedriver(&mut self, ctx: &mut Context<Self>) {
        self.generation += 1;
        self.url = None;
        self.pid = None;
        self.started_at = Instant::now();
        let generation = self.generation;
        let me = ctx.address();
        let port = match crate::launch::free_port() {
            Ok(port) => port,
            Err(e) => {
                me.do_send(Exited { generation, what: format!("no free port: {e}") });
                return;
            }
        };
        let mut command = tokio::process::Command::new(&self.config.browser.chromedriver);
        command
            .arg(format!("--port={port}"))
            .arg("--log-level=OFF")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and only
        // affects the child being set up.
        unsafe {
            command.as_std_mut().pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                let what = format!("cannot start {}: {e}", self.config.browser.chromedriver.display());
                me.do_send(Exited { generation, what });
                return;
            }
        };
        self.pid = child.id();
        let timeout = self.config.browser.driver_start_timeout;
        let ready_addr = me.clone();
        // Readiness: chromedriver binds its port once it can take sessions.
        ctx.spawn(
            async move {
                let deadline = Instant::now() + timeout;
                while Instant::now() < deadline {
                    if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                        ready_addr.do_send(Ready { generation, url: format!("http://127.0.0.1:{port}") });
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                ready_addr.do_send(Exited { generation, what: format!("did not listen within {timeout:?}") });
            }
            .into_actor(self),
        );
        ctx.spawn(
            async move {
                let what = match child.wait().await {
                    Ok(status) => format!("exited ({status})"),
                    Err(e) => format!("lost: {e}"),
                };
                me.do_send(Exited { generation, what });
            }
            .into_actor(self),
        );
    }

    fn kill_current(&mut self) {
        if let Some(pid) = self.pid.take() {
            // SAFETY: sending a signal to a pid we spawned; failure is harmless.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
    }
}

impl Actor for Driver {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.spawn_chromedriver(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.kill_current();
    }
}

impl Handler<GetDriverUrl> for Driver {
    type Result = ResponseFuture<Result<String, DriverError>>;

    fn handle(&mut self, _msg: GetDriverUrl, _ctx: &mut Self::Context) -> Self::Result {
        if let Some(url) = &self.url {
            let url = url.clone();
            return Box::pin(async move { Ok(url) });
        }
        if self.failures >= 3 {
            // Don't make a session wait for a driver that keeps failing;
            // it will back off and ask again.
            let why = self.last_error.clone().unwrap_or_default();
            return Box::pin(async move { Err(DriverError::Unavailable(why)) });
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.push(tx);
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err(DriverError::Unavailable("driver actor stopped".into()))) })
    }
}

impl Handler<Ready> for Driver {
    type Result = ();

    fn handle(&mut self, msg: Ready, _ctx: &mut Self::Context) {
        if msg.generation != self.generation {
            return;
        }
        tracing::info!(event = "driver.ready", url = %msg.url, "chromedriver is listening");
        self.url = Some(msg.url.clone());
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(Ok(msg.url.clone()));
        }
    }
}

impl Handler<Exited> for Driver {
    type Result = ();

    fn handle(&mut self, msg: Exited, ctx: &mut Self::Context) {
        if msg.generation != self.generation {
            return;
        }
        self.kill_current();
        self.url = None;
        // Ran a good while: this is a fresh failure, not a crash loop.
        if self.started_at.elapsed() > Duration::from_secs(60) {
            self.failures = 0;
        }
        self.failures += 1;
        self.last_error = Some(msg.what.clone());
        tracing::warn!(event = "driver.exited", what = %msg.what, failures = self.failures, "chromedriver is gone; starting a new one");
        if self.failures >= 3 {
            for waiter in self.waiters.drain(..) {
                let _ = waiter.send(Err(DriverError::Unavailable(msg.what.clone())));
            }
        }
        let delay = Duration::from_millis(250 * u64::from(self.failures.min(40)));
        // A new generation now, so readiness/exit messages of the dead child
        // are ignored while we wait.
        self.generation += 1;
        ctx.run_later(delay, |act, ctx| act.spawn_chromedriver(ctx));
    }
}
