//! Web/PC QR login: `/pc_session`, `/session_login/{token}`, `/scan_pc/{token}`,
//! `/confirm_pc`, `/cancel_pc`, the QR pictures, and the QR state as
//! server-sent events.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{StreamExt, stream};
use serde::Serialize;
use tokio::time::Instant;

use super::extract::{AuthUser, HeaderUser};
use super::login::{check_client, sign_in};
use super::qr::{PollOutcome, QrError, QrSession, Status};
use super::state::AppState;
use crate::http::advertise::PublicUrls;
use crate::http::reply::{Reply, coded, status};
use crate::http::{ApiError, ApiResult};
use crate::http::{ApiJson, ClientAddr};
use crate::qr_image;
use crate::wire::http::{
    ApiResponse, CancelPcRequest, ConfirmPcRequest, Empty, LoginResult, PcSessionRequest,
    PcSessionResult, PollTimeout, QrStatusEvent, ScannedResult, code,
};
use crate::wire::limits;
use crate::wire::ws::{PcLoginRequest, Push};

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

#[utoipa::path(post, path = "/pc_session", tag = "qr login", request_body = PcSessionRequest,
    responses((status = 200, description = "`code` 0 with the new session: status 0, or with `flag: 1` and a valid login session (`authToken` header) status 1 bound to that session's user (`userId`), whose devices get a `pc_login_request` push; 3 too many live QR sessions (in all, from this address, or quick-login requests for this user), 15 bad clientId, platform, device_name or flag", body = ApiResponse<PcSessionResult>)))]
pub async fn pc_session(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    user: Option<AuthUser>,
    ApiJson(req): ApiJson<PcSessionRequest>,
) -> ApiResult<Reply<PcSessionResult>> {
    check_client(&req.client_id, req.platform)?;
    let device = req
        .device_name
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .unwrap_or("unknown device");
    limits::check_optional_text("device_name", device, limits::MAX_DEVICE_NAME)
        .map_err(ApiError::InvalidParameter)?;
    let quick = match req.flag.unwrap_or(0) {
        0 => false,
        1 => true,
        other => {
            return Err(ApiError::InvalidParameter(format!(
                "flag must be 0 (QR login) or 1 (quick login), not {other}"
            )));
        }
    };
    // Quick login binds to the login session's user, never the body's
    // `userId`; without a valid session of that user (a page remembering
    // bob while the cookie says alice) it is an ordinary QR login.
    let named = req.user_id.as_deref().filter(|u| !u.is_empty());
    let user = user.filter(|AuthUser(u)| quick && named.is_none_or(|n| n == u.id));
    let session = match user {
        Some(AuthUser(user)) => {
            let session = state
                .qr
                .create_quick(addr, &req.client_id, req.platform, device, user.summary())
                .await?;
            tell_devices(&state, &user.id, &session);
            session
        }
        None => {
            state
                .qr
                .create(addr, &req.client_id, req.platform, device)
                .await?
        }
    };
    super::faults::on_created(&state, &session).await;
    Ok(Reply::ok(session_result(&state, &session)))
}

/// Asks every connected device of `user` to confirm a quick login.
fn tell_devices(state: &AppState, user: &str, s: &QrSession) {
    let push = Push::PcLoginRequest(PcLoginRequest {
        token: s.token.clone(),
        platform: s.platform,
        device_name: s.device_name.clone(),
        client_id: Some(s.client_id.clone()),
        expires_in_ms: s.expires_in().as_millis() as i64,
    });
    state.broker.push(user, push.frame());
}

/// How a PC's wait ended, as the long poll and the event stream both tell it.
enum Answer {
    Scanned(ScannedResult),
    LoggedIn(LoginResult, String),
    Cancelled,
    TimedOut(Status),
    Expired,
    ShuttingDown,
}

const SCANNED: &str = "scanned; waiting for the user to confirm on the phone";
const CANCELLED: &str = "the login was cancelled on the phone; create a new QR session";
const TIMED_OUT: &str =
    "no change before the long poll timed out; the session is still live, poll again";
const SHUTTING_DOWN: &str = "the server is shutting down; poll again when it is back";

async fn answer(state: &AppState, urls: &PublicUrls, outcome: PollOutcome) -> ApiResult<Answer> {
    Ok(match outcome {
        PollOutcome::Scanned(user) => Answer::Scanned(ScannedResult {
            user_id: user.user_id,
            user_name: user.display_name,
            portrait: urls.absolute(user.portrait.as_deref()),
        }),
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
            let (result, auth_token) =
                sign_in(state, urls, &user, false, &client_id, platform, "qr").await?;
            Answer::LoggedIn(result, auth_token)
        }
        PollOutcome::Cancelled => Answer::Cancelled,
        PollOutcome::TimedOut(live) => Answer::TimedOut(live),
        PollOutcome::Expired => Answer::Expired,
        PollOutcome::ShuttingDown => Answer::ShuttingDown,
    })
}

