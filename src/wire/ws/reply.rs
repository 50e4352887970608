//! The broker's answer to a request, typed: the frame's `op` names the
//! variant, its other fields (beside `id`) are the variant's body.
//!
//! A reply always carries the request's `id` (null when the request had
//! none or could not be read that far); a push never has an `id`, which is
//! how [`Incoming::read`] tells the two apart. The pages (`synced`,
//! `history`, `conversations`) go out through the fast paths
//! ([`synced_frame`](super::synced_frame) and its siblings) and read back as
//! their variants here.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ChatMessage, Conversation, FriendRequest, InboxEntry, Profile, Push};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op")]
pub enum Reply {
    /// `connect` succeeded; `head` is the user's inbox seq now.
    #[serde(rename = "connected", rename_all = "camelCase")]
    Connected {
        user_id: String,
        head: i64,
        server_time: i64,
        node: String,
    },
    /// A `send` is stored; `seq` is its place in the sender's own inbox.
    #[serde(rename = "ack", rename_all = "camelCase")]
    Ack {
        code: i32,
        msg_id: String,
        server_time: i64,
        seq: i64,
        /// This `clientMsgId` was already stored: nothing new was stored.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        duplicate: bool,
    },
    /// A page of the inbox; with `more` the next `since` is the last entry's seq.
    #[serde(rename = "synced")]
    Synced {
        entries: Vec<InboxEntry>,
        head: i64,
        more: bool,
    },
    /// A page of a conversation, newest first.
    #[serde(rename = "history")]
    History {
        messages: Vec<ChatMessage>,
        more: bool,
    },
    /// The read position now (it never moves back).
    #[serde(rename = "read")]
    Read {
        conv: Conversation,
        #[serde(rename = "upTo")]
        up_to: String,
    },
    #[serde(rename = "presence")]
    Presence {
        users: Vec<UserPresence>,
        /// Users asked for that the asker shares nothing with.
        hidden: Vec<String>,
    },
    /// A page of the conversation list, most recent first.
    #[serde(rename = "conversations")]
    Conversations {
        conversations: Vec<ConversationEntry>,
        more: bool,
    },
    #[serde(rename = "conversation.mute")]
    ConversationMute { conv: Conversation, muted: bool },
    /// Each group change answers with the group afterwards.
    #[serde(rename = "group.create")]
    GroupCreate { group: GroupInfo },
    #[serde(rename = "group.add")]
    GroupAdd { group: GroupInfo },
    #[serde(rename = "group.remove")]
    GroupRemove { group: GroupInfo },
    #[serde(rename = "group.leave")]
    GroupLeave { group: GroupInfo },
    #[serde(rename = "group.dissolve")]
    GroupDissolve { group: GroupInfo },
    #[serde(rename = "group.rename")]
    GroupRename { group: GroupInfo },
    #[serde(rename = "group.admin")]
    GroupAdmin { group: GroupInfo },
    #[serde(rename = "group.info")]
    GroupInfo { group: GroupInfo },
    #[serde(rename = "group.list")]
    GroupList { groups: Vec<GroupSummary> },
    /// The request is pending, or (`friends: true`, no `request`) the other
    /// had asked first and the two are friends now.
    #[serde(rename = "friend.request")]
    FriendRequest {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<FriendRequest>,
        friends: bool,
    },
    #[serde(rename = "friend.accept")]
    FriendAccept { from: String },
    #[serde(rename = "friend.reject")]
    FriendReject { from: String },
    #[serde(rename = "friend.list")]
    FriendList { friends: Vec<Friend> },
    /// Requests still waiting, newest first.
    #[serde(rename = "friend.pending")]
    FriendPending {
        incoming: Vec<FriendRequest>,
        outgoing: Vec<FriendRequest>,
    },
    #[serde(rename = "profile.get")]
    ProfileGet {
        users: Vec<Profile>,
        unknown: Vec<String>,
    },
    #[serde(rename = "profile.update")]
    ProfileUpdate { user: Profile },
    #[serde(rename = "pong")]
    Pong {
        #[serde(rename = "serverTime")]
        server_time: i64,
    },
    /// The request was refused (docs/PROTOCOL.md has the codes).
    #[serde(rename = "error")]
    Error { code: i32, message: String },
}

