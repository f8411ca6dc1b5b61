//! The checks on a chat request, and the upstream's JSON body built from it.

use automation_proto::v1::ChatRequest;
use serde_json::{Value, json};

use crate::pricing::Models;
use crate::tools;

/// Longest accepted model name.
const MAX_MODEL_LEN: usize = 64;
/// Most messages in one request.
const MAX_MESSAGES: usize = 10_000;

/// The model to call and the upstream's body for `request`, or what is
/// wrong with it (naming the field).
pub(super) fn upstream_body(
    models: &Models,
    request: &ChatRequest,
) -> Result<(String, Value), String> {
    let model = if request.model.is_empty() {
        models.default_model().to_owned()
    } else {
        request.model.clone()
    };
    if model.len() > MAX_MODEL_LEN {
        return Err(format!("model name is longer than {MAX_MODEL_LEN} bytes"));
    }
    if request.messages.is_empty() {
        return Err("messages is empty: send at least one".to_owned());
    }
    if request.messages.len() > MAX_MESSAGES {
        return Err(format!("more than {MAX_MESSAGES} messages"));
    }
    let mut messages = Vec::with_capacity(request.messages.len());
    for (i, m) in request.messages.iter().enumerate() {
        if !matches!(m.role.as_str(), "system" | "user" | "assistant" | "tool") {
            return Err(format!(
                "messages[{i}].role {:?} is not one of system, user, assistant, tool",
                m.role.chars().take(32).collect::<String>()
            ));
        }
        let mut message = json!({ "role": m.role, "content": m.content });
        if !m.name.is_empty() {
            message["name"] = m.name.clone().into();
        }
        if !m.tool_calls.is_empty() {
            if m.role != "assistant" {
                return Err(format!(
                    "messages[{i}].tool_calls: only an assistant message calls tools"
                ));
            }
            message["tool_calls"] = m.tool_calls.iter().map(tools::call_json).collect();
        }
        match (m.role == "tool", m.tool_call_id.is_empty()) {
            (true, true) => {
                return Err(format!(
                    "messages[{i}].tool_call_id is missing: a tool message names the call it answers"
                ));
            }
            (true, false) => message["tool_call_id"] = m.tool_call_id.clone().into(),
            (false, false) => {
                return Err(format!(
                    "messages[{i}].tool_call_id: only a tool message answers a call"
                ));
            }
            (false, true) => {}
        }
        messages.push(message);
    }
    let mut body = json!({ "model": model, "messages": messages });
    let mut set = |key: &str, value: Value| {
        body[key] = value;
    };
    if let Some(t) = request.temperature {
        set("temperature", t.into());
    }
    if let Some(p) = request.top_p {
        set("top_p", p.into());
    }
    if let Some(n) = request.max_tokens {
        set("max_tokens", n.into());
    }
    if !request.stop.is_empty() {
        set("stop", request.stop.clone().into());
    }
    if let Some(p) = request.presence_penalty {
        set("presence_penalty", p.into());
    }
    if let Some(p) = request.frequency_penalty {
        set("frequency_penalty", p.into());
    }
    if request.json_output {
        set("response_format", json!({ "type": "json_object" }));
    }
    if !request.tools.is_empty() {
        set("tools", tools::tools_json(&request.tools)?);
    }
    if let Some(choice) = &request.tool_choice {
        set("tool_choice", tools::tool_choice_json(choice)?);
    }
    Ok((model, body))
}

#[cfg(test)]
mod tests {
    use automation_proto::v1::{ChatMessage, FunctionCall, Tool, ToolCall};

    use super::*;

    fn message(role: &str, content: &str) -> ChatMessage {
        ChatMessage {
            role: role.to_owned(),
            content: content.to_owned(),
            ..ChatMessage::default()
        }
    }

    #[test]
    fn a_tool_round_trip_reaches_the_upstream_in_its_shape() {
        let call = ToolCall {
            id: "call_1".to_owned(),
            r#type: "function".to_owned(),
            function: Some(FunctionCall {
                name: "weather".to_owned(),
                arguments: r#"{"city":"Oslo"}"#.to_owned(),
            }),
        };
        let request = ChatRequest {
            messages: vec![
                message("user", "weather in Oslo?"),
                ChatMessage {
                    tool_calls: vec![call],
                    ..message("assistant", "")
                },
                ChatMessage {
                    tool_call_id: "call_1".to_owned(),
                    ..message("tool", "12 °C")
                },
            ],
            tools: vec![Tool {
                r#type: "function".to_owned(),
                function: Some(automation_proto::v1::FunctionDefinition {
                    name: "weather".to_owned(),
                    description: String::new(),
                    parameters_json: String::new(),
                }),
            }],
            ..ChatRequest::default()
        };
        let (model, body) = upstream_body(&Models::default_models(), &request).unwrap();
        assert_eq!(model, "deepseek-chat");
        assert_eq!(
            body["messages"][1]["tool_calls"],
            json!([{"id": "call_1", "type": "function",
                "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}])
        );
        assert_eq!(body["messages"][2]["tool_call_id"], "call_1");
        assert_eq!(
            body["tools"],
            json!([{"type": "function", "function": {"name": "weather"}}])
        );
        assert!(body.get("tool_choice").is_none());
    }

    #[test]
    fn tool_fields_in_the_wrong_message_are_refused() {
        let models = Models::default_models();
        let ask = |m: ChatMessage| ChatRequest {
            messages: vec![m],
            ..ChatRequest::default()
        };
        let error = upstream_body(&models, &ask(message("tool", "x"))).unwrap_err();
        assert!(
            error.starts_with("messages[0].tool_call_id is missing"),
            "{error}"
        );
        let error = upstream_body(
            &models,
            &ask(ChatMessage {
                tool_call_id: "c".to_owned(),
                ..message("user", "x")
            }),
        )
        .unwrap_err();
        assert!(error.starts_with("messages[0].tool_call_id:"), "{error}");
        let error = upstream_body(
            &models,
            &ask(ChatMessage {
                tool_calls: vec![ToolCall::default()],
                ..message("user", "x")
            }),
        )
        .unwrap_err();
        assert!(error.starts_with("messages[0].tool_calls:"), "{error}");
    }
}
