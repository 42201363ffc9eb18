//! The operations behind the CLI subcommands. They act as the [`Operator`] — the person
//! at the machine — through the same services as the server, on the same store, so
//! every rule (validation, audit, revocation) applies to them too. A running server
//! sees a revocation made here within `tokens.session_cache_ttl`.

use std::path::Path;

use super::{AnyError, open_stores};
use crate::access::{Acl, Operator};
use crate::audit::{Audit, AuditRecord, ChainFault, ChainReport};
use crate::auth::keys::Keyring;
use crate::auth::{
    AccessChange, AuthService, IssuedKey, KeyOptions, KeyView, Manager, NewAccount, NewService,
    ServiceView, UserView,
};
use crate::config::Config;
use crate::model::ClientInfo;
use crate::model::DocumentMeta;
use crate::rag::{Rag, embedder_from_config};
use crate::store::{AuditQuery, UserRecord};

async fn auth_service(cfg: &Config) -> Result<AuthService, AnyError> {
    let stores = open_stores(cfg).await?;
    let keys = Keyring::load_or_create(&cfg.keys_path())?;
    let audit = Audit::new(stores.audit.clone());
    Ok(AuthService::new(
        cfg,
        &stores,
        keys,
        audit,
        crate::auth::oidc::OidcVerifier::new(&cfg.oidc)?,
    ))
}

async fn rag_service(cfg: &Config) -> Result<Rag, AnyError> {
    let stores = open_stores(cfg).await?;
    let embedder = embedder_from_config(&cfg.embeddings)?;
    Ok(Rag::new(
        stores.documents,
        embedder,
        cfg.rag.clone(),
        Audit::new(stores.audit),
    ))
}

pub async fn add_user(cfg: &Config, account: NewAccount<'_>) -> Result<UserRecord, AnyError> {
    let name = account.username.to_owned();
    let rec = auth_service(cfg)
        .await?
        .create_user(&Operator::local_cli(), account)
        .await
        .map_err(|e| format!("could not add {name}: {e}"))?;
    Ok(rec)
}

pub async fn list_users(cfg: &Config) -> Result<Vec<UserRecord>, AnyError> {
    Ok(auth_service(cfg)
        .await?
        .all_users(&Operator::local_cli())
        .await?)
}

/// Changes a user's access (or disables them); every session of theirs ends.
pub async fn update_user(
    cfg: &Config,
    username: &str,
    change: AccessChange,
) -> Result<UserView, AnyError> {
    auth_service(cfg)
        .await?
        .operator_update(&Operator::local_cli(), username, change)
        .await
        .map_err(|e| match e {
            crate::auth::AuthError::NotFound => format!("no such user: {username}").into(),
            other => AnyError::from(format!("could not update {username}: {other}")),
        })
}

/// Reads a plain-text, Markdown or PDF file.
pub fn read_document(file: &Path) -> Result<String, AnyError> {
    if file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("pdf"))
    {
        Ok(pdf_extract::extract_text(file).map_err(|e| format!("{}: {e}", file.display()))?)
    } else {
        Ok(std::fs::read_to_string(file).map_err(|e| {
            format!(
                "{}: {e} (plain text, Markdown or PDF expected)",
                file.display()
            )
        })?)
    }
}

/// Ingests a document into `tenant`, reporting chunks done and in all to `progress`;
/// the document's final state and the embedder's name, for the report.
pub async fn add_document(
    cfg: &Config,
    tenant: &str,
    title: &str,
    text: &str,
    acl: Acl,
    progress: &mut (dyn FnMut(u32, u32) + Send),
) -> Result<(DocumentMeta, String), AnyError> {
    let rag = rag_service(cfg).await?;
    let admin = Operator::local_cli().document_admin(tenant);
    let doc = rag
        .ingest_as(&admin, title, text, acl, &ClientInfo::default(), progress)
        .await
        .map_err(|e| format!("could not ingest {title:?}: {e}"))?;
    Ok((doc, rag.embedder_name().to_owned()))
}

pub async fn list_documents(cfg: &Config, tenant: &str) -> Result<Vec<DocumentMeta>, AnyError> {
    let rag = rag_service(cfg).await?;
    let admin = Operator::local_cli().document_admin(tenant);
    Ok(rag.list_as(&admin).await?)
}

