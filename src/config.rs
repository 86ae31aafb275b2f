//! The daemon's configuration: `config.toml`, every key optional.
//!
//! The file at the top of the repository is the documented default. Unknown
//! keys are rejected at start (a typo in a key would otherwise be silently
//! ignored and the default used), durations are humantime strings (`"30s"`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The whole configuration. Every section and key has a default.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub http: HttpConfig,
    pub state: StateConfig,
    pub store: StoreConfig,
    pub cluster: ClusterConfig,
    pub whatsapp: WhatsAppConfig,
    pub browser: BrowserConfig,
    pub restart: RestartConfig,
    pub heartbeat: HeartbeatConfig,
    pub health: HealthConfig,
    pub alerts: AlertsConfig,
    pub campaigns: CampaignsConfig,
    pub numbers: NumbersConfig,
    pub opt_outs: OptOutsConfig,
    pub limits: LimitsConfig,
    /// `[[webhooks]]`: subscriptions to events, delivered through the
    /// store's outbox.
    pub webhooks: Vec<EventWebhookConfig>,
    pub webhook_delivery: WebhookDeliveryConfig,
    pub media: MediaConfig,
    pub objectives: ObjectivesConfig,
}

/// `[objectives]`: the targets each session's figures are held to (in the
/// session view, `/metrics`, and `session.objective` when one is crossed).
/// Defaults are seed 004's "key metrics to watch" (the `device_removed`
/// post-mortem, `004_device-removed-postmortem.ru.md`, «Метрики и
/// мониторинг»): key files under 100, at most 10 reconnects a day, 99.9 %
/// uptime, recovery under 5 minutes. See [`crate::policy::objectives`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectivesConfig {
    /// Least share of the time meant to run spent `CONNECTED`, over 24 h
    /// and 7 days, 0 to 1. Default 0.999.
    pub uptime: f64,
    /// Most restarts in 24 h. Default 10.
    pub reconnects_per_day: u64,
    /// Longest time from leaving `CONNECTED` (not by the operator) to
    /// `CONNECTED` again. Default 5 min.
    #[serde(with = "humantime_serde")]
    pub recovery: Duration,
    /// Most files under the key store (`health.key_files.path`).
    /// Default 100.
    pub key_files: u64,
}

impl Default for ObjectivesConfig {
    fn default() -> Self {
        let t = crate::policy::objectives::Targets::default();
        Self {
            uptime: t.uptime,
            reconnects_per_day: t.reconnects_per_day,
            recovery: Duration::from_millis(t.recovery_ms),
            key_files: t.key_files,
        }
    }
}

impl ObjectivesConfig {
    /// The pure policy's view of these settings.
    pub fn targets(&self) -> crate::policy::objectives::Targets {
        crate::policy::objectives::Targets {
            uptime: self.uptime,
            reconnects_per_day: self.reconnects_per_day,
            recovery_ms: u64::try_from(self.recovery.as_millis()).unwrap_or(u64::MAX),
            key_files: self.key_files,
        }
    }
}

/// `[media]`: the largest file a media message may carry, per kind (see
/// [`crate::whatsapp::media::MediaKind`]). Defaults are WhatsApp's
/// published limits (the WhatsApp Business Platform's "Supported media
/// types", MB read as 10^6 bytes); none may be above
/// [`crate::whatsapp::media::PAGE_MAX_BYTES`]. A larger file gets 413
/// naming the key, and nothing is sent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// JPEG and PNG photos. Default `"5MB"`.
    pub image_max: bytesize::ByteSize,
    /// MP4 and 3GPP videos. Default `"16MB"`.
    pub video_max: bytesize::ByteSize,
    /// AAC, AMR, MPEG, MP4 and OGG audio. Default `"16MB"`.
    pub audio_max: bytesize::ByteSize,
    /// Any other file, sent as a document. Default `"100MB"`.
    pub document_max: bytesize::ByteSize,
}

impl Default for MediaConfig {
    fn default() -> Self {
        use crate::whatsapp::media as m;
        Self {
            image_max: bytesize::ByteSize::b(m::WHATSAPP_IMAGE_MAX),
            video_max: bytesize::ByteSize::b(m::WHATSAPP_VIDEO_MAX),
            audio_max: bytesize::ByteSize::b(m::WHATSAPP_AUDIO_MAX),
            document_max: bytesize::ByteSize::b(m::WHATSAPP_DOCUMENT_MAX),
        }
    }
}

impl MediaConfig {
    /// The limit for files of `kind`, bytes.
    pub fn limit(&self, kind: crate::whatsapp::media::MediaKind) -> u64 {
        use crate::whatsapp::media::MediaKind;
        match kind {
            MediaKind::Image => self.image_max.as_u64(),
            MediaKind::Video => self.video_max.as_u64(),
            MediaKind::Audio => self.audio_max.as_u64(),
            MediaKind::Document => self.document_max.as_u64(),
        }
    }

    /// The largest of the limits, bytes.
    pub fn largest(&self) -> u64 {
        [self.image_max, self.video_max, self.audio_max, self.document_max].iter().map(|b| b.as_u64()).max().unwrap_or(0)
    }
}

/// `[numbers]`: pacing per WhatsApp number (session), shared by all its
/// campaigns; a campaign's own pacing can only slow it down further. The
/// number's daily cap and quiet hours are `campaigns.daily_cap` and
/// `campaigns.quiet_hours`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NumbersConfig {
    /// Shortest gap after the number's previous send ended. Default 20 s.
    #[serde(with = "humantime_serde")]
    pub min_delay: Duration,
    /// Longest gap. Default 45 s.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Campaign sends per day to numbers that never wrote to this account;
    /// 0: no cap. Default 0 (one report: 15–20 such messages a day got a
    /// number restricted, Baileys issue #1983).
    pub first_contact_cap: u32,
    pub warmup: WarmupConfig,
}

impl Default for NumbersConfig {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_secs(20),
            max_delay: Duration::from_secs(45),
            first_contact_cap: 0,
            warmup: WarmupConfig::default(),
        }
    }
}

