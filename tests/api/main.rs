//! End-to-end tests: every test talks HTTP to a real `palisade` process.

mod support;

mod auth_login;
mod auth_refresh;
mod auth_tokens;
mod hygiene;
