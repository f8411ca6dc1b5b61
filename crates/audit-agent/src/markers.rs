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

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use ignore::WalkBuilder;
use pulldown_cmark::{Event, Options, Parser, Tag};

use crate::model::{MarkerKind, TaskState};

/// Keys are capped at this many characters (suffixes included).
const MAX_KEY_CHARS: usize = 200;
/// The key of a status line above the first heading.
const DOCUMENT_KEY: &str = "(document)";
/// The key of an item without any text (e.g. a bare `- [x]`).
const EMPTY_KEY: &str = "(empty)";

// Sentinels used inside block buffers (Unicode private use area; stripped from
// the document's own text so they cannot be forged).
/// Start of an inline code span.
const CODE_OPEN: char = '\u{E000}';
/// End of an inline code span.
const CODE_CLOSE: char = '\u{E001}';
/// Between two table cells.
const CELL_SEP: char = '\u{E002}';
/// Where a status emoji stood, while a key is normalized.
const EMOJI_MARK: char = '\u{E003}';

/// Punctuation that separates a status word from the item's title, as in
/// `Storage — done` or `DONE: Storage`.
const SEPARATORS: &[char] = &[
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

/// A file (or directory) that could not be scanned; the scan went on without it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanProblem {
    /// Path relative to the scanned root, `/`-separated (empty when unknown).
    pub path: String,
    /// What went wrong, e.g. `not valid UTF-8 at byte 123`.
    pub message: String,
}

impl fmt::Display for ScanProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// The result of [`scan`].
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// Every selected, readable Markdown file (including those without items),
    /// sorted by path.
    pub documents: Vec<Document>,
    /// Files that were selected but could not be read, and walk errors, sorted
    /// by path. These files are absent from `documents`.
    pub problems: Vec<ScanProblem>,
}

/// Which files [`scan`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkdownConfig {
    /// Globs over root-relative, `/`-separated paths; `*` does not cross `/`
    /// (so `*.md` is top level only and `**/*.md` is everywhere).
    /// Default: `["**/*.md"]`.
    pub globs: Vec<String>,
    /// Larger files are reported as problems instead of parsed. Default: 8 MiB.
    pub max_file_bytes: u64,
}

impl Default for MarkdownConfig {
    fn default() -> Self {
        Self {
            globs: vec!["**/*.md".to_owned()],
            max_file_bytes: 8 * 1024 * 1024,
        }
    }
}