/// `[numbers.warmup]`: a new number's daily cap starts at `start` and grows
/// by `growth` each day it sends, up to `campaigns.daily_cap`; after
/// `idle_reset` without a send it starts again. See
/// [`crate::policy::pacing::Warmup`] for the sources of the defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WarmupConfig {
    /// Default true.
    pub enabled: bool,
    /// The first day's cap. Default 20.
    pub start: u32,
    /// Growth per sending day. Default 1.5.
    pub growth: f64,
    /// Idle time after which the ramp starts again (whole days count).
    /// Default 14 days.
    #[serde(with = "humantime_serde")]
    pub idle_reset: Duration,
}

impl Default for WarmupConfig {
    fn default() -> Self {
        Self { enabled: true, start: 20, growth: 1.5, idle_reset: Duration::from_secs(14 * 86_400) }
    }
}

impl Config {
    /// `[store]` and `[cluster]` agree: a PostgreSQL store needs its URL
    /// and this node's id and address; a cluster needs PostgreSQL.
    fn validate_store(&self) -> Result<(), String> {
        let (store, cluster) = (&self.store, &self.cluster);
        match store.backend {
            StoreBackend::Sled => {
                if store.url.is_some() {
                    return Err("store.url is set but store.backend is \"sled\": set backend = \"postgres\" or remove url".into());
                }
                if cluster.node.is_some() || cluster.advertise.is_some() {
                    return Err("[cluster] needs store.backend = \"postgres\" (nodes share one PostgreSQL store)".into());
                }
            }
            StoreBackend::Postgres => {
                let url = store.url.as_deref().unwrap_or("");
                if url.is_empty() {
                    return Err("store.backend = \"postgres\" needs store.url (postgres://user@host/db)".into());
                }
                // The parser's message may quote the URL, password and all:
                // not repeated here.
                let Ok(pg) = url.parse::<tokio_postgres::Config>() else {
                    return Err("store.url is not a valid PostgreSQL connection string".into());
                };
                // No TLS client yet: over TCP, sslmode must say so, rather
                // than "prefer" falling back to clear text unnoticed.
                let tcp = pg.get_hosts().iter().any(|h| matches!(h, tokio_postgres::config::Host::Tcp(_)));
                if tcp && pg.get_ssl_mode() != tokio_postgres::config::SslMode::Disable {
                    return Err("store.url: TLS to PostgreSQL is not supported yet; use a unix socket (host=/run/postgresql) or, on a trusted network, sslmode=disable".into());
                }
                let node = cluster.node.as_deref().unwrap_or("");
                if node.is_empty() {
                    return Err("store.backend = \"postgres\" needs cluster.node (this node's unique, stable id)".into());
                }
                if !crate::session_state::is_name(node) {
                    return Err(format!("cluster.node must be letters, digits, '-' or '_', at most 64, got {node:?}"));
                }
                let advertise = cluster.advertise.as_deref().unwrap_or("");
                if !(advertise.starts_with("http://") || advertise.starts_with("https://")) {
                    return Err("store.backend = \"postgres\" needs cluster.advertise, this node's API URL (http://10.0.0.5:8787)".into());
                }
            }
        }
        if store.timeout < Duration::from_millis(100) {
            return Err("store.timeout must be at least 100ms".into());
        }
        if cluster.lease_ttl < Duration::from_secs(3) {
            return Err("cluster.lease_ttl must be at least 3s".into());
        }
        if cluster.max_sessions == 0 {
            return Err("cluster.max_sessions must be at least 1".into());
        }
        Ok(())
    }

    /// The pacing every number runs under, with no campaign's own gap or
    /// typing: its rules, `campaigns.quiet_hours` and `campaigns.timezone`.
    /// A campaign's pacing starts from it (`actors::campaign::pacing_for`).
    ///
    /// Errors: an unknown time zone, or quiet hours not `"HH:MM-HH:MM"`
    /// (both checked at start).
    pub fn number_pacing(&self) -> Result<crate::policy::pacing::Pacing, String> {
        let c = &self.campaigns;
        let mut quiet_hours = Vec::new();
        if !c.quiet_hours.trim().is_empty() {
            quiet_hours.push(c.quiet_hours.parse().map_err(|e| format!("campaigns.quiet_hours: {e}"))?);
        }
        Ok(crate::policy::pacing::Pacing {
            min_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            typing_per_char: None,
            typing_max: c.typing_max,
            quiet_hours,
            tz: c.tz()?,
            number: self.numbers.rules(c),
        })
    }
}

impl NumbersConfig {
    /// The rules every number runs under.
    pub fn rules(&self, campaigns: &CampaignsConfig) -> crate::policy::pacing::NumberRules {
        let w = &self.warmup;
        crate::policy::pacing::NumberRules {
            min_delay: self.min_delay,
            max_delay: self.max_delay,
            daily_cap: (campaigns.daily_cap > 0).then_some(campaigns.daily_cap),
            warmup: w.enabled.then(|| crate::policy::pacing::Warmup {
                start: w.start,
                growth: w.growth,
                idle_reset_days: u32::try_from(w.idle_reset.as_secs() / 86_400).unwrap_or(u32::MAX),
            }),
            first_contact_cap: (self.first_contact_cap > 0).then_some(self.first_contact_cap),
        }
    }
}

/// `[opt_outs]`: replies that put their sender on the session's opt-out
/// list.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptOutsConfig {
    /// A reply whose whole text is one of these (ignoring case, accents,
    /// surrounding spaces and punctuation) opts its sender out. Default:
    /// [`crate::optout::DEFAULT_KEYWORDS`].
    pub keywords: Vec<String>,
}

impl Default for OptOutsConfig {
    fn default() -> Self {
        Self { keywords: crate::optout::DEFAULT_KEYWORDS.iter().map(|k| k.to_string()).collect() }
    }
}

