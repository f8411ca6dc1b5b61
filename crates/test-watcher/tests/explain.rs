//! Failed runs explained by the api-gateway: a fake `ApiGateway` gRPC server
//! started here records what it is asked and answers as each test wants; the
//! watcher, its runs and the collector are real, over real sockets.

mod support;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use automation_proto::v1::api_gateway_server::{ApiGateway, ApiGatewayServer};
use automation_proto::v1::test_watcher_client::TestWatcherClient;
use automation_proto::v1::{self, ChatRequest, ChatResponse, RunResult, RunSummary};
use automation_test_watcher::explain::GatewayConfig;
use automation_test_watcher::{Config, Handles};
use automation_testkit::service::Service;
use automation_testkit::{TestCollector, within};
use support::{Served, serve};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_stream::Stream;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status, Streaming};

/// Fails with a lot of output before the libtest summary (multi-byte
/// characters included, so a cut can fall inside one), and ends with the
/// run's number.
const SCRIPT: &str = r#"#!/bin/sh
echo run >> "$CONTROL/runs"
n=$(wc -l < "$CONTROL/runs" | tr -d ' ')
case $(cat "$CONTROL/mode") in
  pass)
    echo "running 1 test"
    echo "test a ... ok"
    echo "test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s"
    exit 0 ;;
  fail)
    i=0
    while [ $i -lt 200 ]; do echo "noise line $i: état déjà vu"; i=$((i+1)); done
    echo "running 3 tests"
    echo "test parser::handles_empty ... FAILED"
    echo "test parser::ok ... ok"
    echo "test net::timeouts ... FAILED"
    echo "failures:"
    echo "    net::timeouts"
    echo "    parser::handles_empty"
    echo "test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.02s"
    echo "run number $n"
    exit 101 ;;
esac
"#;

const ANSWER: &str =
    "The parser does not handle empty input: return early in parse() when the input is empty.";

// ---------------------------------------------------------------------------
// The fake api-gateway.

#[derive(Debug, Clone)]
enum Answer {
    /// Answer this at once.
    Text(String),
    /// Answer with this status.
    Fail(tonic::Code, String),
    /// Answer this once the test lets a request through (`release`).
    Gated(String),
}

#[derive(Debug, Clone)]
struct Received {
    authorization: Option<String>,
    request: ChatRequest,
}

struct Shared {
    answer: Mutex<Answer>,
    received: Mutex<Vec<Received>>,
    gate: Semaphore,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

struct FakeGateway(Arc<Shared>);

/// Counts a request in flight until the handler returns or is dropped (the
/// client gave up).
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.most_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn answer(content: String) -> Response<ChatResponse> {
    Response::new(ChatResponse {
        id: "chatcmpl-1".to_owned(),
        model: "deepseek-chat".to_owned(),
        content,
        finish_reason: "stop".to_owned(),
        attempts: 1,
        ..ChatResponse::default()
    })
}

type Chunks = Pin<Box<dyn Stream<Item = Result<v1::ChatChunk, Status>> + Send>>;

#[tonic::async_trait]
impl ApiGateway for FakeGateway {
    async fn chat_completion(
        &self,
        request: Request<ChatRequest>,
    ) -> Result<Response<ChatResponse>, Status> {
        let _in_flight = InFlight::enter(&self.0);
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.0.received.lock().unwrap().push(Received {
            authorization,
            request: request.into_inner(),
        });
        let scripted = self.0.answer.lock().unwrap().clone();
        match scripted {
            Answer::Text(text) => Ok(answer(text)),
            Answer::Fail(code, message) => Err(Status::new(code, message)),
            Answer::Gated(text) => {
                self.0.gate.acquire().await.unwrap().forget();
                Ok(answer(text))
            }
        }
    }

    type StreamChatCompletionStream = Chunks;

    async fn stream_chat_completion(
        &self,
        _: Request<ChatRequest>,
    ) -> Result<Response<Chunks>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn list_models(
        &self,
        _: Request<v1::ListModelsRequest>,
    ) -> Result<Response<v1::ListModelsResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn get_balance(
        &self,
        _: Request<v1::GetBalanceRequest>,
    ) -> Result<Response<v1::GetBalanceResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }
}

struct Gateway {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: CancellationToken,
}

