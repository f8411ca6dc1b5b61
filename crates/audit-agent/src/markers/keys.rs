//! Item keys: a block's text normalized into a stable key (inline code kept,
//! status emojis and words dropped, capped), a status line's heading path,
//! and [`finish`], which numbers duplicate keys and the items' lines.

use std::collections::{HashMap, HashSet};

use super::Item;
use super::blocks::{CELL_SEP, CODE_CLOSE, CODE_OPEN, EMOJI_MARK, Found};
use super::status::{SEPARATORS, emoji_state, strip_status_edges};
use crate::model::MarkerKind;

/// Keys are capped at this many characters (suffixes included).
const MAX_KEY_CHARS: usize = 200;
/// The key of a status line above the first heading.
pub(super) const DOCUMENT_KEY: &str = "(document)";
/// The key of an item without any text (e.g. a bare `- [x]`).
const EMPTY_KEY: &str = "(empty)";

/// Sorts items into document order, numbers their lines and makes keys unique
/// per marker kind.
pub(super) fn finish(text: &str, mut found: Vec<Found>) -> Vec<Item> {
    found.sort_by_key(|f| f.offset);

    // Occurrence numbers of duplicate (marker, key) pairs.
    let mut renames: Vec<(usize, String)> = Vec::new();
    {
        let mut seen: HashMap<(MarkerKind, &str), u32> = HashMap::with_capacity(found.len());
        let mut duplicates = Vec::new();
        for (index, f) in found.iter().enumerate() {
            let count = seen.entry((f.marker, f.key.as_str())).or_insert(0);
            *count += 1;
            if *count > 1 {
                duplicates.push((index, *count));
            }
        }
        let mut taken: HashSet<(MarkerKind, String)> = HashSet::new();
        for (index, mut number) in duplicates {
            let f = &found[index];
            loop {
                let key = numbered_key(&f.key, number);
                let clash = seen.contains_key(&(f.marker, key.as_str()))
                    || taken.contains(&(f.marker, key.clone()));
                if !clash {
                    taken.insert((f.marker, key.clone()));
                    renames.push((index, key));
                    break;
                }
                number += 1;
            }
        }
    }
    for (index, key) in renames {
        found[index].key = key;
    }

    let bytes = text.as_bytes();
    let mut position = 0;
    let mut line = 1;
    found
        .into_iter()
        .map(|f| {
            let target = f.offset.min(bytes.len());
            if target > position {
                line += bytes[position..target]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count();
                position = target;
            }
            Item {
                key: f.key,
                marker: f.marker,
                state: f.state,
                line,
            }
        })
        .collect()
}

/// `key #n`, shortened so the whole stays within [`MAX_KEY_CHARS`].
fn numbered_key(key: &str, number: u32) -> String {
    let suffix = format!(" #{number}");
    let room = MAX_KEY_CHARS.saturating_sub(suffix.chars().count());
    let mut out = String::with_capacity(key.len() + suffix.len());
    out.push_str(truncate_chars(key, room).trim_end());
    out.push_str(&suffix);
    out
}

fn truncate_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((index, _)) => &s[..index],
        None => s,
    }
}

/// The key of a status line: the enclosing headings, ` / `-separated.
pub(super) fn heading_path(headings: &[(u8, String)]) -> String {
    let mut key = String::new();
    for (_, text) in headings {
        if text.is_empty() {
            continue;
        }
        if !key.is_empty() {
            key.push_str(" / ");
        }
        key.push_str(text);
        if key.len() > 4 * MAX_KEY_CHARS {
            break;
        }
    }
    if key.is_empty() {
        return DOCUMENT_KEY.to_owned();
    }
    let end = truncate_chars(&key, MAX_KEY_CHARS).trim_end().len();
    key.truncate(end);
    key
}

