//! What the markers module's tests share: the items of a text as
//! `(key, marker, state)` triples, and shorthands for each marker kind.

use super::parse;
use crate::model::{MarkerKind, TaskState};

pub(super) fn items(text: &str) -> Vec<(String, MarkerKind, TaskState)> {
    parse(text)
        .into_iter()
        .map(|item| (item.key, item.marker, item.state))
        .collect()
}

pub(super) fn item(
    key: &str,
    marker: MarkerKind,
    state: TaskState,
) -> (String, MarkerKind, TaskState) {
    (key.to_owned(), marker, state)
}

pub(super) fn checkbox(key: &str, state: TaskState) -> (String, MarkerKind, TaskState) {
    item(key, MarkerKind::Checkbox, state)
}

pub(super) fn emoji(key: &str, state: TaskState) -> (String, MarkerKind, TaskState) {
    item(key, MarkerKind::DoneEmoji, state)
}

pub(super) fn status(key: &str, state: TaskState) -> (String, MarkerKind, TaskState) {
    item(key, MarkerKind::StatusLine, state)
}
