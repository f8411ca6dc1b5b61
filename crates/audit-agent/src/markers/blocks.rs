//! The blocks of a Markdown text, collected from pulldown-cmark's events:
//! paragraphs, headings, list items (with their task-list checkbox) and
//! table rows, each with its text, status emoji and status line; code and
//! HTML blocks are skipped. A closed block becomes a found item.

use pulldown_cmark::{Event, Tag};

use super::keys::{block_key, heading_path, write_key};
use super::status::{emoji_state, status_of_line};
use crate::model::{MarkerKind, TaskState};

// Sentinels used inside block buffers (Unicode private use area; stripped from
// the document's own text so they cannot be forged).
/// Start of an inline code span.
pub(super) const CODE_OPEN: char = '\u{E000}';
/// End of an inline code span.
pub(super) const CODE_CLOSE: char = '\u{E001}';
/// Between two table cells.
pub(super) const CELL_SEP: char = '\u{E002}';
/// Where a status emoji stood, while a key is normalized.
pub(super) const EMOJI_MARK: char = '\u{E003}';

fn is_sentinel(c: char) -> bool {
    matches!(c, CODE_OPEN | CODE_CLOSE | CELL_SEP | EMOJI_MARK)
}

/// A block that may become an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum BlockKind {
    #[default]
    Paragraph,
    Heading(u8),
    Item,
    Row,
}

/// What an open tag is to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    /// Opened a frame (paragraph, heading, list item, table row).
    Sink,
    /// A paragraph directly inside a list item: its text belongs to the item.
    Merged,
    /// A table cell: its end ends a status "line".
    Cell,
    /// Code or HTML block: text inside is ignored.
    Code,
    /// Anything else.
    Passive,
}

/// An open block and the text collected so far.
#[derive(Debug, Default)]
struct Frame {
    kind: BlockKind,
    start: usize,
    /// The block's own text; inline code wrapped in `CODE_OPEN`/`CODE_CLOSE`,
    /// line breaks as `\n`, table cells separated by `CELL_SEP`.
    buf: String,
    /// Where the current line starts in `buf`.
    line_begin: usize,
    /// Source offset of the current line's first text.
    line_offset: Option<usize>,
    cells: u32,
    task: Option<bool>,
    hourglass: bool,
    emoji: Option<TaskState>,
    status: Option<(TaskState, usize)>,
}

impl Frame {
    fn reset(&mut self, kind: BlockKind, start: usize) {
        self.kind = kind;
        self.start = start;
        self.buf.clear();
        self.line_begin = 0;
        self.line_offset = None;
        self.cells = 0;
        self.task = None;
        self.hourglass = false;
        self.emoji = None;
        self.status = None;
    }

    fn push_text(&mut self, text: &str, offset: usize) {
        self.line_offset.get_or_insert(offset);
        if text.is_ascii() {
            self.buf.push_str(text);
            return;
        }
        let mut sentinel = false;
        for c in text.chars() {
            if let Some(state) = emoji_state(c) {
                self.emoji.get_or_insert(state);
                if state == TaskState::InProgress {
                    self.hourglass = true;
                }
            } else if is_sentinel(c) {
                sentinel = true;
            }
        }
        if sentinel {
            self.buf.extend(text.chars().filter(|&c| !is_sentinel(c)));
        } else {
            self.buf.push_str(text);
        }
    }

    fn push_code(&mut self, code: &str, offset: usize) {
        self.line_offset.get_or_insert(offset);
        self.buf.push(CODE_OPEN);
        if code.contains(is_sentinel) {
            self.buf.extend(code.chars().filter(|&c| !is_sentinel(c)));
        } else {
            self.buf.push_str(code);
        }
        self.buf.push(CODE_CLOSE);
    }

    /// Ends the current line, noting the first status line of the block.
    fn end_line(&mut self) {
        if self.status.is_none()
            && let Some(state) = self.buf.get(self.line_begin..).and_then(status_of_line)
        {
            self.status = Some((state, self.line_offset.unwrap_or(self.start)));
        }
        self.line_begin = self.buf.len();
        self.line_offset = None;
    }

    fn line_break(&mut self) {
        self.end_line();
        self.buf.push('\n');
        self.line_begin = self.buf.len();
    }
}

/// An item before sorting, line numbering and de-duplication.
#[derive(Debug)]
pub(super) struct Found {
    pub(super) offset: usize,
    pub(super) marker: MarkerKind,
    pub(super) state: TaskState,
    pub(super) key: String,
}

