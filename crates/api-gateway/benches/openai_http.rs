//! What the OpenAI-compatible door adds. One HTTP/1.1 load generator (hyper,
//! a fixed pool of connections, open loop at a constant rate) calls
//! (a) the fast local fake upstream directly, with the very request the
//! gateway sends it (streamed, with usage), and (b) the gateway's
//! `POST /v1/chat/completions` in front of the same upstream, unary and
//! streamed. Prints p50/p99 of each and what the gateway adds, at 500 and
//! 2,000 req/s. Run with `make bench` or
//! `cargo bench -p automation-api-gateway --bench openai_http`.
//!
//! Pacing runs on its own thread; a request's latency runs from the moment
//! the pacer releases it to its answer's last byte, so a request that waits
//! for a free connection counts its wait (no coordinated omission).

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use automation_api_gateway::upstream::{ApiKey, install_crypto};
use automation_api_gateway::{Config, start};
use automation_testkit::service;
use automation_testkit::upstream::FakeUpstream;
use http_body::Body as _;
use hyper::client::conn::http1::{SendRequest, handshake};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{Mutex, mpsc};

/// Measured seconds per row (after a one-second warm-up).
const SECONDS: u64 = 5;
/// Connections of the load generator, the same for every target.
const CONNECTIONS: usize = 16;
const RATES: [u64; 2] = [500, 2_000];

/// Where the generator sends its requests.
struct Target {
    name: &'static str,
    addr: SocketAddr,
    path: String,
    body: String,
    authorization: &'static str,
    /// Text every answer must hold.
    expect: &'static str,
}

async fn connect(addr: SocketAddr) -> SendRequest<String> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (sender, connection) = handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(connection);
    sender
}

/// One request, its answer read to the end.
async fn call(sender: &mut SendRequest<String>, target: &Target) {
    poll_fn(|cx| sender.poll_ready(cx)).await.expect("ready");
    let request = hyper::Request::post(target.path.as_str())
        .header(HOST, target.addr.to_string())
        .header(CONTENT_TYPE, "application/json")
        .header(AUTHORIZATION, target.authorization)
        .body(target.body.clone())
        .expect("request");
    let response = sender.send_request(request).await.expect("send");
    assert!(
        response.status().is_success(),
        "{}: {}",
        target.name,
        response.status()
    );
    let mut body = response.into_body();
    let mut answer = Vec::new();
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        if let Ok(data) = frame.expect("body").into_data() {
            answer.extend_from_slice(&data);
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.contains(target.expect), "{}: {answer}", target.name);
}

/// `rate` requests a second to `target` for `seconds`: the sorted latencies.
async fn load(target: &Arc<Target>, rate: u64, seconds: u64) -> Vec<Duration> {
    let (tx, rx) = mpsc::unbounded_channel::<Instant>();
    let rx = Arc::new(Mutex::new(rx));
    let mut workers = Vec::new();
    for _ in 0..CONNECTIONS {
        let (target, rx) = (Arc::clone(target), Arc::clone(&rx));
        let mut sender = connect(target.addr).await;
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let released = rx.lock().await.recv().await;
                let Some(released) = released else {
                    return latencies;
                };
                call(&mut sender, &target).await;
                latencies.push(released.elapsed());
            }
        }));
    }
    let total = rate * seconds;
    let interval = Duration::from_secs(1) / u32::try_from(rate).expect("a small rate");
    // A thread of its own paces more evenly than the runtime's 1 ms timer.
    let pacer = std::thread::spawn(move || {
        let start = Instant::now();
        for n in 0..total {
            let at = start + interval * u32::try_from(n).expect("a short run");
            if let Some(wait) = at.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            tx.send(Instant::now()).expect("workers listen");
        }
    });
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.expect("worker"));
    }
    pacer.join().expect("pacer");
    latencies.sort();
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        install_crypto();
        let upstream = FakeUpstream::start().await;
        upstream.record_requests(false);
        let mut config = Config::new("bench", &upstream.base_url(), ApiKey::value("sk-bench".to_owned()));
        config.client_rate = None;
        config.max_concurrent = 4096;
        config.service.shutdown_delay = Duration::ZERO;
        let server = service::start(|listeners, shutdown| start(config, listeners, shutdown))
            .await
            .expect("the gateway starts");
        let door = server.http;

        let messages = serde_json::json!([{"role": "user", "content": "Explain the failure in one sentence."}]);
        let upstream_addr: SocketAddr = upstream
            .base_url()
            .trim_start_matches("http://")
            .parse()
            .expect("the upstream's address");
        let direct = Arc::new(Target {
            name: "direct (SSE)",
            addr: upstream_addr,
            path: "/chat/completions".to_owned(),
            // What the gateway sends the upstream for every call.
            body: serde_json::json!({"model": "deepseek-chat", "messages": messages,
                "stream": true, "stream_options": {"include_usage": true}})
            .to_string(),
            authorization: "Bearer sk-bench",
            expect: "[DONE]",
        });
        let door_unary = Arc::new(Target {
            name: "door unary",
            addr: door,
            path: "/v1/chat/completions".to_owned(),
            body: serde_json::json!({"model": "deepseek-chat", "messages": messages}).to_string(),
            authorization: "Bearer client",
            expect: "\"Hello!\"",
        });
        let door_stream = Arc::new(Target {
            name: "door stream (SSE)",
            addr: door,
            path: "/v1/chat/completions".to_owned(),
            body: serde_json::json!({"model": "deepseek-chat", "messages": messages,
                "stream": true, "stream_options": {"include_usage": true}})
            .to_string(),
            authorization: "Bearer client",
            expect: "[DONE]",
        });

        println!(
            "OpenAI door overhead: the same fast local upstream called directly and through \
             POST /v1/chat/completions; one load generator (hyper HTTP/1.1, {CONNECTIONS} \
             connections, open loop), {SECONDS} s per row"
        );
        println!(
            "{:>6}  {:<18} {:>9} {:>9} {:>11} {:>11}",
            "req/s", "target", "p50 ms", "p99 ms", "added p50", "added p99"
        );
        for rate in RATES {
            let mut base = None;
            for target in [&direct, &door_unary, &door_stream] {
                load(target, rate, 1).await;
                let latencies = load(target, rate, SECONDS).await;
                assert_eq!(latencies.len() as u64, rate * SECONDS, "every request answered");
                let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
                let (direct50, direct99) = *base.get_or_insert((p50, p99));
                let added = |a: Duration, b: Duration| ms(a) - ms(b);
                println!(
                    "{rate:>6}  {:<18} {:>9.3} {:>9.3} {:>+11.3} {:>+11.3}",
                    target.name,
                    ms(p50),
                    ms(p99),
                    added(p50, direct50),
                    added(p99, direct99),
                );
            }
        }
        let _ = server.stop().await;
        upstream.stop().await;
    });
}
