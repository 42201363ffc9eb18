//! Embeddings: a local sentence-transformers BERT (all-MiniLM-L6-v2 layout) run
//! in-process with candle, an OpenAI-compatible `/v1/embeddings` upstream, or a
//! deterministic hashing embedder for development and tests.

use async_trait::async_trait;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("embedding model: {0}")]
    Model(String),
    #[error("embedding upstream failed")]
    Upstream,
}

#[async_trait]
pub trait Embedder: Send + Sync {
    fn dim(&self) -> usize;
    fn name(&self) -> &str;
    /// One L2-normalised vector per input text.
    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError>;
    /// The tokenizer, when the model has one (for token-sized chunking).
    fn tokenizer(&self) -> Option<&tokenizers::Tokenizer> {
        None
    }
}

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// Lower-cased alphanumeric words of `text`.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// Feature hashing of words into a fixed number of dimensions. Deterministic and
/// dependency-free: texts that share words are near, others are not. Not semantic.
pub struct HashingEmbedder {
    dim: usize,
}

impl HashingEmbedder {
    pub fn new(dim: usize) -> Self {
        Self { dim }
    }

    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0f32; self.dim];
        for w in words(text) {
            // FNV-1a: a hash for bucketing, not for security.
            let mut h: u64 = 0xcbf29ce484222325;
            for b in w.bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x100000001b3);
            }
            let idx = (h % self.dim as u64) as usize;
            v[idx] += if (h >> 63) == 0 { 1.0 } else { -1.0 };
        }
        normalise(&mut v);
        v
    }
}

#[async_trait]
impl Embedder for HashingEmbedder {
    fn dim(&self) -> usize {
        self.dim
    }
    fn name(&self) -> &str {
        "hash"
    }
    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        // A question is one short text; a document is hundreds: off the async workers.
        if texts.len() <= 4 {
            return Ok(texts.iter().map(|t| self.embed_one(t)).collect());
        }
        let me = HashingEmbedder { dim: self.dim };
        tokio::task::spawn_blocking(move || texts.iter().map(|t| me.embed_one(t)).collect())
            .await
            .map_err(|e| EmbedError::Model(e.to_string()))
    }
}

/// all-MiniLM-L6-v2 in candle: mean pooling over the attention mask, L2-normalised,
/// inputs truncated at 256 tokens.
pub struct MiniLm {
    inner: Arc<MiniLmInner>,
}

struct MiniLmInner {
    model: candle_transformers::models::bert::BertModel,
    tokenizer: tokenizers::Tokenizer,
    dim: usize,
}

pub const MAX_TOKENS: usize = 256;

impl MiniLm {
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        use candle_core::{DType, Device};
        use candle_nn::VarBuilder;
        use candle_transformers::models::bert::{BertModel, Config};
        let err = |m: String| EmbedError::Model(m);
        let config: Config = serde_json::from_slice(
            &std::fs::read(dir.join("config.json"))
                .map_err(|e| err(format!("config.json: {e}")))?,
        )
        .map_err(|e| err(format!("config.json: {e}")))?;
        let mut tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| err(format!("tokenizer.json: {e}")))?;
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| err(format!("tokenizer: {e}")))?;
        tokenizer.with_padding(Some(tokenizers::PaddingParams {
            strategy: tokenizers::PaddingStrategy::BatchLongest,
            ..Default::default()
        }));
        let weights = dir.join("model.safetensors");
        // SAFETY: the weights file is memory-mapped read-only; it must not be modified
        // while the process runs (it lives in the operator's model directory).
        let vb =
            unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &Device::Cpu) }
                .map_err(|e| err(format!("model.safetensors: {e}")))?;
        let dim = config.hidden_size;
        let model = BertModel::load(vb, &config).map_err(|e| err(format!("model: {e}")))?;
        Ok(Self {
            inner: Arc::new(MiniLmInner {
                model,
                tokenizer,
                dim,
            }),
        })
    }
}

