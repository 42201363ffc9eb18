//! Service accounts and their API keys: how a backend (a bot, a portal, a nightly job)
//! calls palisade without a person's session.
//!
//! * A service account is a user of its tenant with a [`ServiceProfile`]: roles, groups,
//!   its own model list and allowances. It has no password and cannot sign in.
//! * An API key, `pal_<id>_<secret>`, belongs to one service account; it expires (never
//!   later than `tokens.api_key_max_ttl`), may be bound to networks and to a DPoP key,
//!   and only the SHA-256 of its secret is stored. A revocation is seen by every node at
//!   once (the store's revocation feed); a disabled account's keys stop with it.
//! * A key authenticates the service on the model and retrieval routes only: the
//!   session and admin routes want a person ([`Principal::is_person`]).

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use serde::Serialize;

use super::{AuthError, AuthService, ClientInfo, Credentials, Duty, Principal, valid_name};
use crate::access::{ADMIN_ROLE, Caller, Grants, Operator, ServiceProfile};
use crate::audit::{AuditEvent, AuditKind};
use crate::config::PrivilegedGrants;
use crate::model::StoreError;
use crate::secret::{TokenHash, new_id};
use crate::store::{ApiKeyRecord, NewUser, UserRecord};

/// What every key starts with: a secret scanner (or a person) can tell what it is.
pub const KEY_PREFIX: &str = "pal_";
/// The highest request rate a service account may be given.
pub const MAX_REQUESTS_PER_MINUTE: u32 = 1_000_000;
/// How often a key's last-used time and address are written at most.
const TOUCH_EVERY_MS: i64 = 60_000;

/// A presented key split into its id and secret, if it has the exact shape we mint:
/// `pal_`, 24 hex characters, `_`, 43 base64url characters.
fn parse_key(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let id_ok = id.len() == 24 && id.bytes().all(|b| b.is_ascii_hexdigit());
    let secret_ok = secret.len() == 43
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (id_ok && secret_ok).then_some((id, secret))
}

fn secret_hash(secret: &str) -> TokenHash {
    TokenHash(<sha2::Sha256 as sha2::Digest>::digest(secret.as_bytes()).into())
}

/// Whether `token` looks like one of our API keys (it is then verified as one, never as
/// an access token).
pub fn is_api_key(token: &str) -> bool {
    token.starts_with(KEY_PREFIX)
}

/// A service account as administrators see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ServiceView {
    pub id: String,
    pub name: String,
    pub tenant: String,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
    pub disabled: bool,
    pub profile: ServiceProfile,
}

impl ServiceView {
    fn of(u: UserRecord) -> Option<Self> {
        Some(Self {
            profile: u.service?,
            id: u.id,
            name: u.username,
            tenant: u.tenant,
            roles: u.roles,
            groups: u.groups,
            disabled: u.disabled,
        })
    }
}

/// An API key as administrators see it: never its secret.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KeyView {
    pub id: String,
    pub service_id: String,
    /// RFC 3339.
    pub created_at: String,
    pub expires_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used_ip: Option<String>,
    pub allow_cidrs: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dpop_jkt: Option<String>,
}

impl From<ApiKeyRecord> for KeyView {
    fn from(k: ApiKeyRecord) -> Self {
        use crate::timeutil::rfc3339;
        Self {
            id: k.id,
            service_id: k.service_id,
            created_at: rfc3339(k.created_at),
            expires_at: rfc3339(k.expires_at),
            revoked_at: k.revoked_at.map(rfc3339),
            last_used_at: k.last_used_at.map(rfc3339),
            last_used_ip: k.last_used_ip,
            allow_cidrs: k.allow_cidrs,
            dpop_jkt: k.dpop_jkt,
        }
    }
}

/// A key just made: the only time its full text exists outside the caller's hands.
pub struct IssuedKey {
    pub key: crate::secret::SecretString,
    pub view: KeyView,
}

impl std::fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedKey")
            .field("id", &self.view.id)
            .finish_non_exhaustive()
    }
}

/// A new service account.
#[derive(Debug, Clone, Default)]
pub struct NewService {
    pub name: String,
    pub tenant: String,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
    pub profile: ServiceProfile,
}

/// A new key's options.
#[derive(Debug, Clone, Default)]
pub struct KeyOptions {
    /// Default `tokens.api_key_ttl`.
    pub expires_in: Option<Duration>,
    pub allow_cidrs: Vec<String>,
    pub dpop_jkt: Option<String>,
}

/// Who manages service accounts: an admin of one tenant, or the operator in any.
pub enum Manager<'a> {
    Admin(&'a Principal),
    Operator(&'a Operator, &'a str),
}

