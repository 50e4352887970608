//! imctl's developer inspection API under `/_dev` (normal HTTP status codes).

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::qr::{QrError, Status};
use super::state::AppState;
use crate::http::advertise::PublicUrls;
use crate::wire::http::{
    ClusterStatus, DevError, DevPhoneAction, DevSnapshot, PcSessionInfo, SmsEntry, StackStatus,
    UserSummary,
};

/// The longest `/_dev/sms?wait=` honoured.
const MAX_WAIT: Duration = Duration::from_secs(120);

/// Entries a `/_dev` list answers by default and at most (`?limit=`):
/// whatever clients did, an answer stays small.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// `?limit=N` of the `/_dev` lists.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Entries to answer, newest first (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// The `limit` of a list, or why it is bad.
fn limit_of(limit: Option<usize>) -> Result<usize, String> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        n @ 1..=MAX_LIMIT => Ok(n),
        n => Err(format!("limit={n} must be between 1 and {MAX_LIMIT}")),
    }
}

fn list_query(query: Result<Query<ListQuery>, QueryRejection>) -> Result<usize, String> {
    match query {
        Ok(Query(q)) => limit_of(q.limit),
        Err(e) => Err(format!("{e}; expected ?limit=N")),
    }
}

fn bad_request(message: String) -> Response {
    dev_error(StatusCode::BAD_REQUEST, message)
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
    /// Entries to answer, newest first (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/_dev/sms", tag = "dev", params(SmsQuery),
    responses((status = 200, description = "SMS sent, newest first", body = Vec<SmsEntry>), (status = 400, description = "bad query (also a wait over 120 s)", body = DevError)))]
pub async fn sms(
    State(state): State<AppState>,
    query: Result<Query<SmsQuery>, QueryRejection>,
) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => {
            return bad_request(format!(
                "{e}; expected ?mobile=M&wait=SECONDS&since=MS&limit=N"
            ));
        }
    };
    let limit = match limit_of(q.limit) {
        Ok(n) => n,
        Err(e) => return bad_request(e),
    };
    let mobile = q.mobile.as_deref().filter(|m| !m.is_empty());
    let mut entries: Vec<SmsEntry> = match q.wait {
        // `!(..)` also catches NaN.
        Some(w) if !(w.is_finite() && (0.0..=MAX_WAIT.as_secs_f64()).contains(&w)) => {
            return bad_request(format!(
                "wait={w} must be a number of seconds from 0 to {}",
                MAX_WAIT.as_secs()
            ));
        }
        Some(w) => {
            let wait = Duration::from_secs_f64(w);
            tokio::select! {
                entries = state.sms.wait_outbox(mobile, q.since, wait) => entries,
                _ = state.shutdown.cancelled() => state.sms.outbox(mobile, q.since),
            }
        }
        None => state.sms.outbox(mobile, q.since),
    };
    entries.truncate(limit);
    Json(entries).into_response()
}

#[utoipa::path(get, path = "/_dev/pc_sessions", tag = "dev", params(ListQuery),
    responses((status = 200, description = "live QR sessions, newest first", body = Vec<PcSessionInfo>), (status = 400, description = "bad query", body = DevError)))]
pub async fn pc_sessions(
    State(state): State<AppState>,
    urls: PublicUrls,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    match list_query(query) {
        Ok(limit) => Json(on_host(&urls, state.qr.list(limit))).into_response(),
        Err(e) => bad_request(e),
    }
}

fn db_failed(e: crate::store::Error) -> Response {
    tracing::error!(error = %e, "database error");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(DevError {
            error: "database error; see the imctl log".into(),
        }),
    )
        .into_response()
}

#[utoipa::path(get, path = "/_dev/users", tag = "dev", params(ListQuery),
    responses((status = 200, description = "users, first created first", body = Vec<UserSummary>), (status = 400, description = "bad query", body = DevError), (status = 500, description = "database error", body = DevError)))]
