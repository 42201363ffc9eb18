//! palisade as an OAuth 2.1 authorization server for the clients of its own resources
//! (MCP clients above all), as the MCP authorization specification asks: dynamic client
//! registration (RFC 7591), the authorization code flow with PKCE S256 only, rotating
//! refresh tokens with reuse detection, and tokens bound to one resource (RFC 8707).
//!
//! * Clients are public (no secret): PKCE is what binds a code to the client that asked
//!   for it. A client belongs to the tenant of the first user who approves it; one never
//!   approved lapses after `oauth.unapproved_client_ttl`.
//! * The checked authorization request travels in the consent form sealed (nothing in it
//!   can be changed), and so does the code: one use, `oauth.code_ttl`, spent in the shared
//!   limit store, so a replay on any node is refused and ends what the first use made.
//! * A grant is a session of the user, like a sign-in's, whose id names the client and
//!   the resource (`oa.<client>.<resource>.<tail>`): signing out everywhere, revoking it
//!   on `/auth/sessions` or disabling the user ends it; its refresh tokens rotate like the
//!   browser's, a reused one ends the session. Its tokens work on their resource only.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::sealed::Purpose;
use super::{AuthError, AuthService, ClientInfo, IssuedTokens};
use crate::audit::{AuditEvent, AuditKind};
use crate::secret::{RefreshToken, SecretString, constant_time_eq, new_id};
use crate::store::{Admission, ClientBinding, Limit, LimitKind, OAuthClientRecord, UserRecord};

/// What an OAuth token may be used on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    /// `/mcp`.
    Mcp,
    /// The API: `/v1/*`.
    Api,
}

impl Resource {
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Mcp => "mcp",
            Resource::Api => "api",
        }
    }

    /// The path of this resource on palisade's origin.
    pub fn path(self) -> &'static str {
        match self {
            Resource::Mcp => "/mcp",
            Resource::Api => "/v1",
        }
    }

    /// The resource a request path belongs to; `None` for every other route (session,
    /// admin, pages), where no OAuth token is accepted.
    pub fn of_path(path: &str) -> Option<Resource> {
        let under = |p: &str| path == p || path.starts_with(&format!("{p}/"));
        if under("/mcp") {
            Some(Resource::Mcp)
        } else if under("/v1") {
            Some(Resource::Api)
        } else {
            None
        }
    }

    /// A resource indicator (RFC 8707: an absolute URL) on one of `origins`.
    pub fn of_indicator(url: &str, origins: &[String]) -> Option<Resource> {
        let url = url.trim_end_matches('/');
        [Resource::Mcp, Resource::Api].into_iter().find(|r| {
            origins
                .iter()
                .any(|o| url == format!("{}{}", o.trim_end_matches('/'), r.path()))
        })
    }

    fn parse(s: &str) -> Option<Resource> {
        match s {
            "mcp" => Some(Resource::Mcp),
            "api" => Some(Resource::Api),
            _ => None,
        }
    }
}

/// The id of a grant's session: it names the client and the resource.
fn grant_session_id(client_id: &str, resource: Resource, tail: &str) -> String {
    format!("oa.{client_id}.{}.{tail}", resource.as_str())
}

/// The client and resource of a grant's session id; `None` for any other session.
pub fn grant_of_session(sid: &str) -> Option<(&str, Resource)> {
    let rest = sid.strip_prefix("oa.")?;
    let mut parts = rest.splitn(3, '.');
    let client = parts.next().filter(|c| !c.is_empty())?;
    let resource = Resource::parse(parts.next()?)?;
    parts.next()?;
    Some((client, resource))
}

/// The session a code makes: derived from the code's id, so that a replay of the code
/// can end it.
fn session_of_code(code: &CodeClaims) -> String {
    let digest = Sha256::digest(format!("palisade:oauth-code:{}", code.jti).as_bytes());
    let tail: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    grant_session_id(&code.client_id, code.resource, &tail)
}

/// A client's registration request (RFC 7591 §2), as far as palisade reads it.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
pub struct Registration {
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub client_name: Option<String>,
    #[serde(default)]
    pub grant_types: Option<Vec<String>>,
    #[serde(default)]
    pub response_types: Option<Vec<String>>,
    #[serde(default)]
    pub token_endpoint_auth_method: Option<String>,
}

