//! Sessions and refresh families in SQLite. Rotation is one write job: the single
//! writer runs it inside its own savepoint, so two rotations of one token can never
//! both read "current", even across processes (the file lock serialises those).

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{SqliteStore, json_list, parse_list};
use crate::secret::TokenHash;
use crate::store::{
    NewSession, RotateOutcome, RotateRequest, SessionRecord, SessionStore, StoreResult,
};

const SESSION_COLS: &str = "id, tenant, user_id, created_at, last_seen_at, absolute_expires_at, \
     revoked_at, user_agent, roles, groups_, dpop_jkt";

fn session_row(r: &Row<'_>) -> rusqlite::Result<SessionRecord> {
    Ok(SessionRecord {
        id: r.get(0)?,
        tenant: r.get(1)?,
        user_id: r.get(2)?,
        created_at: r.get(3)?,
        last_seen_at: r.get(4)?,
        absolute_expires_at: r.get(5)?,
        revoked_at: r.get(6)?,
        user_agent: r.get(7)?,
        roles: parse_list(&r.get::<_, String>(8)?)?,
        groups: parse_list(&r.get::<_, String>(9)?)?,
        dpop_jkt: r.get(10)?,
    })
}

fn get_session(conn: &Connection, id: &str) -> rusqlite::Result<Option<SessionRecord>> {
    conn.prepare_cached(&format!(
        "SELECT {SESSION_COLS} FROM sessions WHERE id = ?1"
    ))?
    .query_row([id], session_row)
    .optional()
}

