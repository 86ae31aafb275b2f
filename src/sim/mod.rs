//! The WhatsApp Web simulator (`wasup sim`): a local HTTP server that plays
//! WhatsApp's servers, serves a page with WhatsApp Web's module surface at
//! `/`, and gives tests a phone to drive under `/_phone`.
//!
//! Code map: `world` is the servers' state (pure, time passed in);
//! `protocol` the frames between page and servers; `qr` ref rotation and
//! the QR string; `wid` chat ids; `media` media encryption and the media
//! host's store; `server` the HTTP/WebSocket shell and the media host
//! (`/mms/…` uploads, `/v/…` downloads); `phone` the control API;
//! `page.html` + `page.js` the page itself.
//! Invariant: the page learns everything over its one WebSocket, so closing
//! that socket is a real loss of contact.

mod media;
mod phone;
mod protocol;
mod qr;
mod server;
mod wid;
mod world;

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpServer};
use anyhow::Context as _;

use self::server::{Hub, PageAssets};
use self::world::{Timings, World};

/// Options of `wasup sim`.
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Address to listen on (loopback only).
    #[arg(long, default_value = "127.0.0.1:8788")]
    pub listen: SocketAddr,
    /// Lifetime of the first QR ref of a batch.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub qr_first: Duration,
    /// Lifetime of each later QR ref.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub qr_next: Duration,
    /// QR refs in a batch before the page goes `UNPAIRED_IDLE`.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub qr_refs: u32,
    /// Time from `CONNECTED` to the history sync (`hasSynced` true).
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub sync_delay: Duration,
    /// Time from loading the page to `window.Debug.VERSION` (and the modules).
    #[arg(long, default_value = "300ms", value_parser = humantime::parse_duration)]
    pub boot_delay: Duration,
    /// Time from a message's SERVER ack to its DEVICE ack.
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    pub ack_device_after: Duration,
}

impl SimArgs {
    fn timings(&self) -> Timings {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Timings {
            qr_first_ms: ms(self.qr_first),
            qr_next_ms: ms(self.qr_next),
            qr_refs: usize::try_from(self.qr_refs).unwrap_or(usize::MAX).max(1),
            sync_delay_ms: ms(self.sync_delay),
            ack_device_after_ms: ms(self.ack_device_after),
        }
    }
}

/// Runs the simulator on `--listen` until SIGTERM or SIGINT.
pub fn run(args: SimArgs) -> anyhow::Result<()> {
    ensure_loopback(args.listen)?;
    let listener = TcpListener::bind(args.listen).with_context(|| format!("cannot listen on {}", args.listen))?;
    actix_web::rt::System::new().block_on(serve(args, listener, stop_signal()))
}

/// Serves the simulator on `listener` (which must be bound to a loopback
/// address) until `shutdown` completes; then closes every page socket and
/// stops. Must run inside an actix system.
pub async fn serve(args: SimArgs, listener: TcpListener, shutdown: impl Future<Output = ()> + 'static) -> anyhow::Result<()> {
    let addr = listener.local_addr().context("listener has no address")?;
    ensure_loopback(addr)?;
    let hub = Arc::new(Hub::new(World::new(args.timings())));
    let assets = web::Data::new(PageAssets::new(args.boot_delay));
    let hub_data = web::Data::from(Arc::clone(&hub));
    let server = HttpServer::new(move || {
        App::new().app_data(hub_data.clone()).app_data(assets.clone()).configure(server::routes).configure(phone::routes)
    })
    .workers(2)
    .on_connect(server::on_connect)
    .disable_signals()
    .shutdown_timeout(2)
    .listen(listener)
    .context("cannot serve on the listener")?
    .run();
    let handle = server.handle();
    let ticker = actix_web::rt::spawn(server::ticker(Arc::clone(&hub)));
    let stopper = actix_web::rt::spawn(async move {
        shutdown.await;
        tracing::info!("sim: stopping");
        hub.act(|w, _| w.close_all());
        handle.stop(true).await;
    });
    tracing::info!(%addr, "sim: WhatsApp Web simulator listening (page at /, phone at /_phone)");
    let served = server.await;
    ticker.abort();
    stopper.abort();
    served.context("simulator server failed")
}

fn ensure_loopback(addr: SocketAddr) -> anyhow::Result<()> {
    anyhow::ensure!(
        addr.ip().is_loopback(),
        "--listen {addr} is not a loopback address: the simulator's phone API has no authentication, \
         so it only listens on 127.0.0.1 or ::1"
    );
    Ok(())
}

/// Completes on SIGTERM or SIGINT.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses_are_served() {
        assert!(ensure_loopback(SocketAddr::from(([127, 0, 0, 1], 8788))).is_ok());
        assert!(ensure_loopback(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 8788))).is_ok());
        let err = ensure_loopback(SocketAddr::from(([0, 0, 0, 0], 8788)));
        assert!(err.is_err_and(|e| e.to_string().contains("not a loopback")));
    }
}
