//! One WhatsApp Web page in one Chromium, driven through WebDriver.
//!
//! [`Page`] is the only code that talks to chromedriver. It opens Chromium on
//! a session's profile and loads the configured URL. With
//! `whatsapp.events = "bidi"` it first installs the adapter (`adapter.js`)
//! as a WebDriver BiDi preload script ([`BOOT`]), present in every document
//! the page loads, which pushes each event as it happens ([`PageEvents`]);
//! with `"poll"` (or a chromedriver without BiDi) it injects the adapter
//! whenever a navigation removed it. Either way [`Page::poll`] drains the
//! adapter's queue with one classic command, and texts and media are sent
//! with classic commands. Every WebDriver failure is classified into a
//! [`PageError`], so the Session actor branches on a variant, not on text.

use std::path::Path;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use fantoccini::error::{CmdError, ErrorStatus, NewSessionError};
use fantoccini::{Client, ClientBuilder};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::{Config, EventMode};
use crate::policy::EndReason;
use crate::whatsapp::bidi::{Bidi, BidiEvent, CHANNEL, SUBSCRIBED};
use crate::whatsapp::media::{Media, MediaKind};

/// The adapter's source; `ADAPTER_VERSION` changes whenever it does, so a
/// page holding an older adapter gets the new one.
const ADAPTER: &str = include_str!("adapter.js");
const ADAPTER_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "-4");
/// Bytes of a file copied into the page per WebDriver command (1 MiB of
/// base64): polls run between the pieces, so a large file never holds
/// WebDriver for long.
const STAGE_BYTES: usize = 768 * 1024;

/// How many WebDriver commands [`Page::send_media`] runs for a file of
/// `bytes`: one per piece copied in (at least one), and the send. Each is
/// bounded by `whatsapp.send_timeout`.
pub fn media_send_commands(bytes: u64) -> u32 {
    let pieces = bytes.div_ceil(STAGE_BYTES as u64).max(1);
    u32::try_from(pieces.saturating_add(1)).unwrap_or(u32::MAX)
}

/// A JS expression: whether the page being left queued a logout (its
/// adapter's queue is in sessionStorage) or this is the `?post_logout=1`
/// page. Without storage only the URL tells.
const QUEUED_LOGOUT: &str = r#"(() => {
  if (/[?&]post_logout=1/.test(window.location.search)) return true;
  try {
    const q = JSON.parse(window.sessionStorage.getItem("__wasup_queue") || "[]");
    return Array.isArray(q) && q.some((e) => e && e.k === "logout");
  } catch (e) { return false; }
})()"#;

/// A JS expression: whether WhatsApp Web's modules are there
/// (`window.Debug.VERSION` and `WAWebSocketModel`), so the adapter can be
/// installed.
const MODULES_READY: &str = r#"(() => {
  try { return !!(window.Debug && window.Debug.VERSION) && !!window.require("WAWebSocketModel"); } catch (e) { return false; }
})()"#;

/// One poll's script (`arguments[0]`: the adapter's version): drain if the
/// adapter is there, else say why not. While a new page loads, the previous
/// adapter's queue is already in sessionStorage: a logout queued there (or
/// `?post_logout=1`) is reported at once rather than after the new page
/// has booted. A page ready without the adapter answers `inject`.
static TICK: LazyLock<String> = LazyLock::new(|| {
    format!(
        r#"
const v = arguments[0];
if (window.__wasup && window.__wasup.version === v) return window.__wasup.drain();
const logout = {QUEUED_LOGOUT};
return {MODULES_READY} ? {{inject: true, logout}} : {{loading: true, logout}};
"#
    )
});

pub static BOOT: LazyLock<String> = LazyLock::new(|| {
    format!(
        r#"(channel, force) => {{
  const version = {version};
  const install = {ADAPTER};
  const send = (m) => {{ try {{ channel(JSON.stringify(m)); }} catch (e) {{ /* the connection is gone: the classic drain still reads the queue */ }} }};
  if (window !== window.top || (window.__wasup_boot === version && !force)) return;
  window.__wasup_boot = version;
  send({{loading: true, logout: {QUEUED_LOGOUT}}});
  const ready = () => {MODULES_READY};
  let tries = 0;
  const attempt = () => {{
    if (window.__wasup && window.__wasup.version === version) return;
    if (ready()) {{
      // A module the adapter needs may come a moment after the socket
      // model: a failed install is tried again, never given up.
      try {{ install(version, send); return; }} catch (e) {{ /* retried below */ }}
    }}
    tries += 1;
    setTimeout(attempt, tries < 600 ? 50 : 1000);
  }};
  attempt();
}}"#,
        version = json!(ADAPTER_VERSION)
    )
});

