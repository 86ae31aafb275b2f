//! Opt-out replies: a contact who writes only "STOP" (or an equivalent)
//! asks not to be messaged again. Pure: the text and the keywords are
//! arguments.

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization as _;

/// The default opt-out keywords (`opt_outs.keywords`).
///
/// English: the opt-out keywords US carriers honour for business messaging
/// (CTIA, "Messaging Principles and Best Practices", 2023: STOP, STOPALL,
/// UNSUBSCRIBE, CANCEL, END, QUIT). Then the common words for "stop" and
/// "unsubscribe" in German, French, Spanish, Portuguese, Italian, Dutch,
/// Indonesian and Turkish. Compared after [`fold`], so accents and case do
/// not matter ("Arrêt" matches "arret").
pub const DEFAULT_KEYWORDS: &[&str] = &[
    "stop",
    "stopall",
    "stop all",
    "unsubscribe",
    "cancel",
    "end",
    "quit",
    "stopp",
    "abmelden",
    "arret",
    "desabonner",
    "desinscrire",
    "baja",
    "parar",
    "alto",
    "sair",
    "cancelar",
    "basta",
    "disiscrivi",
    "afmelden",
    "berhenti",
    "dur",
];

/// `text` folded for comparison: Unicode-decomposed with the combining
/// marks dropped (accents), lower-cased, inner whitespace collapsed to one
/// space, and spaces and punctuation trimmed from both ends.
pub fn fold(text: &str) -> String {
    let plain: String = text.nfkd().filter(|c| !is_combining_mark(*c)).flat_map(char::to_lowercase).collect();
    let words: Vec<&str> = plain.split_whitespace().collect();
    let joined = words.join(" ");
    joined.trim_matches(|c: char| c.is_whitespace() || c.is_ascii_punctuation() || matches!(c, '¡' | '¿' | '…' | '!' | '.')).to_string()
}

/// Whether `text`, as a whole, is one of `keywords` (compared with
/// [`fold`]). A longer text that only contains a keyword ("please don't
/// stop") is not an opt-out.
pub fn is_opt_out(text: &str, keywords: &[String]) -> bool {
    let folded = fold(text);
    !folded.is_empty() && keywords.iter().any(|k| fold(k) == folded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Vec<String> {
        DEFAULT_KEYWORDS.iter().map(|k| k.to_string()).collect()
    }

    #[test]
    fn whole_replies_match_ignoring_case_accents_and_punctuation() {
        let k = defaults();
        for yes in ["STOP", "stop", " Stop! ", "Arrêt", "ARRÊT.", "Stop   all", "désabonner", "Ｓｔｏｐ", "¡Baja!"] {
            assert!(is_opt_out(yes, &k), "{yes:?}");
        }
        for no in ["please don't stop", "stopping", "", "!!!", "stop it now", "unsubscribed?"] {
            assert!(!is_opt_out(no, &k), "{no:?}");
        }
        assert!(is_opt_out("Schluss", &["SCHLUSS".to_string()]));
    }
}
