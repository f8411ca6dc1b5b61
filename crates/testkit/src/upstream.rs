//! A scriptable fake DeepSeek server, for tests and benchmarks.
//!
//! [`FakeUpstream`] serves `POST /chat/completions`, `GET /models` and
//! `GET /user/balance` on `127.0.0.1` with a random port. Chat answers come
//! from a FIFO script of [`Reply`]s, then from a default reply (a short
//! streamed "Hello!" with usage). Streams are rendered to bytes once per reply
//! and the default reply is rendered once, so the server stays cheap under
//! many concurrent requests.
//!
//! A request whose body does not ask for `"stream": true` gets a
//! [`Reply::Stream`] aggregated into one `chat.completion` JSON object (after
//! the script's total pause), so the fake also works as a direct, unary
//! target.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The completion id of every fake chunk.
pub const FAKE_ID: &str = "chatcmpl-fake";
/// The model named by every fake chunk.
pub const FAKE_MODEL: &str = "deepseek-chat";
/// The `created` time of every fake chunk.
const FAKE_CREATED: u64 = 1_700_000_000;

/// One scripted answer to `POST /chat/completions`.
#[derive(Debug, Clone)]
pub enum Reply {
    /// `200 text/event-stream` with these items.
    Stream(Vec<Sse>),
    /// An HTTP error (or any status) with an optional `Retry-After` and a body
    /// (sent as `application/json` when it starts with `{`).
    Status {
        /// The HTTP status.
        status: u16,
        /// The `Retry-After` header value, e.g. `"1"`.
        retry_after: Option<String>,
        /// The body.
        body: String,
    },
    /// Any status with this `Content-Type` (sent as is, so it may be
    /// nonsense) and body.
    Body {
        /// The HTTP status.
        status: u16,
        /// The `Content-Type` header value.
        content_type: String,
        /// The body.
        body: String,
    },
    /// Accept the request and never answer (until the fake stops).
    Hang,
}

/// One item of a scripted event stream.
#[derive(Debug, Clone)]
pub enum Sse {
    /// `data: <json>\n\n`.
    Data(Value),
    /// `data: [DONE]\n\n`.
    Done,
    /// `: keep-alive\n\n`.
    KeepAlive,
    /// `\n`.
    Blank,
    /// Wait before sending the next item.
    Pause(Duration),
    /// End abruptly: the connection is cut without finishing the body.
    Close,
    /// These bytes as they are (say, `data: ` without the rest of its line).
    Raw(String),
    /// These bytes over and over, as fast as the reader takes them, until
    /// it goes away or the fake stops: a line or a keep-alive flood that
    /// never ends.
    Endless(String),
}

/// A `/chat/completions` request as received.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// The `Authorization` header value, e.g. `Bearer sk-…`; empty when
    /// absent.
    pub authorization: String,
    /// The W3C `traceparent` and `tracestate` header values; empty when
    /// absent.
    pub traceparent: String,
    pub tracestate: String,
    /// The JSON body (`null` when it did not parse).
    pub body: Value,
}

/// A content delta chunk: `{id, object: "chat.completion.chunk", created,
/// model: "deepseek-chat", choices: [{index: 0, delta: {content},
/// finish_reason: null}]}`.
pub fn chunk(content: &str) -> Value {
    chunk_with(json!({ "content": content }), Value::Null)
}

/// A reasoning delta chunk (`delta.reasoning_content`, `content: null`).
pub fn reasoning_chunk(text: &str) -> Value {
    chunk_with(
        json!({ "content": null, "reasoning_content": text }),
        Value::Null,
    )
}

/// The chunk that ends the answer: empty content and `finish_reason`.
pub fn finish_chunk(reason: &str) -> Value {
    chunk_with(json!({ "content": "" }), Value::String(reason.to_owned()))
}

