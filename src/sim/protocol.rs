//! The frames the simulated page and the simulated servers exchange over the
//! page's WebSocket (`/ws`): JSON text frames tagged by `type`.
//!
//! The page learns everything over this one live connection, so a closed
//! socket is a real loss of contact. A session goes: page `hello` (with its
//! credential if it has one, and its public keys); then either QR refs
//! (`qr` … `qr_idle`) until a phone scans (`paired`, after which the page
//! reloads), or `connected` then `history` after the sync delay. Errors that
//! end the stream are a `stream_error` followed by a close; a network drop is
//! a close with no frame at all.

use serde::{Deserialize, Serialize};

use super::qr::PageKeys;

/// A frame from the page.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// First frame on every socket.
    Hello(Hello),
    /// `Cmd.refreshQR()` in `UNPAIRED_IDLE`: ask for a new batch of refs.
    RefreshQr,
    /// `Socket.logout()`: log this device out from the page.
    Logout,
    /// Send a text message.
    Send(SendFrame),
    /// Where and with what to upload media: answered by
    /// [`ServerFrame::MediaConn`] (WhatsApp's `media_conn` query).
    MediaConn {
        /// Request number chosen by the page, echoed back.
        req: u64,
    },
    /// Is this chat id on WhatsApp? Answered by [`ServerFrame::Exists`].
    Exists {
        /// Request number chosen by the page, echoed back.
        req: u64,
        /// Serialized chat id.
        jid: String,
    },
    /// The page stored an incoming message ([`ServerFrame::Msg`]): the
    /// servers stop holding it for this device.
    Received {
        /// Key id of the message.
        id: String,
        /// Serialized chat id of the sender.
        from: String,
    },
    /// `WAWebChatStateBridge`: the account shows "typing…" (`composing`)
    /// or stops (`paused`) in a chat.
    ChatState {
        /// Serialized chat id.
        jid: String,
        /// `composing` or `paused`.
        state: String,
    },
}

/// The page's hello.
#[derive(Debug, Clone, Deserialize)]
pub struct Hello {
    /// The stored credential, if the page's profile has one.
    #[serde(default)]
    pub cred: Option<Credential>,
    /// The profile's public keys (the fields of the QR string after the ref).
    pub keys: PageKeys,
    /// `Socket.takeover()`: take the account back after a `CONFLICT`.
    #[serde(default)]
    pub takeover: bool,
}

/// A linked device's credential, as stored in the page's IndexedDB.
#[derive(Debug, Clone, Deserialize)]
pub struct Credential {
    /// Device id.
    pub device: String,
    /// Secret handed out at pairing (base64 of 32 bytes).
    pub secret: String,
}

/// A message the page sends: a text, or a media message whose `body` is
/// its caption.
#[derive(Debug, Clone, Deserialize)]
pub struct SendFrame {
    /// The page's handle for this outbox entry, echoed in [`ServerFrame::Sent`].
    pub n: String,
    /// Message key id (`3EB0…`).
    pub id: String,
    /// Serialized chat id of the recipient.
    pub to: String,
    /// Text, or a media message's caption.
    pub body: String,
    /// The attachment of a media message; `None` for a text.
    #[serde(default)]
    pub media: Option<MediaFrame>,
    /// The message's own timestamp, Unix seconds.
    #[serde(default)]
    pub t: i64,
    /// 0 for the first transmission; more for retransmissions of the same
    /// outbox entry after the socket came back (idempotent on the server).
    #[serde(default)]
    pub attempt: u32,
}

/// A media message's attachment: where the media host keeps the encrypted
/// file and what opens it (see [`super::media`]). The page sends it with a
/// send; the servers send it with an incoming message and in history sync.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MediaFrame {
    /// `image`, `video`, `audio`, `ptt`, `document` or `sticker`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The file's MIME type.
    pub mimetype: String,
    /// The file's name (documents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// Bytes of the file (not of the upload).
    pub size: u64,
    /// Base64 SHA-256 of the file.
    pub filehash: String,
    /// Base64 SHA-256 of the upload (the encrypted file and its MAC).
    pub enc_filehash: String,
    /// Base64 of the 32-byte media key.
    pub media_key: String,
    /// When the media key was made, Unix seconds.
    #[serde(default)]
    pub media_key_timestamp: i64,
    /// The upload's path on the media host (`/v/t62.7118-24/…`).
    pub direct_path: String,
}

/// Why the server ends a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamErrorKind {
    /// The credential belongs to a logged-out or unknown device (code 401).
    LoggedOut,
    /// The phone removed this device (`<conflict type="device_removed"/>`, 401).
    DeviceRemoved,
    /// The account was opened elsewhere (`<conflict type="replaced"/>`, 409).
    Replaced,
    /// Terms-of-service block (403).
    TosBlock,
    /// The hello was malformed (400).
    BadHello,
}