/// The normalized key of a block's text.
pub(super) fn block_key(raw: &str, row: bool, scratch: &mut String) -> String {
    let mut key = String::new();
    let mut chars = 0;
    write_key(raw, row, scratch, &mut key, &mut chars);
    if key.is_empty() {
        key.push_str(EMPTY_KEY);
    }
    key
}

/// Appends the normalized form of `raw` to `out`: inline formatting is already
/// gone, code spans keep their text, status emojis are dropped, status words
/// next to them or set off by punctuation at either end are dropped (unless
/// nothing else is left), whitespace is collapsed. Table rows are normalized
/// cell by cell and joined with ` | `; cells holding only a status are left out.
pub(super) fn write_key(
    raw: &str,
    row: bool,
    scratch: &mut String,
    out: &mut String,
    chars: &mut usize,
) {
    let base = out.len();
    if row {
        for strip in [true, false] {
            for cell in raw.split(CELL_SEP) {
                let before = out.len();
                let before_chars = *chars;
                if out.len() > base {
                    push_capped(out, chars, " | ");
                }
                if !append_normalized(cell, strip, scratch, out, chars) {
                    out.truncate(before);
                    *chars = before_chars;
                }
            }
            if out.len() > base {
                break;
            }
        }
    } else if !append_normalized(raw, true, scratch, out, chars) {
        append_normalized(raw, false, scratch, out, chars);
    }
    let end = out.trim_end().len().max(base);
    out.truncate(end);
}

fn push_capped(out: &mut String, chars: &mut usize, s: &str) {
    for c in s.chars() {
        if *chars >= MAX_KEY_CHARS {
            return;
        }
        out.push(c);
        *chars += 1;
    }
}

/// Normalizes one piece of text onto `out`; returns whether anything was written.
fn append_normalized(
    raw: &str,
    strip_status: bool,
    scratch: &mut String,
    out: &mut String,
    chars: &mut usize,
) -> bool {
    // Pass 1: collapse whitespace, drop code delimiters and variation selectors,
    // mark status emojis (outside code).
    scratch.clear();
    let mut in_code = false;
    let mut space = false;
    for c in raw.chars() {
        match c {
            CODE_OPEN => in_code = true,
            CODE_CLOSE => in_code = false,
            '\u{FE0F}' => {}
            c if c.is_whitespace() || c == CELL_SEP => space = true,
            c => {
                if space && !scratch.is_empty() {
                    scratch.push(' ');
                }
                space = false;
                if !in_code && emoji_state(c).is_some() {
                    scratch.push(EMOJI_MARK);
                } else {
                    scratch.push(c);
                }
            }
        }
    }

    // Pass 2: drop status words at the edges, then emojis at the edges.
    let mut text = scratch.as_str();
    if strip_status {
        text = strip_status_edges(text);
    }
    text = trim_emoji_edges(text);

    // Pass 3: copy without emoji marks, collapsing the spaces they leave.
    let before = out.len();
    let mut space = false;
    for c in text.chars() {
        if *chars >= MAX_KEY_CHARS {
            break;
        }
        if c == ' ' || c == EMOJI_MARK {
            space = true;
            continue;
        }
        if space && out.len() > before {
            out.push(' ');
            *chars += 1;
            if *chars >= MAX_KEY_CHARS {
                break;
            }
        }
        space = false;
        out.push(c);
        *chars += 1;
    }
    out.len() > before
}

