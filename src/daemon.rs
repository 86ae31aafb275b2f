//! `wasup serve`: the daemon. Builds the actor system (Driver, Supervisor),
//! the HTTP API, and shuts them down in order on SIGTERM or SIGINT.

use std::sync::Arc;
use std::time::Duration;

use actix::Actor as _;
use actix_web::{App, HttpServer};
use anyhow::Context as _;

use crate::actors::campaigns::{Campaigns, HaltAll};
use crate::actors::driver::Driver;
use crate::actors::notifier::Notifier;
use crate::actors::supervisor::{SetCampaigns, ShutdownAll, Supervisor};
use crate::config::Config;
use crate::events::Events;
use crate::http::{self, auth::Token, AppState};
use crate::notify;
use crate::store::Store;

/// Runs the daemon until SIGTERM or SIGINT.
///
/// Errors: the state dir, store or token file cannot be used, or the HTTP
/// address cannot be bound. A session's failure is never an error here.
pub fn run(config: Config) -> anyhow::Result<()> {
    let config = Arc::new(config);
    std::fs::create_dir_all(&config.state.dir)
        .with_context(|| format!("cannot create state dir {}", config.state.dir.display()))?;
    let store = Store::open(&config.state.dir.join("db"))
        .with_context(|| format!("cannot open the store in {}", config.state.dir.display()))?;
    let token = Token::load_or_create(std::env::var("WASUP_TOKEN").ok(), &config.token_path())
        .with_context(|| format!("cannot read or create the token file {}", config.token_path().display()))?;

    actix_web::rt::System::new().block_on(async move {
        let listener = std::net::TcpListener::bind(config.http.listen)
            .with_context(|| format!("cannot listen on {}", config.http.listen))?;
        let driver = Driver::new(config.clone()).start();
        let events = Events::new();
        let notifier = Notifier::new(config.alerts.clone()).start();
        let supervisor = Supervisor::new(config.clone(), store.clone(), driver.clone(), notifier, events.clone()).start();
        let campaigns = Campaigns::new(config.clone(), store.clone(), supervisor.clone(), events.clone()).start();
        supervisor.do_send(SetCampaigns(campaigns.clone()));
        let max_body = config.http.max_body_bytes;
        let state = AppState {
            supervisor: supervisor.clone(),
            campaigns: campaigns.clone(),
            store: store.clone(),
            config: config.clone(),
            events: events.clone(),
            max_body,
        };
        let requests = http::metrics::RequestCounts::default();
        let server = HttpServer::new(move || {
            App::new()
                .wrap(actix_web::middleware::from_fn(http::metrics::count_requests))
                .configure(|cfg| http::configure(cfg, state.clone(), token.clone(), requests.clone(), max_body))
        })
        .workers(1)
        .on_connect(crate::http::no_delay)
        .disable_signals()
        .shutdown_timeout(5)
        .listen(listener)?
        .run();
        tracing::info!(listen = %config.http.listen, state_dir = %config.state.dir.display(), "wasup is serving");
        let handle = server.handle();
        let server_task = actix_web::rt::spawn(server);
        notify::ready(&supervisor).await;
        // On its own thread, so a wedged System arbiter cannot fake pings:
        // the ping needs the Supervisor's answer.
        let watchdog = {
            let supervisor = supervisor.clone();
            std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_time().build() {
                    rt.block_on(notify::watchdog(supervisor));
                }
            })
        };
        drop(watchdog);

        wait_for_signal().await;
        notify::stopping();
        tracing::info!(event = "daemon.stopping", "stopping: halting campaigns, closing browsers, flushing the store");
        let _ = tokio::time::timeout(Duration::from_secs(10), campaigns.send(HaltAll)).await;
        let _ = tokio::time::timeout(Duration::from_secs(60), supervisor.send(ShutdownAll)).await;
        handle.stop(true).await;
        let _ = server_task.await;
        drop(driver);
        store.flush().context("cannot flush the store")?;
        tracing::info!(event = "daemon.stopped", "stopped");
        Ok(())
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        }
        _ => {
            // Without signal handlers, Ctrl-C still works through the default.
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
