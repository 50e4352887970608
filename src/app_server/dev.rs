//! imctl's developer inspection API under `/_dev` (normal HTTP status codes).

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::state::AppState;
use crate::wire::http::{DevError, PcSessionInfo, SmsEntry, StackStatus, UserSummary};

/// The longest `/_dev/sms?wait=` honoured.
const MAX_WAIT: Duration = Duration::from_secs(120);

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(DevError { error: message })).into_response()
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SmsQuery {
    /// Only SMS to this mobile.
    mobile: Option<String>,
    /// Seconds to wait for a matching SMS when there is none yet (at most 120).
    #[param(minimum = 0.0)]
    wait: Option<f64>,
    /// Only SMS sent after this time (ms since the epoch).
    since: Option<i64>,
}

#[utoipa::path(get, path = "/_dev/sms", tag = "dev", params(SmsQuery),
    responses((status = 200, description = "SMS sent, newest first", body = Vec<SmsEntry>), (status = 400, description = "bad query", body = DevError)))]
pub async fn sms(
    State(state): State<AppState>,
    query: Result<Query<SmsQuery>, QueryRejection>,
) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return bad_request(format!("{e}; expected ?mobile=M&wait=SECONDS&since=MS")),
    };
    let mobile = q.mobile.as_deref().filter(|m| !m.is_empty());
    let entries: Vec<SmsEntry> = match q.wait {
        Some(w) if !(w.is_finite() && w >= 0.0) => {
            return bad_request(format!("wait={w} must be a number of seconds ≥ 0"));
        }
        Some(w) => {
            let wait = Duration::from_secs_f64(w).min(MAX_WAIT);
            tokio::select! {
                entries = state.sms.wait_outbox(mobile, q.since, wait) => entries,
                _ = state.shutdown.cancelled() => state.sms.outbox(mobile, q.since),
            }
        }
        None => state.sms.outbox(mobile, q.since),
    };
    Json(entries).into_response()
}

#[utoipa::path(get, path = "/_dev/pc_sessions", tag = "dev", responses((status = 200, description = "live QR sessions, newest first", body = Vec<PcSessionInfo>)))]
pub async fn pc_sessions(State(state): State<AppState>) -> Json<Vec<PcSessionInfo>> {
    Json(state.qr.list())
}

fn db_failed(e: sqlx::Error) -> Response {
    tracing::error!(error = %e, "database error");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(DevError {
            error: "database error; see the imctl log".into(),
        }),
    )
        .into_response()
}

#[utoipa::path(get, path = "/_dev/users", tag = "dev", responses((status = 200, description = "every user", body = Vec<UserSummary>), (status = 500, description = "database error", body = DevError)))]
pub async fn users(State(state): State<AppState>) -> Result<Json<Vec<UserSummary>>, Response> {
    let users = state.store.users().await.map_err(db_failed)?;
    Ok(Json(users.iter().map(|u| state.summary(u)).collect()))
}

#[utoipa::path(get, path = "/_dev/status", tag = "dev", responses((status = 200, description = "version, addresses, counts", body = StackStatus), (status = 500, description = "database error", body = DevError)))]
/// `GET /_dev/status`: versions, addresses and counts, for `imctl status`.
pub async fn status(State(state): State<AppState>) -> Result<Json<StackStatus>, Response> {
    let users = state.store.users().await.map_err(db_failed)?.len();
    let now = crate::store::now_ms();
    Ok(Json(StackStatus {
        version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        started_at: state.started_at,
        uptime_ms: now - state.started_at,
        app_server: state.base_url.clone(),
        broker: state.broker_url.clone(),
        ws_url: format!("{}/ws", state.broker_url.replacen("http://", "ws://", 1)),
        route_url: state.route_url.clone(),
        database: state.database.as_ref().map(|p| p.display().to_string()),
        users,
        connections: state.broker.hub.connections(),
        qr_sessions: state.qr.states().len(),
    }))
}
