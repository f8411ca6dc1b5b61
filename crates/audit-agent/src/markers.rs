//! Plan items in a repository's Markdown files.
//!
//! [`parse`] reads one Markdown text with a real CommonMark parser
//! (pulldown-cmark, with task lists, tables and strikethrough), so fenced and
//! indented code blocks, inline code and HTML never produce items. It finds:
//!
//! * task-list items, `- [x]` (done) and `- [ ]` (planned, or in progress when
//!   the item's own text carries ⏳) — [`MarkerKind::Checkbox`];
//! * status emojis in any other block (paragraph, heading, list item without a
//!   checkbox, table row): ✅ ✔️ ☑️ done, ⏳ in progress, 🔜 planned — one item
//!   per block, the first emoji wins — [`MarkerKind::DoneEmoji`];
//! * status lines such as `**Status:** In progress`, which describe the section
//!   they are in: their key is the heading path (`Phase 2 / Storage`), or
//!   `(document)` above the first heading — [`MarkerKind::StatusLine`]. A status
//!   line takes precedence over emojis in the same block.
//!
//! [`scan`] walks a repository (honouring `.gitignore`) and parses every
//! Markdown file its globs select.
//!
//! Layout: `blocks` (the event collector), `keys` (item keys and their
//! numbering), `status` (status emojis, words and lines), `scan` (the
//! repository walk).

mod blocks;
mod keys;
mod scan;
mod status;
#[cfg(test)]
mod test_support;

use pulldown_cmark::{Options, Parser};

use blocks::Blocks;
use keys::finish;

use crate::model::{MarkerKind, TaskState};
pub use scan::{MarkdownConfig, Scan, ScanError, ScanProblem, scan};

/// One plan item found in a Markdown document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Stable identity within the document and marker kind: the normalized
    /// item text (or heading path for status lines), with ` #2`, ` #3`, …
    /// appended to later duplicates; at most 200 characters.
    pub key: String,
    /// How the item is marked.
    pub marker: MarkerKind,
    /// Where the item stands.
    pub state: TaskState,
    /// 1-based line where the item starts (for a status line: the line of the
    /// status line itself).
    pub line: usize,
}

/// The plan items of one Markdown file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Path relative to the scanned root, `/`-separated.
    pub path: String,
    /// The items, in document order.
    pub items: Vec<Item>,
}

impl Document {
    /// How many of the document's items are in `state`.
    pub fn count(&self, state: TaskState) -> u64 {
        self.items.iter().filter(|item| item.state == state).count() as u64
    }
}

/// Finds the plan items of one Markdown text, in document order.
///
/// Never panics; text that is not Markdown simply yields no items.
pub fn parse(text: &str) -> Vec<Item> {
    let options =
        Options::ENABLE_TASKLISTS | Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH;
    let mut blocks = Blocks::default();
    for (event, range) in Parser::new_ext(text, options).into_offset_iter() {
        blocks.event(event, range.start);
    }
    while blocks.depth > 0 {
        blocks.close();
    }
    finish(text, blocks.found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::markers::keys::DOCUMENT_KEY;
    use crate::markers::test_support::{items, status};
    use crate::model::TaskState::{Done, InProgress, Planned};

    #[test]
    fn counts_per_document() {
        let document = Document {
            path: "plan.md".to_owned(),
            items: parse("- [x] a\n- [x] b\n- [ ] c\n- [ ] ⏳ d\n\n🔜 e\n"),
        };
        assert_eq!(document.count(Done), 2);
        assert_eq!(document.count(InProgress), 1);
        assert_eq!(document.count(Planned), 2);
    }

    #[test]
    fn parse_never_panics_on_odd_input() {
        let inputs = [
            "",
            "\n\n\n",
            "- [x",
            "| a |\n|---|\n| ✅ \u{E000} | \u{E002} |",
            "Status:",
            "\u{FE0F}✅\u{FE0F}",
            "> - [ ] quoted\n> > ✅ deeper",
            "# \n\nStatus: done",
            "- - - [x] deep",
            "\r\n- [x] crlf\r\n",
            "[^1]: ✅ footnote-ish\n",
            "((((((((((done))))))))))",
            "Status: (done)",
        ];
        for input in inputs {
            let _ = parse(input);
        }
        assert_eq!(
            items("# \n\nStatus: done"),
            vec![status(DOCUMENT_KEY, Done)]
        );
        assert_eq!(parse("\r\n- [x] crlf\r\n")[0].line, 2);
        let deep = format!("{}✅ x", "> ".repeat(500));
        assert_eq!(parse(&deep).len(), 1);
        let nested = "- ".repeat(200) + "[x] deep";
        let _ = parse(&nested);
    }
}
