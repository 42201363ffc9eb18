//! Security events, the hash chain that links them, and what a walk of the chain can
//! find wrong. What an event *is*; where it is kept is the store's business.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// A request refused because a user's or tenant's rate or token budget is spent.
    BudgetExceeded,
    /// Texts embedded for a caller through `POST /v1/embeddings`.
    Embeddings,
    /// An admin proposed granting a privileged role (the first of two admins). The
    /// subject is the grantee, the resource the proposal, the session the admin's.
    GrantProposed,
    /// A second admin approved a proposed grant: the role is the user's. Recorded as
    /// the proposal is.
    GrantApproved,
    /// Separation of duties refused an access change (the reason says which rule).
    AccessChangeRefused,
    /// An API key was made for a service account (the session is `key:<id>`).
    ApiKeyCreated,
    /// An API key was revoked.
    ApiKeyRevoked,
    /// A service exchanged a user's token for one acting as that user (RFC 8693): the
    /// subject is the user, the actor the service.
    TokenExchanged,
    /// A caller searched the documents (`POST /v1/search`): the passages returned to
    /// them, like a tool call's, in the lineage.
    Search,
    /// An OAuth client registered itself (RFC 7591); the resource is its id.
    ClientRegistered,
    /// A user approved an OAuth client (the resource); the reason names the resource.
    ClientApproved,
    /// A user refused an OAuth client.
    ClientDenied,
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
            BudgetExceeded => "budget_exceeded",
            Embeddings => "embeddings",
            GrantProposed => "grant_proposed",
            GrantApproved => "grant_approved",
            AccessChangeRefused => "access_change_refused",
            ApiKeyCreated => "api_key_created",
            ApiKeyRevoked => "api_key_revoked",
            TokenExchanged => "token_exchanged",
            Search => "search",
            ClientRegistered => "client_registered",
            ClientApproved => "client_approved",
            ClientDenied => "client_denied",
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
    /// The thread the event happened in (retrieval for a thread's turn).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
    /// Data lineage: the documents whose passages went to the model (or an MCP client)
    /// in this event, sorted, without repeats. Ids only, never contents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub documents: Vec<String>,
    /// Who acted for the subject: a service account (a token it exchanged, RFC 8693),
    /// or `oauth:<client id>` for an application the subject approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
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
            thread: None,
            documents: Vec::new(),
            actor: None,
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
    pub fn client(mut self, c: &super::ClientInfo) -> Self {
        self.ip = c.ip.map(|i| i.to_string());
        self.request_id = c.request_id.clone();
        self
    }
    pub fn reason(mut self, r: &'static str) -> Self {
        self.reason = Some(r.to_owned());
        self
    }
    pub fn thread(mut self, t: Option<&str>) -> Self {
        self.thread = t.map(str::to_owned);
        self
    }
    /// Who made the event: the principal's tenant, subject and session, and the service
    /// acting for it, if one is.
    pub fn by(mut self, p: &crate::access::Principal) -> Self {
        self.tenant = Some(p.tenant().to_owned());
        self.subject = Some(p.subject().to_owned());
        self.session_id = Some(p.session_id().to_owned());
        self.actor = match p.caller() {
            crate::access::Caller::OnBehalf(a) => Some(a.subject.clone()),
            crate::access::Caller::Client { client_id } => Some(format!("oauth:{client_id}")),
            _ => None,
        };
        self
    }
    /// The documents put in front of the model; sorted and deduplicated here.
    pub fn documents<'a>(mut self, ids: impl IntoIterator<Item = &'a str>) -> Self {
        let mut d: Vec<String> = ids.into_iter().map(str::to_owned).collect();
        d.sort();
        d.dedup();
        self.documents = d;
        self
    }

    /// The record's link in the hash chain: SHA-256 over a domain label, the previous
    /// record's hash, the record's position and every field in a fixed order, each
    /// length-prefixed (an absent field is distinguishable from an empty one), so that
    /// no two different records, or positions, share an encoding.
    pub fn chain_hash(&self, prev: &ChainHash, seq: i64) -> ChainHash {
        use sha2::{Digest, Sha256};
        fn field(h: &mut Sha256, v: Option<&str>) {
            match v {
                None => h.update([0u8]),
                Some(s) => {
                    h.update([1u8]);
                    h.update((s.len() as u64).to_be_bytes());
                    h.update(s.as_bytes());
                }
            }
        }
        let mut h = Sha256::new();
        h.update(b"palisade audit chain v1\0");
        h.update(prev.0);
        h.update(seq.to_be_bytes());
        h.update(self.ts.to_be_bytes());
        field(&mut h, Some(self.kind.as_str()));
        for v in [
            &self.tenant,
            &self.subject,
            &self.username,
            &self.session_id,
            &self.ip,
            &self.reason,
            &self.resource,
            &self.request_id,
            &self.thread,
        ] {
            field(&mut h, v.as_deref());
        }
        match self.count {
            None => h.update([0u8]),
            Some(n) => {
                h.update([1u8]);
                h.update(n.to_be_bytes());
            }
        }
        h.update((self.documents.len() as u64).to_be_bytes());
        for d in &self.documents {
            field(&mut h, Some(d));
        }
        // Added after the chain's first records: hashed only when present, so that
        // records written before it still verify.
        if let Some(actor) = &self.actor {
            h.update(b"actor");
            field(&mut h, Some(actor));
        }
        ChainHash(h.finalize().into())
    }
}

