//! `wasup serve`: the daemon. Builds the actor system (Driver, Supervisor),
//! the HTTP API, and shuts them down in order on SIGTERM or SIGINT.

use std::sync::Arc;
use std::time::Duration;

use actix::Actor as _;
use actix_web::App;
use anyhow::Context as _;

use crate::actors::campaigns::{Campaigns, HaltAll};
use crate::actors::cluster::{Cluster, Leave, StopPlacing};
use crate::actors::driver::Driver;
use crate::actors::messages::CampaignLinks;
use crate::actors::notifier::Notifier;
use crate::actors::supervisor::{ShutdownAll, Supervisor};
use crate::config::Config;
use crate::config::StoreBackend;
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
    // Everything the daemon creates (store, profiles, token) is private,
    // whatever umask it was started with.
    // SAFETY: umask(2) only sets this process's file mode mask; it cannot fail.
    unsafe { libc::umask(0o077) };
    // glibc gives every thread that allocates its own arena and keeps freed
    // memory there: after a few large campaign uploads on the blocking pool
    // the daemon would sit on hundreds of MiB it no longer uses. Two arenas
    // are plenty for this daemon's allocation rate.
    // SAFETY: mallopt only tunes the allocator; called before other threads.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    std::fs::create_dir_all(&config.state.dir).with_context(|| format!("cannot create state dir {}", config.state.dir.display()))?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&config.state.dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make the state dir {} private (0700)", config.state.dir.display()))?;
    }
    let store = match config.store.backend {
        StoreBackend::Sled => Store::open_with(&config.state.dir.join("db"), config.state.cache_capacity.as_u64())
            .with_context(|| format!("cannot open the store in {}", config.state.dir.display()))?,
        // The URL may hold a password: the error names the store, not it.
        StoreBackend::Postgres => Store::postgres(
            config.store.url.as_deref().unwrap_or_default(),
            config.store.timeout,
            config.cluster.node.as_deref().unwrap_or_default(),
            config.cluster.lease_ttl,
        )
        .context("cannot open the PostgreSQL store (store.url)")?,
    };
    // Cluster mode (PostgreSQL): a session's writes need its lease.
    let (store, lost) = match config.store.backend {
        StoreBackend::Sled => (store, None),
        StoreBackend::Postgres => {
            let (fences, lost) = crate::store::Fences::new(config.cluster.node.as_deref().unwrap_or_default());
            (store.fenced(fences), Some(lost))
        }
    };
    let token = Token::load_or_create(std::env::var("WASUP_TOKEN").ok(), &config.token_path())
        .with_context(|| format!("cannot use the token file {}", config.token_path().display()))?;
    if !config.http.listen.ip().is_loopback() {
        tracing::warn!(listen = %config.http.listen, "the API listens on a non-loopback address: put it behind a TLS reverse proxy or a firewall; the bearer token travels in clear text");
    }
    // Before anything can publish: every event a webhook subscribes to goes
    // through the outbox, and the stored outbox is resumed.
    let webhooks = crate::webhooks::Webhooks::start(&config, store.clone()).context("cannot start the webhook outbox")?;
    let mut events = Events::new().with_sink(webhooks.sink());
    // Cluster mode: events carry this node's name, go to the other nodes,
    // and theirs come to this node's streams (never to its webhooks).
    if let (StoreBackend::Postgres, Some(node)) = (config.store.backend, config.cluster.node.as_deref()) {
        let (outbound, inbound) = crate::relay::channel(events.relay_counts());
        events = events.with_node(node).with_sink(outbound);
        // The URL may hold a password: the error names the setting, not it.
        crate::relay::start(config.store.url.as_deref().unwrap_or_default(), config.store.timeout, node, events.clone(), inbound)
            .context("cannot start the cluster event relay (store.url)")?;
    }
    for record in store.sessions().unwrap_or_default() {
        events.seed(&record.name, &store.history(&record.name).unwrap_or_default());
    }
    let tally = crate::campaign::Tally::default();
    match tally.seed(&store) {
        Ok(n) => tracing::debug!(campaigns = n, "campaign counts loaded (restored campaigns count theirs as they load)"),
        // Harmless: a campaign not counted here is counted on its first view
        // (and a store that cannot be read answers 503 there).
        Err(e) => tracing::warn!(error = %e, "cannot count the stored campaigns now; they are counted on first view"),
    }

    actix_web::rt::System::new().block_on(async move {
        let listener =
            std::net::TcpListener::bind(config.http.listen).with_context(|| format!("cannot listen on {}", config.http.listen))?;
        let driver = Driver::new(config.clone()).start();
        let notifier = Notifier::new(config.alerts.clone(), webhooks.clone()).start();
        let store_watch = spawn_store_watch(store.clone(), notifier.clone(), events.clone());
        // The Campaigns registry and the Supervisor need each other: the
        // registry's address exists before it runs.
        let campaigns_ctx = actix::Context::<Campaigns>::new();
        let campaigns_addr = actix::AsyncContext::address(&campaigns_ctx);
        let supervisor =
            Supervisor::new(config.clone(), store.clone(), driver.clone(), notifier, events.clone(), CampaignLinks::to(&campaigns_addr))
                .start();
        let campaigns = campaigns_ctx.run(Campaigns::new(config.clone(), store.clone(), supervisor.clone(), events.clone(), tally.clone()));
        let cluster = match (lost, store.fences().cloned(), store.pg().cloned()) {
            (Some(lost), Some(fences), Some(pg)) => {
                let c = &config.cluster;
                let db = crate::cluster::ClusterDb::new(
                    pg,
                    c.node.as_deref().unwrap_or_default(),
                    c.advertise.as_deref().unwrap_or_default(),
                    c.max_sessions,
                    c.lease_ttl,
                );
                Some(Cluster::new(db, store.clone(), fences, lost, supervisor.clone(), c.lease_ttl).start())
            }
            _ => None,
        };
        let max_body = config.http.max_body_bytes;
        let state = AppState {
            supervisor: supervisor.clone(),
            campaigns: campaigns.clone(),
            store: store.clone(),
            config: config.clone(),
            events: events.clone(),
            webhooks: webhooks.clone(),
            max_body,
            tally,
            sends: Default::default(),
            creates: Arc::new(tokio::sync::Semaphore::new(config.limits.concurrent_creates)),
            streams: Arc::new(tokio::sync::Semaphore::new(config.limits.streams)),
            cluster: http::nodes::ClusterApi::new(&config, &store),
        };
        let body_limits = http::conventions::BodyLimits {
            max_bytes: max_body,
            timeout: config.limits.body_timeout,
            media_bytes: http::media_form_bytes(&config),
        };
        let requests = http::metrics::RequestCounts::default();
        let app = move || {
            App::new()
                .app_data(actix_web::web::Data::new(body_limits))
                .wrap(actix_web::middleware::from_fn(http::conventions::guard_body))
                .wrap(actix_web::middleware::from_fn(http::metrics::count_requests))
                .wrap(actix_web::middleware::from_fn(http::conventions::headers_and_json_errors))
                .configure(|cfg| http::configure(cfg, state.clone(), token.clone(), requests.clone(), max_body))
        };
        // actix-web's HttpServer, built by hand so each connection is
        // wrapped: the codec's own 400/408/431 get JSON bodies too.
        let listen = config.http.listen;
        let builder = actix_server::Server::build();
        // As actix-web's HttpServer: on stop, idle keep-alive connections
        // are closed at once instead of holding the shutdown for 5 s.
        let shutdown = builder.graceful_shutdown_signal();
        let server = builder
            .workers(config.http.worker_count())
            .disable_signals()
            .shutdown_timeout(5)
            .listen("wasup-api", listener, move || {
                let signal = shutdown.clone();
                let http = actix_http::HttpService::build()
                    .graceful_shutdown_signal(move || {
                        let signal = signal.clone();
                        async move { signal.notified().await }
                    })
                    .client_request_timeout(http::codec_errors::HEAD_TIMEOUT)
                    // As actix-web's HttpServer: a second to read what a
                    // client still sends after an early error answer.
                    .client_disconnect_timeout(Duration::from_secs(1))
                    .local_addr(listen)
                    .h1(actix_service::map_config(app(), |_| actix_web::dev::AppConfig::default()));
                let accept = actix_service::fn_service(|io: actix_web::rt::net::TcpStream| async move {
                    // Harmless if it fails: only small writes wait for the
                    // peer's delayed ACK (40 ms).
                    let _ = io.set_nodelay(true);
                    let peer = io.peer_addr().ok();
                    Ok::<_, actix_http::error::DispatchError>((http::codec_errors::JsonCodecErrors::new(io), peer))
                });
                actix_service::ServiceFactoryExt::and_then(accept, http)
            })?
            .run();
        tracing::info!(listen = %config.http.listen, state_dir = %config.state.dir.display(), "wasup is serving");
        let handle = server.handle();
        let server_task = actix_web::rt::spawn(server);
        notify::ready(&supervisor).await;
        // On its own thread, so a wedged System arbiter cannot fake pings:
        // the ping needs the Supervisor's answer.
        let watchdog = {
            let probe = notify::Probe {
                supervisor: supervisor.clone(),
                listen: config.http.listen,
                store: store.clone(),
                failing_limit: config.state.failing_limit,
            };
            std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    rt.block_on(notify::watchdog(probe));
                }
            })
        };
        drop(watchdog);

        wait_for_signal().await;
        notify::stopping();
        tracing::info!(event = "daemon.stopping", "stopping: halting campaigns, closing browsers, flushing the store");
        if let Some(cluster) = &cluster {
            // Nothing new starts here while the node stops.
            let _ = cluster.send(StopPlacing).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), campaigns.send(HaltAll)).await;
        let _ = tokio::time::timeout(Duration::from_secs(60), supervisor.send(ShutdownAll)).await;
        if let Some(cluster) = &cluster {
            // After the browsers closed: the next owners start them.
            let _ = tokio::time::timeout(Duration::from_secs(10), cluster.send(Leave)).await;
        }
        handle.stop(true).await;
        let _ = server_task.await;
        drop(driver);
        store_watch.stop();
        webhooks.stop(Duration::from_secs(5));
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

