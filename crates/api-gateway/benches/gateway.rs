//! The overhead the gateway adds: the same short streamed answer fetched
//! directly from a local fake upstream (HTTP, as a client of DeepSeek would)
//! and through the gateway (gRPC `ChatCompletion`), open loop at a fixed
//! rate, p50 and p99; and the process RSS under that load. Run with
//! `make bench` or `cargo bench -p automation-api-gateway --bench gateway`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use automation_api_gateway::upstream::{ApiKey, install_crypto};
use automation_api_gateway::{Config, start};
use automation_proto::v1::api_gateway_client::ApiGatewayClient;
use automation_proto::v1::{ChatMessage, ChatRequest};
use automation_testkit::service;
use automation_testkit::upstream::FakeUpstream;
use tokio::sync::Mutex;

const SECONDS: u64 = 4;
const CONNECTIONS: usize = 8;

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Fires `rate` requests per second for `SECONDS`, each as its own task,
/// and returns the sorted latencies.
async fn open_loop<F, Fut>(rate: u64, call: F) -> Vec<Duration>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let call = Arc::new(call);
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let total = rate * SECONDS;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for n in 0..total {
        tokio::time::sleep_until(start + interval * n as u32).await;
        let (call, latencies) = (Arc::clone(&call), Arc::clone(&latencies));
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            call(n as usize).await;
            latencies.lock().await.push(t.elapsed());
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut v = Arc::try_unwrap(latencies).unwrap().into_inner();
    v.sort();
    v
}

fn request() -> ChatRequest {
    ChatRequest {
        messages: vec![ChatMessage {
            role: "user".to_owned(),
            content: "Explain the failure in one sentence.".to_owned(),
            ..ChatMessage::default()
        }],
        ..ChatRequest::default()
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        install_crypto();
        let upstream = FakeUpstream::start().await;
        let mut config = Config::new("bench", &upstream.base_url(), ApiKey::value("sk-bench".to_owned()));
        config.client_rate = None;
        config.max_concurrent = 4096;
        config.service.shutdown_delay = Duration::ZERO;
        let server = service::start(|listeners, shutdown| start(config, listeners, shutdown))
            .await
            .expect("the gateway starts");
        let addr = server.grpc;
        let rss_idle = rss_mib();

        let mut clients = Vec::new();
        for _ in 0..CONNECTIONS {
            clients.push(ApiGatewayClient::connect(format!("http://{addr}")).await.unwrap());
        }
        let clients = Arc::new(clients);
        let http_client = reqwest::Client::builder().build().unwrap();
        let url = format!("{}/chat/completions", upstream.base_url());
        let body = serde_json::json!({
            "model": "deepseek-chat",
            "messages": [{"role": "user", "content": "Explain the failure in one sentence."}],
            "stream": true,
            "stream_options": {"include_usage": true}
        });

        println!("gateway overhead: the same streamed answer, direct (HTTP) vs through the gateway (gRPC), {SECONDS} s per rate");
        // Warm up both paths.
        for _ in 0..200 {
            let mut c = clients[0].clone();
            c.chat_completion(request()).await.unwrap();
        }
        for rate in [500u64, 2_000] {
            let direct = {
                let (client, url, body) = (http_client.clone(), url.clone(), body.clone());
                open_loop(rate, move |_| {
                    let (client, url, body) = (client.clone(), url.clone(), body.clone());
                    async move {
                        let response = client
                            .post(&url)
                            .bearer_auth("sk-bench")
                            .json(&body)
                            .send()
                            .await
                            .unwrap();
                        let text = response.text().await.unwrap();
                        assert!(text.contains("[DONE]"));
                    }
                })
                .await
            };
            let rss_before = rss_mib();
            let gateway = {
                let clients = Arc::clone(&clients);
                open_loop(rate, move |n| {
                    let mut client = clients[n % CONNECTIONS].clone();
                    async move {
                        let r = client.chat_completion(request()).await.unwrap().into_inner();
                        assert!(!r.content.is_empty());
                    }
                })
                .await
            };
            let rss_loaded = rss_mib();
            let (d50, d99) = (percentile(&direct, 0.5), percentile(&direct, 0.99));
            let (g50, g99) = (percentile(&gateway, 0.5), percentile(&gateway, 0.99));
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            println!(
                "{rate:>5} req/s  direct p50 {:.3} ms p99 {:.3} ms | gateway p50 {:.3} ms p99 {:.3} ms | added p50 {:.3} ms p99 {:.3} ms | RSS {:.1} MiB (idle {:.1}, before {:.1})",
                ms(d50),
                ms(d99),
                ms(g50),
                ms(g99),
                ms(g50.saturating_sub(d50)),
                ms(g99.saturating_sub(d99)),
                rss_loaded,
                rss_idle,
                rss_before,
            );
        }
        let _ = server.stop().await;
        upstream.stop().await;
    });
}