/// Collects blocks from the event stream. Frames and heading buffers are
/// reused, so the only allocation per item is its key.
#[derive(Debug, Default)]
pub(super) struct Blocks {
    frames: Vec<Frame>,
    pub(super) depth: usize,
    nodes: Vec<Node>,
    code_depth: usize,
    /// Enclosing headings (level, normalized text); `headings[..heading_len]`
    /// are live, the rest are spare buffers.
    headings: Vec<(u8, String)>,
    heading_len: usize,
    scratch: String,
    pub(super) found: Vec<Found>,
}

impl Blocks {
    fn top(&mut self) -> Option<&mut Frame> {
        let index = self.depth.checked_sub(1)?;
        self.frames.get_mut(index)
    }

    pub(super) fn event(&mut self, event: Event<'_>, offset: usize) {
        match event {
            Event::Start(tag) => self.start(&tag, offset),
            Event::End(_) => self.end(),
            Event::Text(text) => {
                if self.code_depth == 0
                    && let Some(frame) = self.top()
                {
                    frame.push_text(&text, offset);
                }
            }
            Event::Code(code) => {
                if self.code_depth == 0
                    && let Some(frame) = self.top()
                {
                    frame.push_code(&code, offset);
                }
            }
            Event::SoftBreak | Event::HardBreak => {
                if let Some(frame) = self.top() {
                    frame.line_break();
                }
            }
            Event::TaskListMarker(checked) => {
                if let Some(frame) = self.top()
                    && frame.kind == BlockKind::Item
                    && frame.task.is_none()
                {
                    frame.task = Some(checked);
                }
            }
            _ => {}
        }
    }

    fn start(&mut self, tag: &Tag<'_>, offset: usize) {
        let node = match tag {
            Tag::Paragraph => {
                let in_item = self.nodes.last() == Some(&Node::Sink)
                    && self.top().is_some_and(|f| f.kind == BlockKind::Item);
                if in_item {
                    Node::Merged
                } else {
                    self.open(BlockKind::Paragraph, offset)
                }
            }
            Tag::Heading { level, .. } => self.open(BlockKind::Heading(*level as u8), offset),
            Tag::Item => self.open(BlockKind::Item, offset),
            Tag::TableHead | Tag::TableRow => self.open(BlockKind::Row, offset),
            Tag::TableCell => {
                if let Some(frame) = self.top()
                    && frame.kind == BlockKind::Row
                {
                    if frame.cells > 0 {
                        frame.buf.push(CELL_SEP);
                        frame.line_begin = frame.buf.len();
                        frame.line_offset = None;
                    }
                    frame.cells += 1;
                }
                Node::Cell
            }
            Tag::CodeBlock(_) | Tag::HtmlBlock | Tag::MetadataBlock(_) => {
                self.code_depth += 1;
                Node::Code
            }
            _ => Node::Passive,
        };
        self.nodes.push(node);
    }

    fn open(&mut self, kind: BlockKind, offset: usize) -> Node {
        if self.depth == self.frames.len() {
            self.frames.push(Frame::default());
        }
        if let Some(frame) = self.frames.get_mut(self.depth) {
            frame.reset(kind, offset);
            self.depth += 1;
        }
        Node::Sink
    }

    fn end(&mut self) {
        match self.nodes.pop() {
            Some(Node::Sink) => self.close(),
            Some(Node::Merged) => {
                if let Some(frame) = self.top() {
                    frame.line_break();
                }
            }
            Some(Node::Cell) => {
                if let Some(frame) = self.top() {
                    frame.end_line();
                }
            }
            Some(Node::Code) => self.code_depth = self.code_depth.saturating_sub(1),
            Some(Node::Passive) | None => {}
        }
    }

