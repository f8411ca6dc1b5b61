//! The facts an audit deals in, shared by the analyses, the store and the API.

/// Where a plan item stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TaskState {
    /// `- [x]`, ✅, `Status: COMPLETE`.
    Done,
    /// ⏳, `Status: IN PROGRESS`.
    InProgress,
    /// `- [ ]`, 🔜, `Status: PLANNED`.
    Planned,
}

impl TaskState {
    /// The stored and labelled name: `done`, `in_progress`, `planned`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::InProgress => "in_progress",
            Self::Planned => "planned",
        }
    }

    /// The inverse of [`TaskState::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "done" => Some(Self::Done),
            "in_progress" => Some(Self::InProgress),
            "planned" => Some(Self::Planned),
            _ => None,
        }
    }
}

/// How a plan item is marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MarkerKind {
    /// A task-list item, `- [x]` / `- [ ]`.
    Checkbox,
    /// A status emoji: ✅ ⏳ 🔜.
    DoneEmoji,
    /// A `Status: COMPLETE`-style line.
    StatusLine,
}

impl MarkerKind {
    /// The stored and labelled name: `checkbox`, `done_emoji`, `status_line`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Checkbox => "checkbox",
            Self::DoneEmoji => "done_emoji",
            Self::StatusLine => "status_line",
        }
    }

    /// The inverse of [`MarkerKind::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "checkbox" => Some(Self::Checkbox),
            "done_emoji" => Some(Self::DoneEmoji),
            "status_line" => Some(Self::StatusLine),
            _ => None,
        }
    }
}
