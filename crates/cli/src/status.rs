//! `automationctl status`: `grpc.health.v1` `Check` for `liveness` and
//! `readiness` on the four services at once. Exit 0 only when all are ready;
//! every service that is not gets a line on stderr.

use serde_json::json;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::Io;
use crate::cli::{Format, Global};
use crate::connect::{Connector, Target};
use crate::error::Failure;
use crate::table::Table;

/// One health probe's answer: a serving status, or what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The service answered with this status (`SERVING`, `NOT_SERVING` …).
    Answered(String),
    /// The check failed (unreachable, timed out, an error status).
    Failed(String),
}

impl Probe {
    fn text(&self) -> &str {
        match self {
            Self::Answered(status) | Self::Failed(status) => status,
        }
    }

    fn serving(&self) -> bool {
        *self == Self::Answered(ServingStatus::Serving.as_str_name().to_owned())
    }
}

/// One service's health.
#[derive(Debug, Clone)]
pub struct Health {
    /// Which service, where.
    pub target: Target,
    /// `liveness`.
    pub liveness: Probe,
    /// `readiness`.
    pub readiness: Probe,
}

impl Health {
    /// Ready to serve.
    pub fn ready(&self) -> bool {
        self.readiness.serving()
    }
}

/// Checks every service, prints the table (or JSON), and returns 0 when all
/// are ready, else 1.
pub async fn run(global: &Global, connector: &Connector, io: &mut Io<'_>) -> Result<u8, Failure> {
    let targets = [
        Target::collector(global),
        Target::watcher(global),
        Target::audit(global),
        Target::gateway(global),
    ];
    let [a, b, c, d] = targets.each_ref().map(|t| check(connector, t));
    let (a, b, c, d) = tokio::join!(a, b, c, d);
    let health = [a, b, c, d];
    for h in health.iter().filter(|h| !h.ready()) {
        let what = match (&h.readiness, &h.liveness) {
            (Probe::Failed(error), _) => error.clone(),
            (Probe::Answered(status), Probe::Answered(live)) => {
                format!("not ready (readiness {status}, liveness {live})")
            }
            (Probe::Answered(status), Probe::Failed(error)) => {
                format!("not ready (readiness {status}; liveness: {error})")
            }
        };
        writeln!(io.err, "automationctl: {}", h.target.fail(what))?;
    }
    write(&health, io)?;
    Ok(if health.iter().all(Health::ready) {
        0
    } else {
        1
    })
}

/// Both probes of one service, over one connection.
pub async fn check(connector: &Connector, target: &Target) -> Health {
    let channel = match connector.connect(target).await {
        Ok(channel) => channel,
        Err(failure) => {
            let error = match failure {
                Failure::Service { what, .. } => what,
                other => other.to_string(),
            };
            return Health {
                target: target.clone(),
                liveness: Probe::Failed(error.clone()),
                readiness: Probe::Failed(error),
            };
        }
    };
    let client = HealthClient::new(channel);
    let probe = |service: &'static str| {
        let mut client = client.clone();
        async move {
            let request = connector.request(HealthCheckRequest {
                service: service.to_owned(),
            });
            match connector.call(target, client.check(request)).await {
                Ok(HealthCheckResponse { status }) => Probe::Answered(status_name(status)),
                Err(Failure::Service { what, .. }) => Probe::Failed(what),
                Err(other) => Probe::Failed(other.to_string()),
            }
        }
    };
    let (liveness, readiness) = tokio::join!(probe("liveness"), probe("readiness"));
    Health {
        target: target.clone(),
        liveness,
        readiness,
    }
}

fn status_name(status: i32) -> String {
    match ServingStatus::try_from(status) {
        Ok(known) => known.as_str_name().to_owned(),
        Err(_) => format!("UNKNOWN({status})"),
    }
}

fn write(health: &[Health], io: &mut Io<'_>) -> std::io::Result<()> {
    match io.format {
        Format::Json => io.json(&json!({
            "ready": health.iter().all(Health::ready),
            "services": health.iter().map(|h| json!({
                "service": h.target.service,
                "endpoint": h.target.url.url(),
                "liveness": h.liveness.text(),
                "readiness": h.readiness.text(),
                "ready": h.ready(),
            })).collect::<Vec<_>>(),
        })),
        Format::Table => {
            let mut table = Table::new(&["SERVICE", "ENDPOINT", "LIVENESS", "READINESS"]);
            for h in health {
                table.row([
                    h.target.service,
                    h.target.url.url(),
                    h.liveness.text(),
                    h.readiness.text(),
                ]);
            }
            table.write(io.out)?;
            io.out.flush()
        }
    }
}
