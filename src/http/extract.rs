//! Request extractors both servers share, answering in the Wildfire envelope.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::wire::limits::MAX_JSON_BODY;

/// A JSON body. Unlike `axum::Json` it ignores the content type (browsers
/// posting `text/plain` skip a CORS preflight), reads an empty body as `{}`
/// and reports bad bodies as code 15.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let too_large = || {
            ApiError::InvalidParameter(format!(
                "the request body is larger than {} KiB; send only the documented fields",
                MAX_JSON_BODY / 1024
            ))
        };
        // A declared length says it all before a byte is read.
        let declared = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        if declared.is_some_and(|n| n > MAX_JSON_BODY) {
            return Err(too_large());
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                too_large()
            } else {
                ApiError::InvalidParameter(format!("cannot read the request body: {e}"))
            }
        })?;
        // Clients send calls without parameters as an empty body, with or
        // without a JSON content type: that is `{}`.
        let bytes: &[u8] = if bytes.trim_ascii().is_empty() {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(bytes)
            .map(ApiJson)
            .map_err(|e| ApiError::InvalidParameter(format!("bad JSON body: {e}")))
    }
}

/// Who the per-address limits count: the client's IPv4 address, or the /64
/// network of an IPv6 one (one host may rotate through its whole /64).
pub struct ClientAddr(pub std::net::IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let ip = super::listen::client_addr(&parts.extensions).ip();
        Ok(ClientAddr(limit_key(ip)))
    }
}

fn limit_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    use std::net::{IpAddr, Ipv6Addr};
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !0u128 << 64)),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::limit_key;

    #[test]
    fn ipv6_clients_count_by_their_64() {
        let a = limit_key("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = limit_key("2001:db8:1:2:bbbb::9".parse().unwrap());
        let c = limit_key("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mapped = limit_key("::ffff:10.0.0.1".parse().unwrap());
        assert_eq!(mapped, "10.0.0.1".parse::<std::net::IpAddr>().unwrap());
    }
}
