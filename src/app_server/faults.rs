//! The app-server's side of `imctl chaos`: the `/_dev/faults` API, the
//! middleware that bends login API answers (`api.*`), and the QR and SMS
//! faults. The broker applies the `ws.*` and `route.dead` ones.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{OptionalFromRequestParts, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use super::extract::AuthUser;
use super::qr::QrSession;
use super::state::AppState;
use crate::fault::{Fired, Subject};
use crate::wire::fault::{Kind, Rule};
use crate::wire::http::{DevError, FaultAdd, FaultInfo, FaultList, FaultsCleared, SmsEntry};
use crate::wire::limits;

/// The header on every answer an injected fault shaped, so a client's
/// developer can tell it from a real failure.
pub const FAULT_HEADER: &str = "x-imctl-fault";

/// Marks an answer a fault made instead of the handler (not logged as a
/// failed response: it has its `injected:` line).
#[derive(Clone, Copy, Debug)]
pub struct Injected;

/// How long `api.hang` holds a request when the rule gives no `ms`.
pub const HANG_MAX: Duration = Duration::from_secs(600);

const API_KINDS: [Kind; 5] = [
    Kind::ApiDelay,
    Kind::ApiCut,
    Kind::ApiHang,
    Kind::ApiHttp,
    Kind::ApiCode,
];

#[utoipa::path(get, path = "/_dev/faults", tag = "dev",
    responses((status = 200, description = "the fault rules and the newest injections", body = FaultList)))]
/// `GET /_dev/faults`: the rules (`imctl chaos list`).
pub async fn list(State(state): State<AppState>) -> Json<FaultList> {
    Json(FaultList {
        rules: state.faults.list(),
        injected: state.faults.recent(crate::fault::RECENT),
    })
}

#[utoipa::path(post, path = "/_dev/faults", tag = "dev", request_body = FaultAdd,
    responses(
        (status = 201, description = "the rule, with its id", body = FaultInfo),
        (status = 400, description = "a bad rule: the message names the bad part", body = DevError),
        (status = 409, description = "100 rules are live already", body = DevError)))]
/// `POST /_dev/faults`: adds a rule (`imctl chaos add`). Rules on live
/// things (`qr.expire`, `ws.close` …) act at once on what matches now.
pub async fn add(
    State(state): State<AppState>,
    body: Result<Json<FaultAdd>, JsonRejection>,
) -> Response {
    let Json(FaultAdd { rule }) = match body {
        Ok(b) => b,
        Err(e) => {
            return dev_error(
                StatusCode::BAD_REQUEST,
                format!("{}; send {{\"rule\": \"KIND key=value …\"}}", e.body_text()),
            );
        }
    };
    let rule: Rule = match rule.parse() {
        Ok(r) => r,
        Err(e) => return dev_error(StatusCode::BAD_REQUEST, format!("bad rule: {e}")),
    };
    let info = match state.faults.add(rule) {
        Ok(info) => info,
        Err(e) => return dev_error(StatusCode::CONFLICT, e.to_string()),
    };
    apply_now(&state, info.id).await;
    // Read again: acting at once may have fired it.
    let info = state
        .faults
        .list()
        .into_iter()
        .find(|r| r.id == info.id)
        .unwrap_or(info);
    (StatusCode::CREATED, Json(info)).into_response()
}

#[utoipa::path(delete, path = "/_dev/faults", tag = "dev",
    responses((status = 200, description = "every rule removed", body = FaultsCleared)))]
/// `DELETE /_dev/faults`: removes every rule (`imctl chaos clear`).
pub async fn clear_all(State(state): State<AppState>) -> Response {
    let cleared = state.faults.clear(None).unwrap_or(0);
    Json(FaultsCleared { cleared }).into_response()
}

#[utoipa::path(delete, path = "/_dev/faults/{id}", tag = "dev",
    params(("id" = u64, Path, description = "the rule's id (`imctl chaos list`)")),
    responses(
        (status = 200, description = "the rule removed", body = FaultsCleared),
        (status = 400, description = "not a number", body = DevError),
        (status = 404, description = "no such rule", body = DevError)))]
