//! The app-server: the Wildfire-compatible login API, the QR pictures, the
//! dev API and the web page. `app(state)` is the router; `serve` runs it.

pub mod account;
pub mod admin;
pub mod announcements;
pub mod cookie;
pub mod dev;
pub mod error;
pub mod extract;
pub mod faults;
pub mod favorites;
pub mod login;
pub mod media;
pub mod pc;
pub mod qr;
pub mod rate;
pub mod sms;
pub mod state;
pub mod version;
pub mod web;

use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, Uri};
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::{delete, get, post};
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::trace::TraceLayer;

use crate::http::cors::Origins;
pub use crate::http::{ConnLimits, serve};
pub use state::{AppState, Inner};

use crate::wire::http::code;
use crate::wire::limits;

/// Every route of the app-server.
/// `openapi` is the document `/openapi.json` and `/docs` serve.
pub fn app(
    state: AppState,
    origins: &std::sync::Arc<Origins>,
    openapi: utoipa::openapi::OpenApi,
) -> Router {
    Router::new()
        // The Wildfire-compatible login API.
        .route("/send_code", post(login::send_code))
        .route("/login", post(login::login))
        .route("/pc_session", post(pc::pc_session))
        .route("/session_login/{token}", post(pc::session_login))
        .route("/scan_pc/{token}", post(pc::scan_pc))
        .route("/confirm_pc", post(pc::confirm_pc))
        .route("/cancel_pc", post(pc::cancel_pc))
        .route("/pc_session/{token}/qr.svg", get(pc::qr_svg))
        .route("/pc_session/{token}/qr.png", get(pc::qr_png))
        .route("/pc_session/{token}/events", get(pc::session_events))
        .route("/login_pwd", post(account::login_pwd))
        .route("/send_reset_code", post(account::send_reset_code))
        .route("/reset_pwd", post(account::reset_pwd))
        .route("/change_pwd", post(account::change_pwd))
        .route("/change_name", post(account::change_name))
        .route("/send_destroy_code", post(account::send_destroy_code))
        .route("/destroy", post(account::destroy))
        .route(
            "/put_group_announcement",
            post(announcements::put_group_announcement),
        )
        .route(
            "/get_group_announcement",
            post(announcements::get_group_announcement),
        )
        .route("/fav/add", post(favorites::add))
        .route("/fav/list", post(favorites::list))
        .route("/fav/del/{id}", post(favorites::delete))
        .route("/version/check", get(version::check))
        .route("/avatar", get(version::by_name))
        // imctl's own.
        .route(
            "/media",
            post(media::upload).layer(axum::extract::DefaultBodyLimit::max(
                state.max_upload + 64 * 1024,
            )),
        )
        .route("/media/{id}", get(media::download))
        .route("/admin/users", get(admin::users).post(admin::create_user))
        .route("/admin/users/{user}/ban", post(admin::ban))
        .route("/admin/users/{user}/unban", post(admin::unban))
        .route("/admin/connections", get(admin::connections))
        .route("/admin/groups/{group}/mute", post(admin::mute))
        .route("/admin/groups/{group}/unmute", post(admin::unmute))
        .route("/admin/groups/{group}/dissolve", post(admin::dissolve))
        // Content up to --max-frame, which JSON escaping may double.
        .route(
            "/admin/messages",
            post(admin::message).layer(axum::extract::DefaultBodyLimit::max(
                limits::MAX_JSON_BODY.max(2 * state.broker.max_frame()),
            )),
        )
        .route("/admin/export", get(admin::export))
        .route("/config", get(web::config))
        .route("/_dev/sms", get(dev::sms))
        .route("/_dev/pc_sessions", get(dev::pc_sessions))
        .route("/_dev/users", get(dev::users))
        .route("/_dev/status", get(dev::status))
        .route("/_dev/feed", get(dev::feed))
        .route(
            "/_dev/faults",
            get(faults::list)
                .post(faults::add)
                .delete(faults::clear_all),
        )
        .route("/_dev/faults/{id}", delete(faults::clear))
        .route(
            "/_dev/pc_sessions/{token}/{action}",
            post(dev::phone_action),
        )
        .route("/_dev/", get(dev::dashboard))
        .route("/", get(web::index))
        .route("/assets/{file}", get(web::asset))
        .route("/avatar/{file}", get(web::avatar))
        .route("/healthz", get(web::healthz))
        .route("/readyz", get(web::readyz))
        .route("/metrics", get(web::metrics))
        .merge(utoipa_swagger_ui::SwaggerUi::new("/docs").url("/openapi.json", openapi))
        .fallback(not_found)
        // Every other body is a small JSON object (routes above raise it).
        .layer(axum::extract::DefaultBodyLimit::max(limits::MAX_JSON_BODY))
        .method_not_allowed_fallback(wrong_method)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            faults::inject,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            local_host_only,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            cookie::set_cookie,
        ))
        .layer(origins.layer(is_dev_path))
        // Spans name the route pattern, not the URI: QR tokens sit in paths.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<_>| {
                    let route = req
                        .extensions()
                        .get::<MatchedPath>()
                        .map_or("unmatched", MatchedPath::as_str);
                    tracing::debug_span!("http", method = %req.method(), route)
                })
                // A server error is logged unless a fault answered it on
                // purpose (that one has its own `injected:` line); a body
                // failing midway still is.
                .on_failure(
                    |class: ServerErrorsFailureClass, latency: Duration, _: &tracing::Span| {
                        if let ServerErrorsFailureClass::Error(e) = class {
                            tracing::error!(error = %e, ?latency, "response failed");
                        }
                    },
                )
                .on_response(|res: &Response, latency: Duration, _: &tracing::Span| {
                    if res.status().is_server_error()
                        && res.extensions().get::<faults::Injected>().is_none()
                    {
                        tracing::error!(status = %res.status(), ?latency, "response failed");
                    } else {
                        tracing::debug!(status = %res.status(), ?latency, "finished processing request");
                    }
                }),
        )
        .with_state(state)
}

