//! `test-watcher`: the configuration converted, served until a signal.

use automation_runtime::binary;
use automation_runtime::config::parse_or_exit;
use automation_test_watcher::config::Cli;
use automation_test_watcher::{NAME, start};

#[tokio::main]
async fn main() {
    let cli: Cli = parse_or_exit(NAME);
    binary::serve(NAME, cli, start).await;
}
