//! Small endpoints the official clients call at start: the update check and
//! pictures for names.

use axum::extract::Query;
use axum::response::Response;

use crate::http::reply::Reply;
use crate::http::{ApiError, ApiResult};
use crate::wire::http::{ApiResponse, AvatarQuery, VersionCheck, VersionCheckQuery};
use crate::wire::limits;

/// Characters of a version or build string echoed back.
const MAX_VERSION: usize = 64;

#[utoipa::path(get, path = "/version/check", tag = "web", params(VersionCheckQuery),
    responses((status = 200, description = "`code` 0 and never an update: `latestVersion` is `currentVersion`; 15 a field too long or with control characters", body = ApiResponse<VersionCheck>)))]
/// imctl is a dev server: the client running is always the latest.
pub async fn check(
    query: Result<Query<VersionCheckQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Reply<VersionCheck>> {
    let Query(q) = query.map_err(|e| ApiError::InvalidParameter(e.body_text()))?;
    let field = |name: &str, v: Option<String>| {
        let v = v.unwrap_or_default();
        limits::check_optional_text(name, &v, MAX_VERSION)
            .map(|()| v)
            .map_err(ApiError::InvalidParameter)
    };
    field("platform", q.platform)?;
    Ok(Reply::ok(VersionCheck {
        need_update: false,
        force_update: false,
        latest_version: field("currentVersion", q.current_version)?,
        build_number: field("buildNumber", q.build_number)?,
        url: String::new(),
        description: String::new(),
    }))
}

#[utoipa::path(get, path = "/avatar", tag = "web", params(AvatarQuery),
    responses((status = 200, description = "a generated SVG picture for the name (its first letter on a colour of its own)", content_type = "image/svg+xml", body = String)))]
pub async fn by_name(
    query: Result<Query<AvatarQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    // A malformed query still gets a picture (of "?"): it is only an image.
    let name = query.map(|Query(q)| q.name).unwrap_or_default();
    super::web::avatar_svg(&name)
}