/// Why [`scan`] could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// A glob in [`MarkdownConfig::globs`] does not parse.
    #[error("invalid Markdown glob {glob:?}: {}", source.kind())]
    Glob {
        /// The offending glob.
        glob: String,
        /// The parser's complaint.
        #[source]
        source: globset::Error,
    },
    /// The root does not exist, is not a directory, or cannot be listed.
    #[error("cannot read repository root {}: {source}", path.display())]
    Root {
        /// The root given to [`scan`].
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
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

/// Scans the Markdown files under `root` selected by `config`.
///
/// Honours `.gitignore` files at any depth, `.git/info/exclude` and the global
/// git excludes (even outside a git repository); looks at hidden files but
/// never enters `.git/`, `target/` or `.automation/` directories; does not
/// follow symlinks. Files that cannot be read, are not UTF-8 or exceed
/// [`MarkdownConfig::max_file_bytes`] become [`ScanProblem`]s.
///
/// # Errors
///
/// [`ScanError::Glob`] when a glob does not parse, [`ScanError::Root`] when
/// `root` is missing, not a directory or cannot be listed.
pub fn scan(root: &Path, config: &MarkdownConfig) -> Result<Scan, ScanError> {
    let globs = build_globs(&config.globs)?;
    let root_error = |source| ScanError::Root {
        path: root.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(root).map_err(root_error)?;
    if !meta.is_dir() {
        return Err(root_error(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            "not a directory",
        )));
    }
    std::fs::read_dir(root).map_err(root_error)?;

    let mut walker = WalkBuilder::new(root);
    walker
        .standard_filters(false)
        .git_ignore(true)
        .git_exclude(true)
        .git_global(true)
        .require_git(false)
        .follow_links(false)
        .filter_entry(|entry| {
            let skipped = entry.depth() > 0
                && entry.file_type().is_some_and(|t| t.is_dir())
                && matches!(
                    entry.file_name().to_str(),
                    Some(".git" | "target" | ".automation")
                );
            !skipped
        });

    let mut result = Scan::default();
    let mut buffer = Vec::new();
    for entry in walker.build() {
        let entry = match entry {
            Ok(entry) => entry,
            Err(error) => {
                let path = error_path(&error)
                    .map(|path| relative_path(root, path).unwrap_or_default())
                    .unwrap_or_default();
                problem(&mut result, path, error.to_string());
                continue;
            }
        };
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let Some(path) = relative_path(root, entry.path()) else {
            let shown = entry.path().to_string_lossy().into_owned();
            problem(&mut result, shown, "path is not valid UTF-8".to_owned());
            continue;
        };
        if !globs.is_match(&path) {
            continue;
        }
        match read_text(entry.path(), config.max_file_bytes, &mut buffer) {
            Ok(text) => {
                let items = parse(text);
                result.documents.push(Document { path, items });
            }
            Err(message) => problem(&mut result, path, message),
        }
    }
    result.documents.sort_by(|a, b| a.path.cmp(&b.path));
    result.problems.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(result)
}

fn build_globs(globs: &[String]) -> Result<GlobSet, ScanError> {
    let mut set = GlobSetBuilder::new();
    for glob in globs {
        let compiled = GlobBuilder::new(glob)
            .literal_separator(true)
            .build()
            .map_err(|source| ScanError::Glob {
                glob: glob.clone(),
                source,
            })?;
        set.add(compiled);
    }
    set.build().map_err(|source| ScanError::Glob {
        glob: globs.join(", "),
        source,
    })
}

fn problem(scan: &mut Scan, path: String, message: String) {
    tracing::debug!(%path, %message, "markdown scan problem");
    scan.problems.push(ScanProblem { path, message });
}

/// `path` relative to `root`, `/`-separated; `None` when not UTF-8 or not under
/// `root`.
fn relative_path(root: &Path, path: &Path) -> Option<String> {
    let relative = path.strip_prefix(root).ok()?;
    let mut out = String::new();
    for component in relative.components() {
        if !out.is_empty() {
            out.push('/');
        }
        out.push_str(component.as_os_str().to_str()?);
    }
    Some(out)
}

fn error_path(error: &ignore::Error) -> Option<&Path> {
    match error {
        ignore::Error::WithPath { path, .. } => Some(path),
        ignore::Error::Loop { child, .. } => Some(child),
        ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => {
            error_path(err)
        }
        ignore::Error::Partial(errors) => errors.iter().find_map(error_path),
        _ => None,
    }
}

/// Reads a file into `buffer` as UTF-8 text, or says why not.
fn read_text<'b>(path: &Path, max: u64, buffer: &'b mut Vec<u8>) -> Result<&'b str, String> {
    let too_big = |size: u64| format!("file is {size} bytes, more than the limit of {max} bytes");
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let size = file
        .metadata()
        .map_err(|e| format!("cannot read metadata: {e}"))?
        .len();
    if size > max {
        return Err(too_big(size));
    }
    buffer.clear();
    file.take(max.saturating_add(1))
        .read_to_end(buffer)
        .map_err(|e| format!("cannot read: {e}"))?;
    if buffer.len() as u64 > max {
        return Err(too_big(buffer.len() as u64));
    }
    std::str::from_utf8(buffer).map_err(|e| format!("not valid UTF-8 at byte {}", e.valid_up_to()))
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

/// The state a status emoji stands for.
fn emoji_state(c: char) -> Option<TaskState> {
    match c {
        '\u{2705}' | '\u{2714}' | '\u{2611}' => Some(TaskState::Done), // ✅ ✔ ☑
        '\u{23F3}' => Some(TaskState::InProgress),                     // ⏳
        '\u{1F51C}' => Some(TaskState::Planned),                       // 🔜
        _ => None,
    }
}

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
struct Found {
    offset: usize,
    marker: MarkerKind,
    state: TaskState,
    key: String,
}

