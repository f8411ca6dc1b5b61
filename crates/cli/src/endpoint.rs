//! Flag values checked when the command line is parsed, so a typo is a usage
//! error (exit 2) before anything is dialled: gRPC endpoints, the `/metrics`
//! URL and the bearer token.

use std::fmt;
use std::str::FromStr;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Uri;

/// A gRPC endpoint: `http://host:port` or `https://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcUrl {
    url: String,
    tls: bool,
    address: String,
}

impl GrpcUrl {
    /// The URL as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether it is `https://`.
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// `host:port`, for messages.
    pub fn address(&self) -> &str {
        &self.address
    }
}

impl FromStr for GrpcUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let uri: Uri = text
            .trim()
            .parse()
            .map_err(|e| format!("not a URL ({e}); write http://host:port"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err("the scheme must be http:// or https://".to_owned()),
        };
        let host = uri.host().filter(|h| !h.is_empty()).ok_or("no host")?;
        if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
            return Err("a gRPC endpoint has no path; write http://host:port".to_owned());
        }
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Self {
            url: text.trim().trim_end_matches('/').to_owned(),
            tls,
            address: format!("{host}:{port}"),
        })
    }
}

/// A plain-HTTP URL: `http://host:port/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    host: String,
    port: u16,
    path: String,
}

impl HttpUrl {
    /// The host name or address, as written (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port (80 when not written).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The path and query, at least `/`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `host:port`, for messages and the `Host` header.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for HttpUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let uri: Uri = text
            .trim()
            .parse()
            .map_err(|e| format!("not a URL ({e}); write http://host:port/metrics"))?;
        if uri.scheme_str() != Some("http") {
            return Err("the scheme must be http:// (the admin port is plain HTTP)".to_owned());
        }
        let host = uri.host().filter(|h| !h.is_empty()).ok_or("no host")?;
        Ok(Self {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: uri.port_u16().unwrap_or(80),
            path: uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
        })
    }
}

/// The bearer token, as the `authorization` header value it becomes.
#[derive(Clone)]
pub struct Token(MetadataValue<Ascii>);

impl Token {
    /// `Bearer <token>`.
    pub fn header(&self) -> &MetadataValue<Ascii> {
        &self.0
    }
}

impl FromStr for Token {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let token = text.trim();
        if token.is_empty() {
            return Err("the token is empty".to_owned());
        }
        let mut value: MetadataValue<Ascii> = format!("Bearer {token}")
            .parse()
            .map_err(|_| "the token holds characters a header cannot carry".to_owned())?;
        value.set_sensitive(true);
        Ok(Self(value))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<hidden>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_urls() {
        let url: GrpcUrl = "http://127.0.0.1:50051".parse().unwrap();
        assert_eq!(url.address(), "127.0.0.1:50051");
        assert!(!url.tls());
        let url: GrpcUrl = "https://collector.example/".parse().unwrap();
        assert_eq!(url.address(), "collector.example:443");
        assert_eq!(url.url(), "https://collector.example");
        assert!(url.tls());
        for bad in ["127.0.0.1:50051", "ftp://x", "http://", "http://x:1/path"] {
            assert!(bad.parse::<GrpcUrl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn http_urls() {
        let url: HttpUrl = "http://127.0.0.1:9400/metrics".parse().unwrap();
        assert_eq!(
            (url.host(), url.port(), url.path()),
            ("127.0.0.1", 9400, "/metrics")
        );
        assert_eq!(url.address(), "127.0.0.1:9400");
        let url: HttpUrl = "http://[::1]:9400".parse().unwrap();
        assert_eq!((url.host(), url.path()), ("::1", "/"));
        assert_eq!(url.address(), "[::1]:9400");
        assert!("https://x/metrics".parse::<HttpUrl>().is_err());
    }

    #[test]
    fn tokens_never_show() {
        let token: Token = "s3cret".parse().unwrap();
        assert_eq!(token.header().to_str().unwrap(), "Bearer s3cret");
        assert!(!format!("{token:?}").contains("s3cret"));
        assert!("".parse::<Token>().is_err());
        assert!("bad\ntoken".parse::<Token>().is_err());
    }
}
