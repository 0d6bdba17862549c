//! The opening handshake (RFC 6455 4.2): which upgrade requests are
//! accepted, and the 101 answer.

use actix_http::header::{self, HeaderValue};
use actix_http::{ws, RequestHead, Response};

use super::deflate::{self, Deflate};

/// An accepted upgrade: the 101 to send, and what it agreed on.
pub struct Accepted {
    /// The 101, with `Sec-WebSocket-Accept` and, when compression was
    /// agreed, `Sec-WebSocket-Extensions`.
    pub switching: Response<()>,
    /// permessage-deflate, when the client offered it and chatd took it.
    pub deflate: Option<Deflate>,
}

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
/// `Sec-WebSocket-Accept`. With `compression`, the client's first acceptable
/// permessage-deflate offer is taken and answered (see [`deflate`]);
/// otherwise, or when it offered none chatd can take, the answer names no
/// extension and the client must not set RSV bits.
///
/// actix-http also accepts the pre-RFC drafts 7 and 8; chatd speaks RFC
/// 6455 only, and says so in `Sec-WebSocket-Version` as the RFC asks.
///
/// # Errors
/// The [`Refusal`] to answer with.
pub fn accept(head: &RequestHead, compression: bool) -> Result<Accepted, Refusal> {
    let version_13 = head
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v == "13");
    let mut switching = match ws::handshake(head) {
        Ok(mut response) if version_13 => response.finish().drop_body(),
        Ok(_)
        | Err(ws::HandshakeError::NoVersionHeader | ws::HandshakeError::UnsupportedVersion) => {
            return Err(Refusal::Version)
        }
        Err(err) => return Err(Refusal::Malformed(err.to_string())),
    };
    let offers = head
        .headers()
        .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
        .filter_map(|value| value.to_str().ok());
    let deflate = compression.then(|| deflate::negotiate(offers)).flatten();
    if let Some(deflate) = deflate {
        let answer = HeaderValue::try_from(deflate.response()).expect("the answer is plain ASCII");
        switching
            .headers_mut()
            .insert(header::SEC_WEBSOCKET_EXTENSIONS, answer);
    }
    Ok(Accepted { switching, deflate })
}
