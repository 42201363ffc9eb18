//! Sign-in with an external identity: an ID token, verified by [`OidcVerifier`], becomes a
//! palisade session exactly like a password login (refresh cookie + access token).
//!
//! Users are keyed by (issuer, sub): the account's username is a keyed digest of the pair
//! (`oidc:…`), so it is stable, unique per deployment and never collides with a local
//! name. Such an account has no password (its hash is not a PHC string, so a password
//! login always fails). Roles and groups are the IdP's, mapped, and replaced at every
//! sign-in: a role removed at the IdP is gone from the next session.

use sha2::{Digest, Sha256};

use super::oidc::signin::{Pending, ReturnTo, SignInError};
use super::oidc::{ExternalIdentity, OidcVerifier, TokenUse};
use super::sealed::Purpose;
use super::{AuthError, AuthService, ClientInfo, IssuedTokens, Principal};
use crate::access::Grants;
use crate::audit::{AuditEvent, AuditKind};
use crate::model::StoreError;
use crate::secret::{constant_time_eq, new_id};
use crate::store::{Admission, Limit, LimitKind};
use crate::store::{NewUser, UserRecord};

/// Not a PHC string: a password can never match it.
const NO_PASSWORD: &str = "!external-identity";

/// Where `/auth/oidc/login` sends the browser, and the sealed flow cookie to set.
pub struct SignInStart {
    pub location: String,
    pub cookie: String,
    pub max_age_secs: u64,
}

/// The query of the IdP's redirect to `/auth/oidc/callback`.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackParams {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub iss: Option<String>,
}

enum CallbackError {
    /// The attempt is refused (audited with this reason).
    Refused(&'static str),
    /// Something on our side failed; fail closed with it.
    Failed(AuthError),
}
use CallbackError::{Failed, Refused};

/// The username of the account for (issuer, sub).
pub fn external_username(issuer: &str, subject: &str) -> String {
    let digest = Sha256::digest(format!("{issuer}\u{1f}{subject}").as_bytes());
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("oidc:{hex}")
}

impl AuthService {
    pub fn oidc(&self) -> &OidcVerifier {
        &self.oidc
    }

    /// An IdP token of kind `want`, verified; a refusal is one 401 and an audit row
    /// aggregated like rejected access tokens (a flood of forgeries writes one row per
    /// kind and window, not one each).
    pub(super) async fn verify_idp(
        &self,
        token: &str,
        want: TokenUse,
        client: &ClientInfo,
    ) -> Result<ExternalIdentity, AuthError> {
        match self.oidc.verify(token, want).await {
            Ok(id) => Ok(id),
            Err(rejected) => {
                let reason = rejected.reason();
                let ev = AuditEvent::new(AuditKind::TokenRejected)
                    .client(client)
                    .reason(reason);
                self.record_rejection(ev, reason).await;
                Err(AuthError::Unauthorized)
            }
        }
    }

    /// `POST /auth/oidc/exchange`: an ID token for a palisade session.
    pub async fn exchange_id_token(
        &self,
        id_token: &str,
        client: &ClientInfo,
        dpop_key: Option<String>,
    ) -> Result<IssuedTokens, AuthError> {
        let id = self.verify_idp(id_token, TokenUse::IdToken, client).await?;
        self.session_for(id, "oidc", client, dpop_key).await
    }

    /// The session of a verified identity: its account (created at first sight), its
    /// roles and groups replaced by the IdP's, then a session like a password login's.
    pub(super) async fn session_for(
        &self,
        id: ExternalIdentity,
        via: &'static str,
        client: &ClientInfo,
        dpop_key: Option<String>,
    ) -> Result<IssuedTokens, AuthError> {
        let user = self.external_account(&id, client).await?;
        let user = if user.roles != id.roles || user.groups != id.groups {
            let updated = self
                .users
                .update_access(
                    &user.tenant,
                    &user.id,
                    Some(id.roles.clone()),
                    Some(id.groups.clone()),
                )
                .await?
                .ok_or(AuthError::Unauthorized)?;
            self.audit
                .record(
                    AuditEvent::new(AuditKind::UserAccessChanged)
                        .tenant(&updated.tenant)
                        .subject(&updated.id)
                        .username(&updated.username)
                        .resource(id.issuer.clone())
                        .client(client),
                )
                .await;
            updated
        } else {
            user
        };
        self.open_session(&user, via, client, dpop_key).await
    }

