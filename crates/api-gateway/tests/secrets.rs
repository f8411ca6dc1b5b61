//! The DeepSeek key never shows: every log line of the process (at trace
//! level, the libraries' included) and every error text a client sees are
//! checked for it, across answers, retries, upstream errors that echo the
//! key (whole, JSON-escaped, or cut by a length limit), a `Content-Type`
//! that carries it, a balance currency made of it, stalls and timeouts.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use automation_api_gateway::Config;
use automation_api_gateway::upstream::ApiKey;
use automation_proto::v1::{ChatMessage, ChatRequest, GetBalanceRequest};
use automation_testkit::upstream::{FakeUpstream, Reply, Sse, answer, chunk};
use automation_testkit::within;

const KEY: &str = "sk-SECRET-7f3a9c1e5b2d4f60";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every log line of this test process so far (the subscriber is global, so
/// the tests share it; each checks all lines).
fn logs() -> String {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    let logs = LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        tracing::subscriber::set_global_default(
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish(),
        )
        .unwrap();
        logs
    });
    String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned()
}

/// Fails if `text` holds any six characters in a row of `key`.
fn assert_no_part_of(key: &str, what: &str, text: &str) {
    let chars: Vec<char> = key.chars().collect();
    for window in chars.windows(6) {
        let part: String = window.iter().collect();
        assert!(
            !text.contains(&part),
            "part of the key ({part}) is in {what}: {text}"
        );
    }
}

fn assert_logs_clean(key: &str) {
    for line in logs().lines() {
        assert_no_part_of(key, "a log line", line);
    }
}

mod support;

use support::Gateway;

/// A gateway logging into [`logs`].
async fn start(config: Config) -> Gateway {
    logs();
    Gateway::start(config).await
}

impl Gateway {
    /// A chat call's error, as a client would print it.
    async fn chat_error(&mut self) -> String {
        let status = within("a call", self.client.chat_completion(ask()))
            .await
            .expect_err("the call fails");
        format!("{status:?}")
    }
}

fn config(upstream: &FakeUpstream, key: &str) -> Config {
    let mut config = Config::new("secrets", &upstream.base_url(), ApiKey::value(key.into()));
    config.service.shutdown_delay = Duration::ZERO;
    config.upstream.max_attempts = 2;
    config.upstream.backoff_base = Duration::from_millis(5);
    config.upstream.idle_timeout = Duration::from_millis(300);
    config.client_rate = None;
    config
}

fn ask() -> ChatRequest {
    ChatRequest {
        messages: vec![ChatMessage {
            role: "user".into(),
            content: "hi".into(),
            ..ChatMessage::default()
        }],
        ..ChatRequest::default()
    }
}

#[tokio::test]
async fn the_key_is_in_no_log_line_and_no_error() {
    let upstream = FakeUpstream::start().await;
    let echo = format!(
        r#"{{"error":{{"message":"Authentication Fails, Your api key: {KEY} is invalid"}}}}"#
    );
    upstream.push(answer("fine", 1, 2, 3));
    upstream.push(Reply::Status {
        status: 401,
        retry_after: None,
        body: echo.clone(),
    });
    upstream.push(Reply::Status {
        status: 429,
        retry_after: Some("0".into()),
        body: echo.clone(),
    });
    upstream.push(Reply::Status {
        status: 503,
        retry_after: None,
        body: echo.clone(),
    });
    upstream.push(Reply::Status {
        status: 400,
        retry_after: None,
        body: echo.clone(),
    });
    upstream.push(Reply::Stream(vec![
        Sse::Data(chunk("a")),
        Sse::Pause(Duration::from_secs(5)),
    ]));
    let mut c = config(&upstream, KEY);
    c.upstream_check_interval = Duration::from_millis(50);
    let mut gw = start(c).await;
    let mut errors = Vec::new();
    for _ in 0..5 {
        if let Err(status) = within("a call", gw.client.chat_completion(ask())).await {
            errors.push(format!("{status:?}"));
        }
    }
    let mut stream = gw
        .client
        .stream_chat_completion(ask())
        .await
        .unwrap()
        .into_inner();
    loop {
        match within("a chunk", stream.message()).await {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(status) => {
                errors.push(format!("{status:?}"));
                break;
            }
        }
    }
    upstream.fail_models(401);
    tokio::time::sleep(Duration::from_millis(200)).await;
    gw.stop().await;

    assert!(errors.len() >= 4, "{errors:#?}");
    for error in &errors {
        assert_no_part_of(KEY, "an error", error);
    }
    assert!(logs().lines().count() > 20, "logs were captured");
    assert_logs_clean(KEY);
}

