//! A client's request, typed: the frame's `op` names the variant, its other
//! fields (beside `id`) are the variant's body.
//!
//! The broker reads the `{id, op}` header first and decodes the body with
//! [`Request::decode`] only once the connection's state allows the op, so a
//! bad frame is answered with the same texts whatever its body; clients
//! build frames with [`Request::frame`].

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::*;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op")]
pub enum Request {
    #[serde(rename = "connect")]
    Connect(ConnectReq),
    #[serde(rename = "send")]
    Send(SendReq),
    #[serde(rename = "sync")]
    Sync(SyncReq),
    #[serde(rename = "recv")]
    Recv(RecvReq),
    #[serde(rename = "history")]
    History(HistoryReq),
    #[serde(rename = "read")]
    Read(ReadReq),
    #[serde(rename = "typing")]
    Typing(ConvReq),
    #[serde(rename = "presence")]
    Presence(PresenceReq),
    #[serde(rename = "conversations")]
    Conversations(ConversationsReq),
    #[serde(rename = "conversation.mute")]
    ConversationMute(MuteReq),
    #[serde(rename = "group.create")]
    GroupCreate(GroupCreateReq),
    #[serde(rename = "group.add")]
    GroupAdd(GroupMembersReq),
    #[serde(rename = "group.remove")]
    GroupRemove(GroupMembersReq),
    #[serde(rename = "group.leave")]
    GroupLeave(GroupReq),
    #[serde(rename = "group.dissolve")]
    GroupDissolve(GroupReq),
    #[serde(rename = "group.rename")]
    GroupRename(GroupRenameReq),
    #[serde(rename = "group.admin")]
    GroupAdmin(GroupAdminReq),
    #[serde(rename = "group.info")]
    GroupInfo(GroupReq),
    #[serde(rename = "group.list")]
    GroupList,
    #[serde(rename = "friend.request")]
    FriendRequest(FriendRequestReq),
    #[serde(rename = "friend.accept")]
    FriendAccept(FriendAnswerReq),
    #[serde(rename = "friend.reject")]
    FriendReject(FriendAnswerReq),
    #[serde(rename = "friend.list")]
    FriendList,
    #[serde(rename = "friend.pending")]
    FriendPending,
    #[serde(rename = "profile.get")]
    ProfileGet(ProfileGetReq),
    #[serde(rename = "profile.update")]
    ProfileUpdate(ProfileUpdateReq),
    #[serde(rename = "ping")]
    Ping,
}

/// Why a frame is not a request; the texts are the `error` frame's message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown op {0:?}; see docs/PROTOCOL.md")]
    UnknownOp(String),
    #[error("bad {op} frame: {error}")]
    BadBody { op: &'static str, error: String },
}

/// A frame on the wire: the request's fields beside its `id`.
#[derive(Serialize)]
struct Framed<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    #[serde(flatten)]
    request: &'a Request,
}

impl Request {
    /// Every op, in the order PROTOCOL.md lists them.
    pub const OPS: &[&str] = &[
        "connect",
        "send",
        "sync",
        "recv",
        "history",
        "read",
        "typing",
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
        "ping",
    ];

