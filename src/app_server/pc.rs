//! Web/PC QR login: `/pc_session`, `/session_login/{token}`, `/scan_pc/{token}`,
//! `/confirm_pc`, `/cancel_pc`, and the QR pictures.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, AuthUser};
use super::login::check_client;
use super::qr::{PollOutcome, QrError, QrSession};
use super::reply::{Reply, coded, status};
use super::state::AppState;
use crate::qr_image;
use crate::wire::http::{
    CancelPcRequest, ConfirmPcRequest, LoginResult, PcSessionRequest, PcSessionResult, PollTimeout,
    ScannedResult, code,
};

fn session_result(state: &AppState, s: &QrSession) -> PcSessionResult {
    PcSessionResult {
        token: s.token.clone(),
        status: s.status() as i32,
        expired: s.expires_in().as_millis() as i64,
        platform: s.platform,
        device_name: s.device_name.clone(),
        user_id: s.scanner().map(|u| u.user_id),
        qr_text: Some(state.qr.qr_text(&s.token)),
    }
}

pub async fn pc_session(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<PcSessionRequest>,
) -> ApiResult<Reply<PcSessionResult>> {
    check_client(&req.client_id, req.platform)?;
    let device = req
        .device_name
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .unwrap_or("unknown device");
    let session = state.qr.create(&req.client_id, req.platform, device);
    Ok(Reply::ok(session_result(&state, &session)))
}

pub async fn session_login(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> ApiResult<Response> {
    let outcome = state
        .qr
        .poll(&token, state.poll_timeout, &state.shutdown)
        .await?;
    Ok(match outcome {
        PollOutcome::Scanned(user) => coded(
            code::SESSION_SCANNED,
            "scanned; waiting for the user to confirm on the phone",
            ScannedResult {
                user_id: user.user_id,
                user_name: user.display_name,
                portrait: state.portrait_url(user.portrait.as_deref()),
            },
        ),
        PollOutcome::Confirmed {
            user_id,
            client_id,
            platform,
        } => {
            let user = match state.store.user_status(&user_id).await? {
                Some((user, false)) => user,
                Some((user, true)) => return Err(ApiError::Banned(user.id)),
                None => {
                    return Err(ApiError::NotFound(format!(
                        "user {user_id} no longer exists"
                    )));
                }
            };
            let creds = state
                .issue_credentials(&user.id, &client_id, platform)
                .await?;
            state.broker.hub.metrics.login("qr");
            Reply::with_auth_token(
                LoginResult {
                    user_id: user.id,
                    token: creds.im_token,
                    register: false,
                    user_name: Some(user.display_name),
                    portrait: state.portrait_url(user.portrait.as_deref()),
                    route_url: Some(state.route_url.clone()),
                },
                creds.auth_token,
            )
            .into_response()
        }
        PollOutcome::Cancelled => status(
            code::SESSION_CANCELLED,
            "the login was cancelled on the phone; create a new QR session",
        ),
        PollOutcome::TimedOut(live) => coded(
            code::SESSION_EXPIRED,
            "no change before the long poll timed out; the session is still live, poll again",
            PollTimeout {
                status: live as i32,
            },
        ),
        PollOutcome::Expired => status(code::SESSION_EXPIRED, &QrError::Missing.to_string()),
        PollOutcome::ShuttingDown => status(
            code::SESSION_EXPIRED,
            "the server is shutting down; poll again when it is back",
        ),
    })
}

pub async fn scan_pc(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(token): Path<String>,
) -> ApiResult<Reply<PcSessionResult>> {
    let session = state.qr.scan(&token, state.summary(&user))?;
    Ok(Reply::ok(session_result(&state, &session)))
}

pub async fn confirm_pc(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiJson(req): ApiJson<ConfirmPcRequest>,
) -> ApiResult<Reply<PcSessionResult>> {
    if let Some(claimed) = req
        .user_id
        .as_deref()
        .filter(|u| !u.is_empty() && *u != user.id)
    {
        return Err(ApiError::InvalidParameter(format!(
            "user_id {claimed:?} does not match the logged-in user {:?}",
            user.id
        )));
    }
    let session = state.qr.confirm(&req.token, &user.id)?;
    Ok(Reply::ok(session_result(&state, &session)))
}

pub async fn cancel_pc(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiJson(req): ApiJson<CancelPcRequest>,
) -> ApiResult<Reply<PcSessionResult>> {
    let session = state.qr.cancel(&req.token, &user.id)?;
    Ok(Reply::ok(session_result(&state, &session)))
}

fn qr_picture(
    state: &AppState,
    token: &str,
    content_type: &'static str,
    render: fn(&str) -> Vec<u8>,
) -> Response {
    match state.qr.get(token) {
        Ok(s) => (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, "no-store"),
            ],
            render(&state.qr.qr_text(&s.token)),
        )
            .into_response(),
        Err(e) => (StatusCode::NOT_FOUND, e.to_string()).into_response(),
    }
}

pub async fn qr_svg(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    qr_picture(&state, &token, "image/svg+xml", |t| {
        qr_image::svg(t).into_bytes()
    })
}

pub async fn qr_png(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    qr_picture(&state, &token, "image/png", qr_image::png)
}
