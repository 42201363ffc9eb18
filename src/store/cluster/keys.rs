//! API keys in PostgreSQL. A revocation (or a change of the key's service account) is
//! published on the revocation feed as `key:<id>`, so that every node drops its cached
//! key at once.

use async_trait::async_trait;
use tokio_postgres::Row;

use super::{ClusterStore, timed};
use crate::secret::TokenHash;
use crate::store::{ApiKeyRecord, ClientBinding, KeyStore, OAuthClientRecord, StoreResult};

const KEY_COLS: &str = "id, tenant, service_id, secret_hash, created_at, expires_at, revoked_at, \
                        last_used_at, last_used_ip, allow_cidrs, dpop_jkt";

fn key_row(r: &Row) -> StoreResult<ApiKeyRecord> {
    let hash: Vec<u8> = r.try_get(3)?;
    Ok(ApiKeyRecord {
        id: r.try_get(0)?,
        tenant: r.try_get(1)?,
        service_id: r.try_get(2)?,
        secret_hash: TokenHash(hash.try_into().unwrap_or([0; 32])),
        created_at: r.try_get(4)?,
        expires_at: r.try_get(5)?,
        revoked_at: r.try_get(6)?,
        last_used_at: r.try_get(7)?,
        last_used_ip: r.try_get(8)?,
        allow_cidrs: r.try_get(9)?,
        dpop_jkt: r.try_get(10)?,
    })
}

/// What the feed carries for a key (session ids never start so).
pub fn feed_name(id: &str) -> String {
    format!("key:{id}")
}

