//! Ingestion jobs. A submitted document is stored `queued`; a worker (any process's,
//! any node's) claims it under a lease, splits it, embeds it in batches and stages each
//! batch with a renewal of the lease, then moves every chunk into the indexes at once:
//! retrieval never sees a document half-indexed. A worker that dies leaves its lease to
//! lapse; the next one resumes after the chunks already staged (chunks are keyed by
//! their position, so none is stored twice).

use std::sync::Arc;
use std::time::Duration;

use super::{Rag, RagError, ingest::split};
use crate::access::DocumentAdmin;
use crate::model::{DocumentMeta, IngestState};
use crate::secret::new_id;
use crate::store::{IngestClaim, IngestFailure, IngestJob, NewChunk};

/// Chunks embedded and staged per step (a step renews the lease). Small, so that a
/// question's embedding never waits long behind a document's.
const BATCH: usize = 16;
/// Chunks staged per step when there is nothing to embed (full text only).
const BATCH_TEXT_ONLY: usize = 1024;
/// Attempts of a job whose embedding fails before it is marked `failed`.
const ATTEMPTS: u32 = 3;
/// Pause before the second attempt; doubled for each later one.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// How often an idle worker looks for a job submitted elsewhere (this process's own
/// submissions wake it at once).
const POLL: Duration = Duration::from_secs(1);
/// How often a waiter re-reads a job run elsewhere.
const WATCH: Duration = Duration::from_millis(250);

/// This process's side of the queue.
pub(super) struct Jobs {
    /// Who holds this process's leases.
    worker: String,
    /// A job was submitted here.
    pub(super) wake: tokio::sync::Notify,
    /// A job run here made progress or ended.
    progressed: tokio::sync::Notify,
}

impl Jobs {
    pub(super) fn new() -> Jobs {
        Jobs {
            worker: format!("{}-{}", std::process::id(), new_id()),
            wake: tokio::sync::Notify::new(),
            progressed: tokio::sync::Notify::new(),
        }
    }
}

/// How a worker's look for a job ended.
enum Ran {
    /// There was none it could take.
    Nothing,
    /// It ran one (to the end, or until it lost it).
    One,
}

impl Rag {
    /// Starts this process's workers (`rag.ingest_workers`).
    pub fn start_ingest_workers(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        (0..self.cfg.ingest_workers)
            .map(|_| {
                let rag = self.clone();
                tokio::spawn(async move {
                    loop {
                        match rag.run_one(None, &mut |_, _| {}).await {
                            Ok(Ran::One) => continue,
                            Ok(Ran::Nothing) => {}
                            Err(e) => tracing::warn!(error = %e, "ingestion: will retry"),
                        }
                        tokio::select! {
                            _ = rag.jobs.wake.notified() => {}
                            _ = tokio::time::sleep(POLL) => {}
                        }
                    }
                })
            })
            .collect()
    }

