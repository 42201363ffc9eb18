//! Ingestion: validation, chunking, embedding, and one atomic insert.

use super::{Rag, RagError};
use crate::access::{Acl, ClientInfo, DocumentAdmin, Principal};
use crate::audit::{AuditEvent, AuditKind};
use crate::secret::new_id;
use crate::store::{DocumentRecord, NewChunk, NewDocument};
use crate::timeutil::now_ms;

impl Rag {
    /// Ingestion by an authenticated writer, into the writer's own tenant.
    pub async fn ingest(
        &self,
        p: &Principal,
        title: &str,
        text: &str,
        acl: Acl,
        client: &ClientInfo,
    ) -> Result<DocumentRecord, RagError> {
        let admin = self.require_admin(p)?;
        self.ingest_as(&admin, title, text, acl, client).await
    }

    /// Ingestion under a `documents:write` capability (a verified writer, or the
    /// operator's CLI for a tenant it names).
    pub async fn ingest_as(
        &self,
        admin: &DocumentAdmin,
        title: &str,
        text: &str,
        acl: Acl,
        client: &ClientInfo,
    ) -> Result<DocumentRecord, RagError> {
        let title = title.trim();
        if title.is_empty() || title.chars().count() > 300 {
            return Err(RagError::Invalid(
                "A title of 1 to 300 characters is required.".into(),
            ));
        }
        if text.trim().is_empty() {
            return Err(RagError::Invalid("The document has no text.".into()));
        }
        if text.chars().count() > self.cfg.max_document_chars {
            return Err(RagError::TooLarge);
        }
        let names = acl.roles.iter().chain(&acl.groups).chain(&acl.users);
        if let Some(bad) = names.clone().find(|n| !crate::access::valid_name(n)) {
            let shown: String = bad.chars().take(64).collect();
            return Err(RagError::Invalid(format!(
                "Invalid name in the ACL: {shown:?}."
            )));
        }
        if crate::access::Labels::of(&acl).is_none() {
            return Err(RagError::Invalid(
                "The ACL names nobody: give roles, groups, users or public.".into(),
            ));
        }
        let pieces = self.chunk(text);
        let embeddings = match &self.embedder {
            Some(e) => Some(e.embed(pieces.clone()).await.map_err(|err| {
                tracing::error!(error = %err, "embedding failed");
                RagError::Embedding
            })?),
            None => None,
        };
        let chunks = pieces
            .into_iter()
            .enumerate()
            .map(|(i, text)| NewChunk {
                id: new_id(),
                text,
                embedding: embeddings.as_ref().map(|e| e[i].clone()),
            })
            .collect();
        let doc = NewDocument::new(
            admin,
            new_id(),
            title.to_owned(),
            text.to_owned(),
            acl,
            chunks,
            now_ms(),
        )
        .ok_or_else(|| RagError::Invalid("The ACL names nobody.".into()))?;
        let doc = self.store.insert_document(doc).await?;
        self.audit
            .record(
                AuditEvent::new(AuditKind::DocumentCreated)
                    .tenant(admin.tenant())
                    .subject(admin.actor())
                    .resource(&doc.id)
                    .client(client),
            )
            .await;
        Ok(doc)
    }

    /// Splits on paragraphs, then sentences, then words, with overlap; sized in model
    /// tokens when the embedder has a tokenizer, otherwise in 4-character units.
    pub fn chunk(&self, text: &str) -> Vec<String> {
        use text_splitter::{ChunkConfig, TextSplitter};
        let (size, overlap) = (self.cfg.chunk_tokens, self.cfg.chunk_overlap);
        let chunks: Vec<String> = match self.embedder.as_ref().and_then(|e| e.tokenizer()) {
            Some(tok) => match ChunkConfig::new(size).with_overlap(overlap) {
                Ok(c) => TextSplitter::new(c.with_sizer(tok.clone()))
                    .chunks(text)
                    .map(str::to_owned)
                    .collect(),
                Err(_) => vec![text.to_owned()],
            },
            None => match ChunkConfig::new(size * 4).with_overlap(overlap * 4) {
                Ok(c) => TextSplitter::new(c)
                    .chunks(text)
                    .map(str::to_owned)
                    .collect(),
                Err(_) => vec![text.to_owned()],
            },
        };
        chunks
            .into_iter()
            .filter(|c| !c.trim().is_empty())
            .collect()
    }
}
