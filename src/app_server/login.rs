//! SMS login: `/send_code` and `/login`.

use axum::extract::State;
use tracing::info;

use super::faults::SmsFault;
use super::sms::is_valid_mobile;
use super::state::AppState;
use crate::http::advertise::PublicUrls;
use crate::http::reply::Reply;
use crate::http::{ApiError, ApiResult};
use crate::http::{ApiJson, ClientAddr};
use crate::store::User;
use crate::wire::http::{ApiResponse, LoginRequest, LoginResult, SendCodeRequest, SmsLoginResult};

#[utoipa::path(post, path = "/send_code", tag = "login", request_body = SendCodeRequest,
    responses((status = 200, description = "`code` 0 sent (`result` \"SUCCESS\"; read the code from `/_dev/sms`), 1 invalid mobile, 3 sent too recently, too many today for this mobile or too many requests from this address", body = ApiResponse<String>)))]
pub async fn send_code(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    ApiJson(req): ApiJson<SendCodeRequest>,
) -> ApiResult<Reply<&'static str>> {
    let mobile = req.mobile.trim();
    if !is_valid_mobile(mobile) {
        return Err(ApiError::InvalidMobile(req.mobile));
    }
    if !state.sms.has_test_code(mobile) {
        per_address(&state, addr)?;
    }
    let sms = match super::faults::sms(&state, mobile) {
        None => state.sms.send(mobile).await?,
        Some(SmsFault::Fail(fired)) => {
            super::faults::record_failed(&state, mobile, &fired).await;
            return Err(ApiError::refused(
                crate::wire::http::code::SERVER_ERROR,
                super::faults::SmsFailed(fired.label()),
            ));
        }
        Some(SmsFault::Delay(delay, fired)) => {
            let sms = state.sms.issue(mobile).await?;
            super::faults::deliver_later(&state, sms.clone(), delay, fired).await;
            sms
        }
    };
    state.telemetry.metrics.sms_sent.inc();
    let expires = chrono::DateTime::from_timestamp_millis(sms.expires_at)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%H:%M:%S")
                .to_string()
        })
        .unwrap_or_default();
    info!(
        "SMS to {}: code {}, expires {expires}",
        sms.mobile, sms.code
    );
    // Wildfire's answer; Android counts a success only with a `result`.
    Ok(Reply::ok("SUCCESS"))
}

/// Counts a `/send_code` or `/login` call against its address's budget.
pub(super) fn per_address(state: &AppState, addr: std::net::IpAddr) -> ApiResult<()> {
    let Some(window) = &state.login_rate else {
        return Ok(());
    };
    window.hit(addr).map_err(|retry_in| {
        tracing::debug!(client = %addr, "login rate limit reached");
        ApiError::TooMany(format!(
            "more than {} code requests and logins from this address in a minute (--logins-per-ip-per-minute); wait {}s",
            window.limit(),
            retry_in.as_secs().max(1)
        ))
    })
}

/// Checks that a client named itself and a known platform.
pub fn check_client(client_id: &str, platform: i32) -> ApiResult<()> {
    use crate::wire::limits;
    if client_id.trim().is_empty() {
        return Err(ApiError::InvalidParameter(
            "clientId is required: a stable id of this app install".into(),
        ));
    }
    limits::check_text("clientId", client_id, limits::MAX_CLIENT_ID)
        .and_then(|()| limits::check_platform(platform))
        .map_err(ApiError::InvalidParameter)
}

#[utoipa::path(post, path = "/login", tag = "login", request_body = LoginRequest,
    responses((status = 200, description = "`code` 0 logged in (the `authToken` header carries the session; `resetCode` lets `/reset_pwd` set a password within 10 minutes, once), 1 invalid mobile, 3 too many logins from this address, 5 code expired or burned, 6 wrong code, 13 banned, 15 bad clientId, platform or code",
        body = ApiResponse<SmsLoginResult>, headers(("authToken" = String, description = "the login session, on success")))))]
pub async fn login(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    urls: PublicUrls,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Reply<SmsLoginResult>> {
    let mobile = req.mobile.trim();
    if !is_valid_mobile(mobile) {
        return Err(ApiError::InvalidMobile(req.mobile));
    }
    check_client(&req.client_id, req.platform)?;
    let code = req.code.trim();
    // Scripts and tests log in with the super code (any length the operator
    // chose) or fixed test codes.
    if state.super_code.as_deref() != Some(code) {
        crate::wire::limits::check_text("code", code, crate::wire::limits::MAX_SMS_CODE)
            .map_err(ApiError::InvalidParameter)?;
        if !state.sms.has_test_code(mobile) {
            per_address(&state, addr)?;
        }
        state.sms.verify(mobile, code).await?;
    }
    let (user, register) = state.store.user_for_mobile(mobile).await?;
    let reply = logged_in(
        &state,
        &urls,
        &user,
        register,
        &req.client_id,
        req.platform,
        "sms",
    )
    .await?;
    let reset_code = state
        .accounts
        .issue(super::account::Purpose::Reset, &user.id)?;
    Ok(Reply {
        result: SmsLoginResult {
            login: reply.result,
            reset_code: Some(reset_code),
        },
        auth_token: reply.auth_token,
    })
}

/// The answer to a successful login (SMS or password): refused for a banned
/// user, else a new session (`authToken`) and IM token.
pub(super) async fn logged_in(
    state: &AppState,
    urls: &PublicUrls,
    user: &User,
    register: bool,
    client_id: &str,
    platform: i32,
    how: &'static str,
) -> ApiResult<Reply<LoginResult>> {
    if state.store.is_banned(&user.id).await? {
        return Err(ApiError::Banned(user.id.clone()));
    }
    let (result, auth_token) =
        sign_in(state, urls, user, register, client_id, platform, how).await?;
    Ok(Reply::with_auth_token(result, auth_token))
}

/// Signs in a user already known not to be banned (every login, SMS,
/// password or QR): a new session (`authToken`, returned beside the
/// result) and IM token.
pub(super) async fn sign_in(
    state: &AppState,
    urls: &PublicUrls,
    user: &User,
    register: bool,
    client_id: &str,
    platform: i32,
    how: &'static str,
) -> ApiResult<(LoginResult, String)> {
    let creds = state
        .issue_credentials(&user.id, client_id, platform)
        .await?;
    info!(user = ?user.id, platform, register, how, "login");
    state.telemetry.metrics.login(how);
    let result = LoginResult {
        user_id: user.id.clone(),
        token: creds.im_token,
        register,
        user_name: Some(user.display_name.clone()),
        portrait: urls.absolute(user.portrait.as_deref()),
        route_url: Some(urls.route_url()),
    };
    Ok((result, creds.auth_token))
}