impl Answer {
    /// The `/session_login` answer.
    fn into_response(self) -> Response {
        match self {
            Answer::Scanned(who) => coded(code::SESSION_SCANNED, SCANNED, who),
            Answer::LoggedIn(result, auth) => Reply::with_auth_token(result, auth).into_response(),
            Answer::Cancelled => status(code::SESSION_CANCELLED, CANCELLED),
            Answer::TimedOut(live) => coded(
                code::SESSION_EXPIRED,
                TIMED_OUT,
                PollTimeout {
                    status: live as i32,
                },
            ),
            Answer::Expired => status(code::SESSION_EXPIRED, &QrError::Missing.to_string()),
            Answer::ShuttingDown => status(code::SESSION_EXPIRED, SHUTTING_DOWN),
        }
    }

    /// The same answer as a server-sent event named after what happened:
    /// the long poll's body, with `authToken` beside `result` on success.
    /// `None` for a poll timeout, which a stream never reports.
    fn into_event(self) -> Option<Event> {
        let (name, body) = match self {
            Answer::Scanned(who) => ("scanned", body(code::SESSION_SCANNED, SCANNED, Some(who))),
            Answer::LoggedIn(result, auth) => {
                let mut body = body(code::SUCCESS, "success", Some(result));
                body["authToken"] = auth.into();
                ("confirmed", body)
            }
            Answer::Cancelled => (
                "cancelled",
                body::<()>(code::SESSION_CANCELLED, CANCELLED, None),
            ),
            Answer::TimedOut(_) => return None,
            Answer::Expired => (
                "expired",
                body::<()>(code::SESSION_EXPIRED, &QrError::Missing.to_string(), None),
            ),
            Answer::ShuttingDown => (
                "shutdown",
                body::<()>(code::SESSION_EXPIRED, SHUTTING_DOWN, None),
            ),
        };
        Some(Event::default().event(name).data(body.to_string()))
    }
}

fn body<T: Serialize>(code: i32, message: &str, result: Option<T>) -> serde_json::Value {
    serde_json::to_value(ApiResponse {
        code,
        message: message.to_owned(),
        result,
    })
    .expect("wire types serialize")
}

#[utoipa::path(post, path = "/session_login/{token}", tag = "qr login", params(("token" = String, Path, description = "the QR session token")),
    responses((status = 200, description = "Long poll (up to `--poll-timeout`). `code` 9 scanned (`result` = `ScannedResult`), 0 confirmed (`result` = `LoginResult`, `authToken` header), 18 cancelled, 8 poll timed out (`result` = `PollTimeout`, poll again) or session gone (no `result`), 15 another poll is waiting",
        body = ApiResponse<serde_json::Value>, headers(("authToken" = String, description = "the login session, on code 0")))))]
pub async fn session_login(
    State(state): State<AppState>,
    urls: PublicUrls,
    Path(token): Path<String>,
) -> ApiResult<Response> {
    super::faults::on_request(&state, &token).await;
    let outcome = state
        .qr
        .poll(&token, state.poll_timeout, &state.shutdown)
        .await?;
    Ok(answer(&state, &urls, outcome).await?.into_response())
}

#[utoipa::path(get, path = "/pc_session/{token}/events", tag = "qr login", params(("token" = String, Path, description = "the QR session token")),
    responses(
        (status = 200, description = "Server-sent events: `status` (`QrStatusEvent`), then `scanned`, `confirmed` (with `authToken` beside `result`), `cancelled`, `expired`, `shutdown` or `failed`, each carrying the long poll's body", content_type = "text/event-stream", body = String),
        (status = 404, description = "no such session (code 8)", body = ApiResponse<Empty>),
        (status = 409, description = "another waiter (stream or long poll) holds the session (code 15)", body = ApiResponse<Empty>)))]
