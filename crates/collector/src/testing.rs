//! A real collector for tests, on 127.0.0.1 ports chosen by the OS, with a
//! gRPC client and a `/metrics` reader. Other crates' tests use it as the
//! collector their services report to.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use automation_proto::v1::collector_client::CollectorClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use automation_telemetry::serve::Listeners;

use crate::{Config, Handles, run};

/// A collector serving on loopback until stopped (or dropped).
#[derive(Debug)]
pub struct TestCollector {
    /// The gRPC address.
    pub grpc: SocketAddr,
    /// The HTTP admin address.
    pub http: SocketAddr,
    /// The running collector's state and health.
    pub handles: Handles,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), crate::Error>>>,
}

impl TestCollector {
    /// Starts a collector with `config` on fresh ports.
    pub async fn start(config: Config) -> Self {
        Self::start_on(config, "127.0.0.1:0".parse().expect("address")).await
    }

    /// Starts a collector with `config`, gRPC on `grpc` (to restart one on
    /// the port it had).
    pub async fn start_on(mut config: Config, grpc: SocketAddr) -> Self {
        config.shutdown_delay = Duration::ZERO;
        let grpc = bind_retrying(grpc).await;
        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind HTTP");
        let (grpc_addr, http_addr) = (
            grpc.local_addr().expect("addr"),
            http.local_addr().expect("addr"),
        );
        let shutdown = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(run(
            config,
            Listeners { grpc, http },
            shutdown.clone(),
            Some(tx),
        ));
        let handles = rx.await.expect("collector started");
        Self {
            grpc: grpc_addr,
            http: http_addr,
            handles,
            shutdown,
            task: Some(task),
        }
    }

    /// `http://127.0.0.1:<grpc port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// A gRPC client connected to it.
    pub async fn client(&self) -> CollectorClient<Channel> {
        CollectorClient::connect(self.endpoint())
            .await
            .expect("connect to the collector")
    }

    /// The `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        let (status, body) = http_get(self.http, "/metrics").await;
        assert_eq!(status, 200, "/metrics answered {status}: {body}");
        body
    }

    /// The `/metrics` samples.
    pub async fn metrics(&self) -> Samples {
        Samples::parse(&self.metrics_text().await)
    }

    /// Polls `/metrics` until `check` holds (panics after 30 s, naming `what`).
    pub async fn eventually(&self, what: &str, check: impl Fn(&Samples) -> bool) -> Samples {
        within(what, async {
            loop {
                let samples = self.metrics().await;
                if check(&samples) {
                    return samples;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
        .await
    }

    /// Shuts it down gracefully and waits until it has stopped.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestCollector {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Runs the real `promtool check metrics` on `text`: panics with its report
/// when it fails or has any remark.
pub fn promtool_check_metrics(text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is needed (Debian package prometheus; `make test` installs it)");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool ends");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{report}"
    );
    assert!(report.trim().is_empty(), "promtool has remarks:\n{report}");
}

/// `fut`'s output, or a panic naming `what` after 30 s: a test that would
/// hang fails instead.
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

async fn bind_retrying(addr: SocketAddr) -> TcpListener {
    // A port just released by a stopped collector may take a moment to free.
    for _ in 0..100 {
        if let Ok(listener) = TcpListener::bind(addr).await {
            return listener;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    TcpListener::bind(addr).await.expect("bind gRPC")
}

/// A plain HTTP/1.1 GET: the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect HTTP");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// Parsed samples of a Prometheus text exposition.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Samples {
    /// Parses the text format (sample lines; comments skipped).
    pub fn parse(text: &str) -> Self {
        let mut samples = Vec::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or(f64::NAN),
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                None => (series, BTreeMap::new()),
            };
            samples.push((name.to_owned(), labels, value));
        }
        Self { samples }
    }

    /// The value of the one sample of `name` whose labels include `labels`;
    /// `None` when there is none, a panic when several match.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<f64> = self.matching(name, labels).map(|(_, v)| v).collect();
        assert!(
            found.len() <= 1,
            "{name} {labels:?} matches {} samples",
            found.len()
        );
        found.first().copied()
    }

    /// Like [`Samples::get`], panicking when absent.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
    }

    /// Every sample of `name` whose labels include `labels`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = (&'a BTreeMap<String, String>, f64)> + 'a {
        self.samples
            .iter()
            .filter(move |(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).is_some_and(|x| x == v))
            })
            .map(|(_, l, v)| (l, *v))
    }

    /// Whether any sample of `name` has labels including `labels`.
    pub fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.matching(name, labels).next().is_some()
    }

    /// How many samples there are.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, other)) => value.push(other),
                    None => {}
                },
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').trim().to_owned(), value);
        rest = &after[end..];
    }
    labels
}
