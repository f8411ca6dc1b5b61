//! The upstream's server-sent events, parsed in bounded memory and time.
//!
//! Whatever the upstream sends:
//! * each byte is examined once (a line is not scanned again as more of it
//!   arrives), so the work is linear in the bytes;
//! * no event, and no line, may hold more than a limit: an upstream that
//!   never ends a line or an event gets [`SseError::TooLarge`], not
//!   unbounded memory;
//! * one poll examines at most [`POLL_BUDGET`] bytes, then yields: a flood
//!   neither holds a worker thread from other tasks nor keeps a caller's
//!   timeout from firing.
//!
//! Parsing follows the WHATWG rules for the parts the gateway uses: lines end
//! with LF, CR or CRLF; a leading byte order mark is dropped; `data` fields
//! are joined with LF and an event is dispatched at a blank line when it has
//! data; comments and the `event`, `id` and `retry` fields are skipped; an
//! event the stream's end cuts short is dropped.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;

/// The most bytes examined in one poll before yielding.
const POLL_BUDGET: usize = 64 * 1024;

/// The UTF-8 byte order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Why the event stream ended early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SseError<E> {
    /// The byte stream failed.
    #[error("the connection broke")]
    Transport(E),
    /// An event (its data so far plus the current line), or a comment line,
    /// grew over the limit, in bytes.
    #[error("an event or line over the {0}-byte limit (MAX_SSE_EVENT_BYTES)")]
    TooLarge(usize),
    /// An event's data is not UTF-8.
    #[error("an event whose data is not UTF-8")]
    NotUtf8,
}

/// The `data` of each event of a byte stream.
pub(crate) struct Events<S, B> {
    inner: S,
    /// The chunk being examined, and how much of it has been.
    chunk: Option<(B, usize)>,
    /// The current line so far; comments are counted, not kept.
    line: Vec<u8>,
    /// The current line's length so far.
    line_len: usize,
    /// The current line is a comment.
    comment: bool,
    /// The current event's data so far, each line followed by LF.
    data: Vec<u8>,
    /// The last byte examined ended a line with CR: an LF right after it
    /// belongs to that line end.
    after_cr: bool,
    /// No line has ended yet: the first may start with a byte order mark.
    first_line: bool,
    /// The most bytes an event or a line may hold.
    max_event: usize,
    /// Ended (by the stream's end or an error).
    done: bool,
}

impl<S, B> Events<S, B> {
    /// The events of `inner`, none over `max_event` bytes.
    pub(crate) fn new(inner: S, max_event: usize) -> Self {
        Self {
            inner,
            chunk: None,
            line: Vec::new(),
            line_len: 0,
            comment: false,
            data: Vec::new(),
            after_cr: false,
            first_line: true,
            max_event,
            done: false,
        }
    }

    /// Examines `bytes` up to the end of the first line that completes an
    /// event: how many bytes were examined, and the event.
    fn feed<E>(&mut self, bytes: &[u8]) -> Result<(usize, Option<String>), SseError<E>> {
        let mut at = 0;
        while at < bytes.len() {
            if std::mem::take(&mut self.after_cr) && bytes[at] == b'\n' {
                at += 1;
                continue;
            }
            let rest = &bytes[at..];
            match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
                None => {
                    self.extend_line(rest)?;
                    at = bytes.len();
                }
                Some(end) => {
                    self.extend_line(&rest[..end])?;
                    self.after_cr = rest[end] == b'\r';
                    at += end + 1;
                    if let Some(event) = self.end_line()? {
                        return Ok((at, Some(event)));
                    }
                }
            }
        }
        Ok((at, None))
    }

    fn extend_line<E>(&mut self, part: &[u8]) -> Result<(), SseError<E>> {
        if part.is_empty() {
            return Ok(());
        }
        if self.line_len == 0 {
            self.comment = part[0] == b':';
        }
        self.line_len += part.len();
        let held = if self.comment {
            self.line_len
        } else {
            self.line_len + self.data.len()
        };
        if held > self.max_event {
            return Err(SseError::TooLarge(self.max_event));
        }
        if !self.comment {
            self.line.extend_from_slice(part);
        }
        Ok(())
    }

    /// Interprets the line just ended; the event, if the line completed one.
    fn end_line<E>(&mut self) -> Result<Option<String>, SseError<E>> {
        let comment = std::mem::take(&mut self.comment);
        self.line_len = 0;
        let mut line = &self.line[..];
        if std::mem::take(&mut self.first_line) {
            line = line.strip_prefix(BOM).unwrap_or(line);
        }
        let event = if comment || line.first() == Some(&b':') {
            None
        } else if line.is_empty() {
            if self.data.is_empty() {
                None
            } else {
                let mut data = std::mem::take(&mut self.data);
                data.pop();
                Some(String::from_utf8(data).map_err(|_| SseError::NotUtf8)?)
            }
        } else {
            let (name, value) = match line.iter().position(|&b| b == b':') {
                Some(colon) => {
                    let value = &line[colon + 1..];
                    (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
                }
                None => (line, &[][..]),
            };
            if name == b"data" {
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
            }
            None
        };
        self.line.clear();
        Ok(event)
    }
}

