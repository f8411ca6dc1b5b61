//! The gateway's answers in OpenAI's shapes: a `chat.completion` object, a
//! stream of `chat.completion.chunk` events ending in `data: [DONE]`, and
//! the model list. Usage carries DeepSeek's cache fields and OpenAI's
//! details both.

use automation_proto::v1::{ChatChunk, ChatResponse, ListModelsResponse, ModelInfo, Usage};
use axum::body::Bytes;
use serde_json::{Map, Value, json};

use crate::tools;

/// `usage`: OpenAI's counts, DeepSeek's cache hits and misses, and the
/// details OpenAI clients read (`cached_tokens`, `reasoning_tokens`).
fn usage_json(usage: &Usage) -> Value {
    let prompt = usage.input_cache_hit_tokens + usage.input_cache_miss_tokens;
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": usage.output_tokens,
        "total_tokens": prompt + usage.output_tokens,
        "prompt_cache_hit_tokens": usage.input_cache_hit_tokens,
        "prompt_cache_miss_tokens": usage.input_cache_miss_tokens,
        "prompt_tokens_details": { "cached_tokens": usage.input_cache_hit_tokens },
        "completion_tokens_details": { "reasoning_tokens": usage.reasoning_tokens },
    })
}

/// A finish reason; `null` when the upstream never sent one.
fn finish_json(reason: &str) -> Value {
    if reason.is_empty() {
        Value::Null
    } else {
        reason.into()
    }
}

/// A unary answer as a `chat.completion` object.
pub(crate) fn completion(response: &ChatResponse, created: u64) -> Value {
    let mut message = Map::new();
    message.insert("role".to_owned(), "assistant".into());
    // OpenAI's answer with only tool calls has no content.
    let content = if response.content.is_empty() && !response.tool_calls.is_empty() {
        Value::Null
    } else {
        response.content.clone().into()
    };
    message.insert("content".to_owned(), content);
    if !response.reasoning_content.is_empty() {
        message.insert(
            "reasoning_content".to_owned(),
            response.reasoning_content.clone().into(),
        );
    }
    if !response.tool_calls.is_empty() {
        message.insert(
            "tool_calls".to_owned(),
            response.tool_calls.iter().map(tools::call_json).collect(),
        );
    }
    json!({
        "id": response.id,
        "object": "chat.completion",
        "created": created,
        "model": response.model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_json(&response.finish_reason),
        }],
        "usage": response.usage.as_ref().map(usage_json),
    })
}

/// Turns a stream's chunks into server-sent events.
#[derive(Debug)]
pub(crate) struct Events {
    created: u64,
    include_usage: bool,
    /// The first delta carries the role.
    started: bool,
}

impl Events {
    /// Events for a stream that began at `created` (Unix seconds).
    pub(crate) fn new(created: u64, include_usage: bool) -> Self {
        Self {
            created,
            include_usage,
            started: false,
        }
    }

    fn chunk(&self, chunk: &ChatChunk, choices: Value) -> Value {
        json!({
            "id": chunk.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": chunk.model,
            "choices": choices,
        })
    }

