//! Per-user and per-tenant request rates and daily model-token budgets, counted in the
//! shared limit store: on one node in memory, across a cluster in Redis (every node
//! counts against the same allowance).
//!
//! Request rates are exact (check and count are one atomic step). A token budget is
//! reserved before the model is called — the request's prompt estimate plus its output
//! cap, in one atomic step with the check — and settled with what the answer used once
//! it is known. A reservation that does not fit is refused (429) before any upstream
//! call, so requests in flight together cannot overshoot the budget by more than their
//! estimates' error (one request alone is always let through while the day's usage is
//! below the budget, as a small budget would otherwise refuse every request). Refusals answer 429 with `Retry-After`, are
//! counted in metrics, and are audited as `budget_exceeded` — once per user, limit and
//! minute, so that hammering a closed door cannot flood the trail.

use std::sync::Arc;
use std::time::Duration;

use super::ChatError;
use crate::access::Principal;
use crate::audit::{Audit, AuditEvent, AuditKind};
use crate::model::ClientInfo;
use crate::store::{Admission, Limit, LimitKind, LimitStore};

const DAY_SECS: i64 = 86_400;

/// How much each user and each tenant may use.
#[derive(Debug, Clone, Copy, Default)]
pub struct BudgetSettings {
    /// Chat requests per user per minute (a burst of one minute's worth, refilled evenly).
    pub user_requests_per_minute: u32,
    /// Chat requests per tenant per minute; 0: no tenant rate.
    pub tenant_requests_per_minute: u32,
    /// Model tokens (prompt + completion) per user per UTC day; 0: unlimited.
    pub user_tokens_per_day: u64,
    /// Model tokens per tenant per UTC day; 0: unlimited.
    pub tenant_tokens_per_day: u64,
}

/// Which allowance refused a request: the audit reason and the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    UserRequests,
    TenantRequests,
    UserTokens,
    TenantTokens,
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Self::UserRequests => "user_requests",
            Self::TenantRequests => "tenant_requests",
            Self::UserTokens => "user_tokens",
            Self::TenantTokens => "tenant_tokens",
        }
    }
}

/// Which allowances a request is admitted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Request rates only (a search without a model call).
    Requests,
    /// Request rates and token budgets (a model call follows).
    RequestsAndTokens,
}

pub struct Budgets {
    settings: BudgetSettings,
    user_rate: Limit,
    tenant_rate: Limit,
    /// One audit record per user, limit and minute.
    audit_once: Limit,
    limits: Arc<dyn LimitStore>,
    audit: Audit,
    /// What "today" is for the token budgets.
    pub(super) clock: Arc<dyn crate::timeutil::Clock>,
}

fn rate(name: &'static str, per_minute: u32) -> Limit {
    let rpm = per_minute.max(1);
    Limit {
        name,
        kind: LimitKind::Rate {
            burst: rpm,
            per_minute: rpm,
        },
    }
}

/// Today (days since the unix epoch, UTC) and the seconds until tomorrow, at `now_ms`.
fn today(now_ms: i64) -> (i64, u64) {
    let now = now_ms / 1000;
    let day = now.div_euclid(DAY_SECS);
    (day, ((day + 1) * DAY_SECS - now).max(1) as u64)
}

impl Budgets {
    pub fn new(settings: BudgetSettings, limits: Arc<dyn LimitStore>, audit: Audit) -> Self {
        Self {
            user_rate: rate("chat", settings.user_requests_per_minute),
            tenant_rate: rate("chat_tenant", settings.tenant_requests_per_minute),
            audit_once: Limit {
                name: "budget_audit",
                kind: LimitKind::Window {
                    max: 1,
                    period: Duration::from_secs(60),
                },
            },
            settings,
            limits,
            audit,
            clock: Arc::new(crate::timeutil::SystemClock),
        }
    }

    /// The caller's daily token budget: a service account's own, or the per-user one.
    fn user_tokens(&self, p: &Principal) -> u64 {
        p.service()
            .map(|s| s.tokens_per_day)
            .filter(|&t| t > 0)
            .unwrap_or(self.settings.user_tokens_per_day)
    }

    fn user_key(p: &Principal) -> String {
        format!("{}\u{1f}{}", p.tenant(), p.subject())
    }

    /// Counts one request against the caller's and the tenant's rates, and checks the
    /// day's token budgets. A store error refuses (fail closed).
    pub async fn admit(
        &self,
        p: &Principal,
        what: Admit,
        client: &ClientInfo,
    ) -> Result<(), ChatError> {
        let user = Self::user_key(p);
        let checks = async {
            // A service account may have allowances of its own.
            let own = p.service();
            let service_rate = own
                .filter(|s| s.requests_per_minute > 0)
                .map(|s| rate("chat_service", s.requests_per_minute));
            let user_rate = service_rate.as_ref().unwrap_or(&self.user_rate);
            if let Admission::RetryAfter(s) = self.limits.take(user_rate, &user).await? {
                return Ok(Some((Refusal::UserRequests, s)));
            }
            if self.settings.tenant_requests_per_minute > 0
                && let Admission::RetryAfter(s) =
                    self.limits.take(&self.tenant_rate, p.tenant()).await?
            {
                return Ok(Some((Refusal::TenantRequests, s)));
            }
            if what == Admit::RequestsAndTokens {
                let (day, until_tomorrow) = today(self.clock.now_ms());
                let spent = |budget, key: &str| {
                    let key = key.to_owned();
                    async move { self.limits.usage(budget, &key, day).await }
                };
                let user_tokens = self.user_tokens(p);
                if user_tokens > 0 && spent("tokens_user", &user).await? >= user_tokens {
                    return Ok(Some((Refusal::UserTokens, until_tomorrow)));
                }
                if self.settings.tenant_tokens_per_day > 0
                    && spent("tokens_tenant", p.tenant()).await?
                        >= self.settings.tenant_tokens_per_day
                {
                    return Ok(Some((Refusal::TenantTokens, until_tomorrow)));
                }
            }
            Ok::<_, crate::model::StoreError>(None)
        };
        let refusal = match checks.await {
            Ok(None) => return Ok(()),
            Ok(Some(r)) => r,
            Err(e) => {
                tracing::error!(error = %e, "limit store failed; refusing");
                return Err(ChatError::Thread(e.into()));
            }
        };
        Err(self.refused(p, client, refusal).await)
    }

