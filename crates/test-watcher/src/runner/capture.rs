//! Bounded capture of a run's output.
//!
//! When the output is larger than the limit, the head (up to half the
//! limit) and the tail (the rest) are kept and the middle is cut, noting how
//! many bytes went. The head holds what fails first (compile errors, the
//! first binary's failures); the tail holds the end of the run: the last
//! binaries' `test result:` lines and `failures:` lists, which the results
//! parser needs. Because `cargo test` prints one summary line per test
//! binary, summary lines of binaries in the cut middle would be lost and the
//! counts would come out short; so lines that look like libtest summaries
//! (`test result: ...`, `test x ... FAILED`) are rescued from the cut part,
//! up to an eighth of the limit, and placed where the cut was. The result
//! never exceeds the limit plus the length of the two marker lines.

/// Longest line the cut-part scanner will consider a summary line.
const MAX_SUMMARY_LINE: usize = 1024;

/// Output kept so far.
pub(super) struct Capture {
    limit: usize,
    head: Vec<u8>,
    /// Up to twice its budget between compactions, so cutting is amortised.
    tail: Vec<u8>,
    /// Summary lines rescued from the cut part, each ending in `\n`.
    rescued: Vec<u8>,
    rescued_lines: usize,
    /// The line being cut, until its `\n` (or its end, in the tail) arrives.
    cut_line: Vec<u8>,
    cut_line_too_long: bool,
    cut_bytes: u64,
}

impl Capture {
    /// An empty capture keeping at most `limit` bytes of output.
    pub(super) fn new(limit: usize) -> Self {
        Self {
            limit,
            head: Vec::new(),
            tail: Vec::new(),
            rescued: Vec::new(),
            rescued_lines: 0,
            cut_line: Vec::new(),
            cut_line_too_long: false,
            cut_bytes: 0,
        }
    }

    /// Appends output as it arrives.
    pub(super) fn push(&mut self, mut bytes: &[u8]) {
        let head_room = (self.limit / 2).saturating_sub(self.head.len());
        if head_room > 0 {
            let (to_head, rest) = bytes.split_at(head_room.min(bytes.len()));
            self.head.extend_from_slice(to_head);
            bytes = rest;
        }
        self.tail.extend_from_slice(bytes);
        if self.tail.len() > self.tail_budget().saturating_mul(2).max(64 * 1024) {
            self.compact();
        }
    }

    /// The kept output, with a marker where the middle was cut.
    pub(super) fn into_string(mut self) -> String {
        self.compact();
        let mut out = String::from_utf8_lossy(&self.head).into_owned();
        if self.cut_bytes > 0 {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&format!(
                "[test-watcher: {} bytes of output cut here; {} test summary lines from them follow]\n",
                self.cut_bytes, self.rescued_lines
            ));
            out.push_str(&String::from_utf8_lossy(&self.rescued));
            out.push_str("[test-watcher: end of the cut]\n");
        }
        out.push_str(&String::from_utf8_lossy(&self.tail));
        out
    }

    fn tail_budget(&self) -> usize {
        self.limit
            .saturating_sub(self.limit / 2)
            .saturating_sub(self.rescued.len())
    }

    /// Cuts the front of the tail down to its budget. Rescuing a line shrinks
    /// the budget, hence the loop; it ends because rescues are bounded.
    fn compact(&mut self) {
        while self.tail.len() > self.tail_budget() {
            let cut = self.tail.len() - self.tail_budget();
            let removed: Vec<u8> = self.tail.drain(..cut).collect();
            self.scan_cut(&removed);
        }
    }

    fn scan_cut(&mut self, bytes: &[u8]) {
        self.cut_bytes = self
            .cut_bytes
            .saturating_add(u64::try_from(bytes.len()).unwrap_or(u64::MAX));
        let mut pieces = bytes.split(|b| *b == b'\n').peekable();
        while let Some(piece) = pieces.next() {
            if self.cut_line.len() + piece.len() <= MAX_SUMMARY_LINE {
                self.cut_line.extend_from_slice(piece);
            } else {
                self.cut_line_too_long = true;
            }
            // The last piece has no `\n` after it (yet).
            if pieces.peek().is_some() {
                if !self.cut_line_too_long && is_summary(&self.cut_line) {
                    self.rescue();
                }
                self.cut_line.clear();
                self.cut_line_too_long = false;
            }
        }
    }

    fn rescue(&mut self) {
        let line = &self.cut_line;
        if self.rescued.len() + line.len() < self.limit / 8 {
            self.rescued.extend_from_slice(line);
            self.rescued.push(b'\n');
            self.rescued_lines += 1;
        }
    }
}

