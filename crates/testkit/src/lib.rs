//! What the workspace's tests and benchmarks share. A dev-dependency only:
//! no binary links it, and no production library holds test code.
//!
//! * [`binary`]: a service binary refusing a bad configuration.
//! * [`config`]: a command line converted into a service's configuration.
//! * [`collector`]: a real collector on free loopback ports, its gRPC
//!   client and `/metrics`, and `promtool check metrics`.
//! * [`upstream`]: a scriptable fake DeepSeek (OpenAI-compatible) server.
//! * [`wait`]: bounded waits ([`wait::within`], [`wait::until`]).
//! * [`http`]: a plain HTTP/1.1 GET for the admin ports.
//! * [`samples`]: `/metrics` text parsed, looked up by name and labels.
//! * [`git`]: temporary git repositories.
//! * [`service`]: any service started in-process on free ports.

pub mod binary;
pub mod collector;
pub mod config;
pub mod git;
pub mod http;
pub mod samples;
pub mod service;
pub mod upstream;
pub mod wait;

pub use collector::{TestCollector, promtool_check_metrics};
pub use http::{http_get, try_http_get};
pub use samples::{Samples, series};
pub use upstream::FakeUpstream;
pub use wait::{eventually, until, within};
