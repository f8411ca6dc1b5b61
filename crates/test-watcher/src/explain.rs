//! Explanations of failed runs from the api-gateway (`GATEWAY_ENDPOINT`).
//!
//! A run that ends `failed`, `error` or `timeout` is published at once, as
//! without a gateway; then the gateway's `ChatCompletion` is asked for the
//! likely cause and a fix (the command, the failed tests, the end of the
//! output within `EXPLAIN_MAX_OUTPUT`), and the run is published once more,
//! same `run_id`, with `explanation` or `explanation_error` set.
//!
//! One explanation is asked for at a time. A failure that finishes while one
//! is in flight waits; a newer failure takes its place (the newest failure
//! is the one worth explaining) and a run that passes clears it. Either way
//! the run that waited in vain is published with `explanation_error`
//! saying it was skipped, so every failure gets exactly one follow-up.
//!
//! Each call reports one `GatewayRequest` event (outcome ok/error and its
//! duration), which the collector counts in `test_watcher_api_calls_total`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use automation_proto::v1::api_gateway_client::ApiGatewayClient;
use automation_proto::v1::{self, ChatMessage, ChatRequest, RunResult, RunSummary};
use automation_telemetry::client::{self, BearerToken, ClientError};
use automation_telemetry::reporter::Reporter;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tonic::transport::{Channel, Endpoint};
use tracing::Instrument;

/// `EXPLAIN_TIMEOUT`'s default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// `EXPLAIN_MAX_OUTPUT`'s default, in bytes.
pub const DEFAULT_MAX_OUTPUT: usize = 16 * 1024;
/// An explanation kept in a run summary, at most (bytes).
const MAX_EXPLANATION: usize = 16 * 1024;
/// An explanation error kept in a run summary, at most (bytes).
const MAX_ERROR: usize = 1024;
/// Failed tests named in a request, at most.
const MAX_NAMED_TESTS: usize = 50;
/// Changed paths named in a request, at most.
const MAX_NAMED_PATHS: usize = 20;

/// What the model is asked to do.
pub const SYSTEM_PROMPT: &str = "You help a developer whose automated test run just failed. \
From the test command, the failed tests and the end of the output, say what most likely \
caused the failure and how to fix it, in a few sentences. Name the file, test or line \
when the output shows it. If the output does not show the cause, say so and what to look at next.";

/// How to reach the api-gateway, and what to send it.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// `http://host:port`, or `https://` for TLS.
    pub endpoint: String,
    /// The bearer token (the file's first line), re-read when it changes.
    pub token_file: Option<PathBuf>,
    /// The CA (PEM) for `https://` endpoints; system roots when `None`.
    pub tls_ca_file: Option<PathBuf>,
    /// One call may take this long, connecting included.
    pub timeout: Duration,
    /// Bytes of the output's end sent with a request; 0 sends none.
    pub max_output: usize,
}

impl GatewayConfig {
    /// The defaults: no token, system roots, 120 s, 16 KiB of output.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            token_file: None,
            tls_ca_file: None,
            timeout: DEFAULT_TIMEOUT,
            max_output: DEFAULT_MAX_OUTPUT,
        }
    }

    /// Checks the endpoint, the token file and the CA file without
    /// connecting: what `main` turns into exit code 64.
    pub fn check(&self) -> Result<(), GatewayError> {
        self.prepare().map(drop)
    }

    fn prepare(&self) -> Result<(Endpoint, Option<BearerToken>), GatewayError> {
        if self.timeout.is_zero() {
            return Err(GatewayError::Timeout);
        }
        let endpoint = client::endpoint(
            &self.endpoint,
            self.tls_ca_file.as_deref(),
            self.timeout.min(Duration::from_secs(10)),
        )?;
        let authorization = self
            .token_file
            .as_deref()
            .map(BearerToken::open)
            .transpose()?;
        Ok((endpoint, authorization))
    }
}

