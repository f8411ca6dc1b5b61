//! Tool calling through the gateway, a whole round trip: the model asks for
//! a tool (`tool_calls`, streamed in pieces by the upstream), the client
//! runs it and answers with a `tool` message naming the call, the model
//! answers. The same round trip runs through both doors: gRPC, and the
//! OpenAI-compatible HTTP door with the real `openai` Python package. What
//! reaches the upstream is checked as well: the tools, the assistant's
//! calls, the tool message, and the gateway's key.

mod support;

use automation_proto::v1::{
    ChatMessage, ChatRequest, FunctionDefinition, Tool, ToolCall, ToolChoice, tool_choice::Choice,
};
use automation_testkit::upstream::{FakeUpstream, answer, tool_calls_answer};
use serde_json::json;
use support::{Gateway, KEY, config, openai_sdk};

/// The weather tool's JSON Schema.
const SCHEMA: &str =
    r#"{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}"#;

/// Scripts the upstream: first a call of `get_weather` with its arguments
/// in two pieces, then the answer that uses the tool's result.
fn script(upstream: &FakeUpstream) {
    upstream.push(tool_calls_answer(
        &[("call_w1", "get_weather", &["{\"city\":", "\"Oslo\"}"])],
        20,
        30,
        10,
    ));
    upstream.push(answer("It is 12 °C in Oslo.", 40, 20, 8));
}

