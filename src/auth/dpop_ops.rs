//! DPoP in the auth service: proofs with token requests (login, refresh, ID-token
//! exchange) bind the session and its access tokens to the client's key; proofs with
//! API requests prove possession of it. A proof's `jti` is spent once per proof window in
//! the shared limit store (every node sees it); the optional server nonce is stateless
//! (a keyed digest of the current time slot, so every node that shares the token keys
//! accepts it).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

use super::dpop::{MAX_CLOCK_AHEAD_SECS, Proof, ProofFor, verify_proof};
use super::{AuthError, AuthService, ClientInfo};
use crate::audit::{AuditEvent, AuditKind};
use crate::config::DpopMode;
use crate::secret::constant_time_eq;
use crate::store::{Admission, Limit, LimitKind};

/// How a request authenticates: its token, under which scheme, and its DPoP proof.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    pub token: Option<&'a str>,
    pub scheme: Scheme,
    /// The `DPoP` header, if exactly one was sent.
    pub proof: Option<&'a str>,
    pub method: &'a str,
    /// The request path (the proof's `htu` is this path on the public origin).
    pub path: &'a str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Bearer,
    Dpop,
}

impl<'a> Credentials<'a> {
    /// A plain bearer token (SDK-style callers, benchmarks).
    pub fn bearer(token: &'a str) -> Self {
        Self {
            token: Some(token),
            scheme: Scheme::Bearer,
            proof: None,
            method: "GET",
            path: "/",
        }
    }
}

/// What the client is told when DPoP refuses a request (RFC 9449 §7.1, §8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DpopChallenge {
    /// The proof is missing, malformed, for another request, stale or replayed.
    InvalidProof,
    /// The token's binding and the way it was presented disagree.
    InvalidToken,
    /// The proof must carry this server nonce.
    UseNonce(String),
}

impl DpopChallenge {
    pub fn error(&self) -> &'static str {
        match self {
            DpopChallenge::InvalidProof => "invalid_dpop_proof",
            DpopChallenge::InvalidToken => "invalid_token",
            DpopChallenge::UseNonce(_) => "use_dpop_nonce",
        }
    }
}

impl AuthService {
    pub fn dpop_mode(&self) -> DpopMode {
        self.dpop.mode
    }

    /// The URLs a proof for `path` may name: one per accepted origin.
    fn htus(&self, path: &str) -> Vec<String> {
        self.dpop
            .origins
            .iter()
            .map(|o| format!("{o}{path}"))
            .collect()
    }

    pub(super) async fn refuse(&self, reason: &'static str, client: &ClientInfo) {
        let ev = AuditEvent::new(AuditKind::TokenRejected)
            .client(client)
            .reason(reason);
        self.record_rejection(ev, reason).await;
    }

    /// The current server nonce (`DPoP-Nonce`).
    pub fn dpop_nonce(&self) -> String {
        self.nonce_for_slot(self.clock.now_ms() / 1000 / self.dpop.window_secs.max(1))
    }

    fn nonce_for_slot(&self, slot: i64) -> String {
        let digest = self
            .tokens
            .keyed_digest(b"palisade:dpop-nonce:v1", &slot.to_be_bytes());
        format!("{slot}.{}", B64.encode(&digest[..16]))
    }

    /// A nonce of this slot or the one before.
    fn nonce_is_fresh(&self, nonce: &str) -> bool {
        let now_slot = self.clock.now_ms() / 1000 / self.dpop.window_secs.max(1);
        let Some(slot) = nonce
            .split_once('.')
            .and_then(|(s, _)| s.parse::<i64>().ok())
        else {
            return false;
        };
        (slot == now_slot || slot == now_slot - 1)
            && constant_time_eq(nonce, &self.nonce_for_slot(slot))
    }

