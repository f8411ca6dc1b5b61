//! An OpenAI chat request (JSON) read into the gateway's [`ChatRequest`].
//!
//! Fields the gateway does not know are ignored, as OpenAI's API ignores
//! them; a known field of the wrong type is refused naming it (`param`).
//! `null` counts as absent. Tolerated forms: `content` as `null` or as a
//! list of text parts, `stop` as one string, `max_completion_tokens` for
//! `max_tokens`, the `developer` role as `system`. Refused, since the answer
//! would silently lack them: `n` other than 1, `logprobs`, and a
//! `response_format` other than `text` or `json_object`.

use automation_proto::v1::{
    ChatMessage, ChatRequest, FunctionCall, FunctionDefinition, Tool, ToolCall, ToolChoice,
    tool_choice::Choice,
};
use serde_json::{Map, Value};

/// A request the door cannot read: what is wrong, and the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct Invalid {
    /// What is wrong.
    pub(crate) message: String,
    /// The field at fault (`messages[1].content`), when there is one.
    pub(crate) param: Option<String>,
}

/// How the answer goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delivery {
    /// As server-sent events (`stream: true`).
    pub(crate) stream: bool,
    /// A last event carries the usage (`stream_options.include_usage`).
    pub(crate) include_usage: bool,
}

/// Reads a request body.
pub(crate) fn parse(body: &[u8]) -> Result<(ChatRequest, Delivery), Invalid> {
    let value: Value = serde_json::from_slice(body).map_err(|e| Invalid {
        message: format!("the body is not valid JSON: {e}"),
        param: None,
    })?;
    let Value::Object(object) = &value else {
        return Err(Invalid {
            message: format!("the body must be a JSON object, not {}", kind(&value)),
            param: None,
        });
    };
    let fields = Object {
        path: String::new(),
        object,
    };
    let request = ChatRequest {
        model: fields.string("model")?.unwrap_or_default(),
        messages: messages(&fields)?,
        temperature: fields.number("temperature")?,
        top_p: fields.number("top_p")?,
        max_tokens: match fields.count("max_completion_tokens")? {
            Some(n) => Some(n),
            None => fields.count("max_tokens")?,
        },
        stop: stop(&fields)?,
        presence_penalty: fields.number("presence_penalty")?,
        frequency_penalty: fields.number("frequency_penalty")?,
        json_output: json_output(&fields)?,
        tools: tools(&fields)?,
        tool_choice: tool_choice(&fields)?,
    };
    if fields.count("n")?.is_some_and(|n| n != 1) {
        return Err(fields.refuse("n", "the gateway answers with one choice; leave n at 1"));
    }
    if fields.boolean("logprobs")? == Some(true) || fields.get("top_logprobs").is_some() {
        return Err(fields.refuse(
            "logprobs",
            "log probabilities are not passed through the gateway",
        ));
    }
    let stream = fields.boolean("stream")?.unwrap_or(false);
    let include_usage = match fields.object("stream_options")? {
        Some(options) => options.boolean("include_usage")?.unwrap_or(false),
        None => false,
    };
    Ok((
        request,
        Delivery {
            stream,
            include_usage,
        },
    ))
}

/// A JSON object at `path`, read field by field.
struct Object<'a> {
    path: String,
    object: &'a Map<String, Value>,
}

/// "a string", "an array" …: what a value is, for an error message.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl<'a> Object<'a> {
    fn path_of(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn refuse(&self, key: &str, problem: &str) -> Invalid {
        let param = self.path_of(key);
        Invalid {
            message: format!("{param}: {problem}"),
            param: Some(param),
        }
    }

    fn wrong(&self, key: &str, expected: &str, got: &Value) -> Invalid {
        self.refuse(key, &format!("expected {expected}, got {}", kind(got)))
    }

    /// The field, `None` when absent or `null`.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.object.get(key).filter(|v| !v.is_null())
    }

    fn string(&self, key: &str) -> Result<Option<String>, Invalid> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.wrong(key, "a string", other)),
        }
    }

    fn number(&self, key: &str) -> Result<Option<f64>, Invalid> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(other) => Err(self.wrong(key, "a number", other)),
        }
    }

    fn count(&self, key: &str) -> Result<Option<u32>, Invalid> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a whole number from 0 to 4294967295", v)),
        }
    }

    fn boolean(&self, key: &str) -> Result<Option<bool>, Invalid> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.wrong(key, "a boolean", other)),
        }
    }

    fn array(&self, key: &str) -> Result<Option<&'a Vec<Value>>, Invalid> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(other) => Err(self.wrong(key, "an array", other)),
        }
    }

    /// Field `key` as an object.
    fn object(&self, key: &str) -> Result<Option<Object<'a>>, Invalid> {
        self.nested(key.to_owned(), self.get(key))
    }

    /// Each element of array `key`, as an object.
    fn objects(&self, key: &str) -> Result<Vec<Object<'a>>, Invalid> {
        let Some(array) = self.array(key)? else {
            return Ok(Vec::new());
        };
        (0..array.len())
            .map(|i| {
                let shown = format!("{key}[{i}]");
                match self.nested(shown.clone(), array.get(i))? {
                    Some(object) => Ok(object),
                    None => Err(self.refuse(&shown, "expected an object, got null")),
                }
            })
            .collect()
    }

    /// `value`, shown as `shown` under this object, as an object.
    fn nested(
        &self,
        shown: String,
        value: Option<&'a Value>,
    ) -> Result<Option<Object<'a>>, Invalid> {
        match value.filter(|v| !v.is_null()) {
            None => Ok(None),
            Some(Value::Object(object)) => Ok(Some(Object {
                path: self.path_of(&shown),
                object,
            })),
            Some(other) => Err(self.wrong(&shown, "an object", other)),
        }
    }
}

