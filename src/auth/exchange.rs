//! On behalf of a user: OAuth 2.0 Token Exchange (RFC 8693).
//!
//! A backend that serves a signed-in user presents its own API key (the actor) and the
//! user's token (the subject: a palisade access token, or an ID or access token of a
//! configured IdP) and gets a short-lived palisade access token for that user with
//! `act` naming the service. The token lives in the user's session: signing out,
//! revoking the session or disabling the user stops it at once; so does revoking the
//! service's key or disabling the service. Retrieval uses the user's scope.

use super::oidc::TokenUse;
use super::tokens::{AccessClaims, ActClaim};
use super::{AuthError, AuthService, ClientInfo, Principal};
use crate::access::{Actor, Caller};
use crate::audit::{AuditEvent, AuditKind};

/// `urn:ietf:params:oauth:token-type:access_token`.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// `urn:ietf:params:oauth:token-type:id_token`.
pub const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";

/// What the subject token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectKind {
    /// A palisade access token, or an IdP's access token where its issuer allows them.
    AccessToken,
    /// An IdP's ID token.
    IdToken,
}

/// Why an exchange was refused, in the terms of RFC 8693 §2.2.2 / RFC 6749 §5.2.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The service may not act for users (`unauthorized_client`).
    #[error("the service may not act for users")]
    NotAllowed,
    /// The subject token is refused (`invalid_grant`).
    #[error("the subject token is refused")]
    BadSubject,
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// An exchanged token. Never logged.
pub struct Exchanged {
    pub access_token: String,
    pub expires_in: u64,
}

impl std::fmt::Debug for Exchanged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Exchanged([redacted])")
    }
}

impl AuthService {
    /// Exchanges `subject` for a token acting as its user, for `actor` (a service
    /// authenticated with its key).
    pub async fn exchange(
        &self,
        actor: &Principal,
        subject: &str,
        kind: SubjectKind,
        client: &ClientInfo,
    ) -> Result<Exchanged, ExchangeError> {
        let Caller::Service { key_id, profile } = actor.caller() else {
            return Err(ExchangeError::NotAllowed);
        };
        if !profile.act_for_users {
            self.refuse_exchange(actor, "not_allowed_to_act", client)
                .await;
            return Err(ExchangeError::NotAllowed);
        }
        let claims = match self.exchange_subject(subject, kind, client).await {
            Ok(c) if c.tenant == actor.tenant() => c,
            Ok(_) => {
                self.refuse_exchange(actor, "other_tenant", client).await;
                return Err(ExchangeError::BadSubject);
            }
            Err(ExchangeError::BadSubject) => {
                self.refuse_exchange(actor, "subject_refused", client).await;
                return Err(ExchangeError::BadSubject);
            }
            Err(e) => return Err(e),
        };
        let claims = AccessClaims {
            jkt: None,
            actor: Some(ActClaim {
                sub: actor.subject().to_owned(),
                username: actor.username().to_owned(),
                kid: key_id.clone(),
            }),
            ..claims
        };
        let access_token = self.tokens.mint(&claims).map_err(|_| AuthError::Mint)?;
        let mut ev = AuditEvent::new(AuditKind::TokenExchanged)
            .tenant(&claims.tenant)
            .subject(&claims.subject)
            .username(&claims.username)
            .session(&claims.session_id)
            .resource(format!("key:{key_id}"))
            .client(client);
        ev.actor = Some(actor.subject().to_owned());
        self.audit.record(ev).await;
        Ok(Exchanged {
            access_token,
            expires_in: self.tokens.access_ttl().as_secs(),
        })
    }

    /// The user a subject token names, with the live session the exchanged token will
    /// belong to. Any refusal is [`ExchangeError::BadSubject`]; a store error is not.
    async fn exchange_subject(
        &self,
        token: &str,
        kind: SubjectKind,
        client: &ClientInfo,
    ) -> Result<AccessClaims, ExchangeError> {
        let idp = match kind {
            SubjectKind::IdToken => Some(TokenUse::IdToken),
            SubjectKind::AccessToken if self.oidc.routes_bearer(token) => {
                Some(TokenUse::AccessToken)
            }
            SubjectKind::AccessToken => None,
        };
        if let Some(want) = idp {
            let id = match self.verify_idp(token, want, client).await {
                Ok(id) => id,
                Err(AuthError::Unauthorized) => return Err(ExchangeError::BadSubject),
                Err(e) => return Err(e.into()),
            };
            // A session of its own, like a sign-in's: signing out everywhere or
            // disabling the user ends it.
            let issued = match self.session_for(id, "exchange", client, None).await {
                Ok(i) => i,
                Err(AuthError::Unauthorized) => return Err(ExchangeError::BadSubject),
                Err(e) => return Err(e.into()),
            };
            let claims = self
                .tokens
                .verify(&issued.access_token)
                .map_err(|_| AuthError::Mint)?;
            return Ok(claims);
        }
        let Ok(claims) = self.tokens.verify(token) else {
            return Err(ExchangeError::BadSubject);
        };
        // A token bound to a key would shed its binding; one already exchanged would
        // chain services.
        if claims.jkt.is_some() || claims.actor.is_some() {
            return Err(ExchangeError::BadSubject);
        }
        match self
            .cache
            .check(&claims.session_id, &claims.tenant, &claims.subject)
            .await
        {
            Ok(super::sessions::Liveness::Live(_)) => Ok(claims),
            Ok(super::sessions::Liveness::Dead) => Err(ExchangeError::BadSubject),
            Err(e) => Err(AuthError::Store(e).into()),
        }
    }

    async fn refuse_exchange(&self, actor: &Principal, reason: &'static str, c: &ClientInfo) {
        let ev = AuditEvent::new(AuditKind::TokenRejected)
            .by(actor)
            .client(c)
            .reason(reason);
        self.record_rejection(ev, reason).await;
    }

    /// The principal of an exchanged token whose session is live: only while the
    /// acting service's key is live, the service enabled and still allowed to act.
    pub(super) async fn acting(
        &self,
        p: Principal,
        act: ActClaim,
        client: &ClientInfo,
    ) -> Result<Principal, AuthError> {
        let entry = self.key_entry_for_actor(&act.kid).await?;
        let now = self.clock.now_ms();
        let live = entry.is_some_and(|(key, service)| {
            key.is_live(now)
                && key.service_id == act.sub
                && key.tenant == p.tenant()
                && !service.disabled
                && service.service.as_ref().is_some_and(|s| s.act_for_users)
        });
        if !live {
            let ev = AuditEvent::new(AuditKind::TokenRejected)
                .by(&p)
                .client(client)
                .reason("actor_not_live");
            self.record_rejection(ev, "actor_not_live").await;
            return Err(AuthError::Unauthorized);
        }
        Ok(p.through(Caller::OnBehalf(Actor {
            subject: act.sub,
            username: act.username,
            key_id: act.kid,
        })))
    }
}