/// `DELETE /_dev/faults/{id}`: removes one rule (`imctl chaos clear ID`).
pub async fn clear(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return dev_error(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not a rule id; `imctl chaos list` shows them"),
        );
    };
    match state.faults.clear(Some(id)) {
        Ok(cleared) => Json(FaultsCleared { cleared }).into_response(),
        Err(e) => dev_error(StatusCode::NOT_FOUND, e.to_string()),
    }
}

fn dev_error(status: StatusCode, error: String) -> Response {
    (status, Json(DevError { error })).into_response()
}

/// Applies rule `rule`, just added, to what is live now if it acts on live
/// things: QR sessions here, connections in the broker.
pub async fn apply_now(state: &AppState, rule: u64) {
    let sessions = state.qr.list(usize::MAX);
    let newest = state.qr.newest();
    for s in &sessions {
        if let Ok(session) = state.qr.get(&s.token) {
            let latest = newest.as_deref() == Some(s.token.as_str());
            qr_rules(state, &session, latest, Moment::Added(rule)).await;
        }
    }
    state.broker.apply_fault(rule);
}

/// When the QR rules are checked for a session.
#[derive(Clone, Copy)]
enum Moment {
    /// Rule `id` was just added: it alone, both kinds.
    Added(u64),
    /// The session was just created: `qr.ttl`.
    Created,
    /// A request names the session: `qr.expire`.
    Request,
}

/// `qr.ttl` and `qr.expire` for one session, as `moment` calls for.
async fn qr_rules(state: &AppState, session: &QrSession, latest: bool, moment: Moment) {
    let pick = |id: u64, _: &Rule| !matches!(moment, Moment::Added(rule) if rule != id);
    let ttl = !matches!(moment, Moment::Request);
    let expire = !matches!(moment, Moment::Created);
    let subject = Subject {
        token: Some(&session.token),
        latest,
        client: Some(&session.client_id),
        platform: Some(session.platform),
        ..Default::default()
    };
    let short = &session.token[..8];
    if ttl && let Some(fired) = state.faults.check_where(Kind::QrTtl, &subject, pick) {
        let ms = fired.rule.ms.unwrap_or(0);
        let at = Instant::now() + Duration::from_millis(ms).saturating_sub(session.age());
        if state.qr.set_expiry(&session.token, at).await.is_ok() {
            let detail = format!("QR session {short}… now lives {ms} ms from its creation");
            state.faults.injected(&fired, &detail);
        }
    }
    if expire
        && let Some(fired) = state.faults.check_where(Kind::QrExpire, &subject, pick)
        && state
            .qr
            .set_expiry(&session.token, Instant::now())
            .await
            .is_ok()
    {
        let detail = format!("QR session {short}… expired now");
        state.faults.injected(&fired, &detail);
    }
}

/// The QR rules for a session just created (it is the newest).
pub async fn on_created(state: &AppState, session: &QrSession) {
    if state.faults.active(Kind::QrTtl) {
        qr_rules(state, session, true, Moment::Created).await;
    }
}

/// The QR rules for a session a request names (a pending `qr.expire`
/// acts on the next request).
pub async fn on_request(state: &AppState, token: &str) {
    if !state.faults.active(Kind::QrExpire) {
        return;
    }
    if let Ok(session) = state.qr.get(token) {
        let latest = state.qr.newest().as_deref() == Some(token);
        qr_rules(state, &session, latest, Moment::Request).await;
    }
}

/// How an injected fault changes a `/send_code`.
pub enum SmsFault {
    /// Deliver the code after this long.
    Delay(Duration, Fired),
    /// Send nothing: the answer is code 4.
    Fail(Fired),
}

/// The answer to a `/send_code` an injected `sms.fail` failed (code 4).
#[derive(Debug, thiserror::Error)]
#[error("could not send the SMS (injected by fault {0}); try again")]
pub struct SmsFailed(pub String);

