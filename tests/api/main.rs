//! Integration tests over real sockets, gathered into one binary.

mod bench;
mod chat;
mod config;
mod docker;
mod helpers;
mod notify;
mod redis;
mod redis_helpers;
mod shutdown;
mod status;
