//! The words every layer shares: a conversation's messages and tool calls, the passages
//! retrieval finds, token estimates, and security events with their hash chain.
//!
//! A leaf: plain data and the rules that belong to the data itself (a chain link's
//! hash, a token estimate). Persistence lives in `store`, the wire formats in `llm` and
//! `http`, the audit rules in `audit`.

mod audit;
mod document;
mod health;
mod message;
mod passage;

pub use audit::{AuditEvent, AuditKind, AuditRecord, ChainFault, ChainHash, ChainReport};
pub use document::{DocumentMeta, DocumentRecord, IngestState};
pub use health::{Check, Health, StoreError, probe};
pub use message::{
    Citation, FunctionCall, MessageRecord, Provenance, Role, ThreadRecord, ToolCall, ToolData,
    ToolKind, approx_tokens, without_retried,
};
pub use passage::ChunkHit;

/// Where a request came from, for throttling and audit: the client address (the
/// socket's, or from `X-Forwarded-For` only behind a trusted proxy), its user agent
/// and the request id every log line and audit event of the request carries.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: Option<std::net::IpAddr>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
}