pub fn sms(state: &AppState, mobile: &str) -> Option<SmsFault> {
    let subject = Subject {
        mobile: Some(mobile),
        ..Default::default()
    };
    if let Some(fired) = state.faults.check(Kind::SmsFail, &subject) {
        return Some(SmsFault::Fail(fired));
    }
    let fired = state.faults.check(Kind::SmsDelay, &subject)?;
    let ms = fired.rule.ms.unwrap_or(0);
    Some(SmsFault::Delay(Duration::from_millis(ms), fired))
}

/// Delivers `entry` after `delay` (an injected `sms.delay`); the code is
/// valid from the start, as when a real SMS is slow.
pub async fn deliver_later(state: &AppState, mut entry: SmsEntry, delay: Duration, fired: Fired) {
    if !state.sms.hold() {
        tracing::warn!(
            "{} SMS are held back by sms.delay already; this one goes at once",
            super::sms::MAX_HELD
        );
        state.sms.deliver(entry).await;
        return;
    }
    let detail = format!(
        "the SMS to {:?} arrives in {} ms",
        entry.mobile,
        delay.as_millis()
    );
    state.faults.injected(&fired, &detail);
    entry.fault = Some(format!(
        "delayed {} ms by an injected fault ({})",
        delay.as_millis(),
        fired.label()
    ));
    let state = state.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = state.shutdown.cancelled() => {
                state.sms.unhold();
                return;
            }
        }
        entry.sent_at = crate::store::now_ms();
        state.sms.deliver(entry).await;
        state.sms.unhold();
    });
}

/// Records an injected `sms.fail` in the outbox, as a gateway's failure report.
pub async fn record_failed(state: &AppState, mobile: &str, fired: &Fired) {
    state
        .faults
        .injected(fired, &format!("the SMS to {mobile:?} failed"));
    let now = crate::store::now_ms();
    state
        .sms
        .deliver(SmsEntry {
            mobile: mobile.to_owned(),
            code: String::new(),
            text: "[imctl] not delivered: the SMS gateway failed (an injected fault)".into(),
            sent_at: now,
            expires_at: now,
            fault: Some(format!("failed by an injected fault ({})", fired.label())),
        })
        .await;
}

