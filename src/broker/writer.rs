//! The single writer: batches sends and delivery acks into one transaction
//! (group commit), acks each send after the commit, then fans messages out.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::hub::{ConnHandle, Hub};
use crate::store::{Appended, Delivered, Heads, NewMessage, Store};
use crate::wire::ws::{Ack, ErrorFrame, code, msg_push};

/// The most operations committed in one transaction.
const MAX_BATCH: usize = 1024;

pub enum WriteOp {
    Send {
        msg: NewMessage,
        id: Option<u64>,
        reply: ConnHandle,
    },
    Delivered(Delivered),
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
) -> JoinHandle<()> {
    tokio::spawn(async move {
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

async fn commit(store: &Store, hub: &Hub, heads: &mut Heads, ops: Vec<WriteOp>) {
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
        }
    }
    let results = match store.append(&sends, &delivered, heads).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, batch = sends.len(), "commit failed; nothing in the batch was stored");
            heads.clear();
            for (id, reply) in replies {
                reply.send(frame(&ErrorFrame::new(
                    id,
                    code::SERVER_ERROR,
                    "the server could not store the message; retry",
                )));
            }
            return;
        }
    };
    for (((id, reply), result), sent) in replies.into_iter().zip(results).zip(&sends) {
        match result {
            Appended::Stored { message, seqs } => {
                let sender_seq = seqs
                    .iter()
                    .find(|(u, _)| *u == sent.sender)
                    .map_or(0, |(_, s)| *s);
                reply.send(frame(&Ack {
                    id,
                    op: "ack".into(),
                    code: 0,
                    msg_id: message.msg_id.clone(),
                    server_time: message.server_time,
                    seq: sender_seq,
                    duplicate: false,
                }));
                let json = serde_json::to_string(&message).expect("messages serialize");
                for (user, seq) in seqs {
                    let except = (user == sent.sender).then_some(reply.id);
                    hub.deliver(&user, &msg_push(seq, &json).into(), except);
                }
            }
            Appended::Duplicate {
                message,
                sender_seq,
            } => reply.send(frame(&Ack {
                id,
                op: "ack".into(),
                code: 0,
                msg_id: message.msg_id,
                server_time: message.server_time,
                seq: sender_seq,
                duplicate: true,
            })),
            Appended::Rejected { code, reason } => {
                reply.send(frame(&ErrorFrame::new(id, code, reason)))
            }
        }
    }
}
