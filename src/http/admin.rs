//! `/admin/*`: operations for the `admin` role, always within the admin's own tenant.
//! The services check the role and carry the tenant into every query.

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{Client, Json, Person, Query};
use crate::audit::{AuditFilter, AuditKind, AuditRecord};
use crate::auth::{AccessChange, GrantView, UserView};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/users", get(list_users))
        .route("/admin/users/{id}", patch(update_user))
        .route("/admin/grants", get(list_grants).post(propose_grant))
        .route("/admin/grants/{id}/approve", post(approve_grant))
        .route("/admin/audit", get(audit))
        .route("/admin/lineage", get(lineage))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// The event kind, e.g. `login_failed` (`event` is accepted as well).
    #[serde(alias = "event")]
    kind: Option<String>,
    request_id: Option<String>,
    /// A user id: the events about that user.
    user: Option<String>,
    /// RFC 3339, inclusive.
    #[param(format = DateTime)]
    since: Option<String>,
    /// RFC 3339, exclusive.
    #[param(format = DateTime)]
    until: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditList {
    /// Newest first.
    events: Vec<AuditEventView>,
}

/// A security event as an admin reads it: who, what, why and which request, with its
/// place in the hash chain.
#[derive(Serialize, ToSchema)]
pub struct AuditEventView {
    /// The record's place in the hash chain (absent for events older than the chain).
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<i64>,
    /// Unix milliseconds.
    ts: i64,
    kind: AuditKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<String>,
    /// The user id the event is about, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    /// The username as given (login failures for unknown users have no subject).
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<String>,
    /// A fixed machine-readable reason, e.g. `expired`, `bad_password`.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// The object the event is about (a thread id), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    resource: Option<String>,
    /// The `x-request-id` of the request that caused the event.
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
    /// For an aggregated event: how many more of the same kind happened in its window.
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<u64>,
    /// The thread the event happened in.
    #[serde(skip_serializing_if = "Option::is_none")]
    thread: Option<String>,
    /// The documents whose passages went to the model (or an MCP client); ids only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    documents: Vec<String>,
    /// The service account that acted for the subject (a token it exchanged).
    #[serde(skip_serializing_if = "Option::is_none")]
    actor: Option<String>,
    /// SHA-256 over the previous record's hash and this record, hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    hash: Option<String>,
}

impl From<AuditRecord> for AuditEventView {
    fn from(r: AuditRecord) -> Self {
        let e = r.event;
        Self {
            seq: r.seq,
            ts: e.ts,
            kind: e.kind,
            tenant: e.tenant,
            subject: e.subject,
            username: e.username,
            session_id: e.session_id,
            ip: e.ip,
            reason: e.reason,
            resource: e.resource,
            request_id: e.request_id,
            count: e.count,
            thread: e.thread,
            documents: e.documents,
            actor: e.actor,
            hash: r.hash.map(|h| h.hex()),
        }
    }
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
    params(AuditParams),
    responses(
        (status = 200, description = "The admin's tenant's events.", body = AuditList),
        (status = 400, description = "Invalid query parameters.", body = ErrorBody),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Not an admin, or not a person (`person_required`).", body = ErrorBody),
    )
)]
pub async fn audit(
    State(s): State<AppState>,
    Person(p): Person,
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
    let events = events.into_iter().map(AuditEventView::from).collect();
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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LineageParams {
    /// A document id.
    document: String,
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// One time a document was put in front of a model: who, when, where. Ids only.
#[derive(Serialize, ToSchema)]
pub struct LineageUse {
    seq: Option<i64>,
    /// RFC 3339.
    at: String,
    /// Unix milliseconds.
    ts: i64,
    /// `retrieval` (palisade retrieved it for the prompt), `tool_call` (the model or an
    /// MCP client asked `search_documents`) or `search` (returned by `POST /v1/search`).
    kind: &'static str,
    /// For a tool call: `chat` or `mcp`. For a retrieval: `history` when the document
    /// reached the model through earlier answers in the prompt that drew on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    via: Option<String>,
    user: Option<String>,
    /// The service account that acted for the user, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    actor: Option<String>,
    session_id: Option<String>,
    thread: Option<String>,
    request_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Lineage {
    document: String,
    /// Newest first.
    uses: Vec<LineageUse>,
}

/// `GET /admin/lineage?document=ID`: who had the document in a prompt, when, in which
/// thread — within the admin's own tenant (another tenant's admin sees nothing).
#[utoipa::path(
    get, path = "/admin/lineage", tag = "admin", security(("bearer" = [])),
    params(LineageParams),
    responses(
        (status = 200, description = "Who had the document in a prompt, when, in which thread.", body = Lineage),
        (status = 400, description = "No document id.", body = ErrorBody),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Not an admin, or not a person (`person_required`).", body = ErrorBody),
    )
)]
pub async fn lineage(
    State(s): State<AppState>,
    Person(p): Person,
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
            actor: r.event.actor,
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
        (status = 200, description = "The users of the admin's tenant.", body = UserList),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Not an admin, or not a person (`person_required`).", body = ErrorBody),
    )
)]
pub async fn list_users(
    State(s): State<AppState>,
    Person(p): Person,
) -> Result<Response, ApiError> {
    let users = s.auth.list_users(&p).await?;
    Ok(axum::Json(UserList { users }).into_response())
}

