//! `automation.v1.AuditAgent` over gRPC.

use std::sync::Arc;
use std::time::Duration;

use automation_async_bridge::BridgeError;
use automation_proto::v1::audit_agent_server::AuditAgent;
use automation_proto::v1::{
    AuditReport, GetReportRequest, ListReportsRequest, ListReportsResponse, RunAuditRequest,
};
use tonic::{Request, Response, Status};

use crate::audit::Auditor;
use crate::engine::EngineHandle;
use crate::store::{Store, StoreError};

/// Default and largest `ListReports` page.
const DEFAULT_PAGE: u32 = 20;
const MAX_PAGE: u32 = 100;
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The gRPC service over the engine and the store.
#[derive(Debug, Clone)]
pub struct AuditAgentService {
    engine: EngineHandle,
    auditor: Arc<Auditor>,
}

impl AuditAgentService {
    /// The service.
    pub fn new(engine: EngineHandle, auditor: Arc<Auditor>) -> Self {
        Self { engine, auditor }
    }

    /// Runs a read of the store on the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, Status> {
        let store = Arc::clone(self.auditor.store());
        self.auditor
            .bridge()
            .try_run_blocking(READ_TIMEOUT, move || f(&store))
            .await
            .map_err(|error| match error {
                BridgeError::Failed(error) => error.into(),
                BridgeError::Timeout(_) => Status::deadline_exceeded(error.to_string()),
                BridgeError::Panicked(_) => Status::internal(error.to_string()),
                _ => Status::unavailable(error.to_string()),
            })
    }
}

/// A store error as the client should take it: retry later (locked, in
/// use), give up (a newer or foreign database), or report the damage.
impl From<StoreError> for Status {
    fn from(error: StoreError) -> Self {
        let message = error.to_string();
        match &error {
            StoreError::TooNew { .. } | StoreError::NotOurs { .. } => {
                Status::failed_precondition(message)
            }
            StoreError::Corrupt { .. } | StoreError::BadReport { .. } => Status::data_loss(message),
            StoreError::Conflict { .. } => Status::aborted(message),
            StoreError::Sqlite { source, .. } if !is_busy(source) => Status::internal(message),
            StoreError::InUse { .. } | StoreError::Sqlite { .. } | StoreError::Io { .. } => {
                Status::unavailable(message)
            }
        }
    }
}

/// Whether SQLite said another connection holds the database.
fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

#[tonic::async_trait]
impl AuditAgent for AuditAgentService {
    async fn run_audit(
        &self,
        request: Request<RunAuditRequest>,
    ) -> Result<Response<AuditReport>, Status> {
        let reason = request.into_inner().reason;
        if reason.len() > 64 {
            return Err(Status::invalid_argument("reason is longer than 64 bytes"));
        }
        let reason = if reason.is_empty() {
            "request".to_owned()
        } else {
            reason
        };
        let report = self
            .engine
            .run(&reason)
            .await
            .ok_or_else(|| Status::unavailable("the audit-agent is shutting down"))?;
        Ok(Response::new(AuditReport::clone(&report)))
    }

    async fn get_report(
        &self,
        request: Request<GetReportRequest>,
    ) -> Result<Response<AuditReport>, Status> {
        let GetReportRequest {
            id,
            include_documents,
        } = request.into_inner();
        let (report, documents) = self
            .read(move |store| {
                let report = store.report(id)?;
                // Per-document counts are those of the stored items, which
                // are the latest audit's.
                let documents = match &report {
                    Some(r) if include_documents => (id == 0 || store.latest_id()? == Some(r.id))
                        .then(|| store.documents())
                        .transpose()?,
                    _ => Some(Vec::new()),
                };
                Ok((report, documents))
            })
            .await?;
        let mut report = report.ok_or_else(|| {
            if id == 0 {
                Status::not_found("no audit has been stored yet")
            } else {
                Status::not_found(format!("no report {id}"))
            }
        })?;
        report.documents = documents.ok_or_else(|| {
            Status::failed_precondition(format!(
                "report {id} is not the latest; per-document counts are kept for the latest only"
            ))
        })?;
        Ok(Response::new(report))
    }

    async fn list_reports(
        &self,
        request: Request<ListReportsRequest>,
    ) -> Result<Response<ListReportsResponse>, Status> {
        let ListReportsRequest {
            page_size,
            page_token,
        } = request.into_inner();
        let limit = match page_size {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let before = if page_token.is_empty() {
            None
        } else {
            match page_token.parse::<u64>() {
                Ok(id) if id > 0 => Some(id),
                _ => {
                    return Err(Status::invalid_argument(
                        "page_token is not one this server issued; pass next_page_token as received",
                    ));
                }
            }
        };
        let (mut reports, total) = self
            .read(move |store| store.list(before, limit + 1))
            .await?;
        let next_page_token = if reports.len() > limit as usize {
            reports.truncate(limit as usize);
            reports.last().map(|r| r.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListReportsResponse {
            reports,
            next_page_token,
            total,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use tonic::Code;

    use super::*;

    fn sqlite(code: i32) -> StoreError {
        StoreError::Sqlite {
            path: PathBuf::from("/db"),
            action: "reading",
            source: rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None),
        }
    }

    #[test]
    fn store_errors_carry_the_code_a_client_acts_on() {
        let path = || PathBuf::from("/db");
        for (error, code) in [
            (sqlite(rusqlite::ffi::SQLITE_BUSY), Code::Unavailable),
            (sqlite(rusqlite::ffi::SQLITE_LOCKED), Code::Unavailable),
            (sqlite(rusqlite::ffi::SQLITE_FULL), Code::Internal),
            (StoreError::InUse { path: path() }, Code::Unavailable),
            (
                StoreError::TooNew {
                    path: path(),
                    found: 9,
                    supported: 1,
                },
                Code::FailedPrecondition,
            ),
            (
                StoreError::Corrupt {
                    path: path(),
                    reason: "page 3".to_owned(),
                },
                Code::DataLoss,
            ),
            (StoreError::Conflict { path: path() }, Code::Aborted),
        ] {
            let message = error.to_string();
            let status = Status::from(error);
            assert_eq!(status.code(), code, "{message}");
            assert_eq!(status.message(), message);
        }
    }
}
