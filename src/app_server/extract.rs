//! Who is calling: the login session behind a request's `authToken`.

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;

use super::cookie::{header_token, session_token};
use super::state::AppState;
use crate::http::ApiError;
use crate::store::User;

/// The user behind the request's `authToken` header, or its session cookie
/// when it sends no header (code 13 without either). For what the web page
/// calls; see `session` for why the phone's calls take [`HeaderUser`].
pub struct AuthUser(pub User);

/// The user behind the request's `authToken` header only (code 13 without
/// one): scanning and confirming QR logins, passwords, account deletion.
pub struct HeaderUser(pub User);

async fn session_user(state: &AppState, token: Option<&str>) -> Result<User, ApiError> {
    match state
        .store
        .auth_user(token.ok_or(ApiError::NotLoggedIn)?)
        .await?
    {
        Some((user, false)) => Ok(user),
        Some((user, true)) => Err(ApiError::Banned(user.id)),
        None => Err(ApiError::NotLoggedIn),
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = session_token(&parts.headers, &state.session_cookie);
        session_user(state, token).await.map(AuthUser)
    }
}

impl FromRequestParts<AppState> for HeaderUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        session_user(state, header_token(&parts.headers))
            .await
            .map(HeaderUser)
    }
}

/// `Option<AuthUser>`: the user when the request carries a valid login
/// session (by the same lookup as `AuthUser`), `None` when it is missing,
/// expired or banned. Only a server error is an error.
impl OptionalFromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, Self::Rejection> {
        match <AuthUser as FromRequestParts<AppState>>::from_request_parts(parts, state).await {
            Ok(user) => Ok(Some(user)),
            Err(ApiError::Database(e)) => Err(ApiError::Database(e)),
            Err(_) => Ok(None),
        }
    }
}
