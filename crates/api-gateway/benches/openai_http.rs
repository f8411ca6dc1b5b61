//! What the OpenAI-compatible door adds. One HTTP/1.1 load generator (hyper,
//! a fixed pool of connections, open loop at a constant rate) calls
//! (a) the fast local fake upstream directly, with the very request the
//! gateway sends it (streamed, with usage), (b) a bare axum + reqwest hop in
//! front of it that only passes bytes through (the floor of any HTTP hop on
//! the machine), and (c) the gateway's `POST /v1/chat/completions` in front
//! of the same upstream, unary and streamed. Prints p50/p99 of each, what
//! each adds to the direct call, and the process's CPU time and context
//! switches per request, at 500 and 2,000 req/s. Run with `make bench` or
//! `cargo bench -p automation-api-gateway --bench openai_http`.
//!
//! The three parties run as if they were three processes: the upstream and
//! the generator each on a single-threaded runtime of its own thread, the
//! gateway (and the bare hop) on the multi-threaded runtime of its binary.
//! Pacing runs on a thread of its own; a request's latency runs from the
//! moment the pacer releases it to its answer's last byte, so a request that
//! waits for a free connection counts its wait (no coordinated omission).
//! The targets take turns of one second, five turns each per rate, so that
//! a stall of the (shared) machine falls on all of them alike rather than
//! on whichever row ran at the time.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use automation_api_gateway::upstream::{ApiKey, install_crypto};
use automation_api_gateway::{Config, start};
use automation_testkit::service;
use automation_testkit::upstream::FakeUpstream;
use axum::body::Bytes;
use axum::serve::ListenerExt;
use http_body::Body as _;
use hyper::client::conn::http1::{SendRequest, handshake};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{Mutex, mpsc, oneshot};

/// Measured seconds per row (after a one-second warm-up).
const SECONDS: u64 = 5;
/// Connections of the load generator, the same for every target.
const CONNECTIONS: usize = 16;
const RATES: [u64; 2] = [500, 2_000];

/// Where the generator sends its requests.
#[derive(Clone)]
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

/// `rate` requests a second to `target` for `seconds`: their latencies.
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
    latencies
}

/// What one target's turns add up to.
struct Run {
    latencies: Vec<Duration>,
    /// CPU seconds and context switches, while [`usage`] can tell them.
    usage: Option<(f64, u64)>,
}

impl Run {
    fn new() -> Self {
        Self {
            latencies: Vec::new(),
            usage: Some((0.0, 0)),
        }
    }