impl StreamErrorKind {
    /// The numeric code sent with the error.
    pub fn code(self) -> u16 {
        match self {
            Self::LoggedOut | Self::DeviceRemoved => 401,
            Self::Replaced => 409,
            Self::TosBlock => 403,
            Self::BadHello => 400,
        }
    }
}

/// A message as history sync delivers it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HistoryMsg {
    /// Key id.
    pub id: String,
    /// Serialized chat id.
    pub to: String,
    /// Text, or a media message's caption.
    pub body: String,
    /// The attachment of a media message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaFrame>,
    /// The message's timestamp, Unix seconds.
    pub t: i64,
    /// Current ack (1 SERVER, 2 DEVICE, 3 READ, 4 PLAYED).
    pub ack: i8,
}

/// A frame from the server.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// Show this ref (state `UNPAIRED`).
    Qr {
        /// The ref.
        #[serde(rename = "ref")]
        qr_ref: String,
    },
    /// The batch is used up (state `UNPAIRED_IDLE`).
    QrIdle,
    /// A phone scanned this page's ref: store the credential and reload.
    Paired {
        /// Device id.
        device: String,
        /// Credential secret.
        secret: String,
        /// The account's phone digits.
        phone: String,
        /// The account's push name.
        pushname: String,
    },
    /// The credential was accepted (state `CONNECTED`).
    Connected {
        /// Own wid, `<digits>@c.us`.
        me: String,
        /// Push name.
        pushname: String,
        /// The phone's platform (`android`, `iphone`, …).
        platform: String,
    },
    /// History sync: the device's messages so far (then `hasSynced`).
    History {
        /// Oldest first, one per key.
        msgs: Vec<HistoryMsg>,
    },
    /// The outcome of a send frame.
    Sent {
        /// The page's handle from the send frame.
        n: String,
        /// Key id.
        id: String,
        /// Chat id.
        to: String,
        /// Accepted (ack 1 SERVER)?
        ok: bool,
        /// Error code when refused (463 reach-out timelock, 400 malformed).
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<u16>,
    },
    /// A message's ack advanced (2 DEVICE, 3 READ, 4 PLAYED).
    Ack {
        /// Key id.
        id: String,
        /// Chat id.
        to: String,
        /// New ack.
        ack: i8,
    },
    /// Answer to [`ClientFrame::Exists`].
    Exists {
        /// The request number.
        req: u64,
        /// On WhatsApp?
        exists: bool,
    },
    /// Answer to [`ClientFrame::MediaConn`]: uploads go to this origin's
    /// `/mms/<type>/<token>?auth=<auth>&token=<token>` while `auth` is
    /// valid.
    MediaConn {
        /// The request number.
        req: u64,
        /// Upload credential.
        auth: String,
        /// How long `auth` is valid, seconds.
        ttl: u64,
    },
    /// A contact wrote to the account. Sent until the page answers
    /// [`ClientFrame::Received`]; the page drops a key it already has.
    Msg {
        /// Key id.
        id: String,
        /// Serialized chat id of the sender, `<digits>@c.us`.
        from: String,
        /// Text, or a media message's caption.
        body: String,
        /// The attachment of a media message (boxed: most messages are
        /// texts).
        #[serde(skip_serializing_if = "Option::is_none")]
        media: Option<Box<MediaFrame>>,
        /// The message's timestamp, Unix seconds.
        t: i64,
        /// The sender's push name (may be empty).
        pushname: String,
    },
    /// The phone logged this device out (the page emits `Cmd` `logout`).
    Logout,
    /// The page reloads itself, as WhatsApp Web does when a new version was
    /// deployed (its service worker updated) or the tab resumes.
    Reload,
    /// Confirms a page-initiated logout.
    LoggedOut,
    /// The stream ends; the server closes right after.
    StreamError {
        /// Numeric code (see [`StreamErrorKind::code`]).
        code: u16,
        /// Why.
        kind: StreamErrorKind,
    },
}

impl ServerFrame {
    /// A stream error of this kind.
    pub fn stream_error(kind: StreamErrorKind) -> Self {
        Self::StreamError { code: kind.code(), kind }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_tagged_json() {
        let f = ServerFrame::Qr { qr_ref: "2@x".into() };
        assert_eq!(serde_json::to_string(&f).ok().as_deref(), Some(r#"{"type":"qr","ref":"2@x"}"#));
        let f = ServerFrame::stream_error(StreamErrorKind::DeviceRemoved);
        assert_eq!(serde_json::to_string(&f).ok().as_deref(), Some(r#"{"type":"stream_error","code":401,"kind":"device_removed"}"#));
        let c: Result<ClientFrame, _> = serde_json::from_str(r#"{"type":"refresh_qr"}"#);
        assert!(matches!(c, Ok(ClientFrame::RefreshQr)));
        let c: Result<ClientFrame, _> = serde_json::from_str(r#"{"type":"send","n":"a","id":"3EB0","to":"12345@c.us","body":"hi"}"#);
        assert!(matches!(c, Ok(ClientFrame::Send(SendFrame { attempt: 0, .. }))));
    }
}
