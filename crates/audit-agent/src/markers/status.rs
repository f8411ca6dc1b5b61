//! Status markers: the emojis and status words that say where an item
//! stands, and status lines such as `**Status:** In progress`.

use super::blocks::{CELL_SEP, CODE_OPEN, EMOJI_MARK};
use crate::model::TaskState;

/// Punctuation that separates a status word from the item's title, as in
/// `Storage — done` or `DONE: Storage`.
pub(super) const SEPARATORS: &[char] = &[
    ':', '-', '—', '–', '|', ',', ';', '/', '.', '·', '=', '>', EMOJI_MARK,
];

/// Status words and the state they mean, in canonical form (lower case, one
/// space between words; `-` and `_` match a space).
const STATUS_WORDS: &[(&str, TaskState)] = &[
    ("complete", TaskState::Done),
    ("completed", TaskState::Done),
    ("done", TaskState::Done),
    ("finished", TaskState::Done),
    ("shipped", TaskState::Done),
    ("implemented", TaskState::Done),
    ("merged", TaskState::Done),
    ("in progress", TaskState::InProgress),
    ("work in progress", TaskState::InProgress),
    ("wip", TaskState::InProgress),
    ("ongoing", TaskState::InProgress),
    ("active", TaskState::InProgress),
    ("started", TaskState::InProgress),
    ("underway", TaskState::InProgress),
    ("in review", TaskState::InProgress),
    ("planned", TaskState::Planned),
    ("todo", TaskState::Planned),
    ("to do", TaskState::Planned),
    ("not started", TaskState::Planned),
    ("pending", TaskState::Planned),
    ("next", TaskState::Planned),
    ("up next", TaskState::Planned),
    ("backlog", TaskState::Planned),
    ("proposed", TaskState::Planned),
    ("blocked", TaskState::Planned),
    ("on hold", TaskState::Planned),
];

/// The state a status emoji stands for.
pub(super) fn emoji_state(c: char) -> Option<TaskState> {
    match c {
        '\u{2705}' | '\u{2714}' | '\u{2611}' => Some(TaskState::Done), // ✅ ✔ ☑
        '\u{23F3}' => Some(TaskState::InProgress),                     // ⏳
        '\u{1F51C}' => Some(TaskState::Planned),                       // 🔜
        _ => None,
    }
}

/// Whether `t` (from the text) matches `p` (from a canonical status word).
fn word_char_eq(t: char, p: char) -> bool {
    if p == ' ' {
        matches!(t, ' ' | '-' | '_')
    } else {
        t.to_ascii_lowercase() == p
    }
}

/// Byte length of `word` at the start of `s`, ending at a word boundary.
fn prefix_len(s: &str, word: &str) -> Option<usize> {
    let mut chars = s.chars();
    let mut end = 0;
    for p in word.chars() {
        let t = chars.next()?;
        if !word_char_eq(t, p) {
            return None;
        }
        end += t.len_utf8();
    }
    if s[end..].chars().next().is_some_and(char::is_alphanumeric) {
        return None;
    }
    Some(end)
}

/// Byte index where `word` starts at the end of `s`, at a word boundary.
fn suffix_start(s: &str, word: &str) -> Option<usize> {
    let mut chars = s.chars().rev();
    let mut start = s.len();
    for p in word.chars().rev() {
        let t = chars.next()?;
        if !word_char_eq(t, p) {
            return None;
        }
        start -= t.len_utf8();
    }
    if s[..start]
        .chars()
        .next_back()
        .is_some_and(char::is_alphanumeric)
    {
        return None;
    }
    Some(start)
}

/// The state named by the whole of `value`.
fn status_word(value: &str) -> Option<TaskState> {
    STATUS_WORDS
        .iter()
        .find(|(word, _)| prefix_len(value, word) == Some(value.len()))
        .map(|&(_, state)| state)
}

/// Drops a status word at the start and at the end of `text` when it is
/// bracketed, set off from the rest by punctuation or an emoji (`Storage ✅
/// done`, `DONE: Storage`, `Storage (planned)`), or is all there is.
pub(super) fn strip_status_edges(text: &str) -> &str {
    let text = strip_leading_status(text).unwrap_or(text);
    strip_trailing_status(text).unwrap_or(text)
}

fn strip_leading_status(text: &str) -> Option<&str> {
    let body = text.trim_start_matches([' ', EMOJI_MARK]);
    let (open, close) = match body.chars().next() {
        Some('(') => (1, Some(')')),
        Some('[') => (1, Some(']')),
        _ => (0, None),
    };
    let inner = &body[open..];
    let first = inner.bytes().next()?.to_ascii_lowercase();
    let len = STATUS_WORDS
        .iter()
        .filter(|(word, _)| word.as_bytes().first() == Some(&first))
        .filter_map(|(word, _)| prefix_len(inner, word))
        .max()?;
    let mut end = open + len;
    if let Some(close) = close {
        if !body[end..].starts_with(close) {
            return None;
        }
        end += close.len_utf8();
    }
    let rest = &body[end..];
    let trimmed = rest.trim_start_matches(|c: char| c == ' ' || SEPARATORS.contains(&c));
    let gap = &rest[..rest.len() - trimmed.len()];
    let separated =
        close.is_some() || trimmed.is_empty() || gap.chars().any(|c| SEPARATORS.contains(&c));
    separated.then_some(trimmed)
}