/// The gateway configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The explain timeout is zero.
    #[error("EXPLAIN_TIMEOUT: the explain timeout must be above zero")]
    Timeout,
    /// The client cannot be set up: its endpoint, token file or CA file.
    #[error("{setting}: {0}", setting = .0.setting("GATEWAY_ENDPOINT", "GATEWAY_TOKEN_FILE"))]
    Client(#[from] ClientError),
}

/// The api-gateway client: a lazy channel (nothing is dialled until the
/// first explanation), the bearer token and the limits. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    client: ApiGatewayClient<Channel>,
    authorization: Option<Arc<BearerToken>>,
    timeout: Duration,
    max_output: usize,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("timeout", &self.timeout)
            .field("max_output", &self.max_output)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Prepares the client; must be called inside a Tokio runtime. A gateway
    /// that is not up is no error here: each call says so in its run's
    /// `explanation_error`.
    pub fn new(config: &GatewayConfig) -> Result<Self, GatewayError> {
        let (endpoint, authorization) = config.prepare()?;
        Ok(Self {
            client: ApiGatewayClient::new(endpoint.connect_lazy()),
            authorization: authorization.map(Arc::new),
            timeout: config.timeout,
            max_output: config.max_output,
        })
    }

    /// Bytes of output sent with a request, at most.
    pub fn max_output(&self) -> usize {
        self.max_output
    }

    /// Asks for an explanation: the model's answer, or why there is none.
    async fn chat(&self, request: ChatRequest) -> Result<v1::ChatResponse, String> {
        let mut request = tonic::Request::new(request);
        request.set_timeout(self.timeout);
        if let Some(authorization) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", authorization.value());
        }
        automation_telemetry::trace::inject_metadata(request.metadata_mut());
        let mut client = self.client.clone();
        let within = format!("{:?}", self.timeout);
        match tokio::time::timeout(self.timeout, client.chat_completion(request)).await {
            Err(_) => Err(format!("no answer from the api-gateway within {within}")),
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(describe(&status, &within)),
        }
    }
}

/// Why a call failed, for people: unreachable, timed out, or the gateway's
/// own status.
fn describe(status: &tonic::Status, within: &str) -> String {
    use std::error::Error as _;
    let mut text = status.message().to_owned();
    client::append_causes(&mut text, status.source());
    match status.code() {
        // tonic's own deadline (`grpc-timeout`) ends the call as cancelled.
        tonic::Code::Cancelled if text.contains("Timeout expired") => {
            format!("no answer from the api-gateway within {within}")
        }
        // A transport failure (no connection) carries its cause; the
        // gateway's own UNAVAILABLE (upstream down) does not.
        tonic::Code::Unavailable | tonic::Code::Unknown if status.source().is_some() => {
            format!("the api-gateway is unreachable: {text}")
        }
        code => format!("the api-gateway answered {code:?}: {text}"),
    }
}

/// Whether a run's result is one the gateway is asked to explain: failed,
/// error (it did not start, or no results: a build error) or timeout; never
/// passed or cancelled.
pub fn wants(summary: &RunSummary) -> bool {
    matches!(
        RunResult::try_from(summary.result),
        Ok(RunResult::Failed | RunResult::Error | RunResult::Timeout)
    )
}

/// The end of a run's output, as sent to the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excerpt {
    /// The last bytes of the output, cut at a character boundary.
    pub text: String,
    /// The whole output's size in bytes.
    pub total: usize,
}

impl Excerpt {
    /// The end of `output`, at most `max` bytes, starting at a character
    /// boundary (so it may be a few bytes shorter than `max`).
    pub fn of(output: &str, max: usize) -> Self {
        let mut start = output.len().saturating_sub(max);
        while !output.is_char_boundary(start) {
            start += 1;
        }
        Self {
            text: output[start..].to_owned(),
            total: output.len(),
        }
    }

    /// Whether the beginning was cut.
    pub fn truncated(&self) -> bool {
        self.text.len() < self.total
    }
}

