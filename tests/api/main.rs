//! API integration tests: each test runs its own `strongroom` appliance (SoftHSM token,
//! swtpm, TLS, LMDB in a temp dir) and talks to it over HTTPS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;
mod smoke;
