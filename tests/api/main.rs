//! End-to-end tests: every test talks HTTP to a real `palisade` process.

mod mock;
mod support;

mod agents;
mod audit;
mod auth_login;
mod auth_refresh;
mod auth_tokens;
mod browser;
mod chat;
mod cli_docs;
mod cluster;
mod connections;
mod contract;
mod dpop;
mod duties;
mod fidelity;
mod foundation;
mod hardening;
mod hygiene;
mod ingest;
mod mcp_oauth;
mod model;
mod oidc;
mod operability;
mod provenance;
mod rag;
mod services;
mod sso;
mod threads;
