//! Removing the API key from what the upstream sends before any of it goes
//! into an error text, a log line or a label.
//!
//! The upstream may echo the key as it got it, or inside JSON, where any
//! character may be written as an escape (`\u002d`, `\/`); and a text that
//! was cut to a length limit may end with only the key's first characters.
//! [`Redactor`] finds all of these. The key is ASCII (an HTTP header carries
//! it), so every character of it is written raw, as a `\uXXXX` escape or as
//! a two-character escape.

use std::fmt;
use std::sync::Arc;

/// What replaces the key.
const REDACTED: &str = "[redacted]";

/// The fewest characters of the key that count as a piece of it: at the
/// end of a cut text, and in a label. Fewer say next to nothing about the
/// key and would catch ordinary words (and three-letter currency codes).
const MIN_FRAGMENT: usize = 4;

/// The most bytes one character of the key takes when written in JSON
/// (`\u002d`).
const MAX_ESCAPED_CHAR: usize = 6;

/// Finds the key in text, in every form the upstream may send it.
///
/// Cheap to clone. `Debug` never shows the key.
#[derive(Clone)]
pub(crate) struct Redactor {
    key: Arc<str>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Redactor")
    }
}

/// How the text at some position matches the key.
enum Match {
    /// The whole key, written in this many bytes.
    Whole(usize),
    /// The text ends after at least [`MIN_FRAGMENT`] of the key's characters.
    Prefix,
    /// No match.
    No,
}

/// How the text at some position matches one character.
enum Step {
    /// The character, written in this many bytes.
    Char(usize),
    /// The text ends before the character (or inside its escape) does.
    End,
    /// Something else.
    Other,
}

impl Redactor {
    /// A redactor for `key`; an empty key redacts nothing.
    pub(crate) fn new(key: &str) -> Self {
        Self {
            key: Arc::from(key),
        }
    }

    /// `text` with every occurrence of the key, raw or JSON-escaped,
    /// replaced by `[redacted]`.
    pub(crate) fn redact(&self, text: &str) -> String {
        self.scan(text, false)
    }

    /// Like [`Redactor::redact`] for a text that was cut from a longer one
    /// (a body read up to a limit): a piece of the key at its end, which the
    /// cut left, is redacted too.
    pub(crate) fn redact_cut_off(&self, text: &str) -> String {
        self.scan(text, true)
    }

    /// At most `max` characters of `text`, redacted before the cut so that
    /// no cut leaves a piece of the key; with `…` when cut.
    pub(crate) fn cut(&self, text: &str, max: usize) -> String {
        // A key that overlaps the kept characters lies wholly within them
        // and the longest the key can be written; only that much is scanned.
        let reach = max.saturating_add(MAX_ESCAPED_CHAR.saturating_mul(self.key.len()));
        let end = text
            .char_indices()
            .nth(reach)
            .map_or(text.len(), |(i, _)| i);
        bounded(&self.scan(&text[..end], end < text.len()), max)
    }

    /// Whether `text` holds the key or a piece of it ([`MIN_FRAGMENT`]
    /// characters or more in a row): for short values such as labels, which
    /// are refused rather than redacted.
    pub(crate) fn leaks(&self, text: &str) -> bool {
        if self.key.is_empty() {
            return false;
        }
        if self.scan(text, true) != text {
            return true;
        }
        let chars: Vec<char> = text.chars().collect();
        chars.windows(MIN_FRAGMENT).any(|window| {
            let piece: String = window.iter().collect();
            self.key.contains(&piece)
        })
    }

    fn scan(&self, text: &str, cut_off: bool) -> String {
        let Some(&first) = self.key.as_bytes().first() else {
            return text.to_owned();
        };
        let bytes = text.as_bytes();
        let mut out = String::with_capacity(text.len());
        let (mut at, mut copied) = (0, 0);
        while at < bytes.len() {
            if bytes[at] == first || bytes[at] == b'\\' {
                match match_from(&bytes[at..], &self.key, 0) {
                    Match::Whole(len) => {
                        out.push_str(&text[copied..at]);
                        out.push_str(REDACTED);
                        at += len;
                        copied = at;
                        continue;
                    }
                    Match::Prefix if cut_off => {
                        out.push_str(&text[copied..at]);
                        out.push_str(REDACTED);
                        copied = text.len();
                        break;
                    }
                    Match::Prefix | Match::No => {}
                }
            }
            at += 1;
            while !text.is_char_boundary(at) {
                at += 1;
            }
        }
        out.push_str(&text[copied..]);
        out
    }
}

/// How `text` matches `key`, of which `matched` characters came before.
///
/// A backslash may start an escape or be the key's own (raw) backslash,
/// so both are tried; keys hold few backslashes, if any.
fn match_from(text: &[u8], key: &str, matched: usize) -> Match {
    let Some(c) = key.chars().next() else {
        return Match::Whole(0);
    };
    let rest = &key[c.len_utf8()..];
    let mut found = Match::No;
    for step in [raw_at(text, c), escaped_at(text, c)] {
        match step {
            Step::Char(len) => match match_from(&text[len..], rest, matched + 1) {
                Match::Whole(tail) => return Match::Whole(len + tail),
                Match::Prefix => found = Match::Prefix,
                Match::No => {}
            },
            Step::End if matched >= MIN_FRAGMENT => found = Match::Prefix,
            Step::End | Step::Other => {}
        }
    }
    found
}

