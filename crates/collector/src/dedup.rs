//! Replay detection per reporter incarnation: a sliding window over the
//! sequences applied recently, the way IPsec and DTLS reject replays.

/// Sequences remembered below the highest one seen.
pub const WINDOW: u64 = 1024;
const WORDS: usize = (WINDOW / 64) as usize;

/// The sequences one incarnation has had applied.
#[derive(Debug, Clone, Default)]
pub struct Window {
    highest: u64,
    /// Bit `i` set: sequence `highest - i` was applied.
    seen: [u64; WORDS],
}

impl Window {
    /// Marks `sequence` (≥ 1) as applied; `false` if it was applied before.
    /// A sequence older than the window cannot be told apart from a replay
    /// and is refused too: counting twice is the worse mistake.
    pub fn check_and_mark(&mut self, sequence: u64) -> bool {
        if sequence > self.highest {
            self.shift(sequence - self.highest);
            self.highest = sequence;
            self.seen[0] |= 1;
            return true;
        }
        let age = self.highest - sequence;
        if age >= WINDOW {
            return false;
        }
        let (word, bit) = ((age / 64) as usize, age % 64);
        if self.seen[word] & (1 << bit) != 0 {
            return false;
        }
        self.seen[word] |= 1 << bit;
        true
    }

    fn shift(&mut self, by: u64) {
        if by >= WINDOW {
            self.seen = [0; WORDS];
            return;
        }
        let (words, bits) = ((by / 64) as usize, (by % 64) as u32);
        for i in (0..WORDS).rev() {
            let from = i.checked_sub(words);
            let hi = from.map_or(0, |j| self.seen[j] << bits);
            let lo = match from.and_then(|j| j.checked_sub(1)) {
                Some(k) if bits > 0 => self.seen[k] >> (64 - bits),
                _ => 0,
            };
            self.seen[i] = hi | lo;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_sequences_apply_once() {
        let mut w = Window::default();
        for s in 1..=5000 {
            assert!(w.check_and_mark(s), "{s}");
            assert!(!w.check_and_mark(s), "{s} replayed");
        }
    }

    #[test]
    fn late_and_replayed_sequences() {
        let mut w = Window::default();
        assert!(w.check_and_mark(10));
        assert!(w.check_and_mark(3));
        assert!(!w.check_and_mark(3));
        assert!(w.check_and_mark(200));
        assert!(w.check_and_mark(100));
        assert!(!w.check_and_mark(10));
        assert!(w.check_and_mark(9));
        assert!(w.check_and_mark(2000));
        // 9 fell out of the window: refused rather than risk counting twice.
        assert!(!w.check_and_mark(500));
        assert!(w.check_and_mark(1999));
        assert!(!w.check_and_mark(1999));
        assert!(!w.check_and_mark(2000));
    }

    #[test]
    fn shifts_across_words() {
        let mut w = Window::default();
        assert!(w.check_and_mark(1));
        assert!(w.check_and_mark(66));
        assert!(w.check_and_mark(130));
        assert!(!w.check_and_mark(1));
        assert!(!w.check_and_mark(66));
        assert!(w.check_and_mark(65));
        assert!(w.check_and_mark(2));
    }
}