/// The `api.*` rules: delays, cuts, hangs, or answers instead of the real
/// handler. The dev and admin APIs are never bent (`imctl chaos clear`
/// must always work).
pub async fn inject(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let faults = &state.faults;
    if !API_KINDS.iter().any(|k| faults.active(*k)) || !bendable(req.uri().path()) {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    // The body's fields scope rules (mobile, userId, token, clientId,
    // platform): read it when it is a small JSON object.
    let json_len = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .filter(|&n| n <= limits::MAX_JSON_BODY);
    let (body, fields) = match json_len {
        Some(_) => match axum::body::to_bytes(body, limits::MAX_JSON_BODY).await {
            Ok(bytes) => {
                let fields = serde_json::from_slice::<serde_json::Value>(&bytes).ok();
                (axum::body::Body::from(bytes), fields)
            }
            Err(e) => {
                return dev_error(
                    StatusCode::BAD_REQUEST,
                    format!("could not read the request body: {e}"),
                );
            }
        },
        None => (body, None),
    };
    let field = |name: &str| {
        fields
            .as_ref()
            .and_then(|f| f.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let path = parts.uri.path().to_owned();
    let token = token_in_path(&path).or_else(|| field("token"));
    let mut user = field("userId").or_else(|| field("user_id"));
    if user.is_none()
        && let Ok(Some(AuthUser(u))) =
            <AuthUser as OptionalFromRequestParts<AppState>>::from_request_parts(&mut parts, &state)
                .await
    {
        user = Some(u.id);
    }
    let platform = fields
        .as_ref()
        .and_then(|f| f.get("platform"))
        .and_then(|v| v.as_i64())
        .map(|p| p as i32);
    let latest = token.is_some() && state.qr.newest() == token;
    let (mobile, client) = (field("mobile"), field("clientId"));
    let subject = Subject {
        path: Some(&path),
        user: user.as_deref(),
        mobile: mobile.as_deref(),
        token: token.as_deref(),
        latest,
        client: client.as_deref(),
        platform,
    };
    let method = parts.method.clone();
    // Quoted, and a QR token in it shortened: logs never hold a usable one.
    let shown = match &token {
        Some(t) if t.len() > 8 && path.contains(t.as_str()) => {
            path.replace(t.as_str(), &format!("{}…", &t[..8]))
        }
        _ => path.clone(),
    };
    let what = format!("{method} {shown:?}");
    let mut body = Some(body);
    let mut labels = Vec::new();
    if let Some(fired) = faults.check(Kind::ApiDelay, &subject) {
        let ms = fired.rule.ms.unwrap_or(0);
        faults.injected(&fired, &format!("{what} delayed {ms} ms"));
        labels.push(fired.label());
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
            _ = state.shutdown.cancelled() => {}
        }
    }
    let early = if let Some(fired) = faults.check(Kind::ApiCut, &subject) {
        faults.injected(&fired, &format!("{what}: connection cut"));
        body.take();
        Some(cut())
    } else if let Some(fired) = faults.check(Kind::ApiHang, &subject) {
        let hold = fired.rule.ms.map_or(HANG_MAX, Duration::from_millis);
        faults.injected(
            &fired,
            &format!(
                "{what} hangs (up to {} s, then the connection is cut)",
                hold.as_secs()
            ),
        );
        // Unread, a body would keep hyper from seeing the client leave.
        body.take();
        tokio::select! {
            _ = tokio::time::sleep(hold) => {}
            _ = state.shutdown.cancelled() => {}
        }
        Some(cut())
    } else if let Some(fired) = faults.check(Kind::ApiHttp, &subject) {
        let status = fired.rule.status.unwrap_or(503);
        faults.injected(&fired, &format!("{what} answered HTTP {status}"));
        labels.push(format!("{} status={status}", fired.label()));
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let mut r = dev_error(
            status,
            format!(
                "injected: HTTP {} by fault {} (imctl chaos clear removes it)",
                status.as_u16(),
                fired.label()
            ),
        );
        r.extensions_mut().insert(Injected);
        Some(r)
    } else if let Some(fired) = faults.check(Kind::ApiCode, &subject) {
        let code = fired
            .rule
            .code
            .unwrap_or(crate::wire::http::code::SERVER_ERROR);
        faults.injected(&fired, &format!("{what} answered code {code}"));
        labels.push(format!("{} code={code}", fired.label()));
        Some(crate::http::reply::status(
            code,
            &format!(
                "injected: code {code} by fault {} (imctl chaos clear removes it)",
                fired.label()
            ),
        ))
    } else {
        None
    };
    let mut response = match early {
        Some(r) => r,
        None => {
            let body = body.take().unwrap_or_default();
            next.run(Request::from_parts(parts, body)).await
        }
    };
    if !labels.is_empty()
        && let Ok(value) = HeaderValue::from_str(&labels.join(", "))
    {
        response.headers_mut().insert(FAULT_HEADER, value);
    }
    response
}

/// Whether `api.*` rules may bend `path`: the login API and the web page,
/// not the dev and admin APIs (`imctl chaos clear` must always work), nor
/// the probes, metrics and API docs that tools and supervisors read.
fn bendable(path: &str) -> bool {
    !(super::is_dev_path(path)
        || matches!(path, "/healthz" | "/readyz" | "/metrics" | "/openapi.json")
        || path.starts_with("/docs"))
}

/// An answer the listener turns into a closed connection, with nothing written.
fn cut() -> Response {
    let mut r = StatusCode::BAD_GATEWAY.into_response();
    r.extensions_mut().insert(crate::http::listen::Cut);
    r.extensions_mut().insert(Injected);
    r
}

/// The QR token in a path such as `/session_login/{token}`.
fn token_in_path(path: &str) -> Option<String> {
    let mut parts = path.trim_start_matches('/').split('/');
    match (parts.next(), parts.next()) {
        (Some("session_login" | "scan_pc" | "pc_session"), Some(t)) if !t.is_empty() => {
            Some(t.to_owned())
        }
        _ => None,
    }
}
