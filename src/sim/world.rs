//! The state of "WhatsApp's servers": linked devices and their credentials,
//! the pages connected right now, the QR refs handed to unpaired pages, the
//! numbers not on WhatsApp, what each device sent, and the media host's
//! uploads.
//!
//! Pure: no sockets, no clock, no logging. Time comes in as Unix epoch
//! milliseconds, randomness as an argument. Every call may queue
//! [`Effect`]s (frames to send, sockets to close); the server drains them
//! with [`World::take_effects`] and performs them. [`World::tick`] fires
//! whatever is due (ref rotation, history sync, delayed sends, DEVICE acks)
//! and [`World::next_deadline`] says when to call it next.

use std::collections::{BTreeMap, HashMap, HashSet};

use actix_web::web::Bytes;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use base64::Engine as _;
use rand::RngCore;
use serde::Serialize;

use super::media::{self, MediaStore, MediaType};
use super::protocol::{ClientFrame, HistoryMsg, MediaFrame, SendFrame, ServerFrame, StreamErrorKind};
use super::qr::{new_ref, PageKeys, QrString, RefSchedule, RefStatus};
use super::wid::{normalize_phone, ChatId};

/// Identifies one page WebSocket for the life of the process.
pub type ConnId = u64;

/// How long refs last and how fast the servers answer, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// Lifetime of the first ref of a batch.
    pub qr_first_ms: u64,
    /// Lifetime of each later ref.
    pub qr_next_ms: u64,
    /// Refs per batch (at least 1).
    pub qr_refs: usize,
    /// From `connected` to the history sync (`hasSynced`).
    pub sync_delay_ms: u64,
    /// From SERVER ack to DEVICE ack.
    pub ack_device_after_ms: u64,
}

/// Something the server must do to a page socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Send this frame.
    Send(ConnId, ServerFrame),
    /// Close the socket cleanly (after the frames queued before).
    Close(ConnId),
    /// Drop the socket without a close frame, like a network failure.
    Drop(ConnId),
}

/// A linked device's standing with the servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    /// Linked; its credential is accepted.
    Active,
    /// Logged out (from the phone or the page).
    LoggedOut,
    /// Removed by the phone (`device_removed`).
    Removed,
    /// Terms-of-service block.
    Banned,
}

impl DeviceState {
    /// The name the control API uses (`active`, `logged_out`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::LoggedOut => "logged_out",
            Self::Removed => "removed",
            Self::Banned => "banned",
        }
    }
}

/// One message the account sent, as the servers accepted it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SentMessage {
    /// Key id (`3EB0…`).
    pub id: String,
    /// Chat id, `<digits>@c.us` or a group.
    pub to: String,
    /// `chat` for a text; `image`, `video`, `audio`, `ptt`, `document` or
    /// `sticker` for media.
    #[serde(rename = "type")]
    pub kind: String,
    /// Text, or a media message's caption.
    pub body: String,
    /// A media message's file as the recipient's phone got it.
    #[serde(flatten)]
    pub media: Option<MediaLog>,
    /// The attachment as the page sent it (for history sync).
    #[serde(skip)]
    pub attachment: Option<MediaFrame>,
    /// When the server accepted it, Unix epoch ms.
    pub at_ms: u64,
    /// Current ack: 1 SERVER, 2 DEVICE, 3 READ, 4 PLAYED.
    pub ack: i8,
    /// The message's own timestamp (from the page), Unix seconds.
    #[serde(skip)]
    pub t: i64,
}

/// What the servers record of a media message's file.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MediaLog {
    /// The file's MIME type, as the message gives it.
    pub mimetype: String,
    /// The file's name, as the message gives it (documents; `null` for
    /// photos, which WhatsApp sends without a name).
    pub filename: Option<String>,
    /// Bytes of the file, as the message gives it.
    pub size: u64,
    /// Hex SHA-256 of the file the recipient's phone got out of the
    /// download (checked against the message's hashes, MAC and size);
    /// `None` when it could not get the file.
    pub sha256: Option<String>,
    /// Why the recipient could not get the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_error: Option<String>,
}

/// A file a contact sends to the account (`POST
/// /_phone/devices/{device}/incoming` with a `file` part).
#[derive(Debug, Clone)]
pub struct IncomingMedia {
    /// MIME type (`image/png`); decides the message type (see
    /// [`MediaType::for_mimetype`]).
    pub mimetype: String,
    /// File name, if the contact's file has one.
    pub filename: Option<String>,
    /// The file.
    pub data: Bytes,
}

/// A message a contact sent to the account, as the servers hold it for one
/// device.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct IncomingMessage {
    /// Key id (32 upper-case hex characters, as an Android phone makes them).
    pub id: String,
    /// Sender's chat id, `<digits>@c.us`.
    pub from: String,
    /// `chat` for a text, else the media type (`image`, `document`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// Text, or a media message's caption.
    pub body: String,
    /// A media message's file: `sha256` is of the file the contact sent.
    #[serde(flatten)]
    pub media: Option<MediaLog>,
    /// The attachment as the servers send it to the page.
    #[serde(skip)]
    pub attachment: Option<MediaFrame>,
    /// The sender's push name (may be empty).
    pub pushname: String,
    /// When the servers took it, Unix epoch ms.
    pub at_ms: u64,
    /// The device's page confirmed it has the message; until then every
    /// new connection of the device gets it again after its history sync.
    pub delivered: bool,
}

/// A linked device (a companion of one phone account).
#[derive(Debug, Clone)]
struct Device {
    phone: String,
    pushname: String,
    platform: String,
    secret: String,
    state: DeviceState,
    conflict: bool,
    timelocked_until_ms: Option<u64>,
    offline_until_ms: Option<u64>,
    slow_send_ms: u64,
    linked_at_ms: u64,
    logins: u64,
    log: Vec<SentMessage>,
    chat_states: Vec<ChatStateEvent>,
    inbox: Vec<IncomingMessage>,
}

/// A chat state the account showed (`composing` = "typing…").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatStateEvent {
    /// Chat id.
    pub to: String,
    /// `composing` or `paused`.
    pub state: String,
    /// Unix epoch ms.
    pub at_ms: u64,
}

/// Chat states kept per device (the oldest are dropped).
const CHAT_STATES_KEPT: usize = 10_000;

/// A device as the phone's control API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceView {
    /// Device id.
    pub device: String,
    /// Phone digits.
    pub phone: String,
    /// Push name.
    pub pushname: String,
    /// `active`, `logged_out`, `removed` or `banned`.
    pub state: DeviceState,
    /// A page holds a live, accepted connection for it.
    pub online: bool,
    /// Connections a page opened with its credential and the server
    /// accepted (each page load, reconnect or restart counts one).
    pub logins: u64,
    /// When it was linked, Unix epoch ms.
    pub linked_at_ms: u64,
    /// Opened elsewhere; a page must take over.
    pub conflict: bool,
    /// Sends to new chats fail with 463 until then (Unix epoch ms).
    pub timelocked_until_ms: Option<u64>,
}

/// Why a phone action was refused; maps onto an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    /// 400: malformed input.
    #[error("{0}")]
    BadRequest(String),
    /// 403: the account may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such device, message or ref.
    #[error("{0}")]
    NotFound(String),
    /// 409: the device is not in a state that allows this.
    #[error("{0}")]
    Conflict(String),
    /// 410: the ref was shown but is no longer valid.
    #[error("{0}")]
    Gone(String),
    /// 401: no valid credential (a media upload's `auth`).
    #[error("{0}")]
    Unauthorized(String),
    /// 413: over a size limit.
    #[error("{0}")]
    TooLarge(String),
}

/// Which ref an unpaired page shows at the moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shown {
    Nothing,
    Ref(usize),
    Idle,
}

/// Where one page socket stands.
#[derive(Debug, Clone)]
enum Phase {
    AwaitHello,
    Unpaired {
        keys: PageKeys,
        batch: u64,
        shown: Shown,
    },
    /// Scanned; the page stores its credential and reloads.
    Pairing,
    Linked {
        device: String,
        sync_at_ms: Option<u64>,
    },
    /// The server closed or dropped it; frames from it are ignored.
    Closing,
}

#[derive(Debug, Clone)]
struct Batch {
    conn: ConnId,
    schedule: RefSchedule,
    refs: Vec<String>,
    /// When the page stopped showing this batch (paired, left, new batch).
    ended_ms: Option<u64>,
}

#[derive(Debug, Clone)]
struct PendingSend {
    due_ms: u64,
    device: String,
    conn: ConnId,
    frame: SendFrame,
}

#[derive(Debug, Clone)]
struct PendingAck {
    due_ms: u64,
    device: String,
    id: String,
    to: String,
}

/// How long a dead batch's refs are remembered (to answer 410, not 404).
const REF_MEMORY_MS: u64 = 15 * 60 * 1000;
/// Companion devices per phone, as on the real service.
const MAX_DEVICES_PER_PHONE: usize = 4;
/// Longest text the server takes, bytes.
const MAX_BODY_BYTES: usize = 65_536;
/// Platforms a phone can report.
pub const PHONE_PLATFORMS: [&str; 4] = ["android", "iphone", "smba", "smbi"];
/// How long a media upload credential (`media_conn`'s `auth`) is valid, s.
pub const MEDIA_AUTH_TTL_S: u64 = 3600;
/// Longest MIME type or file name the servers take, characters.
const MAX_MEDIA_NAME_CHARS: usize = 255;

