//! Signed identity: who a connection is, from a JWT its application issued.
//!
//! With `AUTH_JWT_SECRET` (HS256) or `AUTH_JWT_PUBLIC_KEY_FILE` (RS256 or
//! ES256, from the PEM's key type) every `/ws` needs a token, checked once,
//! before the upgrade, by [`Verifier::verify`]. Only the configured
//! algorithm is accepted: a token that names another one (`none` included,
//! or HS256 signed with the public key as its secret) is refused. `exp` and
//! `sub` are required; `nbf` is honoured; a few seconds of clock skew are
//! forgiven. The claims become an [`Identity`]: `sub` is the user id, `name`
//! the display name (the id when absent), `rooms` the rooms the user may be
//! in (`*` or absent: any). Without either setting there are no tokens and a
//! client names itself, as before.
//!
//! The token itself is never logged or sent back: refusals say what was
//! wrong with it, not what it was.

use std::fmt;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::protocol::{DisplayName, RoomName};

/// Clock skew forgiven on `exp` and `nbf`, in seconds.
const LEEWAY_S: u64 = 5;

/// A user id, the token's `sub`: 1 to 128 characters, none of them control
/// characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct UserId(String);

impl UserId {
    pub fn parse(raw: &str) -> Option<Self> {
        let ok = (1..=128).contains(&raw.chars().count()) && !raw.chars().any(char::is_control);
        ok.then(|| Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The rooms a token lets its user be in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomGrant {
    Any,
    Only(Vec<RoomName>),
}

impl RoomGrant {
    pub fn allows(&self, room: &RoomName) -> bool {
        match self {
            RoomGrant::Any => true,
            RoomGrant::Only(rooms) => rooms.contains(room),
        }
    }
}

/// Who a connection is, from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: UserId,
    pub name: DisplayName,
    pub rooms: RoomGrant,
    /// The token's `exp`, in Unix seconds.
    pub expires: u64,
}

/// Why a token was refused; the text is the 401's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("a token is required: ?token=... or Authorization: Bearer ...")]
    Missing,
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token is signed with an algorithm this server does not accept")]
    WrongAlgorithm,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token has no {0:?} claim")]
    MissingClaim(String),
    #[error("the token's {0:?} claim is not valid")]
    BadClaim(&'static str),
}

/// The claims chatd reads.
#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: Option<u64>,
    name: Option<String>,
    rooms: Option<Vec<String>>,
}

/// Checks tokens against the configured key and algorithm.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Verifier({:?})", self.validation.algorithms)
    }
}

impl Verifier {
    /// HS256 with a shared secret.
    ///
    /// # Errors
    /// The secret is empty.
    pub fn hs256(secret: &[u8]) -> Result<Self, &'static str> {
        let key = DecodingKey::from_secret(secret).map_err(|_| "a non-empty secret")?;
        Ok(Self::new(key, Algorithm::HS256))
    }

    /// RS256 or ES256, as the PEM public key's type says.
    ///
    /// # Errors
    /// The PEM holds neither an RSA nor a P-256 public key.
    pub fn from_public_pem(pem: &[u8]) -> Result<Self, &'static str> {
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            return Ok(Self::new(key, Algorithm::RS256));
        }
        if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            return Ok(Self::new(key, Algorithm::ES256));
        }
        Err("a PEM file with an RSA or EC (P-256) public key")
    }

    fn new(key: DecodingKey, algorithm: Algorithm) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = LEEWAY_S;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        Self { key, validation }
    }

    /// The algorithm tokens must use, for logs.
    pub fn algorithm(&self) -> Algorithm {
        self.validation.algorithms[0]
    }

    /// Verifies `token` and reads its identity.
    ///
    /// # Errors
    /// [`TokenError`] says what is wrong.
    pub fn verify(&self, token: &str, max_name_chars: usize) -> Result<Identity, TokenError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        // The header's algorithm first: a token for another algorithm is
        // refused as such, whatever its signature.
        match jsonwebtoken::decode_header(token) {
            Ok(header) if header.alg == self.algorithm() => {}
            Ok(_) => return Err(TokenError::WrongAlgorithm),
            // An algorithm the library does not even know, such as `none`.
            Err(_) if names_an_algorithm(token) => return Err(TokenError::WrongAlgorithm),
            Err(_) => return Err(TokenError::Malformed),
        }
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|err| {
                match err.into_kind() {
                    ErrorKind::ExpiredSignature => TokenError::Expired,
                    ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                    ErrorKind::InvalidSignature => TokenError::BadSignature,
                    ErrorKind::InvalidAlgorithm => TokenError::WrongAlgorithm,
                    ErrorKind::MissingRequiredClaim(claim) => TokenError::MissingClaim(claim),
                    ErrorKind::InvalidClaimFormat(_) | ErrorKind::Json(_) => {
                        TokenError::BadClaim("sub/exp")
                    }
                    _ => TokenError::Malformed,
                }
            })?;
        let claims = data.claims;
        let sub = claims
            .sub
            .ok_or_else(|| TokenError::MissingClaim("sub".into()))?;
        let expires = claims
            .exp
            .ok_or_else(|| TokenError::MissingClaim("exp".into()))?;
        let user = UserId::parse(&sub).ok_or(TokenError::BadClaim("sub"))?;
        let name = match claims
            .name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
        {
            Some(name) => DisplayName::parse(name, max_name_chars)
                .map_err(|_| TokenError::BadClaim("name"))?,
            None => DisplayName::lenient(user.as_str(), max_name_chars),
        };
        let rooms = match claims.rooms {
            None => RoomGrant::Any,
            Some(rooms) if rooms.iter().any(|r| r == "*") => RoomGrant::Any,
            Some(rooms) => RoomGrant::Only(
                rooms
                    .iter()
                    .map(|r| RoomName::parse(r))
                    .collect::<Result<_, _>>()
                    .map_err(|_| TokenError::BadClaim("rooms"))?,
            ),
        };
        Ok(Identity {
            user,
            name,
            rooms,
            expires,
        })
    }
}

