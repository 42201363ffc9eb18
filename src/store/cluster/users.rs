//! Users in PostgreSQL.

use async_trait::async_trait;
use tokio_postgres::Row;

use super::{ClusterStore, timed};
use crate::store::{
    GrantApproval, GrantRecord, GrantRefusal, NewUser, StoreError, StoreResult, UserRecord,
    UserStore, grant_refusal,
};

const USER_COLS: &str =
    "id, tenant, username, password_hash, roles, groups_, disabled, created_at, service";

fn user_row(r: &Row) -> StoreResult<UserRecord> {
    Ok(UserRecord {
        id: r.try_get(0)?,
        tenant: r.try_get(1)?,
        username: r.try_get(2)?,
        password_hash: r.try_get(3)?,
        roles: r.try_get(4)?,
        groups: r.try_get(5)?,
        disabled: r.try_get(6)?,
        created_at: r.try_get(7)?,
        service: r
            .try_get::<_, Option<String>>(8)?
            .map(|s| serde_json::from_str(&s))
            .transpose()
            .map_err(|_| StoreError::Corrupt("a service profile does not parse".into()))?,
    })
}

const GRANT_COLS: &str = "id, tenant, user_id, role, proposed_by, created_at, expires_at";

fn grant_row(r: &Row) -> StoreResult<GrantRecord> {
    Ok(GrantRecord {
        id: r.try_get(0)?,
        tenant: r.try_get(1)?,
        user_id: r.try_get(2)?,
        role: r.try_get(3)?,
        proposed_by: r.try_get(4)?,
        created_at: r.try_get(5)?,
        expires_at: r.try_get(6)?,
    })
}

#[async_trait]
impl UserStore for ClusterStore {
    async fn create_user(&self, u: NewUser) -> StoreResult<UserRecord> {
        timed(async {
            let c = self.pg().await?;
            c.execute(
                &format!("INSERT INTO users ({USER_COLS}) VALUES ($1,$2,$3,$4,$5,$6,FALSE,$7,$8)"),
                &[
                    &u.id,
                    &u.tenant,
                    &u.username,
                    &u.password_hash,
                    &u.roles,
                    &u.groups,
                    &u.now,
                    &u.service
                        .as_ref()
                        .and_then(|p| serde_json::to_string(p).ok()),
                ],
            )
            .await
            .map_err(|e| match StoreError::from(e) {
                StoreError::Conflict(_) => StoreError::Conflict("username already exists"),
                other => other,
            })?;
            Ok(UserRecord {
                id: u.id,
                tenant: u.tenant,
                username: u.username,
                password_hash: u.password_hash,
                roles: u.roles,
                groups: u.groups,
                disabled: false,
                created_at: u.now,
                service: u.service,
            })
        })
        .await
    }

    async fn user_by_username(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        timed(async {
            let c = self.pg().await?;
            let stmt = c
                .prepare_cached(&format!(
                    "SELECT {USER_COLS} FROM users WHERE lower(username) = lower($1)"
                ))
                .await?;
            c.query_opt(&stmt, &[&username])
                .await?
                .map(|r| user_row(&r))
                .transpose()
        })
        .await
    }

    async fn user_by_id(&self, tenant: &str, id: &str) -> StoreResult<Option<UserRecord>> {
        timed(async {
            let c = self.pg().await?;
            let stmt = c
                .prepare_cached(&format!(
                    "SELECT {USER_COLS} FROM users WHERE tenant = $1 AND id = $2"
                ))
                .await?;
            c.query_opt(&stmt, &[&tenant, &id])
                .await?
                .map(|r| user_row(&r))
                .transpose()
        })
        .await
    }

    async fn list_users(&self, tenant: Option<&str>) -> StoreResult<Vec<UserRecord>> {
        timed(async {
            let c = self.pg().await?;
            c.query(
                &format!(
                    "SELECT {USER_COLS} FROM users WHERE ($1::TEXT IS NULL OR tenant = $1)
                     ORDER BY tenant, username"
                ),
                &[&tenant],
            )
            .await?
            .iter()
            .map(user_row)
            .collect()
        })
        .await
    }

