//! `/admin/*`: operations for the `admin` role, always within the admin's own tenant.
//! The services check the role and carry the tenant into every query.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use super::extract::{Auth, Client, Json};
use crate::audit::{AuditEvent, AuditFilter};
use crate::auth::AccessChange;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/users", get(list_users))
        .route("/admin/users/{id}", patch(update_user))
        .route("/admin/audit", get(audit))
}

#[derive(Deserialize)]
pub struct AuditParams {
    kind: Option<String>,
    request_id: Option<String>,
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
    let Query(q) = params.map_err(|_| ApiError::BadRequest("Invalid query parameters.".into()))?;
    let filter = AuditFilter {
        kind: q.kind,
        request_id: q.request_id,
        limit: q.limit,
    };
    let events = s.audit.events_for(&p, filter).await?;
    Ok(axum::Json(AuditList { events }).into_response())
}

pub async fn list_users(State(s): State<AppState>, Auth(p): Auth) -> Result<Response, ApiError> {
    let users = s.auth.list_users(&p).await?;
    Ok(axum::Json(serde_json::json!({ "users": users })).into_response())
}

#[derive(Deserialize)]
pub struct UpdateUser {
    roles: Option<Vec<String>>,
    groups: Option<Vec<String>>,
    disabled: Option<bool>,
}

/// Changes roles, groups or the disabled flag of a user of the admin's tenant. Any
/// change of access ends the user's sessions.
pub async fn update_user(
    State(s): State<AppState>,
    Auth(p): Auth,
    Client(client): Client,
    Path(id): Path<String>,
    Json(req): Json<UpdateUser>,
) -> Result<Response, ApiError> {
    let change = AccessChange {
        roles: req.roles,
        groups: req.groups,
        disabled: req.disabled,
    };
    let user = s.auth.update_user(&p, &id, change, &client).await?;
    Ok(axum::Json(user).into_response())
}