    /// Adds what the process used between `before` and `after`.
    fn add_usage(&mut self, before: Option<(f64, u64)>, after: Option<(f64, u64)>) {
        self.usage = self.usage.zip(before.zip(after)).map(
            |((cpu, switches), ((cpu0, switches0), (cpu1, switches1)))| {
                (
                    cpu + cpu1 - cpu0,
                    switches + switches1.saturating_sub(switches0),
                )
            },
        );
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The fake upstream on a single-threaded runtime of its own thread, as if
/// it were another process: its base URL, and what stops it.
fn upstream_thread() -> (String, oneshot::Sender<()>, std::thread::JoinHandle<()>) {
    let (url_tx, url_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the upstream's runtime");
        runtime.block_on(async {
            let upstream = FakeUpstream::start().await;
            upstream.record_requests(false);
            url_tx.send(upstream.base_url()).expect("main waits");
            let _ = stop_rx.await;
            upstream.stop().await;
        });
    });
    let url = url_rx.recv().expect("the upstream starts");
    (url, stop_tx, thread)
}

/// The floor of any HTTP hop on this machine: axum in front of reqwest,
/// passing the body to the upstream and its answer back as it is, with no
/// checks, parsing or accounting, on the gateway's runtime. Its address.
async fn bare_hop(chat_url: String) -> SocketAddr {
    let client = reqwest::Client::new();
    let forward = move |body: Bytes| {
        let (client, chat_url) = (client.clone(), chat_url.clone());
        async move {
            let answer = client
                .post(chat_url)
                .header(AUTHORIZATION.as_str(), "Bearer sk-bench")
                .header(CONTENT_TYPE.as_str(), "application/json")
                .body(body)
                .send()
                .await
                .expect("the upstream answers");
            answer.bytes().await.expect("the upstream's answer")
        }
    };
    let app = axum::Router::new().route("/chat/completions", axum::routing::post(forward));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the bare hop");
    let addr = listener.local_addr().expect("the bare hop's address");
    let listener = listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// What the whole process has used so far: CPU seconds and context
/// switches (Linux's `/proc`; `None` elsewhere).
fn usage() -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the command's closing parenthesis: utime and stime are the
    // 12th and 13th fields, in clock ticks of 1/100 s.
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let mut switches = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        for line in status.lines() {
            let count = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"));
            switches += count
                .and_then(|c| c.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Some((ticks as f64 / 100.0, switches))
}

fn main() {
    // The parties' runtimes: see the module's documentation.
    let (upstream_url, stop_upstream, upstream) = upstream_thread();
    let gateway_runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the gateway's runtime");
    let mut config = Config::new("bench", &upstream_url, ApiKey::value("sk-bench".to_owned()));
    config.client_rate = None;
    config.max_concurrent = 4096;
    config.service.shutdown_delay = Duration::ZERO;
    let server = gateway_runtime
        .block_on(async {
            install_crypto();
            service::start(|listeners, shutdown| start(config, listeners, shutdown)).await
        })
        .expect("the gateway starts");
    let door = server.http;
    let bare = gateway_runtime.block_on(bare_hop(format!("{upstream_url}/chat/completions")));
    let generator = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the load generator's runtime");
    generator.block_on(async {
        let messages = serde_json::json!([{"role": "user", "content": "Explain the failure in one sentence."}]);
        let upstream_addr: SocketAddr = upstream_url
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
        let bare_hop = Arc::new(Target {
            name: "bare hop (SSE)",
            addr: bare,
            ..Target::clone(&direct)
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
            "OpenAI door overhead: the same fast local upstream called directly, through a bare \
             axum + reqwest hop (the floor of any HTTP hop here) and through \
             POST /v1/chat/completions; one load generator (hyper HTTP/1.1, {CONNECTIONS} \
             connections, open loop), {SECONDS} s per row in turns of 1 s; CPU and context \
             switches are the whole process's (generator, upstream and gateway) per request"
        );
        println!(
            "{:>6}  {:<18} {:>8} {:>8} {:>10} {:>10} {:>10} {:>10}",
            "req/s", "target", "p50 ms", "p99 ms", "added p50", "added p99", "CPU us/req", "switches"
        );
        let targets = [&direct, &bare_hop, &door_unary, &door_stream];
        for rate in RATES {
            for target in targets {
                load(target, rate, 1).await;
            }
            // The targets take turns, a second each, so that whatever else
            // the machine does in the meantime falls on all of them alike.
            let mut runs: Vec<Run> = targets.iter().map(|_| Run::new()).collect();
            for _ in 0..SECONDS {
                for (target, run) in targets.iter().zip(&mut runs) {
                    let before = usage();
                    run.latencies.extend(load(target, rate, 1).await);
                    run.add_usage(before, usage());
                }
            }
            let requests = rate * SECONDS;
            let mut base = None;
            for (target, mut run) in targets.iter().zip(runs) {
                assert_eq!(run.latencies.len() as u64, requests, "every request answered");
                run.latencies.sort();
                let latencies = &run.latencies;
                let (p50, p99) = (percentile(latencies, 0.5), percentile(latencies, 0.99));
                let (direct50, direct99) = *base.get_or_insert((p50, p99));
                let added = |a: Duration, b: Duration| ms(a) - ms(b);
                let (cpu, switches) = match run.usage {
                    Some((cpu, sw)) => (
                        format!("{:.0}", cpu * 1e6 / requests as f64),
                        format!("{:.1}", sw as f64 / requests as f64),
                    ),
                    None => ("-".to_owned(), "-".to_owned()),
                };
                println!(
                    "{rate:>6}  {:<18} {:>8.3} {:>8.3} {:>+10.3} {:>+10.3} {cpu:>10} {switches:>10}",
                    target.name,
                    ms(p50),
                    ms(p99),
                    added(p50, direct50),
                    added(p99, direct99),
                );
            }
        }
    });
    let _ = gateway_runtime.block_on(server.stop());
    let _ = stop_upstream.send(());
    upstream.join().expect("the upstream stops");
}
