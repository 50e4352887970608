//! The broker's JSON protocol over WebSocket (documented in docs/PROTOCOL.md).
//!
//! Client requests carry a numeric `id` that the reply repeats; server pushes
//! carry none. Every frame has an `op`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

mod push;
mod reply;
mod request;
pub use push::{FriendRequest, Notify, PcLoginRequest, Profile, Push, ReceiptKind, msg_push};
pub use reply::{
    ConversationEntry, Friend, GroupInfo, GroupMember, GroupSummary, Incoming, Reply, UserPresence,
};
pub use request::{DecodeError, Request};

/// Error codes of `error` frames (docs/PROTOCOL.md has the table).
pub mod code {
    /// The frame is not valid JSON, lacks a field, or a field is invalid
    /// (e.g. `platform` outside 1..=9, content nested too deep): fix the request.
    pub const BAD_REQUEST: i32 = 400;
    /// Not connected yet: the first frame must be `connect`.
    pub const NOT_CONNECTED: i32 = 401;
    /// Not allowed (e.g. not a member of the group, not a friend with `--friends-only`).
    pub const FORBIDDEN: i32 = 403;
    /// The target user or group does not exist.
    pub const NOT_FOUND: i32 = 404;
    /// The `op` is unknown.
    pub const UNKNOWN_OP: i32 = 405;
    /// `connect` on a connection that is already connected; a duplicate
    /// friend request; already friends.
    pub const ALREADY_CONNECTED: i32 = 409;
    pub const CONFLICT: i32 = 409;
    /// The IM token has expired: log in again.
    pub const TOKEN_EXPIRED: i32 = 419;
    /// `connect` refused: the user has `--max-connections-per-user` connections
    /// already; close one of them first.
    pub const TOO_MANY_CONNECTIONS: i32 = 429;
    /// The IM token is not valid.
    pub const TOKEN_INVALID: i32 = 498;
    /// The server failed; nothing was stored.
    pub const SERVER_ERROR: i32 = 500;
    /// The database cannot be reached for now (a PostgreSQL restart, a
    /// network cut); nothing was changed. Retry in a second or two.
    pub const UNAVAILABLE: i32 = 503;
}

/// WebSocket close codes the broker uses (docs/PROTOCOL.md has the table).
pub mod close {
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down; every send acked before it is stored.
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke the WebSocket protocol (an unmasked frame, reserved
    /// bits, an unknown opcode, a bad fragment).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame that is not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A frame was larger than `--max-frame`.
    pub const TOO_BIG: u16 = 1009;
    /// `connect` refused for now (error 503: a cluster's node that cannot
    /// reach NATS): reconnect through `/route`, which may pick another node.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// `connect` failed (bad or expired token, unknown user, a bad
    /// `platform` or `clientId`), no `connect` within `--connect-timeout`, or
    /// the token expired while connected: log in again or fix the frame.
    pub const AUTH_FAILED: u16 = 4001;
    /// An administrator banned the user.
    pub const BANNED: u16 = 4003;
    /// Nothing received for `--idle-timeout`.
    pub const IDLE: u16 = 4008;
    /// The client read too slowly: a write took longer than `--write-timeout`
    /// or its queue passed `--queue-bytes` or 1024 frames, and frames may
    /// have been dropped; reconnect, `sync`, and resend unacked messages
    /// with the same `clientMsgId`.
    pub const TOO_SLOW: u16 = 4009;
    /// `connect` refused: too many connections for this user.
    pub const TOO_MANY_CONNECTIONS: u16 = 4029;
}

/// A conversation: `{"type":"single","target":"bob"}` or `{"type":"group","target":"g1"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Conversation {
    #[serde(rename = "type")]
    pub kind: ConvType,
    pub target: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConvType {
    Single,
    Group,
}

impl ConvType {
    pub fn as_str(self) -> &'static str {
        match self {
            ConvType::Single => "single",
            ConvType::Group => "group",
        }
    }
}

/// Message content, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Content {
    Text {
        text: String,
    },
    Image {
        url: String,
        w: u32,
        h: u32,
        size: u64,
    },
    File {
        url: String,
        name: String,
        size: u64,
    },
    Video {
        url: String,
        w: u32,
        h: u32,
        /// Seconds.
        duration: f64,
        size: u64,
    },
    Location {
        title: String,
        lat: f64,
        lng: f64,
    },
    Sticker {
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        w: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        h: Option<u32>,
    },
    Custom {
        data: Value,
    },
}

