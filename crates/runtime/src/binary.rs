//! A service binary's whole life, the same for every service: logging,
//! the command line converted into the service's configuration (refused:
//! one line, exit 64), the listeners bound (exit 1 naming the address),
//! served until SIGTERM or Ctrl-C, traces flushed, and exit 1 — or 64 for a
//! configuration the service refused at start — when it failed.

use std::future::Future;
use std::net::SocketAddr;

use automation_telemetry::logging;
use tokio_util::sync::CancellationToken;

use crate::config::{CommonArgs, config_error};
use crate::serve::{Listeners, ServeError};
use crate::service::Running;
use crate::shutdown;

/// A service's command line: the flags every service takes, and where it
/// listens.
pub trait ServiceCli {
    /// The shared flags.
    fn common(&self) -> &CommonArgs;
    /// The gRPC and HTTP listen addresses.
    fn listen(&self) -> (SocketAddr, SocketAddr);
}

/// Implements [`ServiceCli`] for a command line with the fields
/// `grpc_listen`, `http_listen` and `common` (the flattened [`CommonArgs`]).
#[macro_export]
macro_rules! service_cli {
    ($cli:ty) => {
        impl $crate::binary::ServiceCli for $cli {
            fn common(&self) -> &$crate::config::CommonArgs {
                &self.common
            }

            fn listen(&self) -> (::std::net::SocketAddr, ::std::net::SocketAddr) {
                (self.grpc_listen, self.http_listen)
            }
        }
    };
}

/// What stops a service.
pub trait ServiceError: std::fmt::Display {
    /// Whether it is a configuration found unusable only at start (such as
    /// a database of a newer version): exit 64 rather than 1.
    fn is_configuration(&self) -> bool {
        false
    }
}

impl ServiceError for ServeError {}

/// Runs `name` from its parsed command line `cli`: converted into its
/// configuration, started with `start` on the bound listeners, served until
/// a signal. Exits the process when anything fails.
pub async fn serve<C, Config, H, E, Started>(
    name: &'static str,
    cli: C,
    start: impl FnOnce(Config, Listeners, CancellationToken) -> Started,
) where
    C: ServiceCli,
    Config: TryFrom<C, Error = String>,
    Started: Future<Output = Result<Running<H, E>, E>>,
    E: ServiceError,
{
    let traces = logging::init(Some(cli.common().log_format), name);
    let (grpc, http) = cli.listen();
    let config = Config::try_from(cli).unwrap_or_else(|error| config_error(name, error));
    let listeners = Listeners::bind_or_exit(name, grpc, http).await;
    let served = match start(config, listeners, shutdown::on_signal()).await {
        Ok(running) => running.wait().await,
        Err(error) => Err(error),
    };
    traces.shutdown().await;
    match served {
        Ok(()) => {}
        Err(error) if error.is_configuration() => config_error(name, error),
        Err(error) => {
            eprintln!("{name}: {error}");
            std::process::exit(1);
        }
    }
}
