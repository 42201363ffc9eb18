//! Ingestion's front half: validation and the stored job; and chunking. The job is
//! run in `jobs.rs`.

use super::{Rag, RagError};
use crate::access::{Acl, DocumentAdmin, Principal};
use crate::audit::{AuditEvent, AuditKind};
use crate::model::ClientInfo;
use crate::model::{DocumentMeta, DocumentRecord};
use crate::secret::new_id;
use crate::store::NewDocument;

impl Rag {
    /// A document submitted by an authenticated writer, into the writer's own tenant:
    /// stored as a job (`queued`) for a worker to chunk and embed.
    pub async fn submit(
        &self,
        p: &Principal,
        title: &str,
        text: &str,
        acl: Acl,
        client: &ClientInfo,
    ) -> Result<DocumentRecord, RagError> {
        let admin = self.require_admin(p)?;
        self.submit_as(&admin, title, text, acl, client).await
    }

    /// A document submitted under a `documents:write` capability (a verified writer,
    /// or the operator's CLI for a tenant it names), as a job.
    pub async fn submit_as(
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
        // No store keeps a NUL (PostgreSQL refuses it in text): bad input, on every
        // path in (the HTTP edge refuses it too; this covers `palisade doc add`).
        if title.contains('\0') || text.contains('\0') {
            return Err(RagError::Invalid(
                "The document contains NUL characters.".into(),
            ));
        }
        if text.chars().count() > self.cfg.max_document_chars {
            return Err(RagError::TooLarge);
        }
        // The field is named, never the value (it may be anything pasted there).
        for (field, names) in [
            ("acl.roles", &acl.roles),
            ("acl.groups", &acl.groups),
            ("acl.users", &acl.users),
        ] {
            if names.iter().any(|n| !crate::access::valid_name(n)) {
                return Err(RagError::Invalid(format!(
                    "`{field}` holds an invalid name: names are 1-64 characters from [A-Za-z0-9_.@:-]."
                )));
            }
        }
        if crate::access::Labels::of(&acl).is_none() {
            return Err(RagError::Invalid(
                "The ACL names nobody: give roles, groups, users or public.".into(),
            ));
        }
        let doc = NewDocument::new(
            admin,
            new_id(),
            title.to_owned(),
            text.to_owned(),
            acl,
            Vec::new(),
            self.clock.now_ms(),
        )
        .ok_or_else(|| RagError::Invalid("The ACL names nobody.".into()))?;
        let doc = self.store.enqueue_document(doc).await?;
        self.jobs.wake.notify_one();
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

    /// Submits a document and sees its job through (running it here unless another
    /// worker holds it), reporting chunks done and in all to `progress`.
    pub async fn ingest_as(
        &self,
        admin: &DocumentAdmin,
        title: &str,
        text: &str,
        acl: Acl,
        client: &ClientInfo,
        progress: &mut (dyn FnMut(u32, u32) + Send),
    ) -> Result<DocumentMeta, RagError> {
        let doc = self.submit_as(admin, title, text, acl, client).await?;
        self.see_through(admin, &doc.id, progress).await
    }

    /// The text of a PDF, for a writer about to submit it (the page's upload). Parsing
    /// untrusted PDF runs on the blocking pool, one at a time, within a deadline; a
    /// file the parser chokes on (it may panic) is bad input.
    pub async fn text_of_pdf(&self, p: &Principal, pdf: Vec<u8>) -> Result<String, RagError> {
        self.require_admin(p)?;
        let _slot = self
            .pdf_slots
            .acquire()
            .await
            .map_err(|_| RagError::Invalid("The server is shutting down.".into()))?;
        let unreadable = || RagError::Invalid("The file is not a PDF with text in it.".into());
        let parse = tokio::task::spawn_blocking(move || pdf_extract::extract_text_from_mem(&pdf));
        let text = match tokio::time::timeout(PDF_DEADLINE, parse).await {
            Ok(Ok(Ok(text))) => text,
            Ok(_) => return Err(unreadable()),
            Err(_) => {
                return Err(RagError::Invalid("The PDF took too long to read.".into()));
            }
        };
        if text.trim().is_empty() {
            return Err(unreadable());
        }
        if text.chars().count() > self.cfg.max_document_chars {
            return Err(RagError::TooLarge);
        }
        Ok(text)
    }

    /// Splits on paragraphs, then sentences, then words, with overlap; sized in model
    /// tokens when the embedder has a tokenizer, otherwise in 4-character units.
    pub fn chunk(&self, text: &str) -> Vec<String> {
        split(
            text,
            self.cfg.chunk_tokens,
            self.cfg.chunk_overlap,
            self.embedder.as_ref().and_then(|e| e.tokenizer()),
        )
    }
}

/// How long reading one PDF may take.
const PDF_DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

/// Text is cut into blocks of whole paragraphs of at most this many characters before
/// the splitter sees it: the splitter's sentence and word segmentation is superlinear in
/// its input (a 2 MB document took 9.2 s in one piece), so this keeps chunking linear in
/// the document's size.
const BLOCK_CHARS: usize = 16_000;

/// Blocks of whole paragraphs, each at most `BLOCK_CHARS` characters (a longer single
/// paragraph is cut at a character boundary).
fn blocks(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0; // byte offset where the current block begins
    let mut count = 0; // characters in the current block
    let mut last_break: Option<usize> = None; // just after the block's last blank line
    for (i, c) in text.char_indices() {
        if count == BLOCK_CHARS {
            // Cut after the last paragraph break, or here inside one long paragraph;
            // what follows the cut starts the next block.
            let cut = last_break.filter(|b| *b > start).unwrap_or(i);
            out.push(&text[start..cut]);
            count = text[cut..i].chars().count();
            start = cut;
            last_break = None;
        }
        count += 1;
        if c == '\n' && text[..i].ends_with('\n') {
            last_break = Some(i + 1);
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// The chunks of `text`: paragraph blocks, then the splitter on each (built once).
pub(super) fn split(
    text: &str,
    size: usize,
    overlap: usize,
    tokenizer: Option<&tokenizers::Tokenizer>,
) -> Vec<String> {
    use text_splitter::{ChunkConfig, TextSplitter};
    let pieces: Vec<String> = match tokenizer {
        Some(tok) => match ChunkConfig::new(size).with_overlap(overlap) {
            Ok(c) => {
                let splitter = TextSplitter::new(c.with_sizer(tok));
                blocks(text)
                    .into_iter()
                    .flat_map(|b| splitter.chunks(b).map(str::to_owned).collect::<Vec<_>>())
                    .collect()
            }
            Err(_) => vec![text.to_owned()],
        },
        None => match ChunkConfig::new(size * 4).with_overlap(overlap * 4) {
            Ok(c) => {
                let splitter = TextSplitter::new(c);
                blocks(text)
                    .into_iter()
                    .flat_map(|b| splitter.chunks(b).map(str::to_owned).collect::<Vec<_>>())
                    .collect()
            }
            Err(_) => vec![text.to_owned()],
        },
    };
    pieces
        .into_iter()
        .filter(|c| !c.trim().is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cover_the_text_exactly_and_are_bounded() {
        let para = "word ".repeat(300); // 1,500 characters
        let text = (0..40)
            .map(|_| para.as_str())
            .collect::<Vec<_>>()
            .join("\n\n");
        let b = blocks(&text);
        assert_eq!(b.concat(), text);
        assert!(b.iter().all(|x| x.chars().count() <= BLOCK_CHARS));
        assert!(b.len() >= 4);
        // One huge paragraph is cut anyway, at character boundaries.
        let huge = "é".repeat(40_000);
        let b = blocks(&huge);
        assert_eq!(b.concat(), huge);
        assert!(b.iter().all(|x| x.chars().count() <= BLOCK_CHARS));
    }

    /// The result of `f` and its fastest time of three runs: a ratio of times is
    /// compared, and one run descheduled on a busy machine would decide it alone.
    fn fastest<T>(mut f: impl FnMut() -> T) -> (T, std::time::Duration) {
        let mut best = std::time::Duration::MAX;
        let mut out = None;
        for _ in 0..3 {
            let t = std::time::Instant::now();
            out = Some(f());
            best = best.min(t.elapsed());
        }
        (out.expect("ran"), best)
    }

    /// With the model's tokenizer as the sizer (the case that took 9.2 s for 2 MB when
    /// split in one piece): 10× the text costs about 10× the time.
    #[test]
    fn token_sized_chunking_is_linear_in_the_size_of_the_document() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("models/all-MiniLM-L6-v2/tokenizer.json");
        let mut tok = tokenizers::Tokenizer::from_file(&path).unwrap_or_else(|_| {
            panic!("{} is missing: run scripts/fetch-model.sh", path.display())
        });
        // As the embedder configures it: no fixed padding, truncation above the chunk size.
        tok.with_padding(None);
        tok.with_truncation(Some(tokenizers::TruncationParams {
            max_length: 256,
            ..Default::default()
        }))
        .unwrap();
        let para =
            "Expenses are reimbursed within thirty days when submitted with receipts. ".repeat(12);
        // One long run of sentences without blank lines: the splitter's worst case.
        let doc = |n: usize| (0..n).map(|_| para.as_str()).collect::<Vec<_>>().join(" ");
        let (small, big) = (doc(60), doc(600)); // ~53 kB and ~530 kB
        let (a, t_small) = fastest(|| split(&small, 200, 30, Some(&tok)).len());
        let (b, t_big) = fastest(|| split(&big, 200, 30, Some(&tok)).len());
        eprintln!("{a} chunks in {t_small:?}; {b} chunks in {t_big:?}");
        assert!(b >= 9 * a);
        assert!(
            t_big < t_small * 20 + std::time::Duration::from_millis(100),
            "superlinear: {t_small:?} for 53 kB, {t_big:?} for 530 kB"
        );
    }

    #[test]
    fn chunking_is_linear_in_the_size_of_the_document() {
        let para = "The quick brown fox jumps over the lazy dog. ".repeat(20);
        let doc = |n: usize| {
            (0..n)
                .map(|_| para.as_str())
                .collect::<Vec<_>>()
                .join("\n\n")
        };
        let small = doc(100);
        let big = doc(1000);
        let (a, t_small) = fastest(|| split(&small, 200, 30, None).len());
        let (b, t_big) = fastest(|| split(&big, 200, 30, None).len());
        assert!(b >= 9 * a, "{a} vs {b} chunks");
        // 10x the text in well under 30x the time (superlinear splitting took ~100x).
        assert!(
            t_big < t_small * 30 + std::time::Duration::from_millis(50),
            "{t_small:?} vs {t_big:?}"
        );
    }
}