/// How `text` starts: with `c` itself, or not.
fn raw_at(text: &[u8], c: char) -> Step {
    let mut raw = [0; 4];
    let raw = c.encode_utf8(&mut raw).as_bytes();
    if text.is_empty() {
        Step::End
    } else if text.starts_with(raw) {
        Step::Char(raw.len())
    } else {
        Step::Other
    }
}

/// How `text` starts: with `c` JSON-escaped, or not.
fn escaped_at(text: &[u8], c: char) -> Step {
    match text {
        [] | [b'\\'] => Step::End,
        [b'\\', b'u', hex @ ..] => {
            let digits = &hex[..hex.len().min(4)];
            let Some(value) = digits.iter().try_fold(0u32, |value, &d| {
                char::from(d).to_digit(16).map(|d| value * 16 + d)
            }) else {
                return Step::Other;
            };
            if digits.len() < 4 {
                Step::End
            } else if value == u32::from(c) {
                Step::Char(6)
            } else {
                Step::Other
            }
        }
        [b'\\', escape, ..] => {
            let decoded = match escape {
                b'"' => '"',
                b'\\' => '\\',
                b'/' => '/',
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                _ => return Step::Other,
            };
            if decoded == c {
                Step::Char(2)
            } else {
                Step::Other
            }
        }
        _ => Step::Other,
    }
}

/// At most `max` characters of `text`, with `…` when cut.
pub(crate) fn bounded(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-a/b\"c\\d";

    #[test]
    fn raw_and_json_escaped_forms_are_redacted() {
        let r = Redactor::new(KEY);
        assert_eq!(r.redact("x sk-a/b\"c\\d y"), "x [redacted] y");
        // serde_json's form, the `\/` form, every character as \uXXXX (any
        // case), and a mix.
        let json = serde_json::to_string(KEY).unwrap();
        assert_eq!(r.redact(&json), "\"[redacted]\"");
        assert_eq!(r.redact(r#"sk-a\/b\"c\\d"#), REDACTED);
        let all: String = KEY
            .chars()
            .map(|c| format!("\\u{:04X}", u32::from(c)))
            .collect();
        assert_eq!(r.redact(&format!("<{all}>")), "<[redacted]>");
        assert_eq!(r.redact(r"\u0073k\u002Da/b\u0022c\u005cd!"), "[redacted]!");
        assert_eq!(
            r.redact("KEY sk-a/b\"c\\d sk-a/b\"c\\d"),
            "KEY [redacted] [redacted]"
        );
        // Near misses stay.
        for text in ["sk-a/b\"c\\", r#"sk-a\/b\"c\\e"#, r"\u0073k-", "sk-", ""] {
            assert_eq!(r.redact(text), text);
        }
        assert_eq!(Redactor::new("").redact("anything"), "anything");
        assert_eq!(format!("{r:?}"), "Redactor");
    }

    #[test]
    fn a_piece_of_the_key_left_by_a_cut_is_redacted() {
        let r = Redactor::new("sk-SECRET-1234");
        assert_eq!(r.redact_cut_off("error: sk-SEC"), "error: [redacted]");
        assert_eq!(r.redact_cut_off(r"error: sk\u002dSE"), "error: [redacted]");
        assert_eq!(
            r.redact_cut_off(r"error: sk-SECRET\u00"),
            "error: [redacted]"
        );
        // Too short a piece to say anything, and a piece not at the end.
        assert_eq!(r.redact_cut_off("error: sk-"), "error: sk-");
        assert_eq!(r.redact_cut_off("sk-SEC and more"), "sk-SEC and more");
        // Only a text known to be cut loses its end.
        assert_eq!(r.redact("error: sk-SEC"), "error: sk-SEC");
    }

    #[test]
    fn cuts_never_leave_a_piece_of_the_key() {
        let key = "sk-SECRET-1234";
        let r = Redactor::new(key);
        for padding in 0..30 {
            let text = format!("{}{}", "x".repeat(padding), key.replace('-', "\\u002d"));
            let cut = r.cut(&format!("{text} and more"), 20);
            assert!(!cut.contains("sk"), "{cut}");
            assert!(!cut.contains("SEC"), "{cut}");
        }
        assert_eq!(r.cut("short", 20), "short");
        assert_eq!(r.cut("abcdef", 3), "abc…");
        assert_eq!(bounded("abcdef", 3), "abc…");
        assert_eq!(bounded("abc", 3), "abc");
    }

    #[test]
    fn labels_with_a_piece_of_the_key_leak() {
        let r = Redactor::new("K7f3a9c1e5b2d4f6");
        for label in ["K7f3a9c1e5b2d4f6", "K7f3", "XX9c1e5b", "a9c1", "u0K7f3a"] {
            assert!(r.leaks(label), "{label}");
        }
        for label in ["USD", "CNY", "USDT", "K7fX", ""] {
            assert!(!r.leaks(label), "{label}");
        }
        assert!(!Redactor::new("").leaks("USD"));
    }
}
