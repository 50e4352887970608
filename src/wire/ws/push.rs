//! What the server sends unasked: the frame's `op` names the variant. Pushes
//! carry no `id`.
//!
//! The broker writes every push but `msg` from these types; `msg` goes out
//! through [`msg_push`] around a message serialized once for all its
//! recipients, and reads back as [`Push::Msg`].

use serde::{Deserialize, Serialize};

use super::{ChatMessage, Conversation};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op")]
pub enum Push {
    /// A message for my inbox, with its seq there.
    #[serde(rename = "msg")]
    Msg { seq: i64, message: ChatMessage },
    /// Someone received or read my messages up to `upTo`.
    #[serde(rename = "receipt")]
    Receipt {
        kind: ReceiptKind,
        conv: Conversation,
        by: String,
        #[serde(rename = "upTo")]
        up_to: String,
    },
    #[serde(rename = "typing")]
    Typing { conv: Conversation, from: String },
    /// A friend came online, went offline or changed devices.
    #[serde(rename = "presence")]
    Presence {
        #[serde(rename = "userId")]
        user_id: String,
        online: bool,
        platforms: Vec<i32>,
    },
    /// A friend changed their profile.
    #[serde(rename = "profile")]
    Profile { user: Profile },
    #[serde(rename = "notify")]
    Notify(Notify),
    /// A web or desktop page asks to log in as this user by quick login
    /// (`/pc_session` with `flag: 1`). Sent to every connection of the user;
    /// not stored. The phone answers with `/confirm_pc {token}` or
    /// `/cancel_pc {token}` on the app-server, without `/scan_pc`.
    #[serde(rename = "pc_login_request")]
    PcLoginRequest(PcLoginRequest),
    /// An injected fault (`imctl chaos`) just bent this connection: only
    /// so inspectors can mark it. Clients must not act on it.
    #[serde(rename = "fault")]
    Fault {
        /// The rule's id.
        rule: u64,
        kind: String,
        detail: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiptKind {
    Delivered,
    Read,
}

/// Friend requests and their answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Notify {
    FriendRequest {
        from: String,
        /// Empty without one.
        #[serde(default)]
        remark: String,
        request: FriendRequest,
    },
    FriendAccepted {
        from: String,
    },
    FriendRejected {
        from: String,
    },
}

/// A pending or answered friend request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FriendRequest {
    pub from_user: String,
    pub to_user: String,
    pub remark: String,
    pub status: String,
    pub created_at: i64,
}

/// A user as others see them; `mobile` only in one's own profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub user_id: String,
    pub display_name: String,
    /// An absolute URL, or null without a portrait.
    pub portrait: Option<String>,
    /// Only in one's own profile: the mobile, or null without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mobile: Option<Option<String>>,
}

/// The body of a `pc_login_request` push.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PcLoginRequest {
    /// The QR session to confirm or cancel.
    pub token: String,
    /// The page's platform (Wildfire's numbers: 5 Web, 3 Windows, 4 macOS, 7 Linux).
    pub platform: i32,
    pub device_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Milliseconds until the request expires.
    pub expires_in_ms: i64,
}

impl Push {
    /// The frame as sent.
    pub fn frame(&self) -> String {
        serde_json::to_string(self).expect("pushes serialize")
    }
}

/// Serializes the `msg` push for one recipient around a message serialized once.
pub fn msg_push(seq: i64, message_json: &str) -> String {
    format!(r#"{{"op":"msg","seq":{seq},"message":{message_json}}}"#)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::wire::ws::ConvType;

    fn conv() -> Conversation {
        Conversation {
            kind: ConvType::Single,
            target: "bob".into(),
        }
    }

    /// Each push as the broker has always written it (the `json!` it
    /// replaced), and read back as the same value.
    #[test]
    fn pushes_are_framed_as_documented_and_read_back() {
        let request = FriendRequest {
            from_user: "alice".into(),
            to_user: "bob".into(),
            remark: "hi".into(),
            status: "pending".into(),
            created_at: 1,
        };
        let cases = [
            (
                Push::Receipt {
                    kind: ReceiptKind::Delivered,
                    conv: conv(),
                    by: "alice".into(),
                    up_to: "m7".into(),
                },
                json!({"op": "receipt", "kind": "delivered", "conv": {"type": "single", "target": "bob"}, "by": "alice", "upTo": "m7"}),
            ),
            (
                Push::Typing {
                    conv: conv(),
                    from: "alice".into(),
                },
                json!({"op": "typing", "conv": {"type": "single", "target": "bob"}, "from": "alice"}),
            ),
            (
                Push::Presence {
                    user_id: "alice".into(),
                    online: true,
                    platforms: vec![1, 5],
                },
                json!({"op": "presence", "userId": "alice", "online": true, "platforms": [1, 5]}),
            ),
            (
                Push::Profile {
                    user: Profile {
                        user_id: "alice".into(),
                        display_name: "Alice".into(),
                        portrait: None,
                        mobile: None,
                    },
                },
                json!({"op": "profile", "user": {"userId": "alice", "displayName": "Alice", "portrait": null}}),
            ),
            (
                Push::Notify(Notify::FriendRequest {
                    from: "alice".into(),
                    remark: "hi".into(),
                    request: request.clone(),
                }),
                json!({"op": "notify", "kind": "friend_request", "from": "alice", "remark": "hi", "request": {"fromUser": "alice", "toUser": "bob", "remark": "hi", "status": "pending", "createdAt": 1}}),
            ),
            (
                Push::Notify(Notify::FriendAccepted { from: "bob".into() }),
                json!({"op": "notify", "kind": "friend_accepted", "from": "bob"}),
            ),
            (
                Push::Notify(Notify::FriendRejected { from: "bob".into() }),
                json!({"op": "notify", "kind": "friend_rejected", "from": "bob"}),
            ),
            (
                Push::PcLoginRequest(PcLoginRequest {
                    token: "t".into(),
                    platform: 5,
                    device_name: "Chrome".into(),
                    client_id: None,
                    expires_in_ms: 60_000,
                }),
                json!({"op": "pc_login_request", "token": "t", "platform": 5, "deviceName": "Chrome", "expiresInMs": 60000}),
            ),
        ];
        for (push, expected) in cases {
            let frame = push.frame();
            assert_eq!(serde_json::from_str::<Value>(&frame).unwrap(), expected);
            assert_eq!(serde_json::from_str::<Push>(&frame).unwrap(), push);
        }
    }

    #[test]
    fn the_msg_fast_path_reads_back_as_a_msg_push() {
        let m = ChatMessage {
            msg_id: "m1".into(),
            client_msg_id: None,
            conv: conv(),
            from: "alice".into(),
            content: json!({"type": "text", "text": "hi"}),
            server_time: 1,
        };
        let frame = msg_push(7, &serde_json::to_string(&m).unwrap());
        assert_eq!(
            serde_json::from_str::<Push>(&frame).unwrap(),
            Push::Msg { seq: 7, message: m }
        );
    }

    #[test]
    fn ones_own_profile_without_a_mobile_says_null() {
        let mine = |mobile| Profile {
            user_id: "u1".into(),
            display_name: "U".into(),
            portrait: None,
            mobile,
        };
        let v = |p: Profile| serde_json::to_value(p).unwrap();
        assert_eq!(v(mine(Some(None)))["mobile"], Value::Null);
        assert!(v(mine(Some(None))).get("mobile").is_some());
        assert!(
            v(mine(None)).get("mobile").is_none(),
            "others' profiles have none"
        );
        assert_eq!(v(mine(Some(Some("1".into()))))["mobile"], "1");
    }
}