fn messages(fields: &Object<'_>) -> Result<Vec<ChatMessage>, Invalid> {
    if fields.get("messages").is_none() {
        return Err(fields.refuse("messages", "is required"));
    }
    fields.objects("messages")?.iter().map(message).collect()
}

fn message(m: &Object<'_>) -> Result<ChatMessage, Invalid> {
    let role = m
        .string("role")?
        .ok_or_else(|| m.refuse("role", "is required"))?;
    Ok(ChatMessage {
        // OpenAI's newer name for the system role.
        role: if role == "developer" {
            "system".to_owned()
        } else {
            role
        },
        content: content(m)?,
        name: m.string("name")?.unwrap_or_default(),
        tool_calls: m
            .objects("tool_calls")?
            .iter()
            .map(tool_call)
            .collect::<Result<_, _>>()?,
        tool_call_id: m.string("tool_call_id")?.unwrap_or_default(),
    })
}

/// A message's text: a string, or text parts joined by newlines.
fn content(m: &Object<'_>) -> Result<String, Invalid> {
    match m.get("content") {
        None => Ok(String::new()),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(_)) => {
            let mut texts = Vec::new();
            for part in m.objects("content")? {
                match part.string("type")?.as_deref() {
                    Some("text") => texts.push(
                        part.string("text")?
                            .ok_or_else(|| part.refuse("text", "is required"))?,
                    ),
                    Some(other) => {
                        return Err(part.refuse(
                            "type",
                            &format!(
                                "{:?} is not supported: the upstream takes text only",
                                other.chars().take(32).collect::<String>()
                            ),
                        ));
                    }
                    None => return Err(part.refuse("type", "is required")),
                }
            }
            Ok(texts.join("\n"))
        }
        Some(other) => Err(m.wrong("content", "a string or an array of text parts", other)),
    }
}

fn tool_call(call: &Object<'_>) -> Result<ToolCall, Invalid> {
    let function = call
        .object("function")?
        .ok_or_else(|| call.refuse("function", "is required"))?;
    Ok(ToolCall {
        id: call.string("id")?.unwrap_or_default(),
        r#type: call
            .string("type")?
            .unwrap_or_else(|| "function".to_owned()),
        function: Some(FunctionCall {
            name: function.string("name")?.unwrap_or_default(),
            arguments: function.string("arguments")?.unwrap_or_default(),
        }),
    })
}

fn stop(fields: &Object<'_>) -> Result<Vec<String>, Invalid> {
    match fields.get("stop") {
        None => Ok(Vec::new()),
        Some(Value::String(one)) => Ok(vec![one.clone()]),
        Some(Value::Array(all)) => all
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(fields.wrong(&format!("stop[{i}]"), "a string", other)),
            })
            .collect(),
        Some(other) => Err(fields.wrong("stop", "a string or an array of strings", other)),
    }
}

fn json_output(fields: &Object<'_>) -> Result<bool, Invalid> {
    let Some(format) = fields.object("response_format")? else {
        return Ok(false);
    };
    match format.string("type")?.as_deref() {
        None | Some("text") => Ok(false),
        Some("json_object") => Ok(true),
        Some(_) => Err(format.refuse(
            "type",
            "only \"text\" and \"json_object\" are supported by the upstream",
        )),
    }
}

fn tools(fields: &Object<'_>) -> Result<Vec<Tool>, Invalid> {
    fields
        .objects("tools")?
        .iter()
        .map(|tool| {
            let function = tool
                .object("function")?
                .ok_or_else(|| tool.refuse("function", "is required"))?;
            let parameters_json = match function.get("parameters") {
                None => String::new(),
                Some(schema @ Value::Object(_)) => schema.to_string(),
                Some(other) => return Err(function.wrong("parameters", "an object", other)),
            };
            Ok(Tool {
                r#type: tool.string("type")?.unwrap_or_default(),
                function: Some(FunctionDefinition {
                    name: function.string("name")?.unwrap_or_default(),
                    description: function.string("description")?.unwrap_or_default(),
                    parameters_json,
                }),
            })
        })
        .collect()
}