/// The usage chunk sent last with `stream_options.include_usage`: empty
/// `choices` and DeepSeek's usage fields (OpenAI's `cached_tokens` too).
pub fn usage_chunk(hit: u64, miss: u64, output: u64, reasoning: u64) -> Value {
    json!({
        "id": FAKE_ID,
        "object": "chat.completion.chunk",
        "created": FAKE_CREATED,
        "model": FAKE_MODEL,
        "choices": [],
        "usage": usage_json(hit, miss, output, reasoning),
    })
}

/// A whole streamed answer: a role chunk, the text in word-sized content
/// chunks, finish `stop`, usage (no reasoning tokens) and `[DONE]`.
pub fn answer(text: &str, hit: u64, miss: u64, output: u64) -> Reply {
    let mut items = vec![Sse::Data(chunk_with(
        json!({ "role": "assistant", "content": "" }),
        Value::Null,
    ))];
    items.extend(text.split_inclusive(' ').map(|word| Sse::Data(chunk(word))));
    items.push(Sse::Data(finish_chunk("stop")));
    items.push(Sse::Data(usage_chunk(hit, miss, output, 0)));
    items.push(Sse::Done);
    Reply::Stream(items)
}

/// A piece of tool call `index`: `delta.tool_calls[0]` with the call's
/// `id`, `type` and function `name` when `start` gives them (`(id, name)`,
/// the first piece of a call), and a piece of its `arguments`.
pub fn tool_call_chunk(index: u32, start: Option<(&str, &str)>, arguments: &str) -> Value {
    let mut call = json!({ "index": index, "function": { "arguments": arguments } });
    if let Some((id, name)) = start {
        call["id"] = id.into();
        call["type"] = "function".into();
        call["function"]["name"] = name.into();
    }
    chunk_with(json!({ "tool_calls": [call] }), Value::Null)
}

/// A whole streamed answer that calls tools, the way DeepSeek streams one:
/// a role chunk, for each `(id, name, argument pieces)` a piece naming the
/// call and then its arguments piece by piece, finish `tool_calls`, usage
/// and `[DONE]`.
pub fn tool_calls_answer(
    calls: &[(&str, &str, &[&str])],
    hit: u64,
    miss: u64,
    output: u64,
) -> Reply {
    let mut items = vec![Sse::Data(chunk_with(
        json!({ "role": "assistant", "content": null }),
        Value::Null,
    ))];
    for (index, (id, name, pieces)) in (0u32..).zip(calls) {
        items.push(Sse::Data(tool_call_chunk(index, Some((id, name)), "")));
        items.extend(
            pieces
                .iter()
                .map(|piece| Sse::Data(tool_call_chunk(index, None, piece))),
        );
    }
    items.push(Sse::Data(finish_chunk("tool_calls")));
    items.push(Sse::Data(usage_chunk(hit, miss, output, 0)));
    items.push(Sse::Done);
    Reply::Stream(items)
}

fn chunk_with(delta: Value, finish_reason: Value) -> Value {
    json!({
        "id": FAKE_ID,
        "object": "chat.completion.chunk",
        "created": FAKE_CREATED,
        "model": FAKE_MODEL,
        "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason }],
    })
}

fn usage_json(hit: u64, miss: u64, output: u64, reasoning: u64) -> Value {
    json!({
        "prompt_tokens": hit + miss,
        "completion_tokens": output,
        "total_tokens": hit + miss + output,
        "prompt_tokens_details": { "cached_tokens": hit },
        "prompt_cache_hit_tokens": hit,
        "prompt_cache_miss_tokens": miss,
        "completion_tokens_details": { "reasoning_tokens": reasoning },
    })
}

/// A reply rendered for serving.
enum Prepared {
    Stream {
        segments: Arc<[Segment]>,
        /// The stream as one `chat.completion` object, for unary requests.
        aggregate: Bytes,
        /// The stream's pauses, summed.
        pause: Duration,
    },
    Status {
        status: StatusCode,
        retry_after: Option<HeaderValue>,
        body: Bytes,
        json: bool,
    },
    Body {
        status: StatusCode,
        content_type: Option<HeaderValue>,
        body: Bytes,
    },
    Hang,
}

