//! Sign-in with an external identity: an ID token, verified by [`OidcVerifier`], becomes a
//! palisade session exactly like a password login (refresh cookie + access token).
//!
//! Users are keyed by (issuer, sub): the account's username is a keyed digest of the pair
//! (`oidc:…`), so it is stable, unique per deployment and never collides with a local
//! name. Such an account has no password (its hash is not a PHC string, so a password
//! login always fails). Roles and groups are the IdP's, mapped, and replaced at every
//! sign-in: a role removed at the IdP is gone from the next session.

use sha2::{Digest, Sha256};

use super::oidc::{ExternalIdentity, OidcVerifier, TokenUse};
use super::{AuthError, AuthService, ClientInfo, IssuedTokens, Principal};
use crate::access::Grants;
use crate::audit::{AuditEvent, AuditKind};
use crate::secret::new_id;
use crate::store::{NewUser, StoreError, UserRecord};
use crate::timeutil::now_ms;

/// Not a PHC string: a password can never match it.
const NO_PASSWORD: &str = "!external-identity";

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
    async fn verify_idp(
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
    ) -> Result<IssuedTokens, AuthError> {
        let id = self.verify_idp(id_token, TokenUse::IdToken, client).await?;
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
        self.open_session(&user, "oidc", client).await
    }
    /// The account of (issuer, sub), created at first sight; refused (and audited) if it
    /// is disabled or the IdP now names another tenant.
    async fn external_account(
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
                        now: now_ms(),
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
        if user.tenant != id.tenant || user.disabled {
            let ev = AuditEvent::new(AuditKind::LoginFailed)
                .tenant(&user.tenant)
                .subject(&user.id)
                .username(&user.username)
                .client(client)
                .reason(if user.disabled {
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
