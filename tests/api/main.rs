//! Integration tests over real sockets, gathered into one binary.

mod bad_input;
mod chat;
mod config;
mod helpers;
mod limits;
mod notify;
mod raw_ws;
mod security;
mod shutdown;
mod status;