    /// `GET /auth/oidc/login`: where to send the browser, and the sealed cookie that
    /// must come back with it.
    pub async fn begin_sign_in(
        &self,
        provider: Option<&str>,
        return_to: ReturnTo,
    ) -> Result<SignInStart, AuthError> {
        let c = self
            .oidc
            .sign_in_client(provider)
            .ok_or(AuthError::NotFound)?;
        let (location, pending) = c
            .start(return_to, self.sign_in_ttl, self.clock.now_ms() / 1000)
            .await
            .map_err(|_| AuthError::Unavailable)?;
        let payload = serde_json::to_vec(&pending).map_err(|_| AuthError::Mint)?;
        let cookie = self
            .tokens
            .seal(Purpose::OidcSignIn, &payload)
            .ok_or(AuthError::Mint)?;
        Ok(SignInStart {
            location,
            cookie,
            max_age_secs: self.sign_in_ttl.as_secs(),
        })
    }

    /// `GET /auth/oidc/callback`: the IdP's answer, with the cookie
    /// [`Self::begin_sign_in`] set, becomes a session. Every refusal is one 401 with
    /// its reason in the audit trail; nothing is created.
    pub async fn finish_sign_in(
        &self,
        cookie: Option<&str>,
        answer: &CallbackParams,
        client: &ClientInfo,
    ) -> Result<(IssuedTokens, ReturnTo), AuthError> {
        match self.check_callback(cookie, answer, client).await {
            // A browser navigation carries no DPoP proof: the session starts unbound; the
            // page's refreshes with a proof get bound access tokens.
            Ok((id, return_to)) => Ok((
                self.session_for(id, "oidc_sign_in", client, None).await?,
                return_to,
            )),
            Err(Refused(reason)) => {
                self.audit
                    .record(
                        AuditEvent::new(AuditKind::LoginFailed)
                            .client(client)
                            .reason(reason),
                    )
                    .await;
                Err(AuthError::Unauthorized)
            }
            Err(Failed(e)) => Err(e),
        }
    }

