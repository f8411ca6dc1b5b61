//! A plain HTTP/1.1 client for the admin ports: what a probe or a scraper
//! sends, nothing more.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A plain HTTP/1.1 GET: the status code and the body. Panics when the
/// server cannot be reached.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    try_http_get(addr, path)
        .await
        .unwrap_or_else(|error| panic!("{error}"))
}

/// [`http_get`], for a server that may not listen yet: why there is no
/// answer rather than a panic.
pub async fn try_http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let failed = |error: std::io::Error| format!("GET http://{addr}{path}: {error}");
    let mut stream = TcpStream::connect(addr).await.map_err(failed)?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(failed)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.map_err(failed)?;
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
    Ok((status, body))
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
