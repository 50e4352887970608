//! Favorites: what a user kept, as the Wildfire clients send and list them.

use axum::extract::{Path, State};

use super::extract::AuthUser;
use super::state::AppState;
use crate::http::ApiJson;
use crate::http::reply::Reply;
use crate::http::{ApiError, ApiResult};
use crate::store::Favorite;
use crate::wire::http::{
    ApiResponse, Empty, FavoriteAdded, FavoriteItem, FavoriteList, FavoriteListRequest,
};
use crate::wire::limits;

/// `/fav/list`'s page size when `count` is 0 or less.
const DEFAULT_PAGE: i64 = 20;

impl From<Favorite> for FavoriteItem {
    fn from(f: Favorite) -> Self {
        FavoriteItem {
            id: f.id,
            user_id: f.user_id,
            message_uid: f.message_uid,
            kind: f.kind,
            conv_type: f.conv_type,
            conv_target: f.conv_target,
            conv_line: f.conv_line,
            origin: f.origin,
            sender: f.sender,
            title: f.title,
            url: f.url,
            thumb_url: f.thumb_url,
            data: f.data,
            timestamp: f.created_at,
        }
    }
}

/// Bounds every text field; URLs may be empty but never malformed.
fn check_item(item: &FavoriteItem) -> Result<(), limits::Refused> {
    for (field, value) in [
        ("convTarget", &item.conv_target),
        ("origin", &item.origin),
        ("sender", &item.sender),
        ("title", &item.title),
    ] {
        limits::check_optional_text(field, value, limits::MAX_FAVORITE_FIELD)?;
    }
    for (field, value) in [("url", &item.url), ("thumbUrl", &item.thumb_url)] {
        if !value.is_empty() {
            limits::check_url(field, value)?;
        }
    }
    if item.data.len() > limits::MAX_FAVORITE_DATA {
        return Err(format!(
            "data has at most {} bytes",
            limits::MAX_FAVORITE_DATA
        ));
    }
    Ok(())
}

#[utoipa::path(post, path = "/fav/add", tag = "favorites", request_body = FavoriteItem,
    responses((status = 200, description = "`code` 0 kept (`result.id`), 13 not logged in, 15 bad body, a field too long, or already 1000 favorites", body = ApiResponse<FavoriteAdded>)))]
pub async fn add(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiJson(item): ApiJson<FavoriteItem>,
) -> ApiResult<Reply<FavoriteAdded>> {
    check_item(&item).map_err(ApiError::InvalidParameter)?;
    let fav = Favorite {
        id: 0,
        user_id: user.id,
        message_uid: item.message_uid,
        kind: item.kind,
        conv_type: item.conv_type,
        conv_target: item.conv_target,
        conv_line: item.conv_line,
        origin: item.origin,
        sender: item.sender,
        title: item.title,
        url: item.url,
        thumb_url: item.thumb_url,
        data: item.data,
        created_at: 0,
    };
    match state
        .store
        .add_favorite(&fav, limits::MAX_FAVORITES)
        .await?
    {
        Some(id) => Ok(Reply::ok(FavoriteAdded { id })),
        None => Err(ApiError::InvalidParameter(format!(
            "you keep {} favorites already, the most one user may; delete some with /fav/del/{{id}}",
            limits::MAX_FAVORITES
        ))),
    }
}

#[utoipa::path(post, path = "/fav/list", tag = "favorites", request_body = FavoriteListRequest,
    responses((status = 200, description = "`code` 0 the favorites older than `id` (0: from the newest), newest first, at most `count` (20 when 0, never more than 100), `hasMore`; 13 not logged in, 15 bad body", body = ApiResponse<FavoriteList>)))]
pub async fn list(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiJson(req): ApiJson<FavoriteListRequest>,
) -> ApiResult<Reply<FavoriteList>> {
    let count = match req.count {
        n if n <= 0 => DEFAULT_PAGE,
        n => n.min(limits::MAX_FAVORITES_PAGE),
    };
    let (rows, has_more) = state.store.favorites(&user.id, req.id, count).await?;
    Ok(Reply::ok(FavoriteList {
        items: rows.into_iter().map(FavoriteItem::from).collect(),
        has_more,
    }))
}

#[utoipa::path(post, path = "/fav/del/{id}", tag = "favorites", params(("id" = i64, Path, description = "the favorite's id")),
    responses((status = 200, description = "`code` 0 deleted, 13 not logged in, 15 not a number, 16 no such favorite of yours. Takes no body (any is ignored).", body = ApiResponse<Empty>)))]
pub async fn delete(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Reply<Empty>> {
    let id: i64 = id.trim().parse().map_err(|_| {
        ApiError::InvalidParameter(format!(
            "the favorite id {} is not a number",
            crate::http::error::short(&id)
        ))
    })?;
    if !state.store.delete_favorite(&user.id, id).await? {
        return Err(ApiError::NotFound(format!("you have no favorite {id}")));
    }
    Ok(Reply::ok(Empty {}))
}