impl Content {
    /// Checks what serde cannot: non-empty and bounded strings, `http(s)`
    /// or relative URLs, sane numbers, custom data nested at most
    /// `MAX_CONTENT_DEPTH` levels (clients must be able to parse it back).
    pub fn validate(&self) -> Result<(), String> {
        use super::limits::{
            MAX_FILE_NAME, MAX_LOCATION_TITLE, check_depth, check_text, check_url,
        };
        fn non_empty(field: &str, v: &str) -> Result<(), String> {
            if v.trim().is_empty() {
                Err(format!("{field} must not be empty"))
            } else {
                Ok(())
            }
        }
        fn positive(field: &str, v: u32) -> Result<(), String> {
            if v == 0 {
                Err(format!("{field} must be greater than 0"))
            } else {
                Ok(())
            }
        }
        match self {
            Content::Text { text } => non_empty("text", text),
            Content::Image { url, w, h, .. } => {
                check_url("url", url)?;
                positive("w", *w)?;
                positive("h", *h)
            }
            Content::File { url, name, .. } => {
                check_url("url", url)?;
                check_text("name", name, MAX_FILE_NAME)
            }
            Content::Video {
                url,
                w,
                h,
                duration,
                ..
            } => {
                check_url("url", url)?;
                positive("w", *w)?;
                positive("h", *h)?;
                if !(duration.is_finite() && *duration >= 0.0) {
                    return Err("duration must be a number of seconds ≥ 0".into());
                }
                Ok(())
            }
            Content::Location { title, lat, lng } => {
                non_empty("title", title)?;
                if title.chars().count() > MAX_LOCATION_TITLE {
                    return Err(format!("title has at most {MAX_LOCATION_TITLE} characters"));
                }
                if !(-90.0..=90.0).contains(lat) {
                    return Err("lat must be between -90 and 90".into());
                }
                if !(-180.0..=180.0).contains(lng) {
                    return Err("lng must be between -180 and 180".into());
                }
                Ok(())
            }
            Content::Sticker { url, .. } => check_url("url", url),
            Content::Custom { data } => {
                if data.is_null() {
                    return Err("data must not be null".into());
                }
                check_depth("data", data)
            }
        }
    }

    /// [`Content::validate`], and the whole content encodes to at most
    /// `max_bytes` (`--max-frame`: a message must fit in a frame to its readers).
    pub fn validate_within(&self, max_bytes: usize) -> Result<(), String> {
        self.validate()?;
        let size = serde_json::to_string(self).map_or(usize::MAX, |s| s.len());
        if size > max_bytes {
            return Err(format!(
                "content is {size} bytes encoded; the most is {max_bytes} (--max-frame)"
            ));
        }
        Ok(())
    }
}

/// A stored message as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatMessage {
    pub msg_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<String>,
    /// As the sender addressed it: for a 1:1 message the target is the recipient.
    pub conv: Conversation,
    pub from: String,
    /// Kept as JSON so stored content of any type passes through unchanged.
    pub content: Value,
    /// Milliseconds since the Unix epoch.
    pub server_time: i64,
}

/// A stored message as [`ChatMessage`] serializes it, with the content
/// borrowed as the raw JSON it was stored as: pages are written without
/// parsing any content (or holding it twice).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RawChatMessage<'a> {
    pub msg_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<&'a str>,
    pub conv: Conversation,
    pub from: &'a str,
    pub content: &'a RawValue,
    pub server_time: i64,
}

/// One inbox entry: the user's sequence number and the message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboxEntry {
    pub seq: i64,
    pub message: ChatMessage,
}

// ---- Client → server ------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectReq {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendReq {
    pub conv: Conversation,
    pub content: Content,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncReq {
    #[serde(default)]
    pub since: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecvReq {
    pub up_to: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryReq {
    pub conv: Conversation,
    /// A msgId (`"m42"`) or a serverTime (ms); only older messages are returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// `group.create`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupCreateReq {
    pub name: String,
    #[serde(default)]
    pub members: Vec<String>,
}

/// `group.add` and `group.remove`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupMembersReq {
    pub group: String,
    pub members: Vec<String>,
}

/// `group.leave`, `group.dissolve`, `group.info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupReq {
    pub group: String,
}

/// `group.admin`: appoint (`admin: true`) or dismiss an admin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupAdminReq {
    pub group: String,
    pub user_id: String,
    pub admin: bool,
}

/// `group.rename`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRenameReq {
    pub group: String,
    pub name: String,
}

/// `friend.request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FriendRequestReq {
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remark: Option<String>,
}

/// `friend.accept` and `friend.reject`: answer the request `from` sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FriendAnswerReq {
    pub from: String,
}

/// `profile.get`: `users` (many), `userId` (one), or neither (myself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileGetReq {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

/// `profile.update`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileUpdateReq {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portrait: Option<String>,
}

/// `read`: everything up to this message is read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadReq {
    pub conv: Conversation,
    pub up_to: String,
}

/// `typing`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvReq {
    pub conv: Conversation,
}

/// `presence`: these users, or my friends when `users` is absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceReq {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<String>>,
}

/// `conversations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationsReq {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// The next page: conversations whose last message is older than this
    /// msgId (the previous page's last `lastMessage.msgId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
}

/// `conversation.mute`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MuteReq {
    pub conv: Conversation,
    pub muted: bool,
}

