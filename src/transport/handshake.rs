//! The opening handshake (RFC 6455 4.2): which upgrade requests are
//! accepted, and the 101 answer.

use actix_http::header;
use actix_http::{ws, RequestHead, Response};

/// Why an upgrade request is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `Sec-WebSocket-Version` is missing or not 13; the answer says
    /// `Sec-WebSocket-Version: 13`.
    #[error("only WebSocket version 13 (RFC 6455) is supported")]
    Version,
    /// Another required header is missing or wrong.
    #[error("not a valid WebSocket upgrade: {0}")]
    Malformed(String),
}

/// Checks the upgrade headers of `head`, and returns the 101 answer with its
/// `Sec-WebSocket-Accept`.
///
/// actix-http also accepts the pre-RFC drafts 7 and 8; chatd speaks RFC
/// 6455 only, and says so in `Sec-WebSocket-Version` as the RFC asks. No
/// extension is offered back: the answer names none, so the client must not
/// set RSV bits.
///
/// # Errors
/// The [`Refusal`] to answer with.
pub fn accept(head: &RequestHead) -> Result<Response<()>, Refusal> {
    let version_13 = head
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v == "13");
    match ws::handshake(head) {
        Ok(mut response) if version_13 => Ok(response.finish().drop_body()),
        Ok(_)
        | Err(ws::HandshakeError::NoVersionHeader | ws::HandshakeError::UnsupportedVersion) => {
            Err(Refusal::Version)
        }
        Err(err) => Err(Refusal::Malformed(err.to_string())),
    }
}
