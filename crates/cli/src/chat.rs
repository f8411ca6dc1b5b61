//! `automationctl chat PROMPT`: `StreamChatCompletion` through the
//! api-gateway. For people the answer goes to stdout as it arrives, the
//! reasoning and the closing token line to stderr (so stdout is just the
//! answer); for scripts, one JSON object once the answer is complete.

use std::io::Read;

use automation_proto::v1::api_gateway_client::ApiGatewayClient;
use automation_proto::v1::{ChatChunk, ChatMessage, ChatRequest, Usage};
use serde_json::json;

use crate::Io;
use crate::cli::{ChatArgs, Format, Global};
use crate::connect::{Connector, Target};
use crate::error::Failure;
use crate::format;

const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

/// The answer so far.
#[derive(Debug, Default)]
struct Answer {
    id: String,
    model: String,
    content: String,
    reasoning: String,
    finish_reason: String,
    usage: Option<Usage>,
}

impl Answer {
    fn add(&mut self, chunk: &ChatChunk) {
        if self.id.is_empty() {
            self.id.clone_from(&chunk.id);
        }
        if self.model.is_empty() {
            self.model.clone_from(&chunk.model);
        }
        self.content.push_str(&chunk.content);
        self.reasoning.push_str(&chunk.reasoning_content);
        if !chunk.finish_reason.is_empty() {
            self.finish_reason.clone_from(&chunk.finish_reason);
        }
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
    }
}

/// Asks, and prints the answer as it streams in.
pub async fn run(
    global: &Global,
    connector: &Connector,
    args: ChatArgs,
    io: &mut Io<'_>,
) -> Result<u8, Failure> {
    let request = request(args)?;
    let target = Target::gateway(global);
    let mut client = ApiGatewayClient::new(connector.connect(&target).await?);
    // No time limit from here: the first token of a long answer may take minutes.
    let mut stream = client
        .stream_chat_completion(request)
        .await
        .map_err(|status| target.status(&status))?
        .into_inner();
    let mut answer = Answer::default();
    let mut streaming = Streaming::default();
    loop {
        match stream.message().await {
            Ok(Some(chunk)) => {
                answer.add(&chunk);
                if io.format == Format::Table {
                    streaming.show(&chunk, io)?;
                }
            }
            Ok(None) => break,
            Err(status) => {
                streaming.end(io)?;
                return Err(target.status(&status));
            }
        }
    }
    match io.format {
        Format::Json => io.json(&answer_json(&answer))?,
        Format::Table => {
            streaming.end(io)?;
            writeln!(io.err, "{}", summary(&answer))?;
        }
    }
    Ok(0)
}

fn request(args: ChatArgs) -> Result<ChatRequest, Failure> {
    let mut prompt = args.prompt.join(" ");
    if prompt == "-" {
        prompt.clear();
        std::io::stdin()
            .read_to_string(&mut prompt)
            .map_err(|e| Failure::Local(format!("cannot read the prompt from stdin: {e}")))?;
    }
    let message = |role: &str, content: String| ChatMessage {
        role: role.to_owned(),
        content,
        ..ChatMessage::default()
    };
    let mut messages = Vec::new();
    if let Some(system) = args.system {
        messages.push(message("system", system));
    }
    messages.push(message("user", prompt));
    Ok(ChatRequest {
        model: args.model.unwrap_or_default(),
        messages,
        ..ChatRequest::default()
    })
}

/// Where the live output stands: reasoning goes to stderr, the answer to
/// stdout, each flushed as it arrives.
#[derive(Debug, Default)]
struct Streaming {
    reasoning_open: bool,
    content_open: bool,
    content_ends_line: bool,
}

impl Streaming {
    fn show(&mut self, chunk: &ChatChunk, io: &mut Io<'_>) -> std::io::Result<()> {
        if !chunk.reasoning_content.is_empty() {
            if !self.reasoning_open {
                self.reasoning_open = true;
                write!(io.err, "{}reasoning: ", if io.color { DIM } else { "" })?;
            }
            write!(io.err, "{}", chunk.reasoning_content)?;
            io.err.flush()?;
        }
        if !chunk.content.is_empty() {
            self.close_reasoning(io)?;
            self.content_open = true;
            self.content_ends_line = chunk.content.ends_with('\n');
            write!(io.out, "{}", chunk.content)?;
            io.out.flush()?;
        }
        Ok(())
    }

