//! The HTTP and WebSocket shell around [`World`]: serves the page, runs one
//! task per page socket, applies the world's effects, and wakes the world up
//! when something is due.
//!
//! All state lives in the [`Hub`] (the world plus a sender per socket) behind
//! one mutex that is never held across an `.await`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::{http::header, web, HttpRequest, HttpResponse};
use actix_ws::Message;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::Notify;

use super::protocol::ClientFrame;
use super::world::{ConnId, Effect, World};

/// The page's HTML, served at `/`.
const PAGE_HTML: &str = include_str!("page.html");
/// The page's script, served at `/page.js` with the boot delay filled in.
const PAGE_JS: &str = include_str!("page.js");
/// The modules of features the simulator does not model, spliced into the
/// page's script where `/*__INERT_MODULES__*/` stands.
const PAGE_INERT_JS: &str = include_str!("page_inert.js");
/// Largest frame a page may send, bytes.
const MAX_FRAME_BYTES: usize = 1 << 20;
/// Longest the ticker sleeps without being woken, so old refs are pruned.
const MAX_IDLE: Duration = Duration::from_secs(1);

/// What a socket task must do next.
#[derive(Debug)]
enum Outgoing {
    Text(String),
    Close,
    Drop,
}

#[derive(Debug)]
struct HubInner {
    world: World,
    sockets: HashMap<ConnId, UnboundedSender<Outgoing>>,
}

/// The world and the live page sockets, shared by every handler.
#[derive(Debug)]
pub struct Hub {
    inner: Mutex<HubInner>,
    /// Wakes the ticker when a call may have moved the next deadline.
    wake: Notify,
}

impl Hub {
    /// A hub around `world`, with no sockets.
    pub fn new(world: World) -> Self {
        Self { inner: Mutex::new(HubInner { world, sockets: HashMap::new() }), wake: Notify::new() }
    }

    fn lock(&self) -> MutexGuard<'_, HubInner> {
        // A panic while holding the lock leaves the world as it was at that
        // point; keep serving rather than poisoning every later request.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the world at the current time, performs the effects it
    /// queued, and wakes the ticker.
    pub fn act<R>(&self, f: impl FnOnce(&mut World, u64) -> R) -> R {
        let r = self.act_quietly(f);
        self.wake.notify_one();
        r
    }

    fn act_quietly<R>(&self, f: impl FnOnce(&mut World, u64) -> R) -> R {
        let mut inner = self.lock();
        let r = f(&mut inner.world, now_ms());
        let effects = inner.world.take_effects();
        for effect in effects {
            let (conn, out) = match effect {
                Effect::Send(conn, frame) => match serde_json::to_string(&frame) {
                    Ok(text) => (conn, Outgoing::Text(text)),
                    Err(e) => {
                        tracing::warn!(error = %e, "sim: could not encode a frame");
                        continue;
                    }
                },
                Effect::Close(conn) => (conn, Outgoing::Close),
                Effect::Drop(conn) => (conn, Outgoing::Drop),
            };
            if let Some(tx) = inner.sockets.get(&conn) {
                // A send fails only if the socket task already ended.
                let _ = tx.send(out);
            }
        }
        r
    }

    fn open(&self, tx: UnboundedSender<Outgoing>) -> ConnId {
        let mut inner = self.lock();
        let conn = inner.world.open();
        inner.sockets.insert(conn, tx);
        conn
    }

    fn closed(&self, conn: ConnId) {
        self.act(|w, now| w.closed(conn, now));
        self.lock().sockets.remove(&conn);
    }
}

/// Unix epoch milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

/// Fires the world's timers (ref rotation, history sync, delayed sends and
/// acks) for as long as the server runs.
pub async fn ticker(hub: Arc<Hub>) {
    loop {
        let wait = hub.act_quietly(|w, now| {
            w.tick(now);
            w.next_deadline(now).map(|at| Duration::from_millis(at.saturating_sub(now)))
        });
        let wait = wait.unwrap_or(MAX_IDLE).min(MAX_IDLE);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = hub.wake.notified() => {}
        }
    }
}

/// The page's script with its settings filled in.
#[derive(Debug, Clone)]
pub struct PageAssets {
    js: String,
}

impl PageAssets {
    /// The assets for a page that boots in `boot_delay`.
    pub fn new(boot_delay: Duration) -> Self {
        let ms = u64::try_from(boot_delay.as_millis()).unwrap_or(u64::MAX);
        Self { js: PAGE_JS.replace("__BOOT_DELAY_MS__", &ms.to_string()).replace("/*__INERT_MODULES__*/", PAGE_INERT_JS) }
    }
}

/// Routes of the page (`/`, `/page.js`, `/ws`) and of the media host:
/// `POST /mms/{type}/{token}?auth=…` takes an upload and answers
/// `{"url", "direct_path"}`; `GET /v/…` (a direct path) serves it back.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(page_html))
        .route("/page.js", web::get().to(page_js))
        .route("/ws", web::get().to(page_socket))
        .route("/mms/{kind}/{token}", web::post().to(upload))
        .route("/v/{rest:.*}", web::get().to(download));
}

/// `?auth=…&token=…` of an upload (the token is also in the path).
#[derive(Debug, serde::Deserialize)]
struct UploadQuery {
    #[serde(default)]
    auth: String,
}

