//! Login, refresh, logout and the user's own sessions.

use super::sealed::Purpose;
use super::tokens::AccessClaims;
use super::{AuthError, AuthService, ClientInfo, IssuedTokens, Principal};
use crate::audit::{AuditEvent, AuditKind};
use crate::secret::{RefreshToken, SecretString, new_id};
use crate::store::{
    Admission, Limit, NewSession, RotateOutcome, RotateRequest, SessionRecord, UserRecord,
};

/// What a device cookie holds (sealed): the user, a nonce that keys its own throttle,
/// and its expiry (unix ms).
#[derive(serde::Serialize, serde::Deserialize)]
struct DeviceClaims {
    u: String,
    n: String,
    exp: i64,
}

impl AuthService {
    /// A password sign-in. `device` is the device cookie the browser sent, if any: a
    /// browser that signed in as this user before is throttled on its own, not by the
    /// per-username allowance a stranger's guesses use up (OWASP's device cookies).
    /// The tokens come back with a fresh device cookie for this user.
    pub async fn login(
        &self,
        username: &str,
        password: &SecretString,
        client: &ClientInfo,
        dpop_key: Option<String>,
        device: Option<&str>,
    ) -> Result<(IssuedTokens, String), AuthError> {
        let user = self
            .check_password(username, password, client, device)
            .await?;
        let issued = self
            .open_session(&user, "password", client, dpop_key)
            .await?;
        let canonical = crate::access::canonical_username(username);
        let cookie = self.device_cookie(&canonical).ok_or(AuthError::Mint)?;
        Ok((issued, cookie))
    }

    /// The account `username` names if `password` is its password: throttled, audited
    /// and counted exactly like a sign-in (the OAuth consent page uses it too). A
    /// service account never passes.
    pub(super) async fn check_password(
        &self,
        username: &str,
        password: &SecretString,
        client: &ClientInfo,
        device: Option<&str>,
    ) -> Result<UserRecord, AuthError> {
        let canonical = crate::access::canonical_username(username);
        // Limits are keyed by a pseudonym of the username: it may be a password typed
        // into the wrong field, and the limits may live in a shared store.
        let user_key = self.tokens.pseudonym(&canonical);
        let ip_key = client.ip.map(|i| i.to_string()).unwrap_or_default();
        let pair_key = format!("{user_key}\u{1f}{ip_key}");
        let known = device.and_then(|d| self.known_device(d, &canonical));
        // Every slot is taken before the slow hash, each in one atomic step, so a burst
        // of concurrent guesses evaluates at most the limit; an attempt refused by one
        // limit gives back what it took from the others.
        let ceiling = match &known {
            Some(nonce) => (&self.device_limit, format!("{user_key}\u{1f}{nonce}")),
            None => (&self.user_ceiling, user_key.clone()),
        };
        if let Err(retry_after_secs) = self
            .admit_login((ceiling.0, ceiling.1.clone()), &pair_key, &ip_key)
            .await?
        {
            self.audit
                .record(
                    AuditEvent::new(AuditKind::LoginThrottled)
                        .username(self.tokens.pseudonym(&canonical))
                        .client(client),
                )
                .await;
            return Err(AuthError::Throttled { retry_after_secs });
        }

        let user = self.users.user_by_username(&canonical).await?;
        let password_ok = self
            .passwords
            .verify(password, user.as_ref().map(|u| u.password_hash.as_str()))
            .await;
        let failure = match &user {
            None => Some("unknown_user"),
            Some(_) if !password_ok => Some("bad_password"),
            Some(u) if u.disabled => Some("disabled"),
            Some(u) if u.service.is_some() => Some("service_account"),
            Some(_) => None,
        };
        let user = match (failure, user) {
            (None, Some(u)) => u,
            (reason, user) => {
                // The failure keeps the slot it took. A username that matches no account
                // is recorded only as a keyed pseudonym: it may be a password typed into
                // the wrong field.
                let mut ev = AuditEvent::new(AuditKind::LoginFailed)
                    .client(client)
                    .reason(reason.unwrap_or("unknown_user"));
                ev = match user {
                    Some(u) => ev.username(u.username).tenant(u.tenant).subject(u.id),
                    None => ev.username(self.tokens.pseudonym(&canonical)),
                };
                self.audit.record(ev).await;
                return Err(AuthError::InvalidCredentials);
            }
        };
        self.limits.reset(&self.pair_limit, &pair_key).await?;
        if known.is_some() {
            self.limits.reset(ceiling.0, &ceiling.1).await?;
        }
        Ok(user)
    }