// ---- Server → client ------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Connected {
    pub id: Option<u64>,
    pub op: String,
    pub user_id: String,
    pub head: i64,
    pub server_time: i64,
    pub node: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ack {
    pub id: Option<u64>,
    pub op: String,
    pub code: i32,
    pub msg_id: String,
    pub server_time: i64,
    /// The message's seq in the sender's own inbox.
    pub seq: i64,
    /// True when this `clientMsgId` was already stored: nothing new was stored.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

/// A page of stored items, already JSON: the store writes it item by item
/// and stops at [`PAGE_BYTES`](super::limits::PAGE_BYTES).
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// A JSON array.
    pub json: String,
    pub count: usize,
    /// Whether more items follow (past the `limit` or the byte budget).
    pub more: bool,
}

/// `synced` around a page written by the store; as [`Reply::Synced`] reads it.
pub fn synced_frame(id: Option<u64>, entries: &Page, head: i64) -> String {
    format!(
        r#"{{"id":{},"op":"synced","entries":{},"head":{head},"more":{}}}"#,
        json_id(id),
        entries.json,
        entries.more
    )
}

/// `history` around a page written by the store; as [`Reply::History`] reads it.
pub fn history_frame(id: Option<u64>, messages: &Page) -> String {
    format!(
        r#"{{"id":{},"op":"history","messages":{},"more":{}}}"#,
        json_id(id),
        messages.json,
        messages.more
    )
}

/// `conversations` around a page written by the store.
pub fn conversations_frame(id: Option<u64>, conversations: &Page) -> String {
    format!(
        r#"{{"id":{},"op":"conversations","conversations":{},"more":{}}}"#,
        json_id(id),
        conversations.json,
        conversations.more
    )
}

fn json_id(id: Option<u64>) -> String {
    id.map_or_else(|| "null".into(), |n| n.to_string())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorFrame {
    pub id: Option<u64>,
    pub op: String,
    pub code: i32,
    pub message: String,
}

impl ErrorFrame {
    pub fn new(id: Option<u64>, code: i32, message: impl Into<String>) -> Self {
        Self {
            id,
            op: "error".into(),
            code,
            message: message.into(),
        }
    }
}

/// `/route` on the broker port.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteRequest {
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    pub token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteResult {
    pub host: String,
    pub port: u16,
    pub ws_url: String,
    pub node: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn content(v: Value) -> Result<Content, String> {
        let c: Content = serde_json::from_value(v).map_err(|e| e.to_string())?;
        c.validate().map(|()| c)
    }

    #[test]
    fn every_content_type_parses_and_validates() {
        for ok in [
            json!({"type":"text","text":"hi"}),
            json!({"type":"image","url":"http://x/a.png","w":640,"h":480,"size":1234}),
            json!({"type":"file","url":"http://x/a.pdf","name":"a.pdf","size":10}),
            json!({"type":"video","url":"http://x/v.mp4","w":1,"h":1,"duration":3.5,"size":10}),
            json!({"type":"location","title":"Hangzhou","lat":30.18,"lng":120.19}),
            json!({"type":"sticker","url":"http://x/s.png"}),
            json!({"type":"custom","data":{"any":"thing"}}),
        ] {
            assert!(content(ok.clone()).is_ok(), "{ok}");
        }
        for bad in [
            json!({"type":"text","text":"  "}),
            json!({"type":"text"}),
            json!({"type":"image","url":"u","w":0,"h":1,"size":1}),
            json!({"type":"location","title":"x","lat":91,"lng":0}),
            json!({"type":"custom","data":null}),
            json!({"type":"image","url":"javascript:alert(1)","w":1,"h":1,"size":1}),
            json!({"type":"sticker","url":"data:image/png;base64,AAAA"}),
            json!({"type":"file","url":"/media/a","name":"a\nb","size":1}),
            json!({"type":"file","url":"/media/a","name":"x".repeat(300),"size":1}),
            json!({"type":"hologram"}),
            json!({"type":"text","text":"hi","extra":1}),
        ] {
            assert!(content(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn custom_data_is_bounded_in_depth_and_content_in_size() {
        let mut deep = json!(1);
        for _ in 0..125 {
            deep = json!([deep]);
        }
        let c = Content::Custom { data: deep };
        assert!(c.validate().unwrap_err().contains("nested"));
        let big = Content::Text {
            text: "x".repeat(2000),
        };
        assert!(big.validate_within(4096).is_ok());
        assert!(
            big.validate_within(1024)
                .unwrap_err()
                .contains("--max-frame")
        );
    }

    #[test]
    fn page_frames_read_back_as_their_types() {
        let page = |json: &str| Page {
            json: json.into(),
            count: 0,
            more: true,
        };
        let synced: Value = serde_json::from_str(&synced_frame(Some(3), &page("[]"), 9)).unwrap();
        assert_eq!(
            synced,
            json!({"id": 3, "op": "synced", "entries": [], "head": 9, "more": true})
        );
        let history: Value = serde_json::from_str(&history_frame(None, &page("[]"))).unwrap();
        assert_eq!(
            history,
            json!({"id": null, "op": "history", "messages": [], "more": true})
        );
        let v: Value = serde_json::from_str(&conversations_frame(Some(1), &page("[]"))).unwrap();
        assert_eq!(
            v,
            json!({"id": 1, "op": "conversations", "conversations": [], "more": true})
        );
    }
}
