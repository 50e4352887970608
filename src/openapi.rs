//! The OpenAPI 3 document of both servers' HTTP endpoints, generated from
//! the handlers' `#[utoipa::path]` attributes and the wire types; the
//! app-server serves it at `/openapi.json` with a Swagger UI at `/docs`
//! (assets built in, no network).

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, Server};
use utoipa::{Modify, OpenApi};

use crate::app_server::{
    account, admin, announcements, dev, faults, favorites, login, media, pc, version, web,
};
use crate::broker;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "imctl",
        description = "A local development stack for IM apps. The login API is compatible with the Wildfire Chat app-server: every call answers HTTP 200 with `{code, message, result?}`; `code` says what happened. `/_dev`, `/admin` and `/media` use ordinary HTTP status codes. The chat itself is a WebSocket protocol on the broker, described in docs/PROTOCOL.md."
    ),
    paths(
        login::send_code, login::login,
        pc::pc_session, pc::session_login, pc::session_events, pc::scan_pc, pc::confirm_pc, pc::cancel_pc, pc::qr_svg, pc::qr_png,
        media::upload, media::download,
        admin::users, admin::create_user, admin::connections, admin::ban, admin::unban,
        admin::mute, admin::unmute, admin::dissolve, admin::message, admin::export,
        dev::sms, dev::pc_sessions, dev::users, dev::status, dev::feed, dev::phone_action, dev::dashboard,
        faults::list, faults::add, faults::clear_all, faults::clear,
        web::index, web::asset, web::config, web::healthz, web::readyz, web::metrics, web::avatar,
        broker::route::route, broker::ws,
        account::login_pwd, account::send_reset_code, account::reset_pwd, account::change_pwd,
        account::change_name, account::send_destroy_code, account::destroy,
        announcements::put_group_announcement, announcements::get_group_announcement,
        favorites::add, favorites::list, favorites::delete, version::check, version::by_name,
    ),
    components(schemas(
        crate::wire::http::QrStatusEvent, crate::wire::http::ScannedResult, crate::wire::http::PollTimeout,
    )),
    modifiers(&Security),
    tags(
        (name = "login", description = "SMS login (Wildfire-compatible)"),
        (name = "qr login", description = "Web/PC QR login (Wildfire-compatible), plus QR pictures and server-sent events"),
        (name = "media", description = "Uploads for image, file and video messages"),
        (name = "admin", description = "Administration, with the admin secret"),
        (name = "dev", description = "Inspection for development: SMS outbox, QR sessions, users, status; faults injected on purpose (`imctl chaos`, docs/CHAOS.md)"),
        (name = "web", description = "The built-in web client and client configuration"),
        (name = "health", description = "Probes and metrics"),
        (name = "broker", description = "The broker's HTTP side (on its own port)"),
        (name = "account", description = "Passwords, display name and deleting the account (Wildfire-compatible)"),
        (name = "groups", description = "Group announcements (Wildfire-compatible)"),
        (name = "favorites", description = "Favorites (Wildfire-compatible)"),
    )
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "authToken",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "authToken",
                "the session from /login or /session_login's authToken header",
            ))),
        );
        components.add_security_scheme(
            "adminSecret",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Admin-Secret",
                "shown in the imctl serve banner, or set with --admin-secret",
            ))),
        );
        components.add_security_scheme(
            "imToken",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("the IM token from a login"))
                    .build(),
            ),
        );
    }
}

/// The document for a stack whose app-server and broker are at these URLs.
pub fn document(app_url: &str, broker_url: &str) -> Document {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").into();
    doc.servers = Some(vec![Server::new(app_url)]);
    // The broker's operations live on its own port.
    for path in ["/route", "/ws"] {
        if let Some(item) = doc.paths.paths.get_mut(path) {
            item.servers = Some(vec![Server::new(broker_url)]);
            for op in [&mut item.get, &mut item.post].into_iter().flatten() {
                op.servers = None;
            }
        }
    }
    doc
}
