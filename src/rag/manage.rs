//! Reading and managing documents: readers see what they may read; holders of
//! `documents:write` list every document's metadata and delete any of their tenant.

use super::{Rag, RagError};
use crate::access::{DocumentAdmin, Principal};
use crate::audit::{AuditEvent, AuditKind};
use crate::model::ClientInfo;
use crate::model::{DocumentMeta, DocumentRecord};

impl Rag {
    /// The documents the caller may read.
    pub async fn list(&self, p: &Principal) -> Result<Vec<DocumentRecord>, RagError> {
        Ok(self.store.list_documents(&p.access_scope()).await?)
    }

    /// Every document of the writer's tenant, metadata only (not the text).
    pub async fn manage_list(&self, p: &Principal) -> Result<Vec<DocumentMeta>, RagError> {
        let admin = self.require_admin(p)?;
        self.list_as(&admin).await
    }

    pub async fn list_as(&self, admin: &DocumentAdmin) -> Result<Vec<DocumentMeta>, RagError> {
        Ok(self.store.list_all_documents(admin).await?)
    }

    /// A document the caller may read, with its text.
    pub async fn get(&self, p: &Principal, id: &str) -> Result<DocumentRecord, RagError> {
        if id.len() > 64 {
            return Err(RagError::NotFound);
        }
        self.store
            .document(&p.access_scope(), id)
            .await?
            .ok_or(RagError::NotFound)
    }

    /// The text of one passage of a document the caller may read (a citation's).
    pub async fn passage(
        &self,
        p: &Principal,
        document_id: &str,
        chunk_id: &str,
    ) -> Result<String, RagError> {
        if document_id.len() > 64 || chunk_id.len() > 64 {
            return Err(RagError::NotFound);
        }
        self.store
            .passage(&p.access_scope(), document_id, chunk_id)
            .await?
            .ok_or(RagError::NotFound)
    }

    /// Deletes any document of the writer's tenant, readable by the writer or not.
    /// A non-writer learns nothing: a document they cannot read is `NotFound`, one they
    /// can read is `Forbidden`.
    pub async fn delete(
        &self,
        p: &Principal,
        id: &str,
        client: &ClientInfo,
    ) -> Result<(), RagError> {
        let Some(admin) = self.admin_of(p) else {
            self.get(p, id).await?;
            return Err(RagError::Forbidden);
        };
        self.delete_as(&admin, id, client).await
    }

    pub async fn delete_as(
        &self,
        admin: &DocumentAdmin,
        id: &str,
        client: &ClientInfo,
    ) -> Result<(), RagError> {
        if id.len() > 64 || !self.store.delete_document(admin, id).await? {
            return Err(RagError::NotFound);
        }
        self.documents_changed();
        self.audit
            .record(
                AuditEvent::new(AuditKind::DocumentDeleted)
                    .tenant(admin.tenant())
                    .subject(admin.actor())
                    .resource(id)
                    .client(client),
            )
            .await;
        Ok(())
    }

    /// Which of the documents `ids` the caller may still read: history that cites
    /// anything else is withheld from prompts and shown redacted.
    pub async fn still_readable(
        &self,
        p: &Principal,
        ids: Vec<String>,
    ) -> Result<std::collections::HashSet<String>, RagError> {
        Ok(self.store.readable_ids(&p.access_scope(), ids).await?)
    }
}