fn strip_trailing_status(text: &str) -> Option<&str> {
    let body = text.trim_end_matches([' ', EMOJI_MARK, '.', '!']);
    let (inner, open) = match body.chars().next_back() {
        Some(')') => (&body[..body.len() - 1], Some('(')),
        Some(']') => (&body[..body.len() - 1], Some('[')),
        _ => (body, None),
    };
    let last = inner.bytes().next_back()?.to_ascii_lowercase();
    let mut start = STATUS_WORDS
        .iter()
        .filter(|(word, _)| word.as_bytes().last() == Some(&last))
        .filter_map(|(word, _)| suffix_start(inner, word))
        .min()?;
    if let Some(open) = open {
        if !inner[..start].ends_with(open) {
            return None;
        }
        start -= open.len_utf8();
    }
    let rest = &body[..start];
    let trimmed = rest.trim_end_matches(|c: char| c == ' ' || SEPARATORS.contains(&c));
    let gap = &rest[trimmed.len()..];
    let separated =
        open.is_some() || trimmed.is_empty() || gap.chars().any(|c| SEPARATORS.contains(&c));
    separated.then_some(trimmed)
}

/// The state of a `Status: <value>` line (emphasis already removed by the
/// parser), or `None` when the line is not one or the value is unknown.
///
/// The separator is `:`, `—`, `–`, `-` or `=`; the value may be followed by a
/// remark in brackets or after `,` `;` ` - ` ` — ` ` | `, and may carry a status
/// emoji (used when there is no word). Inline code never counts.
pub(super) fn status_of_line(line: &str) -> Option<TaskState> {
    let line = line.trim_start_matches(|c: char| {
        c.is_whitespace() || c == '\u{FE0F}' || emoji_state(c).is_some()
    });
    if !line.get(..6)?.eq_ignore_ascii_case("status") {
        return None;
    }
    let rest = line[6..].trim_start();
    let mut chars = rest.chars();
    if !matches!(chars.next()?, ':' | '—' | '–' | '-' | '=') {
        return None;
    }
    let mut value = chars.as_str();
    if let Some(index) = value.find(['(', '[', ',', ';', '\n', CODE_OPEN, CELL_SEP]) {
        value = &value[..index];
    }
    for remark in [" - ", " — ", " – ", " | "] {
        if let Some(index) = value.find(remark) {
            value = &value[..index];
        }
    }
    let emoji = value.chars().find_map(emoji_state);
    let value = value
        .trim_matches(|c: char| c.is_whitespace() || c == '\u{FE0F}' || emoji_state(c).is_some())
        .trim_end_matches(['.', '!'])
        .trim_end();
    if value.is_empty() {
        return emoji;
    }
    status_word(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::markers::parse;
    use crate::model::MarkerKind;
    use crate::model::TaskState::{Done, InProgress, Planned};

    #[test]
    fn status_lines_belong_to_their_heading() {
        let text = "\
Status: planned

# Phase 1

**Status:** COMPLETE

# Phase 2

Intro text.
*Status*: In progress (since May)

## Storage ✅

Status — planned

## Sync

- **Status:** in-progress

## Network

| Key | Value |
|-----|-------|
| Owner | Bob |
| Status: WIP | |

## UI

STATUS = done ✅

## Unknown

Status: blocked by legal
Status: cancelled
";
        let found = parse(text);
        let summary: Vec<_> = found
            .iter()
            .map(|i| (i.key.as_str(), i.marker, i.state, i.line))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("(document)", MarkerKind::StatusLine, Planned, 1),
                ("Phase 1", MarkerKind::StatusLine, Done, 5),
                ("Phase 2", MarkerKind::StatusLine, InProgress, 10),
                ("Storage", MarkerKind::DoneEmoji, Done, 12),
                ("Phase 2 / Storage", MarkerKind::StatusLine, Planned, 14),
                ("Phase 2 / Sync", MarkerKind::StatusLine, InProgress, 18),
                ("Phase 2 / Network", MarkerKind::StatusLine, InProgress, 25),
                ("Phase 2 / UI", MarkerKind::StatusLine, Done, 29),
            ]
        );
    }

    #[test]
    fn status_line_values() {
        let cases = [
            ("Status: Done", Some(Done)),
            ("status:completed.", Some(Done)),
            ("Status: Shipped — in v1.2", Some(Done)),
            ("Status: finished, see notes", Some(Done)),
            ("Status: ✅", Some(Done)),
            ("Status: in_progress", Some(InProgress)),
            ("Status - ongoing", Some(InProgress)),
            ("Status: active", Some(InProgress)),
            ("Status: started", Some(InProgress)),
            ("Status: not started", Some(Planned)),
            ("Status: to do", Some(Planned)),
            ("Status: TODO", Some(Planned)),
            ("Status: pending", Some(Planned)),
            ("Status: next", Some(Planned)),
            ("Status: blocked", Some(Planned)),
            ("Status: cancelled", None),
            ("Status: done in v1.2", None),
            ("Status: ", None),
            ("Statuses: done", None),
            ("Status quo - done", None),
            ("The status: done", None),
            ("Status: \u{E000}done\u{E001}", None),
        ];
        for (line, expected) in cases {
            assert_eq!(status_of_line(line), expected, "{line:?}");
        }
    }
}
