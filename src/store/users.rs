//! Users: local accounts, their roles and groups.

use async_trait::async_trait;

use super::StoreResult;

#[derive(Debug, Clone)]
pub struct UserRecord {
    pub id: String,
    pub tenant: String,
    pub username: String,
    /// PHC string (argon2id). Never serialised into a response.
    pub password_hash: String,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
    pub disabled: bool,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub id: String,
    pub tenant: String,
    pub username: String,
    pub password_hash: String,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
    pub now: i64,
}

#[async_trait]
pub trait UserStore: Send + Sync {
    /// Fails with `Conflict` if the username is taken (usernames are unique per deployment).
    async fn create_user(&self, user: NewUser) -> StoreResult<UserRecord>;
    /// Usernames compare without regard to ASCII case.
    async fn user_by_username(&self, username: &str) -> StoreResult<Option<UserRecord>>;
    async fn user_by_id(&self, tenant: &str, id: &str) -> StoreResult<Option<UserRecord>>;
    /// The users of one tenant, or of every tenant (the operator's CLI) when `None`.
    async fn list_users(&self, tenant: Option<&str>) -> StoreResult<Vec<UserRecord>>;
    /// Sets the disabled flag of (tenant, id). Ending the user's sessions is the
    /// caller's next step, through the session store.
    async fn set_disabled(
        &self,
        tenant: &str,
        id: &str,
        disabled: bool,
    ) -> StoreResult<Option<UserRecord>>;
    /// Replaces roles and/or groups of (tenant, id).
    async fn update_access(
        &self,
        tenant: &str,
        id: &str,
        roles: Option<Vec<String>>,
        groups: Option<Vec<String>>,
    ) -> StoreResult<Option<UserRecord>>;
}
