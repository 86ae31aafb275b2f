//! What the page's state means for the session: pure, no I/O.
//!
//! The Session actor feeds every poll's events and snapshot to an
//! [`Observer`]; it answers with the session state to show and, when the
//! page's run is over, the typed [`EndReason`]. The rules follow
//! whatsapp-web.md: `OPENING`/`TIMEOUT` flapping is the network, not a
//! logout; `UNPAIRED` after having been linked without a logout event is the
//! device being revoked (`device_removed`); `TOS_BLOCK` and friends are
//! terminal until a human acts.

use std::collections::{HashSet, VecDeque};

use crate::policy::EndReason;
use crate::session_state::SessionState;

use super::page::{PageEvent, Snapshot, SocketState};

/// What the session should show after one poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub state: SessionState,
    /// Short reason for `state` (`"syncing"`, `"connection_lost"`, …).
    pub reason: Option<&'static str>,
    /// The page's run is over for this reason.
    pub end: Option<EndReason>,
    /// The QR refs ran out (`UNPAIRED_IDLE`): ask the page for new ones.
    pub refresh_qr: bool,
}

/// Remembers what earlier polls showed.
#[derive(Debug, Clone)]
pub struct Observer {
    /// The session holds credentials that were (or should be) valid: it had
    /// been connected before, in this run or an earlier one.
    linked: bool,
    /// The page has been `CONNECTED` and synced during this run.
    connected_once: bool,
    idle_refreshed: bool,
}

impl Observer {
    /// `linked`: the store says this session's profile holds credentials.
    pub fn new(linked: bool) -> Self {
        Self { linked, connected_once: false, idle_refreshed: false }
    }

    /// Whether the session's profile holds credentials as far as we know.
    pub fn linked(&self) -> bool {
        self.linked
    }

    /// A poll found the page loading; `logout_queued`: the page being left
    /// had queued a logout. Ends the run only for a linked session.
    pub fn loading(&self, logout_queued: bool) -> Option<EndReason> {
        (self.linked && logout_queued).then_some(EndReason::PhoneLogout)
    }

    pub fn observe(&mut self, events: &[PageEvent], snap: &Snapshot) -> Verdict {
        let verdict = |state, reason| Verdict { state, reason, end: None, refresh_qr: false };
        let ended = |reason: EndReason, state| Verdict { state, reason: Some(reason.as_str()), end: Some(reason), refresh_qr: false };
        let logged_out =
            events.iter().any(|e| matches!(e, PageEvent::Logout | PageEvent::Loaded { post_logout: true })) || snap.post_logout;
        if self.linked && logged_out {
            return ended(EndReason::PhoneLogout, SessionState::LoggedOut);
        }
        match &snap.state {
            SocketState::Unpaired | SocketState::UnpairedIdle => {
                if self.linked {
                    return ended(EndReason::DeviceRemoved, SessionState::LoggedOut);
                }
                let idle = snap.state == SocketState::UnpairedIdle;
                let refresh_qr = idle && !self.idle_refreshed;
                self.idle_refreshed = idle;
                // SCAN_QR promises a QR to show; the adapter builds the
                // string a moment after the ref appears.
                let (state, reason) = match (&snap.qr, idle) {
                    (Some(_), _) => (SessionState::ScanQr, None),
                    (None, true) => (SessionState::Starting, Some("qr_refresh")),
                    (None, false) => (SessionState::Starting, Some("waiting_for_qr")),
                };
                Verdict { state, reason, end: None, refresh_qr }
            }
            SocketState::Connected if snap.synced || self.connected_once => {
                self.linked = true;
                self.connected_once = true;
                self.idle_refreshed = false;
                verdict(SessionState::Connected, None)
            }
            SocketState::Connected => {
                self.linked = true;
                verdict(SessionState::Starting, Some("syncing"))
            }
            SocketState::Timeout if self.connected_once => verdict(SessionState::Reconnecting, Some("connection_lost")),
            SocketState::Opening | SocketState::Unlaunched | SocketState::Pairing | SocketState::Timeout if self.connected_once => {
                verdict(SessionState::Reconnecting, Some("page_reconnecting"))
            }
            SocketState::Conflict => verdict(SessionState::Conflict, Some("conflict")),
            SocketState::TosBlock | SocketState::SmbTosBlock | SocketState::ProxyBlock => ended(EndReason::TosBlock, SessionState::Blocked),
            SocketState::DeprecatedVersion => ended(EndReason::DeprecatedVersion, SessionState::Failed),
            _ => verdict(SessionState::Starting, None),
        }
    }
}

/// The ids (`n`) of the events seen lately: an event pushed and then
/// drained, or pushed again by the adapter of the next document after a
/// reload, is handled once. Remembers the last [`Seen::CAPACITY`] ids.
#[derive(Debug, Default)]
pub struct Seen {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl Seen {
    /// Ids remembered; the adapter's queue holds at most 5,000 events and a
    /// reload replays only what was not drained, far fewer in practice.
    pub const CAPACITY: usize = 8192;

