//! Users in SQLite.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row, params};

use super::{SqliteStore, json_list, parse_list};
use crate::store::{
    GrantApproval, GrantRecord, GrantRefusal, NewUser, StoreError, StoreResult, UserRecord,
    UserStore, grant_refusal,
};

const USER_COLS: &str =
    "id, tenant, username, password_hash, roles, groups_, disabled, created_at, service";

fn user_row(r: &Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        id: r.get(0)?,
        tenant: r.get(1)?,
        username: r.get(2)?,
        password_hash: r.get(3)?,
        roles: parse_list(&r.get::<_, String>(4)?)?,
        groups: parse_list(&r.get::<_, String>(5)?)?,
        disabled: r.get(6)?,
        created_at: r.get(7)?,
        service: parse_service(r.get::<_, Option<String>>(8)?.as_deref())?,
    })
}

const GRANT_COLS: &str = "id, tenant, user_id, role, proposed_by, created_at, expires_at";

fn grant_row(r: &Row<'_>) -> rusqlite::Result<GrantRecord> {
    Ok(GrantRecord {
        id: r.get(0)?,
        tenant: r.get(1)?,
        user_id: r.get(2)?,
        role: r.get(3)?,
        proposed_by: r.get(4)?,
        created_at: r.get(5)?,
        expires_at: r.get(6)?,
    })
}

fn by_id(c: &rusqlite::Connection, tenant: &str, id: &str) -> StoreResult<Option<UserRecord>> {
    Ok(c.query_row(
        &format!("SELECT {USER_COLS} FROM users WHERE tenant = ?1 AND id = ?2"),
        [tenant, id],
        user_row,
    )
    .optional()?)
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, u: NewUser) -> StoreResult<UserRecord> {
        self.write(move |c| {
            let rec = UserRecord {
                id: u.id,
                tenant: u.tenant,
                username: u.username,
                password_hash: u.password_hash,
                roles: u.roles,
                groups: u.groups,
                disabled: false,
                created_at: u.now,
                service: u.service,
            };
            c.execute(
                &format!("INSERT INTO users ({USER_COLS}) VALUES (?1,?2,?3,?4,?5,?6,0,?7,?8)"),
                params![
                    rec.id,
                    rec.tenant,
                    rec.username,
                    rec.password_hash,
                    json_list(&rec.roles),
                    json_list(&rec.groups),
                    rec.created_at,
                    service_json(rec.service.as_ref())
                ],
            )
            .map_err(|e| match StoreError::from(e) {
                StoreError::Conflict(_) => StoreError::Conflict("username already exists"),
                other => other,
            })?;
            Ok(rec)
        })
        .await
    }

    async fn user_by_username(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        let username = username.to_owned();
        self.read(move |c| {
            Ok(c.query_row(
                &format!("SELECT {USER_COLS} FROM users WHERE username = ?1 COLLATE NOCASE"),
                [username],
                user_row,
            )
            .optional()?)
        })
        .await
    }

    async fn user_by_id(&self, tenant: &str, id: &str) -> StoreResult<Option<UserRecord>> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.read(move |c| by_id(c, &tenant, &id)).await
    }

    async fn list_users(&self, tenant: Option<&str>) -> StoreResult<Vec<UserRecord>> {
        let tenant = tenant.map(str::to_owned);
        self.read_blocking(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {USER_COLS} FROM users WHERE (?1 IS NULL OR tenant = ?1)
                 ORDER BY tenant, username"
            ))?;
            let rows = stmt
                .query_map([tenant], user_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn set_disabled(
        &self,
        tenant: &str,
        id: &str,
        disabled: bool,
    ) -> StoreResult<Option<UserRecord>> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.write(move |c| {
            c.execute(
                "UPDATE users SET disabled = ?3 WHERE tenant = ?1 AND id = ?2",
                params![tenant, id, disabled],
            )?;
            by_id(c, &tenant, &id)
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
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.write(move |c| {
            let Some(mut user) = by_id(c, &tenant, &id)? else {
                return Ok(None);
            };
            if let Some(r) = roles {
                user.roles = r;
            }
            if let Some(g) = groups {
                user.groups = g;
            }
            c.execute(
                "UPDATE users SET roles = ?3, groups_ = ?4 WHERE tenant = ?1 AND id = ?2",
                params![tenant, id, json_list(&user.roles), json_list(&user.groups)],
            )?;
            Ok(Some(user))
        })
        .await
    }

    async fn propose_grant(&self, g: GrantRecord) -> StoreResult<()> {
        self.write(move |c| {
            c.execute(
                &format!("INSERT INTO grants ({GRANT_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7)"),
                params![
                    g.id,
                    g.tenant,
                    g.user_id,
                    g.role,
                    g.proposed_by,
                    g.created_at,
                    g.expires_at
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn pending_grants(&self, tenant: &str, now: i64) -> StoreResult<Vec<GrantRecord>> {
        let tenant = tenant.to_owned();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {GRANT_COLS} FROM grants
                 WHERE tenant = ?1 AND approved_by IS NULL AND expires_at > ?2
                 ORDER BY created_at"
            ))?;
            let rows = stmt
                .query_map(params![tenant, now], grant_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
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
        let (tenant, id, approver) = (tenant.to_owned(), id.to_owned(), approver.to_owned());
        // One write job: the check, the decision and the role are one transaction.
        self.write(move |c| {
            let grant = c
                .query_row(
                    &format!(
                        "SELECT {GRANT_COLS} FROM grants
                         WHERE tenant = ?1 AND id = ?2 AND approved_by IS NULL"
                    ),
                    [&tenant, &id],
                    grant_row,
                )
                .optional()?;
            let Some(grant) = grant else {
                return Ok(GrantApproval::Refused(GrantRefusal::NotFound));
            };
            if let Some(why) = grant_refusal(&grant, &approver, now) {
                return Ok(GrantApproval::Refused(why));
            }
            let Some(mut user) = by_id(c, &tenant, &grant.user_id)? else {
                return Ok(GrantApproval::Refused(GrantRefusal::NotFound));
            };
            c.execute(
                "UPDATE grants SET approved_by = ?3, approved_at = ?4 WHERE tenant = ?1 AND id = ?2",
                params![tenant, id, approver, now],
            )?;
            if !user.roles.contains(&grant.role) {
                user.roles.push(grant.role.clone());
            }
            c.execute(
                "UPDATE users SET roles = ?3 WHERE tenant = ?1 AND id = ?2",
                params![tenant, user.id, json_list(&user.roles)],
            )?;
            Ok(GrantApproval::Approved(Box::new((user, grant))))
        })
        .await
    }
}

/// A service profile as stored (JSON text; NULL for a person).
pub(super) fn service_json(p: Option<&crate::access::ServiceProfile>) -> Option<String> {
    p.and_then(|p| serde_json::to_string(p).ok())
}

fn parse_service(s: Option<&str>) -> rusqlite::Result<Option<crate::access::ServiceProfile>> {
    s.map(|s| {
        serde_json::from_str(s).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(8, rusqlite::types::Type::Text, Box::new(e))
        })
    })
    .transpose()
}
