//! The single writer: batches sends and delivery acks into one transaction
//! (group commit), acks each send after the commit, then fans messages out.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::hub::{ConnHandle, Hub, Out, Pushes};
use super::ops::Refusal;
use crate::store::{
    Appended, Delivered, GroupChange, GroupInfo, Heads, NewMessage, Refused, Store,
};
use crate::wire::ws::{Ack, ChatMessage, ErrorFrame, Reply, code};

/// The most operations committed in one transaction.
const MAX_BATCH: usize = 1024;

pub enum WriteOp {
    Send {
        msg: NewMessage,
        id: Option<u64>,
        reply: Replier,
    },
    Delivered(Delivered),
    /// A membership change; answered with the group afterwards, in the
    /// reply of the change's op.
    Group {
        actor: String,
        change: GroupChange,
        id: Option<u64>,
        reply: Replier,
    },
}

/// Where the writer's answer to an operation goes.
pub enum Replier {
    /// A WebSocket connection's queue: the answer is a frame.
    Conn(ConnHandle),
    /// An HTTP handler (the admin API, announcements) waiting for the one
    /// typed answer.
    Once(std::sync::Mutex<Option<oneshot::Sender<Written>>>),
}

/// What the writer did with an operation handed to it over HTTP.
#[derive(Debug)]
pub enum Written {
    /// Stored, or found stored already (a retried send).
    Message(ChatMessage),
    /// The group after the change.
    Group(GroupInfo),
    /// Refused by the store; nothing was written.
    Refused(Refused),
    /// The database failed; nothing was written.
    Failed(&'static str),
}

impl Replier {
    pub fn once() -> (Self, oneshot::Receiver<Written>) {
        let (tx, rx) = oneshot::channel();
        (Replier::Once(std::sync::Mutex::new(Some(tx))), rx)
    }

    fn answer_once(tx: &std::sync::Mutex<Option<oneshot::Sender<Written>>>, written: Written) {
        if let Some(tx) = tx.lock().unwrap().take() {
            let _ = tx.send(written);
        }
    }

    /// The connection to leave out of the fan-out (it gets the ack).
    pub fn conn_id(&self) -> Option<u64> {
        match self {
            Replier::Conn(conn) => Some(conn.id),
            Replier::Once(_) => None,
        }
    }

    /// Answers the operation `id`: the database failed, nothing was written.
    fn fail(&self, id: Option<u64>, message: &'static str) {
        match self {
            Replier::Conn(conn) => {
                conn.send(frame(&ErrorFrame::new(id, code::SERVER_ERROR, message)))
            }
            Replier::Once(tx) => Self::answer_once(tx, Written::Failed(message)),
        }
    }

    /// Answers the operation `id` with the store's refusal.
    fn refuse(&self, id: Option<u64>, refused: Refused) {
        match self {
            Replier::Conn(conn) => Refusal::from(refused).send(conn, id),
            Replier::Once(tx) => Self::answer_once(tx, Written::Refused(refused)),
        }
    }

    /// Refuses a send in line with a batch's pushes to `user`, the connection's user.
    fn refuse_among(&self, pushes: &mut Pushes, user: &str, id: Option<u64>, refused: Refused) {
        match self {
            Replier::Conn(conn) => {
                let Refusal(code, message) = refused.into();
                pushes.add(
                    user.to_owned(),
                    Out::Reply {
                        frame: frame(&ErrorFrame::new(id, code, message)),
                        conn: conn.clone(),
                    },
                )
            }
            Replier::Once(tx) => Self::answer_once(tx, Written::Refused(refused)),
        }
    }

    /// Acks a send in line with a batch's pushes to its sender.
    fn ack_among(
        &self,
        pushes: &mut Pushes,
        user: &str,
        id: Option<u64>,
        message: &ChatMessage,
        seq: i64,
        duplicate: bool,
    ) {
        match self {
            Replier::Conn(conn) => pushes.add(
                user.to_owned(),
                Out::Reply {
                    frame: frame(&Ack {
                        id,
                        op: "ack".into(),
                        code: 0,
                        msg_id: message.msg_id.clone(),
                        server_time: message.server_time,
                        seq,
                        duplicate,
                    }),
                    conn: conn.clone(),
                },
            ),
            Replier::Once(tx) => Self::answer_once(tx, Written::Message(message.clone())),
        }
    }

