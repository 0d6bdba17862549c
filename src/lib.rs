//! chatd: a real-time WebSocket chat and notification server on Actix.
//!
//! Each WebSocket connection is a `WsSession` actor registered with the one
//! `ChatHub` of its process; a `Ticker` sends periodic notices, a
//! `ShutdownCoordinator` drains the hub on SIGTERM/SIGINT. See `README.md`
//! for how to run it and `actors::chat_hub` for how the actors fit together.

pub mod actors;
pub mod auth;
pub mod config;
pub mod fanout;
pub mod healthcheck;
pub mod history;
pub mod http;
pub mod idempotency;
pub mod memory;
pub mod metrics;
pub mod presence;
pub mod protocol;
pub mod rate_limit;
pub mod redis;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod transport;

pub use config::Config;
pub use startup::Application;
