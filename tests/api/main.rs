//! API integration tests: each test runs its own `strongroom` appliance (SoftHSM token,
//! swtpm, TLS certificate, LMDB in a temp dir) as a child process and talks to it over
//! HTTPS, then inspects the data directory and the audit chain directly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod at_rest;
mod audit;
mod compile_fail;
mod concurrency;
mod erasure;
mod governance;
mod hardening;
mod harness;
mod integrity;
mod integrity_support;
mod privacy;
mod raw_store;
mod records;
mod tamper;
mod tenancy;
mod tokens;
mod validation;
