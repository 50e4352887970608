//! One WebSocket connection: a single task that reads client frames, writes
//! queued server frames, pings, and enforces the connect deadline, the idle
//! timeout, the token's expiry and the write timeout.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Broker;
use super::hub::{ConnHandle, Queue};
use super::presence;
use super::writer::{Replier, WriteOp, frame};
use crate::http::advertise::PublicUrls;
use crate::store::{Before, Delivered, GroupChange, NewMessage, Requested, msg_id, parse_msg_id};
use crate::token::TokenError;
use crate::wire::limits::{self, PAGE_BYTES};
use crate::wire::limits::{MAX_CLIENT_ID, check_platform, check_text};
use crate::wire::ws::{
    ConnectReq, Connected, ConvReq, ConvType, Conversation, ConversationsReq, ErrorFrame,
    FriendAnswerReq, FriendRequestReq, GroupAdminReq, GroupCreateReq, GroupMembersReq,
    GroupRenameReq, GroupReq, HistoryReq, MuteReq, PresenceReq, ProfileGetReq, ProfileUpdateReq,
    ReadReq, RecvReq, SendReq, SyncReq, close, code, conversations_frame, history_frame,
    synced_frame,
};

const MAX_SYNC: u32 = 1000;
const DEFAULT_SYNC: u32 = 200;
const MAX_HISTORY: u32 = 200;
const DEFAULT_HISTORY: u32 = 50;

/// A closing connection writes what is queued (at shutdown: also the acks
/// of what the writer still commits) for at most this long, then the close
/// frame for at most [`CLOSE_FRAME`], then reads the client's close for at
/// most [`CLOSE_FRAME`]: 5 s in all, whatever the client does.
const CLOSE_FLUSH: Duration = Duration::from_secs(3);
const CLOSE_FRAME: Duration = Duration::from_secs(1);

const TOO_SLOW: (u16, &str) = (close::TOO_SLOW, "too slow reading: reconnect and sync");

/// Who this connection is, once `connect` succeeded.
struct Session {
    user_id: String,
    client_id: String,
    platform: i32,
    /// When the IM token expires: the connection closes then.
    expires: Instant,
    /// URLs on the host this connection reached us by (portraits).
    urls: PublicUrls,
    /// When this connection last relayed `typing`, per conversation, for
    /// the conversations within the last `TYPING_INTERVAL` (rate limit).
    typing: std::sync::Mutex<std::collections::HashMap<(ConvType, String), Instant>>,
}

/// At most one `typing` per conversation per connection in this interval…
const TYPING_INTERVAL: Duration = Duration::from_secs(2);
/// …and in at most this many conversations per interval.
const TYPING_CONVERSATIONS: usize = 8;

/// What to do after handling a frame.
enum Next {
    Continue,
    Close(u16, &'static str),
}

/// A failed request: an `error` frame, the connection stays open.
struct Refusal(i32, String);

fn refuse<T>(code: i32, message: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal(code, message.into()))
}

fn parse<T: DeserializeOwned>(op: &str, value: Value) -> Result<T, Refusal> {
    serde_json::from_value(value)
        .map_err(|e| Refusal(code::BAD_REQUEST, format!("bad {op} frame: {e}")))
}

fn now_ms() -> i64 {
    crate::store::now_ms()
}

/// What became of a bounded write.
enum Wrote {
    Done,
    /// The socket failed: the client is gone.
    Failed,
    /// The client did not take the bytes within `--write-timeout`.
    TooSlow,
    /// The connection must close (kicked, shutting down) before it finished.
    Interrupted,
}