    /// A device cookie for `canonical`: sealed (no one reads or forges it), naming the
    /// user and a nonce of its own, valid for `limits.device_cookie_ttl`.
    fn device_cookie(&self, canonical: &str) -> Option<String> {
        let exp = self.clock.now_ms().saturating_add(self.device_ttl_ms);
        let payload = serde_json::to_vec(&DeviceClaims {
            u: canonical.to_owned(),
            n: new_id(),
            exp,
        })
        .ok()?;
        self.tokens.seal(Purpose::Device, &payload)
    }

    /// The nonce of `cookie` if it is a live device cookie of `canonical`.
    fn known_device(&self, cookie: &str, canonical: &str) -> Option<String> {
        let claims: DeviceClaims =
            serde_json::from_slice(&self.tokens.open(Purpose::Device, cookie)?).ok()?;
        (claims.u == canonical && claims.exp > self.clock.now_ms()).then_some(claims.n)
    }

    /// How long a device cookie lives (the cookie's Max-Age).
    pub fn device_cookie_max_age(&self) -> i64 {
        self.device_ttl_ms / 1000
    }

    /// A new session for `user`, signed in `via` a password or an IdP: the access token
    /// and the refresh token of a fresh family, and the audit event.
    pub(super) async fn open_session(
        &self,
        user: &UserRecord,
        via: &'static str,
        client: &ClientInfo,
        dpop_key: Option<String>,
    ) -> Result<IssuedTokens, AuthError> {
        self.open_session_as(new_id(), user, via, client, dpop_key)
            .await
    }

    /// [`Self::open_session`] under a session id the caller chose (an OAuth grant's,
    /// which names its client and resource).
    pub(super) async fn open_session_as(
        &self,
        session_id: String,
        user: &UserRecord,
        via: &'static str,
        client: &ClientInfo,
        dpop_key: Option<String>,
    ) -> Result<IssuedTokens, AuthError> {
        // Mint before persisting: if minting failed, no orphan session would remain.
        let now = self.clock.now_ms();
        let absolute_expires_at = now.saturating_add(self.absolute_ttl_ms);
        let refresh = RefreshToken::generate();
        let refresh_hash = refresh.hash();
        let issued = self.issue(
            user,
            &session_id,
            absolute_expires_at,
            refresh,
            now,
            dpop_key.clone(),
        )?;
        let session = self
            .sessions
            .create_session(NewSession {
                id: session_id,
                tenant: user.tenant.clone(),
                user_id: user.id.clone(),
                now,
                absolute_expires_at,
                user_agent: client.user_agent.clone(),
                refresh_hash,
                roles: user.roles.clone(),
                groups: user.groups.clone(),
                dpop_jkt: dpop_key,
            })
            .await?;
        self.audit
            .record(
                AuditEvent::new(AuditKind::LoginSucceeded)
                    .tenant(&user.tenant)
                    .subject(&user.id)
                    .username(&user.username)
                    .session(&session.id)
                    .reason(via)
                    .client(client),
            )
            .await;
        Ok(issued)
    }

    /// Takes a login slot for (username, address), for the address and for the username
    /// from anywhere, or none of them.
    /// A store error refuses the login (fail closed).
    async fn admit_login(
        &self,
        (ceiling, user_key): (&Limit, String),
        pair_key: &str,
        ip_key: &str,
    ) -> Result<Result<(), u64>, AuthError> {
        let user_key = user_key.as_str();
        let l = &self.limits;
        if let Admission::RetryAfter(s) = l.take(&self.pair_limit, pair_key).await? {
            return Ok(Err(s));
        }
        match l.take(&self.ip_limit, ip_key).await {
            Ok(Admission::Admitted) => {}
            refused => {
                l.give_back(&self.pair_limit, pair_key).await?;
                return match refused? {
                    Admission::RetryAfter(s) => Ok(Err(s)),
                    Admission::Admitted => Ok(Ok(())),
                };
            }
        }
        match l.take(ceiling, user_key).await {
            Ok(Admission::Admitted) => Ok(Ok(())),
            refused => {
                l.give_back(&self.pair_limit, pair_key).await?;
                l.give_back(&self.ip_limit, ip_key).await?;
                match refused? {
                    Admission::RetryAfter(s) => Ok(Err(s)),
                    Admission::Admitted => Ok(Ok(())),
                }
            }
        }
    }

