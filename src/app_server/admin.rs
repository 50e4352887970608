//! The admin API under `/admin`, guarded by the admin secret, with ordinary
//! HTTP status codes and JSON bodies.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::sms::is_valid_mobile;
use super::state::AppState;
use crate::http::advertise::PublicUrls;
use crate::http::chat::WriteError;
use crate::store::{GroupChange, NewMessage, Refused, User, Why};
use crate::wire::http::{DevError, UserSummary};
use crate::wire::limits;
use crate::wire::ws::{Content, ConvType, Conversation, close};

pub use crate::wire::ids::ADMIN_ACTOR;

pub struct AdminError(StatusCode, String);

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        (self.0, Json(DevError { error: self.1 })).into_response()
    }
}

fn fail(status: StatusCode, message: impl Into<String>) -> AdminError {
    AdminError(status, message.into())
}

fn db(e: crate::store::Error) -> AdminError {
    tracing::error!(error = %e, "database error");
    fail(
        StatusCode::INTERNAL_SERVER_ERROR,
        "database error; see the imctl log",
    )
}

type AdminResult<T = Response> = Result<T, AdminError>;

/// A JSON body, or a 400 in our error shape saying what was wrong with it.
fn json_body(body: Result<Json<Value>, JsonRejection>) -> Result<Value, AdminError> {
    body.map(|Json(v)| v).map_err(|e| {
        fail(
            StatusCode::BAD_REQUEST,
            format!(
                "{}; send a JSON object with Content-Type: application/json",
                e.body_text()
            ),
        )
    })
}

/// Proof that the request carried the admin secret (`X-Admin-Secret`, or
/// `Authorization: Bearer <secret>`).
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = AdminError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let given = parts
            .headers
            .get("x-admin-secret")
            .and_then(|v| v.to_str().ok())
            .or_else(|| {
                parts
                    .headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
            });
        // Comparing digests keeps the comparison's time independent of the secret.
        match given {
            Some(g)
                if Sha256::digest(g.trim().as_bytes())
                    == Sha256::digest(state.admin_secret.trim().as_bytes()) =>
            {
                Ok(Admin)
            }
            Some(_) => Err(fail(StatusCode::UNAUTHORIZED, "wrong admin secret")),
            None => Err(fail(
                StatusCode::UNAUTHORIZED,
                "send the admin secret in X-Admin-Secret (it is in the imctl serve banner, or set it with --admin-secret)",
            )),
        }
    }
}

#[utoipa::path(get, path = "/admin/users", tag = "admin", security(("adminSecret" = [])),
    responses((status = 200, description = "all users, with ban state", body = serde_json::Value), (status = 401, description = "missing or wrong admin secret", body = DevError)))]
pub async fn users(_: Admin, State(state): State<AppState>) -> AdminResult {
    let users = state.store.admin_users().await.map_err(db)?;
    Ok(Json(json!({"users": users})).into_response())
}

#[utoipa::path(get, path = "/admin/export", tag = "admin", security(("adminSecret" = [])),
    responses((status = 200, description = "a data snapshot: users, friends, pending friend requests, groups, messages (docs/SNAPSHOTS.md)", body = serde_json::Value), (status = 401, description = "missing or wrong admin secret", body = DevError)))]
/// A snapshot of the data, for `imctl export` and `imctl serve --import`.
pub async fn export(_: Admin, State(state): State<AppState>) -> AdminResult {
    let snapshot = state.store.export().await.map_err(db)?;
    Ok(Json(snapshot).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewUser {
    user_id: Option<String>,
    mobile: Option<String>,
    display_name: String,
    portrait: Option<String>,
}

#[utoipa::path(post, path = "/admin/users", tag = "admin", security(("adminSecret" = [])), request_body(content = serde_json::Value, description = "see docs/ADMIN.md"),
    responses((status = 201, description = "the created user", body = UserSummary), (status = 400, description = "bad body", body = DevError), (status = 401, description = "missing or wrong admin secret", body = DevError), (status = 409, description = "a user with that id or mobile exists", body = DevError)))]