impl Manager<'_> {
    fn tenant(&self) -> &str {
        match self {
            Manager::Admin(p) => p.tenant(),
            Manager::Operator(_, t) => t,
        }
    }
    fn actor(&self) -> &str {
        match self {
            Manager::Admin(p) => p.subject(),
            Manager::Operator(..) => "cli",
        }
    }
    fn check(&self) -> Result<(), AuthError> {
        match self {
            Manager::Admin(p) if !(p.is_person() && p.has_role(ADMIN_ROLE)) => {
                Err(AuthError::Forbidden)
            }
            _ => Ok(()),
        }
    }
}

/// What the key cache holds: the key and its service account as last read.
#[derive(Clone)]
struct KeyEntry {
    key: Arc<ApiKeyRecord>,
    service: Option<Arc<ServiceAccount>>,
}

/// A service account as a key's principal needs it.
struct ServiceAccount {
    user: UserRecord,
    profile: Arc<ServiceProfile>,
    grants: Arc<Grants>,
}

/// Keys and their service accounts, read once per `tokens.session_cache_ttl` at most;
/// a revocation or a change of the account evicts at once on every node.
pub struct KeyCache {
    entries: Cache<String, Option<KeyEntry>>,
    /// When each key's use was last written.
    touched: Cache<String, i64>,
}

impl KeyCache {
    pub fn new(ttl: Duration, feed: Option<tokio::sync::broadcast::Receiver<String>>) -> Self {
        let entries: Cache<String, Option<KeyEntry>> = Cache::builder()
            .max_capacity(100_000)
            .time_to_live(ttl.max(Duration::from_millis(1)))
            .build();
        if let (Some(mut feed), Ok(rt)) = (feed, tokio::runtime::Handle::try_current()) {
            let entries = entries.clone();
            rt.spawn(async move {
                use tokio::sync::broadcast::error::RecvError;
                loop {
                    match feed.recv().await {
                        Ok(m) if m == "*" => entries.invalidate_all(),
                        Ok(m) => {
                            if let Some(id) = m.strip_prefix("key:") {
                                entries.invalidate(id).await;
                            }
                        }
                        Err(RecvError::Lagged(_)) => entries.invalidate_all(),
                        Err(RecvError::Closed) => break,
                    }
                }
            });
        }
        Self {
            entries,
            touched: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_millis(TOUCH_EVERY_MS as u64))
                .build(),
        }
    }
}

impl AuthService {
    /// Verifies an API key presented as `Authorization: Bearer|DPoP pal_…`.
    pub(super) async fn verify_api_key(
        &self,
        creds: &Credentials<'_>,
        token: &str,
        client: &ClientInfo,
    ) -> Result<Principal, AuthError> {
        let Some((id, secret)) = parse_key(token) else {
            self.refuse_key("malformed", None, client).await;
            return Err(AuthError::Unauthorized);
        };
        let entry = self.key_entry(id).await?;
        let Some(entry) = entry else {
            self.refuse_key("unknown_key", None, client).await;
            return Err(AuthError::Unauthorized);
        };
        let key = &entry.key;
        let presented = secret_hash(secret);
        let same =
            aws_lc_rs::constant_time::verify_slices_are_equal(&presented.0, &key.secret_hash.0)
                .is_ok();
        if !same {
            self.refuse_key("invalid", Some(key), client).await;
            return Err(AuthError::Unauthorized);
        }
        let now = self.clock.now_ms();
        if key.revoked_at.is_some() {
            self.refuse_key("key_revoked", Some(key), client).await;
            return Err(AuthError::Unauthorized);
        }
        if now >= key.expires_at {
            self.refuse_key("expired", Some(key), client).await;
            return Err(AuthError::Unauthorized);
        }
        let service = match &entry.service {
            Some(s) if !s.user.disabled && s.user.tenant == key.tenant => s.clone(),
            _ => {
                self.refuse_key("service_disabled", Some(key), client).await;
                return Err(AuthError::Unauthorized);
            }
        };
        if !key.allow_cidrs.is_empty() {
            let allowed = client.ip.is_some_and(|ip| {
                key.allow_cidrs
                    .iter()
                    .filter_map(|c| c.parse::<ipnet::IpNet>().ok())
                    .any(|n| n.contains(&ip))
            });
            if !allowed {
                self.refuse_key("address_not_allowed", Some(key), client)
                    .await;
                return Err(AuthError::Unauthorized);
            }
        }
        self.check_binding(key.dpop_jkt.as_deref(), creds, client)
            .await?;
        self.touch_key(key, now, client).await;
        let user = &service.user;
        Ok(Principal::verified(
            user.tenant.clone(),
            user.id.clone(),
            user.username.clone(),
            service.grants.clone(),
            format!("key:{}", key.id),
        )
        .through(Caller::Service {
            key_id: key.id.clone(),
            profile: service.profile.clone(),
        }))
    }