fn rotate(c: &Connection, req: &RotateRequest) -> StoreResult<RotateOutcome> {
    let found: Option<(String, Option<i64>)> = c
        .query_row(
            "SELECT session_id, rotated_at FROM refresh_tokens WHERE hash = ?1",
            [&req.presented.0[..]],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((sid, rotated_at)) = found else {
        return Ok(RotateOutcome::Invalid);
    };
    let Some(session) = get_session(c, &sid)? else {
        return Ok(RotateOutcome::Invalid);
    };
    if !session.is_live(req.now, req.idle_ttl_ms) {
        return Ok(RotateOutcome::Invalid);
    }
    Ok(match rotated_at {
        None => {
            c.execute(
                "UPDATE refresh_tokens SET rotated_at = ?2 WHERE hash = ?1",
                params![&req.presented.0[..], req.now],
            )?;
            c.execute(
                "INSERT INTO refresh_tokens (hash, session_id, issued_at) VALUES (?1,?2,?3)",
                params![&req.replacement.0[..], sid, req.now],
            )?;
            c.execute(
                "UPDATE sessions SET last_seen_at = ?2 WHERE id = ?1",
                params![sid, req.now],
            )?;
            RotateOutcome::Rotated {
                session: SessionRecord {
                    last_seen_at: req.now,
                    ..session
                },
            }
        }
        Some(at) if req.now - at <= req.grace_ms => RotateOutcome::InProgress,
        Some(_) => {
            c.execute(
                "UPDATE sessions SET revoked_at = ?2, revoke_reason = 'refresh_reused'
                 WHERE id = ?1 AND revoked_at IS NULL",
                params![sid, req.now],
            )?;
            RotateOutcome::Reused {
                session: SessionRecord {
                    revoked_at: Some(req.now),
                    ..session
                },
            }
        }
    })
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn create_session(&self, s: NewSession) -> StoreResult<SessionRecord> {
        self.write(move |c| {
            c.execute(
                &format!(
                    "INSERT INTO sessions ({SESSION_COLS}) VALUES (?1,?2,?3,?4,?4,?5,NULL,?6,?7,?8,?9)"
                ),
                params![
                    s.id,
                    s.tenant,
                    s.user_id,
                    s.now,
                    s.absolute_expires_at,
                    s.user_agent,
                    json_list(&s.roles),
                    json_list(&s.groups),
                    s.dpop_jkt
                ],
            )?;
            c.execute(
                "INSERT INTO refresh_tokens (hash, session_id, issued_at) VALUES (?1, ?2, ?3)",
                params![&s.refresh_hash.0[..], s.id, s.now],
            )?;
            Ok(SessionRecord {
                id: s.id,
                tenant: s.tenant,
                user_id: s.user_id,
                created_at: s.now,
                last_seen_at: s.now,
                absolute_expires_at: s.absolute_expires_at,
                revoked_at: None,
                user_agent: s.user_agent,
                roles: s.roles,
                groups: s.groups,
                dpop_jkt: s.dpop_jkt,
            })
        })
        .await
    }

    async fn session(&self, id: &str) -> StoreResult<Option<SessionRecord>> {
        let id = id.to_owned();
        self.read(move |c| Ok(get_session(c, &id)?)).await
    }

    async fn rotate_refresh(&self, req: RotateRequest) -> StoreResult<RotateOutcome> {
        self.write(move |c| rotate(c, &req)).await
    }

    async fn session_for_refresh(&self, hash: TokenHash) -> StoreResult<Option<SessionRecord>> {
        self.read(move |c| {
            let sid: Option<String> = c
                .query_row(
                    "SELECT session_id FROM refresh_tokens WHERE hash = ?1",
                    [&hash.0[..]],
                    |r| r.get(0),
                )
                .optional()?;
            match sid {
                Some(sid) => Ok(get_session(c, &sid)?),
                None => Ok(None),
            }
        })
        .await
    }

    async fn revoke_session(
        &self,
        tenant: &str,
        user_id: &str,
        session_id: &str,
        reason: &str,
        now: i64,
    ) -> StoreResult<bool> {
        let (tenant, user_id, sid, reason) = (
            tenant.to_owned(),
            user_id.to_owned(),
            session_id.to_owned(),
            reason.to_owned(),
        );
        self.write(move |c| {
            let n = c.execute(
                "UPDATE sessions SET revoked_at = ?5, revoke_reason = ?4
                 WHERE id = ?3 AND tenant = ?1 AND user_id = ?2 AND revoked_at IS NULL",
                params![tenant, user_id, sid, reason, now],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn revoke_user_sessions(
        &self,
        tenant: &str,
        user_id: &str,
        reason: &str,
        now: i64,
    ) -> StoreResult<Vec<String>> {
        let (tenant, user_id, reason) = (tenant.to_owned(), user_id.to_owned(), reason.to_owned());
        self.write(move |c| {
            let mut stmt = c.prepare_cached(
                "UPDATE sessions SET revoked_at = ?4, revoke_reason = ?3
                 WHERE tenant = ?1 AND user_id = ?2 AND revoked_at IS NULL RETURNING id",
            )?;
            let ids = stmt
                .query_map(params![tenant, user_id, reason, now], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            Ok(ids)
        })
        .await
    }

    async fn prune(
        &self,
        ended_before: i64,
        idle_ttl_ms: i64,
        rotated_before: i64,
    ) -> StoreResult<(u64, u64)> {
        self.write(move |c| {
            // A session ended at the earliest of: revocation, idle deadline, absolute end.
            let ended = "(revoked_at IS NOT NULL AND revoked_at < ?1)
                 OR last_seen_at + ?2 < ?1 OR absolute_expires_at < ?1";
            let tokens = c.execute(
                &format!(
                    "DELETE FROM refresh_tokens WHERE session_id IN (SELECT id FROM sessions WHERE {ended})"
                ),
                params![ended_before, idle_ttl_ms],
            )?;
            let sessions = c.execute(
                &format!("DELETE FROM sessions WHERE {ended}"),
                params![ended_before, idle_ttl_ms],
            )?;
            let rotated = c.execute(
                "DELETE FROM refresh_tokens WHERE rotated_at IS NOT NULL AND issued_at < ?1",
                params![rotated_before],
            )?;
            super::reclaim(c)?;
            Ok((sessions as u64, (tokens + rotated) as u64))
        })
        .await
    }

    async fn list_sessions(
        &self,
        tenant: &str,
        user_id: &str,
        now: i64,
    ) -> StoreResult<Vec<SessionRecord>> {
        let (tenant, user_id) = (tenant.to_owned(), user_id.to_owned());
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {SESSION_COLS} FROM sessions
                 WHERE tenant = ?1 AND user_id = ?2 AND revoked_at IS NULL
                   AND absolute_expires_at > ?3
                 ORDER BY created_at DESC"
            ))?;
            let rows = stmt
                .query_map(params![tenant, user_id, now], session_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }
}