/// What went wrong talking to the page.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// The browser, its renderer or chromedriver is gone: this page is over.
    #[error("{reason}: {message}")]
    Gone { reason: EndReason, message: String },
    /// The command failed but the page may still be fine (a script error,
    /// a navigation in the middle of a command, a timeout).
    #[error("page command failed: {0}")]
    Transient(String),
}

impl PageError {
    /// Why the page is over, if it is.
    pub fn end_reason(&self) -> Option<EndReason> {
        match self {
            PageError::Gone { reason, .. } => Some(*reason),
            PageError::Transient(_) => None,
        }
    }
}

fn classify(e: CmdError) -> PageError {
    let message = e.to_string();
    let gone = |reason| PageError::Gone { reason, message: message.clone() };
    match &e {
        CmdError::Standard(w) => {
            let text = w.message.to_lowercase();
            if text.contains("page crash") || text.contains("tab crashed") {
                gone(EndReason::PageCrashed)
            } else if w.error == ErrorStatus::InvalidSessionId
                || w.error == ErrorStatus::NoSuchWindow
                || text.contains("session deleted")
                || text.contains("chrome not reachable")
                || text.contains("disconnected")
            {
                gone(EndReason::BrowserDied)
            } else {
                PageError::Transient(message)
            }
        }
        CmdError::Failed(_) | CmdError::FailedC(_) | CmdError::Lost(_) => gone(EndReason::DriverDied),
        // chromedriver answers some failures outside the W3C shape, e.g. a
        // crashed renderer as the bare string "tab crashed".
        CmdError::NotW3C(_) | CmdError::NotJson(_) => {
            let text = message.to_lowercase();
            if text.contains("crash") {
                gone(EndReason::PageCrashed)
            } else if text.contains("session deleted") || text.contains("invalid session") {
                gone(EndReason::BrowserDied)
            } else {
                PageError::Transient(message)
            }
        }
        _ => PageError::Transient(message),
    }
}

fn classify_new(e: NewSessionError) -> PageError {
    let message = e.to_string();
    let reason = match &e {
        NewSessionError::Failed(_) | NewSessionError::FailedC(_) | NewSessionError::Lost(_) => EndReason::DriverDied,
        _ => EndReason::StartFailed,
    };
    let detail = match &e {
        NewSessionError::SessionNotCreated(w) => format!("{message}: {}", w.message),
        _ => message,
    };
    PageError::Gone { reason, message: detail }
}

/// WhatsApp Web's connection state, `WAWebSocketModel`'s `Socket.state`
/// (the list in `shared/design/whatsapp-web.md`), plus `Loading` while the
/// page itself loads. Read from and shown as the page's upper-case names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "String")]
pub enum SocketState {
    /// No page (or a page still loading): `LOADING`.
    #[default]
    Loading,
    /// Connecting to WhatsApp's servers.
    Opening,
    /// A phone is pairing (after a scan).
    Pairing,
    /// The socket was not started yet.
    Unlaunched,
    /// Needs a QR scan.
    Unpaired,
    /// Needs a QR scan; the QR refs ran out (`Cmd.refreshQR()` asks anew).
    UnpairedIdle,
    /// Logged in (synced once `hasSynced`).
    Connected,
    /// The connection dropped; the page retries by itself.
    Timeout,
    /// Opened in another WhatsApp Web.
    Conflict,
    /// Banned (terms of service): a human is needed.
    TosBlock,
    /// A business account banned: a human is needed.
    SmbTosBlock,
    /// Blocked through a proxy: a human is needed.
    ProxyBlock,
    /// This WhatsApp Web build is too old: a human is needed.
    DeprecatedVersion,
    /// A name this version does not know.
    Other(String),
}

