//! `collector`: serve, or print the metric catalog.

use automation_collector::config::{Cli, Command};
use automation_collector::{NAME, catalog, start};
use automation_runtime::binary;
use automation_runtime::config::parse_or_exit;

#[tokio::main]
async fn main() {
    let cli: Cli = parse_or_exit(NAME);
    if let Some(Command::Catalog) = cli.command {
        println!("{}", catalog::to_json());
        return;
    }
    binary::serve(NAME, cli, start).await;
}