pub async fn users(
    State(state): State<AppState>,
    urls: PublicUrls,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<UserSummary>>, Response> {
    let limit = list_query(query).map_err(bad_request)?;
    let users = state
        .store
        .first_users(limit as i64)
        .await
        .map_err(db_failed)?;
    Ok(Json(users.iter().map(|u| urls.summary(u)).collect()))
}

#[utoipa::path(get, path = "/_dev/status", tag = "dev", responses((status = 200, description = "version, addresses, counts", body = StackStatus), (status = 500, description = "database error", body = DevError)))]
/// `GET /_dev/status`: versions, addresses and counts, for `imctl status`.
pub async fn status(
    State(state): State<AppState>,
    urls: PublicUrls,
) -> Result<Json<StackStatus>, Response> {
    let users = state.store.user_count().await.map_err(db_failed)?;
    Ok(Json(stack_status(&state, &urls, users)))
}

fn stack_status(state: &AppState, urls: &PublicUrls, users: usize) -> StackStatus {
    let now = crate::store::now_ms();
    StackStatus {
        version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        started_at: state.started_at,
        uptime_ms: now - state.started_at,
        app_server: urls.app_server(),
        broker: urls.broker(),
        ws_url: urls.ws_url(),
        route_url: urls.route_url(),
        database: state.database.clone(),
        users,
        connections: state.broker.connections(),
        qr_sessions: state.qr.states().len(),
        clients: urls.client_settings(),
        cluster: state.cluster.as_ref().map(|c| ClusterStatus {
            node: c.node().to_owned(),
            nats_connected: c.is_connected(),
            nodes: c.live_nodes(),
            dropped_pushes: c.dropped_pushes(),
        }),
        faults: state.faults.list().iter().filter(|r| !r.spent).count(),
    }
}

/// How many of each list a snapshot carries (the status has the totals), so
/// a dashboard open during a benchmark stays cheap.
const FEED_LIMIT: usize = 100;

/// Everything the dashboard shows, now.
async fn snapshot(state: &AppState, urls: &PublicUrls) -> crate::store::Result<DevSnapshot> {
    let users = state.store.first_users(FEED_LIMIT as i64).await?;
    let status = stack_status(state, urls, state.store.user_count().await?);
    let messages = state.store.recent_messages(50).await?;
    let mut sms = state.sms.outbox(None, None);
    sms.truncate(50);
    let pc_sessions = on_host(urls, state.qr.list(FEED_LIMIT));
    Ok(DevSnapshot {
        status,
        sms,
        pc_sessions,
        connections: state
            .broker
            .list()
            .await
            .into_iter()
            .filter(|c| c.user_id != crate::wire::ids::ROBOT)
            .take(FEED_LIMIT)
            .collect(),
        messages,
        users: users.iter().map(|u| urls.summary(u)).collect(),
        faults: state.faults.list(),
        injected: state.faults.recent(50),
    })
}

#[utoipa::path(get, path = "/_dev/feed", tag = "dev",
    responses((status = 200, description = "Server-sent events named `snapshot`, each a JSON `DevSnapshot` (status with totals; the newest 50 SMS and messages; up to 100 QR sessions, connections and users): one at once, then one after every change (at most 4 a second) and at least every 5 s", content_type = "text/event-stream", body = String)))]