/// The user message: the command, the result, the failed tests and the end
/// of the output (last, in a fenced block).
pub fn user_message(command: &str, summary: &RunSummary, output: Option<&Excerpt>) -> String {
    use std::fmt::Write as _;
    let result = match RunResult::try_from(summary.result) {
        Ok(RunResult::Failed) => "failed",
        Ok(RunResult::Error) => "error (the command did not start, or printed no test results)",
        Ok(RunResult::Timeout) => "timeout (stopped for taking too long)",
        _ => "unknown",
    };
    let mut text = String::new();
    let _ = writeln!(text, "The test command `{command}` failed.");
    let _ = write!(text, "Result: {result}");
    if let Some(code) = summary.exit_code {
        let _ = write!(text, ", exit code {code}");
    }
    let _ = writeln!(text, ".");
    if !summary.error.is_empty() {
        let _ = writeln!(text, "Problem: {}", summary.error);
    }
    let _ = writeln!(
        text,
        "Tests: {} passed, {} failed, {} ignored.",
        summary.tests_passed, summary.tests_failed, summary.tests_ignored
    );
    if !summary.failed_tests.is_empty() {
        let _ = writeln!(text, "Failed tests:");
        for name in summary.failed_tests.iter().take(MAX_NAMED_TESTS) {
            let _ = writeln!(text, "- {}", cut(name, 200));
        }
        if summary.failed_tests.len() > MAX_NAMED_TESTS {
            let _ = writeln!(
                text,
                "- … and {} more",
                summary.failed_tests.len() - MAX_NAMED_TESTS
            );
        }
    }
    if !summary.changed_paths.is_empty() {
        let listed: Vec<&str> = summary
            .changed_paths
            .iter()
            .take(MAX_NAMED_PATHS)
            .map(String::as_str)
            .collect();
        let more = summary.changed_paths.len().saturating_sub(MAX_NAMED_PATHS);
        let _ = write!(text, "Files changed before the run: {}", listed.join(", "));
        if more > 0 {
            let _ = write!(text, " and {more} more");
        }
        let _ = writeln!(text, ".");
    }
    match output {
        None => {
            let _ = writeln!(text, "\nThe output is not sent (EXPLAIN_MAX_OUTPUT is 0).");
        }
        Some(excerpt) if excerpt.total == 0 => {
            let _ = writeln!(text, "\nThe command printed nothing.");
        }
        Some(excerpt) => {
            if excerpt.truncated() {
                let _ = writeln!(
                    text,
                    "\nOutput (truncated: only its last {} of {} bytes):",
                    excerpt.text.len(),
                    excerpt.total
                );
            } else {
                let _ = writeln!(text, "\nOutput:");
            }
            let _ = write!(text, "```text\n{}\n```", excerpt.text);
        }
    }
    text
}

/// The request for an explanation of `summary`.
pub fn request(command: &str, summary: &RunSummary, output: Option<&Excerpt>) -> ChatRequest {
    let message = |role: &str, content: String| ChatMessage {
        role: role.to_owned(),
        content,
        ..ChatMessage::default()
    };
    ChatRequest {
        // The gateway's default model.
        model: String::new(),
        messages: vec![
            message("system", SYSTEM_PROMPT.to_owned()),
            message("user", user_message(command, summary, output)),
        ],
        ..ChatRequest::default()
    }
}

/// `text` within `max` bytes, cut at a character boundary with `…`.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A failed run waiting for its explanation.
#[derive(Debug)]
pub(crate) struct Pending {
    summary: RunSummary,
    output: Option<Excerpt>,
}

/// The engine's side: at most one explanation in flight, at most one
/// failure waiting.
pub(crate) struct Explanations {
    client: Client,
    command: String,
    reporter: Option<Reporter>,
    updates: mpsc::Sender<RunSummary>,
    in_flight: Option<AbortHandle>,
    waiting: Option<Pending>,
}