/// Why a registration is refused (RFC 7591 §3.2.2).
#[derive(Debug)]
pub enum RegistrationError {
    /// `invalid_redirect_uri`.
    RedirectUri(&'static str),
    /// `invalid_client_metadata`.
    Metadata(&'static str),
    Throttled {
        retry_after_secs: u64,
    },
    Auth(AuthError),
}

impl From<AuthError> for RegistrationError {
    fn from(e: AuthError) -> Self {
        RegistrationError::Auth(e)
    }
}
impl From<crate::model::StoreError> for RegistrationError {
    fn from(e: crate::model::StoreError) -> Self {
        RegistrationError::Auth(e.into())
    }
}

/// A redirect URI a public client may register (OAuth 2.1 §2.3.1, RFC 8252): https, or
/// http on a loopback address (a native client's local listener); no fragment.
fn acceptable_redirect(uri: &str) -> bool {
    let Ok(u) = url::Url::parse(uri) else {
        return false;
    };
    if uri.len() > 512 || u.fragment().is_some() || !u.username().is_empty() {
        return false;
    }
    match u.scheme() {
        "https" => u.host().is_some(),
        "http" => {
            matches!(
                u.host(),
                Some(url::Host::Ipv4(ip)) if ip.is_loopback()
            ) || matches!(u.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback())
                || u.host_str() == Some("localhost")
        }
        _ => false,
    }
}

/// A checked authorization request: what the consent form carries, sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    #[serde(default)]
    pub state: Option<String>,
    pub resource: Resource,
    /// Unix ms after which the form is stale.
    pub exp: i64,
}

/// An authorization request's parameters as they arrive.
#[derive(Debug, Default, Deserialize)]
pub struct AuthorizeParams {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub state: Option<String>,
    pub resource: Option<String>,
    pub scope: Option<String>,
}

/// Why an authorization request is refused.
#[derive(Debug)]
pub enum AuthorizeError {
    /// The client or its redirect URI cannot be trusted: the user is told, and never
    /// sent anywhere (RFC 6749 §4.1.2.1).
    Page(&'static str),
    /// Everything else goes back to the client's redirect URI.
    Redirect {
        redirect_uri: String,
        state: Option<String>,
        error: &'static str,
    },
    Auth(AuthError),
}

/// The code's contents: sealed, so only palisade reads or makes one.
#[derive(Debug, Serialize, Deserialize)]
struct CodeClaims {
    jti: String,
    client_id: String,
    redirect_uri: String,
    code_challenge: String,
    resource: Resource,
    tenant: String,
    user_id: String,
    exp: i64,
}

/// What the token endpoint answers for the OAuth grants.
pub struct OAuthTokens {
    pub issued: IssuedTokens,
    pub resource: Resource,
}

/// Why a token request of an OAuth grant is refused (RFC 6749 §5.2).
#[derive(Debug)]
pub enum GrantError {
    /// `invalid_grant`.
    Grant,
    /// `invalid_client`: unknown, lapsed, or not the code's client.
    Client,
    /// `invalid_target` (RFC 8707).
    Target,
    /// `invalid_request`.
    Request(&'static str),
    Auth(AuthError),
}

impl From<AuthError> for GrantError {
    fn from(e: AuthError) -> Self {
        GrantError::Auth(e)
    }
}
impl From<crate::model::StoreError> for GrantError {
    fn from(e: crate::model::StoreError) -> Self {
        GrantError::Auth(e.into())
    }
}

/// `[oauth]`-like settings, from the configuration.
pub(super) struct OAuthSettings {
    pub unapproved_client_ttl_ms: i64,
    pub unused_client_ttl_ms: i64,
    pub code_ttl_ms: i64,
    pub registrations_per_hour: u32,
    /// The origins palisade answers at (resource indicators name one of them).
    pub origins: Vec<String>,
}

/// How long the consent form stays usable.
const CONSENT_TTL_MS: i64 = 10 * 60 * 1000;

fn valid_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

impl AuthService {
    /// `POST /oauth/register`: a public client, throttled per address.
    pub async fn register_client(
        &self,
        reg: Registration,
        client: &ClientInfo,
    ) -> Result<OAuthClientRecord, RegistrationError> {
        let limit = Limit {
            name: "oauth_register",
            kind: LimitKind::Window {
                max: self.oauth.registrations_per_hour.max(1),
                period: std::time::Duration::from_secs(3600),
            },
        };
        let ip = client.ip.map(|i| i.to_string()).unwrap_or_default();
        if let Admission::RetryAfter(s) = self.limits.take(&limit, &ip).await? {
            return Err(RegistrationError::Throttled {
                retry_after_secs: s,
            });
        }
        if reg.redirect_uris.is_empty() || reg.redirect_uris.len() > 8 {
            return Err(RegistrationError::RedirectUri(
                "redirect_uris must hold 1 to 8 URIs",
            ));
        }
        if !reg.redirect_uris.iter().all(|u| acceptable_redirect(u)) {
            return Err(RegistrationError::RedirectUri(
                "redirect_uris must be https, or http on a loopback address, without a fragment",
            ));
        }
        let grants_ok = reg.grant_types.as_ref().is_none_or(|g| {
            g.iter()
                .all(|t| t == "authorization_code" || t == "refresh_token")
        });
        let responses_ok = reg
            .response_types
            .as_ref()
            .is_none_or(|r| r.iter().all(|t| t == "code"));
        if !grants_ok || !responses_ok {
            return Err(RegistrationError::Metadata(
                "only the authorization_code and refresh_token grants (response type code) are offered",
            ));
        }
        let name: String = reg
            .client_name
            .as_deref()
            .unwrap_or("An unnamed application")
            .chars()
            .filter(|c| !c.is_control())
            .take(100)
            .collect();
        let now = self.clock.now_ms();
        let rec = OAuthClientRecord {
            id: new_id(),
            name: if name.trim().is_empty() {
                "An unnamed application".into()
            } else {
                name
            },
            redirect_uris: reg.redirect_uris,
            tenant: None,
            created_at: now,
            expires_at: Some(now.saturating_add(self.oauth.unapproved_client_ttl_ms)),
            last_used_at: None,
        };
        self.keys.create_client(rec.clone()).await?;
        self.audit
            .record(
                AuditEvent::new(AuditKind::ClientRegistered)
                    .resource(rec.id.clone())
                    .client(client),
            )
            .await;
        Ok(rec)
    }