    /// Closes the innermost frame and records its item, if any.
    pub(super) fn close(&mut self) {
        let Some(index) = self.depth.checked_sub(1) else {
            return;
        };
        self.depth = index;
        let Some(frame) = self.frames.get_mut(index) else {
            return;
        };
        frame.end_line();
        let Self {
            headings,
            heading_len,
            scratch,
            found,
            ..
        } = self;

        if let BlockKind::Heading(level) = frame.kind {
            // A heading closes the sections of its level and deeper.
            while *heading_len > 0 && headings[*heading_len - 1].0 >= level {
                *heading_len -= 1;
            }
        }

        if let (BlockKind::Item, Some(checked)) = (frame.kind, frame.task) {
            let state = if checked {
                TaskState::Done
            } else if frame.hourglass {
                TaskState::InProgress
            } else {
                TaskState::Planned
            };
            found.push(Found {
                offset: frame.start,
                marker: MarkerKind::Checkbox,
                state,
                key: block_key(&frame.buf, false, scratch),
            });
        } else if let Some((state, offset)) = frame.status {
            found.push(Found {
                offset,
                marker: MarkerKind::StatusLine,
                state,
                key: heading_path(&headings[..*heading_len]),
            });
        } else if let Some(state) = frame.emoji {
            found.push(Found {
                offset: frame.start,
                marker: MarkerKind::DoneEmoji,
                state,
                key: block_key(&frame.buf, frame.kind == BlockKind::Row, scratch),
            });
        }

        if let BlockKind::Heading(level) = frame.kind {
            if *heading_len == headings.len() {
                headings.push((level, String::new()));
            }
            let (entry_level, text) = &mut headings[*heading_len];
            *entry_level = level;
            text.clear();
            let mut chars = 0;
            write_key(&frame.buf, false, scratch, text, &mut chars);
            *heading_len += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::markers::parse;
    use crate::markers::test_support::{checkbox, emoji, items, status};
    use crate::model::TaskState::{Done, InProgress, Planned};

    #[test]
    fn checkboxes_done_planned_and_in_progress() {
        let text = "# Plan\n\n- [x] Write the parser\n- [X] Ship **it**\n- [ ] Add `scan()` support\n- [ ] ⏳ Benchmark\n* [x] ⏳ Started and finished ✅\n1. [ ] Numbered\n";
        assert_eq!(
            items(text),
            vec![
                checkbox("Write the parser", Done),
                checkbox("Ship it", Done),
                checkbox("Add scan() support", Planned),
                checkbox("Benchmark", InProgress),
                checkbox("Started and finished", Done),
                checkbox("Numbered", Planned),
            ]
        );
        let lines: Vec<usize> = parse(text).iter().map(|i| i.line).collect();
        assert_eq!(lines, vec![3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn nested_task_items_are_separate() {
        let text =
            "- [ ] Storage\n  - [x] Schema\n  - [ ] ⏳ Migrations\n    - [x] Up\n- [x] Network\n";
        assert_eq!(
            items(text),
            vec![
                checkbox("Storage", Planned),
                checkbox("Schema", Done),
                checkbox("Migrations", InProgress),
                checkbox("Up", Done),
                checkbox("Network", Done),
            ]
        );
        // The parent does not inherit its child's ⏳.
        assert_eq!(items("- [ ] Parent\n  - [ ] ⏳ Child\n")[0].2, Planned);
    }

    #[test]
    fn loose_task_list_items_include_their_paragraphs() {
        let text = "- [ ] First\n\n  more about it ⏳\n\n- [x] Second\n";
        assert_eq!(
            items(text),
            vec![
                checkbox("First more about it", InProgress),
                checkbox("Second", Done)
            ]
        );
    }

    #[test]
    fn code_and_html_never_produce_items() {
        let text = "\
```md
- [x] fenced
✅ fenced emoji
Status: done
```

~~~
- [ ] tilde ⏳
~~~

    - [x] indented code
    ✅ indented

Use `- [x]` and `✅` and `Status: done` in prose.

<div>
✅ html block
- [x] html
</div>

- [ ] real `✅` item
";
        assert_eq!(items(text), vec![checkbox("real ✅ item", Planned)]);
    }

    #[test]
    fn emojis_in_headings_paragraphs_lists_and_tables() {
        let text = "\
# Roadmap

## Storage ✅

⏳ Networking is being built.

- 🔜 UI
- plain item
- ✔️ Docs

| Area | State |
|------|-------|
| Storage | ✅ Done |
| Sync | ⏳ |
| UI | 🔜 Planned |
| Misc | nothing |
";
        assert_eq!(
            items(text),
            vec![
                emoji("Storage", Done),
                emoji("Networking is being built.", InProgress),
                emoji("UI", Planned),
                emoji("Docs", Done),
                emoji("Storage #2", Done),
                emoji("Sync", InProgress),
                emoji("UI #2", Planned),
            ]
        );
    }

    #[test]
    fn first_emoji_in_a_block_wins() {
        assert_eq!(
            items("⏳ Storage, ✅ schema done\n"),
            vec![emoji("Storage, schema done", InProgress)]
        );
    }

    #[test]
    fn status_line_takes_precedence_over_emojis() {
        let text = "# Sync\n\n⏳ Status: done\n\n- ✅ **Status:** planned\n";
        assert_eq!(
            items(text),
            vec![status("Sync", Done), status("Sync #2", Planned)]
        );
    }

    #[test]
    fn checkbox_takes_precedence_over_status_line() {
        assert_eq!(
            items("- [ ] Status: done\n"),
            vec![checkbox("Status", Planned)]
        );
    }
}
