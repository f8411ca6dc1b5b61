//! `api-gateway`: the configuration converted, served until a signal.

use automation_api_gateway::config::Cli;
use automation_api_gateway::{NAME, start};
use automation_runtime::binary;
use automation_runtime::config::parse_or_exit;

#[tokio::main]
async fn main() {
    let cli: Cli = parse_or_exit(NAME);
    binary::serve(NAME, cli, start).await;
}