/// The servers' whole state. See the module docs.
#[derive(Debug)]
pub struct World {
    timings: Timings,
    devices: BTreeMap<String, Device>,
    conns: BTreeMap<ConnId, Phase>,
    batches: HashMap<u64, Batch>,
    refs: HashMap<String, (u64, usize)>,
    unregistered: HashSet<String>,
    pending_sends: Vec<PendingSend>,
    pending_acks: Vec<PendingAck>,
    next_conn: ConnId,
    next_batch: u64,
    effects: Vec<Effect>,
    media: MediaStore,
    /// Upload credentials: auth → (device, valid until Unix epoch ms).
    media_auths: HashMap<String, (String, u64)>,
}

impl World {
    /// An empty world: no devices, no pages.
    pub fn new(timings: Timings) -> Self {
        Self {
            timings,
            devices: BTreeMap::new(),
            conns: BTreeMap::new(),
            batches: HashMap::new(),
            refs: HashMap::new(),
            unregistered: HashSet::new(),
            pending_sends: Vec::new(),
            pending_acks: Vec::new(),
            next_conn: 1,
            next_batch: 1,
            effects: Vec::new(),
            media: MediaStore::default(),
            media_auths: HashMap::new(),
        }
    }

    /// The effects queued since the last call, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    // ----- page sockets -------------------------------------------------

    /// A page opened a socket; it must say hello next.
    pub fn open(&mut self) -> ConnId {
        let id = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(id, Phase::AwaitHello);
        id
    }

    /// A page socket is gone (the page left, or the server closed it).
    pub fn closed(&mut self, conn: ConnId, now_ms: u64) {
        self.end_batch_of(conn, now_ms);
        self.conns.remove(&conn);
    }

    /// Handles one frame from a page.
    pub fn frame(&mut self, conn: ConnId, frame: ClientFrame, now_ms: u64, rng: &mut impl RngCore) {
        let Some(phase) = self.conns.get(&conn).cloned() else {
            return;
        };
        match (frame, phase) {
            (ClientFrame::Hello(h), Phase::AwaitHello) => {
                if h.keys.validate().is_err() {
                    self.end_stream(conn, StreamErrorKind::BadHello, now_ms);
                    return;
                }
                match h.cred {
                    None => self.start_batch(conn, h.keys, now_ms, rng),
                    Some(cred) => self.login(conn, &cred.device, &cred.secret, h.takeover, now_ms),
                }
            }
            (ClientFrame::RefreshQr, Phase::Unpaired { keys, batch, .. }) => {
                let used_up = self.batches.get(&batch).is_none_or(|b| b.schedule.index_at(now_ms).is_none());
                if used_up {
                    self.end_batch_of(conn, now_ms);
                    self.start_batch(conn, keys, now_ms, rng);
                }
            }
            (ClientFrame::Logout, Phase::Linked { device, .. }) => {
                self.log_out(&device, Some(conn), now_ms);
            }
            (ClientFrame::Send(f), Phase::Linked { device, .. }) => self.on_send(conn, &device, f, now_ms),
            (ClientFrame::ChatState { jid, state }, Phase::Linked { device, .. }) => {
                if matches!(state.as_str(), "composing" | "paused") {
                    if let Some(d) = self.devices.get_mut(&device) {
                        d.chat_states.push(ChatStateEvent { to: jid, state, at_ms: now_ms });
                        if d.chat_states.len() > CHAT_STATES_KEPT {
                            d.chat_states.remove(0);
                        }
                    }
                }
            }
            (ClientFrame::Received { id, from }, Phase::Linked { device, .. }) => {
                if let Some(d) = self.devices.get_mut(&device) {
                    d.inbox.iter_mut().filter(|m| m.id == id && m.from == from).for_each(|m| m.delivered = true);
                }
            }
            (ClientFrame::MediaConn { req }, Phase::Linked { device, .. }) => {
                let auth = self.media_auth(&device, now_ms, rng);
                self.effects.push(Effect::Send(conn, ServerFrame::MediaConn { req, auth, ttl: MEDIA_AUTH_TTL_S }));
            }
            (ClientFrame::Exists { req, jid }, Phase::Linked { .. }) => {
                let exists = self.on_whatsapp(&jid);
                self.effects.push(Effect::Send(conn, ServerFrame::Exists { req, exists }));
            }
            // Anything else is out of turn for this socket: ignore it.
            _ => {}
        }
    }

