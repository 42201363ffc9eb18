//! palisade — a zero-trust gateway for LLM chat and RAG applications.
//!
//! Data flows one way (see `DESIGN.md`): `http` → `auth` → `store`, with `audit`
//! recording security events. A lower layer never imports a higher one.
//!
//! * [`auth`] turns credentials into a [`auth::Principal`]; nothing else can make one.
//! * [`store`] holds users, sessions, refresh families and audit events behind small traits.
//! * [`http`] is the axum face: routes, extractors, cookies, origin checks, limits, headers.

pub mod app;
pub mod audit;
pub mod auth;
pub mod config;
pub mod error;
pub mod http;
pub mod llm;
pub mod rag;
pub mod secret;
pub mod store;
pub mod threads;
pub mod timeutil;