/// Trims spaces, and separators that stood next to an emoji, from both ends.
fn trim_emoji_edges(text: &str) -> &str {
    let edge = |c: char| c == ' ' || SEPARATORS.contains(&c);
    let mut text = text.trim_matches(' ');
    let start = text.trim_start_matches(edge);
    if text[..text.len() - start.len()].contains(EMOJI_MARK) {
        text = start;
    }
    let end = text.trim_end_matches(edge);
    if text[end.len()..].contains(EMOJI_MARK) {
        text = end;
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::markers::parse;
    use crate::markers::test_support::{checkbox, emoji, items};
    use crate::model::TaskState::{self, Done, InProgress, Planned};

    #[test]
    fn status_words_next_to_emojis_are_not_part_of_the_key() {
        // So an item keeps its key when its status changes.
        let before = items("- Storage 🔜 planned\n- DONE: Sync ✅\n- (in progress) UI ⏳\n");
        let after = items("- Storage ✅ done\n- ✅ Sync\n- UI (done) ✅\n");
        let keys = |found: &[(String, MarkerKind, TaskState)]| {
            found.iter().map(|f| f.0.clone()).collect::<Vec<_>>()
        };
        assert_eq!(keys(&before), keys(&after));
        assert_eq!(
            before,
            vec![
                emoji("Storage", Planned),
                emoji("Sync", Done),
                emoji("UI", InProgress)
            ]
        );
        assert_eq!(
            items("- ✅ Done reading the spec\n- Get it done ✅\n"),
            vec![
                emoji("Done reading the spec", Done),
                emoji("Get it done", Done)
            ]
        );
        // Words that are the item's title stay.
        assert_eq!(
            items("- [ ] Make the node active\n"),
            vec![checkbox("Make the node active", Planned)]
        );
        assert_eq!(items("- [x] Done\n"), vec![checkbox("Done", Done)]);
    }

    #[test]
    fn duplicate_keys_are_numbered() {
        let text = "- [ ] Test\n- [x] Test\n- [ ] Other\n- [ ] Test\n\n✅ Test\n\n- [ ] Test #2\n";
        assert_eq!(
            items(text),
            vec![
                checkbox("Test", Planned),
                checkbox("Test #3", Done),
                checkbox("Other", Planned),
                checkbox("Test #4", Planned),
                emoji("Test", Done),
                checkbox("Test #2", Planned),
            ]
        );
        let keys: HashSet<_> = parse(text).into_iter().map(|i| (i.marker, i.key)).collect();
        assert_eq!(keys.len(), 6);
    }

    #[test]
    fn duplicates_numbered_in_order() {
        assert_eq!(
            items("- [ ] A\n- [x] A\n- [ ] A\n"),
            vec![
                checkbox("A", Planned),
                checkbox("A #2", Done),
                checkbox("A #3", Planned)
            ]
        );
    }

    #[test]
    fn keys_are_stable_when_lines_are_inserted_above() {
        let original = "# Plan\n\n- [ ] Alpha\n- [x] Beta\n\nStatus: done\n";
        let edited = "# Plan\n\nSome new introduction.\n\n- [ ] New thing\n\n- [ ] Alpha\n- [x] Beta\n\nStatus: done\n";
        let keys = |text: &str| -> Vec<(String, MarkerKind)> {
            parse(text)
                .into_iter()
                .filter(|i| i.key != "New thing")
                .map(|i| (i.key, i.marker))
                .collect()
        };
        assert_eq!(keys(original), keys(edited));
        let beta = |text: &str| {
            parse(text)
                .into_iter()
                .find(|i| i.key == "Beta")
                .map(|i| i.line)
        };
        assert_eq!(beta(original), Some(4));
        assert_eq!(beta(edited), Some(8));
    }

    #[test]
    fn keys_are_normalized_and_capped() {
        let text = "- [x]   *Emphasis*   and [a link](http://x) and ~~strike~~\n  over two lines\n";
        assert_eq!(
            items(text),
            vec![checkbox(
                "Emphasis and a link and strike over two lines",
                Done
            )]
        );
        let long = format!("- [ ] {}é\n- [ ] {}é\n", "x".repeat(300), "x".repeat(300));
        let found = parse(&long);
        assert_eq!(found[0].key.chars().count(), MAX_KEY_CHARS);
        assert_eq!(found[1].key.chars().count(), MAX_KEY_CHARS);
        assert!(found[1].key.ends_with(" #2"));
        assert_eq!(items("- [x]\n"), vec![checkbox(EMPTY_KEY, Done)]);
    }
}