/// `[limits]`: bounds on everything a request can make the daemon hold or
/// do. Over a limit, a request gets 400 or 413 with a JSON body that names
/// the limit, and nothing is stored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Recipients per campaign (rows after dropping duplicates count as
    /// given: every row). Default 100,000.
    pub recipients: usize,
    /// Columns of a campaign's CSV, or fields of a JSON recipient.
    /// Default 64.
    pub columns: usize,
    /// Bytes of one CSV cell or JSON recipient value. Default 4,096.
    pub cell_bytes: usize,
    /// Bytes of a campaign's template source. Default 16,384.
    pub template_bytes: usize,
    /// Characters of one rendered message, the same bound as the send API
    /// (WhatsApp's own limit). Default 65,536.
    pub text_chars: usize,
    /// minijinja fuel for rendering one recipient's message (about one
    /// unit per instruction). Default 100,000: a loop of more than about
    /// 20,000 steps runs out.
    pub template_fuel: u64,
    /// Sessions in total. Default 100.
    pub sessions: usize,
    /// Live event streams (SSE and WebSocket together) open at once; one
    /// more gets 429. A closed WebSocket frees its place at once, a closed
    /// SSE stream within 10 s (two keepalives). Default 64.
    pub streams: usize,
    /// Time a client has to send a whole request body. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Longest pacing gap (`max_delay`) a campaign may ask for. Default 24 h.
    #[serde(with = "humantime_serde")]
    pub max_gap: Duration,
    /// Campaign creations checked at once (template rendering and row
    /// checks run on the blocking pool); more wait their turn. Default 2.
    pub concurrent_creates: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            recipients: 100_000,
            columns: 64,
            cell_bytes: 4096,
            template_bytes: 16 * 1024,
            text_chars: 65_536,
            template_fuel: 100_000,
            sessions: 100,
            streams: 64,
            body_timeout: Duration::from_secs(30),
            max_gap: Duration::from_secs(24 * 3600),
            concurrent_creates: 2,
        }
    }
}

/// `[campaigns]`: settings every campaign runs under.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CampaignsConfig {
    /// IANA time zone for quiet hours and for counting days. Default `UTC`.
    pub timezone: String,
    /// ISO 3166 country for numbers written without a country code
    /// (`0151 …`); empty: such numbers are refused. Default empty.
    pub default_country: String,
    /// Campaign sends per session (number) per day, shared by all its
    /// campaigns; 0: no cap (a warm-up ramp still applies). Default 0.
    pub daily_cap: u32,
    /// The number's quiet hours, `"22:00-08:00"`; empty: none. A
    /// campaign's own `pacing.quiet_hours` apply as well.
    pub quiet_hours: String,
    /// How long a campaign waits for its lost session before it fails.
    /// Default 10 min.
    #[serde(with = "humantime_serde")]
    pub resume_grace: Duration,
    /// Pause after a reach-out timelock (error 463). Default 1 h.
    #[serde(with = "humantime_serde")]
    pub timelock_cooldown: Duration,
    /// Tries per recipient for a send that failed for a passing reason.
    /// Default 3.
    pub send_attempts: u32,
    /// First retry delay of such a send; doubles per try. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub retry_base: Duration,
    /// Typing time per character when a campaign has `typing`. Default 50 ms.
    #[serde(with = "humantime_serde")]
    pub typing_per_char: Duration,
    /// Longest typing time. Default 8 s.
    #[serde(with = "humantime_serde")]
    pub typing_max: Duration,
    /// A running campaign pauses (`PAUSED(opt_out_rate)`) when more than
    /// this share of its sent recipients opted out. Default 0.05.
    pub max_opt_out_rate: f64,
    /// ... counted from this many sent recipients on. Default 20.
    pub opt_out_min_sent: u32,
}

impl Default for CampaignsConfig {
    fn default() -> Self {
        Self {
            timezone: "UTC".into(),
            default_country: String::new(),
            daily_cap: 0,
            quiet_hours: String::new(),
            resume_grace: Duration::from_secs(600),
            timelock_cooldown: Duration::from_secs(3600),
            send_attempts: 3,
            retry_base: Duration::from_secs(5),
            typing_per_char: Duration::from_millis(50),
            typing_max: Duration::from_secs(8),
            max_opt_out_rate: 0.05,
            opt_out_min_sent: 20,
        }
    }
}

impl CampaignsConfig {
    /// The time zone, checked.
    pub fn tz(&self) -> Result<jiff::tz::TimeZone, String> {
        jiff::tz::TimeZone::get(&self.timezone).map_err(|e| format!("campaigns.timezone {:?}: {e}", self.timezone))
    }

    /// The default country, if one is set.
    pub fn country(&self) -> Result<Option<phonenumber::country::Id>, String> {
        if self.default_country.trim().is_empty() {
            return Ok(None);
        }
        crate::whatsapp::number::country(&self.default_country).map(Some).map_err(|e| format!("campaigns.default_country: {e}"))
    }
}

/// `[http]`: the control API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address the API listens on. Default `127.0.0.1:8787`.
    pub listen: SocketAddr,
    /// File holding the API token. Default: `<state.dir>/token`, created
    /// (mode 0600) with a random token on first start. `WASUP_TOKEN` wins.
    pub token_file: Option<PathBuf>,
    /// Largest request body accepted, in bytes, multipart part headers and
    /// preamble included; larger ones get 413. Default 1 MiB.
    pub max_body_bytes: usize,
    /// HTTP worker threads. Default: the number of cores, at least 2.
    pub workers: Option<usize>,
    /// Serve `/metrics` without the bearer token. Default false.
    pub metrics_public: bool,
}

impl HttpConfig {
    /// The worker count: `workers`, or the core count; at least 2.
    pub fn worker_count(&self) -> usize {
        self.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())).max(2)
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8787)),
            token_file: None,
            max_body_bytes: 1024 * 1024,
            workers: None,
            metrics_public: false,
        }
    }
}