/// `GET /_dev/feed`: the dashboard's live data.
pub async fn feed(State(state): State<AppState>, urls: PublicUrls) -> Response {
    let watches = (
        state.sms.watch(),
        state.qr.activity.watch(),
        state.telemetry.activity.watch(),
        state.faults.activity().watch(),
    );
    let stream = futures_util::stream::unfold(
        (state, urls, watches, true),
        |(state, urls, (mut sms, mut qr, mut hub, mut faults), first)| async move {
            if !first {
                tokio::select! {
                    _ = sms.changed() => {}
                    _ = qr.changed() => {}
                    _ = hub.changed() => {}
                    _ = faults.changed() => {}
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = state.shutdown.cancelled() => return None,
                }
                // Coalesce bursts (a group commit, a login's several steps).
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            sms.borrow_and_update();
            qr.borrow_and_update();
            hub.borrow_and_update();
            faults.borrow_and_update();
            let event = match snapshot(&state, &urls).await {
                Ok(snap) => Event::default()
                    .event("snapshot")
                    .data(serde_json::to_string(&snap).expect("wire types serialize")),
                Err(e) => {
                    tracing::error!(error = %e, "database error");
                    Event::default()
                        .event("error")
                        .data("database error; see the imctl log")
                }
            };
            Some((
                Ok::<_, Infallible>(event),
                (state, urls, (sms, qr, hub, faults), false),
            ))
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[utoipa::path(post, path = "/_dev/pc_sessions/{token}/{action}", tag = "dev",
    params(("token" = String, Path, description = "the QR session token"), ("action" = String, Path, description = "`scan`, `approve` (scan if needed, then confirm) or `cancel` (scan if needed, then cancel)")),
    request_body = DevPhoneAction,
    responses(
        (status = 200, description = "the session afterwards", body = PcSessionInfo),
        (status = 400, description = "bad body or action", body = DevError),
        (status = 404, description = "no such session or user", body = DevError),
        (status = 409, description = "the session's state does not allow it (scanned by someone else, confirmed, cancelled)", body = DevError)))]
/// Plays the phone for a QR session without a phone login: the dashboard's
/// buttons (`imctl simulate` does the real phone's HTTP calls instead). A
/// quick-login request is already scanned, so only the user it asks can
/// approve or cancel it.
pub async fn phone_action(
    State(state): State<AppState>,
    urls: PublicUrls,
    Path((token, action)): Path<(String, String)>,
    body: Result<Json<DevPhoneAction>, JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => {
            return bad_request(format!(
                "{}; expected {{\"userId\": \"alice\"}}",
                e.body_text()
            ));
        }
    };
    if !matches!(action.as_str(), "scan" | "approve" | "cancel") {
        return bad_request(format!(
            "unknown action {action:?}: use scan, approve or cancel"
        ));
    }
    let user = match state.store.user(&req.user_id).await {
        Ok(Some(u)) => u,
        Ok(None) => return dev_error(StatusCode::NOT_FOUND, format!("no user {:?}", req.user_id)),
        Err(e) => return db_failed(e),
    };
    let qr = &state.qr;
    let session = match qr.get(&token) {
        Ok(s) => s,
        Err(e) => return dev_error(StatusCode::NOT_FOUND, e.to_string()),
    };
    let mut result = Ok(());
    if session.status() == Status::Created || action == "scan" {
        result = qr.scan(&token, user.summary()).await.map(drop);
    }
    if result.is_ok() {
        result = match action.as_str() {
            "approve" => qr.confirm(&token, &user.id).await.map(drop),
            "cancel" => qr.cancel(&token, &user.id).await.map(drop),
            _ => Ok(()),
        };
    }
    if let Err(e) = result {
        let status = if e == QrError::Missing {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::CONFLICT
        };
        return dev_error(status, e.to_string());
    }
    // Also right when the session is gone already (answered to a waiting PC).
    let info = qr.info(&session, tokio::time::Instant::now());
    Json(on_host(&urls, vec![info]).remove(0)).into_response()
}

/// Sessions with their scanner's portrait on the caller's host (`QrBook`
/// keeps it relative: the PC and the phone may reach us by different names).
fn on_host(urls: &PublicUrls, mut sessions: Vec<PcSessionInfo>) -> Vec<PcSessionInfo> {
    for scanner in sessions.iter_mut().filter_map(|s| s.scanner.as_mut()) {
        scanner.portrait = urls.absolute(scanner.portrait.as_deref());
    }
    sessions
}

fn dev_error(status: StatusCode, message: String) -> Response {
    (status, Json(DevError { error: message })).into_response()
}

#[utoipa::path(get, path = "/_dev/", tag = "dev", responses((status = 200, description = "the dev dashboard", content_type = "text/html", body = String)))]
/// `/_dev/`: the dashboard page.
pub async fn dashboard() -> Response {
    super::web::page(include_str!("web/dev.html"))
}