pub async fn run(
    mut socket: WebSocket,
    broker: Broker,
    url_token: Option<String>,
    urls: PublicUrls,
) {
    let (handle, mut queue) = broker.hub.handle();
    let options = &broker.options;
    let mut session: Option<Session> = None;
    let idle = options.idle_timeout;
    let mut last_heard = Instant::now();
    // A zero period would panic; `--idle-timeout 0s` pings as often as it may.
    let period = (idle / 3).max(Duration::from_millis(10));
    let mut ping = tokio::time::interval_at(Instant::now() + period, period);
    // Before `connect`: the connect deadline; after: the token's expiry.
    let deadline = tokio::time::sleep(options.connect_timeout);
    tokio::pin!(deadline);
    // A frame taken from the queue that the socket has not accepted yet.
    let mut carry: Option<Utf8Bytes> = None;
    let shutdown = broker.shutdown.clone();

    let closing = loop {
        let wrote = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break Some((close::GOING_AWAY, "the server is shutting down")),
            _ = handle.kick.cancelled() => break Some(handle.close_reason()),
            _ = &mut deadline => break Some(match session {
                None => (close::AUTH_FAILED, "no connect frame within --connect-timeout"),
                Some(_) => (close::AUTH_FAILED, "token expired: log in again"),
            }),
            Some(out) = queue.recv() => {
                // Write everything already queued, then flush once.
                carry = Some(out);
                let write = write_all(&mut socket, &mut carry, &mut queue);
                bounded(write, options.write_timeout, &handle, &shutdown).await
            }
            incoming = socket.recv() => {
                last_heard = Instant::now();
                let next = match incoming {
                    Some(Ok(Message::Text(text))) => {
                        let connecting = session.is_none();
                        // Boxed: the request handlers' state is large and only
                        // needed while a frame is handled, not while idle.
                        let next = Box::pin(on_text(&broker, &handle, &mut session, url_token.as_deref(), &urls, &text)).await;
                        if let (true, Some(s)) = (connecting, &session) {
                            deadline.as_mut().reset(s.expires);
                        }
                        next
                    }
                    Some(Ok(Message::Binary(_))) => {
                        handle.send(frame(&ErrorFrame::new(None, code::BAD_REQUEST, "binary frames are not supported; send JSON text frames")));
                        Next::Continue
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => Next::Continue,
                    Some(Ok(Message::Close(_))) | None => break None,
                    Some(Err(e)) => {
                        let user = session.as_ref().map(|s| s.user_id.as_str());
                        break read_failed(&e, user, options.max_frame);
                    }
                };
                if let Next::Close(code, reason) = next {
                    break Some((code, reason));
                }
                Wrote::Done
            }
            _ = ping.tick() => {
                if last_heard.elapsed() >= idle {
                    break Some((close::IDLE, "idle timeout"));
                }
                let write = socket.send(Message::Ping(Default::default()));
                bounded(write, options.write_timeout, &handle, &shutdown).await
            }
        };
        match wrote {
            Wrote::Done | Wrote::Interrupted => {}
            Wrote::Failed => break None,
            Wrote::TooSlow => {
                warn!(conn = handle.id, user = ?session.as_ref().map(|s| &s.user_id), timeout = ?options.write_timeout, "the client takes no frames; closing with 4009");
                break Some(TOO_SLOW);
            }
        }
    };
    if let Some(s) = &session {
        // While shutting down everybody goes offline and the database is
        // closing: nobody is left to tell.
        if broker.hub.unregister(&s.user_id, handle.id).is_some() && !shutdown.is_cancelled() {
            presence::announce(&broker, &s.user_id, handle.id).await;
        }
        info!(user = ?s.user_id, client = ?s.client_id, "disconnected");
    }
    if let Some((code, reason)) = closing {
        // Boxed: needed once, at the end, not in every idle connection's task.
        Box::pin(close_bounded(
            socket, &broker, &handle, queue, carry, code, reason,
        ))
        .await;
    }
}

/// Runs a write for at most `limit`, cut short when the connection must close.
async fn bounded(
    write: impl Future<Output = Result<(), axum::Error>>,
    limit: Duration,
    handle: &ConnHandle,
    shutdown: &CancellationToken,
) -> Wrote {
    tokio::select! {
        biased;
        _ = handle.kick.cancelled() => Wrote::Interrupted,
        _ = shutdown.cancelled() => Wrote::Interrupted,
        written = tokio::time::timeout(limit, write) => match written {
            Ok(Ok(())) => Wrote::Done,
            Ok(Err(e)) => {
                debug!(error = %e, "WebSocket write failed");
                Wrote::Failed
            }
            Err(_) => Wrote::TooSlow,
        },
    }
}

/// Hands `carry`, then up to 64 more queued frames, to the socket and
/// flushes once. Cancel-safe: a frame stays in `carry` until the socket
/// has taken it, and what the socket took stays in its buffer.
async fn write_all(
    socket: &mut WebSocket,
    carry: &mut Option<Utf8Bytes>,
    queue: &mut Queue,
) -> Result<(), axum::Error> {
    for _ in 0..65 {
        if carry.is_none() {
            *carry = queue.try_recv();
        }
        if carry.is_none() {
            break;
        }
        std::future::poll_fn(|cx| socket.poll_ready_unpin(cx)).await?;
        if let Some(out) = carry.take() {
            socket.start_send_unpin(Message::Text(out))?;
        }
    }
    socket.flush().await
}

