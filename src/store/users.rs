//! Users: local accounts, their roles and groups.

use async_trait::async_trait;

use super::StoreResult;
use crate::access::ServiceProfile;

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
    /// A service account's profile; `None` for a person.
    pub service: Option<ServiceProfile>,
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
    /// Makes a service account (no password, no sign-in).
    pub service: Option<ServiceProfile>,
}

/// A proposal to grant a privileged role, waiting for a second admin (the two-person
/// rule).
#[derive(Debug, Clone)]
pub struct GrantRecord {
    pub id: String,
    pub tenant: String,
    /// The user who would get the role.
    pub user_id: String,
    pub role: String,
    /// The admin who proposed it.
    pub proposed_by: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// Why a proposal was not approved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantRefusal {
    /// No pending proposal with that id in the tenant (unknown, or already decided).
    NotFound,
    Expired,
    /// The approver proposed it: a second admin must approve.
    OwnProposal,
    /// The approver is the grantee: no one approves their own access.
    OwnAccess,
}

#[derive(Debug)]
pub enum GrantApproval {
    /// The role is the user's now (the user as updated, the proposal approved).
    Approved(Box<(UserRecord, GrantRecord)>),
    Refused(GrantRefusal),
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
    /// Records a proposal to grant a privileged role.
    async fn propose_grant(&self, g: GrantRecord) -> StoreResult<()>;
    /// The proposals of `tenant` still waiting for approval at `now`, oldest first.
    async fn pending_grants(&self, tenant: &str, now: i64) -> StoreResult<Vec<GrantRecord>>;
    /// Approves the pending proposal `id` of `tenant` as `approver` at `now`, in one
    /// atomic step with adding the role to the user: once only, before it expires, and
    /// never by its proposer or its grantee.
    async fn approve_grant(
        &self,
        tenant: &str,
        id: &str,
        approver: &str,
        now: i64,
    ) -> StoreResult<GrantApproval>;
}

/// Why `g` cannot be approved by `approver` at `now`, if it cannot (the rule both
/// stores apply inside their atomic step).
pub fn grant_refusal(g: &GrantRecord, approver: &str, now: i64) -> Option<GrantRefusal> {
    if g.expires_at <= now {
        Some(GrantRefusal::Expired)
    } else if g.proposed_by == approver {
        Some(GrantRefusal::OwnProposal)
    } else if g.user_id == approver {
        Some(GrantRefusal::OwnAccess)
    } else {
        None
    }
}
