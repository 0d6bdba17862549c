//! Integration tests over real sockets, gathered into one binary.

mod bad_input;
mod bench;
mod chat;
mod cli;
mod cluster_helpers;
mod compression;
mod config;
mod docker;
mod helpers;
mod history;
mod idempotency;
mod identity;
mod limits;
mod metrics;
mod notify;
mod raw_ws;
mod redis;
mod redis_cluster;
#[path = "../common/redis_server.rs"]
mod redis_helpers;
mod redis_history;
mod redis_identity;
mod redis_rooms;
mod rooms;
mod security;
#[path = "../common/server_process.rs"]
mod server_process;
mod shutdown;
mod stall_proxy;
mod status;
mod transport;