impl Explanations {
    /// The explanations and where their updated run summaries arrive.
    pub(crate) fn new(
        client: Client,
        command: String,
        reporter: Option<Reporter>,
    ) -> (Self, mpsc::Receiver<RunSummary>) {
        let (updates, received) = mpsc::channel(4);
        let explanations = Self {
            client,
            command,
            reporter,
            updates,
            in_flight: None,
            waiting: None,
        };
        (explanations, received)
    }

    /// Bytes of output a failed run should keep for its request.
    pub(crate) fn max_output(&self) -> usize {
        self.client.max_output()
    }

    /// A run finished. A failure is explained now, or waits while another
    /// is in flight. Returns the update of a waiting run that will not be
    /// explained after all (a newer failure took its place, or this run
    /// passed).
    pub(crate) fn on_run(
        &mut self,
        summary: &RunSummary,
        output: Option<Excerpt>,
    ) -> Option<RunSummary> {
        if wants(summary) {
            let pending = Pending {
                summary: summary.clone(),
                output,
            };
            if self.in_flight.is_none() {
                self.start(pending);
                return None;
            }
            let replaced = self.waiting.replace(pending)?;
            return Some(skipped(
                replaced.summary,
                &format!(
                    "skipped: run {} failed before an explanation could be asked for; \
                     only the newest failure waiting is explained",
                    summary.run_id
                ),
            ));
        }
        if summary.result == RunResult::Passed as i32 {
            let cleared = self.waiting.take()?;
            return Some(skipped(
                cleared.summary,
                &format!("skipped: run {} passed after it", summary.run_id),
            ));
        }
        None
    }

    /// An update arrived from the explanation in flight: the waiting
    /// failure, if any, is asked for next.
    pub(crate) fn on_update(&mut self) {
        self.in_flight = None;
        if let Some(next) = self.waiting.take() {
            self.start(next);
        }
    }

    /// Stops the explanation in flight and forgets the waiting one.
    pub(crate) fn stop(&mut self) {
        if let Some(in_flight) = self.in_flight.take() {
            in_flight.abort();
        }
        self.waiting = None;
    }

    fn start(&mut self, pending: Pending) {
        let client = self.client.clone();
        let reporter = self.reporter.clone();
        let updates = self.updates.clone();
        let request = request(&self.command, &pending.summary, pending.output.as_ref());
        let mut summary = pending.summary;
        tracing::info!(
            run = summary.run_id,
            "asking the api-gateway to explain the failure"
        );
        let span = if automation_telemetry::trace::enabled() {
            tracing::info_span!(
                "explain",
                run = summary.run_id,
                otel.status_code = tracing::field::Empty,
                error = tracing::field::Empty,
            )
        } else {
            tracing::Span::none()
        };
        let task = tokio::spawn(
            async move {
                let started = Instant::now();
                let answer = client.chat(request).await;
                if let Err(error) = &answer {
                    let span = tracing::Span::current();
                    span.record("otel.status_code", "ERROR");
                    span.record("error", error.as_str());
                }
                let outcome = if answer.is_ok() {
                    v1::CallOutcome::Ok
                } else {
                    v1::CallOutcome::Error
                };
                if let Some(reporter) = &reporter {
                    reporter.report(v1::event::Payload::GatewayRequest(v1::GatewayRequest {
                        outcome: outcome as i32,
                        duration_seconds: started.elapsed().as_secs_f64(),
                    }));
                }
                match answer {
                    Ok(response) if response.content.trim().is_empty() => {
                        let reason = if response.finish_reason.is_empty() {
                            String::new()
                        } else {
                            format!(" (finish reason {:?})", response.finish_reason)
                        };
                        summary.explanation_error =
                            format!("the api-gateway's answer was empty{reason}");
                    }
                    Ok(response) => {
                        summary.explanation = cut(response.content.trim(), MAX_EXPLANATION);
                    }
                    Err(error) => summary.explanation_error = cut(&error, MAX_ERROR),
                }
                if summary.explanation_error.is_empty() {
                    tracing::info!(run = summary.run_id, "failure explained");
                } else {
                    tracing::warn!(
                        run = summary.run_id,
                        error = %summary.explanation_error,
                        "no explanation of the failure"
                    );
                }
                let _ = updates.send(summary).await;
            }
            .instrument(span),
        );
        self.in_flight = Some(task.abort_handle());
    }
}