#[derive(Serialize, ToSchema)]
pub struct UserList {
    users: Vec<UserView>,
}

#[derive(Deserialize, ToSchema)]
pub struct UpdateUser {
    roles: Option<Vec<String>>,
    groups: Option<Vec<String>>,
    disabled: Option<bool>,
}

/// Changes roles, groups or the disabled flag of a user of the admin's tenant. Any
/// change of access ends the user's sessions. No admin changes their own roles or
/// groups, and a privileged role (`admin.privileged_roles`, and `admin`) is added only
/// through `POST /admin/grants` and a second admin's approval (or only by the IdP).
#[utoipa::path(
    patch, path = "/admin/users/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path)),
    request_body = UpdateUser,
    responses(
        (status = 200, description = "Updated; the user's sessions are over.", body = UserView),
        (status = 400, description = "Malformed body.", body = ErrorBody),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Not an admin; or `own_access` (the admin's own roles or groups), `two_person_rule` (a privileged role: propose it), `idp_only` (privileged roles come from the IdP).", body = ErrorBody),
        (status = 404, description = "No such user in the admin's tenant.", body = ErrorBody),
        (status = 422, description = "Invalid roles or groups.", body = ErrorBody),
    )
)]
pub async fn update_user(
    State(s): State<AppState>,
    Person(p): Person,
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

#[derive(Deserialize, ToSchema)]
pub struct ProposeGrant {
    /// The user who would get the role (of the admin's tenant).
    #[schema(min_length = 1, max_length = 64)]
    user_id: String,
    /// A privileged role (`admin.privileged_roles`, or `admin`).
    #[schema(pattern = "^[A-Za-z0-9_.@:-]{1,64}$")]
    role: String,
}

#[derive(Serialize, ToSchema)]
pub struct GrantList {
    /// Oldest first.
    grants: Vec<GrantView>,
}

/// The first admin of the two-person rule proposes granting a privileged role; a
/// different admin approves it before it expires (`admin.grant_ttl`).
#[utoipa::path(
    post, path = "/admin/grants", tag = "admin", security(("bearer" = [])),
    request_body = ProposeGrant,
    responses(
        (status = 201, description = "Proposed; waiting for a second admin.", body = GrantView),
        (status = 400, description = "Malformed body.", body = ErrorBody),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Not an admin; or `own_access` (for the admin themself), `idp_only`.", body = ErrorBody),
        (status = 404, description = "No such user in the admin's tenant.", body = ErrorBody),
        (status = 422, description = "Not a privileged role, or the user has it already.", body = ErrorBody),
    )
)]
pub async fn propose_grant(
    State(s): State<AppState>,
    Person(p): Person,
    Client(client): Client,
    Json(req): Json<ProposeGrant>,
) -> Result<Response, ApiError> {
    let grant = s
        .auth
        .propose_grant(&p, &req.user_id, &req.role, &client)
        .await?;
    Ok((axum::http::StatusCode::CREATED, axum::Json(grant)).into_response())
}

#[utoipa::path(
    get, path = "/admin/grants", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, description = "The proposals of the admin's tenant waiting for approval.", body = GrantList),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Not an admin, or not a person (`person_required`).", body = ErrorBody),
    )
)]
pub async fn list_grants(
    State(s): State<AppState>,
    Person(p): Person,
) -> Result<Response, ApiError> {
    let grants = s.auth.pending_grants(&p).await?;
    Ok(axum::Json(GrantList { grants }).into_response())
}

/// A second admin approves a proposal: the role is the user's at once, and the user's
/// sessions end.
#[utoipa::path(
    post, path = "/admin/grants/{id}/approve", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "Approved; the user has the role and must sign in again.", body = UserView),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Not an admin; or `own_proposal` (its proposer), `own_access` (its grantee), `idp_only`.", body = ErrorBody),
        (status = 404, description = "No pending proposal with that id in the admin's tenant.", body = ErrorBody),
        (status = 409, description = "`grant_expired`: not approved in time.", body = ErrorBody),
    )
)]
pub async fn approve_grant(
    State(s): State<AppState>,
    Person(p): Person,
    Client(client): Client,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let user = s.auth.approve_grant(&p, &id, &client).await?;
    Ok(axum::Json(user).into_response())
}
