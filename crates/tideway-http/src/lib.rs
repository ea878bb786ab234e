//! Tideway's HTTP transport: raw hyper 1 serving SSE streams, publishes, the admin API and
//! the operations routes over one listener.
//!
//! [`run`] takes a bound listener, a started [`Gateway`](tideway_core::Gateway) and a
//! shutdown future, so `main` passes SIGTERM and a test binds `127.0.0.1:0` and passes its
//! own. This is the only crate that knows hyper, and the only one that maps errors to
//! status codes and the JSON error body.
#![forbid(unsafe_code)]

mod admin;
mod app;
mod auth;
mod batch;
mod config;
mod cors;
mod direct;
mod error;
mod head;
mod metrics;
mod publish;
mod response;
mod routes;
mod server;
mod stream;
mod system;
mod tls;
mod tokens;
mod ui;
mod ws;

pub use auth::{ApiKey, ApiKeys, KeyRing, Rate, Scope, TopicPattern, TopicPatternError};
pub use config::{Cors, CorsOrigins, HttpConfig};
pub use error::ErrorCode;
pub use response::Body;
pub use server::{Tideway, run};
pub use tls::{TlsError, TlsFiles};
pub use tokens::TokenConfig;