/// Collects blocks from the event stream. Frames and heading buffers are
/// reused, so the only allocation per item is its key.
#[derive(Debug, Default)]
struct Blocks {
    frames: Vec<Frame>,
    depth: usize,
    nodes: Vec<Node>,
    code_depth: usize,
    /// Enclosing headings (level, normalized text); `headings[..heading_len]`
    /// are live, the rest are spare buffers.
    headings: Vec<(u8, String)>,
    heading_len: usize,
    scratch: String,
    found: Vec<Found>,
}

impl Blocks {
    fn top(&mut self) -> Option<&mut Frame> {
        let index = self.depth.checked_sub(1)?;
        self.frames.get_mut(index)
    }

    fn event(&mut self, event: Event<'_>, offset: usize) {
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
    fn close(&mut self) {
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

/// Sorts items into document order, numbers their lines and makes keys unique
/// per marker kind.
fn finish(text: &str, mut found: Vec<Found>) -> Vec<Item> {
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
fn heading_path(headings: &[(u8, String)]) -> String {
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
fn block_key(raw: &str, row: bool, scratch: &mut String) -> String {
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
fn write_key(raw: &str, row: bool, scratch: &mut String, out: &mut String, chars: &mut usize) {
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
fn strip_status_edges(text: &str) -> &str {
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
fn status_of_line(line: &str) -> Option<TaskState> {
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

    use TaskState::{Done, InProgress, Planned};

    fn items(text: &str) -> Vec<(String, MarkerKind, TaskState)> {
        parse(text)
            .into_iter()
            .map(|item| (item.key, item.marker, item.state))
            .collect()
    }

    fn item(key: &str, marker: MarkerKind, state: TaskState) -> (String, MarkerKind, TaskState) {
        (key.to_owned(), marker, state)
    }

    fn checkbox(key: &str, state: TaskState) -> (String, MarkerKind, TaskState) {
        item(key, MarkerKind::Checkbox, state)
    }

    fn emoji(key: &str, state: TaskState) -> (String, MarkerKind, TaskState) {
        item(key, MarkerKind::DoneEmoji, state)
    }

    fn status(key: &str, state: TaskState) -> (String, MarkerKind, TaskState) {
        item(key, MarkerKind::StatusLine, state)
    }

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

    fn write(root: &Path, path: &str, contents: &[u8]) {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, contents).expect("write");
    }

    #[test]
    fn scan_walks_the_repository() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        write(root, ".gitignore", b"ignored.md\nbuild/\n");
        write(root, "README.md", b"- [x] one\n- [ ] two\n");
        write(root, "ignored.md", b"- [x] hidden by gitignore\n");
        write(root, "build/out.md", b"- [x] ignored dir\n");
        write(root, "target/doc.md", b"- [x] in target\n");
        write(root, "crates/x/target/doc.md", b"- [x] nested target\n");
        write(root, ".automation/state.md", b"- [x] automation\n");
        write(root, ".git/notes.md", b"- [x] in .git\n");
        write(
            root,
            "docs/deep/plan.md",
            b"# Plan\n\nStatus: in progress\n",
        );
        write(root, "docs/nested/.gitignore", b"local.md\n");
        write(root, "docs/nested/local.md", b"- [x] nested ignore\n");
        write(root, "docs/empty.md", b"no items here\n");
        write(
            root,
            ".github/hidden.md",
            b"\xE2\x9C\x85 hidden files are scanned\n",
        );
        write(root, "notes.txt", b"- [x] not markdown\n");
        write(root, "docs/bad.md", b"- [x] ok\n\xff\xfe broken\n");

        let scan = scan(root, &MarkdownConfig::default()).expect("scan");
        let paths: Vec<&str> = scan.documents.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                ".github/hidden.md",
                "README.md",
                "docs/deep/plan.md",
                "docs/empty.md"
            ]
        );
        assert_eq!(scan.documents[1].count(TaskState::Done), 1);
        assert_eq!(scan.documents[1].count(TaskState::Planned), 1);
        assert_eq!(
            scan.documents[2].items,
            vec![Item {
                key: "Plan".to_owned(),
                marker: MarkerKind::StatusLine,
                state: TaskState::InProgress,
                line: 3,
            }]
        );
        assert!(scan.documents[3].items.is_empty());
        assert_eq!(scan.problems.len(), 1, "{:?}", scan.problems);
        assert_eq!(scan.problems[0].path, "docs/bad.md");
        assert_eq!(scan.problems[0].message, "not valid UTF-8 at byte 9");
        assert_eq!(
            scan.problems[0].to_string(),
            "docs/bad.md: not valid UTF-8 at byte 9"
        );
    }

    #[test]
    fn scan_honours_git_info_exclude() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        write(root, ".git/info/exclude", b"private.md\n");
        write(root, "private.md", b"- [x] excluded\n");
        write(root, "public.md", b"- [x] kept\n");
        let scan = scan(root, &MarkdownConfig::default()).expect("scan");
        let paths: Vec<&str> = scan.documents.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, vec!["public.md"]);
    }

    #[test]
    fn scan_top_level_glob_and_size_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        write(root, "PLAN.md", b"- [x] top\n");
        write(root, "big.md", &b"- [ ] x\n".repeat(100));
        write(root, "docs/nested.md", b"- [x] nested\n");
        let config = MarkdownConfig {
            globs: vec!["*.md".to_owned()],
            max_file_bytes: 100,
        };
        let scan = scan(root, &config).expect("scan");
        let paths: Vec<&str> = scan.documents.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, vec!["PLAN.md"]);
        assert_eq!(scan.problems.len(), 1);
        assert_eq!(scan.problems[0].path, "big.md");
        assert_eq!(
            scan.problems[0].message,
            "file is 800 bytes, more than the limit of 100 bytes"
        );
    }