    /// The key `id` and its service account, from the cache or the store. A store error
    /// denies.
    async fn key_entry(&self, id: &str) -> Result<Option<KeyEntry>, AuthError> {
        let keys = self.keys.clone();
        let users = self.users.clone();
        let loaded = self
            .key_cache
            .entries
            .try_get_with_by_ref(id, async move {
                let Some(key) = keys.key(id).await? else {
                    return Ok::<_, StoreError>(None);
                };
                let service = users
                    .user_by_id(&key.tenant, &key.service_id)
                    .await?
                    .and_then(|u| {
                        let profile = Arc::new(u.service.clone()?);
                        let grants = Arc::new(Grants {
                            roles: u.roles.clone(),
                            groups: u.groups.clone(),
                        });
                        Some(Arc::new(ServiceAccount {
                            user: u,
                            profile,
                            grants,
                        }))
                    });
                Ok(Some(KeyEntry {
                    key: Arc::new(key),
                    service,
                }))
            })
            .await;
        loaded.map_err(|e: Arc<StoreError>| {
            tracing::error!(error = %e, "key check failed; denying");
            AuthError::Store(StoreError::Unavailable(e.to_string()))
        })
    }

    /// Drops every cached key of a service account whose access or state changed, here
    /// and (through the store's feed) on every node.
    pub(super) async fn forget_keys_of(
        &self,
        tenant: &str,
        service_id: &str,
    ) -> Result<(), AuthError> {
        let ids: Vec<String> = self
            .keys
            .keys_of(tenant, Some(service_id))
            .await?
            .into_iter()
            .map(|k| k.id)
            .collect();
        for id in &ids {
            self.key_cache.entries.invalidate(id).await;
        }
        Ok(self.keys.announce_keys(&ids).await?)
    }

    /// The key an exchanged token's actor authenticated with, and its service account.
    pub(super) async fn key_entry_for_actor(
        &self,
        id: &str,
    ) -> Result<Option<(Arc<ApiKeyRecord>, UserRecord)>, AuthError> {
        Ok(self
            .key_entry(id)
            .await?
            .and_then(|e| Some((e.key, e.service?.user.clone()))))
    }

    /// Records the key's use, about once a minute; a failure is logged, not fatal.
    async fn touch_key(&self, key: &ApiKeyRecord, now: i64, client: &ClientInfo) {
        if self.key_cache.touched.contains_key(&key.id) {
            return;
        }
        self.key_cache.touched.insert(key.id.clone(), now).await;
        let (keys, id, ip) = (
            self.keys.clone(),
            key.id.clone(),
            client.ip.map(|i| i.to_string()),
        );
        tokio::spawn(async move {
            if let Err(e) = keys.touch_key(&id, now, ip.as_deref()).await {
                tracing::warn!(error = %e, "could not record a key's use");
            }
        });
    }

    async fn refuse_key(&self, reason: &'static str, key: Option<&ApiKeyRecord>, c: &ClientInfo) {
        let mut ev = AuditEvent::new(AuditKind::TokenRejected)
            .client(c)
            .reason(reason);
        if let Some(k) = key {
            ev = ev
                .tenant(&k.tenant)
                .subject(&k.service_id)
                .session(format!("key:{}", k.id));
        }
        self.record_rejection(ev, reason).await;
    }

