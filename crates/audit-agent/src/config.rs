//! The audit-agent's command line; every flag also reads its environment
//! variable (DESIGN §3).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use std::path::Path;

use automation_runtime::config::{
    CommonArgs, ReporterArgs, ServiceConfig, parse_duration, parse_interval,
};

use crate::coverage::Format;
use crate::store::{self, StoreError};
use crate::{Config, NAME};

/// `audit-agent`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "audit-agent",
    version,
    about = "Audits a git repository's progress: commits, plan markers, coverage; history in SQLite"
)]
pub struct Cli {
    /// Without a command: serve. The commands work on the database only.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// gRPC listen address.
    #[arg(long, env = "GRPC_LISTEN", default_value = "0.0.0.0:50053")]
    pub grpc_listen: SocketAddr,
    /// HTTP admin listen address (/health, /ready).
    #[arg(long, env = "HTTP_LISTEN", default_value = "0.0.0.0:9402")]
    pub http_listen: SocketAddr,
    /// The git repository to audit (its working tree).
    #[arg(long, env = "REPO_PATH", default_value = ".")]
    pub repo_path: PathBuf,
    /// The SQLite database holding the audit history.
    #[arg(
        long,
        env = "DATABASE_PATH",
        default_value = ".automation/audit-agent.db",
        global = true
    )]
    pub database_path: PathBuf,
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub reporter: ReporterArgs,
    #[command(flatten)]
    pub audit: AuditArgs,
}

automation_runtime::service_cli!(Cli);

impl TryFrom<Cli> for Config {
    type Error = String;

    fn try_from(cli: Cli) -> Result<Self, String> {
        let service = cli.common.service_config(NAME, Some(&cli.reporter))?;
        cli.audit.config(service, cli.repo_path, cli.database_path)
    }
}

/// Database maintenance.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Copy the database to a new file, consistently, even while the agent runs.
    Backup {
        /// The backup file to write (must not exist).
        #[arg(long)]
        to: PathBuf,
    },
    /// Replace the database with a backup (stop the agent first). The
    /// replaced database is kept as `<database>.before-restore`.
    Restore {
        /// The backup file to restore.
        #[arg(long)]
        from: PathBuf,
    },
}

impl Command {
    /// Backs the database at `database` up, or restores it; what was done,
    /// in one line.
    pub fn run(&self, database: &Path) -> Result<String, StoreError> {
        let (copied, done) = match self {
            Self::Backup { to } => (
                store::backup(database, to)?,
                format!("backed up {} to {}", database.display(), to.display()),
            ),
            Self::Restore { from } => (
                store::restore(from, database)?,
                format!("restored {} from {}", database.display(), from.display()),
            ),
        };
        Ok(format!(
            "{done} (schema version {}, {} reports)",
            copied.schema_version, copied.reports
        ))
    }
}

/// What to audit and when.
#[derive(Debug, Clone, clap::Args)]
pub struct AuditArgs {
    /// Audit this often; 0 audits on request only.
    #[arg(long, env = "AUDIT_INTERVAL", value_parser = parse_duration, default_value = "5m")]
    pub audit_interval: Duration,
    /// Do not audit at start (only on the schedule and on request).
    #[arg(long, env = "SKIP_STARTUP_AUDIT")]
    pub skip_startup_audit: bool,
    /// A coverage report (relative to the repository); default: look for
    /// lcov.info, coverage.json, cobertura.xml … in the usual places.
    #[arg(long, env = "COVERAGE_PATH")]
    pub coverage_path: Option<PathBuf>,
    /// The coverage report's format; default: told from its contents.
    #[arg(long, env = "COVERAGE_FORMAT", value_parser = ["lcov", "cobertura", "llvm-cov-json"])]
    pub coverage_format: Option<String>,
    /// Markdown files holding plan items (comma-separated globs, relative to the repository).
    #[arg(
        long,
        env = "MARKDOWN_GLOBS",
        value_delimiter = ',',
        default_value = "**/*.md"
    )]
    pub markdown_globs: Vec<String>,
    /// The longest one analysis (git, markers, coverage) may take.
    #[arg(long, env = "ANALYSIS_TIMEOUT", value_parser = parse_interval, default_value = "5m")]
    pub analysis_timeout: Duration,
    /// Reports kept in the database; older ones are deleted (0: keep all).
    #[arg(long, env = "KEEP_REPORTS", default_value_t = 10_000)]
    pub keep_reports: u64,
    /// How long to wait for a database another process has locked.
    #[arg(long, env = "DATABASE_BUSY_TIMEOUT", value_parser = parse_duration, default_value = "5s")]
    pub database_busy_timeout: Duration,
}

impl AuditArgs {
    /// The audit-agent's configuration: `service`, auditing `repo` with
    /// its history in `database`, as these flags say. A repository that is
    /// not a directory or a bad glob is refused, naming it.
    pub fn config(
        &self,
        service: ServiceConfig,
        repo: PathBuf,
        database: PathBuf,
    ) -> Result<Config, String> {
        if !repo.is_dir() {
            return Err(format!("REPO_PATH {} is not a directory", repo.display()));
        }
        for glob in &self.markdown_globs {
            globset::Glob::new(glob).map_err(|e| format!("MARKDOWN_GLOBS: {glob:?}: {e}"))?;
        }
        let mut config = Config::new(&service.instance, repo, database);
        config.service = service;
        config.audit.coverage_path = self.coverage_path.clone();
        config.audit.coverage_format = self.coverage_format.as_deref().and_then(Format::parse);
        config.audit.markdown.globs = self.markdown_globs.clone();
        config.audit.analysis_timeout = self.analysis_timeout;
        config.audit.keep_reports = self.keep_reports;
        config.database_busy_timeout = self.database_busy_timeout;
        config.interval = (!self.audit_interval.is_zero()).then_some(self.audit_interval);
        config.audit_on_start = !self.skip_startup_audit;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use automation_testkit::config::{assert_converts, converted, default_reporter};

    use super::*;

    fn config(args: &[&str]) -> Result<Config, String> {
        converted::<Cli, Config>(args)
    }

    #[test]
    fn the_flags_defaults_are_the_libraries() {
        let mut expected = Config::new("a-1", ".".into(), ".automation/audit-agent.db".into());
        expected.service.reporter = Some(default_reporter(NAME, "a-1"));
        assert_converts::<Cli, Config>(&["--instance", "a-1"], &expected);
    }

    #[test]
    fn flags_set_the_configuration() {
        let repo = tempfile::tempdir().unwrap();
        let config = config(&[
            "--repo-path",
            repo.path().to_str().unwrap(),
            "--audit-interval",
            "0s",
            "--skip-startup-audit",
            "--coverage-format",
            "lcov",
            "--markdown-globs",
            "docs/*.md,PLAN.md",
            "--keep-reports",
            "3",
        ])
        .unwrap();
        assert_eq!(config.audit.root, repo.path());
        assert_eq!(config.interval, None);
        assert!(!config.audit_on_start);
        assert_eq!(config.audit.coverage_format, Some(Format::Lcov));
        assert_eq!(config.audit.markdown.globs, ["docs/*.md", "PLAN.md"]);
        assert_eq!(config.audit.keep_reports, 3);
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        let error = config(&["--repo-path", "/nonexistent/repo"]).unwrap_err();
        assert!(error.contains("REPO_PATH /nonexistent/repo"), "{error}");
        let error = config(&["--markdown-globs", "a[b"]).unwrap_err();
        assert!(
            error.contains("MARKDOWN_GLOBS") && error.contains("a[b"),
            "{error}"
        );
    }
}