enum Segment {
    Bytes(Bytes),
    Pause(Duration),
    Close,
    Endless(Bytes),
}

/// The least an [`Sse::Endless`] pattern is repeated to per write, so a
/// flood is not slowed by tiny writes.
const FLOOD_CHUNK: usize = 64 * 1024;

fn prepare(reply: Reply) -> Prepared {
    match reply {
        Reply::Stream(items) => prepare_stream(&items),
        Reply::Status {
            status,
            retry_after,
            body,
        } => Prepared::Status {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            retry_after: retry_after.and_then(|v| HeaderValue::from_str(&v).ok()),
            json: body.trim_start().starts_with('{'),
            body: Bytes::from(body),
        },
        Reply::Body {
            status,
            content_type,
            body,
        } => Prepared::Body {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            content_type: HeaderValue::from_str(&content_type).ok(),
            body: Bytes::from(body),
        },
        Reply::Hang => Prepared::Hang,
    }
}

fn prepare_stream(items: &[Sse]) -> Prepared {
    let mut segments = Vec::new();
    let mut buffer = Vec::new();
    let mut pause = Duration::ZERO;
    let mut content = String::new();
    let mut reasoning = String::new();
    let mut finish = Value::Null;
    let mut usage = Value::Null;
    let mut tool_calls = ToolCalls::default();
    let flush = |buffer: &mut Vec<u8>, segments: &mut Vec<Segment>| {
        if !buffer.is_empty() {
            segments.push(Segment::Bytes(Bytes::from(std::mem::take(buffer))));
        }
    };
    for item in items {
        match item {
            Sse::Data(value) => {
                buffer.extend_from_slice(b"data: ");
                buffer.extend_from_slice(value.to_string().as_bytes());
                buffer.extend_from_slice(b"\n\n");
                if let Some(choice) = value.pointer("/choices/0") {
                    let text = |ptr: &str| choice.pointer(ptr).and_then(Value::as_str);
                    content.push_str(text("/delta/content").unwrap_or_default());
                    reasoning.push_str(text("/delta/reasoning_content").unwrap_or_default());
                    tool_calls.add(choice.get("delta"));
                    if let Some(reason) = choice.get("finish_reason").filter(|r| !r.is_null()) {
                        finish = reason.clone();
                    }
                }
                if let Some(u) = value.get("usage").filter(|u| u.is_object()) {
                    usage = u.clone();
                }
            }
            Sse::Done => buffer.extend_from_slice(b"data: [DONE]\n\n"),
            Sse::KeepAlive => buffer.extend_from_slice(b": keep-alive\n\n"),
            Sse::Blank => buffer.push(b'\n'),
            Sse::Pause(d) => {
                flush(&mut buffer, &mut segments);
                segments.push(Segment::Pause(*d));
                pause += *d;
            }
            Sse::Close => {
                flush(&mut buffer, &mut segments);
                segments.push(Segment::Close);
            }
            Sse::Raw(text) => buffer.extend_from_slice(text.as_bytes()),
            Sse::Endless(pattern) => {
                flush(&mut buffer, &mut segments);
                let times = FLOOD_CHUNK.div_ceil(pattern.len().max(1));
                segments.push(Segment::Endless(Bytes::from(pattern.repeat(times))));
            }
        }
    }
    flush(&mut buffer, &mut segments);
    let mut message = json!({ "role": "assistant", "content": content });
    if !reasoning.is_empty() {
        message["reasoning_content"] = Value::String(reasoning);
    }
    let tool_calls = tool_calls.into_json();
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    let aggregate = json!({
        "id": FAKE_ID,
        "object": "chat.completion",
        "created": FAKE_CREATED,
        "model": FAKE_MODEL,
        "choices": [{ "index": 0, "message": message, "logprobs": null, "finish_reason": finish }],
        "usage": usage,
    });
    Prepared::Stream {
        segments: segments.into(),
        aggregate: Bytes::from(aggregate.to_string()),
        pause,
    }
}

