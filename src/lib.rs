//! palisade — a zero-trust gateway for LLM chat and RAG applications.
//!
//! Dependencies point one way (`docs/architecture.md`; `tests/layering.rs` enforces it):
//!
//! ```text
//! http ─┬─ chat ─┬─ threads ─┐
//!       │        ├─ rag ─────┤
//!       │        └─ llm ─────┤
//!       ├─ auth ─────────────┼─ audit ─ store ─ access (leaf)
//!       └─ (threads, rag, audit)
//! ```
//!
//! * [`access`] holds the capability types: `Principal` (made only by [`auth`]),
//!   `AccessScope`, `ThreadOwner`, `DocumentAdmin`, `Operator`.
//! * [`store`] is the contract (traits per concern, bundled as `Stores`) and its
//!   embedded SQLite implementation.
//! * [`http`] is the axum face and the only place where errors become statuses.
//! * [`app`] wires everything together for the CLI.

pub mod access;
pub mod app;
pub mod audit;
pub mod auth;
pub mod chat;
pub mod config;
pub mod http;
pub mod llm;
pub mod model;
pub mod rag;
pub mod secret;
pub mod store;
pub mod telemetry;
pub mod threads;
pub mod timeutil;
