//! End-to-end test harness: starts the real control-plane binary on a temporary SQLite file, talks to
//! it over HTTP on 127.0.0.1, and offers the fixtures the API tests share. For the Docker suites it
//! also runs node agents (embedded or standalone), builds the host image, and inspects and removes
//! what the agents build ([`node`], [`hosts`], [`docker`]). The dashboard's tests drive a real headless
//! Chromium ([`browser`]).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test-only crate: a failed expectation must stop the test loudly"
)]

pub mod access;
pub mod api;
pub mod browser;
pub mod cli;
pub mod database;
pub mod desktop;
pub mod docker;
pub mod egress;
pub mod enrolment;
pub mod fakenet;
pub mod fixtures;
pub mod gateway;
pub mod hosts;
pub mod installation;
pub mod node;
pub mod process;
pub mod shapes;
pub mod terminal;
pub mod tls;
pub mod totp;

pub use api::{
    Api, Body, Problems, Resp, assert_error, assert_error_field, assert_keys, error_problem, eventually,
};
pub use node::{AgentMode, Node};
pub use process::{AgentOptions, AgentProcess, ControlPlane, Options};

/// `PUBLIC_BASE_URL` given to every control plane: only printed in access commands, never dialled.
pub const PUBLIC_BASE_URL: &str = "http://cp.example.test:8080";
