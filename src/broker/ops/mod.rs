//! The chat operations' handlers, one module per family. `conn.rs` decodes
//! a frame's header and dispatches; a handler answers on the connection
//! (directly, or through the writer once its change is committed) or
//! returns a [`Refusal`], which becomes an `error` frame while the
//! connection stays open.

pub mod connect;
pub mod conversations;
pub mod groups;
pub mod messages;
pub mod presence;
pub mod social;
#[cfg(test)]
mod testkit;

use serde_json::Value;

use super::Broker;
use super::hub::ConnHandle;
use super::writer::{WriteOp, frame};
use crate::store::{Refused, Why};
use crate::wire::ws::{
    ConvType, Conversation, DecodeError, ErrorFrame, Push, Reply, Request, code,
};
pub use connect::Identity;

/// What every handler is given.
pub struct Ctx<'a> {
    pub broker: &'a Broker,
    /// The connection the request came on.
    pub conn: &'a ConnHandle,
    /// Who is connected on it.
    pub who: &'a Identity,
    /// The request's `id`, echoed in its answer.
    pub id: Option<u64>,
}

impl Ctx<'_> {
    /// Answers the request with `reply`.
    fn reply(&self, reply: Reply) {
        self.conn.send(reply.frame(self.id).into());
    }

    /// Pushes to every connection of `user`.
    fn push(&self, user: &str, push: &Push) {
        self.broker.hub.deliver(user, &push.frame().into(), None);
    }

    /// The connected user.
    fn me(&self) -> &str {
        &self.who.user_id
    }
}

/// What a handler returns.
pub type Handled = Result<(), Refusal>;

/// A failed request: an `error` frame, the connection stays open.
#[derive(Debug)]
pub struct Refusal(pub i32, pub String);

/// The broker's edge for the store's refusals: one protocol code per reason.
impl From<Refused> for Refusal {
    fn from(r: Refused) -> Self {
        let code = match r.why {
            Why::Missing => code::NOT_FOUND,
            Why::NotAllowed => code::FORBIDDEN,
            Why::Invalid => code::BAD_REQUEST,
            Why::Already => code::CONFLICT,
        };
        Refusal(code, r.message)
    }
}

impl Refusal {
    /// Sends the `error` frame answering request `id`.
    pub fn send(self, conn: &ConnHandle, id: Option<u64>) {
        conn.send(frame(&ErrorFrame::new(id, self.0, self.1)));
    }
}

/// A handler's refusal, as its result.
pub fn refuse<T>(code: i32, message: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal(code, message.into()))
}

/// A frame's header, decoded before its body.
pub struct Header {
    pub id: Option<u64>,
    pub op: String,
    /// The whole frame, for the op's own request type.
    pub body: Value,
}

/// Decodes `{id, op}`; a refusal says which `id` it answers.
pub fn header(text: &str) -> Result<Header, (Option<u64>, Refusal)> {
    let bad = |id, message: String| Err((id, Refusal(code::BAD_REQUEST, message)));
    let body: Value = match serde_json::from_str(text) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return bad(None, "a frame is a JSON object with an \"op\"".into()),
        Err(e) => return bad(None, format!("invalid JSON: {e}")),
    };
    let id = match body.get("id") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) => Some(n),
            None => return bad(None, "\"id\" must be a non-negative integer".into()),
        },
    };
    let Some(op) = body.get("op").and_then(Value::as_str).map(str::to_owned) else {
        return bad(id, "missing \"op\"".into());
    };
    Ok(Header { id, op, body })
}

/// Decodes the body of `op`'s request: an unknown op, or the `bad … frame` refusal.
pub fn request(op: &str, body: Value) -> Result<Request, Refusal> {
    Request::decode(op, body).map_err(|e| {
        let code = match e {
            DecodeError::UnknownOp(_) => code::UNKNOWN_OP,
            DecodeError::BadBody { .. } => code::BAD_REQUEST,
        };
        Refusal(code, e.to_string())
    })
}

/// Runs a connected user's request, one line per op.
pub async fn dispatch(cx: &Ctx<'_>, request: Request) -> Handled {
    use crate::store::GroupChange as Change;
    match request {
        Request::Connect(_) => refuse(code::ALREADY_CONNECTED, "already connected"),
        Request::Ping => connect::ping(cx),
        Request::Send(r) => messages::send(cx, r).await,
        Request::Sync(r) => messages::sync(cx, r).await,
        Request::Recv(r) => messages::recv(cx, r).await,
        Request::History(r) => messages::history(cx, r).await,
        Request::Read(r) => conversations::read(cx, r).await,
        Request::Conversations(r) => conversations::conversations(cx, r).await,
        Request::ConversationMute(r) => conversations::mute(cx, r).await,
        Request::Typing(r) => presence::typing(cx, r).await,
        Request::Presence(r) => presence::presence(cx, r).await,
        Request::GroupCreate(r) => groups::create(cx, r).await,
        Request::GroupAdd(r) => groups::add(cx, r).await,
        Request::GroupRemove(r) => {
            let change = Change::Remove {
                group: r.group,
                members: r.members,
            };
            groups::change(cx, change).await
        }
        Request::GroupLeave(r) => groups::change(cx, Change::Leave { group: r.group }).await,
        Request::GroupDissolve(r) => groups::change(cx, Change::Dissolve { group: r.group }).await,
        Request::GroupRename(r) => {
            let change = Change::Rename {
                group: r.group,
                name: r.name,
            };
            groups::change(cx, change).await
        }
        Request::GroupAdmin(r) => {
            let change = Change::SetAdmin {
                group: r.group,
                user: r.user_id,
                admin: r.admin,
            };
            groups::change(cx, change).await
        }
        Request::GroupInfo(r) => groups::info(cx, r).await,
        Request::GroupList => groups::list(cx).await,
        Request::FriendRequest(r) => social::friend_request(cx, r).await,
        Request::FriendAccept(r) => social::friend_answer(cx, true, r).await,
        Request::FriendReject(r) => social::friend_answer(cx, false, r).await,
        Request::FriendList => social::friend_list(cx).await,
        Request::FriendPending => social::friend_pending(cx).await,
        Request::ProfileGet(r) => social::profile_get(cx, r).await,
        Request::ProfileUpdate(r) => social::profile_update(cx, r).await,
    }
}