/// A SHA-256 link of the audit hash chain.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct ChainHash(pub [u8; 32]);

impl ChainHash {
    /// The `prev` of the first record: all zeroes.
    pub const GENESIS: ChainHash = ChainHash([0; 32]);

    pub fn from_slice(b: &[u8]) -> Option<Self> {
        Some(Self(b.try_into().ok()?))
    }

    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Debug for ChainHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.hex())
    }
}

impl Serialize for ChainHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}

/// An event as stored: with its place in the hash chain. Events written before the
/// chain existed have none (`seq` absent).
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    /// The record's place in the hash chain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    #[serde(flatten)]
    pub event: AuditEvent,
    #[serde(skip)]
    pub prev_hash: Option<ChainHash>,
    /// SHA-256 over the previous record's hash and this record, hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<ChainHash>,
}

/// What `verify` found wrong first, naming the record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainFault {
    #[error("the chain head is missing")]
    HeadMissing,
    #[error("record {seq} is missing (deleted, or its position was changed)")]
    Missing { seq: i64 },
    #[error("record {seq} does not match its hash (edited)")]
    Edited { seq: i64 },
    #[error("record {seq} does not link to record {}", seq - 1)]
    Unlinked { seq: i64 },
    #[error(
        "the chain ends at record {found}, but its head says {head} (records deleted from the end, or the head edited)"
    )]
    Truncated { found: i64, head: i64 },
    #[error("the lineage index has {found} entries, the chained records name {expected}")]
    LineageIndex { expected: u64, found: u64 },
}

impl ChainFault {
    /// The first record that failed, where one can be named.
    pub fn seq(&self) -> Option<i64> {
        match self {
            Self::Missing { seq } | Self::Edited { seq } | Self::Unlinked { seq } => Some(*seq),
            Self::Truncated { found, .. } => Some(found + 1),
            Self::HeadMissing | Self::LineageIndex { .. } => None,
        }
    }
}

/// The outcome of walking the whole chain.
#[derive(Debug, Clone, Serialize)]
pub struct ChainReport {
    /// Chained records checked.
    pub records: u64,
    /// The first position still kept (earlier ones were pruned by retention).
    pub first_seq: i64,
    pub last_seq: i64,
    /// The head's hash: record it elsewhere to detect a rewrite of the whole chain.
    pub head_hash: String,
}