impl SocketState {
    const NAMED: [(SocketState, &'static str); 13] = [
        (Self::Loading, "LOADING"),
        (Self::Opening, "OPENING"),
        (Self::Pairing, "PAIRING"),
        (Self::Unlaunched, "UNLAUNCHED"),
        (Self::Unpaired, "UNPAIRED"),
        (Self::UnpairedIdle, "UNPAIRED_IDLE"),
        (Self::Connected, "CONNECTED"),
        (Self::Timeout, "TIMEOUT"),
        (Self::Conflict, "CONFLICT"),
        (Self::TosBlock, "TOS_BLOCK"),
        (Self::SmbTosBlock, "SMB_TOS_BLOCK"),
        (Self::ProxyBlock, "PROXYBLOCK"),
        (Self::DeprecatedVersion, "DEPRECATED_VERSION"),
    ];

    /// The page's name for the state.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Other(s) => s,
            known => Self::NAMED.iter().find(|(s, _)| s == known).map_or("", |(_, n)| n),
        }
    }
}

impl From<String> for SocketState {
    fn from(s: String) -> Self {
        Self::NAMED.iter().find(|(_, n)| *n == s).map_or(Self::Other(s), |(state, _)| state.clone())
    }
}

impl From<&str> for SocketState {
    fn from(s: &str) -> Self {
        Self::from(s.to_string())
    }
}

impl std::fmt::Display for SocketState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The page's state as the adapter reports it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Snapshot {
    /// `Socket.state`.
    pub state: SocketState,
    /// `Socket.hasSynced`.
    pub synced: bool,
    /// Own chat id when logged in.
    pub me: Option<String>,
    pub pushname: Option<String>,
    /// The full QR string while one is shown. A secret: never log it.
    pub qr: Option<String>,
    /// The page was reached through `?post_logout=1`.
    #[serde(default)]
    pub post_logout: bool,
    /// The adapter's load id (one per document it was installed in).
    #[serde(default)]
    pub load: Option<String>,
    /// The tab's documents counted up to this one (1 for the first; 0 when
    /// the page has no sessionStorage).
    #[serde(default)]
    pub load_no: Option<u64>,
    /// Events the adapter had raised in this document when it took the
    /// snapshot.
    #[serde(default)]
    pub seq: Option<u64>,
}

impl Snapshot {
    /// Where this snapshot stands among the page's: `(load_no, seq)`,
    /// ordered (a later document's snapshots are newer than any of an
    /// earlier one's). `None` from an adapter that gives no order.
    pub fn order(&self) -> Option<(u64, u64)> {
        Some((self.load_no?, self.seq?))
    }

    /// Whether this snapshot was taken before `newer` (the newest one
    /// applied): a drain can be answered after pushes taken later, even
    /// after the next document's.
    pub fn older_than(&self, newer: &Snapshot) -> bool {
        matches!((newer.order(), self.order()), (Some(newer), Some(mine)) if mine < newer)
    }
}

/// One event queued by the adapter.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum PageEvent {
    State {
        state: SocketState,
    },
    Synced {
        value: bool,
    },
    Qr,
    Logout,
    Ack {
        id: String,
        ack: i8,
    },
    SendError {
        id: String,
        code: Option<i64>,
        result: Option<String>,
    },
    /// A contact's message reached the account: `from` is the sender's
    /// number (digits), `kind` WhatsApp Web's message type (`chat`,
    /// `image`, `document`, …), `body` the text or a media message's
    /// caption, `t` WhatsApp's timestamp (Unix seconds).
    Incoming {
        id: String,
        from: String,
        #[serde(rename = "type")]
        kind: String,
        body: String,
        t: i64,
    },
    Loaded {
        post_logout: bool,
    },
}

/// An event with the adapter's id for it (`n`: unique per event, kept
/// across the reload that may deliver it twice; `None` from an adapter that
/// gives none).
#[derive(Debug, Clone, PartialEq)]
pub struct Numbered {
    pub n: Option<String>,
    pub event: PageEvent,
}

/// What one poll found, or one message the page pushed.
#[derive(Debug, Clone, PartialEq)]
pub enum Poll {
    /// The page is (re)loading: `window.Debug.VERSION` is not there yet.
    /// `logout`: the page being left had queued a logout, or this is the
    /// `?post_logout=1` page.
    Loading { logout: bool },
    /// Events and the current state. `injected` is true when this poll had
    /// to install the adapter (a navigation happened).
    Ready { events: Vec<Numbered>, snap: Snapshot, injected: bool },
}