/// A user's presence as the `presence` reply lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserPresence {
    pub user_id: String,
    pub online: bool,
    pub platforms: Vec<i32>,
}

/// A friend: the profile and whether they are online.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Friend {
    #[serde(flatten)]
    pub profile: Profile,
    pub online: bool,
}

/// One row of `conversations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationEntry {
    /// As this user sees it: a 1:1 conversation targets the peer.
    pub conv: Conversation,
    pub last_message: ChatMessage,
    /// Others' messages after the read position.
    pub unread: i64,
    pub muted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_up_to: Option<String>,
}

/// A group with its members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupInfo {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dissolved_at: Option<i64>,
    pub members: Vec<GroupMember>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupMember {
    pub user_id: String,
    /// `owner`, `admin` or `member`.
    pub role: String,
}

/// One of my groups, as `group.list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupSummary {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub role: String,
    pub member_count: i64,
}

/// A reply on the wire: its fields beside the request's `id`.
#[derive(Serialize)]
struct Framed<'a> {
    id: Option<u64>,
    #[serde(flatten)]
    reply: &'a Reply,
}

impl Reply {
    /// Every reply op, in the order PROTOCOL.md lists them.
    pub const OPS: &[&str] = &[
        "connected",
        "ack",
        "synced",
        "history",
        "read",
        "presence",
        "conversations",
        "conversation.mute",
        "group.create",
        "group.add",
        "group.remove",
        "group.leave",
        "group.dissolve",
        "group.rename",
        "group.admin",
        "group.info",
        "group.list",
        "friend.request",
        "friend.accept",
        "friend.reject",
        "friend.list",
        "friend.pending",
        "profile.get",
        "profile.update",
        "pong",
        "error",
    ];

    /// The frame the broker sends: `{"id": id, "op": …, …body}`.
    pub fn frame(&self, id: Option<u64>) -> String {
        serde_json::to_string(&Framed { id, reply: self }).expect("replies serialize")
    }
}

/// Any frame from the broker: a reply to the request `id`, or a push.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Reply(Option<u64>, Reply),
    Push(Push),
}