/// Ends a connection within `CLOSE_FLUSH` + 2 × `CLOSE_FRAME`: writes what
/// is queued, then the close frame; a client that takes neither loses the
/// TCP connection instead.
async fn close_bounded(
    mut socket: WebSocket,
    broker: &Broker,
    handle: &ConnHandle,
    mut queue: Queue,
    mut carry: Option<Utf8Bytes>,
    code: u16,
    reason: &'static str,
) {
    // A client that is not reading (4009) would only hold us up.
    if code != close::TOO_SLOW && !handle.overflowed() {
        let shutting_down = code == close::GOING_AWAY;
        let flushed = tokio::time::timeout(CLOSE_FLUSH, async {
            if shutting_down {
                // The writer commits what it has queued and acks it: keep
                // writing those acks meanwhile, so none is lost to a full queue.
                let done = broker.writer_done.cancelled();
                tokio::pin!(done);
                loop {
                    tokio::select! {
                        biased;
                        _ = &mut done => break,
                        Some(out) = queue.recv() => {
                            carry = Some(out);
                            write_all(&mut socket, &mut carry, &mut queue).await?;
                        }
                    }
                }
            }
            // Flush what is queued (acks, an auth error) before the close frame.
            loop {
                if carry.is_none() {
                    carry = queue.try_recv();
                }
                if carry.is_none() {
                    return Ok::<_, axum::Error>(());
                }
                write_all(&mut socket, &mut carry, &mut queue).await?;
            }
        })
        .await;
        if !matches!(flushed, Ok(Ok(()))) {
            return;
        }
    }
    // A dropped frame (say an ack, at shutdown) means the client must
    // reconnect and sync, whatever else happened.
    let (code, reason) = if handle.overflowed() {
        TOO_SLOW
    } else {
        (code, reason)
    };
    let close = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    if !matches!(
        tokio::time::timeout(CLOSE_FRAME, socket.send(Message::Close(Some(close)))).await,
        Ok(Ok(()))
    ) {
        return;
    }
    // Finish the closing handshake: read (and drop) what the client had
    // already sent, so the socket is not closed with unread data, which
    // makes TCP reset it and lose the acks and the close frame in flight.
    let _ = tokio::time::timeout(CLOSE_FRAME, async {
        while let Some(Ok(m)) = socket.recv().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// The close for a failed read: 1009 for a frame over `--max-frame`,
/// 1002/1007 for a broken WebSocket protocol, none when the client is gone.
fn read_failed(
    e: &axum::Error,
    user: Option<&str>,
    max_frame: usize,
) -> Option<(u16, &'static str)> {
    use tungstenite::error::{CapacityError, Error as WsError};
    let inner = std::error::Error::source(e).and_then(|s| s.downcast_ref::<WsError>());
    let closing = match inner {
        Some(WsError::Capacity(CapacityError::MessageTooLong { .. })) => {
            // Before `connect` anyone can send one: not worth a warning each.
            if user.is_some() {
                warn!(
                    user,
                    max = max_frame,
                    "frame over --max-frame; closing with 1009"
                );
            } else {
                debug!(
                    max = max_frame,
                    "frame over --max-frame before connect; closing with 1009"
                );
            }
            return Some((close::TOO_BIG, "frame too big"));
        }
        Some(WsError::Utf8(_)) => (close::INVALID_PAYLOAD, "text frame is not UTF-8"),
        Some(WsError::Protocol(
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        )) => {
            debug!(user, "the client went away without a close frame");
            return None;
        }
        Some(WsError::Protocol(_) | WsError::Capacity(_)) => {
            (close::PROTOCOL_ERROR, "WebSocket protocol violation")
        }
        _ => {
            debug!(user, error = %e, "WebSocket read failed");
            return None;
        }
    };
    debug!(user, error = %e, code = closing.0, "WebSocket protocol violation; closing");
    Some(closing)
}

async fn on_text(
    broker: &Broker,
    handle: &ConnHandle,
    session: &mut Option<Session>,
    url_token: Option<&str>,
    urls: &PublicUrls,
    text: &str,
) -> Next {
    let value: Value = match serde_json::from_str(text) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            return reply_err(
                handle,
                None,
                code::BAD_REQUEST,
                "a frame is a JSON object with an \"op\"",
            );
        }
        Err(e) => {
            return reply_err(
                handle,
                None,
                code::BAD_REQUEST,
                &format!("invalid JSON: {e}"),
            );
        }
    };
    let id = match value.get("id") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) => Some(n),
            None => {
                return reply_err(
                    handle,
                    None,
                    code::BAD_REQUEST,
                    "\"id\" must be a non-negative integer",
                );
            }
        },
    };
    let Some(op) = value.get("op").and_then(Value::as_str).map(str::to_owned) else {
        return reply_err(handle, id, code::BAD_REQUEST, "missing \"op\"");
    };
    let result = match (op.as_str(), session.as_ref()) {
        ("connect", Some(_)) => refuse(code::ALREADY_CONNECTED, "already connected"),
        ("connect", None) => {
            return match connect(broker, handle, url_token, urls, id, value).await {
                Ok(s) => {
                    *session = Some(s);
                    Next::Continue
                }
                Err(Refusal(code, message)) => {
                    handle.send(frame(&ErrorFrame::new(id, code, message)));
                    match code {
                        code::FORBIDDEN => Next::Close(close::BANNED, "banned"),
                        code::TOO_MANY_CONNECTIONS => {
                            Next::Close(close::TOO_MANY_CONNECTIONS, "too many connections")
                        }
                        code::BAD_REQUEST => Next::Close(close::AUTH_FAILED, "bad connect frame"),
                        _ => Next::Close(close::AUTH_FAILED, "authentication failed"),
                    }
                }
            };
        }
        (_, None) => refuse(
            code::NOT_CONNECTED,
            "not connected: the first frame must be {\"op\":\"connect\",\"token\":...}",
        ),
        ("send", Some(s)) => send(broker, handle, s, id, value).await,
        ("sync", Some(s)) => sync(broker, handle, s, id, value).await,
        ("recv", Some(s)) => recv(broker, s, value).await,
        ("history", Some(s)) => history(broker, handle, s, id, value).await,
        (
            op @ ("group.create" | "group.add" | "group.remove" | "group.leave" | "group.dissolve"
            | "group.rename" | "group.admin"),
            Some(s),
        ) => group_change(broker, handle, s, id, op, value).await,
        ("friend.request", Some(s)) => friend_request(broker, handle, s, id, value).await,
        (op @ ("friend.accept" | "friend.reject"), Some(s)) => {
            friend_answer(broker, handle, s, id, op, value).await
        }
        ("friend.list", Some(s)) => friend_list(broker, handle, s, id).await,
        ("friend.pending", Some(s)) => friend_pending(broker, handle, s, id).await,
        ("profile.get", Some(s)) => profile_get(broker, handle, s, id, value).await,
        ("profile.update", Some(s)) => profile_update(broker, handle, s, id, value).await,
        ("read", Some(s)) => read(broker, handle, s, id, value).await,
        ("typing", Some(s)) => typing(broker, s, value).await,
        ("presence", Some(s)) => presence(broker, handle, id, value, s).await,
        ("conversations", Some(s)) => conversations(broker, handle, s, id, value).await,
        ("conversation.mute", Some(s)) => mute(broker, handle, s, id, value).await,
        ("group.info", Some(s)) => group_info(broker, handle, s, id, value).await,
        ("group.list", Some(s)) => {
            let groups = broker.store.groups_of(&s.user_id).await.map_err(db_error);
            groups.map(|groups| {
                handle.send(frame(
                    &serde_json::json!({"id": id, "op": "group.list", "groups": groups}),
                ))
            })
        }
        ("ping", Some(_)) => {
            handle.send(frame(
                &serde_json::json!({"id": id, "op": "pong", "serverTime": now_ms()}),
            ));
            Ok(())
        }
        (other, Some(_)) => refuse(
            code::UNKNOWN_OP,
            format!("unknown op {other:?}; see docs/PROTOCOL.md"),
        ),
    };
    match result {
        Ok(()) => Next::Continue,
        Err(Refusal(code, message)) => reply_err(handle, id, code, &message),
    }
}

