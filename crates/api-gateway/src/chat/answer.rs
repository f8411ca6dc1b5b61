//! A started call's answer: gathered whole for a unary call, or pumped to
//! its client chunk by chunk, the way every door hands it out.

use std::time::Duration;

use automation_proto::v1::{ApiStatus, ChatChunk, ChatResponse};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::{Admitted, Class, Refusal, map_failure};
use crate::tools;

/// The most text (content, reasoning and tool calls) one unary answer
/// gathers: what a gRPC client decodes by default (4 MiB), so the gateway
/// never holds more for one call than its client could take.
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// Chunks waiting for a slow client, per stream.
const STREAM_BUFFER: usize = 32;

impl Admitted {
    /// The whole answer, its tool calls gathered by index; refused once it
    /// grows over [`MAX_ANSWER_BYTES`].
    pub(crate) async fn answer(self) -> Result<ChatResponse, Refusal> {
        let Self {
            mut call,
            slot,
            mut stream,
        } = self;
        let mut response = ChatResponse {
            attempts: call.attempts(),
            ..ChatResponse::default()
        };
        let mut calls = tools::Gathered::default();
        let mut size = 0;
        let outcome = loop {
            match stream.next().await {
                Ok(Some(delta)) => {
                    if response.id.is_empty() {
                        response.id = delta.id;
                    }
                    if response.model.is_empty() {
                        response.model = delta.model;
                    }
                    size += delta.content.len()
                        + delta.reasoning_content.len()
                        + delta
                            .tool_calls
                            .iter()
                            .map(tools::delta_size)
                            .sum::<usize>();
                    if size > MAX_ANSWER_BYTES {
                        break Err(Refusal {
                            class: Class::AnswerTooLarge,
                            message: format!(
                                "the answer is over {MAX_ANSWER_BYTES} bytes, the most one unary \
                                 answer gathers; stream it (StreamChatCompletion, or \"stream\": true) \
                                 or lower max_tokens"
                            ),
                            retry_after: None,
                            status: ApiStatus::Invalid,
                            kind: "answer_too_large",
                        });
                    }
                    response.content.push_str(&delta.content);
                    response
                        .reasoning_content
                        .push_str(&delta.reasoning_content);
                    for piece in delta.tool_calls {
                        calls.add(piece);
                    }
                    if let Some(reason) = delta.finish_reason {
                        response.finish_reason = reason;
                    }
                    if let Some(usage) = delta.usage {
                        call.usage = usage;
                    }
                }
                Ok(None) => break Ok(()),
                Err(failure) => break Err(map_failure(&failure).0),
            }
        };
        drop(slot);
        call.holds_slot = false;
        match outcome {
            Ok(()) => {
                response.tool_calls = calls.into_calls();
                response.usage = Some(call.usage());
                call.finish(ApiStatus::Ok, "");
                Ok(response)
            }
            Err(refusal) => Err(call.refuse(refusal)),
        }
    }

    /// Pumps the answer to a client through `render` (which turns a chunk,
    /// or the failure that ends the stream, into what the door sends): a
    /// chunk per upstream delta with text or tool calls, then a last chunk
    /// with the finish reason and the usage. A client that goes away ends
    /// the call at once (reported as cancelled); one that stops reading is
    /// dropped after the upstream's idle limit, like an upstream that stops
    /// sending.
    pub(crate) fn pump<T, R>(self, mut render: R) -> mpsc::Receiver<T>
    where
        T: Send + 'static,
        R: FnMut(Result<ChatChunk, Refusal>) -> T + Send + 'static,
    {
        let Self {
            mut call,
            slot,
            mut stream,
        } = self;
        let send_limit = call.gateway.upstream.config().idle_timeout;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let span = call.span.clone();
        tokio::spawn(
            async move {
                let _slot = slot;
                let send = |item: T| sent_within(&tx, item, send_limit);
                let (mut id, mut model, mut finish) = (String::new(), String::new(), String::new());
                loop {
                    // A client that goes away ends the call at once (reported
                    // as cancelled when `call` drops), not at the next chunk.
                    let next = tokio::select! {
                        biased;
                        () = tx.closed() => return,
                        next = stream.next() => next,
                    };
                    match next {
                        Ok(Some(delta)) => {
                            if id.is_empty() {
                                id.clone_from(&delta.id);
                                model.clone_from(&delta.model);
                            }
                            if let Some(reason) = delta.finish_reason {
                                finish = reason;
                            }
                            if let Some(usage) = delta.usage {
                                call.usage = usage;
                            }
                            if delta.content.is_empty()
                                && delta.reasoning_content.is_empty()
                                && delta.tool_calls.is_empty()
                            {
                                continue;
                            }
                            let chunk = ChatChunk {
                                content: delta.content,
                                reasoning_content: delta.reasoning_content,
                                tool_calls: delta.tool_calls,
                                id: id.clone(),
                                model: model.clone(),
                                ..ChatChunk::default()
                            };
                            if !send(render(Ok(chunk))).await {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(failure) => {
                            let refusal = call.refuse(map_failure(&failure).0);
                            let _ = send(render(Err(refusal))).await;
                            return;
                        }
                    }
                }
                let last = ChatChunk {
                    finish_reason: finish,
                    usage: Some(call.usage()),
                    id,
                    model,
                    ..ChatChunk::default()
                };
                if send(render(Ok(last))).await {
                    call.finish(ApiStatus::Ok, "");
                }
            }
            .instrument(span),
        );
        rx
    }
}

/// Sends `item` unless the client is gone or has not made room within `limit`.
async fn sent_within<T>(tx: &mpsc::Sender<T>, item: T, limit: Duration) -> bool {
    matches!(tokio::time::timeout(limit, tx.send(item)).await, Ok(Ok(())))
}