/// `GET /pc_session/{token}/events`: the long poll as a server-sent event
/// stream. A `status` event first (the state now), then one event per change
/// until the login ends. Takes the session's waiter slot like a long poll.
pub async fn session_events(
    State(state): State<AppState>,
    urls: PublicUrls,
    Path(token): Path<String>,
) -> Response {
    super::faults::on_request(&state, &token).await;
    let waiter = match state.qr.wait_on(&token).await {
        Ok(w) => w,
        Err(e) => {
            let http = match e {
                QrError::AlreadyPolling => StatusCode::CONFLICT,
                _ => StatusCode::NOT_FOUND,
            };
            let e = ApiError::from(e);
            return (http, Json(body::<()>(e.code(), &e.to_string(), None))).into_response();
        }
    };
    let first = status_event(&urls, waiter.session());
    let rest = stream::unfold(Some((state, urls, waiter)), |slot| async move {
        let (state, urls, mut waiter) = slot?;
        loop {
            // The session's expiry ends the wait first; this only bounds it.
            let deadline = Instant::now() + waiter.session().expires_in() + Duration::from_secs(1);
            let outcome = state.qr.next(&mut waiter, deadline, &state.shutdown).await;
            let more = matches!(outcome, PollOutcome::Scanned(_));
            let event = match answer(&state, &urls, outcome).await {
                Ok(a) => match a.into_event() {
                    Some(e) => e,
                    None => continue,
                },
                Err(e) => {
                    if let ApiError::Database(db) = &e {
                        tracing::error!(error = %db, "database error");
                    }
                    Event::default()
                        .event("failed")
                        .data(body::<()>(e.code(), &e.to_string(), None).to_string())
                }
            };
            return Some((event, more.then_some((state, urls, waiter))));
        }
    });
    Sse::new(
        stream::once(async { first })
            .chain(rest)
            .map(Ok::<_, Infallible>),
    )
    .keep_alive(KeepAlive::default())
    .into_response()
}

fn status_event(urls: &PublicUrls, s: &QrSession) -> Event {
    let status = s.status();
    let data = QrStatusEvent {
        status: status as i32,
        status_name: status.name().into(),
        expires_in_ms: s.expires_in().as_millis() as i64,
        scanner: s.scanner().map(|u| ScannedResult {
            portrait: urls.absolute(u.portrait.as_deref()),
            user_id: u.user_id,
            user_name: u.display_name,
        }),
    };
    Event::default()
        .event("status")
        .data(serde_json::to_string(&data).expect("wire types serialize"))
}

#[utoipa::path(post, path = "/scan_pc/{token}", tag = "qr login", params(("token" = String, Path, description = "the QR session token")), security(("authToken" = [])),
    responses((status = 200, description = "`code` 0 scanned (status 1), 8 session gone, 13 not logged in, 15 scanned by someone else or confirmed, 18 cancelled", body = ApiResponse<PcSessionResult>)))]
pub async fn scan_pc(
    State(state): State<AppState>,
    HeaderUser(user): HeaderUser,
    Path(token): Path<String>,
) -> ApiResult<Reply<PcSessionResult>> {
    super::faults::on_request(&state, &token).await;
    let session = state.qr.scan(&token, user.summary()).await?;
    Ok(Reply::ok(session_result(&state, &session)))
}

#[utoipa::path(post, path = "/confirm_pc", tag = "qr login", request_body = ConfirmPcRequest, security(("authToken" = [])),
    responses((status = 200, description = "`code` 0 confirmed (status 2), 8 session gone, 10 not scanned, 13 not logged in, 15 scanned by (or quick login bound to) another user, or already confirmed, 18 cancelled. The body's `user_id` is ignored: the logged-in user confirms", body = ApiResponse<PcSessionResult>)))]
pub async fn confirm_pc(
    State(state): State<AppState>,
    HeaderUser(user): HeaderUser,
    ApiJson(req): ApiJson<ConfirmPcRequest>,
) -> ApiResult<Reply<PcSessionResult>> {
    super::faults::on_request(&state, &req.token).await;
    let session = state.qr.confirm(&req.token, &user.id).await?;
    Ok(Reply::ok(session_result(&state, &session)))
}

#[utoipa::path(post, path = "/cancel_pc", tag = "qr login", request_body = CancelPcRequest, security(("authToken" = [])),
    responses((status = 200, description = "`code` 0 cancelled (status 4), 8 session gone, 10 not scanned, 13 not logged in, 15 wrong user", body = ApiResponse<PcSessionResult>)))]
pub async fn cancel_pc(
    State(state): State<AppState>,
    HeaderUser(user): HeaderUser,
    ApiJson(req): ApiJson<CancelPcRequest>,
) -> ApiResult<Reply<PcSessionResult>> {
    super::faults::on_request(&state, &req.token).await;
    let session = state.qr.cancel(&req.token, &user.id).await?;
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

#[utoipa::path(get, path = "/pc_session/{token}/qr.svg", tag = "qr login", params(("token" = String, Path, description = "the QR session token")),
    responses((status = 200, description = "the QR code", content_type = "image/svg+xml", body = String), (status = 404, description = "no such session", content_type = "text/plain", body = String)))]
pub async fn qr_svg(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    qr_picture(&state, &token, "image/svg+xml", |t| {
        qr_image::svg(t).into_bytes()
    })
}

#[utoipa::path(get, path = "/pc_session/{token}/qr.png", tag = "qr login", params(("token" = String, Path, description = "the QR session token")),
    responses((status = 200, description = "the QR code", content_type = "image/png", body = Vec<u8>), (status = 404, description = "no such session", content_type = "text/plain", body = String)))]
pub async fn qr_png(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    qr_picture(&state, &token, "image/png", qr_image::png)
}