impl MiniLmInner {
    fn embed_blocking(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        use candle_core::{DType, Device, Tensor};
        let err = |e: candle_core::Error| EmbedError::Model(e.to_string());
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| EmbedError::Model(e.to_string()))?;
        let dev = Device::Cpu;
        let ids: Vec<Tensor> = enc
            .iter()
            .map(|e| Tensor::new(e.get_ids(), &dev))
            .collect::<Result<_, _>>()
            .map_err(err)?;
        let mask: Vec<Tensor> = enc
            .iter()
            .map(|e| Tensor::new(e.get_attention_mask(), &dev))
            .collect::<Result<_, _>>()
            .map_err(err)?;
        let ids = Tensor::stack(&ids, 0).map_err(err)?;
        let mask = Tensor::stack(&mask, 0).map_err(err)?;
        let types = ids.zeros_like().map_err(err)?;
        let hidden = self.model.forward(&ids, &types, Some(&mask)).map_err(err)?;
        let m = mask
            .to_dtype(DType::F32)
            .map_err(err)?
            .unsqueeze(2)
            .map_err(err)?;
        let summed = hidden.broadcast_mul(&m).map_err(err)?.sum(1).map_err(err)?;
        let counts = m.sum(1).map_err(err)?;
        let pooled = summed.broadcast_div(&counts).map_err(err)?;
        let mut out: Vec<Vec<f32>> = pooled.to_vec2().map_err(err)?;
        out.iter_mut().for_each(|v| normalise(v));
        Ok(out)
    }
}

#[async_trait]
impl Embedder for MiniLm {
    fn dim(&self) -> usize {
        self.inner.dim
    }
    fn name(&self) -> &str {
        "all-MiniLM-L6-v2"
    }
    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let inner = self.inner.clone();
        let mut out = Vec::with_capacity(texts.len());
        // Batches of 16 keep padding waste and peak memory small.
        for batch in texts.chunks(16) {
            let batch = batch.to_vec();
            let inner = inner.clone();
            let v = tokio::task::spawn_blocking(move || inner.embed_blocking(&batch))
                .await
                .map_err(|e| EmbedError::Model(e.to_string()))??;
            out.extend(v);
        }
        Ok(out)
    }
    fn tokenizer(&self) -> Option<&tokenizers::Tokenizer> {
        Some(&self.inner.tokenizer)
    }
}

/// An OpenAI-compatible `/v1/embeddings` upstream.
pub struct OpenAiEmbedder {
    http: reqwest::Client,
    url: String,
    model: String,
    dim: usize,
}

impl OpenAiEmbedder {
    pub fn new(
        base_url: &str,
        model: &str,
        dim: usize,
        api_key: Option<&crate::config::Secret>,
    ) -> Result<Self, EmbedError> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = api_key {
            let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", key.expose()))
                .map_err(|_| {
                    EmbedError::Model("the embeddings API key is not a valid header value".into())
                })?;
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(60))
            // Never follow a redirect with the documents' text.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|_| EmbedError::Upstream)?;
        Ok(Self {
            http,
            url: format!("{}/embeddings", base_url.trim_end_matches('/')),
            model: model.to_owned(),
            dim,
        })
    }
}

#[async_trait]
impl Embedder for OpenAiEmbedder {
    fn dim(&self) -> usize {
        self.dim
    }
    fn name(&self) -> &str {
        &self.model
    }
    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        #[derive(serde::Deserialize)]
        struct Resp {
            data: Vec<Item>,
        }
        #[derive(serde::Deserialize)]
        struct Item {
            embedding: Vec<f32>,
        }
        let resp = self
            .http
            .post(&self.url)
            .json(&serde_json::json!({"model": self.model, "input": texts}))
            .send()
            .await
            .map_err(|_| EmbedError::Upstream)?;
        if !resp.status().is_success() {
            return Err(EmbedError::Upstream);
        }
        let r: Resp = resp.json().await.map_err(|_| EmbedError::Upstream)?;
        if r.data.len() != texts.len() || r.data.iter().any(|i| i.embedding.len() != self.dim) {
            return Err(EmbedError::Upstream);
        }
        Ok(r.data
            .into_iter()
            .map(|i| {
                let mut v = i.embedding;
                normalise(&mut v);
                v
            })
            .collect())
    }
}