    /// A live client: approved and used within `oauth.unused_client_ttl`, or not yet
    /// lapsed unapproved.
    async fn live_client(&self, id: &str) -> Result<Option<OAuthClientRecord>, AuthError> {
        let now = self.clock.now_ms();
        let unused = self.oauth.unused_client_ttl_ms;
        Ok(self.keys.client(id).await?.filter(|c| match &c.tenant {
            Some(_) => {
                c.last_used_at
                    .unwrap_or(c.created_at)
                    .saturating_add(unused)
                    > now
            }
            None => c.expires_at.is_some_and(|e| e > now),
        }))
    }

    /// `GET /oauth/authorize`: the request checked, for the consent page.
    pub async fn check_authorization(
        &self,
        q: AuthorizeParams,
    ) -> Result<(OAuthClientRecord, AuthorizationRequest), AuthorizeError> {
        let client_id = q.client_id.as_deref().ok_or(AuthorizeError::Page(
            "The request names no application (client_id).",
        ))?;
        let client = self
            .live_client(client_id)
            .await
            .map_err(AuthorizeError::Auth)?
            .ok_or(AuthorizeError::Page(
                "The application is not registered here, or its registration lapsed.",
            ))?;
        // The redirect URI must be one registered, exactly; with only one registered it
        // may be left out.
        let redirect_uri = match q.redirect_uri.as_deref() {
            Some(r) if client.redirect_uris.iter().any(|u| u == r) => r.to_owned(),
            None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
            _ => {
                return Err(AuthorizeError::Page(
                    "The return address is not one the application registered.",
                ));
            }
        };
        let back = |error: &'static str| AuthorizeError::Redirect {
            redirect_uri: redirect_uri.clone(),
            state: q.state.clone(),
            error,
        };
        if q.response_type.as_deref() != Some("code") {
            return Err(back("unsupported_response_type"));
        }
        let challenge = q
            .code_challenge
            .as_deref()
            .filter(|c| {
                c.len() == 43
                    && c.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
            .ok_or_else(|| back("invalid_request"))?;
        if q.code_challenge_method.as_deref() != Some("S256") {
            return Err(back("invalid_request"));
        }
        if q.state.as_ref().is_some_and(|s| s.len() > 512) {
            return Err(back("invalid_request"));
        }
        let resource = match q.resource.as_deref() {
            None => Resource::Mcp,
            Some(r) => Resource::of_indicator(r, &self.oauth.origins)
                .ok_or_else(|| back("invalid_target"))?,
        };
        let _ = q.scope;
        let req = AuthorizationRequest {
            client_id: client.id.clone(),
            redirect_uri,
            code_challenge: challenge.to_owned(),
            state: q.state,
            resource,
            exp: self.clock.now_ms().saturating_add(CONSENT_TTL_MS),
        };
        Ok((client, req))
    }

    /// The consent form's sealed request.
    pub fn seal_request(&self, req: &AuthorizationRequest) -> Option<String> {
        self.tokens
            .seal(Purpose::OAuthRequest, &serde_json::to_vec(req).ok()?)
    }

    /// A consent form's request, if palisade sealed it and it is not stale.
    pub fn open_request(&self, sealed: &str) -> Option<AuthorizationRequest> {
        let req: AuthorizationRequest =
            serde_json::from_slice(&self.tokens.open(Purpose::OAuthRequest, sealed)?).ok()?;
        (req.exp > self.clock.now_ms()).then_some(req)
    }

    /// The client a sealed request names.
    pub async fn client_of(&self, id: &str) -> Result<Option<OAuthClientRecord>, AuthError> {
        self.live_client(id).await
    }

    /// The user approving on the consent page with a password: throttled and audited
    /// like a sign-in.
    pub async fn consenting_user(
        &self,
        username: &str,
        password: &SecretString,
        client: &ClientInfo,
        device: Option<&str>,
    ) -> Result<UserRecord, AuthError> {
        self.check_password(username, password, client, device)
            .await
    }

    /// The user whose browser session (its refresh cookie) is live, if any: the consent
    /// page then only asks for approval. A grant's own session never counts.
    pub async fn signed_in_user(&self, refresh: Option<&str>) -> Option<UserRecord> {
        let token = RefreshToken::parse(refresh?)?;
        let session = self
            .sessions
            .session_for_refresh(token.hash())
            .await
            .ok()??;
        if !session.is_live(self.clock.now_ms(), self.idle_ttl_ms)
            || grant_of_session(&session.id).is_some()
        {
            return None;
        }
        self.users
            .user_by_id(&session.tenant, &session.user_id)
            .await
            .ok()?
            .filter(|u| !u.disabled && u.service.is_none())
    }

    /// The user approved: the client is bound to their tenant (if it was not yet) and
    /// gets a code. A client of another tenant is refused.
    pub async fn approve(
        &self,
        req: &AuthorizationRequest,
        user: &UserRecord,
        client: &ClientInfo,
    ) -> Result<String, AuthorizeError> {
        if user.disabled || user.service.is_some() {
            return Err(AuthorizeError::Page(
                "This account cannot approve applications.",
            ));
        }
        let now = self.clock.now_ms();
        match self
            .keys
            .bind_client(&req.client_id, &user.tenant, now)
            .await
            .map_err(|e| AuthorizeError::Auth(e.into()))?
        {
            ClientBinding::Bound => {}
            ClientBinding::OtherTenant => {
                return Err(AuthorizeError::Page(
                    "This application was approved in another organisation; register it again.",
                ));
            }
            ClientBinding::Unknown => {
                return Err(AuthorizeError::Page(
                    "The application is not registered here, or its registration lapsed.",
                ));
            }
        }
        self.touch_client(&req.client_id, now).await;
        let claims = CodeClaims {
            jti: new_id(),
            client_id: req.client_id.clone(),
            redirect_uri: req.redirect_uri.clone(),
            code_challenge: req.code_challenge.clone(),
            resource: req.resource,
            tenant: user.tenant.clone(),
            user_id: user.id.clone(),
            exp: now.saturating_add(self.oauth.code_ttl_ms),
        };
        let code = serde_json::to_vec(&claims)
            .ok()
            .and_then(|b| self.tokens.seal(Purpose::OAuthCode, &b))
            .ok_or(AuthorizeError::Auth(AuthError::Mint))?;
        self.audit
            .record(
                AuditEvent::new(AuditKind::ClientApproved)
                    .tenant(&user.tenant)
                    .subject(&user.id)
                    .username(&user.username)
                    .resource(req.client_id.clone())
                    .reason(req.resource.as_str())
                    .client(client),
            )
            .await;
        Ok(code)
    }

    /// The user said no.
    pub async fn deny(&self, req: &AuthorizationRequest, client: &ClientInfo) {
        self.audit
            .record(
                AuditEvent::new(AuditKind::ClientDenied)
                    .resource(req.client_id.clone())
                    .client(client),
            )
            .await;
    }

    /// `grant_type=authorization_code`.
    pub async fn redeem_code(
        &self,
        client_id: &str,
        code: &str,
        redirect_uri: Option<&str>,
        verifier: &str,
        resource: Option<&str>,
        client: &ClientInfo,
    ) -> Result<OAuthTokens, GrantError> {
        let registered = self
            .live_client(client_id)
            .await?
            .ok_or(GrantError::Client)?;
        let claims: CodeClaims = self
            .tokens
            .open(Purpose::OAuthCode, code)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(GrantError::Grant)?;
        let now = self.clock.now_ms();
        if claims.client_id != registered.id {
            self.refuse_grant("code_of_another_client", client).await;
            return Err(GrantError::Grant);
        }
        if claims.exp <= now {
            self.refuse_grant("code_expired", client).await;
            return Err(GrantError::Grant);
        }
        if redirect_uri.is_some_and(|r| r != claims.redirect_uri) {
            self.refuse_grant("redirect_uri_mismatch", client).await;
            return Err(GrantError::Grant);
        }
        if let Some(r) = resource
            && Resource::of_indicator(r, &self.oauth.origins) != Some(claims.resource)
        {
            return Err(GrantError::Target);
        }
        // PKCE (RFC 7636, S256 only): the verifier only the client that asked has.
        if !valid_verifier(verifier) {
            return Err(GrantError::Request(
                "code_verifier must be 43 to 128 unreserved characters",
            ));
        }
        let computed = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            Sha256::digest(verifier.as_bytes()),
        );
        if !constant_time_eq(&computed, &claims.code_challenge) {
            self.refuse_grant("pkce_mismatch", client).await;
            return Err(GrantError::Grant);
        }
        // Once, on any node. A second use ends what the first one made.
        let once = Limit {
            name: "oauth_code",
            kind: LimitKind::Window {
                max: 1,
                period: std::time::Duration::from_millis(
                    self.oauth.code_ttl_ms.max(1_000) as u64 * 2,
                ),
            },
        };
        let sid = session_of_code(&claims);
        if let Admission::RetryAfter(_) = self.limits.take(&once, &claims.jti).await? {
            if self
                .sessions
                .revoke_session(&claims.tenant, &claims.user_id, &sid, "code_replayed", now)
                .await?
            {
                self.cache.invalidate(&sid).await;
            }
            self.refuse_grant("code_replayed", client).await;
            return Err(GrantError::Grant);
        }
        let user = self
            .users
            .user_by_id(&claims.tenant, &claims.user_id)
            .await?
            .filter(|u| !u.disabled && u.service.is_none())
            .ok_or(GrantError::Grant)?;
        if registered.tenant.as_deref() != Some(user.tenant.as_str()) {
            return Err(GrantError::Client);
        }
        let via = ClientInfo {
            user_agent: Some(format!("OAuth client: {}", registered.name)),
            ..client.clone()
        };
        let issued = self
            .open_session_as(sid, &user, "oauth", &via, None)
            .await?;
        self.touch_client(&registered.id, now).await;
        Ok(OAuthTokens {
            issued,
            resource: claims.resource,
        })
    }

