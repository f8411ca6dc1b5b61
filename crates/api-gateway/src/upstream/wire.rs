//! The upstream's JSON as the gateway reads it: token usage, the deltas of
//! a streamed answer (`parse_chunk`), the model list and the balance.

use automation_proto::v1::ToolCallDelta;
use serde_json::Value;

use super::failure::MAX_ERROR_TEXT;
use crate::redact::Redactor;
use crate::tools;

/// A model as listed by the upstream's `GET /models`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamModel {
    /// The model name, e.g. `deepseek-chat`.
    pub id: String,
    /// Its owner (`deepseek`); empty when not sent.
    pub owned_by: String,
}

/// The account balance from the upstream's `GET /user/balance`.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamBalance {
    /// The account can make API calls.
    pub is_available: bool,
    /// One entry per currency.
    pub balances: Vec<CurrencyBalance>,
}

/// The balance in one currency. DeepSeek sends the amounts as strings
/// (`"110.00"`); numbers are accepted too, a missing amount reads 0.
#[derive(Debug, Clone, PartialEq)]
pub struct CurrencyBalance {
    /// `CNY`, `USD` …
    pub currency: String,
    /// Granted plus topped-up.
    pub total: f64,
    /// Granted (bonus) balance.
    pub granted: f64,
    /// Paid balance.
    pub topped_up: f64,
}

/// Token counts of one answer. Cache hits, cache misses and output are
/// disjoint; reasoning tokens are part of output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    /// Prompt tokens served from the context cache.
    pub input_cache_hit: u64,
    /// Prompt tokens not in the cache.
    pub input_cache_miss: u64,
    /// Completion tokens, reasoning included.
    pub output: u64,
    /// Reasoning tokens (part of `output`).
    pub reasoning: u64,
}

impl TokenUsage {
    /// Reads an OpenAI/DeepSeek `usage` object: cache hits and misses from
    /// `prompt_cache_hit_tokens`/`prompt_cache_miss_tokens` when present, else
    /// from `prompt_tokens_details.cached_tokens` (misses are the rest of
    /// `prompt_tokens`), else every prompt token is a miss. Output is
    /// `completion_tokens`, reasoning `completion_tokens_details.reasoning_tokens`.
    pub fn from_json(usage: &Value) -> Self {
        let num = |v: Option<&Value>| v.and_then(Value::as_u64);
        let prompt = num(usage.get("prompt_tokens"));
        let hit = num(usage.get("prompt_cache_hit_tokens"));
        let miss = num(usage.get("prompt_cache_miss_tokens"));
        let cached = num(usage.pointer("/prompt_tokens_details/cached_tokens"));
        let prompt_total = prompt.unwrap_or(0);
        let (input_cache_hit, input_cache_miss) = match (hit, miss, cached) {
            (Some(hit), Some(miss), _) => (hit, miss),
            (Some(hit), None, _) => (hit, prompt_total.saturating_sub(hit)),
            (None, Some(miss), _) => (prompt_total.saturating_sub(miss), miss),
            (None, None, Some(cached)) => (cached, prompt_total.saturating_sub(cached)),
            (None, None, None) => (0, prompt_total),
        };
        let output = num(usage.get("completion_tokens")).unwrap_or(0);
        Self {
            input_cache_hit,
            input_cache_miss,
            output,
            // Part of the output: never more than it.
            reasoning: num(usage.pointer("/completion_tokens_details/reasoning_tokens"))
                .unwrap_or(0)
                .min(output),
        }
    }
}

/// One meaningful piece of a streamed answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delta {
    /// The upstream's completion id.
    pub id: String,
    /// The model that answers.
    pub model: String,
    /// Answer text added by this chunk.
    pub content: String,
    /// Reasoning text added by this chunk (reasoning models).
    pub reasoning_content: String,
    /// Set on the chunk that ends the answer.
    pub finish_reason: Option<String>,
    /// Set on the usage chunk (normally the last, with empty `choices`).
    pub usage: Option<TokenUsage>,
    /// Pieces of tool calls added by this chunk, in the upstream's order.
    pub tool_calls: Vec<ToolCallDelta>,
}

impl Delta {
    pub(super) fn is_meaningful(&self) -> bool {
        !self.content.is_empty()
            || !self.reasoning_content.is_empty()
            || !self.tool_calls.is_empty()
            || self.finish_reason.is_some()
            || self.usage.is_some()
    }
}

pub(super) enum ChunkError {
    /// The upstream sent an `error` object in the stream.
    Upstream(String),
    /// Not a valid chunk.
    Bad(String),
}

/// Parses one SSE `data` payload into a delta.
pub(super) fn parse_chunk(data: &str, redactor: &Redactor) -> Result<Delta, ChunkError> {
    let value: Value = serde_json::from_str(data).map_err(|e| {
        ChunkError::Bad(format!(
            "bad JSON chunk from the upstream ({e}): {}",
            redactor.cut(data, 200)
        ))
    })?;
    let Value::Object(chunk) = &value else {
        return Err(ChunkError::Bad(format!(
            "a chunk from the upstream is not an object: {}",
            redactor.cut(data, 200)
        )));
    };
    if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
        let text = error
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| error.to_string(), str::to_owned);
        return Err(ChunkError::Upstream(format!(
            "upstream error in the stream: {}",
            redactor.cut(&text, MAX_ERROR_TEXT)
        )));
    }
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
    let choice = chunk
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|choices| choices.first());
    let delta = choice.and_then(|c| c.get("delta"));
    Ok(Delta {
        id: text(chunk.get("id")),
        model: text(chunk.get("model")),
        content: text(delta.and_then(|d| d.get("content"))),
        reasoning_content: text(delta.and_then(|d| d.get("reasoning_content"))),
        finish_reason: choice
            .and_then(|c| c.get("finish_reason"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        usage: chunk
            .get("usage")
            .filter(|u| u.is_object())
            .map(TokenUsage::from_json),
        tool_calls: tools::parse_deltas(delta),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::upstream::test_support::KEY;

    #[test]
    fn usage_parsing_variants() {
        let plain = TokenUsage::from_json(&json!({"prompt_tokens": 7, "completion_tokens": 2}));
        assert_eq!(
            plain,
            TokenUsage {
                input_cache_hit: 0,
                input_cache_miss: 7,
                output: 2,
                reasoning: 0
            }
        );
        // DeepSeek's fields win over OpenAI's.
        let both = TokenUsage::from_json(&json!({"prompt_tokens": 10,
            "prompt_cache_hit_tokens": 4, "prompt_cache_miss_tokens": 6,
            "prompt_tokens_details": {"cached_tokens": 9}}));
        assert_eq!((both.input_cache_hit, both.input_cache_miss), (4, 6));
    }

    #[test]
    fn bad_json_chunk_is_refused() {
        assert!(parse_chunk("{nope", &Redactor::new(KEY)).is_err());
    }
}