    /// Answers a stored send with an error instead of its ack (an injected
    /// `ws.fail-ack`); an HTTP caller still gets the message.
    fn fail_among(
        &self,
        pushes: &mut Pushes,
        user: &str,
        id: Option<u64>,
        message: &ChatMessage,
        failed: String,
    ) {
        match self {
            Replier::Conn(conn) => pushes.add(
                user.to_owned(),
                Out::Reply {
                    frame: frame(&ErrorFrame::new(id, code::SERVER_ERROR, failed)),
                    conn: conn.clone(),
                },
            ),
            Replier::Once(tx) => Self::answer_once(tx, Written::Message(message.clone())),
        }
    }

    /// Answers a group change with the group afterwards.
    fn group(&self, id: Option<u64>, change: &GroupChange, group: GroupInfo) {
        match self {
            Replier::Conn(conn) => conn.send(group_reply(change, group).frame(id).into()),
            Replier::Once(tx) => Self::answer_once(tx, Written::Group(group)),
        }
    }
}

/// The reply to `change`: the op it was asked by, with the group afterwards.
fn group_reply(change: &GroupChange, group: GroupInfo) -> Reply {
    match change {
        GroupChange::Create { .. } => Reply::GroupCreate { group },
        GroupChange::Add { .. } => Reply::GroupAdd { group },
        GroupChange::Remove { .. } => Reply::GroupRemove { group },
        GroupChange::Leave { .. } => Reply::GroupLeave { group },
        GroupChange::Dissolve { .. } => Reply::GroupDissolve { group },
        GroupChange::Rename { .. } => Reply::GroupRename { group },
        GroupChange::SetAdmin { .. } => Reply::GroupAdmin { group },
    }
}

pub fn frame<T: serde::Serialize>(value: &T) -> Utf8Bytes {
    serde_json::to_string(value)
        .expect("wire types serialize")
        .into()
}

/// Runs until `stop` is cancelled (or every sender is gone), then commits
/// what is still queued and ends.
pub fn spawn(
    store: Store,
    hub: Arc<Hub>,
    mut rx: mpsc::Receiver<WriteOp>,
    stop: CancellationToken,
    done: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        // Tells the connections when the last acks are out, however this ends.
        let _done = done.drop_guard();
        let mut heads = Heads::default();
        let mut ops = Vec::with_capacity(MAX_BATCH);
        loop {
            // Whatever queued up while the last commit ran forms the next batch.
            let n = tokio::select! {
                n = rx.recv_many(&mut ops, MAX_BATCH) => n,
                _ = stop.cancelled() => {
                    rx.close();
                    while rx.recv_many(&mut ops, MAX_BATCH).await > 0 {
                        commit(&store, &hub, &mut heads, std::mem::take(&mut ops)).await;
                    }
                    return;
                }
            };
            if n == 0 {
                return;
            }
            commit(&store, &hub, &mut heads, std::mem::take(&mut ops)).await;
        }
    })
}

/// Commits `ops` in order: sends and delivery acks batched together, each
/// group change in a transaction of its own between them.
/// An injected `ws.fail-ack` after the commit, for a WebSocket send.
fn fail_ack(hub: &Hub, reply: &Replier, sender: &str) -> Option<String> {
    let Replier::Conn(_) = reply else {
        return None;
    };
    crate::broker::faults::fail_ack(&hub.faults, sender, crate::wire::fault::AckWhen::After)
}

async fn commit(store: &Store, hub: &Hub, heads: &mut Heads, ops: Vec<WriteOp>) {
    let mut pending = Vec::with_capacity(ops.len());
    for op in ops {
        match op {
            WriteOp::Group {
                actor,
                change,
                id,
                reply,
            } => {
                commit_batch(store, hub, heads, std::mem::take(&mut pending)).await;
                change_group(store, hub, heads, &actor, &change, id, &reply).await;
            }
            other => pending.push(other),
        }
    }
    commit_batch(store, hub, heads, pending).await;
}

