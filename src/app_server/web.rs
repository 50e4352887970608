//! The web client at `/` (HTML, CSS and JavaScript built into the binary),
//! generated avatars and the health probes.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::state::AppState;
use crate::http::advertise::PublicUrls;
use crate::wire::http::ClientConfig;

/// Scripts only from our own files, so text that slipped into the page as
/// HTML could not run; the broker (another port) and portraits (anywhere)
/// stay reachable.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data: blob: http: https:; connect-src 'self' http: https: ws: wss:; \
    object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

#[utoipa::path(get, path = "/", tag = "web", responses((status = 200, description = "the web client to browsers (`Accept: text/html`); the plain text `Ok` to everything else, as the Wildfire clients probe their app-server",
    content((String = "text/html"), (String = "text/plain")))))]
pub async fn index(headers: HeaderMap) -> Response {
    let browser = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/html"));
    let mut response = if browser {
        page(include_str!("web/index.html"))
    } else {
        ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "Ok").into_response()
    };
    // Caches must keep the page and the probe's answer apart.
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("accept"));
    response
}

/// One of our HTML pages, under the strict policy.
pub fn page(html: &'static str) -> Response {
    (
        [
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Html(html),
    )
        .into_response()
}

/// A file served under `/assets/`, built into the binary.
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

const JS: &str = "text/javascript; charset=utf-8";

const fn js(name: &'static str, body: &'static str) -> Asset {
    Asset {
        name,
        content_type: JS,
        body,
    }
}

/// Every asset. The web client is ES modules that import each other by
/// these names, with no build step; a test reads every `.js` here for HTML
/// sinks and checks that no file in `web/` is missing.
pub const ASSETS: &[Asset] = &[
    js("app.js", include_str!("web/app.js")),
    js("dom.js", include_str!("web/dom.js")),
    js("device.js", include_str!("web/device.js")),
    js("inspector.js", include_str!("web/inspector.js")),
    js("http.js", include_str!("web/http.js")),
    js("login.js", include_str!("web/login.js")),
    js("phone.js", include_str!("web/phone.js")),
    js("link.js", include_str!("web/link.js")),
    js("chat.js", include_str!("web/chat.js")),
    js("dev.js", include_str!("web/dev.js")),
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("web/app.css"),
    },
];

#[utoipa::path(get, path = "/assets/{file}", tag = "web", params(("file" = String, Path, description = "a page's script module (app.js, the modules it imports, dev.js, dom.js) or app.css")),
    responses((status = 200, description = "the file", content_type = "text/javascript", body = String), (status = 404, description = "no such asset", content_type = "text/plain", body = String)))]
/// The pages' scripts and stylesheet under `/assets/`.
pub async fn asset(Path(file): Path<String>) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == file) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    (
        [
            (header::CONTENT_TYPE, asset.content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        asset.body,
    )
        .into_response()
}

#[utoipa::path(get, path = "/config", tag = "web", responses((status = 200, description = "where the rest of the stack is", body = ClientConfig)))]
/// Where the rest of the stack is, so clients need only the app-server's address.
pub async fn config(State(state): State<AppState>, urls: PublicUrls) -> Json<ClientConfig> {
    Json(ClientConfig {
        app_server: urls.app_server(),
        route_url: urls.route_url(),
        version: env!("CARGO_PKG_VERSION").into(),
        max_frame: state.broker.max_frame(),
    })
}

#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "the process lives", content_type = "text/plain", body = String)))]
pub async fn healthz() -> &'static str {
    "ok"
}

#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200, description = "ready", content_type = "text/plain", body = String), (status = 503, description = "the database does not answer", content_type = "text/plain", body = String)))]
/// Ready once migrations and fixtures are done (the router only serves after
/// that) and the database answers.
pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => "ready".into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("database not answering: {e}"),
        )
            .into_response(),
    }
}

#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, description = "Prometheus/OpenMetrics text", content_type = "application/openmetrics-text", body = String)))]
/// Prometheus metrics (OpenMetrics text).
pub async fn metrics(State(state): State<AppState>) -> Response {
    let platforms = state.broker.platforms();
    let text = state.telemetry.metrics.render(platforms, state.qr.states());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[utoipa::path(get, path = "/avatar/{file}", tag = "web", params(("file" = String, Path, description = "`{userId}.svg`")),
    responses((status = 200, description = "a generated avatar", content_type = "image/svg+xml", body = String), (status = 404, description = "not an .svg name", content_type = "text/plain", body = String)))]
/// `/avatar/{id}.svg`: a coloured disc with the id's initial, so fixture users
/// have pictures without any network.
pub async fn avatar(Path(file): Path<String>) -> Response {
    let Some(id) = file.strip_suffix(".svg").filter(|id| !id.is_empty()) else {
        return (StatusCode::NOT_FOUND, "avatars are /avatar/{userId}.svg").into_response();
    };
    avatar_svg(id)
}

/// A coloured disc with `seed`'s first letter (`?` when it starts with
/// anything but a letter or digit), its hue a hash of the whole seed. Only
/// that one alphanumeric character reaches the SVG, so nothing needs escaping.
pub fn avatar_svg(seed: &str) -> Response {
    let initial: String = seed
        .chars()
        .next()
        .filter(|c| c.is_alphanumeric())
        .map_or_else(|| "?".to_owned(), |c| c.to_uppercase().collect());
    let hue = seed
        .bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32))
        % 360;
    let svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="96" height="96" viewBox="0 0 96 96"><circle cx="48" cy="48" r="48" fill="hsl({hue},55%,50%)"/><text x="48" y="62" font-family="sans-serif" font-size="44" text-anchor="middle" fill="#fff">{initial}</text></svg>"##
    );
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "max-age=86400"),
        ],
        svg,
    )
        .into_response()
}