impl Incoming {
    /// Reads a frame already parsed as JSON: with an `id` (even null) it is
    /// a reply, without one a push.
    pub fn read(frame: Value) -> serde_json::Result<Incoming> {
        match frame.get("id") {
            Some(id) => {
                let id = id.as_u64();
                Ok(Incoming::Reply(id, serde_json::from_value(frame)?))
            }
            None => Ok(Incoming::Push(serde_json::from_value(frame)?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::wire::ws::{
        ConvType, Page, ReceiptKind, conversations_frame, history_frame, msg_push, synced_frame,
    };

    fn conv() -> Conversation {
        Conversation {
            kind: ConvType::Single,
            target: "bob".into(),
        }
    }

    fn message() -> ChatMessage {
        ChatMessage {
            msg_id: "m1".into(),
            client_msg_id: None,
            conv: conv(),
            from: "alice".into(),
            content: json!({"type": "text", "text": "hi"}),
            server_time: 1,
        }
    }

    fn profile(mobile: Option<&str>) -> Profile {
        Profile {
            user_id: "alice".into(),
            display_name: "Alice".into(),
            portrait: Some("http://h/avatar/alice.svg".into()),
            mobile: mobile.map(|m| Some(m.into())),
        }
    }

    fn request() -> FriendRequest {
        FriendRequest {
            from_user: "alice".into(),
            to_user: "bob".into(),
            remark: "hi".into(),
            status: "pending".into(),
            created_at: 1,
        }
    }

    fn group() -> GroupInfo {
        GroupInfo {
            id: "g1".into(),
            name: "team".into(),
            owner: "alice".into(),
            created_at: 1,
            dissolved_at: None,
            members: vec![GroupMember {
                user_id: "alice".into(),
                role: "owner".into(),
            }],
        }
    }

    /// One reply of every op, with the JSON the broker wrote for it before
    /// the replies were typed (its `json!` and struct shapes).
    fn every_reply() -> Vec<(Reply, Value)> {
        let conv_json = json!({"type": "single", "target": "bob"});
        let group_json = json!({"id": "g1", "name": "team", "owner": "alice", "createdAt": 1, "members": [{"userId": "alice", "role": "owner"}]});
        let request_json = json!({"fromUser": "alice", "toUser": "bob", "remark": "hi", "status": "pending", "createdAt": 1});
        let profile_json = json!({"userId": "alice", "displayName": "Alice", "portrait": "http://h/avatar/alice.svg"});
        let group_change = |op: &str, reply: Reply| {
            (
                reply,
                json!({"id": 7, "op": op, "group": group_json.clone()}),
            )
        };
        vec![
            (
                Reply::Connected {
                    user_id: "alice".into(),
                    head: 57,
                    server_time: 2,
                    node: "n1".into(),
                },
                json!({"id": 7, "op": "connected", "userId": "alice", "head": 57, "serverTime": 2, "node": "n1"}),
            ),
            (
                Reply::Ack {
                    code: 0,
                    msg_id: "m1".into(),
                    server_time: 2,
                    seq: 58,
                    duplicate: false,
                },
                json!({"id": 7, "op": "ack", "code": 0, "msgId": "m1", "serverTime": 2, "seq": 58}),
            ),
            (
                Reply::Synced {
                    entries: vec![InboxEntry {
                        seq: 3,
                        message: message(),
                    }],
                    head: 9,
                    more: true,
                },
                json!({"id": 7, "op": "synced", "entries": [{"seq": 3, "message": serde_json::to_value(message()).unwrap()}], "head": 9, "more": true}),
            ),
            (
                Reply::History {
                    messages: vec![message()],
                    more: false,
                },
                json!({"id": 7, "op": "history", "messages": [serde_json::to_value(message()).unwrap()], "more": false}),
            ),
            (
                Reply::Read {
                    conv: conv(),
                    up_to: "m1".into(),
                },
                json!({"id": 7, "op": "read", "conv": conv_json.clone(), "upTo": "m1"}),
            ),
            (
                Reply::Presence {
                    users: vec![UserPresence {
                        user_id: "alice".into(),
                        online: true,
                        platforms: vec![2, 5],
                    }],
                    hidden: vec!["zed".into()],
                },
                json!({"id": 7, "op": "presence", "users": [{"userId": "alice", "online": true, "platforms": [2, 5]}], "hidden": ["zed"]}),
            ),
            (
                Reply::Conversations {
                    conversations: vec![ConversationEntry {
                        conv: conv(),
                        last_message: message(),
                        unread: 2,
                        muted: false,
                        read_up_to: Some("m0".into()),
                    }],
                    more: false,
                },
                json!({"id": 7, "op": "conversations", "conversations": [{"conv": conv_json.clone(), "lastMessage": serde_json::to_value(message()).unwrap(), "unread": 2, "muted": false, "readUpTo": "m0"}], "more": false}),
            ),
            (
                Reply::ConversationMute {
                    conv: conv(),
                    muted: true,
                },
                json!({"id": 7, "op": "conversation.mute", "conv": conv_json, "muted": true}),
            ),
            group_change("group.create", Reply::GroupCreate { group: group() }),
            group_change("group.add", Reply::GroupAdd { group: group() }),
            group_change("group.remove", Reply::GroupRemove { group: group() }),
            group_change("group.leave", Reply::GroupLeave { group: group() }),
            group_change("group.dissolve", Reply::GroupDissolve { group: group() }),
            group_change("group.rename", Reply::GroupRename { group: group() }),
            group_change("group.admin", Reply::GroupAdmin { group: group() }),
            group_change("group.info", Reply::GroupInfo { group: group() }),
            (
                Reply::GroupList {
                    groups: vec![GroupSummary {
                        id: "g1".into(),
                        name: "team".into(),
                        owner: "alice".into(),
                        role: "member".into(),
                        member_count: 2,
                    }],
                },
                json!({"id": 7, "op": "group.list", "groups": [{"id": "g1", "name": "team", "owner": "alice", "role": "member", "memberCount": 2}]}),
            ),
            (
                Reply::FriendRequest {
                    request: Some(request()),
                    friends: false,
                },
                json!({"id": 7, "op": "friend.request", "request": request_json.clone(), "friends": false}),
            ),
            (
                Reply::FriendAccept { from: "bob".into() },
                json!({"id": 7, "op": "friend.accept", "from": "bob"}),
            ),
            (
                Reply::FriendReject { from: "bob".into() },
                json!({"id": 7, "op": "friend.reject", "from": "bob"}),
            ),
            (
                Reply::FriendList {
                    friends: vec![Friend {
                        profile: profile(None),
                        online: true,
                    }],
                },
                json!({"id": 7, "op": "friend.list", "friends": [{"userId": "alice", "displayName": "Alice", "portrait": "http://h/avatar/alice.svg", "online": true}]}),
            ),
            (
                Reply::FriendPending {
                    incoming: vec![request()],
                    outgoing: vec![],
                },
                json!({"id": 7, "op": "friend.pending", "incoming": [request_json], "outgoing": []}),
            ),
            (
                Reply::ProfileGet {
                    users: vec![profile(None)],
                    unknown: vec!["ghost".into()],
                },
                json!({"id": 7, "op": "profile.get", "users": [profile_json], "unknown": ["ghost"]}),
            ),
            (
                Reply::ProfileUpdate {
                    user: profile(Some("13800000001")),
                },
                json!({"id": 7, "op": "profile.update", "user": {"userId": "alice", "displayName": "Alice", "portrait": "http://h/avatar/alice.svg", "mobile": "13800000001"}}),
            ),
            (
                Reply::Pong { server_time: 2 },
                json!({"id": 7, "op": "pong", "serverTime": 2}),
            ),
            (
                Reply::Error {
                    code: 404,
                    message: "no user \"nobody\"".into(),
                },
                json!({"id": 7, "op": "error", "code": 404, "message": "no user \"nobody\""}),
            ),
        ]
    }

    #[test]
    fn replies_are_framed_as_the_broker_writes_them_and_read_back() {
        let all = every_reply();
        assert_eq!(
            all.iter()
                .map(|(_, v)| v["op"].as_str().unwrap())
                .collect::<Vec<_>>(),
            Reply::OPS,
            "one reply per op, in OPS order"
        );
        for (reply, expected) in all {
            let frame = reply.frame(Some(7));
            assert_eq!(serde_json::from_str::<Value>(&frame).unwrap(), expected);
            assert_eq!(
                Incoming::read(expected).unwrap(),
                Incoming::Reply(Some(7), reply)
            );
        }
    }

    #[test]
    fn the_second_friend_request_answer_has_no_request() {
        let befriended = Reply::FriendRequest {
            request: None,
            friends: true,
        };
        assert_eq!(
            befriended.frame(Some(1)),
            r#"{"id":1,"op":"friend.request","friends":true}"#
        );
        let duplicate = Reply::Ack {
            code: 0,
            msg_id: "m1".into(),
            server_time: 2,
            seq: 3,
            duplicate: true,
        };
        let v: Value = serde_json::from_str(&duplicate.frame(None)).unwrap();
        assert_eq!((&v["id"], &v["duplicate"]), (&Value::Null, &json!(true)));
    }

    #[test]
    fn the_fast_paths_read_back_as_their_variants() {
        let entry = InboxEntry {
            seq: 3,
            message: message(),
        };
        let page = |items: Value| Page {
            json: items.to_string(),
            count: 1,
            more: true,
        };
        let read = |frame: String| Incoming::read(serde_json::from_str(&frame).unwrap()).unwrap();
        assert_eq!(
            read(synced_frame(
                Some(3),
                &page(json!([serde_json::to_value(&entry).unwrap()])),
                9
            )),
            Incoming::Reply(
                Some(3),
                Reply::Synced {
                    entries: vec![entry],
                    head: 9,
                    more: true
                }
            )
        );
        assert_eq!(
            read(history_frame(
                None,
                &page(json!([serde_json::to_value(message()).unwrap()]))
            )),
            Incoming::Reply(
                None,
                Reply::History {
                    messages: vec![message()],
                    more: true
                }
            )
        );
        assert_eq!(
            read(conversations_frame(Some(1), &page(json!([])))),
            Incoming::Reply(
                Some(1),
                Reply::Conversations {
                    conversations: vec![],
                    more: true
                }
            )
        );
        assert_eq!(
            read(msg_push(7, &serde_json::to_string(&message()).unwrap())),
            Incoming::Push(Push::Msg {
                seq: 7,
                message: message()
            })
        );
    }

    #[test]
    fn pushes_and_replies_are_told_apart_by_the_id() {
        let receipt = Push::Receipt {
            kind: ReceiptKind::Read,
            conv: conv(),
            by: "bob".into(),
            up_to: "m1".into(),
        };
        assert_eq!(
            Incoming::read(serde_json::from_str(&receipt.frame()).unwrap()).unwrap(),
            Incoming::Push(receipt)
        );
        // `presence` is both a push and a reply; an error without a readable id is a reply.
        let presence = json!({"op": "presence", "userId": "bob", "online": false, "platforms": []});
        assert!(matches!(
            Incoming::read(presence).unwrap(),
            Incoming::Push(Push::Presence { .. })
        ));
        let error = json!({"id": null, "op": "error", "code": 400, "message": "not JSON"});
        assert!(matches!(
            Incoming::read(error).unwrap(),
            Incoming::Reply(None, Reply::Error { code: 400, .. })
        ));
        assert!(Incoming::read(json!({"id": 1, "op": "fly"})).is_err());
    }

    /// The op of one push of every variant, checked against its frame; the
    /// match makes a new variant fail to compile here until it is listed.
    fn push_ops() -> Vec<&'static str> {
        let request = FriendRequest {
            from_user: "a".into(),
            to_user: "b".into(),
            remark: String::new(),
            status: "pending".into(),
            created_at: 1,
        };
        let every = [
            Push::Msg {
                seq: 1,
                message: message(),
            },
            Push::Receipt {
                kind: ReceiptKind::Read,
                conv: conv(),
                by: "bob".into(),
                up_to: "m1".into(),
            },
            Push::Typing {
                conv: conv(),
                from: "bob".into(),
            },
            Push::Presence {
                user_id: "bob".into(),
                online: true,
                platforms: vec![],
            },
            Push::Profile {
                user: profile(None),
            },
            Push::Notify(crate::wire::ws::Notify::FriendRequest {
                from: "a".into(),
                remark: String::new(),
                request,
            }),
            Push::PcLoginRequest(crate::wire::ws::PcLoginRequest {
                token: "t".into(),
                platform: 5,
                device_name: "d".into(),
                client_id: None,
                expires_in_ms: 1,
            }),
            Push::Fault {
                rule: 1,
                kind: "ws.drop-pushes".into(),
                detail: "d".into(),
            },
        ];
        every
            .iter()
            .map(|push| {
                let op = match push {
                    Push::Msg { .. } => "msg",
                    Push::Receipt { .. } => "receipt",
                    Push::Typing { .. } => "typing",
                    Push::Presence { .. } => "presence",
                    Push::Profile { .. } => "profile",
                    Push::Notify(_) => "notify",
                    Push::PcLoginRequest(_) => "pc_login_request",
                    Push::Fault { .. } => "fault",
                };
                let frame: Value = serde_json::from_str(&push.frame()).unwrap();
                assert_eq!(frame["op"], op);
                op
            })
            .collect()
    }

    #[test]
    fn protocol_md_lists_every_reply_and_push_and_no_other() {
        let doc = include_str!("../../../docs/PROTOCOL.md");
        let section = doc
            .split("### Every reply and push")
            .nth(1)
            .and_then(|t| t.split("\n### ").next())
            .expect("PROTOCOL.md has an \"Every reply and push\" section");
        let (replies, pushes) = section
            .split_once("\nPushes")
            .expect("the section lists replies, then \"Pushes\"");
        let listed = |table: &str| -> Vec<String> {
            table
                .lines()
                .filter_map(|l| Some(l.strip_prefix("| `")?.split('`').next()?.to_owned()))
                .collect()
        };
        assert_eq!(listed(replies), Reply::OPS);
        assert_eq!(listed(pushes), push_ops());
    }
}
