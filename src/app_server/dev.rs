//! imctl's developer inspection API under `/_dev` (normal HTTP status codes).

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::state::AppState;
use crate::wire::http::{DevError, PcSessionInfo, SmsEntry, UserSummary};

/// The longest `/_dev/sms?wait=` honoured.
const MAX_WAIT: Duration = Duration::from_secs(120);

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(DevError { error: message })).into_response()
}

#[derive(Debug, Deserialize)]
pub struct SmsQuery {
    mobile: Option<String>,
    /// Seconds to wait for a matching SMS when there is none yet.
    wait: Option<f64>,
    /// Only SMS sent after this time (ms since the epoch).
    since: Option<i64>,
}

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

pub async fn pc_sessions(State(state): State<AppState>) -> Json<Vec<PcSessionInfo>> {
    Json(state.qr.list())
}

pub async fn users(State(state): State<AppState>) -> Result<Json<Vec<UserSummary>>, Response> {
    let users = state.store.users().await.map_err(|e| {
        tracing::error!(error = %e, "database error");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(DevError {
                error: "database error; see the imctl log".into(),
            }),
        )
            .into_response()
    })?;
    Ok(Json(users.iter().map(|u| state.summary(u)).collect()))
}