fn skipped(mut summary: RunSummary, reason: &str) -> RunSummary {
    tracing::info!(run = summary.run_id, reason, "explanation skipped");
    summary.explanation_error = reason.to_owned();
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_excerpt_keeps_the_end_on_a_character_boundary() {
        let output = "ééééé end";
        // 14 bytes: each é is two.
        assert_eq!(output.len(), 14);
        let all = Excerpt::of(output, 100);
        assert_eq!((all.text.as_str(), all.truncated()), (output, false));
        let cut = Excerpt::of(output, 8);
        assert_eq!(cut.text, "éé end");
        assert!(cut.truncated());
        // Starting inside a character moves forward to the next one.
        let cut = Excerpt::of(output, 7);
        assert_eq!(cut.text, "é end");
        assert_eq!((cut.text.len(), cut.total), (6, 14));
        assert_eq!(Excerpt::of(output, 0).text, "");
        assert_eq!(Excerpt::of("", 10).total, 0);
    }

    #[test]
    fn the_message_names_the_failures_and_says_the_output_was_cut() {
        let summary = RunSummary {
            run_id: 3,
            result: RunResult::Failed as i32,
            tests_passed: 1,
            tests_failed: 2,
            failed_tests: vec!["a::one".into(), "b::two".into()],
            exit_code: Some(101),
            changed_paths: vec!["src/lib.rs".into()],
            ..RunSummary::default()
        };
        let excerpt = Excerpt::of("lots of output\nthe end", 7);
        let text = user_message("cargo test", &summary, Some(&excerpt));
        for part in [
            "`cargo test`",
            "exit code 101",
            "- a::one\n- b::two",
            "src/lib.rs",
            "truncated: only its last 7 of 22 bytes",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
        assert!(text.ends_with("```text\nthe end\n```"), "{text}");
        let text = user_message("cargo test", &summary, None);
        assert!(text.contains("not sent"), "{text}");
    }

    #[test]
    fn long_names_are_cut_and_counted() {
        let summary = RunSummary {
            result: RunResult::Failed as i32,
            failed_tests: (0..60).map(|i| format!("t{i}")).collect(),
            ..RunSummary::default()
        };
        let text = user_message("x", &summary, Some(&Excerpt::of("", 1)));
        assert!(text.contains("- t49\n- … and 10 more"), "{text}");
        assert!(!text.contains("- t50"));
        assert_eq!(cut("ééé", 5), "é…");
        assert_eq!(cut("abc", 3), "abc");
    }

    #[test]
    fn only_failures_errors_and_timeouts_are_explained() {
        let with = |result: RunResult| RunSummary {
            result: result as i32,
            ..RunSummary::default()
        };
        assert!(wants(&with(RunResult::Failed)));
        assert!(wants(&with(RunResult::Error)));
        assert!(wants(&with(RunResult::Timeout)));
        assert!(!wants(&with(RunResult::Passed)));
        assert!(!wants(&with(RunResult::Cancelled)));
    }

    #[test]
    fn a_bad_endpoint_or_token_file_is_a_configuration_error() {
        for (endpoint, says) in [
            ("ftp://gateway:1", "scheme"),
            ("not a url", "GATEWAY_ENDPOINT: invalid endpoint"),
        ] {
            let error = GatewayConfig::new(endpoint).check().unwrap_err();
            assert!(error.to_string().contains(says), "{endpoint}: {error}");
        }
        let mut config = GatewayConfig::new("http://127.0.0.1:50054");
        config.check().unwrap();
        config.token_file = Some("/nonexistent/token".into());
        let error = config.check().unwrap_err();
        assert!(error.to_string().contains("GATEWAY_TOKEN_FILE"), "{error}");
    }
}
