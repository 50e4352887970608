//! Group announcements: one per group, set by a member and posted into the
//! group as a text message from them.

use super::account::AccountError;
use super::extract::AuthUser;
use super::state::AppState;
use crate::http::ApiJson;
use crate::http::chat::WriteError;
use crate::http::reply::Reply;
use crate::http::{ApiError, ApiResult};
use crate::store::{Announcement, NewMessage, Refused, Why};
use crate::wire::http::{
    ApiResponse, GetAnnouncementRequest, GroupAnnouncement, PutAnnouncementRequest,
};
use crate::wire::limits;
use crate::wire::ws::{Content, ConvType, Conversation};
use axum::extract::State;

impl From<Announcement> for GroupAnnouncement {
    fn from(a: Announcement) -> Self {
        GroupAnnouncement {
            group_id: a.group_id,
            author: a.author,
            text: a.text,
            timestamp: a.updated_at,
        }
    }
}

/// Refuses an unknown group (16) or a caller outside it (14).
async fn check_member(state: &AppState, group: &str, user: &str) -> ApiResult<()> {
    limits::check_text("groupId", group, limits::MAX_CLIENT_MSG_ID)
        .map_err(ApiError::InvalidParameter)?;
    match state.store.group_membership(group, user).await? {
        None => Err(ApiError::NotFound(format!("no group {group:?}"))),
        Some(false) => Err(AccountError::NoPermission(format!(
            "only members of group {group:?} can see or set its announcement"
        ))
        .into()),
        Some(true) => Ok(()),
    }
}

/// An announcement's text: not blank, at most [`limits::MAX_ANNOUNCEMENT`]
/// characters, no control characters but line breaks and tabs.
fn check_announcement(text: &str) -> ApiResult<()> {
    let refuse = |why: &str| Err(ApiError::InvalidParameter(format!("text {why}")));
    if text.trim().is_empty() {
        return refuse("must not be empty");
    }
    if text.chars().count() > limits::MAX_ANNOUNCEMENT {
        return refuse(&format!(
            "has at most {} characters",
            limits::MAX_ANNOUNCEMENT
        ));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return refuse("must not contain control characters other than line breaks and tabs");
    }
    Ok(())
}

#[utoipa::path(post, path = "/put_group_announcement", tag = "groups", request_body = PutAnnouncementRequest,
    responses((status = 200, description = "`code` 0 set (the logged-in user is the author, whatever `author` says) and posted into the group as a text message from them; 13 not logged in, 14 not a member or muted, 15 bad body or text, 16 no such group", body = ApiResponse<GroupAnnouncement>)))]
pub async fn put_group_announcement(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiJson(req): ApiJson<PutAnnouncementRequest>,
) -> ApiResult<Reply<GroupAnnouncement>> {
    check_member(&state, &req.group_id, &user.id).await?;
    check_announcement(&req.text)?;
    let content = Content::Text {
        text: req.text.clone(),
    };
    content
        .validate_within(state.broker.max_frame())
        .map_err(ApiError::InvalidParameter)?;
    // Posted first: a refused post (a muted member) sets nothing.
    post_to_group(&state, &user.id, &req.group_id, content).await?;
    let saved = state
        .store
        .put_announcement(&req.group_id, &user.id, &req.text)
        .await?;
    tracing::info!(user = ?user.id, group = ?req.group_id, "group announcement set");
    Ok(Reply::ok(saved.into()))
}

#[utoipa::path(post, path = "/get_group_announcement", tag = "groups", request_body = GetAnnouncementRequest,
    responses((status = 200, description = "`code` 0 the announcement, 12 none yet, 13 not logged in, 14 not a member, 15 bad body, 16 no such group", body = ApiResponse<GroupAnnouncement>)))]
pub async fn get_group_announcement(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiJson(req): ApiJson<GetAnnouncementRequest>,
) -> ApiResult<Reply<GroupAnnouncement>> {
    check_member(&state, &req.group_id, &user.id).await?;
    match state.store.announcement(&req.group_id).await? {
        Some(a) => Ok(Reply::ok(a.into())),
        None => Err(AccountError::NoAnnouncement(req.group_id).into()),
    }
}

/// Sends `content` from `sender` to `group` through the broker's writer,
/// checked like the sender's own send (membership, mutes).
async fn post_to_group(
    state: &AppState,
    sender: &str,
    group: &str,
    content: Content,
) -> ApiResult<()> {
    let msg = NewMessage {
        sender: sender.to_owned(),
        conv: Conversation {
            kind: ConvType::Group,
            target: group.to_owned(),
        },
        content: serde_json::to_value(&content).expect("content serializes"),
        client_msg_id: None,
        recipients: None,
    };
    match state.broker.send(msg).await {
        Ok(_) => Ok(()),
        Err(e @ (WriteError::ShuttingDown | WriteError::Failed(_))) => {
            Err(ApiError::Internal(e.to_string()))
        }
        Err(WriteError::Refused(Refused { why, message })) => Err(match why {
            Why::NotAllowed => AccountError::NoPermission(message).into(),
            Why::Missing => ApiError::NotFound(message),
            Why::Invalid | Why::Already => ApiError::InvalidParameter(message),
        }),
    }
}
