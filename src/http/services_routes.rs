//! `/admin/service-accounts` and `/admin/api-keys`: service accounts and their API keys,
//! managed by the admins of a tenant within their own tenant.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{Client, Json, Person};
use crate::access::ServiceProfile;
use crate::auth::{KeyOptions, KeyView, Manager, NewService, ServiceView};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/admin/service-accounts",
            get(list_services).post(create_service),
        )
        .route("/admin/service-accounts/{id}", patch(update_service))
        .route(
            "/admin/service-accounts/{id}/keys",
            get(list_keys).post(create_key),
        )
        .route("/admin/api-keys/{id}", delete(revoke_key))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateService {
    #[schema(pattern = "^[A-Za-z0-9_.@:-]{1,64}$")]
    name: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    /// The models it may call (empty: whichever its roles allow).
    #[serde(default)]
    models: Vec<String>,
    /// Its own chat requests per minute (0: the per-user default).
    #[serde(default)]
    #[schema(maximum = 1_000_000)]
    requests_per_minute: u32,
    /// Its own model tokens per UTC day (0: the per-user default).
    #[serde(default)]
    #[schema(maximum = 9_223_372_036_854_775_807_u64)]
    tokens_per_day: u64,
}

#[derive(Serialize, ToSchema)]
pub struct ServiceList {
    services: Vec<ServiceView>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateService {
    /// Disabled: its keys, and every token exchanged with them, stop at once.
    disabled: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// How long the key lives, e.g. `90d`, `12h` (default `tokens.api_key_ttl`, at most
    /// `tokens.api_key_max_ttl`).
    expires_in: Option<String>,
    /// Networks the key may be used from, e.g. `10.0.0.0/8`.
    #[serde(default)]
    allow_cidrs: Vec<String>,
    /// Bind the key to a DPoP key: its RFC 7638 SHA-256 thumbprint.
    #[schema(pattern = "^[A-Za-z0-9_-]{43}$")]
    dpop_jkt: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    /// The key, shown this once: `pal_<id>_<secret>`.
    key: String,
    #[serde(flatten)]
    view: KeyView,
}

#[derive(Serialize, ToSchema)]
pub struct KeyList {
    keys: Vec<KeyView>,
}

/// Creates a service account of the admin's tenant: a principal with roles, groups and
/// allowances of its own that authenticates with API keys and never signs in. A
/// privileged role is added afterwards through `POST /admin/grants` and a second
/// admin; acting for users is the operator's to grant (`palisade service add
/// --act-for-users`).
#[utoipa::path(
    post, path = "/admin/service-accounts", tag = "admin", security(("bearer" = [])),
    request_body = CreateService,
    responses(
        (status = 201, description = "Created.", body = ServiceView),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Not an admin, not a person (`person_required`), or a privileged role (`two_person_rule`, `idp_only`).", body = ErrorBody),
        (status = 409, description = "The name is taken (service accounts and users share one namespace).", body = ErrorBody),
        (status = 422, description = "An invalid name, role, group or model.", body = ErrorBody),
    )
)]
pub async fn create_service(
    State(s): State<AppState>,
    Person(p): Person,
    Client(client): Client,
    Json(req): Json<CreateService>,
) -> Result<Response, ApiError> {
    let svc = s
        .auth
        .create_service(
            Manager::Admin(&p),
            NewService {
                name: req.name,
                tenant: p.tenant().to_owned(),
                roles: req.roles,
                groups: req.groups,
                profile: ServiceProfile {
                    models: req.models,
                    requests_per_minute: req.requests_per_minute,
                    tokens_per_day: req.tokens_per_day,
                    act_for_users: false,
                },
            },
            &client,
        )
        .await?;
    Ok((StatusCode::CREATED, axum::Json(svc)).into_response())
}

