//! Request counts and latencies by route template (`/v1/threads/{id}`, never the id).

use axum::extract::{MatchedPath, Request};
use axum::http::Method;

/// What a request is counted under, read before it runs: its method and the matched
/// route template (anything unrouted is `unmatched`); and when it started.
pub struct Tracked {
    method: &'static str,
    route: Option<MatchedPath>,
    started: std::time::Instant,
}

impl Tracked {
    pub fn start(req: &Request) -> Self {
        let method = match *req.method() {
            Method::GET => "GET",
            Method::POST => "POST",
            Method::PUT => "PUT",
            Method::PATCH => "PATCH",
            Method::DELETE => "DELETE",
            Method::HEAD => "HEAD",
            Method::OPTIONS => "OPTIONS",
            _ => "other",
        };
        Self {
            method,
            route: req.extensions().get::<MatchedPath>().cloned(),
            started: std::time::Instant::now(),
        }
    }

    /// Counts the request and times it to its response head.
    pub fn finish(self, status: u16) {
        crate::telemetry::http_request(
            self.method,
            self.route.as_ref().map_or("unmatched", MatchedPath::as_str),
            status,
            self.started.elapsed().as_secs_f64(),
        );
    }
}