async fn change_group(
    store: &Store,
    hub: &Hub,
    heads: &mut Heads,
    actor: &str,
    change: &GroupChange,
    id: Option<u64>,
    reply: &Replier,
) {
    let mut unavailable = Unavailable::for_group_change();
    let changed = loop {
        match store.change_group(actor, change, heads).await {
            Err(e) if unavailable.wait(&e).await => continue,
            other => break other,
        }
    };
    match changed {
        Err(e) => {
            tracing::error!(error = %e, "group change failed");
            heads.clear();
            reply.fail(id, "the server could not change the group; retry");
        }
        Ok(Err(refused)) => reply.refuse(id, refused),
        Ok(Ok(outcome)) => {
            reply.group(id, change, outcome.group);
            if let Appended::Stored { message, seqs } = outcome.notification {
                hub.telemetry.metrics.messages_stored.inc();
                tracing::info!(group = %message.conv.target, actor, kind = %message.content["kind"], "group changed");
                let mut pushes = Pushes::default();
                fan_out(&mut pushes, &message, seqs, None);
                hub.deliver_batch(pushes);
            }
        }
    }
}

/// How long the writer keeps retrying a batch while the database is
/// unreachable before it fails the batch's sends (clients then resend).
pub const RETRY_FOR: Duration = Duration::from_secs(30);

/// When a failed commit is run again, each time as a whole new transaction
/// (on a fresh connection; nothing half-done stays), within [`RETRY_FOR`]:
/// - after a conflict with another imctl process on the same PostgreSQL
///   database (a deadlock, or that process storing the same retried send
///   first, which the next attempt answers as a duplicate), at once;
/// - while the database is unavailable (a PostgreSQL restart), after a
///   growing pause, the batch's sends unacked meanwhile. Only sends are
///   retried this way: a `COMMIT` whose answer was lost may have happened,
///   and only a send carries a key (`clientMsgId`) that makes running it
///   twice harmless; a group change fails and its client decides.
struct Unavailable {
    deadline: tokio::time::Instant,
    pause: Duration,
    wait_for_database: bool,
}

impl Unavailable {
    fn for_sends() -> Self {
        Self {
            deadline: tokio::time::Instant::now() + RETRY_FOR,
            pause: Duration::from_millis(50),
            wait_for_database: true,
        }
    }

    fn for_group_change() -> Self {
        Self {
            wait_for_database: false,
            ..Self::for_sends()
        }
    }

    /// Whether to try `e`'s commit again (see the type).
    async fn wait(&mut self, e: &crate::store::Error) -> bool {
        if tokio::time::Instant::now() + self.pause >= self.deadline {
            return false;
        }
        if e.is_conflict() {
            tracing::info!(error = %e, "another writer got in the way; committing again");
            tokio::time::sleep(Duration::from_millis(10)).await;
            return true;
        }
        if !(self.wait_for_database && e.is_unavailable()) {
            return false;
        }
        tracing::warn!(error = %e, retry_in = ?self.pause, "the database is unavailable; retrying the batch");
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(Duration::from_secs(1));
        true
    }
}

/// Adds a stored message's pushes for every recipient, leaving out the
/// sending connection (it has the ack).
fn fan_out(
    pushes: &mut Pushes,
    message: &ChatMessage,
    seqs: Vec<(String, i64)>,
    except: Option<(&str, u64)>,
) {
    let json: Arc<str> = serde_json::to_string(message)
        .expect("messages serialize")
        .into();
    for (user, seq) in seqs {
        let except = except.filter(|(u, _)| *u == user).map(|(_, conn)| conn);
        pushes.add(
            user,
            Out::Msg {
                seq,
                message: json.clone(),
                except,
            },
        );
    }
}