fn tool_choice(fields: &Object<'_>) -> Result<Option<ToolChoice>, Invalid> {
    let choice = match fields.get("tool_choice") {
        None => return Ok(None),
        Some(Value::String(mode)) => Choice::Mode(mode.clone()),
        Some(Value::Object(_)) => {
            let Some(function) = fields
                .object("tool_choice")?
                .and_then(|c| c.object("function").transpose())
                .transpose()?
            else {
                return Err(fields.refuse("tool_choice.function", "is required"));
            };
            Choice::FunctionName(function.string("name")?.unwrap_or_default())
        }
        Some(other) => {
            return Err(fields.wrong("tool_choice", "a string or an object", other));
        }
    };
    Ok(Some(ToolChoice {
        choice: Some(choice),
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn refused(body: Value) -> Invalid {
        parse(body.to_string().as_bytes()).unwrap_err()
    }

    #[test]
    fn a_full_request_is_read_and_unknown_fields_are_ignored() {
        let body = json!({
            "model": "deepseek-chat",
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "a"},
                    {"type": "text", "text": "b"}], "name": "ann"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1",
                    "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "content": "42", "tool_call_id": "c1"},
            ],
            "temperature": 0.5, "top_p": null, "max_completion_tokens": 100,
            "stop": "END", "response_format": {"type": "json_object"},
            "stream": true, "stream_options": {"include_usage": true},
            "tools": [{"type": "function", "function": {"name": "f",
                "parameters": {"type": "object"}, "strict": true}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "n": 1, "seed": 7, "user": "u", "metadata": {"x": 1}, "parallel_tool_calls": false,
        });
        let (request, delivery) = parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(
            delivery,
            Delivery {
                stream: true,
                include_usage: true
            }
        );
        assert_eq!(request.messages[0].role, "system");
        assert_eq!(request.messages[1].content, "a\nb");
        assert_eq!(request.messages[1].name, "ann");
        assert_eq!(request.messages[2].content, "");
        assert_eq!(request.messages[2].tool_calls[0].id, "c1");
        assert_eq!(request.messages[3].tool_call_id, "c1");
        assert_eq!(
            (request.temperature, request.top_p, request.max_tokens),
            (Some(0.5), None, Some(100))
        );
        assert_eq!(request.stop, vec!["END".to_owned()]);
        assert!(request.json_output);
        let function = request.tools[0].function.as_ref().unwrap();
        assert_eq!(function.parameters_json, r#"{"type":"object"}"#);
        assert_eq!(
            request.tool_choice.unwrap().choice,
            Some(Choice::FunctionName("f".to_owned()))
        );
    }

    #[test]
    fn wrong_types_are_refused_naming_the_field() {
        let ask = |extra: Value| {
            let mut body = json!({"messages": [{"role": "user", "content": "hi"}]});
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            refused(body)
        };
        let cases = [
            (
                json!({"temperature": "hot"}),
                "temperature",
                "expected a number, got a string",
            ),
            (
                json!({"max_tokens": -1}),
                "max_tokens",
                "expected a whole number",
            ),
            (json!({"stream": "yes"}), "stream", "expected a boolean"),
            (
                json!({"stop": ["a", 1]}),
                "stop[1]",
                "expected a string, got a number",
            ),
            (
                json!({"messages": [{"role": "user", "content": 5}]}),
                "messages[0].content",
                "expected a string or an array",
            ),
            (
                json!({"messages": [{"content": "x"}]}),
                "messages[0].role",
                "is required",
            ),
            (
                json!({"messages": ["hi"]}),
                "messages[0]",
                "expected an object, got a string",
            ),
            (json!({"messages": {}}), "messages", "expected an array"),
            (
                json!({"tools": [{"function": {"name": "f", "parameters": "{}"}}]}),
                "tools[0].function.parameters",
                "expected an object",
            ),
            (
                json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": {}}}]}]}),
                "messages[0].tool_calls[0].function.arguments",
                "expected a string, got an object",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
                "messages[0].content[0].type",
                "text only",
            ),
            (
                json!({"stream_options": {"include_usage": 1}}),
                "stream_options.include_usage",
                "expected a boolean",
            ),
            (
                json!({"tool_choice": 3}),
                "tool_choice",
                "expected a string or an object",
            ),
            (
                json!({"response_format": {"type": "json_schema"}}),
                "response_format.type",
                "json_object",
            ),
            (json!({"n": 2}), "n", "one choice"),
            (json!({"logprobs": true}), "logprobs", "not passed through"),
        ];
        for (extra, param, text) in cases {
            let error = ask(extra.clone());
            assert_eq!(error.param.as_deref(), Some(param), "{extra}: {error:?}");
            assert!(
                error.message.starts_with(&format!("{param}: ")),
                "{error:?}"
            );
            assert!(error.message.contains(text), "{extra}: {error:?}");
        }
        assert_eq!(refused(json!({})).param.as_deref(), Some("messages"));
    }

    #[test]
    fn a_body_that_is_no_json_object_is_refused() {
        for body in [&b"{\"messages\": ["[..], b"[1]", b""] {
            let error = parse(body).unwrap_err();
            assert_eq!(error.param, None);
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let error = parse(deep.as_bytes()).unwrap_err();
        assert!(error.message.contains("recursion limit"), "{error:?}");
    }
}