/// `[state]`: where the store and the browser profiles live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// State directory (sled store, `profiles/<session>`, token).
    /// Default `/var/lib/wasup` (systemd's `StateDirectory=wasup`).
    pub dir: PathBuf,
    /// sled's page cache, bytes. Default 32 MiB (sled's own default is
    /// 1 GiB).
    pub cache_capacity: bytesize::ByteSize,
    /// A store whose writes keep failing this long makes the daemon stop
    /// its systemd watchdog pings, so systemd restarts it. Default 2 min.
    #[serde(with = "humantime_serde")]
    pub failing_limit: Duration,
    /// Where the browser profiles live (`<profiles_dir>/<session>`). In a
    /// cluster, storage every node mounts, which also keeps the campaign
    /// attachments (`.campaigns/`). Default `<dir>/profiles`.
    pub profiles_dir: Option<PathBuf>,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/var/lib/wasup"),
            cache_capacity: bytesize::ByteSize::mib(32),
            failing_limit: Duration::from_secs(120),
            profiles_dir: None,
        }
    }
}

impl StateConfig {
    /// The directory of the browser profiles: `profiles_dir`, or
    /// `<dir>/profiles`.
    pub fn profiles(&self) -> PathBuf {
        self.profiles_dir.clone().unwrap_or_else(|| self.dir.join("profiles"))
    }
}

/// `[store]`: which database keeps the state ([`crate::store`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sled` (default: embedded, in `<state.dir>/db`, one machine) or
    /// `postgres` (shared by the nodes of a cluster; needs `url`).
    pub backend: StoreBackend,
    /// PostgreSQL's connection string, libpq style
    /// (`postgres://wasup@/wasup?host=/run/postgresql`). May hold a
    /// password: never logged.
    pub url: Option<String>,
    /// How long one store call waits for PostgreSQL (connecting included)
    /// before it fails like a full disk does. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { backend: StoreBackend::Sled, url: None, timeout: Duration::from_secs(5) }
    }
}

/// [`StoreConfig::backend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    Sled,
    Postgres,
}

/// `[cluster]`: this node of a cluster on the PostgreSQL store (README
/// "Running several machines"; the design: leases with fencing).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This node's id: unique in the cluster and stable across restarts
    /// (letters, digits, `-`, `_`; at most 64). Required with the
    /// `postgres` store. A second process with the same id does not start.
    pub node: Option<String>,
    /// How the other nodes reach this node's API (`http://10.0.0.5:8787`).
    /// Required with the `postgres` store.
    pub advertise: Option<String>,
    /// How long a session's lease lasts without renewal (at least 3 s).
    /// A node renews every third of it and stops its sessions when it could
    /// not for half of it; another node takes a dead node's sessions once
    /// their leases expired. Default 15 s.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// The most sessions this node runs at once (placement gives each
    /// node at most its fair share, and never more than this). Default 40.
    pub max_sessions: u32,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self { node: None, advertise: None, lease_ttl: Duration::from_secs(15), max_sessions: 40 }
    }
}

/// `[whatsapp]`: the site the sessions open.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WhatsAppConfig {
    /// Page URL. Default `https://web.whatsapp.com/`; point it at
    /// `wasup sim` (`http://127.0.0.1:8788/`) to use the simulator.
    pub url: String,
    /// How long a freshly loaded page may take to define
    /// `window.Debug.VERSION` before the start counts as failed.
    /// Default 30 s (whatsapp-web.js's `authTimeoutMs`).
    #[serde(with = "humantime_serde")]
    pub load_timeout: Duration,
    /// How the page's events reach the session. Default [`EventMode::Bidi`].
    pub events: EventMode,
    /// `events = "poll"` (or BiDi unavailable): how often the session drains
    /// the page adapter's event queue. Default 250 ms: a logout is seen
    /// within about that long.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// `events = "bidi"`: how often a classic WebDriver round trip drains
    /// the queue anyway and proves browser and chromedriver alive (it alone
    /// notices a crash that took chromedriver's BiDi mapper with it).
    /// Default 5 s.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    /// `events = "bidi"`: after this many `bidi_lost` ends of one session
    /// within `restart.window`, its next runs poll the page instead
    /// (`session.health` event, reason `bidi_fallback`) until an operator's
    /// command leaves it with no run (stop, restart, recover, logout, or a
    /// start of a session not running), the daemon restarts, or the session
    /// moves to another node (cluster mode). 0: never fall back. Default 3.
    pub bidi_fallback_after: u32,
    /// How long a send may take in the page before it is reported as failed.
    /// Default 2 min (the seeds' message timeout).
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
    /// How long `POST /api/sessions/{name}/messages` waits for WhatsApp's
    /// server ack before answering with ack `PENDING`. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
}

impl Default for WhatsAppConfig {
    fn default() -> Self {
        Self {
            url: "https://web.whatsapp.com/".into(),
            load_timeout: Duration::from_secs(30),
            events: EventMode::Bidi,
            poll_interval: Duration::from_millis(250),
            check_interval: Duration::from_secs(5),
            bidi_fallback_after: 3,
            send_timeout: Duration::from_secs(120),
            ack_wait: Duration::from_secs(10),
        }
    }
}

/// `[browser]`: Chromium and chromedriver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrowserConfig {
    /// Chromium binary. Default `/usr/bin/chromium` (Debian's package).
    pub chromium: PathBuf,
    /// chromedriver binary. Default `/usr/bin/chromedriver`.
    pub chromedriver: PathBuf,
    /// Run Chromium headless. Default true.
    pub headless: bool,
    /// Extra Chromium arguments, appended to the built-in ones.
    pub args: Vec<String>,
    /// How long chromedriver may take to answer `/status` after it starts.
    /// Default 10 s.
    #[serde(with = "humantime_serde")]
    pub driver_start_timeout: Duration,
}

impl Default for BrowserConfig {
    fn default() -> Self {
        Self {
            chromium: PathBuf::from("/usr/bin/chromium"),
            chromedriver: PathBuf::from("/usr/bin/chromedriver"),
            headless: true,
            args: Vec::new(),
            driver_start_timeout: Duration::from_secs(10),
        }
    }
}

