//! Rejected tokens are counted, not written one by one: anyone can send garbage bearer
//! tokens, and one fsynced audit row each would let an anonymous client fill the disk
//! and slow every legitimate write. The first rejection of a kind (client address,
//! reason, session if the token was authentic) in a window is recorded at once; the
//! repeats are counted in memory and recorded as one event with the count when the
//! window closes (`flush`, called by a timer and by the next rejection).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::audit::{AuditEvent, AuditKind};

/// Past this many distinct kinds in one window, further ones share one bucket.
const MAX_KINDS: usize = 10_000;

#[derive(Clone, PartialEq, Eq, Hash)]
struct Kind {
    ip: Option<IpAddr>,
    reason: &'static str,
    session: Option<String>,
}

struct Window {
    started: Instant,
    /// Repeats since the first event of each kind was recorded.
    repeats: HashMap<Kind, (u64, AuditEvent)>,
}

pub struct RejectionLog {
    window: Duration,
    state: Mutex<Window>,
}

/// What to do with one rejection.
pub enum Disposition {
    /// The first of its kind in this window: write it.
    Record(Box<AuditEvent>),
    /// A repeat: counted.
    Counted,
}

impl RejectionLog {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            state: Mutex::new(Window {
                started: Instant::now(),
                repeats: HashMap::new(),
            }),
        }
    }

    /// Notes a rejection; the event is the one that would be written.
    pub fn note(&self, ev: AuditEvent, reason: &'static str) -> Disposition {
        let Ok(mut w) = self.state.lock() else {
            return Disposition::Record(Box::new(ev));
        };
        let mut kind = Kind {
            ip: ev.ip.as_deref().and_then(|i| i.parse().ok()),
            reason,
            session: ev.session_id.clone(),
        };
        if w.repeats.len() >= MAX_KINDS && !w.repeats.contains_key(&kind) {
            kind = Kind {
                ip: None,
                reason: "many_sources",
                session: None,
            };
        }
        match w.repeats.get_mut(&kind) {
            Some((n, _)) => {
                *n += 1;
                Disposition::Counted
            }
            None => {
                w.repeats.insert(kind, (0, ev.clone()));
                Disposition::Record(Box::new(ev))
            }
        }
    }

    /// Closes the window if it is over: one event per kind that repeated, carrying the
    /// number of repeats. Returns the events to write.
    pub fn flush(&self, force: bool) -> Vec<AuditEvent> {
        let Ok(mut w) = self.state.lock() else {
            return Vec::new();
        };
        if !force && w.started.elapsed() < self.window {
            return Vec::new();
        }
        w.started = Instant::now();
        w.repeats
            .drain()
            .filter(|(_, (n, _))| *n > 0)
            .map(|(k, (n, first))| {
                let mut ev = AuditEvent::new(AuditKind::TokenRejected).reason(k.reason);
                ev.ip = first.ip;
                ev.tenant = first.tenant;
                ev.subject = first.subject;
                ev.session_id = first.session_id;
                ev.count = Some(n);
                ev
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ip: &str) -> AuditEvent {
        AuditEvent::new(AuditKind::TokenRejected).ip(ip.parse().ok())
    }

    #[test]
    fn repeats_are_counted_and_flushed_as_one_event() {
        let log = RejectionLog::new(Duration::from_secs(3600));
        assert!(matches!(
            log.note(ev("192.0.2.1"), "malformed"),
            Disposition::Record(_)
        ));
        for _ in 0..1999 {
            assert!(matches!(
                log.note(ev("192.0.2.1"), "malformed"),
                Disposition::Counted
            ));
        }
        // Another client, another kind: recorded at once.
        assert!(matches!(
            log.note(ev("192.0.2.2"), "malformed"),
            Disposition::Record(_)
        ));
        assert!(log.flush(false).is_empty(), "the window is still open");
        let out = log.flush(true);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].count, Some(1999));
        assert_eq!(out[0].ip.as_deref(), Some("192.0.2.1"));
        // A new window starts afresh.
        assert!(matches!(
            log.note(ev("192.0.2.1"), "malformed"),
            Disposition::Record(_)
        ));
    }
}