    /// Fires everything due at `now_ms`.
    pub fn tick(&mut self, now_ms: u64) {
        // Sends and acks first, so a history sync due now carries them.
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending_sends).into_iter().partition(|p| p.due_ms <= now_ms);
        self.pending_sends = later;
        for p in due {
            self.accept(&p.device, p.conn, p.frame, now_ms);
        }
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending_acks).into_iter().partition(|p| p.due_ms <= now_ms);
        self.pending_acks = later;
        for p in due {
            self.advance_ack(&p.device, &p.id, Some(&p.to), 2);
        }
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            match self.conns.get(&conn).cloned() {
                Some(Phase::Unpaired { .. }) => self.show_current_ref(conn, now_ms),
                Some(Phase::Linked { device, sync_at_ms: Some(at) }) if at <= now_ms => {
                    self.conns.insert(conn, Phase::Linked { device: device.clone(), sync_at_ms: None });
                    let msgs = self.history(&device);
                    self.effects.push(Effect::Send(conn, ServerFrame::History { msgs }));
                    // What arrived while the device was away comes after the sync.
                    let held: Vec<ServerFrame> = self
                        .devices
                        .get(&device)
                        .map(|d| d.inbox.iter().filter(|m| !m.delivered).map(msg_frame).collect())
                        .unwrap_or_default();
                    self.effects.extend(held.into_iter().map(|f| Effect::Send(conn, f)));
                }
                _ => {}
            }
        }
        self.forget_old_refs(now_ms);
    }

    /// When [`World::tick`] next has something to do, Unix epoch ms.
    pub fn next_deadline(&self, now_ms: u64) -> Option<u64> {
        let mut next: Option<u64> = None;
        let mut consider = |t: u64| next = Some(next.map_or(t, |n| n.min(t)));
        for phase in self.conns.values() {
            match phase {
                Phase::Unpaired { batch, shown, .. } => {
                    if let Some(b) = self.batches.get(batch) {
                        let want = b.schedule.index_at(now_ms).map_or(Shown::Idle, Shown::Ref);
                        if want != *shown {
                            consider(now_ms);
                        } else if let Some(t) = b.schedule.next_change_ms(now_ms) {
                            consider(t);
                        }
                    }
                }
                Phase::Linked { sync_at_ms: Some(t), .. } => consider(*t),
                _ => {}
            }
        }
        self.pending_sends.iter().for_each(|p| consider(p.due_ms));
        self.pending_acks.iter().for_each(|p| consider(p.due_ms));
        next
    }

    /// Closes every page socket (the servers shut down).
    pub fn close_all(&mut self) {
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            self.conns.insert(conn, Phase::Closing);
            self.effects.push(Effect::Close(conn));
        }
    }

    // ----- the phone ----------------------------------------------------

    /// The phone scans `qr` and links a new device for `phone`. Returns the
    /// device id. 404: no live page shows the ref; 410: it expired or was
    /// superseded; 400: malformed input or keys that are not the page's.
    pub fn scan(
        &mut self,
        qr: &str,
        phone: &str,
        pushname: &str,
        platform: &str,
        now_ms: u64,
        rng: &mut impl RngCore,
    ) -> Result<String, PhoneError> {
        let phone = normalize_phone(phone).ok_or_else(|| bad("phone must be 5 to 20 digits, optionally after a +"))?;
        if pushname.chars().count() > 25 || pushname.chars().any(char::is_control) {
            return Err(bad("pushname must be at most 25 characters, no control characters"));
        }
        if !PHONE_PLATFORMS.contains(&platform) {
            return Err(bad("platform must be one of android, iphone, smba, smbi"));
        }
        let qr = QrString::parse(qr).ok_or_else(|| bad("qr must be ref,staticKey,identityKey,advSecret,platform"))?;
        let not_shown = || PhoneError::NotFound("no page shows this QR ref".into());
        let &(batch_id, index) = self.refs.get(qr.qr_ref).ok_or_else(not_shown)?;
        let batch = self.batches.get(&batch_id).ok_or_else(not_shown)?;
        match batch.schedule.status(index, now_ms, batch.ended_ms) {
            RefStatus::NeverShown => return Err(not_shown()),
            RefStatus::Expired => return Err(PhoneError::Gone("this QR ref expired".into())),
            RefStatus::Valid => {}
        }
        let conn = batch.conn;
        let Some(Phase::Unpaired { keys, .. }) = self.conns.get(&conn) else {
            return Err(not_shown());
        };
        if !qr.matches(keys) {
            return Err(bad("the QR's keys are not the ones the page showing this ref has"));
        }
        let same_phone = || self.devices.values().filter(|d| d.phone == phone);
        if same_phone().any(|d| d.state == DeviceState::Banned) {
            return Err(PhoneError::Forbidden("this account is banned".into()));
        }
        if same_phone().filter(|d| d.state == DeviceState::Active).count() >= MAX_DEVICES_PER_PHONE {
            return Err(PhoneError::Conflict(format!("this account already has {MAX_DEVICES_PER_PHONE} linked devices")));
        }
        let device = loop {
            let id = format!("{:012x}", rng.next_u64() & 0xffff_ffff_ffff);
            if !self.devices.contains_key(&id) {
                break id;
            }
        };
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        let secret = B64.encode(secret);
        let pushname = if pushname.is_empty() { phone.clone() } else { pushname.to_owned() };
        self.devices.insert(
            device.clone(),
            Device {
                phone: phone.clone(),
                pushname: pushname.clone(),
                platform: platform.to_owned(),
                secret: secret.clone(),
                state: DeviceState::Active,
                conflict: false,
                timelocked_until_ms: None,
                offline_until_ms: None,
                slow_send_ms: 0,
                logins: 0,
                linked_at_ms: now_ms,
                log: Vec::new(),
                chat_states: Vec::new(),
                inbox: Vec::new(),
            },
        );
        self.end_batch_of(conn, now_ms);
        self.conns.insert(conn, Phase::Pairing);
        self.effects.push(Effect::Send(conn, ServerFrame::Paired { device: device.clone(), secret, phone, pushname }));
        Ok(device)
    }

    /// The phone logs the device out: its pages get `logout` and are closed.
    pub fn phone_logout(&mut self, device: &str, now_ms: u64) -> Result<(), PhoneError> {
        self.active_device(device)?;
        self.log_out(device, None, now_ms);
        Ok(())
    }

    /// The phone removes the device: `device_removed` stream error.
    pub fn remove_device(&mut self, device: &str, now_ms: u64) -> Result<(), PhoneError> {
        self.active_device(device)?.state = DeviceState::Removed;
        self.end_device_streams(device, StreamErrorKind::DeviceRemoved, now_ms);
        Ok(())
    }

    /// The account is opened elsewhere: the device's pages go `CONFLICT`
    /// until one takes over.
    pub fn conflict(&mut self, device: &str, now_ms: u64) -> Result<(), PhoneError> {
        self.active_device(device)?.conflict = true;
        self.end_device_streams(device, StreamErrorKind::Replaced, now_ms);
        Ok(())
    }

    /// Terms-of-service block: closed now, refused from now on.
    pub fn ban(&mut self, device: &str, now_ms: u64) -> Result<(), PhoneError> {
        self.active_device(device)?.state = DeviceState::Banned;
        self.end_device_streams(device, StreamErrorKind::TosBlock, now_ms);
        Ok(())
    }

    /// Reach-out timelock for `seconds`: sends to chats the account never
    /// messaged fail with 463.
    pub fn timelock(&mut self, device: &str, seconds: u64, now_ms: u64) -> Result<(), PhoneError> {
        self.device_mut(device)?.timelocked_until_ms = Some(now_ms + seconds * 1000);
        Ok(())
    }

    /// The device's network is down for `seconds`: its sockets drop now and
    /// its reconnects are dropped until then.
    pub fn network_drop(&mut self, device: &str, seconds: u64, now_ms: u64) -> Result<(), PhoneError> {
        self.device_mut(device)?.offline_until_ms = Some(now_ms + seconds * 1000);
        for conn in self.linked_conns(device) {
            self.conns.insert(conn, Phase::Closing);
            self.effects.push(Effect::Drop(conn));
        }
        Ok(())
    }

    /// The device's pages reload themselves (a new WhatsApp Web version).
    pub fn reload(&mut self, device: &str) -> Result<(), PhoneError> {
        self.device_mut(device)?;
        for conn in self.linked_conns(device) {
            self.effects.push(Effect::Send(conn, ServerFrame::Reload));
        }
        Ok(())
    }

    /// Delay, in ms, before the server accepts each of the device's sends.
    pub fn slow(&mut self, device: &str, ms: u64) -> Result<(), PhoneError> {
        self.device_mut(device)?.slow_send_ms = ms;
        Ok(())
    }

    /// Advances the ack of the device's message(s) with key id `id` to `ack`
    /// (2 DEVICE, 3 READ, 4 PLAYED); acks never go back.
    pub fn ack(&mut self, device: &str, id: &str, ack: i8) -> Result<(), PhoneError> {
        self.device_mut(device)?;
        if self.advance_ack(device, id, None, ack) {
            Ok(())
        } else {
            Err(PhoneError::NotFound(format!("device {device} sent no message with id {id}")))
        }
    }

    /// A contact (`from`: digits, optional `+`) writes `body` to the
    /// device's account, or sends it `media` with `body` as the caption
    /// (the contact's phone encrypts the file with a new media key and
    /// uploads it to the media host). The servers hold the message for the
    /// device until its page confirms it; a page that is connected and
    /// synced gets it now, any other on its next connection, after the
    /// history sync. Returns the message. 400: bad number, body, MIME type
    /// or file name, or an empty file; 413: a file over
    /// [`media::MAX_FILE_BYTES`]; 409: the device is not active; 404: no
    /// such device.
    #[allow(clippy::too_many_arguments)]
    pub fn incoming(
        &mut self,
        device: &str,
        from: &str,
        body: &str,
        pushname: &str,
        media: Option<IncomingMedia>,
        now_ms: u64,
        rng: &mut impl RngCore,
    ) -> Result<IncomingMessage, PhoneError> {
        let digits = normalize_phone(from).ok_or_else(|| bad("from must be 5 to 20 digits, optionally after a +"))?;
        let min_body = usize::from(media.is_none());
        if body.len() < min_body || body.len() > MAX_BODY_BYTES {
            return Err(bad(&format!("body must be {min_body} to {MAX_BODY_BYTES} bytes")));
        }
        if pushname.chars().count() > 25 || pushname.chars().any(char::is_control) {
            return Err(bad("pushname must be at most 25 characters, no control characters"));
        }
        if let Some(m) = &media {
            check_media_names(&m.mimetype, m.filename.as_deref())?;
            if m.data.is_empty() {
                return Err(bad("the file is empty"));
            }
            if m.data.len() > media::MAX_FILE_BYTES {
                return Err(PhoneError::TooLarge(format!("the file is over {} bytes", media::MAX_FILE_BYTES)));
            }
        }
        let d = self.active_device(device)?;
        if d.phone == digits {
            return Err(bad("from is the account's own number"));
        }
        let id = format!("{:016X}{:016X}", rng.next_u64(), rng.next_u64());
        let (kind, log, attachment) = match media {
            None => ("chat".to_owned(), None, None),
            Some(m) => {
                let (log, frame) = self.host_incoming_file(m, now_ms, rng);
                (frame.kind.clone(), Some(log), Some(frame))
            }
        };
        let msg = IncomingMessage {
            id,
            from: format!("{digits}@c.us"),
            kind,
            body: body.to_owned(),
            media: log,
            attachment,
            pushname: pushname.to_owned(),
            at_ms: now_ms,
            delivered: false,
        };
        let d = self.active_device(device)?;
        d.inbox.push(msg.clone());
        let synced: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, p)| matches!(p, Phase::Linked { device: dv, sync_at_ms: None } if dv == device))
            .map(|(c, _)| *c)
            .collect();
        for conn in synced {
            self.effects.push(Effect::Send(conn, msg_frame(&msg)));
        }
        Ok(msg)
    }

    /// A page uploads media (`POST /mms/<kind>/<token>?auth=…`): `upload`
    /// is the encrypted file and its MAC, `upload_sha256` its SHA-256, which
    /// `token` (base64url, no padding) must name, as WhatsApp's media host
    /// checks it. Returns the upload's direct path. 401: `auth` is unknown,
    /// expired, or its device is no longer active; 400: an unknown type or
    /// a token that is not the upload's hash; 413: over
    /// [`media::MAX_UPLOAD_BYTES`].
    #[allow(clippy::too_many_arguments)]
    pub fn upload(
        &mut self,
        auth: &str,
        kind: &str,
        token: &str,
        upload: Bytes,
        upload_sha256: [u8; 32],
        now_ms: u64,
        rng: &mut impl RngCore,
    ) -> Result<String, PhoneError> {
        let unauthorized = || PhoneError::Unauthorized("no valid media upload auth (ask media_conn for one)".into());
        let (device, until) = self.media_auths.get(auth).cloned().ok_or_else(unauthorized)?;
        if until <= now_ms || self.devices.get(&device).is_none_or(|d| d.state != DeviceState::Active) {
            return Err(unauthorized());
        }
        if MediaType::parse(kind).is_none() {
            return Err(bad(&format!("unknown media type {kind:?}")));
        }
        if upload.len() > media::MAX_UPLOAD_BYTES {
            return Err(PhoneError::TooLarge(format!("uploads are at most {} bytes", media::MAX_UPLOAD_BYTES)));
        }
        if B64URL.encode(upload_sha256) != token {
            return Err(bad("token is not the base64url SHA-256 of the upload"));
        }
        let path = format!("/v/t62.7118-24/{:016x}{:016x}.enc", rng.next_u64(), rng.next_u64());
        self.media.put(path.clone(), upload);
        Ok(path)
    }

    /// The upload at `direct_path`, as the media host serves it for a
    /// download; `None` if it has none (never uploaded, or dropped).
    pub fn download(&self, direct_path: &str) -> Option<Bytes> {
        self.media.get(direct_path)
    }

    /// What contacts sent to the device's account, oldest first.
    pub fn inbox(&self, device: &str) -> Result<Vec<IncomingMessage>, PhoneError> {
        self.devices.get(device).map(|d| d.inbox.clone()).ok_or_else(|| no_device(device))
    }

    /// Marks numbers (digits, optional `+`) as not on WhatsApp. All or none:
    /// a malformed number refuses the whole list.
    pub fn unregister(&mut self, numbers: &[String]) -> Result<usize, PhoneError> {
        let digits = numbers
            .iter()
            .map(|n| normalize_phone(n).ok_or_else(|| bad(&format!("not a phone number: {n:?}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let n = digits.len();
        self.unregistered.extend(digits);
        Ok(n)
    }

    /// Every device ever linked, oldest first.
    pub fn devices(&self, now_ms: u64) -> Vec<DeviceView> {
        let mut list: Vec<DeviceView> = self
            .devices
            .iter()
            .map(|(id, d)| DeviceView {
                device: id.clone(),
                phone: d.phone.clone(),
                pushname: d.pushname.clone(),
                state: d.state,
                online: !self.linked_conns(id).is_empty(),
                logins: d.logins,
                linked_at_ms: d.linked_at_ms,
                conflict: d.conflict,
                timelocked_until_ms: d.timelocked_until_ms.filter(|&u| u > now_ms),
            })
            .collect();
        list.sort_by(|a, b| a.linked_at_ms.cmp(&b.linked_at_ms).then_with(|| a.device.cmp(&b.device)));
        list
    }

    /// What the device sent, in the order the server accepted it.
    /// The chat states the account showed, oldest first.
    pub fn chat_states(&self, device: &str) -> Result<Vec<ChatStateEvent>, PhoneError> {
        self.devices.get(device).map(|d| d.chat_states.clone()).ok_or_else(|| no_device(device))
    }

    pub fn messages(&self, device: &str) -> Result<Vec<SentMessage>, PhoneError> {
        self.devices.get(device).map(|d| d.log.clone()).ok_or_else(|| no_device(device))
    }

    // ----- internals ----------------------------------------------------

    fn device_mut(&mut self, device: &str) -> Result<&mut Device, PhoneError> {
        self.devices.get_mut(device).ok_or_else(|| no_device(device))
    }

    fn active_device(&mut self, device: &str) -> Result<&mut Device, PhoneError> {
        let d = self.device_mut(device)?;
        match d.state {
            DeviceState::Active => Ok(d),
            other => Err(PhoneError::Conflict(format!("device {device} is {}", other.as_str()))),
        }
    }

    /// The device's upload credential: the one it has while valid, else a
    /// new one (expired ones are forgotten).
    fn media_auth(&mut self, device: &str, now_ms: u64, rng: &mut impl RngCore) -> String {
        self.media_auths.retain(|_, (_, until)| *until > now_ms);
        // Still valid for at least a minute: keep it.
        let keep = now_ms + 60_000;
        if let Some((auth, _)) = self.media_auths.iter().find(|(_, (d, until))| d == device && *until > keep) {
            return auth.clone();
        }
        let mut raw = [0u8; 24];
        rng.fill_bytes(&mut raw);
        let auth = B64URL.encode(raw);
        self.media_auths.insert(auth.clone(), (device.to_owned(), now_ms + MEDIA_AUTH_TTL_S * 1000));
        auth
    }

    /// A contact's phone encrypts and uploads a file it sends: the log
    /// entry and the attachment for the message.
    fn host_incoming_file(&mut self, m: IncomingMedia, now_ms: u64, rng: &mut impl RngCore) -> (MediaLog, MediaFrame) {
        let kind = MediaType::for_mimetype(&m.mimetype);
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        let digest = media::sha256(&m.data);
        let upload = media::seal(kind, &key, &m.data);
        let enc_digest = media::sha256(&upload);
        let path = format!("/v/t62.7118-24/{:016x}{:016x}.enc", rng.next_u64(), rng.next_u64());
        self.media.put(path.clone(), Bytes::from(upload));
        let size = m.data.len() as u64;
        let log = MediaLog {
            mimetype: m.mimetype.clone(),
            filename: m.filename.clone(),
            size,
            sha256: Some(hex::encode(digest)),
            media_error: None,
        };
        let frame = MediaFrame {
            kind: kind.as_str().to_owned(),
            mimetype: m.mimetype,
            filename: m.filename,
            size,
            filehash: B64.encode(digest),
            enc_filehash: B64.encode(enc_digest),
            media_key: B64.encode(key),
            media_key_timestamp: i64::try_from(now_ms / 1000).unwrap_or(i64::MAX),
            direct_path: path,
        };
        (log, frame)
    }

    /// What the recipient's phone gets of a media message's file: it
    /// downloads the upload, checks its hash and MAC, decrypts it and
    /// checks the file's size and hash, as a real phone does before it
    /// shows the file.
    fn receive_media(&self, m: &MediaFrame) -> MediaLog {
        let got = (|| -> Result<String, String> {
            let kind = MediaType::parse(&m.kind).ok_or("unknown media type")?;
            let key = decode_32(&m.media_key).ok_or("the media key is not 32 bytes of base64")?;
            let upload = self.media.get(&m.direct_path).ok_or("the media host has no file at this path")?;
            if B64.encode(media::sha256(&upload)) != m.enc_filehash {
                return Err("the download's SHA-256 is not the message's encFilehash".into());
            }
            let plain = media::open(kind, &key, &upload).map_err(|e| e.to_string())?;
            if plain.len() as u64 != m.size {
                return Err(format!("the file is {} bytes, the message says {}", plain.len(), m.size));
            }
            let digest = media::sha256(&plain);
            if B64.encode(digest) != m.filehash {
                return Err("the file's SHA-256 is not the message's filehash".into());
            }
            Ok(hex::encode(digest))
        })();
        let (sha256, media_error) = match got {
            Ok(h) => (Some(h), None),
            Err(e) => (None, Some(e)),
        };
        MediaLog { mimetype: m.mimetype.clone(), filename: m.filename.clone(), size: m.size, sha256, media_error }
    }

    fn linked_conns(&self, device: &str) -> Vec<ConnId> {
        self.conns.iter().filter(|(_, p)| matches!(p, Phase::Linked { device: d, .. } if d == device)).map(|(c, _)| *c).collect()
    }

    fn end_stream(&mut self, conn: ConnId, kind: StreamErrorKind, now_ms: u64) {
        self.end_batch_of(conn, now_ms);
        self.conns.insert(conn, Phase::Closing);
        self.effects.push(Effect::Send(conn, ServerFrame::stream_error(kind)));
        self.effects.push(Effect::Close(conn));
    }

    fn end_device_streams(&mut self, device: &str, kind: StreamErrorKind, now_ms: u64) {
        for conn in self.linked_conns(device) {
            self.end_stream(conn, kind, now_ms);
        }
    }

    /// Marks the device logged out; `from_page` is the socket that asked.
    fn log_out(&mut self, device: &str, from_page: Option<ConnId>, now_ms: u64) {
        if let Some(d) = self.devices.get_mut(device) {
            d.state = DeviceState::LoggedOut;
        }
        for conn in self.linked_conns(device) {
            let frame = if Some(conn) == from_page { ServerFrame::LoggedOut } else { ServerFrame::Logout };
            self.end_batch_of(conn, now_ms);
            self.conns.insert(conn, Phase::Closing);
            self.effects.push(Effect::Send(conn, frame));
            self.effects.push(Effect::Close(conn));
        }
    }

    fn login(&mut self, conn: ConnId, device: &str, secret: &str, takeover: bool, now_ms: u64) {
        let Some(d) = self.devices.get_mut(device).filter(|d| secrets_equal(&d.secret, secret)) else {
            self.end_stream(conn, StreamErrorKind::LoggedOut, now_ms);
            return;
        };
        let refused = match d.state {
            DeviceState::Active => None,
            DeviceState::LoggedOut => Some(StreamErrorKind::LoggedOut),
            DeviceState::Removed => Some(StreamErrorKind::DeviceRemoved),
            DeviceState::Banned => Some(StreamErrorKind::TosBlock),
        };
        if let Some(kind) = refused {
            self.end_stream(conn, kind, now_ms);
            return;
        }
        if d.offline_until_ms.is_some_and(|u| now_ms < u) {
            self.conns.insert(conn, Phase::Closing);
            self.effects.push(Effect::Drop(conn));
            return;
        }
        if d.conflict {
            if !takeover {
                self.end_stream(conn, StreamErrorKind::Replaced, now_ms);
                return;
            }
            d.conflict = false;
        }
        d.logins += 1;
        let frame = ServerFrame::Connected { me: format!("{}@c.us", d.phone), pushname: d.pushname.clone(), platform: d.platform.clone() };
        let sync_at_ms = Some(now_ms + self.timings.sync_delay_ms);
        self.conns.insert(conn, Phase::Linked { device: device.to_owned(), sync_at_ms });
        self.effects.push(Effect::Send(conn, frame));
    }

    fn start_batch(&mut self, conn: ConnId, keys: PageKeys, now_ms: u64, rng: &mut impl RngCore) {
        let id = self.next_batch;
        self.next_batch += 1;
        let count = self.timings.qr_refs.max(1);
        let refs: Vec<String> = (0..count).map(|_| new_ref(rng)).collect();
        for (i, r) in refs.iter().enumerate() {
            self.refs.insert(r.clone(), (id, i));
        }
        let schedule = RefSchedule { start_ms: now_ms, first_ms: self.timings.qr_first_ms, next_ms: self.timings.qr_next_ms, count };
        self.batches.insert(id, Batch { conn, schedule, refs, ended_ms: None });
        self.conns.insert(conn, Phase::Unpaired { keys, batch: id, shown: Shown::Nothing });
        self.show_current_ref(conn, now_ms);
    }

    /// Pushes the ref an unpaired page should show now, if it changed.
    fn show_current_ref(&mut self, conn: ConnId, now_ms: u64) {
        let Some(Phase::Unpaired { keys, batch, shown }) = self.conns.get(&conn).cloned() else {
            return;
        };
        let Some(b) = self.batches.get(&batch) else {
            return;
        };
        let want = b.schedule.index_at(now_ms).map_or(Shown::Idle, Shown::Ref);
        if want == shown {
            return;
        }
        let frame = match want {
            Shown::Ref(i) => match b.refs.get(i) {
                Some(r) => ServerFrame::Qr { qr_ref: r.clone() },
                None => return,
            },
            _ => ServerFrame::QrIdle,
        };
        self.conns.insert(conn, Phase::Unpaired { keys, batch, shown: want });
        self.effects.push(Effect::Send(conn, frame));
    }

    fn end_batch_of(&mut self, conn: ConnId, now_ms: u64) {
        if let Some(Phase::Unpaired { batch, .. }) = self.conns.get(&conn) {
            if let Some(b) = self.batches.get_mut(batch) {
                b.ended_ms.get_or_insert(now_ms);
            }
        }
    }

    fn forget_old_refs(&mut self, now_ms: u64) {
        let old: Vec<u64> = self
            .batches
            .iter()
            .filter(|(_, b)| {
                let over = b.ended_ms.unwrap_or(b.schedule.end_ms()).min(b.schedule.end_ms());
                over + REF_MEMORY_MS < now_ms
            })
            .map(|(id, _)| *id)
            .collect();
        for id in old {
            if let Some(b) = self.batches.remove(&id) {
                for r in b.refs {
                    self.refs.remove(&r);
                }
            }
        }
    }

    fn on_whatsapp(&self, jid: &str) -> bool {
        match ChatId::parse(jid) {
            Some(ChatId::User(digits)) => !self.unregistered.contains(&digits),
            _ => false,
        }
    }

    fn on_send(&mut self, conn: ConnId, device: &str, f: SendFrame, now_ms: u64) {
        let valid = ChatId::parse(&f.to).is_some()
            && (1..=64).contains(&f.id.len())
            && f.id.bytes().all(|b| b.is_ascii_alphanumeric())
            && f.body.len() <= MAX_BODY_BYTES
            && f.media.as_ref().is_none_or(valid_attachment);
        if !valid {
            self.reply_sent(conn, device, &f, false, Some(400));
            return;
        }
        if f.attempt > 0 {
            // A retransmission after the socket came back: the servers
            // already have it if it arrived before the loss.
            if let Some(p) = self.pending_sends.iter_mut().find(|p| p.device == device && p.frame.id == f.id && p.frame.to == f.to) {
                p.conn = conn;
                p.frame.n = f.n;
                return;
            }
            let known = self.devices.get(device).and_then(|d| d.log.iter().find(|m| m.id == f.id && m.to == f.to)).map(|m| m.ack);
            if let Some(ack) = known {
                self.reply_sent(conn, device, &f, true, None);
                if ack > 1 {
                    let frame = ServerFrame::Ack { id: f.id.clone(), to: f.to.clone(), ack };
                    self.effects.push(Effect::Send(conn, frame));
                }
                return;
            }
        }
        let slow = self.devices.get(device).map_or(0, |d| d.slow_send_ms);
        if slow > 0 {
            self.pending_sends.push(PendingSend { due_ms: now_ms + slow, device: device.to_owned(), conn, frame: f });
        } else {
            self.accept(device, conn, f, now_ms);
        }
    }

    fn accept(&mut self, device: &str, conn: ConnId, f: SendFrame, now_ms: u64) {
        let Some(d) = self.devices.get(device) else {
            return;
        };
        if d.state != DeviceState::Active {
            return;
        }
        let timelocked = d.timelocked_until_ms.is_some_and(|u| now_ms < u);
        if timelocked && !self.account_messaged(&d.phone, &f.to) {
            self.reply_sent(conn, device, &f, false, Some(463));
            return;
        }
        let deliverable = self.on_whatsapp(&f.to);
        let media = f.media.as_ref().map(|m| self.receive_media(m));
        let kind = f.media.as_ref().map_or_else(|| "chat".to_owned(), |m| m.kind.clone());
        if let Some(d) = self.devices.get_mut(device) {
            d.log.push(SentMessage {
                id: f.id.clone(),
                to: f.to.clone(),
                kind,
                body: f.body.clone(),
                media,
                attachment: f.media.clone(),
                at_ms: now_ms,
                ack: 1,
                t: f.t,
            });
        }
        self.reply_sent(conn, device, &f, true, None);
        if deliverable {
            self.pending_acks.push(PendingAck {
                due_ms: now_ms + self.timings.ack_device_after_ms,
                device: device.to_owned(),
                id: f.id,
                to: f.to,
            });
        }
    }

    /// Answers a send on the socket that sent it, if it is still there.
    fn reply_sent(&mut self, conn: ConnId, device: &str, f: &SendFrame, ok: bool, error: Option<u16>) {
        let live = matches!(self.conns.get(&conn), Some(Phase::Linked { device: d, .. }) if d == device);
        if live {
            let frame = ServerFrame::Sent { n: f.n.clone(), id: f.id.clone(), to: f.to.clone(), ok, error };
            self.effects.push(Effect::Send(conn, frame));
        }
    }

    fn account_messaged(&self, phone: &str, to: &str) -> bool {
        self.devices.values().filter(|d| d.phone == phone).any(|d| d.log.iter().any(|m| m.to == to))
    }

    /// Raises matching messages to `ack`; tells the device's pages. Returns
    /// whether any message matched.
    fn advance_ack(&mut self, device: &str, id: &str, to: Option<&str>, ack: i8) -> bool {
        let Some(d) = self.devices.get_mut(device) else {
            return false;
        };
        let mut found = false;
        let mut changed: Vec<String> = Vec::new();
        for m in d.log.iter_mut().filter(|m| m.id == id && to.is_none_or(|t| m.to == t)) {
            found = true;
            if m.ack < ack {
                m.ack = ack;
                if !changed.contains(&m.to) {
                    changed.push(m.to.clone());
                }
            }
        }
        for conn in self.linked_conns(device) {
            for to in &changed {
                let frame = ServerFrame::Ack { id: id.to_owned(), to: to.clone(), ack };
                self.effects.push(Effect::Send(conn, frame));
            }
        }
        found
    }

    /// The device's messages for history sync: one per key, oldest first.
    fn history(&self, device: &str) -> Vec<HistoryMsg> {
        let mut out: Vec<HistoryMsg> = Vec::new();
        let Some(d) = self.devices.get(device) else {
            return out;
        };
        for m in &d.log {
            match out.iter_mut().find(|h| h.id == m.id && h.to == m.to) {
                Some(h) => h.ack = h.ack.max(m.ack),
                None => out.push(HistoryMsg {
                    id: m.id.clone(),
                    to: m.to.clone(),
                    body: m.body.clone(),
                    media: m.attachment.clone(),
                    t: m.t,
                    ack: m.ack,
                }),
            }
        }
        out
    }
}

fn msg_frame(m: &IncomingMessage) -> ServerFrame {
    let t = i64::try_from(m.at_ms / 1000).unwrap_or(i64::MAX);
    ServerFrame::Msg {
        id: m.id.clone(),
        from: m.from.clone(),
        body: m.body.clone(),
        media: m.attachment.clone().map(Box::new),
        t,
        pushname: m.pushname.clone(),
    }
}

/// `type/subtype` (parameters allowed), and a file name without control
/// characters or path separators; each at most [`MAX_MEDIA_NAME_CHARS`].
fn check_media_names(mimetype: &str, filename: Option<&str>) -> Result<(), PhoneError> {
    let essence = mimetype.split(';').next().unwrap_or("").trim();
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b));
    let well_formed = essence.split_once('/').is_some_and(|(t, s)| token(t) && token(s));
    if !well_formed || mimetype.chars().count() > MAX_MEDIA_NAME_CHARS || mimetype.chars().any(char::is_control) {
        return Err(bad(&format!("mimetype must be type/subtype, at most {MAX_MEDIA_NAME_CHARS} characters")));
    }
    if let Some(name) = filename {
        let bad_char = |c: char| c.is_control() || c == '/' || c == '\\';
        if name.is_empty() || name.chars().count() > MAX_MEDIA_NAME_CHARS || name.chars().any(bad_char) {
            return Err(bad(&format!("filename must be 1 to {MAX_MEDIA_NAME_CHARS} characters, no control characters or slashes")));
        }
    }
    Ok(())
}

/// An attachment the servers can carry: a known type, sane names and
/// size, 32-byte key and hashes, a media host path.
fn valid_attachment(m: &MediaFrame) -> bool {
    MediaType::parse(&m.kind).is_some()
        && check_media_names(&m.mimetype, m.filename.as_deref()).is_ok()
        && m.size <= media::MAX_FILE_BYTES as u64
        && decode_32(&m.media_key).is_some()
        && decode_32(&m.filehash).is_some()
        && decode_32(&m.enc_filehash).is_some()
        && m.direct_path.starts_with("/v/")
        && m.direct_path.len() <= 256
}

/// Base64 of exactly 32 bytes.
fn decode_32(s: &str) -> Option<[u8; 32]> {
    B64.decode(s).ok().and_then(|v| <[u8; 32]>::try_from(v).ok())
}

fn bad(what: &str) -> PhoneError {
    PhoneError::BadRequest(what.to_owned())
}

fn no_device(device: &str) -> PhoneError {
    PhoneError::NotFound(format!("no device {device}"))
}

/// Compares secrets without an early exit on the first differing byte.
fn secrets_equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::protocol::{Credential, Hello};

    const T0: u64 = 1_700_000_000_000;

    fn timings() -> Timings {
        Timings { qr_first_ms: 60_000, qr_next_ms: 20_000, qr_refs: 3, sync_delay_ms: 500, ack_device_after_ms: 200 }
    }

    fn keys(seed: u8) -> PageKeys {
        let k = B64.encode([seed; 32]);
        PageKeys { noise: k.clone(), identity: k.clone(), adv: k, platform: "WEB".into() }
    }

    fn qr_for(r: &str, k: &PageKeys) -> String {
        format!("{r},{},{},{},{}", k.noise, k.identity, k.adv, k.platform)
    }

    fn hello(cred: Option<(&str, &str)>, k: PageKeys, takeover: bool) -> ClientFrame {
        ClientFrame::Hello(Hello { cred: cred.map(|(d, s)| Credential { device: d.into(), secret: s.into() }), keys: k, takeover })
    }

    fn frames_to(effects: &[Effect], conn: ConnId) -> Vec<ServerFrame> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Send(c, f) if *c == conn => Some(f.clone()),
                _ => None,
            })
            .collect()
    }

    fn last_ref(effects: &[Effect], conn: ConnId) -> Option<String> {
        frames_to(effects, conn).into_iter().rev().find_map(|f| match f {
            ServerFrame::Qr { qr_ref } => Some(qr_ref),
            _ => None,
        })
    }

    /// An unpaired page: its conn and first ref.
    fn unpaired(w: &mut World, k: &PageKeys, now: u64) -> (ConnId, String) {
        let c = w.open();
        w.frame(c, hello(None, k.clone(), false), now, &mut rand::thread_rng());
        let fx = w.take_effects();
        let r = last_ref(&fx, c).unwrap_or_default();
        (c, r)
    }

    /// A paired, connected page: (device, secret, conn).
    fn linked(w: &mut World, now: u64) -> (String, String, ConnId) {
        let k = keys(1);
        let (c, r) = unpaired(w, &k, now);
        let dev = w.scan(&qr_for(&r, &k), "4915112345678", "Acme", "android", now, &mut rand::thread_rng());
        let dev = dev.unwrap_or_default();
        let secret = frames_to(&w.take_effects(), c)
            .into_iter()
            .find_map(|f| match f {
                ServerFrame::Paired { secret, .. } => Some(secret),
                _ => None,
            })
            .unwrap_or_default();
        w.closed(c, now);
        let c2 = w.open();
        w.frame(c2, hello(Some((&dev, &secret)), keys(1), false), now, &mut rand::thread_rng());
        w.take_effects();
        (dev, secret, c2)
    }

    fn send(n: &str, id: &str, to: &str, attempt: u32) -> ClientFrame {
        ClientFrame::Send(SendFrame { n: n.into(), id: id.into(), to: to.into(), body: "hello".into(), media: None, t: 1, attempt })
    }

    #[test]
    fn refs_rotate_then_the_page_goes_idle_and_can_refresh() {
        let mut w = World::new(timings());
        let k = keys(1);
        let (c, r0) = unpaired(&mut w, &k, T0);
        assert!(r0.starts_with("2@"));
        assert_eq!(w.next_deadline(T0), Some(T0 + 60_000));
        w.tick(T0 + 60_000);
        let r1 = last_ref(&w.take_effects(), c);
        assert!(r1.as_ref().is_some_and(|r| *r != r0));
        w.tick(T0 + 80_000);
        w.tick(T0 + 100_000);
        assert_eq!(frames_to(&w.take_effects(), c).last(), Some(&ServerFrame::QrIdle));
        assert_eq!(w.next_deadline(T0 + 100_000), None);
        w.frame(c, ClientFrame::RefreshQr, T0 + 120_000, &mut rand::thread_rng());
        assert!(last_ref(&w.take_effects(), c).is_some());
    }

    #[test]
    fn scan_answers_404_410_400_then_links() {
        let mut w = World::new(timings());
        let mut rng = rand::thread_rng();
        let k = keys(1);
        let (c, r0) = unpaired(&mut w, &k, T0);
        let scan = |w: &mut World, qr: &str, phone: &str, now: u64| w.scan(qr, phone, "Acme", "android", now, &mut rand::thread_rng());
        assert!(matches!(scan(&mut w, &qr_for("2@nope", &k), "4915112345678", T0), Err(PhoneError::NotFound(_))));
        assert!(matches!(scan(&mut w, &qr_for(&r0, &keys(2)), "4915112345678", T0), Err(PhoneError::BadRequest(_))));
        assert!(matches!(scan(&mut w, &qr_for(&r0, &k), "49", T0), Err(PhoneError::BadRequest(_))));
        assert!(matches!(scan(&mut w, "garbage", "4915112345678", T0), Err(PhoneError::BadRequest(_))));
        w.tick(T0 + 60_000);
        let r1 = last_ref(&w.take_effects(), c).unwrap_or_default();
        assert!(matches!(scan(&mut w, &qr_for(&r0, &k), "4915112345678", T0 + 60_000), Err(PhoneError::Gone(_))));
        let dev = w.scan(&qr_for(&r1, &k), "+4915112345678", "Acme", "android", T0 + 61_000, &mut rng);
        assert!(dev.is_ok());
        assert!(matches!(frames_to(&w.take_effects(), c).as_slice(), [ServerFrame::Paired { .. }]));
        // The page is pairing: its ref is spent.
        assert!(matches!(scan(&mut w, &qr_for(&r1, &k), "4915112345678", T0 + 62_000), Err(PhoneError::Gone(_))));
    }

    #[test]
    fn a_linked_page_connects_then_syncs_history() {
        let mut w = World::new(timings());
        let (dev, secret, c) = linked(&mut w, T0);
        w.frame(c, send("n1", "3EB0AAAA", "4917000000001@c.us", 0), T0, &mut rand::thread_rng());
        w.take_effects();
        let c2 = w.open();
        w.frame(c2, hello(Some((&dev, &secret)), keys(9), false), T0 + 1_000, &mut rand::thread_rng());
        assert!(matches!(frames_to(&w.take_effects(), c2).as_slice(), [ServerFrame::Connected { .. }]));
        w.tick(T0 + 1_500);
        let fx = w.take_effects();
        assert!(frames_to(&fx, c2).iter().any(|f| matches!(
            f, ServerFrame::History { msgs } if msgs.len() == 1 && msgs[0].ack == 2
        )));
    }

    #[test]
    fn refused_credentials_end_the_stream_with_the_right_kind() {
        let mut w = World::new(timings());
        let mut rng = rand::thread_rng();
        let (dev, secret, _) = linked(&mut w, T0);
        let try_login = |w: &mut World, secret: &str| {
            let c = w.open();
            w.frame(c, hello(Some((&dev, secret)), keys(1), false), T0, &mut rand::thread_rng());
            frames_to(&w.take_effects(), c)
        };
        assert_eq!(try_login(&mut w, "wrong"), vec![ServerFrame::stream_error(StreamErrorKind::LoggedOut)]);
        assert_eq!(w.remove_device(&dev, T0), Ok(()));
        assert_eq!(try_login(&mut w, &secret), vec![ServerFrame::stream_error(StreamErrorKind::DeviceRemoved)]);
        assert!(matches!(w.ban(&dev, T0), Err(PhoneError::Conflict(_))));
        let c = w.open();
        w.frame(c, hello(None, keys(1), false), T0, &mut rng);
        assert!(last_ref(&w.take_effects(), c).is_some());
    }

    #[test]
    fn conflict_needs_a_takeover() {
        let mut w = World::new(timings());
        let (dev, secret, c) = linked(&mut w, T0);
        assert_eq!(w.conflict(&dev, T0), Ok(()));
        let fx = w.take_effects();
        assert!(fx.contains(&Effect::Close(c)));
        let c2 = w.open();
        w.frame(c2, hello(Some((&dev, &secret)), keys(1), false), T0, &mut rand::thread_rng());
        assert_eq!(frames_to(&w.take_effects(), c2), vec![ServerFrame::stream_error(StreamErrorKind::Replaced)]);
        let c3 = w.open();
        w.frame(c3, hello(Some((&dev, &secret)), keys(1), true), T0, &mut rand::thread_rng());
        assert!(matches!(frames_to(&w.take_effects(), c3).as_slice(), [ServerFrame::Connected { .. }]));
    }

    #[test]
    fn network_drop_drops_and_refuses_until_it_ends() {
        let mut w = World::new(timings());
        let (dev, secret, c) = linked(&mut w, T0);
        assert_eq!(w.network_drop(&dev, 5, T0), Ok(()));
        assert_eq!(w.take_effects(), vec![Effect::Drop(c)]);
        w.closed(c, T0);
        let c2 = w.open();
        w.frame(c2, hello(Some((&dev, &secret)), keys(1), false), T0 + 4_999, &mut rand::thread_rng());
        assert_eq!(w.take_effects(), vec![Effect::Drop(c2)]);
        let c3 = w.open();
        w.frame(c3, hello(Some((&dev, &secret)), keys(1), false), T0 + 5_000, &mut rand::thread_rng());
        assert!(matches!(frames_to(&w.take_effects(), c3).as_slice(), [ServerFrame::Connected { .. }]));
    }

    #[test]
    fn timelock_refuses_new_chats_only() {
        let mut w = World::new(timings());
        let mut rng = rand::thread_rng();
        let (dev, _, c) = linked(&mut w, T0);
        w.frame(c, send("a", "3EB01", "4917000000001@c.us", 0), T0, &mut rng);
        assert_eq!(w.timelock(&dev, 60, T0), Ok(()));
        w.take_effects();
        w.frame(c, send("b", "3EB02", "4917000000001@c.us", 0), T0, &mut rng);
        w.frame(c, send("c", "3EB03", "4917000000002@c.us", 0), T0, &mut rng);
        let sent: Vec<(String, bool, Option<u16>)> = frames_to(&w.take_effects(), c)
            .into_iter()
            .filter_map(|f| match f {
                ServerFrame::Sent { n, ok, error, .. } => Some((n, ok, error)),
                _ => None,
            })
            .collect();
        assert_eq!(sent, vec![("b".into(), true, None), ("c".into(), false, Some(463))]);
        assert_eq!(w.messages(&dev).map(|m| m.len()), Ok(2));
        // After the lock, new chats work again.
        w.frame(c, send("d", "3EB04", "4917000000002@c.us", 0), T0 + 60_000, &mut rng);
        assert_eq!(w.messages(&dev).map(|m| m.len()), Ok(3));
    }

    #[test]
    fn the_log_keeps_every_send_but_retransmissions_are_idempotent() {
        let mut w = World::new(timings());
        let mut rng = rand::thread_rng();
        let (dev, _, c) = linked(&mut w, T0);
        let to = "4917000000001@c.us";
        w.frame(c, send("a", "3EB0X", to, 0), T0, &mut rng);
        w.frame(c, send("a", "3EB0X", to, 1), T0, &mut rng);
        w.frame(c, send("b", "3EB0X", to, 0), T0, &mut rng);
        assert_eq!(w.messages(&dev).map(|m| m.len()), Ok(2));
        // Slow sends: a retransmission while the first is still held is
        // the same send.
        assert_eq!(w.slow(&dev, 1_000), Ok(()));
        w.frame(c, send("c", "3EB0Y", to, 0), T0, &mut rng);
        w.frame(c, send("c", "3EB0Y", to, 1), T0 + 500, &mut rng);
        w.tick(T0 + 1_000);
        assert_eq!(w.messages(&dev).map(|m| m.len()), Ok(3));
    }

    #[test]
    fn acks_only_move_forward() {
        let mut w = World::new(timings());
        let mut rng = rand::thread_rng();
        let (dev, _, c) = linked(&mut w, T0);
        w.frame(c, send("a", "3EB0Z", "4917000000001@c.us", 0), T0, &mut rng);
        assert_eq!(w.ack(&dev, "3EB0Z", 3), Ok(()));
        w.tick(T0 + 200);
        let acks = w.messages(&dev).map(|m| m.iter().map(|m| m.ack).collect::<Vec<_>>());
        assert_eq!(acks, Ok(vec![3]));
        assert!(matches!(w.ack(&dev, "nope", 3), Err(PhoneError::NotFound(_))));
        assert!(matches!(w.ack("nodev", "3EB0Z", 3), Err(PhoneError::NotFound(_))));
    }

    #[test]
    fn unregistered_numbers_do_not_exist_and_get_no_device_ack() {
        let mut w = World::new(timings());
        let mut rng = rand::thread_rng();
        let (dev, _, c) = linked(&mut w, T0);
        assert_eq!(w.unregister(&["+4917000000009".into()]), Ok(1));
        assert!(w.unregister(&["12".into()]).is_err());
        w.frame(c, ClientFrame::Exists { req: 7, jid: "4917000000009@c.us".into() }, T0, &mut rng);
        w.frame(c, ClientFrame::Exists { req: 8, jid: "4917000000001@c.us".into() }, T0, &mut rng);
        assert_eq!(
            frames_to(&w.take_effects(), c),
            vec![ServerFrame::Exists { req: 7, exists: false }, ServerFrame::Exists { req: 8, exists: true }]
        );
        w.frame(c, send("a", "3EB0Q", "4917000000009@c.us", 0), T0, &mut rng);
        w.tick(T0 + 10_000);
        assert_eq!(w.messages(&dev).map(|m| m.iter().map(|m| m.ack).collect::<Vec<_>>()), Ok(vec![1]));
    }

    #[test]
    fn incoming_messages_are_held_until_the_page_confirms_them() {
        let mut w = World::new(timings());
        let mut rng = rand::thread_rng();
        let (dev, secret, c) = linked(&mut w, T0);
        // Not synced yet: held, not sent.
        let first = w.incoming(&dev, "+4917000000001", "hi", "Ann", None, T0, &mut rng);
        let first = first.map(|m| m.id).unwrap_or_default();
        assert!(frames_to(&w.take_effects(), c).is_empty());
        w.tick(T0 + 500);
        let after_sync = frames_to(&w.take_effects(), c);
        assert!(matches!(after_sync.as_slice(), [ServerFrame::History { .. }, ServerFrame::Msg { id, from, .. }]
            if *id == first && from == "4917000000001@c.us"));
        // Synced: the next one goes out at once.
        assert!(w.incoming(&dev, "4917000000002", "again", "", None, T0 + 600, &mut rng).is_ok());
        assert!(matches!(frames_to(&w.take_effects(), c).as_slice(), [ServerFrame::Msg { body, .. }] if body == "again"));
        w.frame(c, ClientFrame::Received { id: first.clone(), from: "4917000000001@c.us".into() }, T0 + 700, &mut rng);
        let delivered: Vec<bool> = w.inbox(&dev).unwrap_or_default().iter().map(|m| m.delivered).collect();
        assert_eq!(delivered, vec![true, false]);
        // A new connection gets only what its pages never confirmed.
        w.closed(c, T0 + 800);
        let c2 = w.open();
        w.frame(c2, hello(Some((&dev, &secret)), keys(1), false), T0 + 800, &mut rng);
        w.tick(T0 + 1_300);
        let msgs: Vec<ServerFrame> =
            frames_to(&w.take_effects(), c2).into_iter().filter(|f| matches!(f, ServerFrame::Msg { .. })).collect();
        assert!(matches!(msgs.as_slice(), [ServerFrame::Msg { body, .. }] if body == "again"));
        assert!(matches!(w.incoming(&dev, "12", "x", "", None, T0, &mut rng), Err(PhoneError::BadRequest(_))));
        assert!(matches!(w.incoming(&dev, "4915112345678", "x", "", None, T0, &mut rng), Err(PhoneError::BadRequest(_))));
        assert_eq!(w.phone_logout(&dev, T0), Ok(()));
        assert!(matches!(w.incoming(&dev, "4917000000001", "x", "", None, T0, &mut rng), Err(PhoneError::Conflict(_))));
    }

    /// The page's side of a media send: a media_conn, an encrypted upload,
    /// then the frame that names it.
    fn upload_and_frame(w: &mut World, conn: ConnId, plain: &[u8], key: [u8; 32], now: u64) -> Result<MediaFrame, PhoneError> {
        w.frame(conn, ClientFrame::MediaConn { req: 1 }, now, &mut rand::thread_rng());
        let auth = frames_to(&w.take_effects(), conn)
            .into_iter()
            .find_map(|f| match f {
                ServerFrame::MediaConn { auth, .. } => Some(auth),
                _ => None,
            })
            .unwrap_or_default();
        let upload = media::seal(MediaType::Document, &key, plain);
        let digest = media::sha256(&upload);
        let path = w.upload(&auth, "document", &B64URL.encode(digest), Bytes::from(upload), digest, now, &mut rand::thread_rng())?;
        Ok(MediaFrame {
            kind: "document".into(),
            mimetype: "application/pdf".into(),
            filename: Some("offer.pdf".into()),
            size: plain.len() as u64,
            filehash: B64.encode(media::sha256(plain)),
            enc_filehash: B64.encode(digest),
            media_key: B64.encode(key),
            media_key_timestamp: 1,
            direct_path: path,
        })
    }

    #[test]
    fn media_sends_are_logged_with_what_the_recipient_decrypts() {
        let mut w = World::new(timings());
        let mut rng = rand::thread_rng();
        let (dev, _, c) = linked(&mut w, T0);
        let plain = b"%PDF-1.4 the offer".to_vec();
        let frame = upload_and_frame(&mut w, c, &plain, [3; 32], T0).unwrap_or_else(|e| panic!("{e}"));
        let media_send = |n: &str, id: &str, m: MediaFrame| {
            ClientFrame::Send(SendFrame {
                n: n.into(),
                id: id.into(),
                to: "4917000000001@c.us".into(),
                body: "the offer".into(),
                media: Some(m),
                t: 1,
                attempt: 0,
            })
        };
        w.frame(c, media_send("a", "3EB0M1", frame.clone()), T0, &mut rng);
        // The same message with another key, a missing file, a lying hash:
        // logged, and the recipient cannot get the file.
        w.frame(c, media_send("b", "3EB0M2", MediaFrame { media_key: B64.encode([4u8; 32]), ..frame.clone() }), T0, &mut rng);
        w.frame(c, media_send("c", "3EB0M3", MediaFrame { direct_path: "/v/t62.7118-24/none.enc".into(), ..frame.clone() }), T0, &mut rng);
        w.frame(c, media_send("d", "3EB0M4", MediaFrame { filehash: B64.encode([0u8; 32]), ..frame.clone() }), T0, &mut rng);
        // Malformed: refused with 400 and not logged.
        w.frame(c, media_send("e", "3EB0M5", MediaFrame { media_key: "short".into(), ..frame.clone() }), T0, &mut rng);
        let refused = frames_to(&w.take_effects(), c)
            .into_iter()
            .any(|f| matches!(f, ServerFrame::Sent { n, ok: false, error: Some(400), .. } if n == "e"));
        assert!(refused);
        let log = w.messages(&dev).unwrap_or_default();
        assert_eq!(log.len(), 4);
        let first = log[0].media.clone().unwrap_or_else(|| panic!("no media in {:?}", log[0]));
        assert_eq!((log[0].kind.as_str(), log[0].body.as_str()), ("document", "the offer"));
        assert_eq!(first.sha256, Some(hex::encode(media::sha256(&plain))));
        assert_eq!((first.filename.as_deref(), first.size), (Some("offer.pdf"), plain.len() as u64));
        for m in &log[1..] {
            let got = m.media.clone().unwrap_or_else(|| panic!("no media in {m:?}"));
            assert!(got.sha256.is_none() && got.media_error.is_some(), "{got:?}");
        }
        let json = serde_json::to_value(&log[0]).unwrap_or_default();
        assert_eq!(json["type"], "document");
        assert_eq!(json["mimetype"], "application/pdf");
        assert!(json.get("media_error").is_none() && json.get("attachment").is_none(), "{json}");
        // History sync gives the page the attachment back.
        assert!(w.history(&dev).first().is_some_and(|h| h.media.as_ref() == Some(&frame)));
    }

    #[test]
    fn uploads_need_a_valid_auth_and_their_own_hash() {
        let mut w = World::new(timings());
        let mut rng = rand::thread_rng();
        let (dev, _, c) = linked(&mut w, T0);
        let body = Bytes::from_static(b"0123456789abcdef0123456789");
        let digest = media::sha256(&body);
        let token = B64URL.encode(digest);
        let try_upload = |w: &mut World, auth: &str, kind: &str, token: &str, now: u64| {
            w.upload(auth, kind, token, body.clone(), digest, now, &mut rand::thread_rng())
        };
        assert!(matches!(try_upload(&mut w, "nope", "image", &token, T0), Err(PhoneError::Unauthorized(_))));
        let auth = w.media_auth(&dev, T0, &mut rng);
        assert_eq!(w.media_auth(&dev, T0 + 1000, &mut rng), auth, "a valid auth is handed out again");
        assert!(matches!(try_upload(&mut w, &auth, "gif", &token, T0), Err(PhoneError::BadRequest(_))));
        assert!(matches!(try_upload(&mut w, &auth, "image", "AAAA", T0), Err(PhoneError::BadRequest(_))));
        let path = try_upload(&mut w, &auth, "image", &token, T0);
        assert!(path.as_ref().is_ok_and(|p| p.starts_with("/v/")), "{path:?}");
        assert_eq!(path.ok().and_then(|p| w.download(&p)), Some(body.clone()));
        assert!(matches!(try_upload(&mut w, &auth, "image", &token, T0 + MEDIA_AUTH_TTL_S * 1000), Err(PhoneError::Unauthorized(_))));
        let auth = w.media_auth(&dev, T0, &mut rng);
        assert_eq!(w.phone_logout(&dev, T0), Ok(()));
        assert!(matches!(try_upload(&mut w, &auth, "image", &token, T0), Err(PhoneError::Unauthorized(_))));
        let _ = c;
    }

    #[test]
    fn incoming_media_is_encrypted_for_the_page_and_logged_with_its_hash() {
        let mut w = World::new(timings());
        let mut rng = rand::thread_rng();
        let (dev, _, c) = linked(&mut w, T0);
        w.tick(T0 + 500);
        w.take_effects();
        let png = Bytes::from_static(b"\x89PNG\r\n\x1a\n not really a picture");
        let media = IncomingMedia { mimetype: "image/png".into(), filename: Some("cat.png".into()), data: png.clone() };
        let msg = w.incoming(&dev, "4917000000001", "", "Ann", Some(media), T0 + 600, &mut rng).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(msg.kind, "image");
        assert_eq!(msg.media.as_ref().and_then(|m| m.sha256.clone()), Some(hex::encode(media::sha256(&png))));
        let frame = frames_to(&w.take_effects(), c).into_iter().find_map(|f| match f {
            ServerFrame::Msg { media, .. } => media.map(|m| *m),
            _ => None,
        });
        let frame = frame.unwrap_or_else(|| panic!("no media frame"));
        let upload = w.download(&frame.direct_path).unwrap_or_default();
        let key = decode_32(&frame.media_key).unwrap_or_default();
        assert_eq!(media::open(MediaType::Image, &key, &upload).ok(), Some(png.to_vec()));
        assert_eq!(frame.filehash, B64.encode(media::sha256(&png)));
        assert_eq!(frame.enc_filehash, B64.encode(media::sha256(&upload)));
        // Bad media input.
        let with = |mimetype: &str, filename: Option<&str>, data: &'static [u8]| {
            Some(IncomingMedia { mimetype: mimetype.into(), filename: filename.map(str::to_owned), data: Bytes::from_static(data) })
        };
        for bad_media in [with("image", None, b"x"), with("image/png", Some("a/b"), b"x"), with("image/png", None, b"")] {
            assert!(matches!(w.incoming(&dev, "4917000000001", "", "", bad_media, T0, &mut rng), Err(PhoneError::BadRequest(_))));
        }
        // A text needs a body; a media message does not.
        assert!(matches!(w.incoming(&dev, "4917000000001", "", "", None, T0, &mut rng), Err(PhoneError::BadRequest(_))));
    }

    #[test]
    fn logout_from_the_phone_tells_the_page() {
        let mut w = World::new(timings());
        let (dev, _, c) = linked(&mut w, T0);
        assert_eq!(w.phone_logout(&dev, T0), Ok(()));
        assert_eq!(w.take_effects(), vec![Effect::Send(c, ServerFrame::Logout), Effect::Close(c)]);
        let states: Vec<DeviceState> = w.devices(T0).iter().map(|d| d.state).collect();
        assert_eq!(states, vec![DeviceState::LoggedOut]);
    }
}
