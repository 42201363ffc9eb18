//! The audit trail's records and their storage.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::StoreResult;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    LoginSucceeded,
    LoginFailed,
    LoginThrottled,
    RefreshRotated,
    RefreshReuseDetected,
    Logout,
    SessionRevoked,
    TokenRejected,
    UserCreated,
    UserDisabled,
    UserEnabled,
    ThreadAccessDenied,
    UserAccessChanged,
    DocumentCreated,
    DocumentDeleted,
    Retrieval,
    /// The model (or an MCP client) called palisade's `search_documents` tool.
    ToolCall,
}

impl AuditKind {
    pub fn as_str(self) -> &'static str {
        use AuditKind::*;
        match self {
            LoginSucceeded => "login_succeeded",
            LoginFailed => "login_failed",
            LoginThrottled => "login_throttled",
            RefreshRotated => "refresh_rotated",
            RefreshReuseDetected => "refresh_reuse_detected",
            Logout => "logout",
            SessionRevoked => "session_revoked",
            TokenRejected => "token_rejected",
            UserCreated => "user_created",
            UserDisabled => "user_disabled",
            UserEnabled => "user_enabled",
            ThreadAccessDenied => "thread_access_denied",
            UserAccessChanged => "user_access_changed",
            DocumentCreated => "document_created",
            DocumentDeleted => "document_deleted",
            Retrieval => "retrieval",
            ToolCall => "tool_call",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Unix milliseconds.
    pub ts: i64,
    pub kind: AuditKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The user id the event is about, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The username as given (login failures for unknown users have no subject).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// A fixed machine-readable reason, e.g. `expired`, `bad_password`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The object the event is about (a thread id), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The `x-request-id` of the request that caused the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// For an aggregated event: how many more of the same kind happened in its window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

impl AuditEvent {
    pub fn new(kind: AuditKind) -> Self {
        Self {
            ts: crate::timeutil::now_ms(),
            kind,
            tenant: None,
            subject: None,
            username: None,
            session_id: None,
            ip: None,
            reason: None,
            resource: None,
            request_id: None,
            count: None,
        }
    }
    pub fn tenant(mut self, t: impl Into<String>) -> Self {
        self.tenant = Some(t.into());
        self
    }
    pub fn subject(mut self, s: impl Into<String>) -> Self {
        self.subject = Some(s.into());
        self
    }
    pub fn username(mut self, u: impl Into<String>) -> Self {
        // Usernames come from request bodies: bound their size in the trail.
        let mut u: String = u.into();
        if u.len() > 128 {
            let mut cut = 128;
            while !u.is_char_boundary(cut) {
                cut -= 1;
            }
            u.truncate(cut);
        }
        self.username = Some(u);
        self
    }
    pub fn session(mut self, s: impl Into<String>) -> Self {
        self.session_id = Some(s.into());
        self
    }
    pub fn ip(mut self, ip: Option<std::net::IpAddr>) -> Self {
        self.ip = ip.map(|i| i.to_string());
        self
    }
    pub fn resource(mut self, r: impl Into<String>) -> Self {
        self.resource = Some(r.into());
        self
    }
    /// Where the request came from: its client address and request id.
    pub fn client(mut self, c: &crate::access::ClientInfo) -> Self {
        self.ip = c.ip.map(|i| i.to_string());
        self.request_id = c.request_id.clone();
        self
    }
    pub fn reason(mut self, r: &'static str) -> Self {
        self.reason = Some(r.to_owned());
        self
    }
}

#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// `None` only for the operator's CLI: every tenant, including events no tenant
    /// could be named for.
    pub tenant: Option<String>,
    pub kind: Option<String>,
    pub request_id: Option<String>,
    pub limit: u32,
}

#[async_trait]
pub trait AuditStore: Send + Sync {
    async fn append(&self, event: &AuditEvent) -> StoreResult<()>;
    /// Newest first.
    async fn query(&self, q: AuditQuery) -> StoreResult<Vec<AuditEvent>>;
    /// Deletes events older than `before` (the configured retention). Returns how many.
    async fn prune(&self, before: i64) -> StoreResult<u64>;
}