    /// `grant_type=refresh_token`: rotates the grant's refresh token (a reused one ends
    /// the grant's session).
    pub async fn refresh_grant(
        &self,
        client_id: &str,
        refresh: &str,
        resource: Option<&str>,
        client: &ClientInfo,
    ) -> Result<OAuthTokens, GrantError> {
        let registered = self
            .live_client(client_id)
            .await?
            .ok_or(GrantError::Client)?;
        let token = RefreshToken::parse(refresh).ok_or(GrantError::Grant)?;
        let session = self
            .sessions
            .session_for_refresh(token.hash())
            .await?
            .ok_or(GrantError::Grant)?;
        let Some((owner, res)) = grant_of_session(&session.id) else {
            // A browser's refresh token is not an OAuth client's.
            return Err(GrantError::Grant);
        };
        if owner != registered.id {
            self.refuse_grant("refresh_of_another_client", client).await;
            return Err(GrantError::Grant);
        }
        if let Some(r) = resource
            && Resource::of_indicator(r, &self.oauth.origins) != Some(res)
        {
            return Err(GrantError::Target);
        }
        let issued = self
            .rotate_refresh(Some(refresh), client, None, true)
            .await
            .map_err(|e| match e {
                AuthError::RefreshInvalid
                | AuthError::RefreshReused
                | AuthError::RefreshInProgress
                | AuthError::Dpop(_) => GrantError::Grant,
                other => GrantError::Auth(other),
            })?;
        self.touch_client(&registered.id, self.clock.now_ms()).await;
        Ok(OAuthTokens {
            issued,
            resource: res,
        })
    }