fn bad_request(message: String) -> Refusal {
    Refusal(code::BAD_REQUEST, message)
}

/// Logs a database error; the client learns only that there was one, and
/// whether retrying soon may help (the database is unreachable for now).
fn db_error(e: crate::store::Error) -> Refusal {
    if e.is_unavailable() {
        tracing::warn!(error = %e, "database unavailable");
        return Refusal(
            code::UNAVAILABLE,
            "the database is unavailable for now; retry in a moment".into(),
        );
    }
    tracing::error!(error = %e, "database error");
    Refusal(code::SERVER_ERROR, "server error; see the imctl log".into())
}

/// Hands an operation to the writer; fails only while shutting down.
async fn to_writer(broker: &Broker, op: WriteOp) -> Handled {
    broker.writer.send(op).await.map_err(|_| {
        Refusal(
            code::SERVER_ERROR,
            "the server is shutting down; nothing was stored".into(),
        )
    })
}

/// With `--friends-only`, refuses `users` who are not friends of the
/// connected user (themself and the robot excepted); `what` names the act.
async fn only_friends(cx: &Ctx<'_>, users: &[String], what: &str) -> Handled {
    let others = || {
        users
            .iter()
            .filter(|u| *u != cx.me() && u.as_str() != super::robot::ROBOT)
    };
    if !cx.broker.options.friends_only || others().next().is_none() {
        return Ok(());
    }
    let friends: std::collections::HashSet<String> = cx
        .broker
        .store
        .friends_of(cx.me())
        .await
        .map_err(db_error)?
        .into_iter()
        .map(|u| u.id)
        .collect();
    let strangers: Vec<&String> = others().filter(|u| !friends.contains(*u)).collect();
    if strangers.is_empty() {
        return Ok(());
    }
    refuse(
        code::FORBIDDEN,
        format!(
            "you can only {what} friends on this server (--friends-only); send {strangers:?} a friend.request"
        ),
    )
}

/// The other participants of a conversation the connected user is in, or
/// a refusal.
async fn participants(cx: &Ctx<'_>, conv: &Conversation) -> Result<Vec<String>, Refusal> {
    let me = cx.me();
    match conv.kind {
        ConvType::Single => Ok(if conv.target == me {
            vec![]
        } else {
            vec![conv.target.clone()]
        }),
        ConvType::Group => {
            let members = cx
                .broker
                .store
                .group_members(&conv.target)
                .await
                .map_err(db_error)?;
            if !members.iter().any(|m| m == me) {
                return refuse(
                    code::FORBIDDEN,
                    format!("you are not a member of group {:?}", conv.target),
                );
            }
            Ok(members.into_iter().filter(|m| m != me).collect())
        }
    }
}

/// The conversation `conv`, addressed by `me`, as its other participants
/// address it.
fn conv_for(conv: &Conversation, me: &str) -> Conversation {
    match conv.kind {
        ConvType::Single => Conversation {
            kind: ConvType::Single,
            target: me.to_owned(),
        },
        ConvType::Group => conv.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> (Option<u64>, i32, String) {
        let (id, Refusal(code, message)) = header(text).err().expect("refused");
        (id, code, message)
    }

    #[test]
    fn a_frame_is_a_json_object_with_an_op_and_maybe_an_id() {
        let r = header(r#"{"id":7,"op":"sync","since":3}"#).ok().unwrap();
        assert_eq!(
            (r.id, r.op.as_str(), &r.body["since"]),
            (Some(7), "sync", &serde_json::json!(3))
        );
        assert_eq!(header(r#"{"op":"ping","id":null}"#).ok().unwrap().id, None);
        let bad = code::BAD_REQUEST;
        let msg = "a frame is a JSON object with an \"op\"";
        assert_eq!(refused("[1]"), (None, bad, msg.into()));
        assert!(refused("{").2.starts_with("invalid JSON: "));
        let msg = "\"id\" must be a non-negative integer";
        assert_eq!(refused(r#"{"id":-1,"op":"ping"}"#), (None, bad, msg.into()));
        assert_eq!(
            refused(r#"{"id":2}"#),
            (Some(2), bad, "missing \"op\"".into())
        );
    }
}
