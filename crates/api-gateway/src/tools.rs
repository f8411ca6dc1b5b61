//! Tool calling, passed through between the doors and the upstream in the
//! OpenAI shapes: the request's `tools` and `tool_choice`, an assistant
//! message's `tool_calls`, and the pieces of tool calls in a streamed
//! answer, gathered by index into whole calls for a unary answer.

use std::collections::BTreeMap;

use automation_proto::v1::{self, FunctionCall, ToolCall, ToolCallDelta, tool_choice::Choice};
use serde_json::{Map, Value, json};

/// The most tools one request may offer (OpenAI's limit).
pub const MAX_TOOLS: usize = 128;

/// What one tool call costs a gathered answer beyond its text: the bound on
/// an answer must also hold against an upstream that sends many empty calls.
const CALL_OVERHEAD: usize = 64;

/// The pieces of tool calls in an upstream chunk's `delta.tool_calls`. A
/// piece without an index is taken as the call at its position; fields of
/// the wrong type read as empty, like the chunk's other text fields.
pub(crate) fn parse_deltas(delta: Option<&Value>) -> Vec<ToolCallDelta> {
    let Some(calls) = delta
        .and_then(|d| d.get("tool_calls"))
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    let text = |v: &Value, pointer: &str| {
        v.pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    calls
        .iter()
        .enumerate()
        .map(|(position, call)| {
            let index = call
                .get("index")
                .and_then(Value::as_u64)
                .and_then(|i| u32::try_from(i).ok())
                .unwrap_or_else(|| u32::try_from(position).unwrap_or(u32::MAX));
            let name = text(call, "/function/name");
            let arguments = text(call, "/function/arguments");
            ToolCallDelta {
                index,
                id: text(call, "/id"),
                r#type: text(call, "/type"),
                function: (!name.is_empty() || !arguments.is_empty())
                    .then_some(FunctionCall { name, arguments }),
            }
        })
        .collect()
}

/// The bytes a piece adds to a gathered answer.
pub(crate) fn delta_size(delta: &ToolCallDelta) -> usize {
    let function = delta
        .function
        .as_ref()
        .map_or(0, |f| f.name.len() + f.arguments.len());
    CALL_OVERHEAD + delta.id.len() + delta.r#type.len() + function
}

/// Whole tool calls gathered from their pieces, by index.
#[derive(Debug, Default)]
pub(crate) struct Gathered {
    calls: BTreeMap<u32, ToolCall>,
}

impl Gathered {
    /// Adds a piece: the id, type and name it carries are set, its
    /// arguments appended.
    pub(crate) fn add(&mut self, delta: ToolCallDelta) {
        let call = self.calls.entry(delta.index).or_default();
        if !delta.id.is_empty() {
            call.id = delta.id;
        }
        if !delta.r#type.is_empty() {
            call.r#type = delta.r#type;
        }
        if let Some(piece) = delta.function {
            let function = call.function.get_or_insert_with(FunctionCall::default);
            if !piece.name.is_empty() {
                function.name = piece.name;
            }
            function.arguments.push_str(&piece.arguments);
        }
    }

    /// The calls in index order; a call whose type was never sent is a
    /// "function" call, the only kind there is.
    pub(crate) fn into_calls(self) -> Vec<ToolCall> {
        self.calls
            .into_values()
            .map(|mut call| {
                if call.r#type.is_empty() {
                    call.r#type = "function".to_owned();
                }
                call.function.get_or_insert_with(FunctionCall::default);
                call
            })
            .collect()
    }
}

/// A whole call in the OpenAI shape: `{id, type, function: {name, arguments}}`.
pub(crate) fn call_json(call: &ToolCall) -> Value {
    let function = call.function.clone().unwrap_or_default();
    json!({
        "id": call.id,
        "type": if call.r#type.is_empty() { "function" } else { call.r#type.as_str() },
        "function": { "name": function.name, "arguments": function.arguments },
    })
}

/// A piece in the OpenAI shape: `index`, and only the fields it carries.
pub(crate) fn delta_json(delta: &ToolCallDelta) -> Value {
    let mut out = Map::new();
    out.insert("index".to_owned(), delta.index.into());
    if !delta.id.is_empty() {
        out.insert("id".to_owned(), delta.id.clone().into());
    }
    if !delta.r#type.is_empty() {
        out.insert("type".to_owned(), delta.r#type.clone().into());
    }
    if let Some(f) = &delta.function {
        let mut function = Map::new();
        if !f.name.is_empty() {
            function.insert("name".to_owned(), f.name.clone().into());
        }
        function.insert("arguments".to_owned(), f.arguments.clone().into());
        out.insert("function".to_owned(), function.into());
    }
    Value::Object(out)
}

