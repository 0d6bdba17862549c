//! Integration tests over real sockets, gathered into one binary.

mod bench;
mod chat;
mod config;
mod helpers;
mod notify;
mod shutdown;
mod status;