/// What the page pushed through the BiDi channel: the same shapes a poll
/// reads, as JSON text.
///
/// Errors: [`PageError::Transient`] for a text that is not one of them.
pub fn pushed(text: &str) -> Result<Poll, PageError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| PageError::Transient(format!("the page pushed something that is not JSON: {e}")))?;
    if value.get("loading").is_some() {
        return Ok(Poll::Loading { logout: value.get("logout") == Some(&json!(true)) });
    }
    ready(value, false)
}

/// A drained or pushed `{events, snap}`; an event this build does not know
/// is skipped, not fatal.
fn ready(value: Value, injected: bool) -> Result<Poll, PageError> {
    let drained: Drained =
        serde_json::from_value(value).map_err(|e| PageError::Transient(format!("adapter returned an unexpected shape: {e}")))?;
    let events = drained
        .events
        .into_iter()
        .filter_map(|v| {
            let n = v.get("n").and_then(Value::as_str).map(str::to_string);
            serde_json::from_value(v).ok().map(|event| Numbered { n, event })
        })
        .collect();
    Ok(Poll::Ready { events, snap: drained.snap, injected })
}

/// What the page pushes, as the Session reads it (see
/// [`crate::whatsapp::bidi`]).
pub type PageEvents = tokio::sync::mpsc::Receiver<BidiEvent>;

#[derive(Deserialize)]
struct Drained {
    #[serde(default)]
    events: Vec<Value>,
    snap: Snapshot,
}

/// A sent text as the page reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct Sent {
    pub id: String,
    pub to: String,
    /// -1 error, 0 pending, 1 server, 2 device, 3 read, 4 played.
    pub ack: i8,
    /// The page already held this key: nothing was sent this time.
    #[serde(default)]
    pub existed: bool,
}

/// Why the page refused a send (the page itself is fine).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendRefused {
    #[error("{0} is not on WhatsApp")]
    NotOnWhatsApp(String),
    #[error("invalid chat id: {0}")]
    InvalidWid(String),
    #[error("{0}")]
    Other(String),
}

/// A Chromium with one WhatsApp Web page. Clones share the WebDriver
/// session (and its BiDi connection).
#[derive(Clone)]
pub struct Page {
    client: Client,
    bidi: Option<Arc<Pushing>>,
}

/// The BiDi side of a page: the connection, the page's browsing context and
/// the CDP session chromedriver holds on that context's tab (`None` if it
/// would not say).
struct Pushing {
    bidi: Bidi,
    context: String,
    cdp_session: Option<String>,
}

/// How long a BiDi setup command may take.
const BIDI_COMMAND: Duration = Duration::from_secs(10);

