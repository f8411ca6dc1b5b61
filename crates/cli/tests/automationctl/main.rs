//! `automationctl` end to end: the real binary against real services started
//! in-process on loopback (collector, test-watcher, audit-agent, api-gateway
//! over a fake DeepSeek), endpoints passed by flags.

mod audit;
mod chat;
mod metrics;
mod services;
mod status;
mod support;
mod watcher;