/// `[restart]`: how sessions come back after an end (`policy::restart`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestartConfig {
    /// Delay between the starts of stored sessions at boot. Default 2 s.
    #[serde(with = "humantime_serde")]
    pub boot_stagger: Duration,
    /// Backoff base: the first retry waits up to this long. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    /// Backoff cap: no retry waits longer. Default 5 min.
    #[serde(with = "humantime_serde")]
    pub backoff_cap: Duration,
    /// Restarts allowed within `window`; one more makes the session
    /// `FAILED` (with an alert) until an operator recovers it. Default 10.
    pub max_restarts: u32,
    /// The restart budget's window. Default 1 h.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Connected this long, the backoff attempts start again from 0.
    /// Default 10 min.
    #[serde(with = "humantime_serde")]
    pub reset_after: Duration,
    /// On `CONFLICT` (opened in another WhatsApp Web): `stay` (default, as
    /// whatsapp-web.js) or `takeover` after `takeover_after`.
    pub conflict: ConflictPolicy,
    /// Delay before taking over when `conflict = "takeover"`. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub takeover_after: Duration,
}

/// How the page's events (state changes, QR, logouts, acks, incoming
/// messages) reach the Session (`whatsapp.events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventMode {
    /// The page pushes them over WebDriver BiDi (`script.message`): an idle
    /// session costs nothing until something happens. Falls back to `poll`
    /// when chromedriver offers no BiDi.
    Bidi,
    /// The session drains the adapter's queue every `poll_interval` with a
    /// classic `execute`.
    Poll,
}

impl EventMode {
    /// The config's name for the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            EventMode::Bidi => "bidi",
            EventMode::Poll => "poll",
        }
    }
}

/// What a session does when its account is opened elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConflictPolicy {
    Stay,
    Takeover,
}

impl Default for RestartConfig {
    fn default() -> Self {
        Self {
            boot_stagger: Duration::from_secs(2),
            backoff_base: Duration::from_secs(5),
            backoff_cap: Duration::from_secs(300),
            max_restarts: 10,
            window: Duration::from_secs(3600),
            reset_after: Duration::from_secs(600),
            conflict: ConflictPolicy::Stay,
            takeover_after: Duration::from_secs(30),
        }
    }
}

impl RestartConfig {
    /// The pure policy's view of these settings.
    pub fn policy(&self) -> crate::policy::Policy {
        crate::policy::Policy {
            backoff_base: self.backoff_base,
            backoff_cap: self.backoff_cap,
            max_restarts: self.max_restarts,
            window: self.window,
            reset_after: self.reset_after,
        }
    }
}

/// `[heartbeat]`: the periodic read of the page's connection state.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeartbeatConfig {
    /// Default 30 s.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Misses in a row that count as one failure. Default 3.
    pub failures: u32,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        Self { interval: Duration::from_secs(30), failures: 3 }
    }
}

/// `[health]`: checks of the profile and the browser.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    pub key_files: KeyFilesConfig,
    pub memory: MemoryConfig,
}

/// `[health.key_files]`: the key-store file count.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeyFilesConfig {
    /// Default 5 min.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Folder inside the profile whose files are counted (recursively).
    /// Default `Default/IndexedDB`.
    pub path: PathBuf,
    /// More files than this is unhealthy. Default 100.
    pub max: u64,
    /// `alert` (default): emit `session.health` and alert. `cleanup`: also
    /// purge the profile and re-pair (a new QR).
    pub action: KeyFilesAction,
}

/// What to do when the key files pile up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyFilesAction {
    Alert,
    Cleanup,
}

impl Default for KeyFilesConfig {
    fn default() -> Self {
        Self { interval: Duration::from_secs(300), path: PathBuf::from("Default/IndexedDB"), max: 100, action: KeyFilesAction::Alert }
    }
}

/// `[health.memory]`: the browser's memory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// Default 1 min.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// PSS of the browser's process tree above which it is recycled on the
    /// same profile (no QR). Default `"1GiB"`.
    pub max: bytesize::ByteSize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self { interval: Duration::from_secs(60), max: bytesize::ByteSize::gib(1) }
    }
}

/// `[alerts]`: where `LOGGED_OUT`, `FAILED`, `BLOCKED`, key-file and
/// objective alerts go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Webhooks: each gets a JSON POST signed with its secret.
    pub webhooks: Vec<WebhookConfig>,
    pub telegram: Option<TelegramConfig>,
    /// Delivery attempts per alert and destination. Default 5.
    pub attempts: u32,
    /// First retry delay; doubles per attempt. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub retry_base: Duration,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self { webhooks: Vec::new(), telegram: None, attempts: 5, retry_base: Duration::from_secs(1) }
    }
}

/// One webhook destination.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// HMAC-SHA256 key: the body's MAC is sent as
    /// `X-Wasup-Signature: sha256=<hex>`.
    pub secret: String,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig").field("url", &self.url).finish_non_exhaustive()
    }
}

/// One `[[webhooks]]` entry: a subscription to events.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventWebhookConfig {
    /// `http://` or `https://`; unique among `[[webhooks]]`.
    pub url: String,
    /// HMAC-SHA256 key, not empty: the body's MAC is sent as
    /// `X-Wasup-Signature: sha256=<hex>`.
    pub secret: String,
    /// Dotted event names (`session.status`), a group (`campaign.*`: every
    /// name starting with `campaign.`), or `*` for every event. Checked
    /// against [`crate::events::EventName::ALL`] at start.
    pub events: Vec<String>,
}

impl std::fmt::Debug for EventWebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventWebhookConfig").field("url", &self.url).field("events", &self.events).finish_non_exhaustive()
    }
}