#[tokio::test]
async fn a_key_echoed_in_the_content_type_shows_nowhere() {
    let upstream = FakeUpstream::start().await;
    upstream.push(Reply::Body {
        status: 200,
        content_type: format!("text/html; charset=utf-8; echo={KEY}"),
        body: "<html>hi</html>".into(),
    });
    let mut gw = start(config(&upstream, KEY)).await;
    let error = gw.chat_error().await;
    assert!(error.contains("Content-Type"), "{error}");
    assert_no_part_of(KEY, "an error", &error);
    gw.stop().await;
    assert_logs_clean(KEY);
}

#[tokio::test]
async fn a_key_cut_by_the_error_body_limit_shows_nowhere() {
    let upstream = FakeUpstream::start().await;
    // Only the first 64 KiB of an error body are read: the key straddles
    // the cut, so what is read ends with the key's first characters.
    let padding = " ".repeat(64 * 1024 - 14);
    upstream.push(Reply::Status {
        status: 401,
        retry_after: None,
        body: format!("{padding}{KEY} is not a valid key"),
    });
    let mut gw = start(config(&upstream, KEY)).await;
    let error = gw.chat_error().await;
    assert!(error.contains("401"), "{error}");
    assert_no_part_of(KEY, "an error", &error);
    gw.stop().await;
    assert_logs_clean(KEY);
}

#[tokio::test]
async fn a_json_escaped_key_cut_at_the_error_text_limit_shows_nowhere() {
    let upstream = FakeUpstream::start().await;
    // JSON may write any character as \uXXXX; decoded, the key straddles
    // the 500-character cut of error texts.
    let escaped = KEY.replace('-', "\\u002d");
    let padding = "x".repeat(480);
    for body in [
        format!(r#"{{"error":{{"message":"{padding}{escaped} is invalid"}}}}"#),
        format!(r#"{{"error":{{"message":"bad key {escaped}"}}}}"#),
    ] {
        upstream.push(Reply::Status {
            status: 401,
            retry_after: None,
            body,
        });
    }
    let mut gw = start(config(&upstream, KEY)).await;
    for _ in 0..2 {
        let error = gw.chat_error().await;
        assert!(error.contains("401"), "{error}");
        assert_no_part_of(KEY, "an error", &error);
        assert_no_part_of(&KEY.replace('-', "\\\\u002d"), "an error", &error);
    }
    gw.stop().await;
    assert_logs_clean(KEY);
}

#[tokio::test]
async fn a_key_as_the_balance_currency_shows_nowhere() {
    // A key of the characters a currency may have, and a longer one that
    // is cut where the refused currency is quoted.
    for key in ["K7f3a9c1e5b2d4f6", KEY] {
        let upstream = FakeUpstream::start().await;
        upstream.set_balance(serde_json::json!({"is_available": true, "balance_infos": [
            {"currency": "USD", "total_balance": "1.00"},
            {"currency": key, "total_balance": "2.00"}]}));
        let mut gw = start(config(&upstream, key)).await;
        let answer = within("GetBalance", gw.client.get_balance(GetBalanceRequest {})).await;
        let shown = format!("{answer:?}");
        assert!(
            answer.is_err(),
            "a balance naming the key is refused: {shown}"
        );
        assert_no_part_of(key, "the GetBalance answer", &shown);
        // What the heartbeat reports to the collector.
        let kept = format!("{:?}", gw.handles.gateway.last_balance());
        assert_no_part_of(key, "the balance the heartbeat reports", &kept);
        gw.stop().await;
        assert_logs_clean(key);
    }
}