/// The store watcher's handle; [`StoreWatch::stop`] ends it.
struct StoreWatch(Arc<std::sync::atomic::AtomicBool>);

impl StoreWatch {
    fn stop(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// On its own thread (a reopen blocks): while the store fails, tries
/// [`Store::recover`] every second, which probes and reopens it. Campaigns
/// paused by the failure watch [`Store::failure`] and resume when it clears.
/// One alert (`store.failing`) when a failure is first seen, one
/// (`store.recovered`) when writes succeed again; both also go on the
/// event bus.
fn spawn_store_watch(store: Store, notifier: actix::Addr<Notifier>, events: Events) -> StoreWatch {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let spawned = std::thread::Builder::new().name("store-watch".into()).spawn(move || {
        let mut alerted: Option<crate::store::StoreFailure> = None;
        let alert = |event: crate::events::EventName, message: String, detail: serde_json::Value| {
            notifier.do_send(crate::actors::notifier::Alert {
                event,
                session: String::new(),
                state: None,
                reason: None,
                message,
                at_ms: crate::session_state::now_ms(),
                detail: detail.clone(),
            });
            let mut e = crate::events::Event::session(event, "");
            e.session = None;
            events.publish(e.detail(detail));
        };
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(Duration::from_secs(1));
            match (store.failure(), &alerted) {
                (Some(f), None) => {
                    alert(
                        crate::events::EventName::StoreFailing,
                        format!("wasup's store does not take writes; campaigns are paused: {}", f.error),
                        serde_json::json!({"error": f.error, "since_ms": f.since_ms}),
                    );
                    alerted = Some(f);
                }
                (None, Some(f)) => {
                    alert(
                        crate::events::EventName::StoreRecovered,
                        "wasup's store takes writes again; campaigns resume".into(),
                        serde_json::json!({"since_ms": f.since_ms}),
                    );
                    alerted = None;
                }
                _ => {}
            }
            if store.failure().is_some() {
                if let Err(e) = store.recover() {
                    tracing::debug!(error = %e, "the store still fails");
                }
            }
        }
    });
    if let Err(e) = spawned {
        // Without the watcher a failing store only recovers on its own
        // (a flush that succeeds); /health still reports it.
        tracing::error!(error = %e, "cannot start the store watcher");
    }
    StoreWatch(stop)
}