    fn issue(
        &self,
        user: &UserRecord,
        session_id: &str,
        absolute_expires_at: i64,
        refresh: RefreshToken,
        now: i64,
        dpop_key: Option<String>,
    ) -> Result<IssuedTokens, AuthError> {
        let dpop_bound = dpop_key.is_some();
        let access_token = self
            .tokens
            .mint(&AccessClaims {
                subject: user.id.clone(),
                username: user.username.clone(),
                tenant: user.tenant.clone(),
                session_id: session_id.to_owned(),
                jkt: dpop_key,
                actor: None,
            })
            .map_err(|_| AuthError::Mint)?;
        Ok(IssuedTokens {
            access_token,
            expires_in: self.tokens.access_ttl().as_secs(),
            session_id: session_id.to_owned(),
            refresh,
            refresh_max_age: ((absolute_expires_at - now) / 1000).max(0),
            dpop_bound,
        })
    }

    /// A refresh token presented by someone who should not have it (a rotated one, or a
    /// DPoP-bound one without its key): the session (already revoked) leaves the cache,
    /// and the theft is audited.
    async fn theft_detected(
        &self,
        session: &SessionRecord,
        client: &ClientInfo,
        why: &'static str,
    ) {
        self.cache.invalidate(&session.id).await;
        self.audit
            .record(
                AuditEvent::new(AuditKind::RefreshReuseDetected)
                    .tenant(&session.tenant)
                    .subject(&session.user_id)
                    .session(&session.id)
                    .client(client)
                    .reason(why),
            )
            .await;
    }

    /// Rotates a refresh token. Reuse of a rotated one revokes the session.
    ///
    /// DPoP: the proof (if any) is checked first. A session bound to a key refreshes
    /// only with a proof by that key; a refresh cookie presented without it is a stolen
    /// cookie, and the session ends (the thief gets nothing, the owner signs in again).
    pub async fn refresh(
        &self,
        presented: Option<&str>,
        client: &ClientInfo,
        proof: Option<&str>,
    ) -> Result<IssuedTokens, AuthError> {
        self.rotate_refresh(presented, client, proof, false).await
    }

    /// Rotates a refresh token of a browser session, or (`grant`) of an OAuth grant. A
    /// token presented where the other kind belongs is a stolen one: its session ends.
    pub(super) async fn rotate_refresh(
        &self,
        presented: Option<&str>,
        client: &ClientInfo,
        proof: Option<&str>,
        grant: bool,
    ) -> Result<IssuedTokens, AuthError> {
        let Some(presented) = presented.and_then(RefreshToken::parse) else {
            return Err(AuthError::RefreshInvalid);
        };
        // Without a proof where DPoP is required, the cookie is still looked up: a
        // session's cookie presented without its key is a stolen cookie, and the
        // session ends below (as the contract says), rather than living on for the
        // thief's next try.
        let proved = match (proof, self.dpop.mode) {
            (None, crate::config::DpopMode::Required) => {
                self.refuse("dpop_required", client).await;
                None
            }
            _ => {
                self.token_request_key(proof, "/auth/refresh", client)
                    .await?
            }
        };
        let replacement = RefreshToken::generate();
        let now = self.clock.now_ms();
        let outcome = self
            .sessions
            .rotate_refresh(RotateRequest {
                presented: presented.hash(),
                replacement: replacement.hash(),
                now,
                grace_ms: self.grace_ms,
                idle_ttl_ms: self.idle_ttl_ms,
            })
            .await?;
        match outcome {
            RotateOutcome::Rotated { session } => {
                self.cache.invalidate(&session.id).await;
                // A disabled user gets nothing even if revoking their sessions has not
                // happened yet. (Roles and groups are the session's: a change of access
                // ends every session, so a live one's are current.)
                let user = self
                    .users
                    .user_by_id(&session.tenant, &session.user_id)
                    .await?
                    .filter(|u| !u.disabled)
                    .ok_or(AuthError::RefreshInvalid)?;
                let unproved = match &session.dpop_jkt {
                    Some(bound) => proved.as_deref() != Some(bound.as_str()),
                    // An unbound session (made before DPoP was required) cannot show
                    // a key: where DPoP is required, it ends too.
                    None => proved.is_none() && self.dpop.mode == crate::config::DpopMode::Required,
                };
                if grant != super::oauth::grant_of_session(&session.id).is_some() {
                    self.sessions
                        .revoke_session(
                            &session.tenant,
                            &session.user_id,
                            &session.id,
                            "refresh_token_out_of_place",
                            now,
                        )
                        .await?;
                    self.theft_detected(&session, client, "refresh_token_out_of_place")
                        .await;
                    return Err(AuthError::RefreshInvalid);
                }
                if unproved {
                    self.sessions
                        .revoke_session(
                            &session.tenant,
                            &session.user_id,
                            &session.id,
                            "refresh_without_dpop_key",
                            now,
                        )
                        .await?;
                    self.theft_detected(&session, client, "refresh_without_dpop_key")
                        .await;
                    return Err(AuthError::Dpop(super::DpopChallenge::InvalidProof));
                }
                let key = session.dpop_jkt.clone().or(proved);
                let issued = self.issue(
                    &user,
                    &session.id,
                    session.absolute_expires_at,
                    replacement,
                    now,
                    key,
                )?;
                self.audit
                    .record(
                        AuditEvent::new(AuditKind::RefreshRotated)
                            .tenant(&session.tenant)
                            .subject(&session.user_id)
                            .session(&session.id)
                            .client(client),
                    )
                    .await;
                Ok(issued)
            }
            RotateOutcome::InProgress => Err(AuthError::RefreshInProgress),
            RotateOutcome::Reused { session } => {
                self.theft_detected(&session, client, "rotated_token_presented")
                    .await;
                Err(AuthError::RefreshReused)
            }
            RotateOutcome::Invalid => Err(AuthError::RefreshInvalid),
        }
    }

