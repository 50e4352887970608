//! Random secrets and the signed IM token.
//!
//! The `authToken` and QR tokens are opaque random strings; the IM token is a
//! JWT (HS256) so the broker can verify it without a database read.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A random token of `bytes` bytes, hex-encoded (192 bits for 24 bytes).
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    hex::encode(buf)
}

/// Hex SHA-256 of a token: what the database keeps instead of the token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// What an IM token says about its holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImClaims {
    /// The user id.
    pub sub: String,
    /// The client id the token was issued to.
    pub cid: String,
    /// The platform number (1 iOS … 5 Web … 9 Android pad).
    pub plt: i32,
    /// Issued at, seconds since the Unix epoch.
    pub iat: i64,
    /// Expires at, seconds since the Unix epoch.
    pub exp: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the IM token has expired; log in again")]
    Expired,
    #[error("the IM token is not valid ({0})")]
    Invalid(String),
}

/// Signs and verifies IM tokens with the server's secret.
#[derive(Clone)]
pub struct ImTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl_secs: i64,
}

impl ImTokens {
    pub fn new(secret: &[u8], ttl: std::time::Duration) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            ttl_secs: ttl.as_secs() as i64,
        }
    }

    pub fn issue(&self, user_id: &str, client_id: &str, platform: i32) -> String {
        self.issue_at(user_id, client_id, platform, chrono::Utc::now().timestamp())
    }

    /// Issues a token as if it were `now` (seconds): for tests and tools.
    pub fn issue_at(&self, user_id: &str, client_id: &str, platform: i32, now: i64) -> String {
        let claims = ImClaims {
            sub: user_id.to_owned(),
            cid: client_id.to_owned(),
            plt: platform,
            iat: now,
            exp: now + self.ttl_secs,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing with an in-memory key cannot fail")
    }

    pub fn verify(&self, token: &str) -> Result<ImClaims, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        jsonwebtoken::decode::<ImClaims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn random_tokens_are_long_and_distinct() {
        let a = random_token(24);
        let b = random_token(24);
        assert_eq!(a.len(), 48);
        assert_ne!(a, b);
    }

    #[test]
    fn im_token_round_trips_and_rejects_other_secrets() {
        let tokens = ImTokens::new(b"secret-one", Duration::from_secs(60));
        let t = tokens.issue("alice", "web-1", 5);
        let claims = tokens.verify(&t).unwrap();
        assert_eq!(
            (claims.sub.as_str(), claims.cid.as_str(), claims.plt),
            ("alice", "web-1", 5)
        );

        let other = ImTokens::new(b"secret-two", Duration::from_secs(60));
        assert!(matches!(other.verify(&t), Err(TokenError::Invalid(_))));
        assert!(matches!(
            tokens.verify("not-a-jwt"),
            Err(TokenError::Invalid(_))
        ));
    }

    #[test]
    fn expired_im_token_is_refused() {
        let tokens = ImTokens::new(b"s", Duration::from_secs(60));
        let t = tokens.issue_at("alice", "web-1", 5, chrono::Utc::now().timestamp() - 61);
        assert!(matches!(tokens.verify(&t), Err(TokenError::Expired)));
    }
}