struct Shared {
    inner: Mutex<Inner>,
    /// Cancelled when the fake stops: ends hanging replies and streams.
    stop: CancellationToken,
    chat_requests: AtomicU64,
    /// Connections accepted so far.
    connections: AtomicU64,
}

struct Inner {
    script: VecDeque<Reply>,
    default: Arc<Prepared>,
    requests: Vec<Recorded>,
    record: bool,
    balance: Value,
    models: Value,
    models_status: Option<StatusCode>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A fake DeepSeek API on `127.0.0.1`, stopped by [`FakeUpstream::stop`] (or,
/// less tidily, when dropped).
pub struct FakeUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FakeUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeUpstream")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeUpstream {
    /// Starts the server on `127.0.0.1:0`.
    ///
    /// # Panics
    ///
    /// When no local port can be bound.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake upstream on 127.0.0.1");
        let addr = listener
            .local_addr()
            .expect("the fake upstream's local address");
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                script: VecDeque::new(),
                default: Arc::new(prepare(answer("Hello!", 10, 5, 3))),
                requests: Vec::new(),
                record: true,
                balance: json!({
                    "is_available": true,
                    "balance_infos": [{
                        "currency": "CNY",
                        "total_balance": "110.00",
                        "granted_balance": "10.00",
                        "topped_up_balance": "100.00",
                    }],
                }),
                models: json!({
                    "object": "list",
                    "data": [
                        { "id": "deepseek-chat", "object": "model", "owned_by": "deepseek" },
                        { "id": "deepseek-reasoner", "object": "model", "owned_by": "deepseek" },
                    ],
                }),
                models_status: None,
            }),
            stop: CancellationToken::new(),
            chat_requests: AtomicU64::new(0),
            connections: AtomicU64::new(0),
        });
        let router = Router::new()
            .route("/chat/completions", post(chat))
            .route("/models", get(models))
            .route("/user/balance", get(balance))
            .with_state(shared.clone());
        let stop = shared.stop.clone().cancelled_owned();
        // As a real API's front server does: each write leaves at once
        // rather than waiting for the client's (delayed) acknowledgement.
        let accepted = Arc::clone(&shared);
        let listener = listener.tap_io(move |stream| {
            accepted.connections.fetch_add(1, Ordering::Relaxed);
            let _ = stream.set_nodelay(true);
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(stop)
                .await;
        });
        Self {
            addr,
            shared,
            task: Some(task),
        }
    }

    /// The API root, `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues a reply for `/chat/completions` (FIFO); when the queue is empty
    /// the default reply is used.
    pub fn push(&self, reply: Reply) {
        self.shared.lock().script.push_back(reply);
    }

    /// Replaces the default reply (initially `answer("Hello!", 10, 5, 3)`:
    /// 10 cache-hit, 5 cache-miss and 3 output tokens).
    pub fn set_default(&self, reply: Reply) {
        let prepared = Arc::new(prepare(reply));
        self.shared.lock().default = prepared;
    }

    /// Every recorded `/chat/completions` request, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    /// How many `/chat/completions` requests arrived (recorded or not).
    pub fn request_count(&self) -> u64 {
        self.shared.chat_requests.load(Ordering::Relaxed)
    }

    /// How many connections clients opened to the fake: fewer than requests
    /// when a client reuses its connections.
    pub fn connection_count(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Turns recording of requests on (the default) or off — off keeps long
    /// benchmarks from piling up bodies.
    pub fn record_requests(&self, on: bool) {
        self.shared.lock().record = on;
    }

    /// The JSON answer of `GET /user/balance`.
    pub fn set_balance(&self, json: Value) {
        self.shared.lock().balance = json;
    }

    /// The JSON answer of `GET /models` (this also ends [`Self::fail_models`]).
    pub fn set_models(&self, json: Value) {
        let mut inner = self.shared.lock();
        inner.models = json;
        inner.models_status = None;
    }

    /// Makes `GET /models` answer with `status` and an error body from now on;
    /// a status below 400 restores the normal answer.
    pub fn fail_models(&self, status: u16) {
        self.shared.lock().models_status = StatusCode::from_u16(status)
            .ok()
            .filter(|s| s.is_client_error() || s.is_server_error());
    }

    /// Stops the server: hanging replies and running streams end, and the
    /// call returns once connections are closed (at most a few seconds).
    pub async fn stop(mut self) {
        self.shared.stop.cancel();
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

fn response(status: StatusCode, content_type: &'static str, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    response(status, "application/json", Body::from(value.to_string()))
}

async fn chat(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    shared.chat_requests.fetch_add(1, Ordering::Relaxed);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let stream = body.get("stream").and_then(Value::as_bool) == Some(true);
    let (scripted, default) = {
        let mut inner = shared.lock();
        if inner.record {
            let authorization = headers
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let header = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            inner.requests.push(Recorded {
                authorization,
                traceparent: header("traceparent"),
                tracestate: header("tracestate"),
                body,
            });
        }
        match inner.script.pop_front() {
            Some(reply) => (Some(reply), None),
            None => (None, Some(inner.default.clone())),
        }
    };
    let prepared = match (scripted, default) {
        (Some(reply), _) => Arc::new(prepare(reply)),
        (None, Some(default)) => default,
        (None, None) => Arc::new(prepare(answer("Hello!", 10, 5, 3))),
    };
    match &*prepared {
        Prepared::Hang => {
            shared.stop.cancelled().await;
            response(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                Body::from("stopping"),
            )
        }
        Prepared::Status {
            status,
            retry_after,
            body,
            json,
        } => {
            let content_type = if *json {
                "application/json"
            } else {
                "text/plain"
            };
            let mut response = response(*status, content_type, Body::from(body.clone()));
            if let Some(retry_after) = retry_after {
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, retry_after.clone());
            }
            response
        }
        Prepared::Body {
            status,
            content_type,
            body,
        } => {
            let mut response = Response::new(Body::from(body.clone()));
            *response.status_mut() = *status;
            if let Some(content_type) = content_type {
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, content_type.clone());
            }
            response
        }
        Prepared::Stream {
            aggregate, pause, ..
        } if !stream => {
            tokio::select! {
                () = tokio::time::sleep(*pause) => {}
                () = shared.stop.cancelled() => {}
            }
            response(
                StatusCode::OK,
                "application/json",
                Body::from(aggregate.clone()),
            )
        }
        Prepared::Stream { segments, .. } => {
            let segments = segments.clone();
            let body = futures_util::stream::unfold(0usize, move |mut index| {
                let segments = segments.clone();
                async move {
                    loop {
                        match segments.get(index)? {
                            Segment::Bytes(bytes) => {
                                return Some((Ok::<_, io::Error>(bytes.clone()), index + 1));
                            }
                            Segment::Endless(bytes) => return Some((Ok(bytes.clone()), index)),
                            Segment::Pause(d) => {
                                tokio::time::sleep(*d).await;
                                index += 1;
                            }
                            Segment::Close => {
                                // Let the server flush what was sent first.
                                tokio::time::sleep(Duration::from_millis(1)).await;
                                return Some((
                                    Err(io::Error::other("scripted close")),
                                    segments.len(),
                                ));
                            }
                        }
                    }
                }
            })
            .take_until(shared.stop.clone().cancelled_owned());
            response(StatusCode::OK, "text/event-stream", Body::from_stream(body))
        }
    }
}

