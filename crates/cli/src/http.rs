//! A minimal HTTP/1.1 GET over a Tokio TCP stream, enough for `/metrics`:
//! `Connection: close`, the body read to its end (plain, `Content-Length` or
//! chunked), bounded in size and time.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::endpoint::HttpUrl;
use crate::error::describe_transport;

/// The largest body read.
const MAX_BODY: u64 = 64 << 20;

/// `GET url` within `timeout`: the body of a 200 answer, else what went wrong
/// in a few words.
pub async fn get(url: &HttpUrl, timeout: Duration) -> Result<String, String> {
    let limit = humantime::format_duration(timeout);
    tokio::time::timeout(timeout, fetch(url))
        .await
        .map_err(|_| format!("timed out after {limit} (--timeout)"))?
}

async fn fetch(url: &HttpUrl) -> Result<String, String> {
    let mut stream = connect(url).await?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/plain\r\nConnection: close\r\n\
         User-Agent: automationctl/{}\r\n\r\n",
        url.path(),
        url.address(),
        env!("CARGO_PKG_VERSION")
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| describe_transport(&e))?;
    let mut raw = Vec::new();
    (&mut stream)
        .take(MAX_BODY)
        .read_to_end(&mut raw)
        .await
        .map_err(|e| describe_transport(&e))?;
    parse_response(&raw)
}

/// Connects to the first address of the host that answers.
async fn connect(url: &HttpUrl) -> Result<TcpStream, String> {
    let addresses = tokio::net::lookup_host((url.host(), url.port()))
        .await
        .map_err(|_| "cannot resolve the host name".to_owned())?;
    let mut last = "cannot resolve the host name".to_owned();
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(error) => last = describe_transport(&error),
        }
    }
    Err(last)
}

/// The body of a complete `200` response.
fn parse_response(raw: &[u8]) -> Result<String, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("not an HTTP response")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = &raw[split + 4..];
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or_default(), parts.next());
    if !version.starts_with("HTTP/") {
        return Err("not an HTTP response".to_owned());
    }
    let code: u16 = code
        .and_then(|c| c.parse().ok())
        .ok_or("not an HTTP response")?;
    if code != 200 {
        return Err(format!(
            "HTTP {}",
            status_line.trim_start_matches(version).trim()
        ));
    }
    let header = |name: &str| {
        head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_ascii_lowercase())
        })
    };
    let body = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        dechunk(body)?
    } else if let Some(length) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.get(..length).ok_or("the body ended early")?.to_vec()
    } else {
        body.to_vec()
    };
    String::from_utf8(body).map_err(|_| "the body is not UTF-8 text".to_owned())
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("the chunked body ended early")?;
        let size_text = String::from_utf8_lossy(&body[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "a malformed chunked body")?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = body.get(..size).ok_or("the chunked body ended early")?;
        out.extend_from_slice(chunk);
        body = body.get(size + 2..).ok_or("the chunked body ended early")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_chunked_bodies() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(parse_response(plain).unwrap(), "hello");
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), "hello world");
    }

    #[test]
    fn errors_say_what() {
        let missing = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(parse_response(missing).unwrap_err(), "HTTP 404 Not Found");
        assert_eq!(
            parse_response(b"SSH-2.0\r\n").unwrap_err(),
            "not an HTTP response"
        );
        let short = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel";
        assert_eq!(
            parse_response(short).unwrap_err(),
            "the chunked body ended early"
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let url: HttpUrl = format!("http://127.0.0.1:{port}/metrics").parse().unwrap();
        let error = get(&url, Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(error, "connection refused");
    }
}
