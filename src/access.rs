//! Who may do what: the capability types every lower layer takes. A leaf module: it
//! imports nothing else of palisade, so the store, the services and the HTTP face can
//! all depend on it without a cycle.
//!
//! * [`Principal`] — a verified caller. Made only by `auth` after a token verified and
//!   its session was found live (`tests/layering.rs` keeps it that way).
//! * [`AccessScope`] — what a principal may retrieve: a tenant and visibility labels.
//!   Made only from a `Principal`; the only filter retrieval accepts.
//! * [`ThreadOwner`] — the key of every thread query: (tenant, owner[, session]).
//! * [`DocumentAdmin`] — the `documents:write` capability over one tenant: list every
//!   document's metadata, ingest, delete. Made from a principal holding a writer role,
//!   or by the operator's CLI ([`Operator`]).
//! * [`Caller`] — whether a principal is a person, a service account (an API key), or
//!   a service acting for a person (RFC 8693 token exchange); [`ServiceProfile`] — what
//!   a service account may use.
//! * [`Acl`] and [`Labels`] — a document's ACL and the visibility labels derived from it
//!   (by [`Labels::of`] only: labels are never passed in separately).

use serde::{Deserialize, Serialize};

/// The role that administers users and reads the audit trail of its tenant.
pub const ADMIN_ROLE: &str = "admin";

/// What a live session grants: its roles and groups. Shared (not copied) between the
/// session cache and every principal made from it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Grants {
    pub roles: Vec<String>,
    pub groups: Vec<String>,
}

/// What a service account may use besides its roles and groups: its own allowances,
/// stored with the account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceProfile {
    /// The models it may call (empty: whichever its roles allow).
    #[serde(default)]
    pub models: Vec<String>,
    /// Its own chat requests per minute (0: the per-user default).
    #[serde(default)]
    pub requests_per_minute: u32,
    /// Its own model tokens per UTC day (0: the per-user default).
    #[serde(default)]
    pub tokens_per_day: u64,
    /// It may exchange a user's token for one that acts as that user.
    #[serde(default)]
    pub act_for_users: bool,
}

/// Who stands behind a principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A person, through a session of their own.
    Person,
    /// A service account, through one of its API keys (the key id).
    Service {
        key_id: String,
        profile: std::sync::Arc<ServiceProfile>,
    },
    /// A service acting for the person the principal names (an exchanged token).
    OnBehalf(Actor),
    /// An application the person approved (an OAuth client), through the grant's token.
    Client { client_id: String },
}

/// The service that acts for a person, and the key it authenticated with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub subject: String,
    pub username: String,
    pub key_id: String,
}

/// A verified caller. Exists only after a token was verified and its session found live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    tenant: String,
    subject: String,
    username: String,
    grants: std::sync::Arc<Grants>,
    session_id: String,
    caller: Caller,
}

impl Principal {
    /// Only the token verifier calls this (`auth`); nothing else may mint identities.
    pub(crate) fn verified(
        tenant: String,
        subject: String,
        username: String,
        grants: std::sync::Arc<Grants>,
        session_id: String,
    ) -> Self {
        Self {
            tenant,
            subject,
            username,
            grants,
            session_id,
            caller: Caller::Person,
        }
    }

    /// The same principal reached through `caller` (only the verifier says so).
    pub(crate) fn through(mut self, caller: Caller) -> Self {
        self.caller = caller;
        self
    }

