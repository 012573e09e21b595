//! llm-router: an OpenAI-compatible gateway that forwards each request to one of
//! several upstream services, with priority failover, model-aware routing,
//! sliding-window rate limits and SSE streaming.
//!
//! The seam for `main`, `demo` and the tests is [`server::App::build`] followed by
//! [`server::run`] on a listener the caller bound (port 0 in tests).
//! See ARCHITECTURE.md for the map.

pub mod access;
pub mod api;
pub mod auth;
pub mod body;
pub mod check;
pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
pub mod logging;
pub mod metrics;
pub mod ratelimit;
pub mod request_id;
pub mod routing;
pub mod server;
pub mod shared;
pub mod stats;
pub mod supervisor;
pub mod upstream;

pub use config::{Config, Overrides};
pub use error::{Error, StartupError};
pub use server::{App, run};
