//! Media attachments: the file a send carries, the kind WhatsApp sends it
//! as, and the size limits per kind.
//!
//! Limits come from WhatsApp's published ones: the WhatsApp Business
//! Platform's "Supported media types" (Cloud API reference, Media; the same
//! table is in AWS End User Messaging Social's "Supported media file types
//! and sizes in WhatsApp"): images (JPEG, PNG) 5 MB, video (MP4, 3GPP)
//! 16 MB, audio (AAC, AMR, MPEG, MP4, OGG) 16 MB, documents 100 MB. "MB"
//! is read as 10^6 bytes, the stricter reading.

use std::sync::{Arc, OnceLock};

use actix_web::web::Bytes;
use sha2::{Digest, Sha256};

/// WhatsApp's published image limit, bytes (5 MB).
pub const WHATSAPP_IMAGE_MAX: u64 = 5_000_000;
/// WhatsApp's published video limit, bytes (16 MB).
pub const WHATSAPP_VIDEO_MAX: u64 = 16_000_000;
/// WhatsApp's published audio limit, bytes (16 MB).
pub const WHATSAPP_AUDIO_MAX: u64 = 16_000_000;
/// WhatsApp's published document limit, bytes (100 MB).
pub const WHATSAPP_DOCUMENT_MAX: u64 = 100_000_000;
/// The largest file the daemon hands to a page, bytes (100 MiB): the file
/// is copied into the page over WebDriver in pieces and held there whole
/// (with its encrypted copy) while WhatsApp Web prepares and uploads it.
/// No `[media]` limit may be above it.
pub const PAGE_MAX_BYTES: u64 = 100 * 1024 * 1024;
/// Longest caption, characters (the WhatsApp Business Platform's caption
/// limit for media messages).
pub const MAX_CAPTION_CHARS: usize = 1024;

/// What WhatsApp sends a file as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    /// `image/jpeg`, `image/png`: a photo (with a thumbnail).
    Image,
    /// `video/mp4`, `video/3gpp`.
    Video,
    /// `audio/aac`, `audio/amr`, `audio/mpeg`, `audio/mp4`, `audio/ogg`.
    Audio,
    /// Anything else: a file with its name.
    Document,
}

impl MediaKind {
    /// The kind of a file of this MIME type (parameters ignored, case
    /// insensitive), by WhatsApp's list of supported types.
    pub fn of(mimetype: &str) -> Self {
        match essence(mimetype).as_str() {
            "image/jpeg" | "image/png" => Self::Image,
            "video/mp4" | "video/3gpp" => Self::Video,
            "audio/aac" | "audio/amr" | "audio/mpeg" | "audio/mp4" | "audio/ogg" => Self::Audio,
            _ => Self::Document,
        }
    }

    /// `image`, `video`, `audio` or `document` (WhatsApp Web's message
    /// types).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Video => "video",
            Self::Audio => "audio",
            Self::Document => "document",
        }
    }

    /// The `[media]` key of the kind's limit.
    pub fn limit_key(self) -> &'static str {
        match self {
            Self::Image => "media.image_max",
            Self::Video => "media.video_max",
            Self::Audio => "media.audio_max",
            Self::Document => "media.document_max",
        }
    }
}

/// The MIME type without parameters, lower case.
fn essence(mimetype: &str) -> String {
    mimetype.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// A file to send: its MIME type, name and bytes. Cheap to clone (the
/// bytes and their digest are shared by every clone).
#[derive(Debug, Clone)]
pub struct Media {
    /// `type/subtype`, as the client gave it.
    pub mimetype: String,
    /// The file's name (shown with documents); `file` when the client gave
    /// none.
    pub filename: String,
    /// The file.
    pub data: Bytes,
    /// Hex SHA-256 of `data`, computed once: a campaign sends one file to
    /// every recipient, and hashing 100 MB takes a good part of a second.
    digest: Arc<OnceLock<String>>,
}

impl Media {
    /// A file whose digest is computed when first asked for.
    pub fn new(mimetype: String, filename: String, data: Bytes) -> Self {
        Self { mimetype, filename, data, digest: Arc::default() }
    }

    /// A file whose hex SHA-256 the caller has just checked (a campaign's
    /// attachment read back from disk), so it is never computed again.
    pub fn with_sha256(mimetype: String, filename: String, data: Bytes, sha256_hex: String) -> Self {
        Self { mimetype, filename, data, digest: Arc::new(OnceLock::from(sha256_hex)) }
    }

    /// What WhatsApp sends it as.
    pub fn kind(&self) -> MediaKind {
        MediaKind::of(&self.mimetype)
    }

    /// Hex SHA-256 of the file (the page checks the copy it got against
    /// it); computed on the first call, shared by clones.
    pub fn sha256_hex(&self) -> String {
        self.digest.get_or_init(|| sha256_hex(&self.data)).clone()
    }

    /// Whether the bytes are what the MIME type says, for the types whose
    /// content WhatsApp Web decodes before sending (JPEG and PNG photos):
    /// `Err` names the mismatch.
    pub fn check_content(&self) -> Result<(), String> {
        let signature: &[u8] = match essence(&self.mimetype).as_str() {
            "image/png" => b"\x89PNG\r\n\x1a\n",
            "image/jpeg" => b"\xff\xd8\xff",
            _ => return Ok(()),
        };
        if self.data.starts_with(signature) {
            Ok(())
        } else {
            Err(format!("the file is {} by its Content-Type but its bytes are not", self.mimetype))
        }
    }
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `type/subtype` with token characters (RFC 6838), parameters allowed, at
/// most 255 characters.
pub fn valid_mimetype(mimetype: &str) -> bool {
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b));
    let head = mimetype.split(';').next().unwrap_or("").trim();
    mimetype.len() <= 255 && !mimetype.chars().any(char::is_control) && head.split_once('/').is_some_and(|(t, s)| token(t) && token(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_whatsapps_supported_types() {
        assert_eq!(MediaKind::of("image/png"), MediaKind::Image);
        assert_eq!(MediaKind::of("IMAGE/JPEG; q=1"), MediaKind::Image);
        assert_eq!(MediaKind::of("image/gif"), MediaKind::Document);
        assert_eq!(MediaKind::of("video/mp4"), MediaKind::Video);
        assert_eq!(MediaKind::of("audio/ogg; codecs=opus"), MediaKind::Audio);
        assert_eq!(MediaKind::of("audio/wav"), MediaKind::Document);
        assert_eq!(MediaKind::of("application/pdf"), MediaKind::Document);
        assert_eq!(MediaKind::Document.limit_key(), "media.document_max");
    }

    #[test]
    fn photos_must_be_what_they_say() {
        let media = |mimetype: &str, data: &'static [u8]| Media::new(mimetype.into(), "f".into(), Bytes::from_static(data));
        assert!(media("image/png", b"\x89PNG\r\n\x1a\nrest").check_content().is_ok());
        assert!(media("image/png", b"\xff\xd8\xff\xe0").check_content().is_err());
        assert!(media("image/jpeg", b"\xff\xd8\xff\xe0").check_content().is_ok());
        assert!(media("application/pdf", b"anything").check_content().is_ok());
        assert_eq!(media("text/plain", b"abc").sha256_hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn mimetypes_are_type_slash_subtype() {
        assert!(valid_mimetype("application/pdf"));
        assert!(valid_mimetype("audio/ogg; codecs=opus"));
        assert!(!valid_mimetype("pdf"));
        assert!(!valid_mimetype("a/"));
        assert!(!valid_mimetype("a/b\nc"));
    }
}
