//! Chat ids ("wids") and phone numbers as WhatsApp's servers see them.
//!
//! The page builds wids for its clients in JavaScript; the server re-checks
//! every chat id and phone number that reaches it (a send frame, a scan, the
//! list of numbers not on WhatsApp), with the same rules, here.

use std::fmt;

/// A chat id: a person (`<5..20 digits>@c.us`) or a group
/// (`<digits>@g.us` or `<digits>-<digits>@g.us`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ChatId {
    /// A person; the digits of the E.164 number without `+`.
    User(String),
    /// A group; the part before `@g.us`.
    Group(String),
}

impl ChatId {
    /// Parses a serialized chat id; `None` for anything malformed (the page
    /// throws `wid error: invalid wid` for the same inputs).
    pub fn parse(s: &str) -> Option<Self> {
        let (user, server) = s.split_once('@')?;
        match server {
            "c.us" if is_phone_digits(user) => Some(Self::User(user.to_owned())),
            "g.us" if is_group_user(user) => Some(Self::Group(user.to_owned())),
            _ => None,
        }
    }
}

impl fmt::Display for ChatId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User(u) => write!(f, "{u}@c.us"),
            Self::Group(g) => write!(f, "{g}@g.us"),
        }
    }
}

/// True for 5 to 20 ASCII digits: the shape of a phone number in a wid.
pub fn is_phone_digits(s: &str) -> bool {
    (5..=20).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_group_user(s: &str) -> bool {
    let all_digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    match s.split_once('-') {
        Some((a, b)) => all_digits(a) && all_digits(b),
        None => all_digits(s),
    }
}

/// Normalises a phone number given to the control API: an optional leading
/// `+`, then 5 to 20 digits. Returns the digits, or `None` if malformed.
pub fn normalize_phone(s: &str) -> Option<String> {
    let digits = s.trim().strip_prefix('+').unwrap_or(s.trim());
    is_phone_digits(digits).then(|| digits.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_five_to_twenty_digits_at_c_us() {
        assert_eq!(ChatId::parse("4915112345678@c.us"), Some(ChatId::User("4915112345678".into())));
        assert!(ChatId::parse("12345@c.us").is_some());
        assert!(ChatId::parse("1234@c.us").is_none());
        assert!(ChatId::parse("123456789012345678901@c.us").is_none());
        assert!(ChatId::parse("+4915112345678@c.us").is_none());
        assert!(ChatId::parse("49151 12345678@c.us").is_none());
        assert!(ChatId::parse("4915112345678").is_none());
        assert!(ChatId::parse("4915112345678@s.whatsapp.net").is_none());
        assert!(ChatId::parse("@c.us").is_none());
    }

    #[test]
    fn groups_are_digits_or_digits_dash_digits_at_g_us() {
        assert_eq!(ChatId::parse("120363025246125486@g.us"), Some(ChatId::Group("120363025246125486".into())));
        assert!(ChatId::parse("4915112345678-1600000000@g.us").is_some());
        assert!(ChatId::parse("4915-@g.us").is_none());
        assert!(ChatId::parse("-1@g.us").is_none());
        assert!(ChatId::parse("a-1@g.us").is_none());
        assert!(ChatId::parse("1-2-3@g.us").is_none());
    }

    #[test]
    fn display_round_trips() {
        for s in ["4915112345678@c.us", "1-2@g.us", "99999@g.us"] {
            assert_eq!(ChatId::parse(s).map(|c| c.to_string()).as_deref(), Some(s));
        }
    }

    #[test]
    fn phone_numbers_may_carry_a_plus() {
        assert_eq!(normalize_phone("+4915112345678").as_deref(), Some("4915112345678"));
        assert_eq!(normalize_phone("4915112345678").as_deref(), Some("4915112345678"));
        assert_eq!(normalize_phone("++4915112345678"), None);
        assert_eq!(normalize_phone("+49 151"), None);
        assert_eq!(normalize_phone("1234"), None);
    }
}