/// Whether the token's header is JSON with a string `alg`.
fn names_an_algorithm(token: &str) -> bool {
    use base64::Engine;
    let Some(header) = token.split('.').next() else {
        return false;
    };
    let Ok(json) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&json).is_ok_and(|h| h["alg"].is_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn hs(claims: serde_json::Value, secret: &[u8]) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn a_good_token_gives_its_identity() {
        let verifier = Verifier::hs256(b"s3cret").unwrap();
        let token = hs(
            json!({"sub": "u-42", "exp": now() + 60, "name": "Ana", "rooms": ["ops"]}),
            b"s3cret",
        );

        let identity = verifier.verify(&token, 32).unwrap();

        assert_eq!(identity.user.as_str(), "u-42");
        assert_eq!(identity.name.as_str(), "Ana");
        assert!(identity.rooms.allows(&RoomName::parse("ops").unwrap()));
        assert!(!identity.rooms.allows(&RoomName::general()));
    }

    #[test]
    fn bad_tokens_say_what_is_wrong() {
        let verifier = Verifier::hs256(b"s3cret").unwrap();
        let unsigned = {
            let header = base64url(br#"{"alg":"none","typ":"JWT"}"#);
            let body = base64url(format!(r#"{{"sub":"u","exp":{}}}"#, now() + 60).as_bytes());
            format!("{header}.{body}.")
        };
        let cases = [
            ("empty", String::new(), TokenError::Missing),
            ("garbage", "not.a.jwt".to_string(), TokenError::Malformed),
            (
                "expired",
                hs(json!({"sub": "u", "exp": now() - 60}), b"s3cret"),
                TokenError::Expired,
            ),
            (
                "not yet valid",
                hs(
                    json!({"sub": "u", "exp": now() + 600, "nbf": now() + 300}),
                    b"s3cret",
                ),
                TokenError::NotYetValid,
            ),
            (
                "wrong key",
                hs(json!({"sub": "u", "exp": now() + 60}), b"other"),
                TokenError::BadSignature,
            ),
            (
                "no sub",
                hs(json!({"exp": now() + 60}), b"s3cret"),
                TokenError::MissingClaim("sub".into()),
            ),
            (
                "no exp",
                hs(json!({"sub": "u"}), b"s3cret"),
                TokenError::MissingClaim("exp".into()),
            ),
            ("alg none", unsigned, TokenError::WrongAlgorithm),
            (
                "bad room",
                hs(
                    json!({"sub": "u", "exp": now() + 60, "rooms": ["Ops"]}),
                    b"s3cret",
                ),
                TokenError::BadClaim("rooms"),
            ),
        ];
        for (what, token, expected) in cases {
            assert_eq!(verifier.verify(&token, 32), Err(expected), "{what}");
        }
    }

    fn base64url(bytes: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b))
                << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            }
        }
        out
    }
}