fn reply_err(handle: &ConnHandle, id: Option<u64>, code: i32, message: &str) -> Next {
    handle.send(frame(&ErrorFrame::new(id, code, message)));
    Next::Continue
}

fn bad_request(message: String) -> Refusal {
    Refusal(code::BAD_REQUEST, message)
}

fn db_error(e: sqlx::Error) -> Refusal {
    tracing::error!(error = %e, "database error");
    Refusal(code::SERVER_ERROR, "server error; see the imctl log".into())
}

async fn connect(
    broker: &Broker,
    handle: &ConnHandle,
    url_token: Option<&str>,
    urls: &PublicUrls,
    id: Option<u64>,
    value: Value,
) -> Result<Session, Refusal> {
    let req: ConnectReq = parse("connect", value)?;
    let token = req.token.as_deref().or(url_token).filter(|t| !t.is_empty());
    let Some(token) = token else {
        return refuse(
            code::TOKEN_INVALID,
            "no token: put the IM token in the connect frame or in ?token= on the URL",
        );
    };
    let claims = broker.im_tokens.verify(token).map_err(|e| match e {
        TokenError::Expired => Refusal(code::TOKEN_EXPIRED, e.to_string()),
        TokenError::Invalid(_) => Refusal(code::TOKEN_INVALID, e.to_string()),
    })?;
    let client_id = match req.client_id.filter(|c| !c.is_empty()) {
        Some(c) => {
            check_text("clientId", &c, MAX_CLIENT_ID).map_err(|e| Refusal(code::BAD_REQUEST, e))?;
            c
        }
        None => claims.cid,
    };
    let platform = req.platform.unwrap_or(claims.plt);
    check_platform(platform).map_err(|e| Refusal(code::BAD_REQUEST, e))?;
    let expires_in = Duration::from_millis((claims.exp * 1000 - now_ms()).max(0) as u64);
    let session = Session {
        client_id,
        platform,
        user_id: claims.sub,
        expires: Instant::now() + expires_in,
        urls: urls.clone(),
        typing: Default::default(),
    };
    // Register before checking the ban and reading the head: a ban from now
    // on finds this connection, a message committed from now on is pushed,
    // anything earlier is covered by the head.
    let changed = broker
        .hub
        .register(
            &session.user_id,
            handle.clone(),
            &session.client_id,
            session.platform,
        )
        .map_err(|too_many| {
            Refusal(
                code::TOO_MANY_CONNECTIONS,
                format!(
                    "user {:?} has {} connections already (--max-connections-per-user); close one first",
                    session.user_id, too_many.0
                ),
            )
        })?;
    let checked = async {
        match broker
            .store
            .user_status(&session.user_id)
            .await
            .map_err(db_error)?
        {
            None => refuse(
                code::TOKEN_INVALID,
                format!("user {:?} no longer exists", session.user_id),
            ),
            Some((_, true)) => refuse(
                code::FORBIDDEN,
                format!("user {:?} is banned by an administrator", session.user_id),
            ),
            Some((_, false)) => broker
                .store
                .inbox_head(&session.user_id)
                .await
                .map_err(db_error),
        }
    };
    let head = match checked.await {
        Ok(head) => head,
        Err(refusal) => {
            broker.hub.unregister(&session.user_id, handle.id);
            return Err(refusal);
        }
    };
    if changed.is_some() {
        presence::announce(broker, &session.user_id, handle.id).await;
    }
    info!(user = ?session.user_id, client = ?session.client_id, platform = session.platform, head, "connected");
    handle.send(frame(&Connected {
        id,
        op: "connected".into(),
        user_id: session.user_id.clone(),
        head,
        server_time: now_ms(),
        node: broker.options.node.clone(),
    }));
    Ok(session)
}