    /// Revokes the caller's current session.
    pub async fn logout(&self, p: &Principal, client: &ClientInfo) -> Result<(), AuthError> {
        self.revoke_own(p, p.session_id(), "logout", client).await
    }

    /// Logout with only the refresh cookie (the access token may have expired): whether
    /// the cookie named a live session, now ended.
    pub async fn logout_with_refresh(
        &self,
        presented: &str,
        client: &ClientInfo,
    ) -> Result<bool, AuthError> {
        let Some(token) = RefreshToken::parse(presented) else {
            return Ok(false);
        };
        if let Some(s) = self.sessions.session_for_refresh(token.hash()).await?
            && s.revoked_at.is_none()
        {
            self.sessions
                .revoke_session(&s.tenant, &s.user_id, &s.id, "logout", self.clock.now_ms())
                .await?;
            self.cache.invalidate(&s.id).await;
            self.audit
                .record(
                    AuditEvent::new(AuditKind::Logout)
                        .tenant(&s.tenant)
                        .subject(&s.user_id)
                        .session(&s.id)
                        .client(client),
                )
                .await;
            return Ok(true);
        }
        Ok(false)
    }

    /// Revokes one of the caller's own sessions. Another user's id is indistinguishable
    /// from an unknown one: `NotFound`.
    pub async fn revoke_own(
        &self,
        p: &Principal,
        session_id: &str,
        reason: &'static str,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let revoked = self
            .sessions
            .revoke_session(
                p.tenant(),
                p.subject(),
                session_id,
                reason,
                self.clock.now_ms(),
            )
            .await?;
        if !revoked {
            return Err(AuthError::NotFound);
        }
        self.cache.invalidate(session_id).await;
        let kind = if reason == "logout" {
            AuditKind::Logout
        } else {
            AuditKind::SessionRevoked
        };
        self.audit
            .record(
                AuditEvent::new(kind)
                    .tenant(p.tenant())
                    .subject(p.subject())
                    .session(session_id)
                    .client(client)
                    .reason(reason),
            )
            .await;
        Ok(())
    }

    pub async fn logout_all(&self, p: &Principal, client: &ClientInfo) -> Result<(), AuthError> {
        self.end_all_sessions(p.tenant(), p.subject(), "logout_all", client)
            .await
    }

    /// Revokes every session of (tenant, user), evicts them from the cache and records
    /// each revocation.
    pub(super) async fn end_all_sessions(
        &self,
        tenant: &str,
        user_id: &str,
        reason: &'static str,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let ids = self
            .sessions
            .revoke_user_sessions(tenant, user_id, reason, self.clock.now_ms())
            .await?;
        self.cache.invalidate_many(&ids).await;
        for sid in &ids {
            self.audit
                .record(
                    AuditEvent::new(AuditKind::SessionRevoked)
                        .tenant(tenant)
                        .subject(user_id)
                        .session(sid)
                        .client(client)
                        .reason(reason),
                )
                .await;
        }
        Ok(())
    }

    pub async fn sessions_of(&self, p: &Principal) -> Result<Vec<SessionRecord>, AuthError> {
        let now = self.clock.now_ms();
        let mut list = self
            .sessions
            .list_sessions(p.tenant(), p.subject(), now)
            .await?;
        list.retain(|s| s.is_live(now, self.idle_ttl_ms));
        Ok(list)
    }
}