impl<S, B, E> Stream for Events<S, B>
where
    S: Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]> + Unpin,
{
    type Item = Result<String, SseError<E>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let mut budget = POLL_BUDGET;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let Some((chunk, examined)) = this.chunk.take() else {
                match Pin::new(&mut this.inner).poll_next(cx) {
                    Poll::Ready(Some(Ok(chunk))) => this.chunk = Some((chunk, 0)),
                    Poll::Ready(Some(Err(e))) => {
                        this.done = true;
                        return Poll::Ready(Some(Err(SseError::Transport(e))));
                    }
                    Poll::Ready(None) => this.done = true,
                    Poll::Pending => return Poll::Pending,
                }
                continue;
            };
            if budget == 0 {
                this.chunk = Some((chunk, examined));
                // Yield, to be polled again at once: other tasks, and the
                // caller's timeout, get their turn in between.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let bytes = &chunk.as_ref()[examined..];
            let take = bytes.len().min(budget);
            match this.feed(&bytes[..take]) {
                Err(e) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Ok((used, event)) => {
                    budget -= used;
                    if examined + used < chunk.as_ref().len() {
                        this.chunk = Some((chunk, examined + used));
                    }
                    if let Some(event) = event {
                        return Poll::Ready(Some(Ok(event)));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use futures_util::StreamExt;
    use futures_util::stream::{self, Iter};

    use super::*;

    type Chunks = Iter<std::vec::IntoIter<Result<Vec<u8>, ()>>>;

    fn events(chunks: &[&[u8]], max: usize) -> Events<Chunks, Vec<u8>> {
        let chunks: Vec<Result<Vec<u8>, ()>> = chunks.iter().map(|c| Ok(c.to_vec())).collect();
        Events::new(stream::iter(chunks), max)
    }

    async fn all(chunks: &[&[u8]], max: usize) -> Vec<Result<String, String>> {
        events(chunks, max)
            .map(|e| e.map_err(|e| e.to_string()))
            .collect()
            .await
    }

    #[tokio::test]
    async fn fields_comments_and_line_ends() {
        let got = all(
            &[
                b"\xEF\xBB\xBF: hello\n\ndata: a\r\ndata:b\rdata\n",
                b"event: x\nid: 1\nretry: 5\n\n",
                b"data: {\"k\": 1}\r",
                b"\n\r\n: keep-alive\n\n\n\ndata: cut short",
            ],
            1024,
        )
        .await;
        assert_eq!(
            got,
            vec![Ok("a\nb\n".to_owned()), Ok("{\"k\": 1}".to_owned())]
        );
    }

    #[tokio::test]
    async fn events_split_anywhere_across_chunks() {
        let text = b"data: one\r\n\r\n: c\ndata: two\ndata:  three\n\n";
        for split in 0..text.len() {
            let got = all(&[&text[..split], &text[split..]], 1024).await;
            assert_eq!(
                got,
                vec![Ok("one".to_owned()), Ok("two\n three".to_owned())],
                "split at {split}"
            );
        }
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(all(&bytes, 1024).await.len(), 2);
    }

    #[tokio::test]
    async fn an_event_a_line_or_a_comment_over_the_limit_ends_the_stream() {
        let limit = "an event or line over the 16-byte limit (MAX_SSE_EVENT_BYTES)".to_owned();
        // Sixteen bytes of data fit; one more does not.
        assert_eq!(
            all(&[b"data: 0123456789\n\n"], 16).await,
            vec![Ok("0123456789".to_owned())]
        );
        for chunks in [
            &[&b"data: 0123456789ab"[..]][..],
            &[b"data: 01234567\ndata: 89\n\n"],
            &[b": 0123456789", b"abcdef"],
            &[b"data", b": 0123456789abcdef"],
        ] {
            let got = all(chunks, 16).await;
            assert_eq!(got, vec![Err(limit.clone())], "{chunks:?}");
        }
        // Short comments and keep-alives never add up.
        let flood = b": keep-alive\n\n".repeat(100);
        assert_eq!(
            all(&[&flood, b"data: x\n\n"], 16).await,
            vec![Ok("x".to_owned())]
        );
    }

    #[tokio::test]
    async fn bad_utf8_and_transport_errors_end_the_stream() {
        let got = all(&[b"data: \xff\n\n", b"data: later\n\n"], 64).await;
        assert_eq!(
            got,
            vec![Err("an event whose data is not UTF-8".to_owned())]
        );
        let chunks: Vec<Result<Vec<u8>, &str>> = vec![Ok(b"data: a\n\n".to_vec()), Err("reset")];
        let got: Vec<_> = Events::new(stream::iter(chunks), 64).collect().await;
        assert!(
            matches!(got[..], [Ok(_), Err(SseError::Transport("reset"))]),
            "{got:?}"
        );
    }

    #[test]
    fn a_flood_yields_between_budgets() {
        let flood = b": keep-alive\n\n".repeat(3 * POLL_BUDGET / 14 + 1);
        let mut events = events(&[&flood, b"data: after\n\n"], 64);
        let mut cx = Context::from_waker(Waker::noop());
        let mut pending = 0;
        let event = loop {
            match Pin::new(&mut events).poll_next(&mut cx) {
                Poll::Pending => pending += 1,
                Poll::Ready(event) => break event,
            }
        };
        assert_eq!(event.unwrap().unwrap(), "after");
        assert_eq!(pending, 3, "one yield per budget of bytes");
    }
}
