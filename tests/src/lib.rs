//! End-to-end test harness: starts the real control-plane binary on a temporary SQLite file, talks to
//! it over HTTP on 127.0.0.1, and offers the fixtures the API tests share.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test-only crate: a failed expectation must stop the test loudly"
)]

pub mod api;
pub mod fixtures;
pub mod process;
pub mod shapes;

pub use api::{
    Api, Body, Problems, Resp, assert_error, assert_error_field, assert_keys, error_problem, eventually,
};
pub use process::{ControlPlane, Options};

/// `PUBLIC_BASE_URL` given to every control plane: only printed in access commands, never dialled.
pub const PUBLIC_BASE_URL: &str = "http://cp.example.test:8080";
