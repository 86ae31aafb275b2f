//! Media as WhatsApp's servers and the recipient's phone see it: files are
//! encrypted on the sending device with a fresh 32-byte media key, uploaded
//! to a media host, and the message carries only the key, the hashes and
//! the file's path on the host. The recipient downloads the file, checks
//! the hashes and the MAC, and decrypts it.
//!
//! The scheme: WhatsApp's security whitepaper ("Transmitting Media and
//! Other Attachments") gives AES-256-CBC with an HMAC-SHA256 over the
//! ciphertext; the key layout is as the reverse-engineering notes of
//! github.com/sigalor/whatsapp-web-reveng ("Decryption") describe it.
//! HKDF-SHA256 of the media key with a zero salt and an info string per
//! media type expands to 112 bytes: IV (16), cipher key (32), MAC key (32),
//! and 32 bytes not used here. The upload is AES-256-CBC (PKCS#7) of the
//! file followed by the first 10 bytes of HMAC-SHA256(MAC key, IV ‖
//! ciphertext). The message carries base64 SHA-256 of the file
//! (`filehash`) and of the upload (`encFilehash`).
//!
//! Pure: no clock, no I/O. [`MediaStore`] holds uploads in memory, bounded
//! in bytes (the oldest go first).

use std::collections::{HashMap, VecDeque};

use actix_web::web::Bytes;
use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Largest file the media host takes, bytes (128 MiB). WhatsApp takes
/// documents up to 2 GB; the simulator keeps uploads in memory, so it is
/// stricter.
pub const MAX_FILE_BYTES: usize = 128 * 1024 * 1024;
/// Largest upload: a file of [`MAX_FILE_BYTES`] with its padding (at most
/// 16 bytes) and MAC (10).
pub const MAX_UPLOAD_BYTES: usize = MAX_FILE_BYTES + 16 + MAC_LEN;
/// Bytes of uploads the host keeps; older ones are dropped (their
/// messages can no longer be downloaded).
pub const STORE_BYTES: usize = 512 * 1024 * 1024;
/// Bytes of the truncated HMAC after the ciphertext.
const MAC_LEN: usize = 10;

/// A media message's type, as the page's `Msg` models and the media host's
/// paths (`/mms/<type>/…`) name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    Image,
    Video,
    Audio,
    /// A voice note (push to talk).
    Ptt,
    Document,
    Sticker,
}

impl MediaType {
    const ALL: [MediaType; 6] = [Self::Image, Self::Video, Self::Audio, Self::Ptt, Self::Document, Self::Sticker];

    /// `image`, `video`, `audio`, `ptt`, `document` or `sticker`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Video => "video",
            Self::Audio => "audio",
            Self::Ptt => "ptt",
            Self::Document => "document",
            Self::Sticker => "sticker",
        }
    }

    /// The type named `s`, if it is one.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// What a phone sends a file of this MIME type as: JPEG and PNG as
    /// images, MP4 and 3GPP as videos, audio as audio, anything else as a
    /// document.
    pub fn for_mimetype(mimetype: &str) -> Self {
        let essence = mimetype.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match essence.as_str() {
            "image/jpeg" | "image/png" => Self::Image,
            "video/mp4" | "video/3gpp" => Self::Video,
            e if e.starts_with("audio/") => Self::Audio,
            _ => Self::Document,
        }
    }

    /// The HKDF info string of the type's keys.
    fn info(self) -> &'static [u8] {
        match self {
            Self::Image | Self::Sticker => b"WhatsApp Image Keys",
            Self::Video => b"WhatsApp Video Keys",
            Self::Audio | Self::Ptt => b"WhatsApp Audio Keys",
            Self::Document => b"WhatsApp Document Keys",
        }
    }
}

/// Why a download could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("the file is shorter than its MAC")]
    Short,
    #[error("the MAC does not match (wrong media key or a changed file)")]
    Mac,
    #[error("the file does not decrypt (bad padding)")]
    Padding,
}

struct Keys {
    iv: [u8; 16],
    cipher: [u8; 32],
    mac: [u8; 32],
}

fn expand(kind: MediaType, media_key: &[u8; 32]) -> Keys {
    let mut okm = [0u8; 112];
    // 112 bytes is far below HKDF-SHA256's 8,160-byte maximum: cannot fail.
    let _ = hkdf::Hkdf::<Sha256>::new(None, media_key).expand(kind.info(), &mut okm);
    let mut keys = Keys { iv: [0; 16], cipher: [0; 32], mac: [0; 32] };
    keys.iv.copy_from_slice(&okm[..16]);
    keys.cipher.copy_from_slice(&okm[16..48]);
    keys.mac.copy_from_slice(&okm[48..80]);
    keys
}

