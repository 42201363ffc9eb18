//! Input no store can keep: a NUL character in the path or query (`%00`). Ids and
//! filters reach SQL as parameters; PostgreSQL refuses NUL in text, so such a request
//! would fail as a store error. It is bad input: 400, before any handler runs.

use axum::http::Uri;

use crate::http::error::ApiError;

pub fn refuse_nul(uri: &Uri) -> Result<(), ApiError> {
    let nul = |s: &str| s.contains("%00");
    if nul(uri.path()) || uri.query().is_some_and(nul) {
        return Err(ApiError::BadRequest(
            "The URL must not contain NUL characters (%00).".into(),
        ));
    }
    Ok(())
}