    /// One proof, fully checked: signature and claims, server nonce, then its `jti`
    /// spent (a replay, on any node, is refused).
    async fn check_proof(
        &self,
        proof: &str,
        method: &str,
        path: &str,
        access_token: Option<&str>,
        client: &ClientInfo,
    ) -> Result<Proof, AuthError> {
        let urls = self.htus(path);
        let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
        let checked = verify_proof(
            proof,
            &ProofFor {
                method,
                urls: &urls,
                access_token,
                now: self.clock.now_ms() / 1000,
                window_secs: self.dpop.window_secs,
            },
        );
        let proof = match checked {
            Ok(p) => p,
            Err(e) => {
                self.refuse(e.reason(), client).await;
                return Err(AuthError::Dpop(DpopChallenge::InvalidProof));
            }
        };
        if self.dpop.nonce
            && !proof
                .nonce
                .as_deref()
                .is_some_and(|n| self.nonce_is_fresh(n))
        {
            return Err(AuthError::Dpop(DpopChallenge::UseNonce(self.dpop_nonce())));
        }
        let once = Limit {
            name: "dpop_jti",
            kind: LimitKind::Window {
                max: 1,
                period: std::time::Duration::from_secs(
                    (self.dpop.window_secs + MAX_CLOCK_AHEAD_SECS).unsigned_abs(),
                ),
            },
        };
        match self
            .limits
            .take(&once, &format!("{}:{}", proof.jkt, proof.jti))
            .await?
        {
            Admission::Admitted => Ok(proof),
            Admission::RetryAfter(_) => {
                self.refuse("dpop_replayed", client).await;
                Err(AuthError::Dpop(DpopChallenge::InvalidProof))
            }
        }
    }

    /// The key a token request (login, refresh, exchange at `path`) binds to: the
    /// proof's, if one came (and DPoP is not off). Required when `tokens.dpop` is.
    pub async fn token_request_key(
        &self,
        proof: Option<&str>,
        path: &str,
        client: &ClientInfo,
    ) -> Result<Option<String>, AuthError> {
        match (self.dpop.mode, proof) {
            (DpopMode::Off, _) => Ok(None),
            (DpopMode::Required, None) => {
                self.refuse("dpop_required", client).await;
                Err(AuthError::Dpop(DpopChallenge::InvalidProof))
            }
            (DpopMode::Optional, None) => Ok(None),
            (_, Some(p)) => Ok(Some(
                self.check_proof(p, "POST", path, None, client).await?.jkt,
            )),
        }
    }

    /// The DPoP side of an API request with one of our tokens: a bound token needs the
    /// `DPoP` scheme and a proof by its key; an unbound one the `Bearer` scheme, and
    /// only where DPoP is not required.
    pub(super) async fn check_binding(
        &self,
        bound_to: Option<&str>,
        creds: &Credentials<'_>,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        if self.dpop.mode == DpopMode::Off {
            return match creds.scheme {
                Scheme::Bearer => Ok(()),
                Scheme::Dpop => Err(AuthError::Unauthorized),
            };
        }
        match (bound_to, creds.scheme) {
            (Some(jkt), Scheme::Dpop) => {
                let Some(proof) = creds.proof else {
                    self.refuse("dpop_missing_proof", client).await;
                    return Err(AuthError::Dpop(DpopChallenge::InvalidProof));
                };
                let p = self
                    .check_proof(proof, creds.method, creds.path, creds.token, client)
                    .await?;
                if !constant_time_eq(&p.jkt, jkt) {
                    self.refuse("dpop_other_key", client).await;
                    return Err(AuthError::Dpop(DpopChallenge::InvalidProof));
                }
                Ok(())
            }
            (Some(_), Scheme::Bearer) => {
                self.refuse("dpop_bound_token_as_bearer", client).await;
                Err(AuthError::Dpop(DpopChallenge::InvalidToken))
            }
            (None, Scheme::Dpop) => {
                self.refuse("dpop_unbound_token", client).await;
                Err(AuthError::Dpop(DpopChallenge::InvalidToken))
            }
            (None, Scheme::Bearer) if self.dpop.mode == DpopMode::Required => {
                self.refuse("dpop_required", client).await;
                Err(AuthError::Dpop(DpopChallenge::InvalidToken))
            }
            (None, Scheme::Bearer) => Ok(()),
        }
    }
}