    /// For the crate's own unit tests, which need principals without a running server.
    #[cfg(test)]
    pub(crate) fn for_tests(tenant: &str, username: &str, roles: &[&str], groups: &[&str]) -> Self {
        Self::verified(
            tenant.into(),
            format!("id-{username}"),
            username.into(),
            std::sync::Arc::new(Grants {
                roles: roles.iter().map(|s| s.to_string()).collect(),
                groups: groups.iter().map(|s| s.to_string()).collect(),
            }),
            "test-session".into(),
        )
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }
    pub fn subject(&self) -> &str {
        &self.subject
    }
    pub fn username(&self) -> &str {
        &self.username
    }
    pub fn roles(&self) -> &[String] {
        &self.grants.roles
    }
    pub fn groups(&self) -> &[String] {
        &self.grants.groups
    }
    pub fn session_id(&self) -> &str {
        &self.session_id
    }
    pub fn has_role(&self, role: &str) -> bool {
        self.roles().iter().any(|r| r == role)
    }
    pub fn caller(&self) -> &Caller {
        &self.caller
    }
    /// A person through their own session: the only caller for session and admin
    /// routes.
    pub fn is_person(&self) -> bool {
        self.caller == Caller::Person
    }
    /// The service acting for this person, if one is.
    pub fn actor(&self) -> Option<&Actor> {
        match &self.caller {
            Caller::OnBehalf(a) => Some(a),
            _ => None,
        }
    }
    /// A service account's own allowances.
    pub fn service(&self) -> Option<&ServiceProfile> {
        match &self.caller {
            Caller::Service { profile, .. } => Some(profile),
            _ => None,
        }
    }
    /// Whether the caller's own model list lets it use `model` (roles are checked apart).
    pub fn allows_model(&self, model: &str) -> bool {
        self.service()
            .is_none_or(|s| s.models.is_empty() || s.models.iter().any(|m| m == model))
    }

    /// What this principal may retrieve: its tenant and its visibility labels, all taken
    /// from the verified token. The only way to make an [`AccessScope`].
    pub fn access_scope(&self) -> AccessScope {
        let mut labels = Vec::with_capacity(2 + self.roles().len() + self.groups().len());
        labels.push(PUBLIC_LABEL.to_owned());
        labels.push(user_label(&self.username));
        labels.extend(self.roles().iter().map(|r| role_label(r)));
        labels.extend(self.groups().iter().map(|g| group_label(g)));
        labels.sort();
        labels.dedup();
        AccessScope {
            tenant: self.tenant.clone(),
            labels,
        }
    }

    /// The key of this principal's thread queries under `strict` (session) binding or not.
    pub fn thread_owner(&self, strict: bool) -> ThreadOwner {
        ThreadOwner {
            tenant: self.tenant.clone(),
            user: self.subject.clone(),
            session: self.session_id.clone(),
            strict,
        }
    }

    /// The `documents:write` capability over this principal's own tenant, if it holds
    /// one of `writer_roles`.
    pub fn document_admin(&self, writer_roles: &[String]) -> Option<DocumentAdmin> {
        writer_roles
            .iter()
            .any(|r| self.has_role(r))
            .then(|| DocumentAdmin {
                tenant: self.tenant.clone(),
                actor: self.subject.clone(),
            })
    }
}

/// The one form of a username used for lookups, throttling and audit: trimmed and
/// lower-cased, so `ALICE` and `alice` are the same account and the same counter.
pub fn canonical_username(s: &str) -> String {
    s.trim().to_lowercase()
}

/// Names of users, tenants, roles and groups: 1–64 characters from `[A-Za-z0-9_.@:-]`.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@' | ':'))
}

/// A document readable by everyone in its tenant carries this label.
pub const PUBLIC_LABEL: &str = "public";

pub fn role_label(role: &str) -> String {
    format!("role:{role}")
}
pub fn group_label(group: &str) -> String {
    format!("group:{group}")
}
pub fn user_label(username: &str) -> String {
    format!("user:{username}")
}

/// The retrieval filter of one caller: a tenant and a set of visibility labels. A chunk
/// is visible iff it is in the tenant and its document's ACL shares a label with the
/// scope. No public constructor: see [`Principal::access_scope`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AccessScope {
    tenant: String,
    labels: Vec<String>,
}