    fn close_reasoning(&mut self, io: &mut Io<'_>) -> std::io::Result<()> {
        if std::mem::take(&mut self.reasoning_open) {
            writeln!(io.err, "{}", if io.color { RESET } else { "" })?;
        }
        Ok(())
    }

    /// Ends the reasoning and the answer's last line.
    fn end(&mut self, io: &mut Io<'_>) -> std::io::Result<()> {
        self.close_reasoning(io)?;
        if std::mem::take(&mut self.content_open) && !self.content_ends_line {
            writeln!(io.out)?;
        }
        io.out.flush()
    }
}

/// `tokens: 15 in (10 cached), 3 out (0 reasoning); cost $0.000012; deepseek-chat, finish stop`
fn summary(answer: &Answer) -> String {
    let usage = answer.usage.unwrap_or_default();
    let input = usage.input_cache_hit_tokens + usage.input_cache_miss_tokens;
    let mut line = format!(
        "tokens: {input} in ({} cached), {} out ({} reasoning)",
        usage.input_cache_hit_tokens, usage.output_tokens, usage.reasoning_tokens
    );
    if let Some(cost) = usage.cost_usd {
        line.push_str(&format!("; cost ${}", format::number(cost)));
    }
    if !answer.model.is_empty() {
        line.push_str(&format!("; {}", answer.model));
    }
    if !answer.finish_reason.is_empty() {
        line.push_str(&format!(", finish {}", answer.finish_reason));
    }
    line
}

fn answer_json(answer: &Answer) -> serde_json::Value {
    json!({
        "id": answer.id,
        "model": answer.model,
        "content": answer.content,
        "reasoning_content": answer.reasoning,
        "finish_reason": answer.finish_reason,
        "usage": answer.usage.map(|u| json!({
            "input_cache_hit_tokens": u.input_cache_hit_tokens,
            "input_cache_miss_tokens": u.input_cache_miss_tokens,
            "output_tokens": u.output_tokens,
            "reasoning_tokens": u.reasoning_tokens,
            "cost_usd": u.cost_usd,
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(content: &str, reasoning: &str) -> ChatChunk {
        ChatChunk {
            content: content.into(),
            reasoning_content: reasoning.into(),
            id: "c1".into(),
            model: "deepseek-reasoner".into(),
            ..ChatChunk::default()
        }
    }

    #[test]
    fn reasoning_on_stderr_answer_on_stdout() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut io = Io {
            out: &mut out,
            err: &mut err,
            format: Format::Table,
            color: false,
        };
        let mut streaming = Streaming::default();
        let mut answer = Answer::default();
        let last = ChatChunk {
            finish_reason: "stop".into(),
            usage: Some(Usage {
                input_cache_hit_tokens: 10,
                input_cache_miss_tokens: 5,
                output_tokens: 3,
                reasoning_tokens: 1,
                cost_usd: Some(0.000_012),
            }),
            ..chunk("", "")
        };
        for c in [
            chunk("", "think"),
            chunk("", "ing"),
            chunk("Hi ", ""),
            chunk("there", ""),
            last,
        ] {
            answer.add(&c);
            streaming.show(&c, &mut io).unwrap();
        }
        streaming.end(&mut io).unwrap();
        writeln!(io.err, "{}", summary(&answer)).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "Hi there\n");
        assert_eq!(
            String::from_utf8(err).unwrap(),
            "reasoning: thinking\n\
             tokens: 15 in (10 cached), 3 out (1 reasoning); cost $0.000012; deepseek-reasoner, finish stop\n"
        );
        assert_eq!(answer_json(&answer)["usage"]["output_tokens"], 3);
    }

    #[test]
    fn the_system_message_goes_first() {
        let request = request(ChatArgs {
            prompt: vec!["why".into(), "now?".into()],
            model: None,
            system: Some("be brief".into()),
        })
        .unwrap();
        let roles: Vec<_> = request.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user"]);
        assert_eq!(request.messages[1].content, "why now?");
        assert!(request.model.is_empty());
    }
}
