//! The health checker over real sockets: HTTP `/health` and `/ready` through
//! axum, `grpc.health.v1` through tonic, asked with a raw HTTP/1.1 client and
//! tonic-health's generated client.

mod checks;
mod helpers;
mod shutdown;
mod startup;