    async fn check_callback(
        &self,
        cookie: Option<&str>,
        answer: &CallbackParams,
        client: &ClientInfo,
    ) -> Result<(ExternalIdentity, ReturnTo), CallbackError> {
        // The cookie binds the answer to the browser that started the flow.
        let pending: Pending = cookie
            .and_then(|c| self.tokens.open(Purpose::OidcSignIn, c))
            .and_then(|p| serde_json::from_slice(&p).ok())
            .ok_or(Refused("sign_in_no_flow"))?;
        if pending.expires_at <= self.clock.now_ms() / 1000 {
            return Err(Refused("sign_in_expired"));
        }
        let state = answer.state.as_deref().unwrap_or_default();
        if !constant_time_eq(state, &pending.state) {
            return Err(Refused("sign_in_state_mismatch"));
        }
        let c = self
            .oidc
            .sign_in_client(Some(&pending.provider))
            .ok_or(Refused("sign_in_unknown_provider"))?;
        // RFC 9207: an IdP that names itself must name the one we sent the browser to.
        if answer.iss.as_deref().is_some_and(|iss| iss != c.issuer) {
            return Err(Refused("sign_in_issuer_mismatch"));
        }
        if answer.error.is_some() {
            return Err(Refused("sign_in_idp_error"));
        }
        let code = answer
            .code
            .as_deref()
            .filter(|c| !c.is_empty() && c.len() <= 2048)
            .ok_or(Refused("sign_in_no_code"))?;
        // Each flow completes once, on whichever node: spent before the code is redeemed.
        let once = Limit {
            name: "oidc_sign_in",
            kind: LimitKind::Window {
                max: 1,
                period: self.sign_in_ttl,
            },
        };
        match self.limits.take(&once, &pending.state).await {
            Ok(Admission::Admitted) => {}
            Ok(Admission::RetryAfter(_)) => return Err(Refused("sign_in_replayed")),
            Err(e) => return Err(Failed(e.into())),
        }
        let id_token = c
            .redeem(code, &pending.verifier)
            .await
            .map_err(|e| match e {
                SignInError::CodeRefused => Refused("sign_in_code_refused"),
                SignInError::Unavailable => Failed(AuthError::Unavailable),
            })?;
        let id = self
            .verify_idp(&id_token, TokenUse::IdToken, client)
            .await
            .map_err(|_| Refused("sign_in_bad_id_token"))?;
        if id.issuer != c.issuer
            || !id.audiences.iter().any(|a| *a == c.client_id)
            || id
                .authorized_party
                .as_ref()
                .is_some_and(|azp| *azp != c.client_id)
        {
            return Err(Refused("sign_in_wrong_client"));
        }
        if !id
            .nonce
            .as_deref()
            .is_some_and(|n| constant_time_eq(n, &pending.nonce))
        {
            return Err(Refused("sign_in_nonce_mismatch"));
        }
        Ok((id, pending.return_to))
    }
    /// The account of (issuer, sub), created at first sight; refused (and audited) if it
    /// is disabled or the IdP now names another tenant.
    pub(super) async fn external_account(
        &self,
        id: &ExternalIdentity,
        client: &ClientInfo,
    ) -> Result<UserRecord, AuthError> {
        let username = external_username(&id.issuer, &id.subject);
        let user = match self.users.user_by_username(&username).await? {
            Some(u) => u,
            None => {
                let created = self
                    .users
                    .create_user(NewUser {
                        id: new_id(),
                        tenant: id.tenant.clone(),
                        username: username.clone(),
                        password_hash: NO_PASSWORD.into(),
                        roles: id.roles.clone(),
                        groups: id.groups.clone(),
                        now: self.clock.now_ms(),
                        service: None,
                    })
                    .await;
                match created {
                    Ok(u) => {
                        self.audit
                            .record(
                                AuditEvent::new(AuditKind::UserCreated)
                                    .tenant(&u.tenant)
                                    .subject(&u.id)
                                    .username(&u.username)
                                    .resource(id.issuer.clone())
                                    .client(client),
                            )
                            .await;
                        u
                    }
                    // Two first sign-ins at once: the other one created it.
                    Err(StoreError::Conflict(_)) => self
                        .users
                        .user_by_username(&username)
                        .await?
                        .ok_or(AuthError::Unauthorized)?,
                    Err(e) => return Err(e.into()),
                }
            }
        };
        // The account belongs to one tenant; an IdP that now names another is refused,
        // and so is a disabled account.
        // A service account never signs in, whatever its name.
        if user.tenant != id.tenant || user.disabled || user.service.is_some() {
            let ev = AuditEvent::new(AuditKind::LoginFailed)
                .tenant(&user.tenant)
                .subject(&user.id)
                .username(&user.username)
                .client(client)
                .reason(if user.service.is_some() {
                    "service_account"
                } else if user.disabled {
                    "disabled"
                } else {
                    "idp_tenant_changed"
                });
            self.audit.record(ev).await;
            return Err(AuthError::Unauthorized);
        }
        Ok(user)
    }

    /// An IdP access token used directly as the API's Bearer token (`accept_bearer`):
    /// verified like an ID token (and required to be an access token), then the caller
    /// is the account of (issuer, sub) with the roles and groups *this token* carries.
    /// There is no palisade session: the session id is a digest of the token, so a
    /// thread under strict binding lives as long as the token, and palisade's logout does
    /// not end it (the IdP's token lifetime does).
    pub(super) async fn verify_idp_bearer(
        &self,
        token: &str,
        client: &ClientInfo,
    ) -> Result<Principal, AuthError> {
        let id = self
            .verify_idp(token, TokenUse::AccessToken, client)
            .await?;
        let user = self.external_account(&id, client).await?;
        let digest = Sha256::digest(token.as_bytes());
        let session: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        Ok(Principal::verified(
            user.tenant,
            user.id,
            user.username,
            std::sync::Arc::new(Grants {
                roles: id.roles,
                groups: id.groups,
            }),
            format!("idp:{session}"),
        ))
    }
}