    /// Claims a job (only `only`, if given) and runs it.
    async fn run_one(
        &self,
        only: Option<&str>,
        progress: &mut (dyn FnMut(u32, u32) + Send),
    ) -> Result<Ran, RagError> {
        let claim = IngestClaim {
            worker: self.jobs.worker.clone(),
            now: self.clock.now_ms(),
            lease_ms: self.lease_ms(),
            per_tenant: self.cfg.ingest_per_tenant,
            only: only.map(str::to_owned),
        };
        let Some(job) = self.store.claim_ingest(claim).await? else {
            return Ok(Ran::Nothing);
        };
        let id = job.lease.document_id.clone();
        let outcome = self.run_job(job, progress).await;
        self.jobs.progressed.notify_waiters();
        match &outcome {
            Ok(()) => tracing::debug!(document = %id, "ingestion step over"),
            Err(e) => tracing::warn!(document = %id, error = %e, "ingestion interrupted"),
        }
        outcome.map(|()| Ran::One)
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.cfg.ingest_lease.as_millis()).unwrap_or(i64::MAX / 2)
    }

    async fn run_job(
        &self,
        job: IngestJob,
        progress: &mut (dyn FnMut(u32, u32) + Send),
    ) -> Result<(), RagError> {
        let (size, overlap) = (self.cfg.chunk_tokens, self.cfg.chunk_overlap);
        let embedder = self.embedder.clone();
        let text = job.text;
        // Splitting a large document takes seconds of CPU: never on the async workers.
        let pieces = tokio::task::spawn_blocking(move || {
            split(
                &text,
                size,
                overlap,
                embedder.as_ref().and_then(|e| e.tokenizer()),
            )
        })
        .await
        .map_err(|_| RagError::Embedding)?;
        let total = u32::try_from(pieces.len()).unwrap_or(u32::MAX);
        let batch = if self.embedder.is_some() {
            BATCH
        } else {
            BATCH_TEXT_ONLY
        };
        let mut at = (job.done as usize).min(pieces.len());
        progress(at as u32, total);
        while at < pieces.len() {
            let end = (at + batch).min(pieces.len());
            let texts = pieces[at..end].to_vec();
            let vectors = match &self.embedder {
                Some(e) => match e.embed(texts.clone()).await {
                    Ok(v) if v.len() == texts.len() => Some(v),
                    Ok(_) | Err(_) => {
                        let attempts = job.attempts + 1;
                        let failure = if attempts >= ATTEMPTS {
                            IngestFailure::GiveUp("embedding_failed")
                        } else {
                            let pause = RETRY_AFTER * 2u32.pow(attempts - 1);
                            IngestFailure::RetryAt(
                                self.clock.now_ms()
                                    + i64::try_from(pause.as_millis()).unwrap_or(60_000),
                            )
                        };
                        tracing::warn!(
                            document = %job.lease.document_id,
                            attempts,
                            "embedding a document failed"
                        );
                        self.store.fail_ingest(&job.lease, failure).await?;
                        return Ok(());
                    }
                },
                None => None,
            };
            let chunks = texts
                .into_iter()
                .enumerate()
                .map(|(i, text)| NewChunk {
                    id: new_id(),
                    text,
                    embedding: vectors.as_ref().and_then(|v| v.get(i).cloned()),
                })
                .collect();
            let renewed_until = self.clock.now_ms() + self.lease_ms();
            if !self
                .store
                .stage_chunks(&job.lease, at as u32, total, chunks, renewed_until)
                .await?
            {
                // Deleted, or the lease lapsed and another worker has it.
                return Ok(());
            }
            at = end;
            progress(at as u32, total);
            self.jobs.progressed.notify_waiters();
        }
        if self.store.publish_ingest(&job.lease).await? {
            self.documents_changed();
        }
        Ok(())
    }

    /// A document of the administrator's tenant, metadata and ingestion state.
    pub async fn job_as(&self, admin: &DocumentAdmin, id: &str) -> Result<DocumentMeta, RagError> {
        if id.len() > 64 {
            return Err(RagError::NotFound);
        }
        self.store
            .document_meta(admin, id)
            .await?
            .ok_or(RagError::NotFound)
    }

    /// Waits until the job of `id` is over, or `give_up` passes: its state then.
    pub async fn wait_for(
        &self,
        admin: &DocumentAdmin,
        id: &str,
        give_up: tokio::time::Instant,
    ) -> Result<DocumentMeta, RagError> {
        loop {
            let meta = self.job_as(admin, id).await?;
            if meta.state == IngestState::Ready {
                // Perhaps published by another process: this one's memory of what
                // each scope can see must not hide it.
                self.documents_changed();
            }
            if meta.state.is_final() || tokio::time::Instant::now() >= give_up {
                return Ok(meta);
            }
            let next = (tokio::time::Instant::now() + WATCH).min(give_up);
            tokio::select! {
                _ = self.jobs.progressed.notified() => {}
                _ = tokio::time::sleep_until(next) => {}
            }
        }
    }

    /// Runs the job of `id` here whenever it is free to be claimed, and otherwise
    /// follows whoever runs it, until it is over.
    pub async fn see_through(
        &self,
        admin: &DocumentAdmin,
        id: &str,
        progress: &mut (dyn FnMut(u32, u32) + Send),
    ) -> Result<DocumentMeta, RagError> {
        loop {
            if let Err(e) = self.run_one(Some(id), progress).await {
                tracing::warn!(error = %e, "ingestion: will retry");
            }
            let meta = self.job_as(admin, id).await?;
            match meta.state {
                IngestState::Ready => {
                    self.documents_changed();
                    progress(meta.chunk_count, meta.chunk_count);
                    return Ok(meta);
                }
                IngestState::Failed { .. } => return Ok(meta),
                IngestState::Embedding { done, total } => progress(done, total),
                IngestState::Queued => {}
            }
            tokio::select! {
                _ = self.jobs.progressed.notified() => {}
                _ = tokio::time::sleep(WATCH) => {}
            }
        }
    }
}
