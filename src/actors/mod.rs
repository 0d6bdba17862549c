//! The actors, one per file. See `chat_hub` for how they fit together.

pub mod chat_hub;
pub mod shutdown_coordinator;
pub mod ticker;
pub mod ws_session;