    /// The request `op` names, from the whole frame `body` (unknown fields,
    /// `id` and `op` among them, are ignored).
    pub fn decode(op: &str, body: Value) -> Result<Request, DecodeError> {
        let op: &'static str = Self::OPS
            .iter()
            .find(|o| **o == op)
            .ok_or_else(|| DecodeError::UnknownOp(op.to_owned()))?;
        fn body_of<T: DeserializeOwned>(op: &'static str, body: Value) -> Result<T, DecodeError> {
            serde_json::from_value(body).map_err(|e| DecodeError::BadBody {
                op,
                error: e.to_string(),
            })
        }
        Ok(match op {
            "connect" => Request::Connect(body_of(op, body)?),
            "send" => Request::Send(body_of(op, body)?),
            "sync" => Request::Sync(body_of(op, body)?),
            "recv" => Request::Recv(body_of(op, body)?),
            "history" => Request::History(body_of(op, body)?),
            "read" => Request::Read(body_of(op, body)?),
            "typing" => Request::Typing(body_of(op, body)?),
            "presence" => Request::Presence(body_of(op, body)?),
            "conversations" => Request::Conversations(body_of(op, body)?),
            "conversation.mute" => Request::ConversationMute(body_of(op, body)?),
            "group.create" => Request::GroupCreate(body_of(op, body)?),
            "group.add" => Request::GroupAdd(body_of(op, body)?),
            "group.remove" => Request::GroupRemove(body_of(op, body)?),
            "group.leave" => Request::GroupLeave(body_of(op, body)?),
            "group.dissolve" => Request::GroupDissolve(body_of(op, body)?),
            "group.rename" => Request::GroupRename(body_of(op, body)?),
            "group.admin" => Request::GroupAdmin(body_of(op, body)?),
            "group.info" => Request::GroupInfo(body_of(op, body)?),
            "group.list" => Request::GroupList,
            "friend.request" => Request::FriendRequest(body_of(op, body)?),
            "friend.accept" => Request::FriendAccept(body_of(op, body)?),
            "friend.reject" => Request::FriendReject(body_of(op, body)?),
            "friend.list" => Request::FriendList,
            "friend.pending" => Request::FriendPending,
            "profile.get" => Request::ProfileGet(body_of(op, body)?),
            "profile.update" => Request::ProfileUpdate(body_of(op, body)?),
            "ping" => Request::Ping,
            _ => unreachable!("every op of OPS is decoded above"),
        })
    }