    async fn set_disabled(
        &self,
        tenant: &str,
        id: &str,
        disabled: bool,
    ) -> StoreResult<Option<UserRecord>> {
        timed(async {
            let c = self.pg().await?;
            c.query_opt(
                &format!(
                    "UPDATE users SET disabled = $3 WHERE tenant = $1 AND id = $2 RETURNING {USER_COLS}"
                ),
                &[&tenant, &id, &disabled],
            )
            .await?
            .map(|r| user_row(&r))
            .transpose()
        })
        .await
    }

    async fn update_access(
        &self,
        tenant: &str,
        id: &str,
        roles: Option<Vec<String>>,
        groups: Option<Vec<String>>,
    ) -> StoreResult<Option<UserRecord>> {
        timed(async {
            let c = self.pg().await?;
            c.query_opt(
                &format!(
                    "UPDATE users SET roles = COALESCE($3, roles), groups_ = COALESCE($4, groups_)
                     WHERE tenant = $1 AND id = $2 RETURNING {USER_COLS}"
                ),
                &[&tenant, &id, &roles, &groups],
            )
            .await?
            .map(|r| user_row(&r))
            .transpose()
        })
        .await
    }

    async fn propose_grant(&self, g: GrantRecord) -> StoreResult<()> {
        timed(async {
            let c = self.pg().await?;
            c.execute(
                &format!("INSERT INTO grants ({GRANT_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7)"),
                &[
                    &g.id,
                    &g.tenant,
                    &g.user_id,
                    &g.role,
                    &g.proposed_by,
                    &g.created_at,
                    &g.expires_at,
                ],
            )
            .await?;
            Ok(())
        })
        .await
    }

    async fn pending_grants(&self, tenant: &str, now: i64) -> StoreResult<Vec<GrantRecord>> {
        timed(async {
            let c = self.pg().await?;
            c.query(
                &format!(
                    "SELECT {GRANT_COLS} FROM grants
                     WHERE tenant = $1 AND approved_by IS NULL AND expires_at > $2
                     ORDER BY created_at"
                ),
                &[&tenant, &now],
            )
            .await?
            .iter()
            .map(grant_row)
            .collect()
        })
        .await
    }

    async fn approve_grant(
        &self,
        tenant: &str,
        id: &str,
        approver: &str,
        now: i64,
    ) -> StoreResult<GrantApproval> {
        timed(async {
            let mut c = self.pg().await?;
            // The proposal's row is locked for the decision: two approvals of one
            // proposal cannot both see it pending.
            let tx = c.transaction().await?;
            let Some(row) = tx
                .query_opt(
                    &format!(
                        "SELECT {GRANT_COLS} FROM grants
                         WHERE tenant = $1 AND id = $2 AND approved_by IS NULL FOR UPDATE"
                    ),
                    &[&tenant, &id],
                )
                .await?
            else {
                return Ok(GrantApproval::Refused(GrantRefusal::NotFound));
            };
            let grant = grant_row(&row)?;
            if let Some(why) = grant_refusal(&grant, approver, now) {
                return Ok(GrantApproval::Refused(why));
            }
            tx.execute(
                "UPDATE grants SET approved_by = $3, approved_at = $4 WHERE tenant = $1 AND id = $2",
                &[&tenant, &id, &approver, &now],
            )
            .await?;
            let Some(user) = tx
                .query_opt(
                    &format!(
                        "UPDATE users SET roles = CASE WHEN $3 = ANY(roles) THEN roles
                                                       ELSE array_append(roles, $3) END
                         WHERE tenant = $1 AND id = $2 RETURNING {USER_COLS}"
                    ),
                    &[&tenant, &grant.user_id, &grant.role],
                )
                .await?
            else {
                return Ok(GrantApproval::Refused(GrantRefusal::NotFound));
            };
            let user = user_row(&user)?;
            tx.commit().await?;
            Ok(GrantApproval::Approved(Box::new((user, grant))))
        })
        .await
    }
}
