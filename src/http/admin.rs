//! `/admin/*`: operations that need the `admin` role, always within the admin's tenant.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::extract::{Auth, Json};
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

#[derive(Serialize)]
struct UserView {
    id: String,
    username: String,
    tenant: String,
    roles: Vec<String>,
    groups: Vec<String>,
    disabled: bool,
}

impl From<crate::store::UserRecord> for UserView {
    fn from(u: crate::store::UserRecord) -> Self {
        Self {
            id: u.id,
            username: u.username,
            tenant: u.tenant,
            roles: u.roles,
            groups: u.groups,
            disabled: u.disabled,
        }
    }
}

/// The users of the admin's own tenant.
pub async fn list_users(State(s): State<AppState>, Auth(p): Auth) -> Result<Response, ApiError> {
    require_admin(&p)?;
    let users: Vec<UserView> = s
        .users
        .list_users()
        .await?
        .into_iter()
        .filter(|u| u.tenant == p.tenant())
        .map(Into::into)
        .collect();
    Ok(axum::Json(serde_json::json!({ "users": users })).into_response())
}

#[derive(Deserialize)]
pub struct UpdateUser {
    roles: Option<Vec<String>>,
    groups: Option<Vec<String>>,
    disabled: Option<bool>,
}

/// Changes roles, groups or the disabled flag of a user of the admin's tenant. Any
/// change ends the user's sessions, so no token with the old access survives.
pub async fn update_user(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Json(req): Json<UpdateUser>,
) -> Result<Response, ApiError> {
    require_admin(&p)?;
    let invalid = req
        .roles
        .iter()
        .chain(req.groups.iter())
        .flatten()
        .any(|n| !crate::app::valid_name(n));
    if invalid {
        return Err(ApiError::Unprocessable(
            "Invalid role or group name.".into(),
        ));
    }
    // Another tenant's user is not found, like an unknown one.
    let Some(user) = s.users.user_by_id(p.tenant(), &id).await? else {
        return Err(ApiError::NotFound);
    };
    let mut current = user;
    if req.roles.is_some() || req.groups.is_some() {
        current = s
            .auth
            .update_access(p.tenant(), &id, req.roles, req.groups)
            .await?
            .ok_or(ApiError::NotFound)?;
    }
    if let Some(disabled) = req.disabled {
        current = s
            .auth
            .set_disabled(&current.username, disabled)
            .await?
            .ok_or(ApiError::NotFound)?;
    }
    Ok(axum::Json(UserView::from(current)).into_response())
}
