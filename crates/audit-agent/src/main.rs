//! `audit-agent`: parse the configuration, set up logging, bind, serve; or
//! back the database up and restore it.

use automation_audit_agent::config::{Cli, Command};
use automation_audit_agent::coverage::Format;
use automation_audit_agent::{Config, run, store};
use automation_telemetry::config::{config_error, parse_or_exit};
use automation_telemetry::serve::Listeners;
use automation_telemetry::{logging, shutdown};

const NAME: &str = "audit-agent";

#[tokio::main]
async fn main() {
    let cli: Cli = parse_or_exit(NAME);
    let traces = logging::init(Some(cli.common.log_format), NAME);
    match &cli.command {
        Some(Command::Backup { to }) => {
            match store::backup(&cli.database_path, to) {
                Ok(copied) => println!(
                    "backed up {} to {} (schema version {}, {} reports)",
                    cli.database_path.display(),
                    to.display(),
                    copied.schema_version,
                    copied.reports
                ),
                Err(e) => fail(e),
            }
            return;
        }
        Some(Command::Restore { from }) => {
            match store::restore(from, &cli.database_path) {
                Ok(copied) => println!(
                    "restored {} from {} (schema version {}, {} reports)",
                    cli.database_path.display(),
                    from.display(),
                    copied.schema_version,
                    copied.reports
                ),
                Err(e) => fail(e),
            }
            return;
        }
        None => {}
    }

    let instance = cli.common.instance_name();
    let a = &cli.audit;
    if !a.repo_path.is_dir() {
        config_error(
            NAME,
            format!("REPO_PATH {} is not a directory", a.repo_path.display()),
        );
    }
    let mut config = Config::new(&instance, a.repo_path.clone(), cli.database_path.clone());
    config.audit.coverage_path = a.coverage_path.clone();
    config.audit.coverage_format = a.coverage_format.as_deref().and_then(Format::parse);
    config.audit.markdown.globs = a.markdown_globs.clone();
    config.audit.analysis_timeout = a.analysis_timeout;
    config.audit.keep_reports = a.keep_reports;
    config.database_busy_timeout = a.database_busy_timeout;
    config.interval = (!a.audit_interval.is_zero()).then_some(a.audit_interval);
    config.audit_on_start = !a.skip_startup_audit;
    config.shutdown_delay = cli.common.shutdown_delay;
    config.shutdown_grace = cli.common.shutdown_grace;
    config.connections = cli.common.connections.limits();
    config.reporter = Some(cli.reporter.reporter_config(
        NAME,
        &instance,
        env!("CARGO_PKG_VERSION"),
    ));
    config.auth = cli.common.auth_or_exit(NAME);
    config.tls = cli.common.tls_or_exit(NAME);
    if let Err(e) = globset_check(&config.audit.markdown.globs) {
        config_error(NAME, format!("MARKDOWN_GLOBS: {e}"));
    }
    let listeners = Listeners::bind_or_exit(NAME, cli.grpc_listen, cli.http_listen).await;
    let served = run(config, listeners, shutdown::on_signal(), None).await;
    traces.shutdown().await;
    if let Err(error) = served {
        if error.is_configuration() {
            config_error(NAME, error);
        }
        eprintln!("{NAME}: {error}");
        std::process::exit(1);
    }
}

/// A bad glob is a configuration error, found before anything starts.
fn globset_check(globs: &[String]) -> Result<(), String> {
    for glob in globs {
        globset::Glob::new(glob).map_err(|e| format!("{glob:?}: {e}"))?;
    }
    Ok(())
}

fn fail(error: impl std::fmt::Display) -> ! {
    eprintln!("{NAME}: {error}");
    std::process::exit(1);
}
