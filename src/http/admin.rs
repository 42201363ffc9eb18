//! `/admin/*`: operations that need the `admin` role, always within the admin's tenant.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::extract::Auth;
use crate::audit::AuditEvent;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::store::AuditQuery;

pub const ADMIN_ROLE: &str = "admin";

fn require_admin(p: &Principal) -> Result<(), ApiError> {
    if p.has_role(ADMIN_ROLE) {
        Ok(())
    } else {
        Err(ApiError::Forbidden)
    }
}

#[derive(Deserialize)]
pub struct AuditParams {
    kind: Option<String>,
    limit: Option<u32>,
}

#[derive(Serialize)]
struct AuditList {
    events: Vec<AuditEvent>,
}

pub async fn audit(
    State(s): State<AppState>,
    Auth(p): Auth,
    params: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    require_admin(&p)?;
    let Query(params) =
        params.map_err(|_| ApiError::BadRequest("Invalid query parameters.".into()))?;
    let events = s
        .audit_log
        .query(AuditQuery {
            tenant: Some(p.tenant().to_owned()),
            kind: params.kind,
            limit: params.limit.unwrap_or(100).clamp(1, 1000),
        })
        .await?;
    Ok(axum::Json(AuditList { events }).into_response())
}
