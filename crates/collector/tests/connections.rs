//! What one client can hold of the collector: open streams, silent
//! connections and pushes whose bodies never come must not keep others out,
//! and what tonic refuses before decoding is answered plainly and counted.
//! Hostile clients here speak raw HTTP/2 (the `h2` crate) or raw TCP.

use std::net::SocketAddr;
use std::time::Duration;

use automation_collector::{Config, catalog};
use automation_proto::v1::{self, event::Payload};
use automation_testkit::{TestCollector, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;
use tonic::codegen::{Bytes, http};

fn batch(instance: &str, sequence: u64, events: usize) -> v1::EventBatch {
    v1::EventBatch {
        source: Some(v1::Source {
            service: "test-watcher".into(),
            instance: instance.into(),
            version: "1.0.0".into(),
            incarnation: 7,
        }),
        sequence,
        events: (0..events)
            .map(|_| v1::Event {
                time: None,
                payload: Some(Payload::FileChanges(v1::FileChanges {
                    files_processed: 1,
                    ..Default::default()
                })),
            })
            .collect(),
    }
}

/// A raw HTTP/2 connection to the collector's gRPC port.
async fn h2_connection(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    tokio::spawn(connection);
    client
}

fn push_request(addr: SocketAddr) -> http::Request<()> {
    http::Request::post(format!("http://{addr}/automation.v1.Collector/Push"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request")
}

/// A gRPC frame header announcing `len` bytes of message.
fn frame_header(len: u32) -> Bytes {
    let mut header = vec![0u8];
    header.extend_from_slice(&len.to_be_bytes());
    Bytes::from(header)
}

/// The gRPC status of a raw response (trailers-only or in trailers).
async fn grpc_status(response: h2::client::ResponseFuture) -> (i32, String) {
    let response = response.await.expect("response");
    let read = |headers: &http::HeaderMap| {
        headers.get("grpc-status").map(|code| {
            let message = headers
                .get("grpc-message")
                .map(|m| m.to_str().unwrap_or("").to_owned())
                .unwrap_or_default();
            (code.to_str().unwrap().parse().unwrap(), message)
        })
    };
    if let Some(found) = read(response.headers()) {
        return found;
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        chunk.expect("body");
    }
    let trailers = body
        .trailers()
        .await
        .expect("trailers")
        .expect("some trailers");
    read(&trailers).expect("grpc-status in the trailers")
}

#[tokio::test]
async fn one_connection_with_stalled_pushes_cannot_keep_other_reporters_out() {
    let mut config = Config::new("collector-test");
    config.max_concurrent_pushes = 32;
    config.service.connections.request_body_timeout = Duration::from_secs(2);
    let collector = TestCollector::start(config).await;

    // One connection opens 40 pushes whose bodies never finish.
    let attacker = h2_connection(collector.grpc).await;
    let mut stalled = Vec::new();
    for _ in 0..40 {
        let mut sender = attacker.clone().ready().await.expect("stream capacity");
        let (response, mut body) = sender
            .send_request(push_request(collector.grpc), false)
            .expect("open a stream");
        body.send_data(frame_header(1_000), false).expect("send");
        body.send_data(Bytes::from_static(b"\x0a"), false)
            .expect("send");
        stalled.push((response, body));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Another reporter still gets in while they are open.
    let answer = within(
        "a push beside the stalled ones",
        collector.client().await.push(batch("honest", 1, 3)),
    )
    .await
    .expect("the honest reporter's push is applied");
    assert_eq!(answer.into_inner().accepted, 3);

    // The stalled pushes end: refused past the connection's share, or out
    // of time for their bodies, and each is counted.
    let mut codes = Vec::new();
    for (response, _body) in stalled {
        codes.push(
            within("a stalled push's answer", grpc_status(response))
                .await
                .0,
        );
    }
    let exhausted = codes
        .iter()
        .filter(|c| **c == Code::ResourceExhausted as i32)
        .count();
    let timed_out = codes
        .iter()
        .filter(|c| **c == Code::DeadlineExceeded as i32)
        .count();
    assert_eq!(exhausted + timed_out, 40, "{codes:?}");
    assert!(timed_out > 0 && exhausted > 0, "{codes:?}");
    let m = collector.metrics().await;
    assert_eq!(
        m.value("collector_pushes_total", &[("code", "timeout")]),
        timed_out as f64
    );
    assert_eq!(
        m.value("collector_pushes_total", &[("code", "exhausted")]),
        exhausted as f64
    );
}

/// Reads until the server closes the connection (EOF or reset).
async fn closed_by_server(mut stream: TcpStream) {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[tokio::test]
async fn silent_and_idle_connections_are_closed() {
    let mut config = Config::new("collector-test");
    config.service.connections.handshake_timeout = Duration::from_millis(300);
    config.service.connections.idle_timeout = Duration::from_millis(800);
    let collector = TestCollector::start(config).await;

    // Connections that never say anything.
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(TcpStream::connect(collector.grpc).await.expect("connect"));
    }
    // One that sends the HTTP/2 preface and settings, then no request.
    let mut quiet = TcpStream::connect(collector.grpc).await.expect("connect");
    quiet
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("preface");

    within("silent connections closed", async {
        for stream in silent {
            closed_by_server(stream).await;
        }
    })
    .await;
    within(
        "a connection without requests closed",
        closed_by_server(quiet),
    )
    .await;

    // A client whose connection went idle and was closed connects again.
    let mut client = collector.client().await;
    client.push(batch("tw", 1, 1)).await.expect("first push");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let again = within("a push after the idle close", async {
        loop {
            match client.push(batch("tw", 2, 1)).await {
                Ok(answer) => return answer.into_inner(),
                Err(status) if status.code() == Code::Unavailable => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(status) => panic!("{status:?}"),
            }
        }
    })
    .await;
    assert_eq!(again.accepted, 1);
}

/// Reads HTTP/2 frames until the server closes the connection; the type
/// of each frame seen.
async fn frame_types_until_closed(mut stream: TcpStream) -> Vec<u8> {
    let (mut types, mut pending, mut chunk) = (Vec::new(), Vec::new(), [0u8; 4096]);
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return types,
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
        }
        while pending.len() >= 9 {
            let length = u32::from_be_bytes([0, pending[0], pending[1], pending[2]]) as usize;
            if pending.len() < 9 + length {
                break;
            }
            types.push(pending[3]);
            pending.drain(..9 + length);
        }
    }
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_disconnected() {
    const PING: u8 = 6;
    let mut config = Config::new("collector-test");
    config.service.connections.keepalive_interval = Duration::from_millis(200);
    config.service.connections.keepalive_timeout = Duration::from_millis(200);
    // The idle timeout (5 minutes) is far away: only the pings can close it.
    let collector = TestCollector::start(config).await;
    // A peer that handshakes, then goes silent, as a vanished node would.
    let mut gone = TcpStream::connect(collector.grpc).await.expect("connect");
    gone.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("preface");
    let types = within(
        "the unanswered ping closes the connection",
        frame_types_until_closed(gone),
    )
    .await;
    assert!(types.contains(&PING), "frames seen: {types:?}");
}

#[tokio::test]
async fn undecodable_and_oversized_pushes_are_answered_plainly_and_counted() {
    let mut config = Config::new("collector-test");
    config.limits.max_batch_bytes = 1_000;
    let collector = TestCollector::start(config).await;

    let mut sender = h2_connection(collector.grpc).await.ready().await.unwrap();
    let (response, mut body) = sender
        .send_request(push_request(collector.grpc), false)
        .unwrap();
    body.send_data(frame_header(3), false).unwrap();
    body.send_data(Bytes::from_static(b"\xff\xff\xff"), true)
        .unwrap();
    let (code, message) = within("the undecodable push's answer", grpc_status(response)).await;
    assert_eq!(code, Code::InvalidArgument as i32, "{message}");
    assert!(message.contains("undecodable"), "{message}");

    // Far over the batch limit: refused before decoding.
    let status = collector
        .client()
        .await
        .push(batch("tw", 1, 2_000))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("too large"), "{status:?}");

    let m = collector.metrics().await;
    assert_eq!(
        m.value("collector_pushes_total", &[("code", "invalid")]),
        1.0
    );
    assert_eq!(
        m.value("collector_pushes_total", &[("code", "too_large")]),
        1.0
    );
    assert!(catalog::PUSH_CODES.contains(&"too_large"));
}

#[tokio::test]
async fn the_server_announces_its_stream_limit_per_connection() {
    let mut config = Config::new("collector-test");
    config.service.connections.max_concurrent_streams = 30;
    let collector = TestCollector::start(config).await;
    let mut sender = h2_connection(collector.grpc).await.ready().await.unwrap();
    // One finished exchange: the server's settings have arrived by then.
    let (response, mut body) = sender
        .send_request(push_request(collector.grpc), false)
        .unwrap();
    body.send_data(frame_header(0), true).unwrap();
    let _ = within("an answer", grpc_status(response)).await;
    assert_eq!(sender.current_max_send_streams(), 30);
}

#[tokio::test]
async fn half_handshakes_and_idle_http_connections_are_closed() {
    let mut config = Config::new("collector-test");
    config.service.connections.handshake_timeout = Duration::from_millis(300);
    let collector = TestCollector::start(config).await;

    let silent = TcpStream::connect(collector.http).await.expect("connect");
    within("a silent HTTP connection closed", closed_by_server(silent)).await;
    // A part of the HTTP/2 preface, then nothing: on the HTTP port and on
    // the gRPC port (whose idle timeout is minutes: the handshake's holds).
    for addr in [collector.http, collector.grpc] {
        let mut half = TcpStream::connect(addr).await.expect("connect");
        half.write_all(b"PRI * HTT").await.expect("a part");
        within("a half preface closed", closed_by_server(half)).await;
    }

    // A kept-alive connection after its answer, and one that dribbles a
    // request head too slowly.
    let mut kept = TcpStream::connect(collector.http).await.expect("connect");
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: collector\r\n\r\n")
        .await
        .expect("request");
    let mut answer = [0u8; 12];
    kept.read_exact(&mut answer).await.expect("an answer");
    assert_eq!(&answer, b"HTTP/1.1 200");
    let mut slow = TcpStream::connect(collector.http).await.expect("connect");
    slow.write_all(b"GET /health HTTP/1.1\r\n")
        .await
        .expect("a start");
    within(
        "an idle kept-alive connection closed",
        closed_by_server(kept),
    )
    .await;
    within("a slow request head cut off", closed_by_server(slow)).await;

    // The port still serves.
    let (status, _) = automation_testkit::http_get(collector.http, "/health").await;
    assert_eq!(status, 200);
}
