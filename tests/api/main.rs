//! API integration tests.