#[utoipa::path(
    get, path = "/admin/service-accounts", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, description = "The service accounts of the admin's tenant.", body = ServiceList),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Not an admin, or not a person (`person_required`).", body = ErrorBody),
    )
)]
pub async fn list_services(
    State(s): State<AppState>,
    Person(p): Person,
) -> Result<Response, ApiError> {
    let services = s.auth.services(Manager::Admin(&p)).await?;
    Ok(axum::Json(ServiceList { services }).into_response())
}

/// Disables or enables a service account (by id or name).
#[utoipa::path(
    patch, path = "/admin/service-accounts/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "The service account's id or name.")),
    request_body = UpdateService,
    responses(
        (status = 200, description = "Updated.", body = ServiceView),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Not an admin, or not a person (`person_required`).", body = ErrorBody),
        (status = 404, description = "No such service account in the admin's tenant.", body = ErrorBody),
    )
)]
pub async fn update_service(
    State(s): State<AppState>,
    Person(p): Person,
    Client(client): Client,
    Path(id): Path<String>,
    Json(req): Json<UpdateService>,
) -> Result<Response, ApiError> {
    let svc = s
        .auth
        .set_service_disabled(Manager::Admin(&p), &id, req.disabled, &client)
        .await?;
    Ok(axum::Json(svc).into_response())
}

/// Makes an API key for the service account; the key is in this answer only.
#[utoipa::path(
    post, path = "/admin/service-accounts/{id}/keys", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "The service account's id or name.")),
    request_body = CreateKey,
    responses(
        (status = 201, description = "The key, shown this once.", body = CreatedKey),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Not an admin, or not a person (`person_required`).", body = ErrorBody),
        (status = 404, description = "No such service account in the admin's tenant.", body = ErrorBody),
        (status = 422, description = "An invalid lifetime, network or thumbprint; or the account is disabled.", body = ErrorBody),
    )
)]
pub async fn create_key(
    State(s): State<AppState>,
    Person(p): Person,
    Client(client): Client,
    Path(id): Path<String>,
    Json(req): Json<CreateKey>,
) -> Result<Response, ApiError> {
    let expires_in = match req.expires_in.as_deref() {
        None => None,
        Some(text) => Some(
            humantime_serde::re::humantime::parse_duration(text).map_err(|_| {
                ApiError::Unprocessable(
                    "`expires_in` must be a duration such as 90d or 12h.".into(),
                )
            })?,
        ),
    };
    let issued = s
        .auth
        .create_key(
            Manager::Admin(&p),
            &id,
            KeyOptions {
                expires_in,
                allow_cidrs: req.allow_cidrs,
                dpop_jkt: req.dpop_jkt,
            },
            &client,
        )
        .await?;
    use crate::secret::ExposeSecret;
    let body = CreatedKey {
        key: issued.key.expose_secret().to_owned(),
        view: issued.view,
    };
    let mut resp = (StatusCode::CREATED, axum::Json(body)).into_response();
    resp.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(resp)
}

#[utoipa::path(
    get, path = "/admin/service-accounts/{id}/keys", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "The service account's id or name.")),
    responses(
        (status = 200, description = "Its keys, newest first, without their secrets.", body = KeyList),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Not an admin, or not a person (`person_required`).", body = ErrorBody),
        (status = 404, description = "No such service account in the admin's tenant.", body = ErrorBody),
    )
)]
pub async fn list_keys(
    State(s): State<AppState>,
    Person(p): Person,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let keys = s.auth.keys_of(Manager::Admin(&p), Some(&id)).await?;
    Ok(axum::Json(KeyList { keys }).into_response())
}

/// Revokes a key at once, on every node.
#[utoipa::path(
    delete, path = "/admin/api-keys/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "The key's id (the part after `pal_`).")),
    responses(
        (status = 204, description = "Revoked."),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Not an admin, or not a person (`person_required`).", body = ErrorBody),
        (status = 404, description = "No live key with that id in the admin's tenant.", body = ErrorBody),
    )
)]
pub async fn revoke_key(
    State(s): State<AppState>,
    Person(p): Person,
    Client(client): Client,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.auth.revoke_key(Manager::Admin(&p), &id, &client).await?;
    Ok(StatusCode::NO_CONTENT)
}