impl EventWebhookConfig {
    /// The event names this hook subscribes to.
    ///
    /// Errors: a pattern that is not `*`, a known name, or `<group>.*` of a
    /// group some known name has; the message lists the known names.
    pub fn subscribed(&self) -> Result<std::collections::BTreeSet<crate::events::EventName>, String> {
        use crate::events::EventName;
        let mut names = std::collections::BTreeSet::new();
        for pattern in &self.events {
            let matched: Vec<EventName> = match pattern.as_str() {
                "*" => EventName::ALL.to_vec(),
                p => match p.strip_suffix(".*") {
                    Some(group) => EventName::ALL.into_iter().filter(|e| e.as_str().split('.').next() == Some(group)).collect(),
                    None => EventName::parse(p).into_iter().collect(),
                },
            };
            if matched.is_empty() {
                let known: Vec<&str> = EventName::ALL.iter().map(|e| e.as_str()).collect();
                return Err(format!(
                    "unknown event {pattern:?}; use \"*\", a group such as \"campaign.*\", or one of {}",
                    known.join(", ")
                ));
            }
            names.extend(matched);
        }
        Ok(names)
    }
}

/// `[webhook_delivery]`: how deliveries to `[[webhooks]]` and
/// `[[alerts.webhooks]]` are retried (see [`crate::policy::delivery`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookDeliveryConfig {
    /// How long after its first attempt a delivery is still retried; then
    /// it goes to the dead letters. Default 24 h.
    #[serde(with = "humantime_serde")]
    pub retry_for: Duration,
    /// The first retry waits up to this long. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    /// No retry waits longer (a `Retry-After` aside). Default 10 min.
    #[serde(with = "humantime_serde")]
    pub backoff_cap: Duration,
    /// One request, connect to last byte. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Requests in flight per webhook (one while it fails). Default 4.
    pub concurrency: usize,
}

impl Default for WebhookDeliveryConfig {
    fn default() -> Self {
        Self {
            retry_for: Duration::from_secs(24 * 3600),
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(600),
            timeout: Duration::from_secs(10),
            concurrency: 4,
        }
    }
}

impl WebhookDeliveryConfig {
    /// The pure policy's view of these settings.
    pub fn policy(&self) -> crate::policy::delivery::RetryPolicy {
        crate::policy::delivery::RetryPolicy { retry_for: self.retry_for, backoff_base: self.backoff_base, backoff_cap: self.backoff_cap }
    }
}

/// Telegram Bot API destination (`sendMessage`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramConfig {
    pub bot_token: String,
    pub chat_id: String,
    /// Default `https://api.telegram.org`; tests point it at a local server.
    #[serde(default = "telegram_api")]
    pub api_base: String,
}

fn telegram_api() -> String {
    "https://api.telegram.org".into()
}