    async fn touch_client(&self, id: &str, now: i64) {
        if let Err(e) = self.keys.touch_client(id, now).await {
            tracing::warn!(error = %e, "could not record a client's use");
        }
    }

    async fn refuse_grant(&self, reason: &'static str, client: &ClientInfo) {
        let ev = AuditEvent::new(AuditKind::TokenRejected)
            .client(client)
            .reason(reason);
        self.record_rejection(ev, reason).await;
    }

    /// Deletes clients that lapsed unapproved.
    pub async fn prune_clients(&self) -> Result<u64, AuthError> {
        let now = self.clock.now_ms();
        Ok(self
            .keys
            .prune_clients(now, now.saturating_sub(self.oauth.unused_client_ttl_ms))
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_session_ids_name_their_client_and_resource() {
        let sid = grant_session_id("abc_-1", Resource::Api, "ff00");
        assert_eq!(grant_of_session(&sid), Some(("abc_-1", Resource::Api)));
        for other in [
            "",
            "oa.",
            "oa.x",
            "oa.x.mcp",
            "oa..mcp.t",
            "oa.x.web.t",
            "s3ss10n",
        ] {
            assert_eq!(grant_of_session(other), None, "{other}");
        }
    }

    #[test]
    fn resources_by_path_and_by_indicator() {
        assert_eq!(Resource::of_path("/mcp"), Some(Resource::Mcp));
        assert_eq!(Resource::of_path("/mcp/x"), Some(Resource::Mcp));
        assert_eq!(Resource::of_path("/v1/models"), Some(Resource::Api));
        assert_eq!(Resource::of_path("/v1x"), None);
        assert_eq!(Resource::of_path("/auth/me"), None);
        assert_eq!(Resource::of_path("/mcpx"), None);
        let origins = vec!["https://p.example".to_owned()];
        assert_eq!(
            Resource::of_indicator("https://p.example/mcp", &origins),
            Some(Resource::Mcp)
        );
        assert_eq!(
            Resource::of_indicator("https://p.example/v1/", &origins),
            Some(Resource::Api)
        );
        assert_eq!(
            Resource::of_indicator("https://evil.example/mcp", &origins),
            None
        );
        assert_eq!(
            Resource::of_indicator("https://p.example/admin", &origins),
            None
        );
    }

    #[test]
    fn only_https_or_loopback_redirects() {
        for ok in [
            "https://app.example/cb",
            "http://127.0.0.1:3333/callback",
            "http://localhost:8000/cb",
            "http://[::1]:9/cb",
        ] {
            assert!(acceptable_redirect(ok), "{ok}");
        }
        for bad in [
            "http://app.example/cb",
            "https://app.example/cb#frag",
            "javascript:alert(1)",
            "https://user@app.example/cb",
            "ftp://x/y",
            "not a url",
        ] {
            assert!(!acceptable_redirect(bad), "{bad}");
        }
    }
}
