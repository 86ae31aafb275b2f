//! Recipients: phone numbers to E.164 and chat ids.
//!
//! A person's chat id is the digits of the E.164 number with `@c.us`
//! (`4915112345678@c.us`); a group's is `<id>@g.us` (whatsapp-web.md,
//! "Sending a text"). Numbers are checked with libphonenumber's metadata (the
//! `phonenumber` crate), so a typo is refused before it reaches the page.

use std::fmt;

/// A chat id the page's `WAWebWidFactory.createWid` accepts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChatId(String);

impl ChatId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A chat id that was checked when it was stored (a campaign's
    /// recipient); the page checks it again.
    pub fn from_trusted(id: String) -> Self {
        Self(id)
    }
}

impl fmt::Display for ChatId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a recipient was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    #[error("{0:?} is not a valid phone number in international (E.164) form, e.g. \"+49 151 12345678\"")]
    NotE164(String),
    #[error("{0:?} is not a valid chat id (expected <digits>@c.us or <id>@g.us)")]
    BadChatId(String),
}

/// Turns what a user typed into a chat id: `"+49 151 12345678"`,
/// `"4915112345678"`, `"4915112345678@c.us"` or a group id `"…@g.us"`.
/// A number without `+` is read as international (country code first).
pub fn parse_recipient(input: &str) -> Result<ChatId, NumberError> {
    let input = input.trim();
    if let Some(digits) = input.strip_suffix("@c.us") {
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(NumberError::BadChatId(input.into()));
        }
        let e164 = to_e164(digits).map_err(|_| NumberError::NotE164(input.into()))?;
        return Ok(ChatId(format!("{}@c.us", &e164[1..])));
    }
    if let Some(id) = input.strip_suffix("@g.us") {
        let ok = !id.is_empty() && id.len() <= 40 && id.split('-').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        return if ok { Ok(ChatId(input.into())) } else { Err(NumberError::BadChatId(input.into())) };
    }
    let e164 = to_e164(input)?;
    Ok(ChatId(format!("{}@c.us", &e164[1..])))
}

/// Normalises a phone number to E.164 (`+4915112345678`).
pub fn to_e164(input: &str) -> Result<String, NumberError> {
    let bad = || NumberError::NotE164(input.into());
    let cleaned: String = input.chars().filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.')).collect();
    let digits = cleaned.strip_prefix('+').unwrap_or(&cleaned);
    if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let number = phonenumber::parse(None, format!("+{digits}")).map_err(|_| bad())?;
    if !phonenumber::is_valid(&number) {
        return Err(bad());
    }
    Ok(number.format().mode(phonenumber::Mode::E164).to_string())
}

/// A country for numbers written without a country code (ISO 3166 alpha-2,
/// e.g. `DE`).
pub fn country(code: &str) -> Result<phonenumber::country::Id, String> {
    code.trim()
        .to_ascii_uppercase()
        .parse::<phonenumber::country::Id>()
        .map_err(|_| format!("unknown country code {code:?} (expected ISO 3166 alpha-2, e.g. \"DE\")"))
}

/// Normalises a number to E.164, reading one without `+` as national to
/// `default` when one is given: `"0151 12345678"` with `DE` →
/// `+4915112345678`. `00…` is international; digits that are a valid
/// international number as they stand (`4915112345678`) are taken as such.
pub fn normalize(input: &str, default: Option<phonenumber::country::Id>) -> Result<String, NumberError> {
    let trimmed = input.trim();
    if let Some(rest) = trimmed.strip_prefix("00") {
        return to_e164(rest);
    }
    let Some(region) = default else { return to_e164(trimmed) };
    if trimmed.starts_with('+') {
        return to_e164(trimmed);
    }
    if !trimmed.starts_with('0') {
        if let Ok(e164) = to_e164(trimmed) {
            return Ok(e164);
        }
    }
    let bad = || NumberError::NotE164(input.into());
    let number = phonenumber::parse(Some(region), trimmed).map_err(|_| bad())?;
    if !phonenumber::is_valid(&number) {
        return Err(bad());
    }
    Ok(number.format().mode(phonenumber::Mode::E164).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn national_numbers_use_the_default_country() {
        let de = Some(country("de").unwrap());
        for input in ["0151 12345678", "+49 151 12345678", "004915112345678", "4915112345678"] {
            assert_eq!(normalize(input, de).unwrap(), "+4915112345678", "{input}");
        }
        assert!(normalize("0151 12345678", None).is_err());
        assert!(normalize("12", de).is_err());
        assert!(country("XX").is_err());
    }

    #[test]
    fn forms_of_one_number_give_one_chat_id() {
        for input in ["+49 151 12345678", "4915112345678", "+49-151-1234 5678", "4915112345678@c.us"] {
            assert_eq!(parse_recipient(input).unwrap().as_str(), "4915112345678@c.us", "{input}");
        }
    }

    #[test]
    fn bad_numbers_are_refused() {
        for input in ["", "+", "hello", "+49 1", "12", "+999 1234567", "49151x2345678", "../x@c.us", "@c.us"] {
            assert!(parse_recipient(input).is_err(), "{input}");
        }
    }

    #[test]
    fn groups_pass() {
        assert!(parse_recipient("120363025246125486@g.us").is_ok());
        assert!(parse_recipient("4915112345678-1609876543@g.us").is_ok());
        assert!(parse_recipient("abc@g.us").is_err());
    }
}
