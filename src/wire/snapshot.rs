//! A data snapshot: users, friends, pending friend requests, groups and
//! messages as one JSON object (`imctl export`, `GET /admin/export`,
//! `imctl serve --import` and `--export-on-exit`), documented in
//! docs/SNAPSHOTS.md. Checking one against itself (and the database) is
//! `store::snapshot`'s job.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::ws::Conversation;

/// The format version this imctl writes and reads.
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Snapshot {
    pub version: u32,
    /// When it was taken, in ms since the epoch.
    #[serde(default)]
    pub exported_at: i64,
    #[serde(default)]
    pub users: Vec<SnapshotUser>,
    /// Friendships, each once: `["alice", "bob"]`.
    #[serde(default)]
    pub friends: Vec<(String, String)>,
    /// Friend requests still waiting for an answer.
    #[serde(default)]
    pub friend_requests: Vec<SnapshotFriendRequest>,
    #[serde(default)]
    pub groups: Vec<SnapshotGroup>,
    /// In the order they were stored (ascending msgIds).
    #[serde(default)]
    pub messages: Vec<SnapshotMessage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnapshotUser {
    pub user_id: String,
    pub display_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mobile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portrait: Option<String>,
    #[serde(default)]
    pub banned: bool,
    /// Users are listed by creation time; missing means the import's time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnapshotFriendRequest {
    pub from: String,
    pub to: String,
    #[serde(default)]
    pub remark: String,
    #[serde(default)]
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnapshotGroup {
    pub group_id: String,
    pub name: String,
    pub owner: String,
    #[serde(default)]
    pub created_at: i64,
    /// Current members (none once dissolved).
    #[serde(default)]
    pub members: Vec<SnapshotMember>,
    /// Muted as a whole by an administrator.
    #[serde(default, skip_serializing_if = "is_false")]
    pub muted: bool,
    /// Set when the group was dissolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dissolved_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnapshotMember {
    pub user_id: String,
    /// `owner`, `admin` or `member`.
    #[serde(default = "member")]
    pub role: String,
    /// Muted in this group by an administrator.
    #[serde(default, skip_serializing_if = "is_false")]
    pub muted: bool,
    /// Orders members of the same role; missing means the group's `createdAt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joined_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnapshotMessage {
    /// `m<N>`; missing means the previous message's N + 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg_id: Option<String>,
    pub from: String,
    /// As the sender addressed it.
    pub conv: Conversation,
    /// The message content as the protocol carries it (`{"type": "text", ...}`).
    pub content: RawContent,
    #[serde(default)]
    pub server_time: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<String>,
    /// The users who got it in their inbox (what `sync` returns), by user
    /// id; the sender only when they got their own copy (a user's 1:1 and
    /// group messages, not `system` or `@admin` ones). Export always writes
    /// it; when missing, import falls back to the conversation: a 1:1
    /// message's sender and target, a group message's current members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipients: Option<Vec<String>>,
}

/// Message content as the raw JSON the store holds: an export never parses
/// it (no tree per message), and content of any depth imports again.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawContent(pub Box<RawValue>);

impl RawContent {
    /// Content from JSON text; `None` when it is not JSON.
    pub fn from_json(text: String) -> Option<Self> {
        RawValue::from_string(text).ok().map(Self)
    }

    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The content's `type` when it is an object with a string `type`;
    /// nothing else is parsed (deeper fields are skipped, not built).
    pub fn kind(&self) -> Option<String> {
        #[derive(Deserialize)]
        struct Typed {
            #[serde(rename = "type")]
            kind: String,
        }
        serde_json::from_str::<Typed>(self.get())
            .ok()
            .map(|t| t.kind)
    }
}

impl PartialEq for RawContent {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl From<&serde_json::Value> for RawContent {
    fn from(v: &serde_json::Value) -> Self {
        Self(serde_json::value::to_raw_value(v).expect("a Value serializes"))
    }
}

fn is_false(b: &bool) -> bool {
    !b
}

fn member() -> String {
    "member".into()
}