/// With `--friends-only`, refuses `users` who are not friends of the
/// session's user (themself and the robot excepted); `what` names the act.
async fn only_friends(
    broker: &Broker,
    s: &Session,
    users: &[String],
    what: &str,
) -> Result<(), Refusal> {
    let others = || {
        users
            .iter()
            .filter(|u| **u != s.user_id && u.as_str() != super::robot::ROBOT)
    };
    if !broker.options.friends_only || others().next().is_none() {
        return Ok(());
    }
    let friends: std::collections::HashSet<String> = broker
        .store
        .friends_of(&s.user_id)
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

async fn send(
    broker: &Broker,
    handle: &ConnHandle,
    s: &Session,
    id: Option<u64>,
    value: Value,
) -> Result<(), Refusal> {
    let req: SendReq = parse("send", value)?;
    // No size check here: the frame carrying it is within --max-frame.
    req.content
        .validate()
        .map_err(|e| Refusal(code::BAD_REQUEST, format!("bad content: {e}")))?;
    if req.conv.target.is_empty() {
        return refuse(code::BAD_REQUEST, "conv.target must not be empty");
    }
    if let Some(c) = &req.client_msg_id
        && (c.is_empty() || c.chars().count() > limits::MAX_CLIENT_MSG_ID)
    {
        return refuse(
            code::BAD_REQUEST,
            format!(
                "clientMsgId must be 1 to {} characters",
                limits::MAX_CLIENT_MSG_ID
            ),
        );
    }
    if req.conv.kind == ConvType::Single {
        only_friends(broker, s, std::slice::from_ref(&req.conv.target), "message").await?;
    }
    let msg = NewMessage {
        sender: s.user_id.clone(),
        conv: req.conv,
        content: serde_json::to_value(&req.content).expect("content serializes"),
        client_msg_id: req.client_msg_id,
        recipients: None,
    };
    to_writer(
        broker,
        WriteOp::Send {
            msg,
            id,
            reply: Replier::Conn(handle.clone()),
        },
    )
    .await
}

async fn sync(
    broker: &Broker,
    handle: &ConnHandle,
    s: &Session,
    id: Option<u64>,
    value: Value,
) -> Result<(), Refusal> {
    let req: SyncReq = parse("sync", value)?;
    if req.since < 0 {
        return refuse(code::BAD_REQUEST, "since must be ≥ 0");
    }
    let limit = req.limit.unwrap_or(DEFAULT_SYNC).clamp(1, MAX_SYNC);
    let entries = broker
        .store
        .inbox_page(&s.user_id, req.since, limit, PAGE_BYTES)
        .await
        .map_err(db_error)?;
    let head = broker
        .store
        .inbox_head(&s.user_id)
        .await
        .map_err(db_error)?;
    handle.send(synced_frame(id, &entries, head).into());
    Ok(())
}

async fn recv(broker: &Broker, s: &Session, value: Value) -> Result<(), Refusal> {
    let req: RecvReq = parse("recv", value)?;
    if req.up_to < 0 {
        return refuse(code::BAD_REQUEST, "upTo must be ≥ 0");
    }
    // Nobody has acknowledged more than their inbox holds.
    let head = broker
        .store
        .inbox_head(&s.user_id)
        .await
        .map_err(db_error)?;
    let req = RecvReq {
        up_to: req.up_to.min(head),
    };
    // Tell the senders of what this acknowledgement newly covers. The range
    // is claimed under a lock, so two devices acknowledging at once do not
    // both report it (the stored position lags: the writer stores it later).
    let stored = broker
        .store
        .user_delivered(&s.user_id)
        .await
        .map_err(db_error)?;
    let before = {
        let mut receipted = broker.receipted.lock().expect("receipts lock");
        let mark = receipted.entry(s.user_id.clone()).or_insert(stored);
        let before = (*mark).max(stored);
        *mark = before.max(req.up_to);
        before
    };
    if req.up_to > before {
        for d in broker
            .store
            .delivered_between(&s.user_id, before, req.up_to)
            .await
            .map_err(db_error)?
        {
            let receipt = serde_json::json!({"op": "receipt", "kind": "delivered", "conv": d.conv, "by": s.user_id, "upTo": msg_id(d.up_to)});
            broker.hub.deliver(&d.sender, &frame(&receipt), None);
        }
    }
    let d = Delivered {
        user_id: s.user_id.clone(),
        client_id: s.client_id.clone(),
        platform: s.platform,
        up_to: req.up_to,
    };
    to_writer(broker, WriteOp::Delivered(d)).await
}

async fn history(
    broker: &Broker,
    handle: &ConnHandle,
    s: &Session,
    id: Option<u64>,
    value: Value,
) -> Result<(), Refusal> {
    let req: HistoryReq = parse("history", value)?;
    if req.conv.kind == ConvType::Group
        && !broker
            .store
            .is_group_member(&req.conv.target, &s.user_id)
            .await
            .map_err(db_error)?
    {
        return refuse(
            code::FORBIDDEN,
            format!("you are not a member of group {:?}", req.conv.target),
        );
    }
    let before =
        match &req.before {
            None | Some(Value::Null) => Before::Latest,
            Some(Value::Number(n)) => Before::ServerTime(n.as_i64().ok_or_else(|| {
                Refusal(code::BAD_REQUEST, "before must be an integer time".into())
            })?),
            Some(Value::String(m)) => match parse_msg_id(m) {
                Some(id) => Before::MessageId(id),
                None => {
                    return refuse(
                        code::BAD_REQUEST,
                        format!("before {m:?} is neither a msgId like \"m42\" nor a serverTime"),
                    );
                }
            },
            Some(_) => {
                return refuse(
                    code::BAD_REQUEST,
                    "before must be a msgId string or a serverTime number",
                );
            }
        };
    let limit = req.limit.unwrap_or(DEFAULT_HISTORY).clamp(1, MAX_HISTORY);
    let messages = broker
        .store
        .history_page(&s.user_id, &req.conv, before, limit, PAGE_BYTES)
        .await
        .map_err(db_error)?;
    handle.send(history_frame(id, &messages).into());
    Ok(())
}

async fn group_change(
    broker: &Broker,
    handle: &ConnHandle,
    s: &Session,
    id: Option<u64>,
    op: &str,
    value: Value,
) -> Result<(), Refusal> {
    let (op, change): (&'static str, GroupChange) = match op {
        "group.create" => {
            let r: GroupCreateReq = parse(op, value)?;
            only_friends(broker, s, &r.members, "put in a group").await?;
            (
                "group.create",
                GroupChange::Create {
                    name: r.name,
                    members: r.members,
                },
            )
        }
        "group.add" => {
            let r: GroupMembersReq = parse(op, value)?;
            only_friends(broker, s, &r.members, "put in a group").await?;
            (
                "group.add",
                GroupChange::Add {
                    group: r.group,
                    members: r.members,
                },
            )
        }
        "group.remove" => {
            let r: GroupMembersReq = parse(op, value)?;
            (
                "group.remove",
                GroupChange::Remove {
                    group: r.group,
                    members: r.members,
                },
            )
        }
        "group.leave" => (
            "group.leave",
            GroupChange::Leave {
                group: parse::<GroupReq>(op, value)?.group,
            },
        ),
        "group.dissolve" => (
            "group.dissolve",
            GroupChange::Dissolve {
                group: parse::<GroupReq>(op, value)?.group,
            },
        ),
        "group.admin" => {
            let r: GroupAdminReq = parse(op, value)?;
            (
                "group.admin",
                GroupChange::SetAdmin {
                    group: r.group,
                    user: r.user_id,
                    admin: r.admin,
                },
            )
        }
        _ => {
            let r: GroupRenameReq = parse(op, value)?;
            (
                "group.rename",
                GroupChange::Rename {
                    group: r.group,
                    name: r.name,
                },
            )
        }
    };
    to_writer(
        broker,
        WriteOp::Group {
            actor: s.user_id.clone(),
            change,
            op,
            id,
            reply: Replier::Conn(handle.clone()),
        },
    )
    .await
}

async fn group_info(
    broker: &Broker,
    handle: &ConnHandle,
    s: &Session,
    id: Option<u64>,
    value: Value,
) -> Result<(), Refusal> {
    let req: GroupReq = parse("group.info", value)?;
    let Some(group) = broker
        .store
        .group_info(&req.group)
        .await
        .map_err(db_error)?
    else {
        return refuse(code::NOT_FOUND, format!("no group {:?}", req.group));
    };
    if !group.members.iter().any(|m| m.user_id == s.user_id) {
        return refuse(
            code::FORBIDDEN,
            format!("you are not a member of group {:?}", req.group),
        );
    }
    handle.send(frame(
        &serde_json::json!({"id": id, "op": "group.info", "group": group}),
    ));
    Ok(())
}

fn reply(handle: &ConnHandle, id: Option<u64>, op: &str, mut body: Value) {
    body["id"] = serde_json::json!(id);
    body["op"] = serde_json::json!(op);
    handle.send(frame(&body));
}

async fn friend_request(
    broker: &Broker,
    handle: &ConnHandle,
    s: &Session,
    id: Option<u64>,
    value: Value,
) -> Result<(), Refusal> {
    let req: FriendRequestReq = parse("friend.request", value)?;
    let remark = req.remark.unwrap_or_default();
    limits::check_optional_text("remark", &remark, limits::MAX_REMARK).map_err(bad_request)?;
    let outcome = broker
        .store
        .friend_request(&s.user_id, &req.target, &remark)
        .await
        .map_err(db_error)?;
    match outcome.map_err(|(c, m)| Refusal(c, m))? {
        Requested::Pending(request) => {
            let push = serde_json::json!({"op": "notify", "kind": "friend_request", "from": s.user_id, "remark": remark, "request": request});
            broker.hub.deliver(&req.target, &frame(&push), None);
            reply(
                handle,
                id,
                "friend.request",
                serde_json::json!({"request": request, "friends": false}),
            );
        }
        Requested::Befriended => {
            // They had asked first: the request counts as acceptance.
            let push =
                serde_json::json!({"op": "notify", "kind": "friend_accepted", "from": s.user_id});
            broker.hub.deliver(&req.target, &frame(&push), None);
            reply(
                handle,
                id,
                "friend.request",
                serde_json::json!({"friends": true}),
            );
        }
    }
    Ok(())
}

async fn friend_answer(
    broker: &Broker,
    handle: &ConnHandle,
    s: &Session,
    id: Option<u64>,
    op: &str,
    value: Value,
) -> Result<(), Refusal> {
    let req: FriendAnswerReq = parse(op, value)?;
    let accept = op == "friend.accept";
    broker
        .store
        .friend_answer(&s.user_id, &req.from, accept)
        .await
        .map_err(db_error)?
        .map_err(|(c, m)| Refusal(c, m))?;
    let kind = if accept {
        "friend_accepted"
    } else {
        "friend_rejected"
    };
    broker.hub.deliver(
        &req.from,
        &frame(&serde_json::json!({"op": "notify", "kind": kind, "from": s.user_id})),
        None,
    );
    let op = if accept {
        "friend.accept"
    } else {
        "friend.reject"
    };
    reply(handle, id, op, serde_json::json!({"from": req.from}));
    Ok(())
}

async fn friend_list(
    broker: &Broker,
    handle: &ConnHandle,
    s: &Session,
    id: Option<u64>,
) -> Result<(), Refusal> {
    let friends = broker
        .store
        .friends_of(&s.user_id)
        .await
        .map_err(db_error)?;
    let list: Vec<Value> = friends
        .iter()
        .map(|u| {
            let mut p = broker.profile(u, &s.user_id, &s.urls);
            p["online"] = serde_json::json!(broker.hub.is_online(&u.id));
            p
        })
        .collect();
    reply(
        handle,
        id,
        "friend.list",
        serde_json::json!({"friends": list}),
    );
    Ok(())
}

async fn friend_pending(
    broker: &Broker,
    handle: &ConnHandle,
    s: &Session,
    id: Option<u64>,
) -> Result<(), Refusal> {
    let (incoming, outgoing) = broker
        .store
        .pending_requests(&s.user_id)
        .await
        .map_err(db_error)?;
    reply(
        handle,
        id,
        "friend.pending",
        serde_json::json!({"incoming": incoming, "outgoing": outgoing}),
    );
    Ok(())
}

async fn profile_get(
    broker: &Broker,
    handle: &ConnHandle,
    s: &Session,
    id: Option<u64>,
    value: Value,
) -> Result<(), Refusal> {
    let req: ProfileGetReq = parse("profile.get", value)?;
    let ids: Vec<String> = match (req.users, req.user_id) {
        (Some(users), _) => users,
        (None, Some(one)) => vec![one],
        (None, None) => vec![s.user_id.clone()],
    };
    if ids.len() > 500 {
        return refuse(code::BAD_REQUEST, "ask for at most 500 users at once");
    }
    let users = broker.store.users_by_ids(&ids).await.map_err(db_error)?;
    let unknown: Vec<&String> = ids
        .iter()
        .filter(|id| !users.iter().any(|u| &&u.id == id))
        .collect();
    let profiles: Vec<Value> = users
        .iter()
        .map(|u| broker.profile(u, &s.user_id, &s.urls))
        .collect();
    reply(
        handle,
        id,
        "profile.get",
        serde_json::json!({"users": profiles, "unknown": unknown}),
    );
    Ok(())
}

async fn profile_update(
    broker: &Broker,
    handle: &ConnHandle,
    s: &Session,
    id: Option<u64>,
    value: Value,
) -> Result<(), Refusal> {
    let req: ProfileUpdateReq = parse("profile.update", value)?;
    let name = req.display_name.as_deref().map(str::trim);
    if let Some(n) = name {
        limits::check_text("displayName", n, limits::MAX_DISPLAY_NAME).map_err(bad_request)?;
    }
    if let Some(p) = &req.portrait {
        limits::check_url("portrait", p).map_err(bad_request)?;
    }
    if name.is_none() && req.portrait.is_none() {
        return refuse(
            code::BAD_REQUEST,
            "nothing to update: give displayName and/or portrait",
        );
    }
    let Some(user) = broker
        .store
        .update_profile(&s.user_id, name, req.portrait.as_deref())
        .await
        .map_err(db_error)?
    else {
        return refuse(code::NOT_FOUND, "your user no longer exists");
    };
    // One frame for every friend's connections, whatever host each reached us by.
    let shared = broker.options.advertise.default_urls();
    let push =
        frame(&serde_json::json!({"op": "profile", "user": broker.profile(&user, "", &shared)}));
    for friend in broker
        .store
        .friends_of(&s.user_id)
        .await
        .map_err(db_error)?
    {
        broker.hub.deliver(&friend.id, &push, None);
    }
    broker.hub.deliver(&s.user_id, &push, Some(handle.id));
    reply(
        handle,
        id,
        "profile.update",
        serde_json::json!({"user": broker.profile(&user, &s.user_id, &s.urls)}),
    );
    Ok(())
}

/// The other participants of a conversation `me` is in, or a refusal.
async fn participants(
    broker: &Broker,
    me: &str,
    conv: &Conversation,
) -> Result<Vec<String>, Refusal> {
    match conv.kind {
        ConvType::Single => Ok(if conv.target == me {
            vec![]
        } else {
            vec![conv.target.clone()]
        }),
        ConvType::Group => {
            let members = broker
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

/// `conv` as `viewer` sees a conversation that `me` addressed as `conv`.
fn conv_for(conv: &Conversation, me: &str) -> Conversation {
    match conv.kind {
        ConvType::Single => Conversation {
            kind: ConvType::Single,
            target: me.to_owned(),
        },
        ConvType::Group => conv.clone(),
    }
}

async fn read(
    broker: &Broker,
    handle: &ConnHandle,
    s: &Session,
    id: Option<u64>,
    value: Value,
) -> Result<(), Refusal> {
    let req: ReadReq = parse("read", value)?;
    let Some(up_to) = parse_msg_id(&req.up_to) else {
        return refuse(
            code::BAD_REQUEST,
            format!("upTo {:?} is not a msgId like \"m42\"", req.up_to),
        );
    };
    let others = participants(broker, &s.user_id, &req.conv).await?;
    if !broker
        .store
        .message_in_conv(&s.user_id, &req.conv, up_to)
        .await
        .map_err(db_error)?
    {
        return refuse(
            code::NOT_FOUND,
            format!("no message {} in this conversation", req.up_to),
        );
    }
    let now = broker
        .store
        .mark_read(&s.user_id, &req.conv, up_to)
        .await
        .map_err(db_error)?;
    let theirs = frame(
        &serde_json::json!({"op": "receipt", "kind": "read", "conv": conv_for(&req.conv, &s.user_id), "by": s.user_id, "upTo": msg_id(now)}),
    );
    for other in &others {
        broker.hub.deliver(other, &theirs, None);
    }
    // My other devices clear their unread counts too.
    let mine = serde_json::json!({"op": "receipt", "kind": "read", "conv": req.conv, "by": s.user_id, "upTo": msg_id(now)});
    broker
        .hub
        .deliver(&s.user_id, &frame(&mine), Some(handle.id));
    if id.is_some() {
        reply(
            handle,
            id,
            "read",
            serde_json::json!({"conv": req.conv, "upTo": msg_id(now)}),
        );
    }
    Ok(())
}

async fn typing(broker: &Broker, s: &Session, value: Value) -> Result<(), Refusal> {
    let req: ConvReq = parse("typing", value)?;
    let key = (req.conv.kind, req.conv.target.clone());
    let limited = || {
        let mut last = s.typing.lock().unwrap();
        last.retain(|_, t| t.elapsed() < TYPING_INTERVAL);
        last.contains_key(&key) || last.len() >= TYPING_CONVERSATIONS
    };
    // Rate-limited typing is dropped (never stored), before any database work.
    if limited() {
        return Ok(());
    }
    let others = participants(broker, &s.user_id, &req.conv).await?;
    if req.conv.kind == ConvType::Single {
        only_friends(broker, s, &others, "show typing to").await?;
    }
    {
        let mut last = s.typing.lock().unwrap();
        if last.len() >= TYPING_CONVERSATIONS {
            return Ok(());
        }
        last.insert(key, Instant::now());
    }
    let push = frame(
        &serde_json::json!({"op": "typing", "conv": conv_for(&req.conv, &s.user_id), "from": s.user_id}),
    );
    for other in others {
        broker.hub.deliver(&other, &push, None);
    }
    Ok(())
}

async fn presence(
    broker: &Broker,
    handle: &ConnHandle,
    id: Option<u64>,
    value: Value,
    s: &Session,
) -> Result<(), Refusal> {
    let req: PresenceReq = parse("presence", value)?;
    let users = match req.users {
        Some(u) if u.len() > 1000 => {
            return refuse(code::BAD_REQUEST, "ask for at most 1000 users at once");
        }
        Some(u) => u,
        None => broker
            .store
            .friends_of(&s.user_id)
            .await
            .map_err(db_error)?
            .into_iter()
            .map(|u| u.id)
            .collect(),
    };
    // Only people you share something with: yourself, friends, group co-members.
    let contacts = broker
        .store
        .contacts_of(&s.user_id)
        .await
        .map_err(db_error)?;
    let (visible, hidden): (Vec<String>, Vec<String>) = users
        .into_iter()
        .partition(|u| *u == s.user_id || contacts.contains(u));
    let list: Vec<Value> = visible
        .iter()
        .map(|u| {
            let platforms = broker.hub.platforms_of(u);
            serde_json::json!({"userId": u, "online": !platforms.is_empty(), "platforms": platforms})
        })
        .collect();
    reply(
        handle,
        id,
        "presence",
        serde_json::json!({"users": list, "hidden": hidden}),
    );
    Ok(())
}

async fn conversations(
    broker: &Broker,
    handle: &ConnHandle,
    s: &Session,
    id: Option<u64>,
    value: Value,
) -> Result<(), Refusal> {
    let req: ConversationsReq = parse("conversations", value)?;
    let limit = req.limit.unwrap_or(100).clamp(1, 1000);
    let before = match req.before.as_deref() {
        None => None,
        Some(m) => Some(parse_msg_id(m).ok_or_else(|| {
            Refusal(
                code::BAD_REQUEST,
                format!("before {m:?} is not a msgId like \"m42\""),
            )
        })?),
    };
    let list = broker
        .store
        .conversations_page(&s.user_id, limit, before, PAGE_BYTES)
        .await
        .map_err(db_error)?;
    handle.send(conversations_frame(id, &list).into());
    Ok(())
}

async fn mute(
    broker: &Broker,
    handle: &ConnHandle,
    s: &Session,
    id: Option<u64>,
    value: Value,
) -> Result<(), Refusal> {
    let req: MuteReq = parse("conversation.mute", value)?;
    participants(broker, &s.user_id, &req.conv).await?;
    broker
        .store
        .set_muted(&s.user_id, &req.conv, req.muted)
        .await
        .map_err(db_error)?;
    reply(
        handle,
        id,
        "conversation.mute",
        serde_json::json!({"conv": req.conv, "muted": req.muted}),
    );
    Ok(())
}

/// Hands an operation to the writer; fails only while shutting down.
async fn to_writer(broker: &Broker, op: WriteOp) -> Result<(), Refusal> {
    broker.writer.send(op).await.map_err(|_| {
        Refusal(
            code::SERVER_ERROR,
            "the server is shutting down; nothing was stored".into(),
        )
    })
}
