//! Random secrets and the signed IM token.
//!
//! The `authToken` and QR tokens are opaque random strings; the IM token is a
//! JWT (HS256) so the broker can verify it without a database read. HS256 is
//! all imctl signs, so it is HMAC-SHA-256 here rather than a JWT crate that
//! brings RSA and elliptic curves along.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, KeyInit, Mac};
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
    key: Hmac<Sha256>,
    ttl_secs: i64,
}

/// The JOSE header of every token imctl issues, encoded.
const HEADER: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9"; // {"typ":"JWT","alg":"HS256"}

#[derive(Deserialize)]
struct Jose {
    alg: String,
}

impl ImTokens {
    pub fn new(secret: &[u8], ttl: std::time::Duration) -> Self {
        Self {
            key: Hmac::new_from_slice(secret).expect("HMAC takes keys of any length"),
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
        let claims = serde_json::to_vec(&claims).expect("claims serialize");
        let signed = format!("{HEADER}.{}", B64.encode(claims));
        let signature = B64.encode(self.mac(&signed).finalize().into_bytes());
        format!("{signed}.{signature}")
    }

    fn mac(&self, signed: &str) -> Hmac<Sha256> {
        let mut mac = self.key.clone();
        mac.update(signed.as_bytes());
        mac
    }

    pub fn verify(&self, token: &str) -> Result<ImClaims, TokenError> {
        let invalid = |why: &str| TokenError::Invalid(why.to_owned());
        let (signed, signature) = token.rsplit_once('.').ok_or_else(|| invalid("not a JWT"))?;
        let (header, claims) = signed.split_once('.').ok_or_else(|| invalid("not a JWT"))?;
        let jose: Jose = B64
            .decode(header)
            .ok()
            .and_then(|h| serde_json::from_slice(&h).ok())
            .ok_or_else(|| invalid("bad header"))?;
        if jose.alg != "HS256" {
            return Err(invalid("not signed with HS256"));
        }
        let signature = B64
            .decode(signature)
            .map_err(|_| invalid("bad signature"))?;
        // Constant time: a forger learns nothing from how long a refusal takes.
        self.mac(signed)
            .verify_slice(&signature)
            .map_err(|_| invalid("bad signature"))?;
        let claims: ImClaims = B64
            .decode(claims)
            .ok()
            .and_then(|c| serde_json::from_slice(&c).ok())
            .ok_or_else(|| invalid("bad claims"))?;
        if claims.exp < chrono::Utc::now().timestamp() {
            return Err(TokenError::Expired);
        }
        Ok(claims)
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
    fn tokens_of_the_jwt_crate_still_verify_and_tampering_is_refused() {
        // jsonwebtoken 11, which issued imctl's tokens before, wrote exactly
        // this header and this claims layout (checked against a token it
        // issued): the same bytes, so the same signature, and tokens in
        // clients' saved sessions keep verifying.
        let tokens = ImTokens::new(b"s", Duration::from_secs(60));
        let old = tokens.issue_at("alice", "web-1", 5, 4_102_444_800 - 60);
        let mut parts = old.split('.');
        assert_eq!(parts.next(), Some(HEADER));
        assert_eq!(
            B64.decode(parts.next().unwrap()).unwrap(),
            br#"{"sub":"alice","cid":"web-1","plt":5,"iat":4102444740,"exp":4102444800}"#
        );
        let claims = tokens.verify(&old).unwrap();
        assert_eq!((claims.sub.as_str(), claims.exp), ("alice", 4_102_444_800));
        let (signed, _) = old.rsplit_once('.').unwrap();
        let forged = format!(
            "{}.{}.{}",
            HEADER,
            B64.encode(br#"{"sub":"bob","cid":"x","plt":5,"iat":0,"exp":4102444800}"#),
            old.rsplit_once('.').unwrap().1
        );
        assert!(matches!(
            tokens.verify(&forged),
            Err(TokenError::Invalid(_))
        ));
        let none = format!(
            "{}.{}.",
            B64.encode(br#"{"alg":"none"}"#),
            signed.split_once('.').unwrap().1
        );
        assert!(matches!(tokens.verify(&none), Err(TokenError::Invalid(_))));
    }

    #[test]
    fn expired_im_token_is_refused() {
        let tokens = ImTokens::new(b"s", Duration::from_secs(60));
        let t = tokens.issue_at("alice", "web-1", 5, chrono::Utc::now().timestamp() - 61);
        assert!(matches!(tokens.verify(&t), Err(TokenError::Expired)));
    }
}