/// The upstream's `tools`, or what is wrong with `tools[i]`.
pub(crate) fn tools_json(tools: &[v1::Tool]) -> Result<Value, String> {
    if tools.len() > MAX_TOOLS {
        return Err(format!("tools: more than {MAX_TOOLS} tools"));
    }
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        if !matches!(tool.r#type.as_str(), "" | "function") {
            return Err(format!(
                "tools[{i}].type {:?} is not \"function\"",
                cut(&tool.r#type)
            ));
        }
        let Some(function) = &tool.function else {
            return Err(format!("tools[{i}].function is missing"));
        };
        if function.name.is_empty() {
            return Err(format!("tools[{i}].function.name is empty"));
        }
        let mut definition = json!({ "name": function.name });
        if !function.description.is_empty() {
            definition["description"] = function.description.clone().into();
        }
        if !function.parameters_json.is_empty() {
            match serde_json::from_str::<Value>(&function.parameters_json) {
                Ok(schema @ Value::Object(_)) => definition["parameters"] = schema,
                _ => {
                    return Err(format!(
                        "tools[{i}].function.parameters is not a JSON object"
                    ));
                }
            }
        }
        out.push(json!({ "type": "function", "function": definition }));
    }
    Ok(Value::Array(out))
}

/// The upstream's `tool_choice`, or what is wrong with it.
pub(crate) fn tool_choice_json(choice: &v1::ToolChoice) -> Result<Value, String> {
    match &choice.choice {
        Some(Choice::Mode(mode)) if matches!(mode.as_str(), "none" | "auto" | "required") => {
            Ok(mode.clone().into())
        }
        Some(Choice::Mode(mode)) => Err(format!(
            "tool_choice {:?} is not one of none, auto, required",
            cut(mode)
        )),
        Some(Choice::FunctionName(name)) if !name.is_empty() => {
            Ok(json!({ "type": "function", "function": { "name": name } }))
        }
        Some(Choice::FunctionName(_)) | None => {
            Err("tool_choice names no mode and no function".to_owned())
        }
    }
}

/// A client's text, shortened for an error message.
fn cut(text: &str) -> String {
    text.chars().take(32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_gather_by_index_in_index_order() {
        let deltas = [
            json!({"tool_calls": [{"index": 1, "id": "b", "type": "function",
                "function": {"name": "second", "arguments": ""}}]}),
            json!({"tool_calls": [{"index": 0, "id": "a", "type": "function",
                "function": {"name": "first", "arguments": "{\"x\""}}]}),
            json!({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}},
                {"index": 1, "function": {"arguments": "{}"}}]}),
        ];
        let mut gathered = Gathered::default();
        for delta in &deltas {
            for piece in parse_deltas(Some(delta)) {
                gathered.add(piece);
            }
        }
        let calls = gathered.into_calls();
        let json: Vec<Value> = calls.iter().map(call_json).collect();
        assert_eq!(
            json,
            vec![
                json!({"id": "a", "type": "function",
                    "function": {"name": "first", "arguments": "{\"x\": 1}"}}),
                json!({"id": "b", "type": "function",
                    "function": {"name": "second", "arguments": "{}"}}),
            ]
        );
    }

    #[test]
    fn a_piece_carries_only_what_it_was_sent() {
        let pieces = parse_deltas(Some(&json!({"tool_calls": [
            {"function": {"arguments": "{\"a\""}}, {"index": "bad", "id": 7}]})));
        assert_eq!(
            pieces,
            vec![
                ToolCallDelta {
                    index: 0,
                    function: Some(FunctionCall {
                        name: String::new(),
                        arguments: "{\"a\"".to_owned()
                    }),
                    ..ToolCallDelta::default()
                },
                ToolCallDelta {
                    index: 1,
                    ..ToolCallDelta::default()
                },
            ]
        );
        assert!(parse_deltas(Some(&json!({"content": "x"}))).is_empty());
        assert!(delta_size(&pieces[1]) >= CALL_OVERHEAD);
    }

    #[test]
    fn tools_and_choice_are_checked() {
        let tool = |name: &str, schema: &str| v1::Tool {
            r#type: String::new(),
            function: Some(v1::FunctionDefinition {
                name: name.to_owned(),
                description: "d".to_owned(),
                parameters_json: schema.to_owned(),
            }),
        };
        assert_eq!(
            tools_json(&[tool("f", r#"{"type": "object"}"#)]).unwrap(),
            json!([{"type": "function", "function": {"name": "f", "description": "d",
                "parameters": {"type": "object"}}}])
        );
        assert_eq!(
            tools_json(&[tool("f", "[1]")]).unwrap_err(),
            "tools[0].function.parameters is not a JSON object"
        );
        assert_eq!(
            tools_json(&[tool("f", ""), tool("", "")]).unwrap_err(),
            "tools[1].function.name is empty"
        );
        let choice = |c| v1::ToolChoice { choice: Some(c) };
        assert_eq!(
            tool_choice_json(&choice(Choice::FunctionName("f".to_owned()))).unwrap(),
            json!({"type": "function", "function": {"name": "f"}})
        );
        assert_eq!(
            tool_choice_json(&choice(Choice::Mode("required".to_owned()))).unwrap(),
            json!("required")
        );
        assert!(tool_choice_json(&choice(Choice::Mode("always".to_owned()))).is_err());
    }
}
