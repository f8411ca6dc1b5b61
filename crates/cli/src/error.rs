//! What can go wrong, said in one line: which service, where, and what —
//! transport errors in a few plain words, gRPC errors as `<code>: <message>`.

use std::error::Error as _;
use std::io;

use tonic::{Code, Status};

/// A command failed; printed as `automationctl: <failure>`, exit code 1.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// A service could not be reached, or answered with an error.
    #[error("{service} at {address}: {what}")]
    Service {
        /// The service's name (`collector`, `test-watcher` …).
        service: String,
        /// `host:port`.
        address: String,
        /// What went wrong.
        what: String,
    },
    /// A local file (the CA certificate, stdin) could not be read.
    #[error("{0}")]
    Local(String),
    /// Writing the output failed.
    #[error("writing the output: {0}")]
    Output(#[from] io::Error),
}

/// A gRPC error in one line: the transport's plain words when the call never
/// reached the service, `<code>: <message>` when the service answered.
pub fn describe_status(status: &Status) -> String {
    if let Some(words) = status.source().and_then(transport_words) {
        return words;
    }
    let code = code_name(status.code());
    match status.message().trim() {
        "" => code.to_owned(),
        message => format!("{code}: {message}"),
    }
}

/// A transport error (connecting, TLS, a dropped connection) in a few words.
pub fn describe_transport(error: &(dyn std::error::Error + 'static)) -> String {
    transport_words(error).unwrap_or_else(|| {
        let text = chain(error);
        let lower = text.to_ascii_lowercase();
        if ["certificate", "tls", "handshake"]
            .iter()
            .any(|w| lower.contains(w))
            && !lower.starts_with("tls")
        {
            format!("TLS: {text}")
        } else {
            text
        }
    })
}

/// The words for the first error in the chain that has them.
fn transport_words(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(io) = error.downcast_ref::<io::Error>()
            && let Some(words) = io_words(io)
        {
            return Some(words.to_owned());
        }
        let text = error.to_string();
        if text.starts_with("dns error") {
            return Some("cannot resolve the host name".to_owned());
        }
        if text.contains("timed out") {
            return Some("timed out".to_owned());
        }
        current = error.source();
    }
    None
}

fn io_words(error: &io::Error) -> Option<&'static str> {
    use io::ErrorKind::*;
    Some(match error.kind() {
        ConnectionRefused => "connection refused",
        ConnectionReset => "connection reset",
        ConnectionAborted | BrokenPipe | UnexpectedEof => "connection closed",
        TimedOut => "timed out",
        HostUnreachable => "host unreachable",
        NetworkUnreachable => "network unreachable",
        AddrNotAvailable => "address not available",
        _ => return None,
    })
}

/// Every distinct message of the chain, outermost first, without tonic's
/// uninformative "transport error" wrapper.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(error);
    while let Some(error) = current {
        let text = error.to_string();
        let generic = text == "transport error" && error.source().is_some();
        if !text.is_empty() && !generic && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = error.source();
    }
    parts.join(": ")
}

/// The code's name as in the gRPC spec, in CamelCase (`Unauthenticated`).
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "Ok",
        Code::Cancelled => "Cancelled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_as_code_and_message() {
        let status = Status::unauthenticated("bearer token not accepted");
        assert_eq!(
            describe_status(&status),
            "Unauthenticated: bearer token not accepted"
        );
        assert_eq!(describe_status(&Status::not_found("")), "NotFound");
    }

    #[test]
    fn transport_errors_read_as_plain_words() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(describe_transport(&refused), "connection refused");
        let mut status = Status::unavailable("tcp connect error");
        status.set_source(std::sync::Arc::new(io::Error::from(
            io::ErrorKind::ConnectionReset,
        )));
        assert_eq!(describe_status(&status), "connection reset");
    }

    #[test]
    fn certificate_problems_say_tls() {
        #[derive(Debug, thiserror::Error)]
        #[error("transport error")]
        struct Transport(#[source] io::Error);
        let error = Transport(io::Error::other("invalid peer certificate: UnknownIssuer"));
        assert_eq!(
            describe_transport(&error),
            "TLS: invalid peer certificate: UnknownIssuer"
        );
    }

    #[test]
    fn other_errors_keep_their_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] io::Error);
        let error = Outer(io::Error::other("inner detail"));
        assert_eq!(describe_transport(&error), "outer: inner detail");
    }
}
