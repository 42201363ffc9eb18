//! API keys in SQLite. One process serves an embedded store, so there is no feed:
//! a revocation made by the CLI is seen within `tokens.session_cache_ttl`.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row, params};

use super::{SqliteStore, json_list, parse_list};
use crate::secret::TokenHash;
use crate::store::{ApiKeyRecord, ClientBinding, KeyStore, OAuthClientRecord, StoreResult};

const KEY_COLS: &str = "id, tenant, service_id, secret_hash, created_at, expires_at, revoked_at, \
                        last_used_at, last_used_ip, allow_cidrs, dpop_jkt";

fn key_row(r: &Row<'_>) -> rusqlite::Result<ApiKeyRecord> {
    let hash: Vec<u8> = r.get(3)?;
    Ok(ApiKeyRecord {
        id: r.get(0)?,
        tenant: r.get(1)?,
        service_id: r.get(2)?,
        secret_hash: TokenHash(hash.try_into().unwrap_or([0; 32])),
        created_at: r.get(4)?,
        expires_at: r.get(5)?,
        revoked_at: r.get(6)?,
        last_used_at: r.get(7)?,
        last_used_ip: r.get(8)?,
        allow_cidrs: parse_list(&r.get::<_, String>(9)?)?,
        dpop_jkt: r.get(10)?,
    })
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn create_key(&self, k: ApiKeyRecord) -> StoreResult<()> {
        self.write(move |c| {
            c.execute(
                &format!(
                    "INSERT INTO api_keys ({KEY_COLS}) VALUES (?1,?2,?3,?4,?5,?6,NULL,NULL,NULL,?7,?8)"
                ),
                params![
                    k.id,
                    k.tenant,
                    k.service_id,
                    k.secret_hash.0.to_vec(),
                    k.created_at,
                    k.expires_at,
                    json_list(&k.allow_cidrs),
                    k.dpop_jkt
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn key(&self, id: &str) -> StoreResult<Option<ApiKeyRecord>> {
        let id = id.to_owned();
        self.read(move |c| {
            Ok(c.query_row(
                &format!("SELECT {KEY_COLS} FROM api_keys WHERE id = ?1"),
                [id],
                key_row,
            )
            .optional()?)
        })
        .await
    }

    async fn keys_of(
        &self,
        tenant: &str,
        service_id: Option<&str>,
    ) -> StoreResult<Vec<ApiKeyRecord>> {
        let (tenant, service) = (tenant.to_owned(), service_id.map(str::to_owned));
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {KEY_COLS} FROM api_keys
                 WHERE tenant = ?1 AND (?2 IS NULL OR service_id = ?2)
                 ORDER BY created_at DESC, id"
            ))?;
            let rows = stmt
                .query_map(params![tenant, service], key_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn revoke_key(&self, tenant: &str, id: &str, now: i64) -> StoreResult<bool> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.write(move |c| {
            let n = c.execute(
                "UPDATE api_keys SET revoked_at = ?3
                 WHERE tenant = ?1 AND id = ?2 AND revoked_at IS NULL",
                params![tenant, id, now],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn touch_key(&self, id: &str, now: i64, ip: Option<&str>) -> StoreResult<()> {
        let (id, ip) = (id.to_owned(), ip.map(str::to_owned));
        self.write_deferred(move |c| {
            c.execute(
                "UPDATE api_keys SET last_used_at = ?2, last_used_ip = ?3 WHERE id = ?1",
                params![id, now, ip],
            )?;
            Ok(())
        })
        .await
    }

    async fn announce_keys(&self, _ids: &[String]) -> StoreResult<()> {
        Ok(())
    }

    async fn create_client(&self, c: OAuthClientRecord) -> StoreResult<()> {
        self.write(move |conn| {
            conn.execute(
                &format!("INSERT INTO oauth_clients ({CLIENT_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7)"),
                params![
                    c.id,
                    c.name,
                    json_list(&c.redirect_uris),
                    c.tenant,
                    c.created_at,
                    c.expires_at,
                    c.last_used_at
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn client(&self, id: &str) -> StoreResult<Option<OAuthClientRecord>> {
        let id = id.to_owned();
        self.read(move |c| {
            Ok(c.query_row(
                &format!("SELECT {CLIENT_COLS} FROM oauth_clients WHERE id = ?1"),
                [id],
                client_row,
            )
            .optional()?)
        })
        .await
    }

    async fn bind_client(&self, id: &str, tenant: &str, now: i64) -> StoreResult<ClientBinding> {
        let (id, tenant) = (id.to_owned(), tenant.to_owned());
        self.write(move |c| {
            c.execute(
                "UPDATE oauth_clients SET tenant = ?2, expires_at = NULL
                 WHERE id = ?1 AND tenant IS NULL AND expires_at > ?3",
                params![id, tenant, now],
            )?;
            let bound: Option<Option<String>> = c
                .query_row(
                    "SELECT tenant FROM oauth_clients WHERE id = ?1",
                    [&id],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(match bound {
                Some(Some(t)) if t == tenant => ClientBinding::Bound,
                Some(Some(_)) => ClientBinding::OtherTenant,
                _ => ClientBinding::Unknown,
            })
        })
        .await
    }

    async fn touch_client(&self, id: &str, now: i64) -> StoreResult<()> {
        let id = id.to_owned();
        self.write_deferred(move |c| {
            c.execute(
                "UPDATE oauth_clients SET last_used_at = ?2 WHERE id = ?1",
                params![id, now],
            )?;
            Ok(())
        })
        .await
    }

    async fn prune_clients(&self, now: i64, unused_before: i64) -> StoreResult<u64> {
        self.write(move |c| {
            let n = c.execute(
                "DELETE FROM oauth_clients
                 WHERE (tenant IS NULL AND expires_at <= ?1)
                    OR (tenant IS NOT NULL AND COALESCE(last_used_at, created_at) < ?2)",
                params![now, unused_before],
            )?;
            Ok(n as u64)
        })
        .await
    }
}

const CLIENT_COLS: &str = "id, name, redirect_uris, tenant, created_at, expires_at, last_used_at";

fn client_row(r: &Row<'_>) -> rusqlite::Result<OAuthClientRecord> {
    Ok(OAuthClientRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        redirect_uris: parse_list(&r.get::<_, String>(2)?)?,
        tenant: r.get(3)?,
        created_at: r.get(4)?,
        expires_at: r.get(5)?,
        last_used_at: r.get(6)?,
    })
}