impl AccessScope {
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The in-code re-check applied to every retrieved chunk before it may enter a
    /// prompt or a response. An empty label list permits nothing.
    pub fn permits(&self, tenant: &str, acl_labels: &[String]) -> bool {
        tenant == self.tenant && acl_labels.iter().any(|l| self.labels.contains(l))
    }
}

/// The ownership key of a thread: every thread query carries it next to the id.
/// The creating session is always recorded; `strict` (session binding) also requires
/// it on every read and write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadOwner {
    tenant: String,
    user: String,
    session: String,
    strict: bool,
}

impl ThreadOwner {
    pub fn tenant(&self) -> &str {
        &self.tenant
    }
    pub fn user(&self) -> &str {
        &self.user
    }
    /// The session that creates threads under this key.
    pub fn session(&self) -> &str {
        &self.session
    }
    /// The session every query must match, under strict binding only.
    pub fn required_session(&self) -> Option<&str> {
        self.strict.then_some(self.session.as_str())
    }
}

/// The `documents:write` capability over one tenant: ingest, list every document's
/// metadata (not its text), delete any document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentAdmin {
    tenant: String,
    actor: String,
}

impl DocumentAdmin {
    pub fn tenant(&self) -> &str {
        &self.tenant
    }
    /// Who acts: a user id, or `cli` for the operator.
    pub fn actor(&self) -> &str {
        &self.actor
    }
}

/// The operator at the machine: the CLI, which works on the store directly and may act
/// in any tenant. Made by `app`'s CLI operations (and benchmarks), never on an HTTP path:
/// `tests/layering.rs` fails if anything under `src/http` names it.
#[derive(Debug)]
pub struct Operator(());

impl Operator {
    pub fn local_cli() -> Self {
        Operator(())
    }

    pub fn document_admin(&self, tenant: &str) -> DocumentAdmin {
        DocumentAdmin {
            tenant: tenant.to_owned(),
            actor: "cli".to_owned(),
        }
    }
}

/// Who may read a document. It must grant someone: `public`, or at least one role,
/// group or user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Acl {
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// User ids.
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub public: bool,
}

/// The sorted, de-duplicated visibility labels of an [`Acl`]; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels(Vec<String>);

impl Labels {
    /// The labels `acl` grants, or `None` if it names nobody (which must never become
    /// "everybody").
    pub fn of(acl: &Acl) -> Option<Labels> {
        let mut labels: Vec<String> = acl
            .roles
            .iter()
            .map(|r| role_label(r))
            .chain(acl.groups.iter().map(|g| group_label(g)))
            .chain(acl.users.iter().map(|u| user_label(u)))
            .collect();
        if acl.public {
            labels.push(PUBLIC_LABEL.to_owned());
        }
        labels.sort();
        labels.dedup();
        (!labels.is_empty()).then_some(Labels(labels))
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acls_naming_nobody_have_no_labels() {
        assert_eq!(Labels::of(&Acl::default()), None);
        let hr = Acl {
            roles: vec!["hr".into()],
            ..Acl::default()
        };
        assert_eq!(Labels::of(&hr).unwrap().as_slice(), ["role:hr"]);
    }

    #[test]
    fn an_empty_scope_permits_nothing() {
        let p = Principal::for_tests("acme", "nora", &[], &[]);
        let s = p.access_scope();
        assert!(!s.permits("acme", &[]));
        assert!(!s.permits("acme", &["role:hr".into()]));
        assert!(s.permits("acme", &["public".into()]));
        assert!(!s.permits("globex", &["public".into()]));
    }

    #[test]
    fn only_writer_roles_make_a_document_admin() {
        let writers = vec!["admin".to_owned()];
        let alice = Principal::for_tests("acme", "alice", &["employee"], &[]);
        assert!(alice.document_admin(&writers).is_none());
        let adam = Principal::for_tests("acme", "adam", &["admin"], &[]);
        assert_eq!(adam.document_admin(&writers).unwrap().tenant(), "acme");
    }
}