    /// Creates a service account. Over HTTP, privileged roles and `act_for_users` are
    /// not one admin's to give: propose the role (`/admin/grants`) afterwards; acting
    /// for users is the operator's (`palisade service add --act-for-users`).
    pub async fn create_service(
        &self,
        by: Manager<'_>,
        s: NewService,
        client: &ClientInfo,
    ) -> Result<ServiceView, AuthError> {
        by.check()?;
        let names = std::iter::once(&s.name)
            .chain(&s.roles)
            .chain(&s.groups)
            .chain(&s.profile.models);
        // `oidc:` names the accounts of an IdP's users (`external_username`).
        if names.into_iter().any(|n| !valid_name(n))
            || !valid_name(by.tenant())
            || s.name.to_ascii_lowercase().starts_with("oidc:")
        {
            return Err(AuthError::Invalid(
                "names are 1-64 characters from [A-Za-z0-9_.@:-]",
            ));
        }
        if s.profile.tokens_per_day > i64::MAX as u64 {
            return Err(AuthError::Invalid("tokens_per_day is too large"));
        }
        if s.profile.requests_per_minute > MAX_REQUESTS_PER_MINUTE {
            return Err(AuthError::Invalid(
                "requests_per_minute must be at most 1000000",
            ));
        }
        if let Manager::Admin(admin) = &by {
            let privileged = s.roles.iter().any(|r| self.admin.is_privileged(r));
            if privileged || s.profile.act_for_users {
                let rule = match self.admin.privileged_grants {
                    PrivilegedGrants::IdpOnly if privileged => Duty::IdpOnly,
                    _ => Duty::TwoPersonRule,
                };
                return Err(self.refuse_change(admin, &s.name, rule, client).await);
            }
        }
        let rec = self
            .users
            .create_user(NewUser {
                id: new_id(),
                tenant: by.tenant().to_owned(),
                username: crate::access::canonical_username(&s.name),
                // No password verifies against this: a service never signs in.
                password_hash: "!service".into(),
                roles: s.roles,
                groups: s.groups,
                now: self.clock.now_ms(),
                service: Some(s.profile),
            })
            .await
            .map_err(|e| match e {
                StoreError::Conflict(_) => {
                    AuthError::Store(StoreError::Conflict("that name is taken"))
                }
                other => AuthError::Store(other),
            })?;
        self.audit
            .record(
                AuditEvent::new(AuditKind::UserCreated)
                    .tenant(&rec.tenant)
                    .subject(&rec.id)
                    .username(&rec.username)
                    .resource(by.actor().to_owned())
                    .reason("service_account")
                    .client(client),
            )
            .await;
        ServiceView::of(rec).ok_or(AuthError::NotFound)
    }

    /// The service accounts of the manager's tenant (the operator's: every tenant's).
    pub async fn services(&self, by: Manager<'_>) -> Result<Vec<ServiceView>, AuthError> {
        by.check()?;
        let tenant = match &by {
            Manager::Admin(p) => Some(p.tenant()),
            Manager::Operator(..) => None,
        };
        let users = self.users.list_users(tenant).await?;
        Ok(users.into_iter().filter_map(ServiceView::of).collect())
    }

    /// The service account `name_or_id` of the manager's tenant.
    async fn service_of(
        &self,
        by: &Manager<'_>,
        name_or_id: &str,
    ) -> Result<UserRecord, AuthError> {
        let tenant = by.tenant();
        let by_id = self.users.user_by_id(tenant, name_or_id).await?;
        let found = match by_id {
            Some(u) => Some(u),
            None => self
                .users
                .user_by_username(&crate::access::canonical_username(name_or_id))
                .await?
                .filter(|u| u.tenant == tenant),
        };
        found
            .filter(|u| u.service.is_some())
            .ok_or(AuthError::NotFound)
    }

    /// Disables (or enables) a service account: its keys and every token exchanged
    /// with them stop (start) working on every node at once.
    pub async fn set_service_disabled(
        &self,
        by: Manager<'_>,
        name_or_id: &str,
        disabled: bool,
        client: &ClientInfo,
    ) -> Result<ServiceView, AuthError> {
        by.check()?;
        let svc = self.service_of(&by, name_or_id).await?;
        let updated = self
            .users
            .set_disabled(&svc.tenant, &svc.id, disabled)
            .await?
            .ok_or(AuthError::NotFound)?;
        self.forget_keys_of(&svc.tenant, &svc.id).await?;
        self.audit
            .record(
                AuditEvent::new(if disabled {
                    AuditKind::UserDisabled
                } else {
                    AuditKind::UserEnabled
                })
                .tenant(&updated.tenant)
                .subject(&updated.id)
                .username(&updated.username)
                .resource(by.actor().to_owned())
                .reason("service_account")
                .client(client),
            )
            .await;
        ServiceView::of(updated).ok_or(AuthError::NotFound)
    }

