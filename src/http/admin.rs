//! `/admin/*`: operations for the `admin` role, always within the admin's own tenant.
//! The services check the role and carry the tenant into every query.

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use super::extract::{Auth, Client, Json, Query};
use crate::audit::{AuditFilter, AuditRecord};
use crate::auth::AccessChange;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/users", get(list_users))
        .route("/admin/users/{id}", patch(update_user))
        .route("/admin/audit", get(audit))
        .route("/admin/lineage", get(lineage))
}

#[derive(Deserialize)]
pub struct AuditParams {
    /// The event kind (`event` is accepted as well).
    #[serde(alias = "event")]
    kind: Option<String>,
    request_id: Option<String>,
    /// A user id: the events about that user.
    user: Option<String>,
    /// RFC 3339; inclusive.
    since: Option<String>,
    /// RFC 3339; exclusive.
    until: Option<String>,
    limit: Option<u32>,
}

#[derive(Serialize)]
struct AuditList {
    events: Vec<AuditRecord>,
}

fn instant(v: Option<String>, name: &str) -> Result<Option<i64>, ApiError> {
    v.map(|s| {
        crate::timeutil::parse_rfc3339(&s)
            .ok_or_else(|| ApiError::BadRequest(format!("`{name}` must be an RFC 3339 time.")))
    })
    .transpose()
}

#[utoipa::path(
    get, path = "/admin/audit", tag = "admin", security(("bearer" = [])),
    params(crate::http::openapi::AuditQueryParams),
    responses(
        (status = 200, description = "The admin's tenant's events.", body = crate::http::openapi::AuditListBody),
        (status = 400, description = "Invalid query parameters.", body = crate::http::openapi::ErrorBody),
        (status = 401, description = "No valid token.", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "Not an admin.", body = crate::http::openapi::ErrorBody),
    )
)]
pub async fn audit(
    State(s): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<AuditParams>,
) -> Result<Response, ApiError> {
    limit_in_range(q.limit)?;
    let filter = AuditFilter {
        kind: q.kind.filter(|k| !k.is_empty()),
        request_id: q.request_id.filter(|r| !r.is_empty()),
        subject: q.user.filter(|u| !u.is_empty()),
        since: instant(q.since, "since")?,
        until: instant(q.until, "until")?,
        limit: q.limit,
    };
    let events = s.audit.events_for(&p, filter).await?;
    Ok(axum::Json(AuditList { events }).into_response())
}

fn limit_in_range(limit: Option<u32>) -> Result<(), ApiError> {
    if limit.is_some_and(|l| !(1..=1000).contains(&l)) {
        return Err(ApiError::BadRequest(
            "limit must be between 1 and 1000.".into(),
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
pub struct LineageParams {
    document: String,
    limit: Option<u32>,
}

/// One time a document was put in front of a model: who, when, where. Ids only.
#[derive(Serialize)]
struct LineageUse {
    seq: Option<i64>,
    at: String,
    ts: i64,
    /// `retrieval` (palisade retrieved it for the prompt) or `tool_call` (the model
    /// or an MCP client asked `search_documents`).
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    via: Option<String>,
    user: Option<String>,
    session_id: Option<String>,
    thread: Option<String>,
    request_id: Option<String>,
}

#[derive(Serialize)]
struct Lineage {
    document: String,
    uses: Vec<LineageUse>,
}

/// `GET /admin/lineage?document=ID`: who had the document in a prompt, when, in which
/// thread — within the admin's own tenant (another tenant's admin sees nothing).
#[utoipa::path(
    get, path = "/admin/lineage", tag = "admin", security(("bearer" = [])),
    params(crate::http::openapi::LineageQueryParams),
    responses(
        (status = 200, description = "Who had the document in a prompt, when, in which thread.", body = crate::http::openapi::LineageBody),
        (status = 400, description = "No document id.", body = crate::http::openapi::ErrorBody),
        (status = 401, description = "No valid token.", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "Not an admin.", body = crate::http::openapi::ErrorBody),
    )
)]
pub async fn lineage(
    State(s): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<LineageParams>,
) -> Result<Response, ApiError> {
    limit_in_range(q.limit)?;
    let records = s.audit.lineage_for(&p, &q.document, q.limit).await?;
    let uses = records
        .into_iter()
        .map(|r| LineageUse {
            seq: r.seq,
            at: crate::timeutil::rfc3339(r.event.ts),
            ts: r.event.ts,
            kind: r.event.kind.as_str(),
            via: r.event.reason,
            user: r.event.subject,
            session_id: r.event.session_id,
            thread: r.event.thread,
            request_id: r.event.request_id,
        })
        .collect();
    Ok(axum::Json(Lineage {
        document: q.document,
        uses,
    })
    .into_response())
}

#[utoipa::path(
    get, path = "/admin/users", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, description = "The users of the admin's tenant.", body = crate::http::openapi::UserListBody),
        (status = 401, description = "No valid token.", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "Not an admin.", body = crate::http::openapi::ErrorBody),
    )
)]
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
#[utoipa::path(
    patch, path = "/admin/users/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path)),
    request_body = crate::http::openapi::UpdateUserBody,
    responses(
        (status = 200, description = "Updated; the user's sessions are over.", body = crate::auth::UserView),
        (status = 400, description = "Malformed body.", body = crate::http::openapi::ErrorBody),
        (status = 401, description = "No valid token.", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "Not an admin.", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "No such user in the admin's tenant.", body = crate::http::openapi::ErrorBody),
        (status = 422, description = "Invalid roles or groups.", body = crate::http::openapi::ErrorBody),
    )
)]
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
