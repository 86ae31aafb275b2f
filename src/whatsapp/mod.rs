//! Everything that knows WhatsApp Web: the page adapter (`adapter.js`), the
//! WebDriver wrapper that runs it ([`page`]) and its BiDi connection
//! ([`bidi`]), what the page's states mean
//! ([`observe`]), how recipients are written ([`number`]) and what media a
//! message can carry ([`media`]).

pub mod bidi;
pub mod media;
pub mod number;
pub mod observe;
pub mod page;

use rand::Rng;

/// A fresh message key id in WhatsApp Web's own shape: 20 upper-case hex
/// characters starting `3EB0` (whatsapp-web.md, "Sending a text"). The daemon
/// chooses ids itself so that a send can be looked up after a crash.
pub fn new_message_id() -> String {
    message_id(&mut rand::thread_rng())
}

/// [`new_message_id`] drawn from `rng` (the campaign machine takes its
/// randomness as an argument).
pub fn message_id(rng: &mut impl Rng) -> String {
    let tail: u64 = rng.gen();
    format!("3EB0{tail:016X}")
}

/// An ack as WhatsApp Web numbers it, by name.
pub fn ack_name(ack: i8) -> &'static str {
    match ack {
        i8::MIN..=-1 => "ERROR",
        0 => "PENDING",
        1 => "SERVER",
        2 => "DEVICE",
        3 => "READ",
        _ => "PLAYED",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn message_ids_have_whatsapps_shape() {
        let id = super::new_message_id();
        assert_eq!(id.len(), 20);
        assert!(id.starts_with("3EB0"));
        assert!(id.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)));
        assert_ne!(id, super::new_message_id());
    }
}
