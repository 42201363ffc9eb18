//! Middleware, one concern per file.

mod headers;
mod input;
mod limits;
mod metrics;
mod request_id;

pub use headers::security_headers;
pub use input::refuse_nul;
pub use limits::{limits, refuse_when_degraded};
pub use metrics::track;
pub use request_id::{
    REQUEST_ID_HEADER, RequestId, expose_request_id, request_id_layers, sanitize_inbound,
};
