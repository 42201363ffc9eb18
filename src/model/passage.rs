//! A retrieved passage: what retrieval hands the prompt and the model's tools.

/// A retrieved chunk, with what the in-code re-check needs.
#[derive(Debug, Clone)]
pub struct ChunkHit {
    pub chunk_id: String,
    pub document_id: String,
    pub title: String,
    pub text: String,
    pub tenant: String,
    pub labels: Vec<String>,
    /// Rank-specific score: L2 distance of unit vectors (vector) or BM25 (text); lower
    /// is better. Replaced by the fused score after fusion.
    pub score: f64,
}