    /// True the first time `n` is seen (and remembers it).
    pub fn first(&mut self, n: &str) -> bool {
        if self.ids.contains(n) {
            return false;
        }
        self.ids.insert(n.to_string());
        self.order.push_back(n.to_string());
        while self.order.len() > Self::CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(state: &str, synced: bool) -> Snapshot {
        let qr = matches!(SocketState::from(state), SocketState::Unpaired | SocketState::UnpairedIdle).then(|| "ref,a,b,c,WEB".to_string());
        Snapshot { state: state.into(), synced, qr, ..Snapshot::default() }
    }

    #[test]
    fn pairing_then_connected() {
        let mut o = Observer::new(false);
        assert_eq!(o.observe(&[], &snap("OPENING", false)).state, SessionState::Starting);
        assert_eq!(o.observe(&[], &snap("UNPAIRED", false)).state, SessionState::ScanQr);
        // After the scan the page reloads and comes up CONNECTED, then synced.
        assert_eq!(o.observe(&[], &snap("OPENING", false)).state, SessionState::Starting);
        assert_eq!(o.observe(&[], &snap("CONNECTED", false)).reason, Some("syncing"));
        assert_eq!(o.observe(&[], &snap("CONNECTED", true)).state, SessionState::Connected);
        assert!(o.linked());
    }

    #[test]
    fn network_flaps_are_not_logouts() {
        let mut o = Observer::new(true);
        o.observe(&[], &snap("CONNECTED", true));
        let v = o.observe(&[], &snap("TIMEOUT", true));
        assert_eq!((v.state, v.end), (SessionState::Reconnecting, None));
        let v = o.observe(&[], &snap("OPENING", true));
        assert_eq!((v.state, v.end), (SessionState::Reconnecting, None));
        assert_eq!(o.observe(&[], &snap("CONNECTED", true)).state, SessionState::Connected);
    }

    #[test]
    fn phone_logout_and_device_removed_are_told_apart() {
        let mut o = Observer::new(true);
        o.observe(&[], &snap("CONNECTED", true));
        let v = o.observe(&[PageEvent::Logout], &snap("UNPAIRED", false));
        assert_eq!(v.end, Some(EndReason::PhoneLogout));

        let mut o = Observer::new(true);
        o.observe(&[], &snap("CONNECTED", true));
        let v = o.observe(&[], &snap("UNPAIRED", false));
        assert_eq!(v.end, Some(EndReason::DeviceRemoved));
        assert_eq!(v.state, SessionState::LoggedOut);
    }

    #[test]
    fn an_unlinked_session_showing_a_qr_is_not_an_end() {
        let mut o = Observer::new(false);
        let v = o.observe(&[PageEvent::Loaded { post_logout: true }], &snap("UNPAIRED", false));
        assert_eq!((v.state, v.end), (SessionState::ScanQr, None));
        let idle = Snapshot { qr: None, ..snap("UNPAIRED_IDLE", false) };
        let v = o.observe(&[], &idle);
        assert!(v.refresh_qr);
        assert_eq!(v.state, SessionState::Starting, "no QR to show while the refs are refreshed");
        assert!(!o.observe(&[], &idle).refresh_qr, "ask once per idle spell");
        let no_qr_yet = Snapshot { qr: None, ..snap("UNPAIRED", false) };
        assert_eq!(o.observe(&[], &no_qr_yet).state, SessionState::Starting);
    }

    #[test]
    fn a_logout_is_seen_while_the_next_page_loads() {
        let mut o = Observer::new(false);
        assert_eq!(o.loading(true), None, "an unlinked page being left is no logout");
        o.observe(&[], &snap("CONNECTED", true));
        assert_eq!(o.loading(false), None);
        assert_eq!(o.loading(true), Some(EndReason::PhoneLogout));
    }

    #[test]
    fn an_event_is_handled_once() {
        let mut seen = Seen::default();
        assert!(seen.first("a.0"));
        assert!(!seen.first("a.0"), "pushed, then drained");
        assert!(seen.first("b.0"));
        for i in 0..Seen::CAPACITY {
            seen.first(&format!("c.{i}"));
        }
        assert!(seen.first("a.0"), "the oldest ids are forgotten");
        assert!(seen.ids.len() <= Seen::CAPACITY);
    }

    #[test]
    fn blocks_are_terminal() {
        let mut o = Observer::new(true);
        assert_eq!(o.observe(&[], &snap("TOS_BLOCK", false)).end, Some(EndReason::TosBlock));
        assert_eq!(o.observe(&[], &snap("DEPRECATED_VERSION", false)).end, Some(EndReason::DeprecatedVersion));
        assert_eq!(o.observe(&[], &snap("CONFLICT", true)).state, SessionState::Conflict);
    }
}
