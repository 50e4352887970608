//! The login session a request carries: the `authToken` header, or else an
//! `HttpOnly` cookie that every login also sets (old Wildfire web clients
//! rely on a cookie session, Wildfire's `JSESSIONID`).
//!
//! The cookie rides along from any page on the same host, whatever its
//! port, without a CORS preflight (`ApiJson` takes `text/plain`). So it is
//! accepted only where the web page itself calls; what a phone does
//! (scanning, confirming, passwords, deleting the account) needs the header.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

use super::state::AppState;
use crate::wire::http::AUTH_TOKEN_HEADER;

/// The cookie's name: per app-server port, since cookies ignore ports and
/// two stacks on one host must not log each other out.
pub fn cookie_name(app_port: u16) -> String {
    format!("imctl_session_{app_port}")
}

/// The `authToken` header's value (an empty one counts as none).
pub fn header_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTH_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|t| !t.is_empty())
}

/// The header's session, or else the cookie `name`'s.
pub fn session_token<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    header_token(headers).or_else(|| {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| {
                let (n, value) = pair.trim().split_once('=')?;
                (n == name && !value.is_empty()).then_some(value)
            })
    })
}

/// Mirrors a login's `authToken` answer header into the session cookie.
/// `SameSite=Lax`: pages on other sites cannot ride on it.
pub async fn set_cookie(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    if let Some(token) = response.headers().get(AUTH_TOKEN_HEADER).cloned() {
        let cookie = format!(
            "{}={}; Path=/; HttpOnly; SameSite=Lax",
            state.session_cookie,
            token.to_str().expect("tokens are hex")
        );
        let cookie = HeaderValue::from_str(&cookie).expect("names and tokens are ASCII");
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_wins_over_the_cookie() {
        let name = cookie_name(8888);
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=b; imctl_session_9999=other; imctl_session_8888=fromcookie"
                .parse()
                .unwrap(),
        );
        assert_eq!(session_token(&h, &name), Some("fromcookie"));
        h.insert(AUTH_TOKEN_HEADER, "fromheader".parse().unwrap());
        assert_eq!(session_token(&h, &name), Some("fromheader"));
        // Some clients send the header empty before they have a session.
        h.insert(AUTH_TOKEN_HEADER, "".parse().unwrap());
        assert_eq!(session_token(&h, &name), Some("fromcookie"));
        assert_eq!(header_token(&h), None);
        h.remove(header::COOKIE);
        assert_eq!(session_token(&h, &name), None);
    }
}