pub async fn create_user(
    _: Admin,
    State(state): State<AppState>,
    urls: PublicUrls,
    body: Result<Json<Value>, JsonRejection>,
) -> AdminResult {
    let req: NewUser = serde_json::from_value(json_body(body)?)
        .map_err(|e| fail(StatusCode::BAD_REQUEST, format!("bad body: {e}")))?;
    let id = req
        .user_id
        .unwrap_or_else(|| format!("u{}", crate::token::random_token(6)));
    if id.len() > 64 || !crate::store::is_valid_user_id(&id) {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "userId has 1 to 64 letters, digits, '-' or '_'",
        ));
    }
    if let Some(m) = &req.mobile
        && !is_valid_mobile(m)
    {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            format!("mobile {m:?} is not 1[3-9] followed by 9 digits"),
        ));
    }
    let name = req.display_name.trim();
    limits::check_text("displayName", name, limits::MAX_DISPLAY_NAME)
        .and_then(|()| {
            req.portrait
                .as_deref()
                .map_or(Ok(()), |p| limits::check_url("portrait", p))
        })
        .map_err(|e| fail(StatusCode::BAD_REQUEST, e))?;
    let user = User {
        id,
        mobile: req.mobile,
        display_name: name.to_owned(),
        portrait: req.portrait,
    };
    if !state.store.create_user(&user).await.map_err(db)? {
        return Err(fail(StatusCode::CONFLICT, "that userId or mobile is taken"));
    }
    Ok((StatusCode::CREATED, Json(urls.summary(&user))).into_response())
}

#[utoipa::path(get, path = "/admin/connections", tag = "admin", security(("adminSecret" = [])),
    responses((status = 200, description = "live WebSocket connections", body = serde_json::Value), (status = 401, description = "missing or wrong admin secret", body = DevError)))]
pub async fn connections(_: Admin, State(state): State<AppState>) -> AdminResult {
    Ok(Json(json!({"connections": state.broker.list().await})).into_response())
}

#[utoipa::path(post, path = "/admin/users/{user}/ban", tag = "admin", security(("adminSecret" = [])), params(("user" = String, Path)),
    responses((status = 200, description = "banned; their connections closed (4003)", body = serde_json::Value), (status = 401, description = "missing or wrong admin secret", body = DevError), (status = 404, description = "no such user", body = DevError)))]
pub async fn ban(_: Admin, State(state): State<AppState>, Path(user): Path<String>) -> AdminResult {
    if !state.store.set_banned(&user, true).await.map_err(db)? {
        return Err(fail(StatusCode::NOT_FOUND, format!("no user {user:?}")));
    }
    let closed = state
        .broker
        .close_user(&user, close::BANNED, "banned by an administrator")
        .await;
    tracing::info!(user = ?user, closed, "user banned");
    Ok(Json(json!({"userId": user, "banned": true, "closedConnections": closed})).into_response())
}

#[utoipa::path(post, path = "/admin/users/{user}/unban", tag = "admin", security(("adminSecret" = [])), params(("user" = String, Path)),
    responses((status = 200, description = "ban lifted", body = serde_json::Value), (status = 401, description = "missing or wrong admin secret", body = DevError), (status = 404, description = "no such user", body = DevError)))]
pub async fn unban(
    _: Admin,
    State(state): State<AppState>,
    Path(user): Path<String>,
) -> AdminResult {
    if !state.store.set_banned(&user, false).await.map_err(db)? {
        return Err(fail(StatusCode::NOT_FOUND, format!("no user {user:?}")));
    }
    Ok(Json(json!({"userId": user, "banned": false})).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MuteBody {
    user_id: Option<String>,
}

async fn set_mute(
    state: &AppState,
    group: &str,
    body: Option<Json<Value>>,
    muted: bool,
) -> AdminResult {
    let req: MuteBody = match body {
        Some(Json(v)) => serde_json::from_value(v)
            .map_err(|e| fail(StatusCode::BAD_REQUEST, format!("bad body: {e}")))?,
        None => MuteBody::default(),
    };
    if req.user_id.as_deref() == Some("") {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "userId must not be empty; leave it out to mute the whole group",
        ));
    }
    if !state
        .store
        .set_muted_in_group(group, req.user_id.as_deref(), muted)
        .await
        .map_err(db)?
    {
        return Err(fail(StatusCode::NOT_FOUND, format!("no group {group:?}")));
    }
    Ok(Json(json!({"group": group, "userId": req.user_id, "muted": muted})).into_response())
}

#[utoipa::path(post, path = "/admin/groups/{group}/mute", tag = "admin", security(("adminSecret" = [])), params(("group" = String, Path)), request_body(content = serde_json::Value, description = "see docs/ADMIN.md"),
    responses((status = 200, description = "muted: the whole group, or `members`", body = serde_json::Value), (status = 400, description = "bad body", body = DevError), (status = 401, description = "missing or wrong admin secret", body = DevError), (status = 404, description = "no such group", body = DevError)))]