    /// The events for one chunk: a delta, or for the last chunk (the one
    /// with usage) the finish reason, the usage when asked for, and
    /// `[DONE]`.
    pub(crate) fn render(&mut self, chunk: &ChatChunk) -> Bytes {
        let mut out = Vec::new();
        let Some(usage) = &chunk.usage else {
            let mut delta = Map::new();
            if !std::mem::replace(&mut self.started, true) {
                delta.insert("role".to_owned(), "assistant".into());
            }
            if !chunk.content.is_empty() {
                delta.insert("content".to_owned(), chunk.content.clone().into());
            }
            if !chunk.reasoning_content.is_empty() {
                delta.insert(
                    "reasoning_content".to_owned(),
                    chunk.reasoning_content.clone().into(),
                );
            }
            if !chunk.tool_calls.is_empty() {
                delta.insert(
                    "tool_calls".to_owned(),
                    chunk.tool_calls.iter().map(tools::delta_json).collect(),
                );
            }
            let choices =
                json!([{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": null }]);
            event(&mut out, &self.chunk(chunk, choices));
            return out.into();
        };
        let choices = json!([{
            "index": 0,
            "delta": {},
            "logprobs": null,
            "finish_reason": finish_json(&chunk.finish_reason),
        }]);
        event(&mut out, &self.chunk(chunk, choices));
        if self.include_usage {
            let mut last = self.chunk(chunk, json!([]));
            last["usage"] = usage_json(usage);
            event(&mut out, &last);
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        out.into()
    }
}

/// Appends `data: <json>\n\n`.
pub(crate) fn event(out: &mut Vec<u8>, value: &Value) {
    out.extend_from_slice(b"data: ");
    // Writing a `Value` to a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
    out.extend_from_slice(b"\n\n");
}

/// A model in OpenAI's shape.
pub(crate) fn model(info: &ModelInfo) -> Value {
    json!({ "id": info.id, "object": "model", "owned_by": info.owned_by })
}

/// The model list in OpenAI's shape.
pub(crate) fn models(list: &ListModelsResponse) -> Value {
    json!({ "object": "list", "data": list.models.iter().map(model).collect::<Vec<_>>() })
}

#[cfg(test)]
mod tests {
    use automation_proto::v1::{FunctionCall, ToolCall, ToolCallDelta};

    use super::*;

    fn usage() -> Usage {
        Usage {
            input_cache_hit_tokens: 60,
            input_cache_miss_tokens: 40,
            output_tokens: 20,
            reasoning_tokens: 5,
            cost_usd: Some(0.1),
        }
    }

    fn events(bytes: &[u8]) -> Vec<Value> {
        let text = std::str::from_utf8(bytes).unwrap();
        assert!(text.ends_with("\n\n"), "{text}");
        text.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let data = e.strip_prefix("data: ").unwrap();
                if data == "[DONE]" {
                    Value::String(data.to_owned())
                } else {
                    serde_json::from_str(data).unwrap()
                }
            })
            .collect()
    }

    #[test]
    fn a_completion_with_tool_calls_has_no_content() {
        let response = ChatResponse {
            id: "c".to_owned(),
            model: "deepseek-chat".to_owned(),
            finish_reason: "tool_calls".to_owned(),
            tool_calls: vec![ToolCall {
                id: "call_1".to_owned(),
                r#type: "function".to_owned(),
                function: Some(FunctionCall {
                    name: "f".to_owned(),
                    arguments: "{}".to_owned(),
                }),
            }],
            usage: Some(usage()),
            ..ChatResponse::default()
        };
        let json = completion(&response, 7);
        assert_eq!(json["created"], 7);
        assert_eq!(json["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(
            json["choices"][0]["message"]["tool_calls"][0]["id"],
            "call_1"
        );
        assert_eq!(
            json["usage"],
            json!({"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
                "prompt_cache_hit_tokens": 60, "prompt_cache_miss_tokens": 40,
                "prompt_tokens_details": {"cached_tokens": 60},
                "completion_tokens_details": {"reasoning_tokens": 5}})
        );
    }

    #[test]
    fn a_stream_starts_with_the_role_and_ends_with_usage_and_done() {
        let mut stream = Events::new(9, true);
        let first = events(&stream.render(&ChatChunk {
            content: "Hi".to_owned(),
            id: "c".to_owned(),
            ..ChatChunk::default()
        }));
        assert_eq!(
            first[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": "Hi"})
        );
        let piece = events(&stream.render(&ChatChunk {
            tool_calls: vec![ToolCallDelta {
                index: 0,
                function: Some(FunctionCall {
                    name: String::new(),
                    arguments: "{".to_owned(),
                }),
                ..ToolCallDelta::default()
            }],
            ..ChatChunk::default()
        }));
        assert_eq!(
            piece[0]["choices"][0]["delta"],
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]})
        );
        let last = events(&stream.render(&ChatChunk {
            finish_reason: "stop".to_owned(),
            usage: Some(usage()),
            ..ChatChunk::default()
        }));
        assert_eq!(last.len(), 3);
        assert_eq!(last[0]["choices"][0]["finish_reason"], "stop");
        assert_eq!(last[1]["choices"], json!([]));
        assert_eq!(last[1]["usage"]["prompt_cache_hit_tokens"], 60);
        assert_eq!(last[2], "[DONE]");
        let without_usage = events(&Events::new(9, false).render(&ChatChunk {
            usage: Some(usage()),
            ..ChatChunk::default()
        }));
        assert_eq!(without_usage.len(), 2);
        assert_eq!(without_usage[0]["choices"][0]["finish_reason"], Value::Null);
    }
}
