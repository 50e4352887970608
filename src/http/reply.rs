//! Success answers of the login API.

use axum::Json;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::wire::http::{AUTH_TOKEN_HEADER, ApiResponse};

/// `{code: 0, message: "success", result}`, optionally with the `authToken` header.
pub struct Reply<T> {
    pub result: T,
    pub auth_token: Option<String>,
}

impl<T> Reply<T> {
    pub fn ok(result: T) -> Self {
        Self {
            result,
            auth_token: None,
        }
    }

    pub fn with_auth_token(result: T, auth_token: String) -> Self {
        Self {
            result,
            auth_token: Some(auth_token),
        }
    }
}

impl<T: Serialize> IntoResponse for Reply<T> {
    fn into_response(self) -> Response {
        let mut response = Json(ApiResponse::ok(self.result)).into_response();
        if let Some(token) = self.auth_token {
            let value = HeaderValue::from_str(&token).expect("tokens are hex");
            // `app_server::cookie::set_cookie` mirrors it into the session cookie.
            response.headers_mut().insert(AUTH_TOKEN_HEADER, value);
        }
        response
    }
}

/// An answer with a non-zero code that still carries a result (code 9).
pub fn coded<T: Serialize>(code: i32, message: &str, result: T) -> Response {
    Json(ApiResponse {
        code,
        message: message.to_owned(),
        result: Some(result),
    })
    .into_response()
}

/// An answer with a non-zero code, no result and a specific message.
pub fn status(code: i32, message: &str) -> Response {
    Json(ApiResponse::<()> {
        code,
        message: message.to_owned(),
        result: None,
    })
    .into_response()
}
