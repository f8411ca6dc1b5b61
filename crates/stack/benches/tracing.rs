//! What tracing costs, printed (`make bench`): the `automation-stack`
//! binary run three times, tracing off, on with every trace kept
//! (`traceidratio` 1.0) and on with one in a hundred (0.01), exporting over
//! OTLP/gRPC to an in-process receiver. For each:
//!
//! * the gateway: unary chats one after another against a local fake
//!   DeepSeek that answers at once, so the figure is the gateway's own
//!   latency (p50, p99) and the difference to tracing off;
//! * the collector: pushes of B events from R connections as fast as the
//!   acknowledgements come back: events/s.
//!
//! Environment: `BENCH_CHATS` (default 500), `BENCH_REPORTERS` (2),
//! `BENCH_BATCH` (200), `BENCH_SECONDS` (3).

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use automation_proto::v1::api_gateway_client::ApiGatewayClient;
use automation_proto::v1::collector_client::CollectorClient;
use automation_proto::v1::{self, ChatMessage, ChatRequest, event::Payload};
use automation_testkit::upstream::FakeUpstream;
use common::process::StackProcess;
use common::repository;
use common::traces::TraceReceiver;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Unary chats, one after another: sorted latencies.
async fn chats(gateway: SocketAddr, count: u64) -> Vec<Duration> {
    let mut client = ApiGatewayClient::connect(format!("http://{gateway}"))
        .await
        .expect("connect to the gateway");
    let request = ChatRequest {
        messages: vec![ChatMessage {
            role: "user".to_owned(),
            content: "Explain the failure in one sentence.".to_owned(),
            ..ChatMessage::default()
        }],
        ..ChatRequest::default()
    };
    for _ in 0..20 {
        client.chat_completion(request.clone()).await.expect("chat");
    }
    let mut latencies = Vec::new();
    for _ in 0..count {
        let started = Instant::now();
        client.chat_completion(request.clone()).await.expect("chat");
        latencies.push(started.elapsed());
    }
    latencies.sort();
    latencies
}

fn batch(reporter: usize, size: u64) -> v1::EventBatch {
    v1::EventBatch {
        source: Some(v1::Source {
            service: "test-watcher".into(),
            instance: format!("bench-{reporter}"),
            version: "bench".into(),
            incarnation: 1,
        }),
        sequence: 0,
        events: (0..size)
            .map(|_| v1::Event {
                time: None,
                payload: Some(Payload::FileChanges(v1::FileChanges {
                    files_processed: 2,
                    debounce_seconds: Some(0.1),
                    processing_seconds: Some(0.002),
                    changed_files_pending: 0,
                })),
            })
            .collect(),
    }
}

/// Events per second the collector acknowledged.
async fn ingest(collector: SocketAddr, reporters: usize, size: u64, seconds: u64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for r in 0..reporters {
        let mut client = CollectorClient::connect(format!("http://{collector}"))
            .await
            .expect("connect to the collector");
        let mut template = batch(r, size);
        tasks.push(tokio::spawn(async move {
            let mut events = 0u64;
            while Instant::now() < deadline {
                template.sequence += 1;
                let answer = client.push(template.clone()).await.expect("push");
                events += u64::from(answer.into_inner().accepted);
            }
            events
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("reporter");
    }
    total as f64 / started.elapsed().as_secs_f64()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let count = env("BENCH_CHATS", 500);
    let reporters = env("BENCH_REPORTERS", 2) as usize;
    let size = env("BENCH_BATCH", 200);
    let seconds = env("BENCH_SECONDS", 3);
    let upstream = FakeUpstream::start().await;
    let (receiver, otlp) = TraceReceiver::start().await;
    let otlp = format!("http://{otlp}");
    let binary = std::path::PathBuf::from(env!("CARGO_BIN_EXE_automation-stack"));

    println!(
        "tracing: {count} unary chats through the gateway; collector ingest of {size}-event pushes from {reporters} connections for {seconds} s"
    );
    println!(
        "{:<18} {:>10} {:>10} {:>14} {:>14} {:>16} {:>14}",
        "tracing",
        "chat p50",
        "chat p99",
        "p50 vs off",
        "p99 vs off",
        "ingest events/s",
        "spans received"
    );
    let modes: [(&str, Option<&str>); 3] = [
        ("off", None),
        ("on, sampler 1.0", Some("1.0")),
        ("on, sampler 0.01", Some("0.01")),
    ];
    let mut off: Option<(Duration, Duration)> = None;
    for (name, ratio) in modes {
        let repo = repository();
        let mut vars = vec![("CLIENT_RATE_LIMIT", "0"), ("RUST_LOG", "warn")];
        if let Some(ratio) = ratio {
            vars.extend([
                ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str()),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", ratio),
                ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ]);
        }
        let before = receiver.spans().len();
        let stack = StackProcess::start(binary.clone(), repo.path(), &upstream, &vars).await;
        let latencies = chats(stack.gateway, count).await;
        let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
        let rate = ingest(stack.collector, reporters, size, seconds).await;
        // Let the last batch of spans arrive before counting.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let spans = receiver.spans().len() - before;
        let (d50, d99) = off.map_or((0.0, 0.0), |(o50, o99)| {
            (ms(p50) - ms(o50), ms(p99) - ms(o99))
        });
        println!(
            "{name:<18} {:>8.3}ms {:>8.3}ms {:>+12.3}ms {:>+12.3}ms {rate:>16.0} {spans:>14}",
            ms(p50),
            ms(p99),
            d50,
            d99,
        );
        off.get_or_insert((p50, p99));
        drop(stack);
    }
}