fn mac_of(keys: &Keys, ciphertext: &[u8]) -> [u8; 32] {
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(&keys.mac) else {
        // Cannot happen (HMAC takes keys of any length); a zero MAC would
        // only make the file fail its check.
        return [0; 32];
    };
    mac.update(&keys.iv);
    mac.update(ciphertext);
    mac.finalize().into_bytes().into()
}

/// The upload for `plain`: AES-256-CBC ciphertext, then a 10-byte MAC.
pub fn seal(kind: MediaType, media_key: &[u8; 32], plain: &[u8]) -> Vec<u8> {
    let keys = expand(kind, media_key);
    let mut out = cbc::Encryptor::<aes::Aes256>::new(&keys.cipher.into(), &keys.iv.into()).encrypt_padded_vec_mut::<Pkcs7>(plain);
    let mac = mac_of(&keys, &out);
    out.extend_from_slice(&mac[..MAC_LEN]);
    out
}

/// The file inside an upload, as the recipient opens it: MAC checked first.
pub fn open(kind: MediaType, media_key: &[u8; 32], upload: &[u8]) -> Result<Vec<u8>, OpenError> {
    let split = upload.len().checked_sub(MAC_LEN).ok_or(OpenError::Short)?;
    let (ciphertext, mac) = upload.split_at(split);
    let keys = expand(kind, media_key);
    let expected = mac_of(&keys, ciphertext);
    if !bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..MAC_LEN], mac)) {
        return Err(OpenError::Mac);
    }
    cbc::Decryptor::<aes::Aes256>::new(&keys.cipher.into(), &keys.iv.into())
        .decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
        .map_err(|_| OpenError::Padding)
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The uploads the media host holds, by path, bounded to [`STORE_BYTES`].
#[derive(Debug, Default)]
pub struct MediaStore {
    blobs: HashMap<String, Bytes>,
    order: VecDeque<String>,
    bytes: usize,
}

impl MediaStore {
    /// Keeps `upload` under `path`, dropping the oldest uploads while the
    /// store is over its bound.
    pub fn put(&mut self, path: String, upload: Bytes) {
        self.bytes += upload.len();
        if let Some(old) = self.blobs.insert(path.clone(), upload) {
            self.bytes -= old.len();
        } else {
            self.order.push_back(path);
        }
        while self.bytes > STORE_BYTES {
            let Some(oldest) = self.order.pop_front() else { break };
            if let Some(gone) = self.blobs.remove(&oldest) {
                self.bytes -= gone.len();
            }
        }
    }

    /// The upload at `path`, if the host still has it.
    pub fn get(&self, path: &str) -> Option<Bytes> {
        self.blobs.get(path).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_files_open_with_their_key_only() {
        let key = [7u8; 32];
        let plain = b"%PDF-1.4 a small document".to_vec();
        let upload = seal(MediaType::Document, &key, &plain);
        assert_eq!(upload.len(), 32 + MAC_LEN, "padded to whole blocks, then the MAC");
        assert_eq!(open(MediaType::Document, &key, &upload), Ok(plain.clone()));
        // Another key, another type's keys, a flipped bit: refused.
        assert_eq!(open(MediaType::Document, &[8u8; 32], &upload), Err(OpenError::Mac));
        assert_eq!(open(MediaType::Image, &key, &upload), Err(OpenError::Mac));
        let mut changed = upload.clone();
        changed[3] ^= 1;
        assert_eq!(open(MediaType::Document, &key, &changed), Err(OpenError::Mac));
        assert_eq!(open(MediaType::Document, &key, &upload[..5]), Err(OpenError::Short));
        assert_eq!(open(MediaType::Document, &key, &seal(MediaType::Document, &key, b"")), Ok(Vec::new()));
    }

    #[test]
    fn types_by_mimetype_and_name() {
        assert_eq!(MediaType::for_mimetype("image/PNG"), MediaType::Image);
        assert_eq!(MediaType::for_mimetype("audio/ogg; codecs=opus"), MediaType::Audio);
        assert_eq!(MediaType::for_mimetype("image/gif"), MediaType::Document);
        assert_eq!(MediaType::for_mimetype("application/pdf"), MediaType::Document);
        assert!(MediaType::ALL.iter().all(|t| MediaType::parse(t.as_str()) == Some(*t)));
        assert_eq!(MediaType::parse("chat"), None);
    }

    #[test]
    fn the_store_drops_the_oldest_past_its_bound() {
        let mut s = MediaStore::default();
        let big = Bytes::from(vec![0u8; STORE_BYTES / 2]);
        s.put("a".into(), big.clone());
        s.put("b".into(), big.clone());
        assert!(s.get("a").is_some());
        s.put("c".into(), Bytes::from_static(b"x"));
        assert!(s.get("a").is_none() && s.get("b").is_some() && s.get("c").is_some());
        assert_eq!(s.bytes, STORE_BYTES / 2 + 1);
    }
}