impl std::fmt::Debug for TelegramConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelegramConfig").field("chat_id", &self.chat_id).field("api_base", &self.api_base).finish_non_exhaustive()
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    /// Reads and validates the file at `path`.
    ///
    /// Errors: the file is unreadable, is not TOML, names an unknown key,
    /// has a value of the wrong type, or fails [`Config::validate`].
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Self::parse(&text, path)
    }

    /// Parses TOML text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            // toml's message names the key and the line; keep it on one line.
            message: e.to_string().replace('\n', " ").trim().to_string(),
        })?;
        config.validate().map_err(|message| ConfigError::Invalid { path: path.into(), message })?;
        Ok(config)
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), String> {
        self.validate_store()?;
        if !(self.whatsapp.url.starts_with("http://") || self.whatsapp.url.starts_with("https://")) {
            return Err(format!("whatsapp.url must be an http(s) URL, got {:?}", self.whatsapp.url));
        }
        if self.whatsapp.poll_interval < Duration::from_millis(20) {
            return Err("whatsapp.poll_interval must be at least 20ms".into());
        }
        if self.whatsapp.check_interval < Duration::from_millis(100) {
            return Err("whatsapp.check_interval must be at least 100ms".into());
        }
        // An idle pushing page answers only the check: at least one must
        // fall in every heartbeat interval.
        if self.whatsapp.check_interval >= self.heartbeat.interval {
            return Err("whatsapp.check_interval must be shorter than heartbeat.interval".into());
        }
        if self.restart.backoff_base.is_zero() || self.restart.backoff_cap < self.restart.backoff_base {
            return Err("restart.backoff_base must be > 0 and <= restart.backoff_cap".into());
        }
        if self.heartbeat.interval.is_zero() || self.heartbeat.failures == 0 {
            return Err("heartbeat.interval and heartbeat.failures must be > 0".into());
        }
        if self.health.key_files.interval.is_zero() || self.health.memory.interval.is_zero() {
            return Err("health.key_files.interval and health.memory.interval must be > 0".into());
        }
        if self.health.key_files.path.is_absolute()
            || self.health.key_files.path.components().any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err("health.key_files.path must be relative to the profile, without '..'".into());
        }
        let mut urls = std::collections::BTreeSet::new();
        for hook in &self.alerts.webhooks {
            if !(hook.url.starts_with("http://") || hook.url.starts_with("https://")) {
                return Err(format!("alerts.webhooks: url must be http(s), got {:?}", hook.url));
            }
            if !urls.insert(hook.url.as_str()) {
                return Err("alerts.webhooks: the same url is listed twice".into());
            }
        }
        let mut urls = std::collections::BTreeSet::new();
        for (i, hook) in self.webhooks.iter().enumerate() {
            let at = format!("webhooks[{}]", i + 1);
            if !(hook.url.starts_with("http://") || hook.url.starts_with("https://")) {
                return Err(format!("{at}: url must be http(s)"));
            }
            if !urls.insert(hook.url.as_str()) {
                return Err(format!("{at}: the same url is listed twice in [[webhooks]]"));
            }
            if hook.secret.is_empty() {
                return Err(format!("{at}: secret must not be empty"));
            }
            if hook.events.is_empty() {
                return Err(format!("{at}: events must name at least one event (\"*\" for all)"));
            }
            hook.subscribed().map_err(|e| format!("{at}.events: {e}"))?;
        }
        let d = &self.webhook_delivery;
        if d.retry_for.is_zero() || d.timeout.is_zero() || d.concurrency == 0 {
            return Err("webhook_delivery.retry_for, timeout and concurrency must be > 0".into());
        }
        if d.backoff_base.is_zero() || d.backoff_cap < d.backoff_base {
            return Err("webhook_delivery.backoff_base must be > 0 and <= webhook_delivery.backoff_cap".into());
        }
        self.campaigns.tz()?;
        self.campaigns.country()?;
        self.number_pacing()?;
        if !(0.0..=1.0).contains(&self.campaigns.max_opt_out_rate) {
            return Err("campaigns.max_opt_out_rate must be between 0 and 1".into());
        }
        if self.numbers.max_delay < self.numbers.min_delay {
            return Err("numbers.max_delay must be >= numbers.min_delay".into());
        }
        if self.numbers.max_delay > self.limits.max_gap {
            return Err("numbers.max_delay must be <= limits.max_gap".into());
        }
        if self.numbers.warmup.enabled && (self.numbers.warmup.start == 0 || !(1.0..=100.0).contains(&self.numbers.warmup.growth)) {
            return Err("numbers.warmup: start must be >= 1 and growth between 1 and 100".into());
        }
        if !(0.0..=1.0).contains(&self.objectives.uptime) {
            return Err("objectives.uptime must be between 0 and 1".into());
        }
        if self.objectives.recovery.is_zero() {
            return Err("objectives.recovery must be > 0".into());
        }
        if self.opt_outs.keywords.iter().any(|k| crate::optout::fold(k).is_empty()) {
            return Err("opt_outs.keywords: a keyword is empty once spaces and punctuation are dropped".into());
        }
        if self.campaigns.send_attempts == 0 {
            return Err("campaigns.send_attempts must be at least 1".into());
        }
        if self.http.max_body_bytes < 1024 {
            return Err("http.max_body_bytes must be at least 1024".into());
        }
        if self.http.workers == Some(0) {
            return Err("http.workers must be at least 1 (2 are used at least)".into());
        }
        let l = &self.limits;
        for (name, v) in [
            ("recipients", l.recipients),
            ("columns", l.columns),
            ("cell_bytes", l.cell_bytes),
            ("template_bytes", l.template_bytes),
            ("text_chars", l.text_chars),
            ("sessions", l.sessions),
            ("streams", l.streams),
            ("concurrent_creates", l.concurrent_creates),
        ] {
            if v == 0 {
                return Err(format!("limits.{name} must be at least 1"));
            }
        }
        if l.template_fuel == 0 || l.body_timeout.is_zero() || l.max_gap.is_zero() {
            return Err("limits.template_fuel, limits.body_timeout and limits.max_gap must be > 0".into());
        }
        if self.state.cache_capacity.as_u64() < 1024 * 1024 {
            return Err("state.cache_capacity must be at least 1MiB".into());
        }
        let page_max = crate::whatsapp::media::PAGE_MAX_BYTES;
        let m = &self.media;
        for (name, v) in
            [("image_max", m.image_max), ("video_max", m.video_max), ("audio_max", m.audio_max), ("document_max", m.document_max)]
        {
            if v.as_u64() == 0 || v.as_u64() > page_max {
                return Err(format!("media.{name} must be 1 byte to {page_max} bytes (what the page can carry), got {v}"));
            }
        }
        Ok(())
    }

    /// The token file: the configured one or `<state.dir>/token`.
    pub fn token_path(&self) -> PathBuf {
        self.http.token_file.clone().unwrap_or_else(|| self.state.dir.join("token"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_keys_are_enough() {
        let c = Config::parse(
            "[http]\nlisten = \"127.0.0.1:9999\"\n[state]\ndir = \"/tmp/x\"\n[whatsapp]\nurl = \"http://127.0.0.1:8788/\"\n",
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(c.http.listen.port(), 9999);
        assert_eq!(c.restart.backoff_base, Duration::from_secs(5));
        assert_eq!(c.whatsapp.poll_interval, Duration::from_millis(250));
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let err = Config::parse("[http]\nlisten = \"127.0.0.1:1\"\nlistn = 3\n", Path::new("t.toml")).unwrap_err().to_string();
        assert!(err.contains("listn"), "{err}");
        let err = Config::parse("[htp]\n", Path::new("t.toml")).unwrap_err().to_string();
        assert!(err.contains("htp"), "{err}");
    }

    #[test]
    fn durations_are_humantime() {
        let c = Config::parse("[restart]\nbackoff_base = \"250ms\"\nbackoff_cap = \"1m\"\n", Path::new("t")).unwrap();
        assert_eq!(c.restart.backoff_base, Duration::from_millis(250));
        assert!(Config::parse("[restart]\nbackoff_base = \"soon\"\n", Path::new("t")).is_err());
    }

    #[test]
    fn sizes_and_nested_sections_parse() {
        let c = Config::parse(
            "[health.memory]\nmax = \"512MiB\"\n[health.key_files]\naction = \"cleanup\"\n[[alerts.webhooks]]\nurl = \"http://127.0.0.1:9/h\"\nsecret = \"s\"\n[restart]\nconflict = \"takeover\"\n",
            Path::new("t"),
        )
        .unwrap();
        assert_eq!(c.health.memory.max.as_u64(), 512 * 1024 * 1024);
        assert_eq!(c.health.key_files.action, KeyFilesAction::Cleanup);
        assert_eq!(c.alerts.webhooks.len(), 1);
        assert_eq!(c.restart.conflict, ConflictPolicy::Takeover);
        assert!(!format!("{:?}", c.alerts.webhooks[0]).contains("secret: \"s\""), "secrets stay out of Debug");
        assert!(Config::parse("[health.key_files]\npath = \"../etc\"\n", Path::new("t")).is_err());
    }

    #[test]
    fn webhooks_subscribe_to_known_events() {
        use crate::events::EventName;
        let c = Config::parse(
            "[[webhooks]]\nurl = \"http://127.0.0.1:9/a\"\nsecret = \"s\"\nevents = [\"campaign.*\", \"message.ack\"]\n[[webhooks]]\nurl = \"http://127.0.0.1:9/b\"\nsecret = \"s\"\nevents = [\"*\"]\n[webhook_delivery]\nretry_for = \"1h\"\n",
            Path::new("t"),
        )
        .unwrap();
        let a = c.webhooks[0].subscribed().unwrap();
        assert_eq!(a.into_iter().collect::<Vec<_>>(), [EventName::CampaignStatus, EventName::CampaignProgress, EventName::MessageAck]);
        assert_eq!(c.webhooks[1].subscribed().unwrap().len(), EventName::ALL.len());
        assert_eq!(c.webhook_delivery.retry_for, Duration::from_secs(3600));
        assert!(!format!("{:?}", c.webhooks[0]).contains("secret"), "secrets stay out of Debug");
        let hook = |events: &str| format!("[[webhooks]]\nurl = \"http://127.0.0.1:9/a\"\nsecret = \"s\"\nevents = {events}\n");
        for (events, needle) in [("[\"message.recieved\"]", "message.recieved"), ("[\"camp.*\"]", "camp.*"), ("[]", "at least one")] {
            let err = Config::parse(&hook(events), Path::new("t")).unwrap_err().to_string();
            assert!(err.contains(needle) && err.contains("webhooks[1]"), "{err}");
        }
        let err = Config::parse(&format!("{}{}", hook("[\"*\"]"), hook("[\"*\"]")), Path::new("t")).unwrap_err().to_string();
        assert!(err.contains("twice"), "{err}");
        assert!(Config::parse("[webhook_delivery]\nbackoff_base = \"1m\"\nbackoff_cap = \"1s\"\n", Path::new("t")).is_err());
        assert!(Config::parse("[[webhooks]]\nurl = \"http://x/\"\nsecret = \"\"\nevents = [\"*\"]\n", Path::new("t")).is_err());
    }

    #[test]
    fn media_limits_default_to_whatsapps_and_stay_under_the_page_maximum() {
        let c = Config::parse("", Path::new("t")).unwrap();
        assert_eq!((c.media.image_max.as_u64(), c.media.document_max.as_u64()), (5_000_000, 100_000_000));
        assert_eq!(c.media.largest(), 100_000_000);
        let c = Config::parse("[media]\nimage_max = \"1MiB\"\n", Path::new("t")).unwrap();
        assert_eq!(c.media.limit(crate::whatsapp::media::MediaKind::Image), 1024 * 1024);
        let err = Config::parse("[media]\ndocument_max = \"2GB\"\n", Path::new("t")).unwrap_err().to_string();
        assert!(err.contains("media.document_max"), "{err}");
        assert!(Config::parse("[media]\naudio_max = 0\n", Path::new("t")).is_err());
    }

    #[test]
    fn the_store_and_cluster_sections_must_agree() {
        let parse = |t: &str| Config::parse(t, Path::new("t")).map_err(|e| e.to_string());
        let cluster = "[cluster]\nnode = \"node-a\"\nadvertise = \"http://10.0.0.5:8787\"\n";
        let pg = |url: &str| format!("[store]\nbackend = \"postgres\"\nurl = \"{url}\"\n{cluster}");
        assert!(parse(&pg("postgres://wasup@/wasup?host=/run/postgresql")).is_ok());
        assert!(parse(&pg("postgres://wasup@10.0.0.9/wasup?sslmode=disable")).is_ok());
        let err = parse(&pg("postgres://wasup:secret@10.0.0.9/wasup")).unwrap_err();
        assert!(err.contains("TLS") && !err.contains("secret"), "{err}");
        assert!(parse("[store]\nbackend = \"postgres\"\n").unwrap_err().contains("store.url"));
        assert!(parse("[store]\nbackend = \"postgres\"\nurl = \"postgres://w@/w?host=/tmp\"\n").unwrap_err().contains("cluster.node"));
        assert!(parse(cluster).unwrap_err().contains("[cluster] needs"));
        assert!(parse(&pg("postgres://w@/w?host=/tmp").replace("node-a", "node a")).unwrap_err().contains("cluster.node"));
        assert!(parse("[store]\nbackend = \"mysql\"\n").is_err());
        assert!(parse("[cluster]\nlease = \"15s\"\n").is_err(), "unknown keys are errors");
    }

    #[test]
    fn the_shipped_config_is_valid_and_complete() {
        let text = include_str!("../config.toml");
        let c = Config::parse(text, Path::new("config.toml")).unwrap();
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:8787");
        // The documented defaults are the defaults.
        let d = Config::default();
        assert_eq!(c.opt_outs.keywords, d.opt_outs.keywords);
        assert_eq!(c.numbers.rules(&c.campaigns), d.numbers.rules(&d.campaigns));
        assert_eq!((c.campaigns.max_opt_out_rate, c.campaigns.opt_out_min_sent), (0.05, 20));
        assert_eq!(c.objectives.targets(), d.objectives.targets());
    }

    #[test]
    fn objectives_default_to_seed_004s_targets_and_are_checked() {
        let t = Config::parse("", Path::new("t")).unwrap().objectives.targets();
        assert_eq!(t, crate::policy::objectives::Targets { uptime: 0.999, reconnects_per_day: 10, recovery_ms: 300_000, key_files: 100 });
        let c = Config::parse("[objectives]\nuptime = 0.99\nrecovery = \"90s\"\n", Path::new("t")).unwrap();
        assert_eq!((c.objectives.targets().uptime, c.objectives.targets().recovery_ms), (0.99, 90_000));
        let err = Config::parse("[objectives]\nreconnects = 5\n", Path::new("t")).unwrap_err().to_string();
        assert!(err.contains("reconnects"), "{err}");
        for bad in ["uptime = 1.5", "uptime = -0.1", "recovery = \"0s\""] {
            assert!(Config::parse(&format!("[objectives]\n{bad}\n"), Path::new("t")).is_err(), "{bad}");
        }
    }
}
