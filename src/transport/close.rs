//! [`CloseCode`]: the status of a close frame (RFC 6455 7.4), and which
//! codes may be on the wire.

/// The status code of a close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// The purpose of the connection is fulfilled.
    pub const NORMAL: Self = Self(1000);
    /// The server is going away (a drain).
    pub const AWAY: Self = Self(1001);
    /// The peer broke the protocol.
    pub const PROTOCOL: Self = Self(1002);
    /// A text message (or close reason) that is not UTF-8.
    pub const INVALID_DATA: Self = Self(1007);
    /// A policy was broken: a flood, a client that does not read, silence.
    pub const POLICY: Self = Self(1008);
    /// A message over the size limit.
    pub const TOO_BIG: Self = Self(1009);

    /// Whether a close frame may carry this code: the codes RFC 6455 7.4.1
    /// defines for endpoints to send, and 3000–4999 for libraries and
    /// applications. 1005, 1006 and 1015 must never be on the wire; a client
    /// that sends any code outside these breaks the protocol.
    pub fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1011 | 3000..=4999)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> Self {
        code.0
    }
}

impl std::fmt::Display for CloseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_codes_allowed_on_the_wire_are_sendable() {
        for code in [1000, 1001, 1002, 1003, 1007, 1008, 1011, 3000, 4001, 4999] {
            assert!(CloseCode(code).is_sendable(), "{code}");
        }
        for code in [0, 999, 1004, 1005, 1006, 1012, 1015, 1016, 2000, 2999, 5000] {
            assert!(!CloseCode(code).is_sendable(), "{code}");
        }
    }
}