/// The media host takes an encrypted file: the world checks the auth and
/// that the token is the upload's hash (computed here, outside the lock).
async fn upload(
    req: HttpRequest,
    hub: web::Data<Hub>,
    path: web::Path<(String, String)>,
    query: web::Query<UploadQuery>,
    mut payload: web::Payload,
) -> HttpResponse {
    use futures_util::StreamExt as _;
    let (kind, token) = path.into_inner();
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let Ok(chunk) = chunk else {
            return super::phone::error(actix_web::http::StatusCode::BAD_REQUEST, "the upload broke off");
        };
        if body.len() + chunk.len() > super::media::MAX_UPLOAD_BYTES {
            let e = super::world::PhoneError::TooLarge(format!("uploads are at most {} bytes", super::media::MAX_UPLOAD_BYTES));
            return super::phone::refused(&e);
        }
        body.extend_from_slice(&chunk);
    }
    let body = body.freeze();
    let digest = super::media::sha256(&body);
    let size = body.len();
    match hub.act(|w, now| w.upload(&query.auth, &kind, &token, body, digest, now, &mut rand::thread_rng())) {
        Ok(direct_path) => {
            tracing::debug!(kind = %kind, size, "sim: media uploaded");
            let host = req.connection_info().host().to_owned();
            let url = format!("{}://{host}{direct_path}", req.connection_info().scheme());
            HttpResponse::Ok().json(serde_json::json!({ "url": url, "direct_path": direct_path }))
        }
        Err(e) => super::phone::refused(&e),
    }
}

/// The media host serves an upload by its direct path.
async fn download(req: HttpRequest, hub: web::Data<Hub>) -> HttpResponse {
    match hub.act(|w, _| w.download(req.path())) {
        Some(bytes) => {
            HttpResponse::Ok().content_type("application/octet-stream").insert_header((header::CACHE_CONTROL, "no-store")).body(bytes)
        }
        None => super::phone::error(actix_web::http::StatusCode::NOT_FOUND, "no media at this path"),
    }
}

async fn page_html() -> HttpResponse {
    HttpResponse::Ok().content_type("text/html; charset=utf-8").insert_header((header::CACHE_CONTROL, "no-store")).body(PAGE_HTML)
}

async fn page_js(assets: web::Data<PageAssets>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(assets.js.clone())
}

async fn page_socket(req: HttpRequest, body: web::Payload, hub: web::Data<Hub>) -> actix_web::Result<HttpResponse> {
    let (response, session, stream) = actix_ws::handle(&req, body)?;
    let socket = req.conn_data::<ConnSocket>().copied();
    let (tx, rx) = unbounded_channel();
    let conn = hub.open(tx);
    tracing::debug!(conn, "sim: page socket opened");
    actix_web::rt::spawn(run_socket(hub.into_inner(), conn, session, stream.max_frame_size(MAX_FRAME_BYTES), rx, socket));
    Ok(response)
}

/// The accepted connection's socket, remembered by [`on_connect`] so a
/// network drop can cut it.
#[derive(Debug, Clone, Copy)]
pub struct ConnSocket(std::os::fd::RawFd);

impl ConnSocket {
    /// `shutdown(2)` both directions: the page sees the connection end at
    /// once, with no close frame (code 1006).
    fn cut(self) {
        // SAFETY: shutdown(2) on the fd of a connection that is still open
        // (its WebSocket task has not ended yet); it closes nothing.
        unsafe {
            libc::shutdown(self.0, libc::SHUT_RDWR);
        }
    }
}

/// For `HttpServer::on_connect`: no Nagle delay, and remember the socket.
pub fn on_connect(conn: &dyn std::any::Any, ext: &mut actix_web::dev::Extensions) {
    crate::http::no_delay(conn, ext);
    if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
        use std::os::fd::AsRawFd as _;
        ext.insert(ConnSocket(tcp.as_raw_fd()));
    }
}

/// Pumps one page socket: frames in go to the world, effects out go to
/// the page, until either side ends it.
async fn run_socket(
    hub: Arc<Hub>,
    conn: ConnId,
    mut session: actix_ws::Session,
    mut stream: actix_ws::MessageStream,
    mut rx: UnboundedReceiver<Outgoing>,
    socket: Option<ConnSocket>,
) {
    let how = loop {
        tokio::select! {
            msg = stream.recv() => match msg {
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<ClientFrame>(&text) {
                    Ok(frame) => hub.act(|w, now| w.frame(conn, frame, now, &mut rand::thread_rng())),
                    Err(e) => tracing::debug!(conn, error = %e, "sim: ignoring a malformed page frame"),
                },
                Some(Ok(Message::Ping(bytes))) => {
                    if session.pong(&bytes).await.is_err() {
                        break "gone";
                    }
                }
                Some(Ok(Message::Close(_))) | None => break "page closed",
                Some(Err(e)) => {
                    tracing::debug!(conn, error = %e, "sim: page socket protocol error");
                    break "protocol error";
                }
                Some(Ok(_)) => {}
            },
            out = rx.recv() => match out {
                Some(Outgoing::Text(text)) => {
                    if session.text(text).await.is_err() {
                        break "gone";
                    }
                }
                Some(Outgoing::Close) => break "closed by server",
                // Dropping the session without a close frame ends the
                // connection the way a failing network does.
                Some(Outgoing::Drop) => {
                    // Cut the TCP connection now, as a failing network does;
                    // otherwise it would linger until the page's next bytes.
                    if let Some(socket) = socket {
                        socket.cut();
                    }
                    break "dropped by server";
                }
                None => break "dropped by server",
            },
        }
    };
    hub.closed(conn);
    tracing::debug!(conn, how, "sim: page socket ended");
    if how == "closed by server" || how == "page closed" {
        let _ = session.close(None).await;
    }
}