pub async fn remove_document(cfg: &Config, tenant: &str, id: &str) -> Result<(), AnyError> {
    let rag = rag_service(cfg).await?;
    let admin = Operator::local_cli().document_admin(tenant);
    rag.delete_as(&admin, id, &ClientInfo::default())
        .await
        .map_err(|e| match e {
            crate::rag::RagError::NotFound => format!("no document {id} in tenant {tenant}").into(),
            other => AnyError::from(other.to_string()),
        })
}

async fn audit(cfg: &Config) -> Result<Audit, AnyError> {
    Ok(Audit::new(open_stores(cfg).await?.audit))
}

pub async fn audit_events(cfg: &Config, q: AuditQuery) -> Result<Vec<AuditRecord>, AnyError> {
    Ok(audit(cfg)
        .await?
        .all_events(&Operator::local_cli(), q)
        .await?)
}

/// Walks the audit hash chain; the inner `Err` is the first fault found.
pub async fn audit_verify(cfg: &Config) -> Result<Result<ChainReport, ChainFault>, AnyError> {
    Ok(audit(cfg).await?.verify(&Operator::local_cli()).await?)
}

/// Every use of a document in a prompt, across tenants, newest first.
pub async fn audit_lineage(
    cfg: &Config,
    document_id: &str,
    limit: u32,
) -> Result<Vec<AuditRecord>, AnyError> {
    Ok(audit(cfg)
        .await?
        .lineage(&Operator::local_cli(), document_id, limit)
        .await?)
}

/// Makes a new active token key; returns its id.
pub fn rotate_keys(cfg: &Config) -> Result<String, AnyError> {
    let path = cfg.keys_path();
    if !path.exists() {
        Keyring::load_or_create(&path)?;
    }
    Ok(Keyring::rotate(&path)?)
}

/// `palisade service add`: a service account of `service.tenant`.
pub async fn add_service(cfg: &Config, service: NewService) -> Result<ServiceView, AnyError> {
    let op = Operator::local_cli();
    let tenant = service.tenant.clone();
    let name = service.name.clone();
    auth_service(cfg)
        .await?
        .create_service(
            Manager::Operator(&op, &tenant),
            service,
            &ClientInfo::default(),
        )
        .await
        .map_err(|e| format!("could not add {name}: {e}").into())
}

/// Every service account of every tenant.
pub async fn list_services(cfg: &Config) -> Result<Vec<ServiceView>, AnyError> {
    let op = Operator::local_cli();
    Ok(auth_service(cfg)
        .await?
        .services(Manager::Operator(&op, ""))
        .await?)
}

pub async fn set_service_disabled(
    cfg: &Config,
    tenant: &str,
    name: &str,
    disabled: bool,
) -> Result<ServiceView, AnyError> {
    let op = Operator::local_cli();
    auth_service(cfg)
        .await?
        .set_service_disabled(
            Manager::Operator(&op, tenant),
            name,
            disabled,
            &ClientInfo::default(),
        )
        .await
        .map_err(|e| match e {
            crate::auth::AuthError::NotFound => format!("no such service account: {name}").into(),
            other => AnyError::from(format!("could not change {name}: {other}")),
        })
}

/// `palisade key create`: the key's text, to print once.
pub async fn create_key(
    cfg: &Config,
    tenant: &str,
    service: &str,
    opts: KeyOptions,
) -> Result<IssuedKey, AnyError> {
    let op = Operator::local_cli();
    auth_service(cfg)
        .await?
        .create_key(
            Manager::Operator(&op, tenant),
            service,
            opts,
            &ClientInfo::default(),
        )
        .await
        .map_err(|e| match e {
            crate::auth::AuthError::NotFound => {
                format!("no such service account: {service}").into()
            }
            other => AnyError::from(format!("could not create a key: {other}")),
        })
}

pub async fn list_keys(
    cfg: &Config,
    tenant: &str,
    service: Option<&str>,
) -> Result<Vec<KeyView>, AnyError> {
    let op = Operator::local_cli();
    auth_service(cfg)
        .await?
        .keys_of(Manager::Operator(&op, tenant), service)
        .await
        .map_err(|e| format!("could not list keys: {e}").into())
}

pub async fn revoke_key(cfg: &Config, tenant: &str, id: &str) -> Result<(), AnyError> {
    let op = Operator::local_cli();
    auth_service(cfg)
        .await?
        .revoke_key(Manager::Operator(&op, tenant), id, &ClientInfo::default())
        .await
        .map_err(|e| match e {
            crate::auth::AuthError::NotFound => {
                format!("no live key {id} in tenant {tenant}").into()
            }
            other => AnyError::from(format!("could not revoke {id}: {other}")),
        })
}
