//! Debouncing: changes gather until the tree has been quiet for the window
//! (default 100 ms), so an editor's 3–12 events per save, or a burst of
//! writes, make one batch. A steady stream of changes is released anyway
//! once the first change is `MAX_WINDOWS` windows old.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A busy tree still releases after this many windows.
const MAX_WINDOWS: u32 = 20;

/// A released batch of changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Distinct changed paths.
    pub paths: Vec<PathBuf>,
    /// First change to release.
    pub waited: Duration,
    /// Time spent processing the raw events of the batch.
    pub processing: Duration,
}

/// Gathers changes until they settle.
#[derive(Debug)]
pub struct Debouncer {
    window: Duration,
    paths: BTreeSet<PathBuf>,
    first: Option<Instant>,
    last: Option<Instant>,
    processing: Duration,
}

impl Debouncer {
    /// A debouncer with quiet window `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            paths: BTreeSet::new(),
            first: None,
            last: None,
            processing: Duration::ZERO,
        }
    }

    /// Adds changed paths seen at `now`, whose events took `processing`.
    pub fn add(
        &mut self,
        paths: impl IntoIterator<Item = PathBuf>,
        processing: Duration,
        now: Instant,
    ) {
        let before = self.paths.len();
        let mut seen = false;
        for path in paths {
            seen = true;
            self.paths.insert(path);
        }
        if !seen {
            return;
        }
        if self.paths.len() == before && self.first.is_some() {
            // Only repeats: still a change, the tree is not quiet yet.
            self.last = Some(now);
            self.processing += processing;
            return;
        }
        self.first.get_or_insert(now);
        self.last = Some(now);
        self.processing += processing;
    }

    /// Changed paths waiting.
    pub fn pending(&self) -> usize {
        self.paths.len()
    }

    /// When the batch is due, if one is gathering.
    pub fn due(&self) -> Option<Instant> {
        let (first, last) = (self.first?, self.last?);
        Some((last + self.window).min(first + self.window * MAX_WINDOWS))
    }

    /// The batch, if it is due at `now`.
    pub fn release(&mut self, now: Instant) -> Option<Batch> {
        if self.due()? > now {
            return None;
        }
        let first = self.first.take()?;
        self.last = None;
        Some(Batch {
            paths: std::mem::take(&mut self.paths).into_iter().collect(),
            waited: now.saturating_duration_since(first),
            processing: std::mem::take(&mut self.processing),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_millis(100);

    #[test]
    fn a_burst_inside_the_window_is_one_batch() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(W);
        assert_eq!(d.due(), None);
        d.add([PathBuf::from("a.rs")], Duration::from_micros(5), t0);
        d.add(
            [PathBuf::from("a.rs")],
            Duration::from_micros(5),
            t0 + Duration::from_millis(40),
        );
        d.add(
            [PathBuf::from("b.rs")],
            Duration::from_micros(5),
            t0 + Duration::from_millis(80),
        );
        assert_eq!(d.pending(), 2);
        assert!(
            d.release(t0 + Duration::from_millis(150)).is_none(),
            "not quiet yet"
        );
        let batch = d.release(t0 + Duration::from_millis(180)).unwrap();
        assert_eq!(
            batch.paths,
            vec![PathBuf::from("a.rs"), PathBuf::from("b.rs")]
        );
        assert_eq!(batch.waited, Duration::from_millis(180));
        assert_eq!(batch.processing, Duration::from_micros(15));
        assert_eq!(d.pending(), 0);
        assert_eq!(d.due(), None);
    }

    #[test]
    fn an_event_without_paths_starts_nothing() {
        let mut d = Debouncer::new(W);
        d.add(Vec::new(), Duration::from_micros(5), Instant::now());
        assert_eq!(d.due(), None);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn a_steady_stream_is_released_anyway() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(W);
        let mut now = t0;
        let mut released = None;
        for i in 0..100 {
            d.add([PathBuf::from(format!("f{i}"))], Duration::ZERO, now);
            now += Duration::from_millis(50);
            if let Some(batch) = d.release(now) {
                released = Some(batch);
                break;
            }
        }
        let batch = released.expect("released despite constant changes");
        assert!(batch.waited <= W * MAX_WINDOWS + Duration::from_millis(50));
    }
}
