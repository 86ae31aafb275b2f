//! The words every layer shares about a session: its state, the linked
//! account, and what a valid session name is.

use serde::{Deserialize, Serialize};

/// The state of a session, as the API and the store name it
/// (`architecture.md`, "Session states").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SessionState {
    /// Desired off; no browser.
    Stopped,
    /// Browser and page coming up.
    Starting,
    /// Waiting for a phone to scan; a QR is available.
    ScanQr,
    /// Synced; can send.
    Connected,
    /// Lost; the next attempt is at a known time (or the page is
    /// reconnecting by itself).
    Reconnecting,
    /// Credentials void (phone logout or `device_removed`); needs a new QR.
    LoggedOut,
    /// The account was opened in another WhatsApp Web.
    Conflict,
    /// Terms-of-service block or reach-out timelock: a human is needed.
    Blocked,
    /// Restart budget spent: a human is needed.
    Failed,
}

impl SessionState {
    /// Every state, in declaration order.
    pub const ALL: [SessionState; 9] = [
        Self::Stopped,
        Self::Starting,
        Self::ScanQr,
        Self::Connected,
        Self::Reconnecting,
        Self::LoggedOut,
        Self::Conflict,
        Self::Blocked,
        Self::Failed,
    ];

    /// The upper-case name used by the API, the store and the logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stopped => "STOPPED",
            Self::Starting => "STARTING",
            Self::ScanQr => "SCAN_QR",
            Self::Connected => "CONNECTED",
            Self::Reconnecting => "RECONNECTING",
            Self::LoggedOut => "LOGGED_OUT",
            Self::Conflict => "CONFLICT",
            Self::Blocked => "BLOCKED",
            Self::Failed => "FAILED",
        }
    }
}

impl std::fmt::Display for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The WhatsApp account a session is linked to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Me {
    /// Own chat id, `<digits>@c.us`.
    pub wid: String,
    /// The account's display name, if the page told it.
    pub pushname: Option<String>,
}

/// Whether `name` is 1 to 64 of `A-Z a-z 0-9 _ -`: the rule for session
/// names and cluster node names alike (both end up in paths, URLs and SQL
/// parameters).
pub fn is_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks a session name: 1 to 64 of `A-Z a-z 0-9 _ -`. The name becomes a
/// directory under the state dir, so anything else (`../x`) is refused.
pub fn validate_name(name: &str) -> Result<(), String> {
    if is_name(name) {
        Ok(())
    } else {
        Err(format!("invalid session name {name:?}: use 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'"))
    }
}

/// This daemon run's id: random, the same for the whole process.
pub fn boot_id() -> u64 {
    static BOOT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *BOOT.get_or_init(rand::random)
}

/// Now as Unix epoch milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["acme", "a", "A_b-9", &"x".repeat(64)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "../x", "a/b", "a b", "ä", ".", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn states_serialise_upper_case() {
        assert_eq!(serde_json::to_string(&SessionState::ScanQr).unwrap(), "\"SCAN_QR\"");
        assert_eq!(serde_json::to_string(&SessionState::LoggedOut).unwrap(), "\"LOGGED_OUT\"");
        for s in [SessionState::Stopped, SessionState::Reconnecting, SessionState::Failed] {
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{}\"", s.as_str()));
        }
    }
}
