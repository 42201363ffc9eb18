//! The built-in responder used when no model upstream is configured: it quotes the
//! passages retrieval found (which are already within the caller's scope), clearly
//! labelled as such, so a newcomer sees the access rules at work without a model.

use crate::model::ChunkHit;

/// The built-in responder's answer: the best passages, quoted, with their sources.
pub fn answer(hits: &[ChunkHit]) -> String {
    if hits.is_empty() {
        return "[palisade extractive responder] No language model is configured, and no passage you may read matches the question.".into();
    }
    let mut s = String::from(
        "[palisade extractive responder] No language model is configured; these are the most relevant passages you may read:\n",
    );
    for (i, h) in hits.iter().take(3).enumerate() {
        let excerpt: String = h.text.chars().take(600).collect();
        s.push_str(&format!(
            "\n{}. \u{201c}{}\u{201d} \u{2014} {}\n",
            i + 1,
            excerpt.trim(),
            h.title
        ));
    }
    s
}