impl Gateway {
    async fn start(answer: Answer) -> Self {
        let shared = Arc::new(Shared {
            answer: Mutex::new(answer),
            received: Mutex::new(Vec::new()),
            gate: Semaphore::new(0),
            in_flight: AtomicUsize::new(0),
            most_in_flight: AtomicUsize::new(0),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(
            Server::builder()
                .add_service(ApiGatewayServer::new(FakeGateway(Arc::clone(&shared))))
                .serve_with_incoming_shutdown(
                    TcpListenerStream::new(listener),
                    stop.clone().cancelled_owned(),
                ),
        );
        Self { shared, addr, stop }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn answer(&self, answer: Answer) {
        *self.shared.answer.lock().unwrap() = answer;
    }

    fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Lets one gated request answer.
    fn release(&self) {
        self.shared.gate.add_permits(1);
    }

    async fn wait_received(&self, n: usize) {
        within("gateway requests", async {
            while self.received().len() < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

// ---------------------------------------------------------------------------
// The watcher.

struct Watcher {
    _root: tempfile::TempDir,
    control: tempfile::TempDir,
    client: TestWatcherClient<Channel>,
    runs: Streaming<RunSummary>,
    service: Service<Handles, automation_test_watcher::Error>,
}

impl Watcher {
    async fn start(
        collector: Option<&TestCollector>,
        gateway: Option<GatewayConfig>,
        instance: &str,
    ) -> Self {
        let root = tempfile::tempdir().unwrap();
        let control = tempfile::tempdir().unwrap();
        std::fs::write(control.path().join("script.sh"), SCRIPT).unwrap();
        std::fs::write(control.path().join("mode"), "fail").unwrap();
        let mut config = Config::new(instance, root.path().to_path_buf());
        config.engine.command =
            format!("CONTROL='{0}' sh '{0}/script.sh'", control.path().display());
        config.service.shutdown_delay = Duration::ZERO;
        config.engine.kill_grace = Duration::from_millis(200);
        config.gateway = gateway;
        config.service.reporter = collector.map(|c| c.reporter("test-watcher", instance));
        let Served {
            service,
            client,
            runs,
        } = serve(config).await;
        Self {
            _root: root,
            control,
            client,
            runs,
            service,
        }
    }

    fn mode(&self, mode: &str) {
        std::fs::write(self.control.path().join("mode"), mode).unwrap();
    }

    /// Runs the tests now (one at a time: a run asked for during another
    /// waits for it).
    async fn trigger(&mut self) {
        let answer = self
            .client
            .trigger_run(v1::TriggerRunRequest {
                reason: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(answer.accepted, "{}", answer.message);
    }

    async fn next_run(&mut self) -> RunSummary {
        within("a run message", self.runs.message())
            .await
            .unwrap()
            .expect("the run stream stays open")
    }

    /// Runs the tests and returns the run's first message.
    async fn run_once(&mut self) -> RunSummary {
        self.trigger().await;
        self.next_run().await
    }

    async fn last_run(&mut self) -> RunSummary {
        self.client
            .get_status(v1::GetStatusRequest {})
            .await
            .unwrap()
            .into_inner()
            .last_run
            .expect("a last run")
    }

    async fn stop(self) {
        self.service
            .stop()
            .await
            .expect("the test-watcher stops cleanly");
    }
}

fn gateway_config(endpoint: String) -> GatewayConfig {
    let mut config = GatewayConfig::new(endpoint);
    config.timeout = Duration::from_secs(10);
    config
}

fn assert_unexplained(run: &RunSummary) {
    assert_eq!(
        (run.explanation.as_str(), run.explanation_error.as_str()),
        ("", ""),
        "run {}",
        run.run_id
    );
}

/// The same run, apart from the explanation fields.
fn assert_same_run(update: &RunSummary, first: &RunSummary) {
    let strip = |run: &RunSummary| RunSummary {
        explanation: String::new(),
        explanation_error: String::new(),
        ..run.clone()
    };
    assert_eq!(strip(update), strip(first));
}

fn user_message(received: &Received) -> &str {
    let messages = &received.request.messages;
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(messages[1].role, "user");
    &messages[1].content
}

/// The output part of a request: the fenced block at its end.
fn sent_output(message: &str) -> &str {
    let start = message.rfind("```text\n").expect("an output block") + "```text\n".len();
    message[start..]
        .strip_suffix("\n```")
        .expect("the block closes the message")
}

fn tw(
    instance: &'static str,
    extra: (&'static str, &'static str),
) -> Vec<(&'static str, &'static str)> {
    vec![
        ("component", "test-watcher"),
        ("component_instance", instance),
        extra,
    ]
}

// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_failure_is_explained_on_a_second_message_and_counted() {
    let collector = TestCollector::start(automation_collector::Config::new("c")).await;
    let gateway = Gateway::start(Answer::Text(ANSWER.to_owned())).await;
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("gateway-token");
    std::fs::write(&token_file, "gw-secret\n").unwrap();
    let mut config = gateway_config(gateway.endpoint());
    config.token_file = Some(token_file);
    config.max_output = 300;
    let mut w = Watcher::start(Some(&collector), Some(config), "tw-explain").await;

    // A passing run asks nothing.
    w.mode("pass");
    let passed = w.run_once().await;
    assert_eq!(passed.result, RunResult::Passed as i32);
    assert_unexplained(&passed);

    // A failing run is published at once, then again with its explanation.
    w.mode("fail");
    let failed = w.run_once().await;
    assert_eq!(failed.result, RunResult::Failed as i32);
    assert_unexplained(&failed);
    let explained = w.next_run().await;
    assert_eq!(explained.run_id, failed.run_id);
    assert_eq!(explained.explanation, ANSWER);
    assert_eq!(explained.explanation_error, "");
    assert_same_run(&explained, &failed);
    let last = w.last_run().await;
    assert_eq!(last.run_id, failed.run_id);
    assert_eq!(last.explanation, ANSWER);

    // One request, for the failure only, with the token, the failed tests
    // and the end of the output within the bound.
    let received = gateway.received();
    assert_eq!(received.len(), 1, "the passing run asked nothing");
    let got = &received[0];
    assert_eq!(got.authorization.as_deref(), Some("Bearer gw-secret"));
    assert_eq!(got.request.model, "", "the gateway's default model");
    assert_eq!(got.request.messages[0].role, "system");
    let message = user_message(got);
    assert!(message.contains("parser::handles_empty"), "{message}");
    assert!(message.contains("net::timeouts"), "{message}");
    assert!(message.contains("exit code 101"), "{message}");
    assert!(message.contains("truncated"), "{message}");
    let output = sent_output(message);
    assert!(output.len() <= 300, "{} bytes sent", output.len());
    assert!(output.len() > 250, "{} bytes sent", output.len());
    assert!(output.ends_with("run number 2\n"), "{output:?}");
    assert!(output.contains("test result: FAILED"), "{output:?}");
    assert!(!message.contains("noise line 0:"), "the start was cut");

    // An error from the gateway: the reason instead, the result unchanged.
    gateway.answer(Answer::Fail(
        tonic::Code::ResourceExhausted,
        "upstream rate limited".to_owned(),
    ));
    let failed = w.run_once().await;
    assert_unexplained(&failed);
    let update = w.next_run().await;
    assert_eq!(update.run_id, failed.run_id);
    assert_eq!(update.result, RunResult::Failed as i32);
    assert_eq!(update.explanation, "");
    assert!(
        update.explanation_error.contains("upstream rate limited")
            && update.explanation_error.contains("ResourceExhausted"),
        "{}",
        update.explanation_error
    );
    assert_same_run(&update, &failed);
    assert_eq!(
        w.last_run().await.explanation_error,
        update.explanation_error
    );

    let calls = |outcome| tw("tw-explain", ("outcome", outcome));
    let m = collector
        .eventually("api calls counted", |m| {
            m.get("test_watcher_api_calls_total", &calls("ok")) == Some(1.0)
                && m.get("test_watcher_api_calls_total", &calls("error")) == Some(1.0)
        })
        .await;
    // An explanation is no run of its own.
    assert_eq!(
        m.value(
            "test_watcher_runs_total",
            &tw("tw-explain", ("result", "failed"))
        ),
        2.0
    );
    w.stop().await;
}

#[tokio::test]
async fn a_gateway_that_is_down_or_too_slow_leaves_an_explanation_error() {
    // A port nothing listens on: port 1 (tcpmux) is privileged and unused,
    // where a port picked free and released may be taken meanwhile by
    // another test's server.
    let mut w = Watcher::start(
        None,
        Some(gateway_config("http://127.0.0.1:1".to_owned())),
        "tw",
    )
    .await;
    let failed = w.run_once().await;
    assert_unexplained(&failed);
    let update = w.next_run().await;
    assert_eq!(update.run_id, failed.run_id);
    assert_eq!(update.result, RunResult::Failed as i32);
    assert_eq!(update.explanation, "");
    assert!(
        update.explanation_error.contains("unreachable"),
        "{}",
        update.explanation_error
    );
    w.stop().await;

    // A gateway that never answers: the call gives up at the timeout.
    let gateway = Gateway::start(Answer::Gated(ANSWER.to_owned())).await;
    let mut config = gateway_config(gateway.endpoint());
    config.timeout = Duration::from_millis(300);
    let mut w = Watcher::start(None, Some(config), "tw").await;
    let failed = w.run_once().await;
    let update = w.next_run().await;
    assert_eq!(update.run_id, failed.run_id);
    assert_eq!(update.explanation, "");
    assert!(
        update.explanation_error.contains("within 300ms"),
        "{}",
        update.explanation_error
    );
    assert_eq!(gateway.received().len(), 1);
    w.stop().await;
}

#[tokio::test]
async fn one_explanation_at_a_time_and_the_newest_waiting_failure_goes_next() {
    let gateway = Gateway::start(Answer::Gated(ANSWER.to_owned())).await;
    let mut w = Watcher::start(None, Some(gateway_config(gateway.endpoint())), "tw").await;
    let first = w.run_once().await;
    gateway.wait_received(1).await;
    // Two more failures while the first is being explained: the second
    // waits, the third takes its place and the second is told so.
    let second = w.run_once().await;
    let third = w.run_once().await;
    let skipped = w.next_run().await;
    assert_eq!(skipped.run_id, second.run_id);
    assert_eq!(skipped.explanation, "");
    assert!(
        skipped.explanation_error.contains("skipped"),
        "{}",
        skipped.explanation_error
    );
    assert_same_run(&skipped, &second);

    gateway.release();
    let update = w.next_run().await;
    assert_eq!(update.run_id, first.run_id);
    assert_eq!(update.explanation, ANSWER);
    // An older run's explanation does not replace the last run.
    let last = w.last_run().await;
    assert_eq!(last.run_id, third.run_id);
    assert_unexplained(&last);

    gateway.release();
    let update = w.next_run().await;
    assert_eq!(update.run_id, third.run_id);
    assert_eq!(update.explanation, ANSWER);
    assert_eq!(w.last_run().await.explanation, ANSWER);

    let received = gateway.received();
    assert_eq!(received.len(), 2);
    assert!(user_message(&received[0]).contains("run number 1"));
    assert!(user_message(&received[1]).contains("run number 3"));
    assert_eq!(gateway.shared.most_in_flight.load(Ordering::SeqCst), 1);
    w.stop().await;
}

#[tokio::test]
async fn a_waiting_failure_is_skipped_when_a_later_run_passes() {
    let gateway = Gateway::start(Answer::Gated(ANSWER.to_owned())).await;
    let mut config = gateway_config(gateway.endpoint());
    config.max_output = 0;
    let mut w = Watcher::start(None, Some(config), "tw").await;
    let first = w.run_once().await;
    gateway.wait_received(1).await;
    let second = w.run_once().await;
    w.mode("pass");
    let passed = w.run_once().await;
    assert_eq!(passed.result, RunResult::Passed as i32);
    let skipped = w.next_run().await;
    assert_eq!(skipped.run_id, second.run_id);
    assert!(
        skipped.explanation_error.contains("passed"),
        "{}",
        skipped.explanation_error
    );
    gateway.release();
    let update = w.next_run().await;
    assert_eq!(update.run_id, first.run_id);
    assert_eq!(update.explanation, ANSWER);
    // With EXPLAIN_MAX_OUTPUT=0 no output is sent.
    let received = gateway.received();
    assert_eq!(received.len(), 1);
    let message = user_message(&received[0]);
    assert!(!message.contains("```"), "{message}");
    assert!(message.contains("parser::handles_empty"), "{message}");
    w.stop().await;
}

#[tokio::test]
async fn without_a_gateway_runs_are_as_before() {
    let collector = TestCollector::start(automation_collector::Config::new("c")).await;
    let mut w = Watcher::start(Some(&collector), None, "tw-plain").await;
    let failed = w.run_once().await;
    assert_eq!(failed.result, RunResult::Failed as i32);
    assert_unexplained(&failed);
    w.mode("pass");
    // The next message is the next run: no second message for the failure.
    let passed = w.run_once().await;
    assert_eq!(passed.run_id, failed.run_id + 1);
    assert_eq!(passed.result, RunResult::Passed as i32);
    let m = collector
        .eventually("both runs counted", |m| {
            m.get(
                "test_watcher_runs_total",
                &tw("tw-plain", ("result", "passed")),
            ) == Some(1.0)
        })
        .await;
    for outcome in ["ok", "error"] {
        assert_eq!(
            m.get(
                "test_watcher_api_calls_total",
                &tw("tw-plain", ("outcome", outcome))
            )
            .unwrap_or(0.0),
            0.0,
            "{outcome}"
        );
    }
    w.stop().await;
}