async fn models(State(shared): State<Arc<Shared>>) -> Response {
    let (status, models) = {
        let inner = shared.lock();
        (inner.models_status, inner.models.clone())
    };
    match status {
        Some(status) => json_response(
            status,
            &json!({ "error": { "message": format!("scripted failure {}", status.as_u16()) } }),
        ),
        None => json_response(StatusCode::OK, &models),
    }
}

async fn balance(State(shared): State<Arc<Shared>>) -> Response {
    let balance = shared.lock().balance.clone();
    json_response(StatusCode::OK, &balance)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_script_shape() {
        let Reply::Stream(items) = answer("Hi there", 1, 2, 3) else {
            panic!("a stream");
        };
        // role, "Hi ", "there", finish, usage, [DONE]
        assert_eq!(items.len(), 6);
        assert!(matches!(items.last(), Some(Sse::Done)));
        let Sse::Data(usage) = &items[4] else {
            panic!("usage");
        };
        assert_eq!(usage["usage"]["prompt_tokens"], json!(3));
        assert_eq!(usage["choices"], json!([]));
    }

    #[test]
    fn aggregate_of_a_stream() {
        let Prepared::Stream {
            aggregate, pause, ..
        } = prepare_stream(&[
            Sse::Data(reasoning_chunk("r")),
            Sse::Pause(Duration::from_millis(3)),
            Sse::Data(chunk("a")),
            Sse::Data(finish_chunk("stop")),
            Sse::Data(usage_chunk(1, 2, 3, 0)),
            Sse::Done,
        ])
        else {
            panic!("a stream");
        };
        let value: Value = serde_json::from_slice(&aggregate).unwrap();
        assert_eq!(value["choices"][0]["message"]["content"], json!("a"));
        assert_eq!(
            value["choices"][0]["message"]["reasoning_content"],
            json!("r")
        );
        assert_eq!(value["choices"][0]["finish_reason"], json!("stop"));
        assert_eq!(value["usage"]["completion_tokens"], json!(3));
        assert_eq!(pause, Duration::from_millis(3));
    }

    #[test]
    fn aggregate_of_tool_calls() {
        let Reply::Stream(items) = tool_calls_answer(
            &[("call_1", "weather", &["{\"city\":", "\"Oslo\"}"])],
            1,
            2,
            3,
        ) else {
            panic!("a stream");
        };
        let Prepared::Stream { aggregate, .. } = prepare_stream(&items) else {
            panic!("a stream");
        };
        let value: Value = serde_json::from_slice(&aggregate).unwrap();
        assert_eq!(
            value["choices"][0]["message"]["tool_calls"],
            json!([{"id": "call_1", "type": "function",
                "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}])
        );
        assert_eq!(value["choices"][0]["finish_reason"], json!("tool_calls"));
    }
}

/// Tool-call pieces gathered by index into whole calls, the way a
/// non-streamed answer shows them: the id, type and name a piece carries
/// are set, its arguments appended.
#[derive(Debug, Default)]
struct ToolCalls(std::collections::BTreeMap<u64, Value>);

impl ToolCalls {
    fn add(&mut self, delta: Option<&Value>) {
        let pieces = delta
            .and_then(|d| d.get("tool_calls"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        for (position, piece) in pieces.enumerate() {
            let index = piece
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(position as u64);
            let call = self.0.entry(index).or_insert_with(|| {
                json!({ "id": "", "type": "function", "function": { "name": "", "arguments": "" } })
            });
            let text = |pointer: &str| piece.pointer(pointer).and_then(Value::as_str);
            for pointer in ["/id", "/type", "/function/name"] {
                if let Some(value) = text(pointer).filter(|v| !v.is_empty())
                    && let Some(slot) = call.pointer_mut(pointer)
                {
                    *slot = value.into();
                }
            }
            if let Some(more) = text("/function/arguments")
                && let Some(Value::String(arguments)) = call.pointer_mut("/function/arguments")
            {
                arguments.push_str(more);
            }
        }
    }

    fn into_json(self) -> Vec<Value> {
        self.0.into_values().collect()
    }
}