impl Page {
    /// Starts Chromium on `profile` through the chromedriver at
    /// `webdriver_url` and loads `config.whatsapp.url`. With
    /// `whatsapp.events = "bidi"` the adapter is installed as a preload
    /// script first and what the page pushes comes out of the returned
    /// [`PageEvents`]; `None` when the page is polled (configured so, or
    /// chromedriver offered no BiDi: logged as a warning).
    pub async fn open(
        webdriver_url: &str,
        profile: &Path,
        config: &Config,
        events: EventMode,
    ) -> Result<(Page, Option<PageEvents>), PageError> {
        let mut args = vec![
            format!("--user-data-dir={}", profile.display()),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-gpu".into(),
            // Keep timers running at full rate in a page nobody looks at.
            "--disable-background-timer-throttling".into(),
            "--disable-renderer-backgrounding".into(),
            "--disable-backgrounding-occluded-windows".into(),
            "--window-size=1280,900".into(),
        ];
        if config.browser.headless {
            args.push("--headless=new".into());
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            // Chromium refuses to start as root with its sandbox on.
            args.push("--no-sandbox".into());
        }
        args.extend(config.browser.args.iter().cloned());
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), json!({"binary": config.browser.chromium, "args": args}));
        caps.insert("pageLoadStrategy".into(), json!("eager"));
        if events == EventMode::Bidi {
            caps.insert("webSocketUrl".into(), json!(true));
        }
        caps.insert(
            "timeouts".into(),
            json!({"script": config.whatsapp.send_timeout.as_millis() as u64, "pageLoad": config.whatsapp.load_timeout.as_millis() as u64}),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector).capabilities(caps).connect(webdriver_url).await.map_err(classify_new)?;
        let (bidi, events) = match events {
            EventMode::Poll => (None, None),
            EventMode::Bidi => match Self::push_events(&client).await {
                Ok((pushing, events)) => (Some(Arc::new(pushing)), Some(events)),
                Err(why) => {
                    tracing::warn!(error = %why, "no WebDriver BiDi: the page is polled every whatsapp.poll_interval instead");
                    (None, None)
                }
            },
        };
        let page = Page { client, bidi };
        if let Err(e) = page.client.goto(&config.whatsapp.url).await {
            let err = classify(e);
            // A page that failed to load still holds a browser: close it.
            let _ = page.client.clone().close().await;
            return Err(match err {
                PageError::Transient(message) => PageError::Gone { reason: EndReason::StartFailed, message },
                gone => gone,
            });
        }
        Ok((page, events))
    }

    /// Connects to the session's BiDi WebSocket, subscribes to what the
    /// Session listens to and installs [`BOOT`] as a preload script.
    /// Errors: why BiDi cannot be used (the caller falls back to polling).
    async fn push_events(client: &Client) -> Result<(Pushing, PageEvents), String> {
        let url = client
            .capabilities()
            .and_then(|caps| caps.get("webSocketUrl"))
            .and_then(Value::as_str)
            .ok_or("chromedriver answered no webSocketUrl")?
            .to_string();
        let (bidi, events) = tokio::time::timeout(BIDI_COMMAND, Bidi::connect(&url))
            .await
            .map_err(|_| format!("BiDi connect: no answer within {BIDI_COMMAND:?}"))??;
        bidi.command("session.subscribe", json!({"events": SUBSCRIBED}), BIDI_COMMAND).await.map_err(|e| e.to_string())?;
        let tree = bidi.command("browsingContext.getTree", json!({"maxDepth": 0}), BIDI_COMMAND).await.map_err(|e| e.to_string())?;
        let context =
            tree.pointer("/contexts/0/context").and_then(Value::as_str).ok_or("browsingContext.getTree named no context")?.to_string();
        let channel = json!([{"type": "channel", "value": {"channel": CHANNEL}}]);
        // Only the page's own tab: a tab WhatsApp Web opens for a link must
        // not get the adapter (nor speak on its channel).
        let params = json!({"functionDeclaration": BOOT.as_str(), "arguments": channel, "contexts": [context]});
        bidi.command("script.addPreloadScript", params, BIDI_COMMAND).await.map_err(|e| e.to_string())?;
        // Which tab a renderer crash is about (`goog:cdp.getSession`, a
        // chromedriver extension). Without it every crash counts as the
        // page's own, as a crash of the page would be missed otherwise.
        let cdp_session = match bidi.command("goog:cdp.getSession", json!({"context": context}), BIDI_COMMAND).await {
            Ok(answer) => answer.get("session").and_then(Value::as_str).map(str::to_string),
            Err(e) => {
                tracing::warn!(error = %e, "no CDP session for the page's tab: every renderer crash counts as the page's");
                None
            }
        };
        Ok((Pushing { bidi, context, cdp_session }, events))
    }

    /// Whether a renderer crash pushed for the CDP session `session` (see
    /// [`BidiEvent::Crashed`]) is this page's own: true unless both it and
    /// the page's session are known and differ (another tab crashed, one
    /// WhatsApp Web or a link opened).
    pub fn own_crash(&self, session: Option<&str>) -> bool {
        match (self.bidi.as_ref().and_then(|p| p.cdp_session.as_deref()), session) {
            (Some(own), Some(crashed)) => own == crashed,
            _ => true,
        }
    }

    /// How the page's events arrive: pushed (BiDi) or polled.
    pub fn events(&self) -> EventMode {
        if self.bidi.is_some() {
            EventMode::Bidi
        } else {
            EventMode::Poll
        }
    }

    /// Runs [`BOOT`] in the current document now, even if it ran there
    /// already (the page is ready and still has no adapter: the preload
    /// script did not run, or its install keeps failing).
    async fn boot(&self, pushing: &Pushing) -> Result<(), PageError> {
        let params = json!({
            "functionDeclaration": BOOT.as_str(),
            "arguments": [{"type": "channel", "value": {"channel": CHANNEL}}, {"type": "boolean", "value": true}],
            "target": {"context": pushing.context},
            "awaitPromise": false,
        });
        pushing
            .bidi
            .command("script.callFunction", params, BIDI_COMMAND)
            .await
            .map(|_| ())
            .map_err(|e| PageError::Transient(format!("boot: {e}")))
    }

    /// One classic round trip (a trivial `execute`), for telling why a BiDi
    /// connection dropped: `Err(Gone)` if browser or chromedriver are gone.
    pub async fn probe(&self) -> Result<(), PageError> {
        self.client.execute("return 1", vec![]).await.map(|_| ()).map_err(classify)
    }

    /// Closes the BiDi connection alone, as a network fault would (fault
    /// injection for tests). False if the page has none.
    #[cfg(debug_assertions)]
    pub fn drop_bidi(&self) -> bool {
        self.bidi.as_ref().is_some_and(|p| p.bidi.close())
    }

    /// Crashes one renderer by navigating a tab to `chrome://crash`: the
    /// page's own (`own`), or a second tab opened for it and closed after,
    /// the page's own untouched; the other renderers (chromedriver's BiDi
    /// mapper's among them) live on (fault injection for tests). False if
    /// the page has no BiDi connection or the tab could not be opened.
    #[cfg(debug_assertions)]
    pub async fn crash_tab(&self, own: bool) -> bool {
        let Some(pushing) = &self.bidi else { return false };
        let context = if own {
            pushing.context.clone()
        } else {
            let Ok(tab) = pushing.bidi.command("browsingContext.create", json!({"type": "tab"}), BIDI_COMMAND).await else { return false };
            let Some(context) = tab.get("context").and_then(Value::as_str) else { return false };
            context.to_string()
        };
        // The navigation fails by design (the renderer dies under it).
        let _ = pushing.bidi.command("browsingContext.navigate", json!({"context": context, "url": "chrome://crash"}), BIDI_COMMAND).await;
        if !own {
            // Best effort: a crashed tab left open changes nothing.
            let _ = pushing.bidi.command("browsingContext.close", json!({"context": context}), BIDI_COMMAND).await;
        }
        true
    }

    /// Drains the adapter's queue with one short `execute`. A polled page
    /// without the adapter (a navigation removed it) gets it injected; a
    /// pushing page gets [`BOOT`] run over BiDi instead, if the preload
    /// script did not install it.
    pub async fn poll(&self) -> Result<Poll, PageError> {
        let value = self.client.execute(&TICK, vec![json!(ADAPTER_VERSION)]).await.map_err(classify)?;
        if value.get("loading").is_some() {
            return Ok(Poll::Loading { logout: value.get("logout") == Some(&json!(true)) });
        }
        if value.get("inject").is_none() {
            return ready(value, false);
        }
        if let Some(pushing) = &self.bidi {
            self.boot(pushing).await?;
            return Ok(Poll::Loading { logout: value.get("logout") == Some(&json!(true)) });
        }
        let script = format!("({ADAPTER})(arguments[0]); return window.__wasup ? window.__wasup.drain() : {{loading: true}};");
        let value = self.client.execute(&script, vec![json!(ADAPTER_VERSION)]).await.map_err(classify)?;
        if value.get("loading").is_some() {
            return Ok(Poll::Loading { logout: false });
        }
        ready(value, true)
    }

    /// Sends `body` to `to` (a chat id) with the key id `id`. Returns once
    /// the message is in the page's `Msg` collection (ack 0 or later); acks
    /// then arrive as [`PageEvent::Ack`].
    pub async fn send(&self, to: &str, body: &str, id: &str) -> Result<Result<Sent, SendRefused>, PageError> {
        const SCRIPT: &str = r#"
const [to, body, id, done] = arguments;
if (!window.__wasup) { done({error: "not_ready", message: "the page adapter is not loaded (page reloading)"}); return; }
window.__wasup.send(to, body, id).then(done, (e) => done({error: "send_failed", message: String((e && e.message) || e)}));
"#;
        let value = self.client.execute_async(SCRIPT, vec![json!(to), json!(body), json!(id)]).await.map_err(classify)?;
        sent_or_refused(to, value)
    }

    /// Sends `media` to `to` with the key id `id` and `caption` (may be
    /// empty), through WhatsApp Web's media path (prepare, encrypt, upload,
    /// send). The file is copied into the page first, [`STAGE_BYTES`] per
    /// command, and checked there against its SHA-256. Returns like
    /// [`Page::send`].
    pub async fn send_media(&self, to: &str, caption: &str, id: &str, media: &Media) -> Result<Result<Sent, SendRefused>, PageError> {
        const STAGE: &str = "return window.__wasup ? window.__wasup.stage(arguments[0], arguments[1], arguments[2]) : false;";
        const SCRIPT: &str = r#"
const [to, id, token, meta, done] = arguments;
if (!window.__wasup) { done({error: "not_ready", message: "the page adapter is not loaded (page reloading)"}); return; }
window.__wasup.sendMedia(to, id, token, meta).then(done, (e) => done({error: "send_failed", message: String((e && e.message) || e)}));
"#;
        let empty: [&[u8]; 1] = [&[]];
        let pieces: Vec<&[u8]> = if media.data.is_empty() { empty.to_vec() } else { media.data.chunks(STAGE_BYTES).collect() };
        for (seq, piece) in pieces.into_iter().enumerate() {
            let staged = self.client.execute(STAGE, vec![json!(id), json!(seq), json!(B64.encode(piece))]).await.map_err(classify)?;
            if staged != json!(true) {
                return Ok(Err(SendRefused::Other("the page lost the file while it was copied in (it reloaded)".into())));
            }
        }
        let meta = json!({
            "mimetype": media.mimetype,
            "filename": media.filename,
            "caption": caption,
            "size": media.data.len(),
            "sha256": media.sha256_hex(),
            "asDocument": media.kind() == MediaKind::Document,
        });
        let value = self.client.execute_async(SCRIPT, vec![json!(to), json!(id), json!(id), meta]).await.map_err(classify)?;
        sent_or_refused(to, value)
    }

    /// Looks a message this account sent up by its key id (after a crash:
    /// did a send that was under way reach WhatsApp?). `Some(ack)` if the
    /// page holds it.
    pub async fn lookup(&self, to: &str, id: &str) -> Result<Option<i8>, PageError> {
        const SCRIPT: &str = "if (!window.__wasup) return {error: 'not_ready'}; try { return {found: window.__wasup.lookup(arguments[0], arguments[1])}; } catch (e) { return {error: String(e && e.message || e)}; }";
        let value = self.client.execute(SCRIPT, vec![json!(to), json!(id)]).await.map_err(classify)?;
        if let Some(error) = value.get("error").and_then(Value::as_str) {
            return Err(PageError::Transient(format!("lookup: {error}")));
        }
        Ok(value.get("found").and_then(|f| f.get("ack")).and_then(Value::as_i64).map(|a| a as i8))
    }

    /// Shows "typing…" in the chat `to` (best effort: false if the page
    /// could not).
    pub async fn composing(&self, to: &str) -> Result<bool, PageError> {
        const SCRIPT: &str = "const [to, done] = arguments; if (!window.__wasup) { done(false); return; } window.__wasup.composing(to).then(done, () => done(false));";
        let value = self.client.execute_async(SCRIPT, vec![json!(to)]).await.map_err(classify)?;
        Ok(value == json!(true))
    }

    /// Runs one of the adapter's no-argument actions (`logout`, `takeover`,
    /// `refreshQR`).
    pub async fn action(&self, name: &'static str) -> Result<(), PageError> {
        let script = format!("if (window.__wasup) {{ window.__wasup.{name}(); return true; }} return false;");
        let done = self.client.execute(&script, vec![]).await.map_err(classify)?;
        if done == json!(true) {
            Ok(())
        } else {
            Err(PageError::Transient(format!("{name}: the page adapter is not loaded")))
        }
    }

    /// Closes the browser (the profile stays). Waits at most `within`.
    pub async fn close(self, within: Duration) {
        let _ = tokio::time::timeout(within, self.client.close()).await;
    }
}

