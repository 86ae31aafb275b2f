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
    pub whatsapp: WhatsAppConfig,
    pub browser: BrowserConfig,
    pub restart: RestartConfig,
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
    /// Largest request body accepted, in bytes; larger ones get 413.
    /// Default 1 MiB.
    pub max_body_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8787)),
            token_file: None,
            max_body_bytes: 1024 * 1024,
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
}

impl Default for StateConfig {
    fn default() -> Self {
        Self { dir: PathBuf::from("/var/lib/wasup") }
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
    /// How often the session drains the page adapter's event queue.
    /// Default 250 ms: a logout is seen within about that long.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
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
            poll_interval: Duration::from_millis(250),
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

/// `[restart]`: how sessions come back. Issue-3 keys (budget, reset) join here.
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
}

impl Default for RestartConfig {
    fn default() -> Self {
        Self {
            boot_stagger: Duration::from_secs(2),
            backoff_base: Duration::from_secs(5),
            backoff_cap: Duration::from_secs(300),
        }
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
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Self::parse(&text, path)
    }

    /// Parses TOML text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            // toml's message names the key and the line; keep it on one line.
            message: e.to_string().replace('\n', " ").trim().to_string(),
        })?;
        config
            .validate()
            .map_err(|message| ConfigError::Invalid { path: path.into(), message })?;
        Ok(config)
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.whatsapp.url.starts_with("http://") || self.whatsapp.url.starts_with("https://")) {
            return Err(format!("whatsapp.url must be an http(s) URL, got {:?}", self.whatsapp.url));
        }
        if self.whatsapp.poll_interval < Duration::from_millis(20) {
            return Err("whatsapp.poll_interval must be at least 20ms".into());
        }
        if self.restart.backoff_base.is_zero() || self.restart.backoff_cap < self.restart.backoff_base {
            return Err("restart.backoff_base must be > 0 and <= restart.backoff_cap".into());
        }
        if self.http.max_body_bytes < 1024 {
            return Err("http.max_body_bytes must be at least 1024".into());
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
        let err = Config::parse("[http]\nlisten = \"127.0.0.1:1\"\nlistn = 3\n", Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("listn"), "{err}");
        let err = Config::parse("[htp]\n", Path::new("t.toml")).unwrap_err().to_string();
        assert!(err.contains("htp"), "{err}");
    }

    #[test]
    fn durations_are_humantime() {
        let c = Config::parse("[restart]\nbackoff_base = \"250ms\"\nbackoff_cap = \"1m\"\n", Path::new("t"))
            .unwrap();
        assert_eq!(c.restart.backoff_base, Duration::from_millis(250));
        assert!(Config::parse("[restart]\nbackoff_base = \"soon\"\n", Path::new("t")).is_err());
    }

    #[test]
    fn the_shipped_config_is_valid_and_complete() {
        let text = include_str!("../config.toml");
        let c = Config::parse(text, Path::new("config.toml")).unwrap();
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:8787");
    }
}