pub async fn mute(
    _: Admin,
    State(state): State<AppState>,
    Path(group): Path<String>,
    body: Option<Json<Value>>,
) -> AdminResult {
    set_mute(&state, &group, body, true).await
}

#[utoipa::path(post, path = "/admin/groups/{group}/unmute", tag = "admin", security(("adminSecret" = [])), params(("group" = String, Path)), request_body(content = serde_json::Value, description = "see docs/ADMIN.md"),
    responses((status = 200, description = "unmuted", body = serde_json::Value), (status = 400, description = "bad body", body = DevError), (status = 401, description = "missing or wrong admin secret", body = DevError), (status = 404, description = "no such group", body = DevError)))]
pub async fn unmute(
    _: Admin,
    State(state): State<AppState>,
    Path(group): Path<String>,
    body: Option<Json<Value>>,
) -> AdminResult {
    set_mute(&state, &group, body, false).await
}

/// The admin API's answer to a write the broker's writer did not do.
fn write_failed(e: WriteError) -> AdminError {
    match e {
        WriteError::ShuttingDown => fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        ),
        WriteError::Failed(message) => fail(StatusCode::INTERNAL_SERVER_ERROR, message),
        WriteError::Refused(Refused { why, message }) => {
            let status = match why {
                Why::Missing => StatusCode::NOT_FOUND,
                Why::NotAllowed => StatusCode::FORBIDDEN,
                Why::Invalid => StatusCode::BAD_REQUEST,
                Why::Already => StatusCode::CONFLICT,
            };
            fail(status, message)
        }
    }
}

#[utoipa::path(post, path = "/admin/groups/{group}/dissolve", tag = "admin", security(("adminSecret" = [])), params(("group" = String, Path)),
    responses((status = 200, description = "dissolved, members notified", body = serde_json::Value), (status = 401, description = "missing or wrong admin secret", body = DevError), (status = 404, description = "no such group", body = DevError)))]
pub async fn dissolve(
    _: Admin,
    State(state): State<AppState>,
    Path(group): Path<String>,
) -> AdminResult {
    let change = GroupChange::Dissolve { group };
    let group = state
        .broker
        .change_group(ADMIN_ACTOR, change)
        .await
        .map_err(write_failed)?;
    Ok(Json(json!({"group": group})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemMessage {
    to: Conversation,
    text: String,
}

#[utoipa::path(post, path = "/admin/messages", tag = "admin", security(("adminSecret" = [])), request_body(content = serde_json::Value, description = "see docs/ADMIN.md"),
    responses((status = 200, description = "a system message stored and delivered", body = serde_json::Value), (status = 400, description = "bad body", body = DevError), (status = 401, description = "missing or wrong admin secret", body = DevError), (status = 404, description = "an unknown user or group among the recipients", body = DevError), (status = 413, description = "content larger than --max-frame", body = DevError)))]
/// Sends a text from the `system` sender to a user or to every member of a group.
pub async fn message(
    _: Admin,
    State(state): State<AppState>,
    body: Result<Json<Value>, JsonRejection>,
) -> AdminResult {
    let req: SystemMessage = serde_json::from_value(json_body(body)?)
        .map_err(|e| fail(StatusCode::BAD_REQUEST, format!("bad body: {e}")))?;
    // The same checks as a chat send: valid content, at most --max-frame.
    let text = Content::Text { text: req.text };
    text.validate()
        .map_err(|e| fail(StatusCode::BAD_REQUEST, e))?;
    text.validate_within(state.broker.max_frame())
        .map_err(|e| fail(StatusCode::PAYLOAD_TOO_LARGE, e))?;
    let content = serde_json::to_value(&text).expect("content serializes");
    let recipients = match req.to.kind {
        ConvType::Single => match state.store.user(&req.to.target).await.map_err(db)? {
            Some(u) => vec![u.id],
            None => {
                return Err(fail(
                    StatusCode::NOT_FOUND,
                    format!("no user {:?}", req.to.target),
                ));
            }
        },
        ConvType::Group => {
            let members = state
                .store
                .group_members(&req.to.target)
                .await
                .map_err(db)?;
            if members.is_empty() {
                return Err(fail(
                    StatusCode::NOT_FOUND,
                    format!("no group {:?}", req.to.target),
                ));
            }
            members
        }
    };
    let msg = NewMessage {
        sender: "system".into(),
        conv: req.to,
        content,
        client_msg_id: None,
        recipients: Some(recipients),
    };
    let m = state.broker.send(msg).await.map_err(write_failed)?;
    Ok(Json(json!({"msgId": m.msg_id, "serverTime": m.server_time})).into_response())
}
