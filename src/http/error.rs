//! Errors of the Wildfire-style HTTP APIs. Each maps to a Wildfire result
//! code and is sent as HTTP 200 with `{code, message}`, as Wildfire clients
//! expect.

use axum::Json;
use axum::response::{IntoResponse, Response};

use crate::wire::http::{ApiResponse, code};

/// A server's own error (an SMS code, a QR session, an account), with the
/// Wildfire code that server's edge chose for it.
#[derive(Debug)]
pub struct Refused {
    pub code: i32,
    pub error: Box<dyn std::error::Error + Send + Sync>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid mobile number {}: expected 1[3-9] followed by 9 digits", short(.0))]
    InvalidMobile(String),
    #[error("not logged in: send the authToken header you got from /login or /session_login")]
    NotLoggedIn,
    #[error("{0}; log in again to get a new IM token")]
    BadImToken(String),
    #[error("user {0:?} is banned by an administrator")]
    Banned(String),
    #[error("{0}")]
    InvalidParameter(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    TooMany(String),
    #[error("{}", .0.error)]
    Refused(Refused),
    /// Details are logged, never sent.
    #[error("server error; see the imctl log")]
    Database(#[from] crate::store::Error),
    /// Details are logged, never sent.
    #[error("server error; see the imctl log")]
    Internal(String),
}

impl ApiError {
    pub fn code(&self) -> i32 {
        match self {
            ApiError::InvalidMobile(_) => code::INVALID_MOBILE,
            ApiError::NotLoggedIn | ApiError::BadImToken(_) | ApiError::Banned(_) => {
                code::NOT_LOGGED_IN
            }
            ApiError::InvalidParameter(_) => code::INVALID_PARAMETER,
            ApiError::TooMany(_) => code::SEND_TOO_OFTEN,
            ApiError::NotFound(_) => code::NOT_FOUND,
            ApiError::Refused(r) => r.code,
            ApiError::Database(_) | ApiError::Internal(_) => code::SERVER_ERROR,
        }
    }
}

impl ApiError {
    /// A server's own error, answered with `code`.
    pub fn refused(code: i32, error: impl std::error::Error + Send + Sync + 'static) -> Self {
        ApiError::Refused(Refused {
            code,
            error: Box::new(error),
        })
    }

    /// The server's own error of type `E` this is, if it is one.
    pub fn refusal<E: std::error::Error + 'static>(&self) -> Option<&E> {
        match self {
            ApiError::Refused(r) => r.error.downcast_ref(),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Database(e) => tracing::error!(error = %e, "database error"),
            ApiError::Internal(e) => tracing::error!(error = %e, "internal error"),
            _ => {}
        }
        Json(ApiResponse::<()> {
            code: self.code(),
            message: self.to_string(),
            result: None,
        })
        .into_response()
    }
}

/// A client's value quoted in an answer, cut short: answers stay small
/// whatever was sent.
pub(crate) fn short(value: &str) -> String {
    const SHOWN: usize = 32;
    match value.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{:?}…", &value[..cut]),
        None => format!("{value:?}"),
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