    /// The request's `op`.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Connect(_) => "connect",
            Request::Send(_) => "send",
            Request::Sync(_) => "sync",
            Request::Recv(_) => "recv",
            Request::History(_) => "history",
            Request::Read(_) => "read",
            Request::Typing(_) => "typing",
            Request::Presence(_) => "presence",
            Request::Conversations(_) => "conversations",
            Request::ConversationMute(_) => "conversation.mute",
            Request::GroupCreate(_) => "group.create",
            Request::GroupAdd(_) => "group.add",
            Request::GroupRemove(_) => "group.remove",
            Request::GroupLeave(_) => "group.leave",
            Request::GroupDissolve(_) => "group.dissolve",
            Request::GroupRename(_) => "group.rename",
            Request::GroupAdmin(_) => "group.admin",
            Request::GroupInfo(_) => "group.info",
            Request::GroupList => "group.list",
            Request::FriendRequest(_) => "friend.request",
            Request::FriendAccept(_) => "friend.accept",
            Request::FriendReject(_) => "friend.reject",
            Request::FriendList => "friend.list",
            Request::FriendPending => "friend.pending",
            Request::ProfileGet(_) => "profile.get",
            Request::ProfileUpdate(_) => "profile.update",
            Request::Ping => "ping",
        }
    }

    /// The frame a client sends: `{"id": id, "op": …, …body}`.
    pub fn frame(&self, id: Option<u64>) -> String {
        serde_json::to_string(&Framed { id, request: self }).expect("requests serialize")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn conv() -> Conversation {
        Conversation {
            kind: ConvType::Single,
            target: "bob".into(),
        }
    }

    /// One request of every op.
    fn every_request() -> Vec<Request> {
        let group = || GroupReq { group: "g1".into() };
        let members = || GroupMembersReq {
            group: "g1".into(),
            members: vec!["bob".into()],
        };
        let from = || FriendAnswerReq { from: "bob".into() };
        vec![
            Request::Connect(ConnectReq {
                token: Some("t".into()),
                client_id: Some("c".into()),
                platform: Some(5),
            }),
            Request::Send(SendReq {
                conv: conv(),
                content: serde_json::from_value(json!({"type": "text", "text": "hi"})).unwrap(),
                client_msg_id: Some("x1".into()),
            }),
            Request::Sync(SyncReq {
                since: 3,
                limit: Some(10),
            }),
            Request::Recv(RecvReq { up_to: 4 }),
            Request::History(HistoryReq {
                conv: conv(),
                before: Some(json!("m9")),
                limit: None,
            }),
            Request::Read(ReadReq {
                conv: conv(),
                up_to: "m9".into(),
            }),
            Request::Typing(ConvReq { conv: conv() }),
            Request::Presence(PresenceReq { users: None }),
            Request::Conversations(ConversationsReq {
                limit: Some(5),
                before: None,
            }),
            Request::ConversationMute(MuteReq {
                conv: conv(),
                muted: true,
            }),
            Request::GroupCreate(GroupCreateReq {
                name: "team".into(),
                members: vec!["bob".into()],
            }),
            Request::GroupAdd(members()),
            Request::GroupRemove(members()),
            Request::GroupLeave(group()),
            Request::GroupDissolve(group()),
            Request::GroupRename(GroupRenameReq {
                group: "g1".into(),
                name: "new".into(),
            }),
            Request::GroupAdmin(GroupAdminReq {
                group: "g1".into(),
                user_id: "bob".into(),
                admin: true,
            }),
            Request::GroupInfo(group()),
            Request::GroupList,
            Request::FriendRequest(FriendRequestReq {
                target: "bob".into(),
                remark: Some("hi".into()),
            }),
            Request::FriendAccept(from()),
            Request::FriendReject(from()),
            Request::FriendList,
            Request::FriendPending,
            Request::ProfileGet(ProfileGetReq {
                users: Some(vec!["bob".into()]),
                user_id: None,
            }),
            Request::ProfileUpdate(ProfileUpdateReq {
                display_name: Some("Al".into()),
                portrait: None,
            }),
            Request::Ping,
        ]
    }

    #[test]
    fn every_op_is_framed_and_decoded_back_the_same() {
        let all = every_request();
        assert_eq!(
            all.iter().map(Request::op).collect::<Vec<_>>(),
            Request::OPS,
            "one request per op, in OPS order"
        );
        for request in all {
            let frame: Value = serde_json::from_str(&request.frame(Some(7))).unwrap();
            assert_eq!(frame["id"], 7);
            assert_eq!(frame["op"], request.op());
            let op = frame["op"].as_str().unwrap().to_owned();
            assert_eq!(Request::decode(&op, frame).unwrap(), request);
        }
    }

    #[test]
    fn frames_carry_only_what_is_set() {
        let ping = Request::Ping.frame(None);
        assert_eq!(ping, r#"{"op":"ping"}"#);
        let sync = Request::Sync(SyncReq {
            since: 0,
            limit: None,
        });
        assert_eq!(sync.frame(Some(1)), r#"{"id":1,"op":"sync","since":0}"#);
    }

    #[test]
    fn bad_frames_keep_their_texts() {
        assert_eq!(
            Request::decode("fly", json!({"op": "fly"}))
                .unwrap_err()
                .to_string(),
            "unknown op \"fly\"; see docs/PROTOCOL.md"
        );
        let e = Request::decode("send", json!({"op": "send", "conv": 1})).unwrap_err();
        assert!(e.to_string().starts_with("bad send frame: "), "{e}");
        // Ops without a body ignore whatever the frame carries.
        assert_eq!(
            Request::decode("ping", json!({"op": "ping", "x": [1]})).unwrap(),
            Request::Ping
        );
    }

    #[test]
    fn protocol_md_lists_every_request_and_no_other() {
        let doc = include_str!("../../../docs/PROTOCOL.md");
        let table = doc
            .split("### Every request")
            .nth(1)
            .and_then(|t| t.split("\n### ").next())
            .expect("PROTOCOL.md has an \"Every request\" section");
        let listed: Vec<&str> = table
            .lines()
            .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
            .collect();
        assert_eq!(listed, Request::OPS);
    }
}
