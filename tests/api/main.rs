//! Integration tests over real sockets, gathered into one binary.

mod bad_input;
mod bench;
mod chat;
mod config;
mod docker;
mod helpers;
mod limits;
mod notify;
mod raw_ws;
mod redis;
mod redis_helpers;
mod rooms;
mod security;
#[path = "../common/server_process.rs"]
mod server_process;
mod shutdown;
mod status;
mod transport;