    #[test]
    fn scan_rejects_bad_glob_and_missing_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = MarkdownConfig {
            globs: vec!["**/*.md".to_owned(), "docs/[unclosed".to_owned()],
            ..MarkdownConfig::default()
        };
        let error = scan(dir.path(), &config).expect_err("bad glob");
        assert!(
            matches!(&error, ScanError::Glob { glob, .. } if glob == "docs/[unclosed"),
            "{error:?}"
        );
        assert!(error.to_string().contains("docs/[unclosed"), "{error}");

        let missing = dir.path().join("missing");
        let error = scan(&missing, &MarkdownConfig::default()).expect_err("missing root");
        assert!(matches!(error, ScanError::Root { .. }), "{error:?}");

        write(dir.path(), "file.md", b"x");
        let error =
            scan(&dir.path().join("file.md"), &MarkdownConfig::default()).expect_err("file root");
        assert!(matches!(error, ScanError::Root { .. }), "{error:?}");
    }

    #[cfg(unix)]
    #[test]
    fn scan_reports_unreadable_files_and_skips_symlinks() {
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        write(root, "ok.md", b"- [x] fine\n");
        write(root, "locked.md", b"- [x] locked\n");
        let outside = tempfile::tempdir().expect("tempdir");
        write(outside.path(), "far.md", b"- [x] far\n");
        std::os::unix::fs::symlink(outside.path().join("far.md"), root.join("link.md"))
            .expect("symlink");
        let locked = root.join("locked.md");
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).expect("chmod");
        let readable_anyway = std::fs::read(&locked).is_ok(); // e.g. running as root

        let scan = scan(root, &MarkdownConfig::default()).expect("scan");
        let paths: Vec<&str> = scan.documents.iter().map(|d| d.path.as_str()).collect();
        if readable_anyway {
            assert_eq!(paths, vec!["locked.md", "ok.md"]);
        } else {
            assert_eq!(paths, vec!["ok.md"]);
            assert_eq!(scan.problems.len(), 1);
            assert_eq!(scan.problems[0].path, "locked.md");
            assert!(scan.problems[0].message.starts_with("cannot open"));
        }
    }
}
