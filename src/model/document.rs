//! A document as its readers and its administrators see it.

use crate::access::Acl;

#[derive(Debug, Clone)]
pub struct DocumentRecord {
    pub id: String,
    pub title: String,
    pub text: String,
    pub acl: Acl,
    pub created_at: i64,
    pub created_by: String,
    pub chunk_count: u32,
}

/// What a document administrator sees of any document of the tenant: never its text.
#[derive(Debug, Clone)]
pub struct DocumentMeta {
    pub id: String,
    pub title: String,
    pub acl: Acl,
    pub created_at: i64,
    pub created_by: String,
    pub chunk_count: u32,
}