impl ClusterStore {
    async fn publish_keys(&self, ids: &[String]) -> StoreResult<()> {
        let mut r = self.redis();
        let channel = format!("{}revoked", self.prefix);
        for id in ids {
            let _: i64 = redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(feed_name(id))
                .query_async(&mut r)
                .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl KeyStore for ClusterStore {
    async fn create_key(&self, k: ApiKeyRecord) -> StoreResult<()> {
        timed(async {
            let c = self.pg().await?;
            c.execute(
                &format!(
                    "INSERT INTO api_keys ({KEY_COLS})
                     VALUES ($1,$2,$3,$4,$5,$6,NULL,NULL,NULL,$7,$8)"
                ),
                &[
                    &k.id,
                    &k.tenant,
                    &k.service_id,
                    &k.secret_hash.0.as_slice(),
                    &k.created_at,
                    &k.expires_at,
                    &k.allow_cidrs,
                    &k.dpop_jkt,
                ],
            )
            .await?;
            Ok(())
        })
        .await
    }

    async fn key(&self, id: &str) -> StoreResult<Option<ApiKeyRecord>> {
        timed(async {
            let c = self.pg().await?;
            let stmt = c
                .prepare_cached(&format!("SELECT {KEY_COLS} FROM api_keys WHERE id = $1"))
                .await?;
            c.query_opt(&stmt, &[&id])
                .await?
                .map(|r| key_row(&r))
                .transpose()
        })
        .await
    }

    async fn keys_of(
        &self,
        tenant: &str,
        service_id: Option<&str>,
    ) -> StoreResult<Vec<ApiKeyRecord>> {
        timed(async {
            let c = self.pg().await?;
            let rows = c
                .query(
                    &format!(
                        "SELECT {KEY_COLS} FROM api_keys
                         WHERE tenant = $1 AND ($2::TEXT IS NULL OR service_id = $2)
                         ORDER BY created_at DESC, id"
                    ),
                    &[&tenant, &service_id],
                )
                .await?;
            rows.iter().map(key_row).collect()
        })
        .await
    }

    async fn revoke_key(&self, tenant: &str, id: &str, now: i64) -> StoreResult<bool> {
        timed(async {
            let c = self.pg().await?;
            let n = c
                .execute(
                    "UPDATE api_keys SET revoked_at = $3
                     WHERE tenant = $1 AND id = $2 AND revoked_at IS NULL",
                    &[&tenant, &id, &now],
                )
                .await?;
            if n == 1 {
                self.publish_keys(&[id.to_owned()]).await?;
            }
            Ok(n == 1)
        })
        .await
    }

    async fn touch_key(&self, id: &str, now: i64, ip: Option<&str>) -> StoreResult<()> {
        timed(async {
            let c = self.pg().await?;
            c.execute(
                "UPDATE api_keys SET last_used_at = $2, last_used_ip = $3 WHERE id = $1",
                &[&id, &now, &ip],
            )
            .await?;
            Ok(())
        })
        .await
    }

    async fn announce_keys(&self, ids: &[String]) -> StoreResult<()> {
        timed(self.publish_keys(ids)).await
    }

    async fn create_client(&self, c: OAuthClientRecord) -> StoreResult<()> {
        timed(async {
            let conn = self.pg().await?;
            conn.execute(
                &format!("INSERT INTO oauth_clients ({CLIENT_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7)"),
                &[
                    &c.id,
                    &c.name,
                    &c.redirect_uris,
                    &c.tenant,
                    &c.created_at,
                    &c.expires_at,
                    &c.last_used_at,
                ],
            )
            .await?;
            Ok(())
        })
        .await
    }

    async fn client(&self, id: &str) -> StoreResult<Option<OAuthClientRecord>> {
        timed(async {
            let c = self.pg().await?;
            c.query_opt(
                &format!("SELECT {CLIENT_COLS} FROM oauth_clients WHERE id = $1"),
                &[&id],
            )
            .await?
            .map(|r| client_row(&r))
            .transpose()
        })
        .await
    }

    async fn bind_client(&self, id: &str, tenant: &str, now: i64) -> StoreResult<ClientBinding> {
        timed(async {
            let c = self.pg().await?;
            // One statement: of two first approvals at once, one binds.
            let row = c
                .query_opt(
                    "WITH bound AS (
                         UPDATE oauth_clients SET tenant = $2, expires_at = NULL
                         WHERE id = $1 AND tenant IS NULL AND expires_at > $3
                         RETURNING tenant)
                     SELECT tenant FROM bound
                     UNION ALL
                     SELECT tenant FROM oauth_clients WHERE id = $1 AND tenant IS NOT NULL
                     LIMIT 1",
                    &[&id, &tenant, &now],
                )
                .await?;
            let t: Option<String> = row.map(|r| r.try_get(0)).transpose()?;
            Ok(match t {
                Some(t) if t == tenant => ClientBinding::Bound,
                Some(_) => ClientBinding::OtherTenant,
                None => ClientBinding::Unknown,
            })
        })
        .await
    }

    async fn touch_client(&self, id: &str, now: i64) -> StoreResult<()> {
        timed(async {
            let c = self.pg().await?;
            c.execute(
                "UPDATE oauth_clients SET last_used_at = $2 WHERE id = $1",
                &[&id, &now],
            )
            .await?;
            Ok(())
        })
        .await
    }

    async fn prune_clients(&self, now: i64, unused_before: i64) -> StoreResult<u64> {
        timed(async {
            let c = self.pg().await?;
            Ok(c.execute(
                "DELETE FROM oauth_clients
                 WHERE (tenant IS NULL AND expires_at <= $1)
                    OR (tenant IS NOT NULL AND COALESCE(last_used_at, created_at) < $2)",
                &[&now, &unused_before],
            )
            .await?)
        })
        .await
    }
}

const CLIENT_COLS: &str = "id, name, redirect_uris, tenant, created_at, expires_at, last_used_at";

fn client_row(r: &Row) -> StoreResult<OAuthClientRecord> {
    Ok(OAuthClientRecord {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        redirect_uris: r.try_get(2)?,
        tenant: r.try_get(3)?,
        created_at: r.try_get(4)?,
        expires_at: r.try_get(5)?,
        last_used_at: r.try_get(6)?,
    })
}
