//! Everything that talks to Redis, in one place: the [`bridge::RedisBridge`]
//! actor that relays events between chatd processes, the pure pieces it is
//! built from ([`relay`]: the envelope, the outbox, the repeat filter, the
//! backoff) and the names of the channels and keys every process shares.
//! The hub never sees a Redis command: it hands the bridge events and room
//! changes, and gets events back.

pub mod bridge;
pub mod relay;