async fn commit_batch(store: &Store, hub: &Hub, heads: &mut Heads, ops: Vec<WriteOp>) {
    if ops.is_empty() {
        return;
    }
    let mut sends = Vec::with_capacity(ops.len());
    let mut replies = Vec::with_capacity(ops.len());
    let mut delivered = Vec::new();
    for op in ops {
        match op {
            WriteOp::Send { msg, id, reply } => {
                sends.push(msg);
                replies.push((id, reply));
            }
            WriteOp::Delivered(d) => delivered.push(d),
            WriteOp::Group { .. } => unreachable!("group changes are committed on their own"),
        }
    }
    let started = std::time::Instant::now();
    let mut unavailable = Unavailable::for_sends();
    let appended = loop {
        match store.append(&sends, &delivered, heads).await {
            Err(e) if unavailable.wait(&e).await => continue,
            other => break other,
        }
    };
    let results = match appended {
        Ok(r) => {
            let m = &hub.telemetry.metrics;
            m.commit_seconds.observe(started.elapsed().as_secs_f64());
            if !sends.is_empty() {
                m.commit_batch.observe(sends.len() as f64);
            }
            let stored = r
                .iter()
                .filter(|a| matches!(a, Appended::Stored { .. }))
                .count();
            m.messages_stored.inc_by(stored as u64);
            if stored > 0 {
                hub.telemetry.activity.bump();
            }
            r
        }
        Err(e) => {
            tracing::error!(error = %e, batch = sends.len(), "commit failed; nothing in the batch was stored");
            heads.clear();
            for (id, reply) in replies {
                reply.fail(id, "the server could not store the message; retry");
            }
            return;
        }
    };
    let mut pushes = Pushes::default();
    for (((id, reply), result), sent) in replies.into_iter().zip(results).zip(&sends) {
        match result {
            Appended::Stored { message, seqs } => {
                let sender_seq = seqs
                    .iter()
                    .find(|(u, _)| *u == sent.sender)
                    .map_or(0, |(_, s)| *s);
                match fail_ack(hub, &reply, &sent.sender) {
                    Some(why) => reply.fail_among(&mut pushes, &sent.sender, id, &message, why),
                    None => {
                        reply.ack_among(&mut pushes, &sent.sender, id, &message, sender_seq, false)
                    }
                }
                fan_out(
                    &mut pushes,
                    &message,
                    seqs,
                    reply.conn_id().map(|c| (sent.sender.as_str(), c)),
                );
            }
            Appended::Duplicate {
                message,
                sender_seq,
            } => match fail_ack(hub, &reply, &sent.sender) {
                Some(why) => reply.fail_among(&mut pushes, &sent.sender, id, &message, why),
                None => reply.ack_among(&mut pushes, &sent.sender, id, &message, sender_seq, true),
            },
            Appended::Rejected(refused) => {
                reply.refuse_among(&mut pushes, &sent.sender, id, refused)
            }
        }
    }
    hub.deliver_batch(pushes);
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::store::Fixtures;
    use crate::wire::ws::{ConvType, Conversation};

    fn say(from: &str, to: &str) -> NewMessage {
        NewMessage {
            sender: from.into(),
            conv: Conversation {
                kind: ConvType::Single,
                target: to.into(),
            },
            content: json!({"type": "text", "text": "hi"}),
            client_msg_id: None,
            recipients: None,
        }
    }

    /// `(op, seq)` of every frame queued for a connection.
    fn frames(rx: &mut crate::broker::hub::Queue) -> Vec<(String, i64)> {
        std::iter::from_fn(|| rx.try_recv())
            .map(|f| {
                let v: Value = serde_json::from_str(f.as_str()).unwrap();
                (
                    v["op"].as_str().unwrap().to_owned(),
                    v["seq"].as_i64().unwrap(),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn a_batch_reaches_every_connection_in_seq_order_acks_included() {
        let store = crate::store::testing::empty_store().await;
        store.seed_once(&Fixtures::builtin()).await.unwrap();
        let hub = Arc::new(Hub::default());
        let (a1, mut ra1) = hub.handle();
        let (a2, mut ra2) = hub.handle();
        let (b1, mut rb1) = hub.handle();
        for (user, conn, platform) in [("alice", &a1, 1), ("alice", &a2, 5), ("bob", &b1, 1)] {
            hub.register(user, conn.clone(), "phone", platform).unwrap();
        }
        // Queued before the writer starts, so they form one batch.
        let (tx, rx) = mpsc::channel(8);
        for (msg, id, conn) in [(say("bob", "alice"), 1, &b1), (say("alice", "bob"), 7, &a1)] {
            let reply = Replier::Conn(conn.clone());
            let op = WriteOp::Send {
                msg,
                id: Some(id),
                reply,
            };
            assert!(tx.send(op).await.is_ok());
        }
        let stop = CancellationToken::new();
        stop.cancel();
        spawn(store, hub, rx, stop, CancellationToken::new())
            .await
            .unwrap();
        let (ack, msg) = ("ack".to_string(), "msg".to_string());
        // Alice's sending phone: bob's message (her seq 1) before the ack of hers (seq 2).
        assert_eq!(frames(&mut ra1), [(msg.clone(), 1), (ack.clone(), 2)]);
        // Her web client: both messages, in order.
        assert_eq!(frames(&mut ra2), [(msg.clone(), 1), (msg.clone(), 2)]);
        // Bob: the ack of his (seq 1), then alice's message (seq 2).
        assert_eq!(frames(&mut rb1), [(ack, 1), (msg, 2)]);
    }
}