    /// Counts and audits (once per user, limit and minute) a refusal, and its error.
    async fn refused(
        &self,
        p: &Principal,
        client: &ClientInfo,
        (why, retry_after_secs): (Refusal, u64),
    ) -> ChatError {
        let user = Self::user_key(p);
        crate::telemetry::limited(why.as_str());
        let once_key = format!("{user}\u{1f}{}", why.as_str());
        if matches!(
            self.limits.take(&self.audit_once, &once_key).await,
            Ok(Admission::Admitted)
        ) {
            self.audit
                .record(
                    AuditEvent::new(AuditKind::BudgetExceeded)
                        .by(p)
                        .client(client)
                        .reason(why.as_str()),
                )
                .await;
        }
        match why {
            Refusal::UserRequests | Refusal::TenantRequests => {
                ChatError::RateLimited { retry_after_secs }
            }
            Refusal::UserTokens | Refusal::TenantTokens => {
                ChatError::BudgetExceeded { retry_after_secs }
            }
        }
    }

    /// Reserves `amount` tokens of the caller's and the tenant's day for a model call
    /// about to run; `None` when no token budget is set. A reservation that does not
    /// fit refuses the request (429, audited once a minute); a store error refuses
    /// (fail closed).
    pub async fn reserve(
        &self,
        p: &Principal,
        amount: u64,
        client: &ClientInfo,
    ) -> Result<Option<Reservation>, ChatError> {
        let (user_cap, tenant_cap) = (self.user_tokens(p), self.settings.tenant_tokens_per_day);
        if user_cap == 0 && tenant_cap == 0 {
            return Ok(None);
        }
        let (day, until_tomorrow) = today(self.clock.now_ms());
        let mut r = Reservation {
            limits: self.limits.clone(),
            holds: Vec::new(),
            day,
            amount,
            settled: false,
        };
        let user = Self::user_key(p);
        let wanted = [
            ("tokens_user", user, user_cap, Refusal::UserTokens),
            (
                "tokens_tenant",
                p.tenant().to_owned(),
                tenant_cap,
                Refusal::TenantTokens,
            ),
        ];
        for (budget, key, cap, why) in wanted {
            if cap == 0 {
                continue;
            }
            match self.limits.reserve(budget, &key, day, amount, cap).await {
                Ok(true) => r.holds.push((budget, key)),
                Ok(false) => {
                    // Dropping `r` gives back what it holds already.
                    return Err(self.refused(p, client, (why, until_tomorrow)).await);
                }
                Err(e) => {
                    tracing::error!(error = %e, "limit store failed; refusing");
                    return Err(ChatError::Thread(e.into()));
                }
            }
        }
        Ok(Some(r))
    }

    /// Charges what a model call used to the caller's and the tenant's day. A failure
    /// is logged: the answer was already given, and refusing it now would lose it.
    pub async fn charge(&self, p: &Principal, tokens: u64) {
        if tokens == 0 || (self.user_tokens(p) == 0 && self.settings.tenant_tokens_per_day == 0) {
            return;
        }
        let (day, _) = today(self.clock.now_ms());
        let user = Self::user_key(p);
        let (u, t) = tokio::join!(
            self.limits.add_usage("tokens_user", &user, day, tokens),
            self.limits
                .add_usage("tokens_tenant", p.tenant(), day, tokens),
        );
        if let Err(e) = u.and(t) {
            tracing::error!(error = %e, "token usage not recorded");
        }
    }
}

/// Tokens held of a caller's (and the tenant's) day for a model call in flight. Settled
/// with what the call used; dropped unsettled (the request failed or was abandoned before
/// an answer was charged), it gives the hold back.
pub struct Reservation {
    limits: Arc<dyn LimitStore>,
    holds: Vec<(&'static str, String)>,
    day: i64,
    amount: u64,
    settled: bool,
}

impl Reservation {
    /// Ends the hold and charges `used` tokens. A failure is logged: the answer was
    /// already given, and refusing it now would lose it.
    pub async fn settle(mut self, used: u64) {
        self.settled = true;
        for (budget, key) in std::mem::take(&mut self.holds) {
            if let Err(e) = self
                .limits
                .settle(budget, &key, self.day, self.amount, used)
                .await
            {
                tracing::error!(error = %e, "token usage not recorded");
            }
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.settled || self.holds.is_empty() {
            return;
        }
        let (limits, holds, day, amount) = (
            self.limits.clone(),
            std::mem::take(&mut self.holds),
            self.day,
            self.amount,
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                for (budget, key) in holds {
                    let _ = limits.settle(budget, &key, day, amount, 0).await;
                }
            });
        }
    }
}