/// A send's answer from the adapter: the message, or why it was refused.
fn sent_or_refused(to: &str, value: Value) -> Result<Result<Sent, SendRefused>, PageError> {
    if let Some(error) = value.get("error").and_then(Value::as_str) {
        let message = value.get("message").and_then(Value::as_str).unwrap_or(error).to_string();
        return Ok(Err(match error {
            "not_on_whatsapp" => SendRefused::NotOnWhatsApp(to.to_string()),
            "invalid_wid" => SendRefused::InvalidWid(message),
            _ => SendRefused::Other(message),
        }));
    }
    serde_json::from_value(value).map(Ok).map_err(|e| PageError::Transient(format!("send returned an unexpected shape: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webdriver_errors_are_classified() {
        let crashed = CmdError::NotW3C(json!("tab crashed"));
        assert_eq!(classify(crashed).end_reason(), Some(EndReason::PageCrashed));
        let script = CmdError::NotW3C(json!({"weird": true}));
        assert_eq!(classify(script).end_reason(), None);
        let gone = CmdError::Lost(std::io::Error::other("connection refused"));
        assert_eq!(classify(gone).end_reason(), Some(EndReason::DriverDied));
    }

    #[test]
    fn a_media_send_takes_a_command_per_piece_and_one_to_send() {
        let piece = STAGE_BYTES as u64;
        assert_eq!([0, 1, piece, piece + 1].map(media_send_commands), [2, 2, 2, 3]);
        // WhatsApp's 100 MB document limit: 128 pieces.
        assert_eq!(media_send_commands(100_000_000), 129);
    }

    #[test]
    fn a_late_snapshot_is_older_even_from_the_document_before() {
        let snap = |load_no, seq| Snapshot { load_no: Some(load_no), seq: Some(seq), ..Snapshot::default() };
        assert!(snap(2, 3).older_than(&snap(2, 5)), "a drain answered after later pushes");
        assert!(snap(1, 9).older_than(&snap(2, 0)), "the document before, answered after the next one pushed");
        assert!(!snap(2, 5).older_than(&snap(2, 5)), "the same point is not older");
        assert!(!snap(3, 0).older_than(&snap(2, 5)));
        assert!(!Snapshot::default().older_than(&snap(2, 5)), "an adapter without order is taken as it comes");
        assert!(!snap(1, 0).older_than(&Snapshot::default()));
    }

    #[test]
    fn pushed_messages_parse() {
        assert_eq!(pushed(r#"{"loading": true, "logout": true}"#).unwrap(), Poll::Loading { logout: true });
        let ready = pushed(r#"{"events": [{"k": "ack", "id": "3EB0AA", "ack": 1, "at": 1, "n": "x.0"}], "snap": {"state": "CONNECTED", "synced": true, "load": "x", "load_no": 1, "seq": 1}}"#).unwrap();
        let Poll::Ready { events, snap, injected } = ready else { panic!("{ready:?}") };
        assert_eq!((events[0].n.as_deref(), snap.order(), injected), (Some("x.0"), Some((1, 1)), false));
        assert!(pushed("not json").is_err());
        assert!(pushed(r#"{"events": []}"#).is_err(), "no snapshot");
    }

    #[test]
    fn events_parse() {
        let v = json!([
            {"k": "state", "state": "CONNECTED", "at": 1},
            {"k": "ack", "id": "3EB0AA", "ack": 2, "at": 1},
            {"k": "logout", "at": 1},
            {"k": "incoming", "id": "AB12", "from": "4915199990000", "type": "image", "body": "a caption", "t": 1700000000, "at": 1},
            {"k": "something_new", "at": 1}
        ]);
        let events: Vec<PageEvent> = v.as_array().unwrap().iter().filter_map(|v| serde_json::from_value(v.clone()).ok()).collect();
        assert_eq!(
            events,
            [
                PageEvent::State { state: "CONNECTED".into() },
                PageEvent::Ack { id: "3EB0AA".into(), ack: 2 },
                PageEvent::Logout,
                PageEvent::Incoming {
                    id: "AB12".into(),
                    from: "4915199990000".into(),
                    kind: "image".into(),
                    body: "a caption".into(),
                    t: 1_700_000_000
                },
            ]
        );
    }
}