/// The upstream received the tools and, on the second call, the
/// assistant's call and the tool's answer; always with the gateway's key.
fn assert_upstream_saw_the_round_trip(upstream: &FakeUpstream) {
    let sent = upstream.requests();
    assert_eq!(sent.len(), 2);
    for request in &sent {
        assert_eq!(request.authorization, format!("Bearer {KEY}"));
    }
    assert_eq!(
        sent[0].body["tools"],
        json!([{"type": "function", "function": {"name": "get_weather",
            "description": "The weather in a city now.",
            "parameters": serde_json::from_str::<serde_json::Value>(SCHEMA).unwrap()}}])
    );
    assert_eq!(sent[0].body["tool_choice"], "auto");
    let messages = &sent[1].body["messages"];
    assert_eq!(
        messages[1]["tool_calls"],
        json!([{"id": "call_w1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}])
    );
    assert_eq!(
        (
            &messages[2]["role"],
            &messages[2]["tool_call_id"],
            &messages[2]["content"]
        ),
        (&json!("tool"), &json!("call_w1"), &json!("12 °C"))
    );
}

fn user(text: &str) -> ChatMessage {
    ChatMessage {
        role: "user".to_owned(),
        content: text.to_owned(),
        ..ChatMessage::default()
    }
}

fn ask_with_tools(messages: Vec<ChatMessage>) -> ChatRequest {
    ChatRequest {
        messages,
        tools: vec![Tool {
            r#type: "function".to_owned(),
            function: Some(FunctionDefinition {
                name: "get_weather".to_owned(),
                description: "The weather in a city now.".to_owned(),
                parameters_json: SCHEMA.to_owned(),
            }),
        }],
        tool_choice: Some(ToolChoice {
            choice: Some(Choice::Mode("auto".to_owned())),
        }),
        ..ChatRequest::default()
    }
}

/// The messages of the second call: the question, the assistant's calls,
/// the tool's answer.
fn after_the_tool(calls: Vec<ToolCall>) -> Vec<ChatMessage> {
    let call_id = calls[0].id.clone();
    vec![
        user("What is the weather in Oslo?"),
        ChatMessage {
            role: "assistant".to_owned(),
            tool_calls: calls,
            ..ChatMessage::default()
        },
        ChatMessage {
            role: "tool".to_owned(),
            content: "12 °C".to_owned(),
            tool_call_id: call_id,
            ..ChatMessage::default()
        },
    ]
}

#[tokio::test]
async fn a_tool_call_round_trip_over_grpc() {
    let upstream = FakeUpstream::start().await;
    script(&upstream);
    let gw = Gateway::start(config(&upstream)).await;
    let mut client = gw.client.clone();
    let first = client
        .chat_completion(ask_with_tools(vec![user("What is the weather in Oslo?")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.finish_reason, "tool_calls");
    assert_eq!(first.content, "");
    assert_eq!(first.tool_calls.len(), 1);
    let call = &first.tool_calls[0];
    let function = call.function.as_ref().unwrap();
    assert_eq!(
        (
            call.id.as_str(),
            call.r#type.as_str(),
            function.name.as_str()
        ),
        ("call_w1", "function", "get_weather")
    );
    assert_eq!(function.arguments, r#"{"city":"Oslo"}"#);

    let second = client
        .chat_completion(ask_with_tools(after_the_tool(first.tool_calls)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.content, "It is 12 °C in Oslo.");
    assert_eq!(second.finish_reason, "stop");
    assert_upstream_saw_the_round_trip(&upstream);
    gw.stop().await;
}

#[tokio::test]
async fn a_streamed_tool_call_arrives_in_pieces_in_order_over_grpc() {
    let upstream = FakeUpstream::start().await;
    script(&upstream);
    let gw = Gateway::start(config(&upstream)).await;
    let mut client = gw.client.clone();
    let mut stream = client
        .stream_chat_completion(ask_with_tools(vec![user("What is the weather in Oslo?")]))
        .await
        .unwrap()
        .into_inner();
    let mut pieces = Vec::new();
    let mut last = None;
    while let Some(chunk) = stream.message().await.unwrap() {
        pieces.extend(chunk.tool_calls.clone());
        last = Some(chunk);
    }
    let last = last.unwrap();
    assert_eq!(last.finish_reason, "tool_calls");
    assert_eq!(last.usage.unwrap().output_tokens, 10);
    // The first piece names the call; the arguments follow piece by piece.
    assert_eq!(pieces.len(), 3, "{pieces:?}");
    assert_eq!(
        (
            pieces[0].id.as_str(),
            pieces[0].function.as_ref().unwrap().name.as_str()
        ),
        ("call_w1", "get_weather")
    );
    assert!(pieces.iter().all(|p| p.index == 0));
    let arguments: String = pieces
        .iter()
        .filter_map(|p| p.function.as_ref())
        .map(|f| f.arguments.as_str())
        .collect();
    assert_eq!(arguments, r#"{"city":"Oslo"}"#);
    // The round trip finishes unary.
    let calls = vec![ToolCall {
        id: pieces[0].id.clone(),
        r#type: "function".to_owned(),
        function: Some(automation_proto::v1::FunctionCall {
            name: "get_weather".to_owned(),
            arguments,
        }),
    }];
    let second = client
        .chat_completion(ask_with_tools(after_the_tool(calls)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.content, "It is 12 °C in Oslo.");
    assert_upstream_saw_the_round_trip(&upstream);
    gw.stop().await;
}

#[tokio::test]
async fn a_tool_call_round_trip_with_the_openai_sdk() {
    let upstream = FakeUpstream::start().await;
    script(&upstream);
    let gw = Gateway::start(config(&upstream)).await;
    let trip = openai_sdk(&gw, "tools", "any").await;
    let first = &trip["first"]["choices"][0];
    assert_eq!(first["finish_reason"], "tool_calls");
    assert_eq!(first["message"]["content"], serde_json::Value::Null);
    assert_eq!(
        first["message"]["tool_calls"],
        json!([{"id": "call_w1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}])
    );
    let second = &trip["second"]["choices"][0];
    assert_eq!(second["message"]["content"], "It is 12 °C in Oslo.");
    assert_eq!(second["finish_reason"], "stop");
    assert_upstream_saw_the_round_trip(&upstream);
    gw.stop().await;
}

#[tokio::test]
async fn a_streamed_tool_call_with_the_openai_sdk() {
    let upstream = FakeUpstream::start().await;
    script(&upstream);
    let gw = Gateway::start(config(&upstream)).await;
    let trip = openai_sdk(&gw, "tools_stream", "any").await;
    assert_eq!(trip["finish_reason"], "tool_calls");
    assert_eq!(
        trip["calls"]["0"],
        json!({"id": "call_w1", "name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"})
    );
    assert_eq!(
        trip["second"]["choices"][0]["message"]["content"],
        "It is 12 °C in Oslo."
    );
    assert_upstream_saw_the_round_trip(&upstream);
    gw.stop().await;
}