    /// Makes an API key for a service account of the manager's tenant. The key's text
    /// is in the answer only.
    pub async fn create_key(
        &self,
        by: Manager<'_>,
        service: &str,
        opts: KeyOptions,
        client: &ClientInfo,
    ) -> Result<IssuedKey, AuthError> {
        by.check()?;
        let svc = self.service_of(&by, service).await?;
        if svc.disabled {
            return Err(AuthError::Invalid("the service account is disabled"));
        }
        let ttl = opts.expires_in.unwrap_or(self.api_keys.default_ttl);
        if ttl.is_zero() || ttl > self.api_keys.max_ttl {
            return Err(AuthError::Invalid(
                "expires must be positive and at most tokens.api_key_max_ttl",
            ));
        }
        let mut cidrs = Vec::with_capacity(opts.allow_cidrs.len());
        for c in &opts.allow_cidrs {
            let net: ipnet::IpNet = c
                .trim()
                .parse()
                .or_else(|_| c.trim().parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    AuthError::Invalid("allow_cidrs must hold networks like 10.0.0.0/8")
                })?;
            cidrs.push(net.trunc().to_string());
        }
        if let Some(j) = &opts.dpop_jkt
            && (j.len() != 43
                || !j
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        {
            return Err(AuthError::Invalid(
                "dpop_jkt must be an RFC 7638 SHA-256 thumbprint (43 base64url characters)",
            ));
        }
        let id = {
            let mut b = [0u8; 12];
            getrandom::fill(&mut b).map_err(|_| AuthError::Mint)?;
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        };
        let secret = crate::secret::random_b64(32);
        let now = self.clock.now_ms();
        let rec = ApiKeyRecord {
            id: id.clone(),
            tenant: svc.tenant.clone(),
            service_id: svc.id.clone(),
            secret_hash: secret_hash(&secret),
            created_at: now,
            expires_at: now.saturating_add(ttl.as_millis().min(i64::MAX as u128) as i64),
            revoked_at: None,
            last_used_at: None,
            last_used_ip: None,
            allow_cidrs: cidrs,
            dpop_jkt: opts.dpop_jkt,
        };
        self.keys.create_key(rec.clone()).await?;
        self.audit
            .record(
                AuditEvent::new(AuditKind::ApiKeyCreated)
                    .tenant(&svc.tenant)
                    .subject(&svc.id)
                    .username(&svc.username)
                    .session(format!("key:{id}"))
                    .resource(by.actor().to_owned())
                    .client(client),
            )
            .await;
        Ok(IssuedKey {
            key: format!("{KEY_PREFIX}{id}_{secret}").into(),
            view: rec.into(),
        })
    }

    /// The keys of a service account (or of the whole tenant), without their secrets.
    pub async fn keys_of(
        &self,
        by: Manager<'_>,
        service: Option<&str>,
    ) -> Result<Vec<KeyView>, AuthError> {
        by.check()?;
        let service_id = match service {
            Some(s) => Some(self.service_of(&by, s).await?.id),
            None => None,
        };
        let keys = self
            .keys
            .keys_of(by.tenant(), service_id.as_deref())
            .await?;
        Ok(keys.into_iter().map(KeyView::from).collect())
    }

    /// Revokes a key of the manager's tenant, at once on every node.
    pub async fn revoke_key(
        &self,
        by: Manager<'_>,
        id: &str,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        by.check()?;
        let key = self
            .keys
            .key(id)
            .await?
            .filter(|k| k.tenant == by.tenant())
            .ok_or(AuthError::NotFound)?;
        if !self
            .keys
            .revoke_key(&key.tenant, &key.id, self.clock.now_ms())
            .await?
        {
            return Err(AuthError::NotFound);
        }
        self.key_cache.entries.invalidate(&key.id).await;
        self.audit
            .record(
                AuditEvent::new(AuditKind::ApiKeyRevoked)
                    .tenant(&key.tenant)
                    .subject(&key.service_id)
                    .session(format!("key:{}", key.id))
                    .resource(by.actor().to_owned())
                    .client(client),
            )
            .await;
        Ok(())
    }
}

/// Key lifetimes from `[tokens]`.
pub(super) struct KeySettings {
    pub default_ttl: Duration,
    pub max_ttl: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_keys_of_our_exact_shape_parse() {
        let secret = "a".repeat(43);
        let good = format!("pal_0123456789abcdef01234567_{secret}");
        assert_eq!(
            parse_key(&good),
            Some(("0123456789abcdef01234567", secret.as_str()))
        );
        // A secret may hold `_` and `-`: the id never does.
        let underscores = format!("pal_0123456789abcdef01234567_{}", "_-".repeat(21) + "x");
        assert!(parse_key(&underscores).is_some());
        for bad in [
            "pal_",
            "pal_0123456789abcdef01234567",
            &format!("pal_0123456789abcdef0123456_{secret}"),
            &format!("pal_0123456789abcdef0123456z_{secret}"),
            &format!("pal_0123456789abcdef01234567_{secret}x"),
            &format!("sk_0123456789abcdef01234567_{secret}"),
            &format!("pal_0123456789abcdef01234567_{}", "a".repeat(42) + "="),
        ] {
            assert_eq!(parse_key(bad), None, "{bad}");
        }
    }
}