/// The dev and admin APIs: guarded against rebinding, and never opened to
/// every origin by `--cors-origin '*'`.
pub fn is_dev_path(path: &str) -> bool {
    path.starts_with("/_dev") || path.starts_with("/admin")
}

/// `/_dev` and `/admin` answer only requests addressed to this machine by a
/// loopback name, unless the stack listens beyond loopback: a web page whose
/// name an attacker points at 127.0.0.1 (DNS rebinding) cannot reach them.
async fn local_host_only(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if state.exposed || !is_dev_path(path) {
        return next.run(req).await;
    }
    let host = req
        .headers()
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok());
    match host {
        Some(h) if !crate::http::advertise::is_loopback_host(h) => (
            axum::http::StatusCode::FORBIDDEN,
            axum::Json(crate::wire::http::DevError {
                error: format!(
                    "/_dev and /admin answer only requests addressed to localhost, 127.0.0.1 or [::1], not {h:?} \
                     (a guard against DNS rebinding); serve with --host to open them to other names"
                ),
            }),
        )
            .into_response(),
        _ => next.run(req).await,
    }
}

async fn not_found(method: Method, uri: Uri) -> Response {
    let mut r = crate::http::reply::status(
        code::NOT_FOUND,
        &format!("no such endpoint: {method} {}", uri.path()),
    );
    *r.status_mut() = axum::http::StatusCode::NOT_FOUND;
    r
}

async fn wrong_method(method: Method, uri: Uri) -> Response {
    let mut r = crate::http::reply::status(
        code::INVALID_PARAMETER,
        &format!(
            "{method} is not allowed on {}; the login API uses POST with a JSON body",
            uri.path()
        ),
    );
    *r.status_mut() = axum::http::StatusCode::METHOD_NOT_ALLOWED;
    r
}

/// Periodically forgets expired SMS codes, QR sessions and login sessions.
pub async fn sweep(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut rounds = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = state.shutdown.cancelled() => return,
        }
        state.sms.sweep();
        state.qr.sweep();
        state.accounts.sweep();
        if let Some(w) = &state.login_rate {
            w.sweep();
        }
        rounds += 1;
        if rounds % 720 == 1
            && let Err(e) = state.store.purge_expired_sessions().await
        {
            tracing::warn!(error = %e, "could not purge expired login sessions");
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::http::advertise::is_loopback_host;

    #[test]
    fn loopback_host_names() {
        for ok in [
            "localhost",
            "localhost:8888",
            "127.0.0.1:8888",
            "127.1.2.3",
            "[::1]:8888",
            "[::1]",
            "LOCALHOST",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.com",
            "evil.com:8888",
            "10.0.2.2:8888",
            "localhost.evil.com",
            "[::2]:1",
            "127.0.0.1.nip.io",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }
}