/// A libtest summary line (`test result: ...`) or a failed-test line
/// (`test some::name ... FAILED`), colours included.
fn is_summary(line: &[u8]) -> bool {
    contains(line, b"test result:")
        || (line.starts_with(b"test ") && contains(line, b" ... ") && contains(line, b"FAILED"))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(limit: usize, chunks: &[&[u8]]) -> String {
        let mut capture = Capture::new(limit);
        for chunk in chunks {
            capture.push(chunk);
        }
        capture.into_string()
    }

    #[test]
    fn output_within_the_limit_is_kept_whole() {
        assert_eq!(capture(10, &[b"hello", b" you"]), "hello you");
        assert_eq!(capture(10, &[b"0123456789"]), "0123456789");
        assert_eq!(capture(0, &[]), "");
    }

    #[test]
    fn the_middle_is_cut_and_counted() {
        let out = capture(10, &[b"01234", b"middle-part", b"56789"]);
        assert_eq!(
            out,
            "01234\n[test-watcher: 11 bytes of output cut here; 0 test summary lines from them follow]\n\
             [test-watcher: end of the cut]\n56789"
        );
    }

    #[test]
    fn a_large_stream_keeps_head_and_tail() {
        let mut capture = Capture::new(1000);
        let mut total = 0;
        for i in 0..100_000 {
            let line = format!("line {i}\n");
            total += line.len();
            capture.push(line.as_bytes());
        }
        let out = capture.into_string();
        assert!(out.starts_with("line 0\nline 1\n"));
        assert!(out.ends_with("line 99998\nline 99999\n"));
        assert!(out.contains(&format!("{} bytes of output cut here", total - 1000)));
        assert!(out.len() < 1000 + 150, "{}", out.len());
    }

    #[test]
    fn summary_lines_in_the_cut_part_are_rescued() {
        let mut capture = Capture::new(2000);
        let noise = "x".repeat(99) + "\n";
        for binary in 0..20 {
            for _ in 0..50 {
                capture.push(noise.as_bytes());
            }
            capture.push(format!("test case_{binary} ... \x1b[31mFAILED\x1b[0m\n").as_bytes());
            capture.push(
                format!(
                    "test result: FAILED. {binary} passed; 1 failed; 0 ignored; 0 measured; \
                     0 filtered out; finished in 0.01s\n"
                )
                .as_bytes(),
            );
        }
        let out = capture.into_string();
        assert!(out.len() < 2000 + 150, "{}", out.len());
        let counts = crate::results::parse_libtest(&out).expect("summaries kept");
        // The budget (2000 / 8 bytes) holds the first binaries' lines; the
        // tail holds the last binary's; what fits in neither is lost.
        assert!(counts.failed >= 2, "{counts:?}");
        assert!(out.contains("test result: FAILED. 0 passed"), "{out}");
        assert!(out.contains("test result: FAILED. 19 passed"), "{out}");
        assert!(counts.failed_tests.contains(&"case_0".to_owned()));
    }

    #[test]
    fn a_zero_limit_keeps_only_the_marker() {
        let input = b"test result: ok. 1 passed; 0 failed\n";
        let out = capture(0, &[input]);
        let marker = format!(
            "[test-watcher: {} bytes of output cut here; 0 test",
            input.len()
        );
        assert!(out.starts_with(&marker), "{out}");
        assert!(out.ends_with("[test-watcher: end of the cut]\n"), "{out}");
    }

    #[test]
    fn split_utf8_and_overlong_lines_do_not_panic() {
        let long = "é".repeat(5000);
        let out = capture(
            11,
            &[long.as_bytes(), b"\ntest result: ok. 1 passed; 0 failed\n"],
        );
        assert!(out.contains("cut here"));
    }
}
