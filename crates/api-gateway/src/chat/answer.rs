//! A started call's answer: gathered whole for a unary call, or pumped to
//! its client chunk by chunk, the way every door hands it out.

use automation_proto::v1::{ApiStatus, ChatChunk, ChatResponse};
use tracing::Instrument;

use super::watched::Watched;
use super::{Admitted, Class, Refusal, map_failure};
use crate::tools;

/// The most text (content, reasoning and tool calls) one unary answer
/// gathers: what a gRPC client decodes by default (4 MiB), so the gateway
/// never holds more for one call than its client could take.
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

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

    /// The answer for a client, rendered by `render` (which turns a chunk,
    /// or the failure that ends the stream, into what the door sends): a
    /// chunk per upstream delta with text or tool calls, then a last chunk
    /// with the finish reason and the usage. The door's writer polls it
    /// directly. A client that goes away (the stream dropped) ends the call
    /// at once, reported as cancelled; one that stops reading is dropped
    /// after the upstream's idle limit, like an upstream that stops sending.
    /// The call counts as answered once the writer has taken the last chunk
    /// and asked for more.
    pub(crate) fn pump<T, R>(self, render: R) -> Watched<T>
    where
        T: Send + 'static,
        R: FnMut(Result<ChatChunk, Refusal>) -> T + Send + 'static,
    {
        let limit = self.call.gateway.upstream.config().idle_timeout;
        let pump = Pump {
            admitted: self,
            render,
            id: String::new(),
            model: String::new(),
            finish: String::new(),
            ended: None,
        };
        Watched::new(
            futures_util::stream::unfold(pump, |pump| {
                let span = pump.admitted.call.span.clone();
                pump.step().instrument(span)
            }),
            limit,
        )
    }
}

/// A streamed answer between two chunks.
struct Pump<R> {
    admitted: Admitted,
    render: R,
    id: String,
    model: String,
    finish: String,
    /// Set once the last item is out: whether the call ended well.
    ended: Option<bool>,
}

impl<R> Pump<R> {
    /// The next item, and the pump for the one after it.
    async fn step<T>(mut self) -> Option<(T, Self)>
    where
        R: FnMut(Result<ChatChunk, Refusal>) -> T,
    {
        match self.ended {
            Some(true) => {
                // The writer took the last chunk and asks for more.
                self.admitted.call.finish(ApiStatus::Ok, "");
                return None;
            }
            Some(false) => return None,
            None => {}
        }
        let call = &mut self.admitted.call;
        loop {
            match self.admitted.stream.next().await {
                Ok(Some(delta)) => {
                    if self.id.is_empty() {
                        self.id.clone_from(&delta.id);
                        self.model.clone_from(&delta.model);
                    }
                    if let Some(reason) = delta.finish_reason {
                        self.finish = reason;
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
                        id: self.id.clone(),
                        model: self.model.clone(),
                        ..ChatChunk::default()
                    };
                    let item = (self.render)(Ok(chunk));
                    return Some((item, self));
                }
                Ok(None) => {
                    let last = ChatChunk {
                        finish_reason: std::mem::take(&mut self.finish),
                        usage: Some(call.usage()),
                        id: std::mem::take(&mut self.id),
                        model: std::mem::take(&mut self.model),
                        ..ChatChunk::default()
                    };
                    self.ended = Some(true);
                    let item = (self.render)(Ok(last));
                    return Some((item, self));
                }
                Err(failure) => {
                    let refusal = call.refuse(map_failure(&failure).0);
                    self.ended = Some(false);
                    let item = (self.render)(Err(refusal));
                    return Some((item, self));
                }
            }
        }
    }
}
