//! Strongroom: a hardware-backed, multi-tenant encrypted record store.
//!
//! The modules follow a request's path (see `ARCHITECTURE.md`):
//! `api` (HTTPS, JSON, errors) → `auth` (bearer token → `Authorized<TenantScope>`)
//! → `records` (domain service) → `keys` (DEK cache, HSM unwrap) → `store` (LMDB,
//! one write transaction = the change + its audit event, group commit) with `audit`
//! defining the event format and chain. `telemetry` holds the Prometheus metrics,
//! `config` the TOML configuration, `governance` the multi-party approvals, `cli` the `init`/`serve`/`dev` commands.
#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod domain;
pub mod erasure;
pub mod governance;
pub mod keys;
pub mod privacy;
pub mod random;
pub mod records;
pub mod store;
pub mod telemetry;
pub mod tenants;
pub mod tokens;
