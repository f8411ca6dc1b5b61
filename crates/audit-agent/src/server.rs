//! `automation.v1.AuditAgent` over gRPC.

use std::sync::Arc;
use std::time::Duration;

use automation_proto::v1::audit_agent_server::AuditAgent;
use automation_proto::v1::{
    AuditReport, GetReportRequest, ListReportsRequest, ListReportsResponse, RunAuditRequest,
};
use tonic::{Request, Response, Status};

use crate::audit::Auditor;
use crate::engine::EngineHandle;
use crate::store::Store;

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
        f: impl FnOnce(&Store) -> Result<T, crate::store::StoreError> + Send + 'static,
    ) -> Result<T, Status> {
        let store = Arc::clone(self.auditor.store());
        crate::audit::blocking(self.auditor.bridge(), READ_TIMEOUT, move || f(&store))
            .await
            .map_err(Status::unavailable)
    }
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
