//! The credentials of applications: service accounts' API keys (the secret kept only
//! as its SHA-256) and OAuth clients registered dynamically (RFC 7591).

use async_trait::async_trait;

use super::StoreResult;
use crate::secret::TokenHash;

#[derive(Debug, Clone)]
pub struct ApiKeyRecord {
    /// Public: the middle part of `pal_<id>_<secret>`.
    pub id: String,
    pub tenant: String,
    /// The service account (a user id).
    pub service_id: String,
    pub secret_hash: TokenHash,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub last_used_ip: Option<String>,
    /// Networks the key may be used from (CIDR); empty: anywhere.
    pub allow_cidrs: Vec<String>,
    /// The DPoP key (RFC 7638 thumbprint) every use must prove possession of.
    pub dpop_jkt: Option<String>,
}

impl ApiKeyRecord {
    pub fn is_live(&self, now: i64) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }
}

/// A client registered through `POST /oauth/register`: public (PKCE, no secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthClientRecord {
    pub id: String,
    pub name: String,
    pub redirect_uris: Vec<String>,
    /// The tenant of the first user who approved it; `None` until then.
    pub tenant: Option<String>,
    pub created_at: i64,
    /// Unapproved clients lapse; `None` once approved.
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

/// What binding a client to a tenant found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientBinding {
    /// The client is the tenant's (now, or already).
    Bound,
    /// It belongs to another tenant.
    OtherTenant,
    /// No such client, or it lapsed unapproved.
    Unknown,
}

#[async_trait]
pub trait KeyStore: Send + Sync {
    async fn create_key(&self, k: ApiKeyRecord) -> StoreResult<()>;
    async fn key(&self, id: &str) -> StoreResult<Option<ApiKeyRecord>>;
    /// The keys of one service account (or of every one in the tenant), newest first.
    async fn keys_of(
        &self,
        tenant: &str,
        service_id: Option<&str>,
    ) -> StoreResult<Vec<ApiKeyRecord>>;
    /// Revokes a live key of `tenant`; false if there is none. Every process sharing
    /// the store drops the key at once (the revocation feed, where there is one).
    async fn revoke_key(&self, tenant: &str, id: &str, now: i64) -> StoreResult<bool>;
    /// Records a use (at most about once a minute per key: callers throttle).
    async fn touch_key(&self, id: &str, now: i64, ip: Option<&str>) -> StoreResult<()>;
    /// Tells every process sharing the store to forget what it cached of these keys
    /// (their service account changed).
    async fn announce_keys(&self, ids: &[String]) -> StoreResult<()>;

    async fn create_client(&self, c: OAuthClientRecord) -> StoreResult<()>;
    async fn client(&self, id: &str) -> StoreResult<Option<OAuthClientRecord>>;
    /// Binds the client to `tenant` if it is unbound and has not lapsed at `now`
    /// (clearing its expiry), in one atomic step.
    async fn bind_client(&self, id: &str, tenant: &str, now: i64) -> StoreResult<ClientBinding>;
    async fn touch_client(&self, id: &str, now: i64) -> StoreResult<()>;
    /// Deletes clients that lapsed unapproved before `now`, and approved ones last used
    /// (or, never used, registered) before `unused_before`; returns how many.
    async fn prune_clients(&self, now: i64, unused_before: i64) -> StoreResult<u64>;
}
