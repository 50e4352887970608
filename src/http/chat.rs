//! The chat broker as the app-server sees it: a narrow interface the broker
//! implements and `server` hands over, so the app-server never names the
//! broker's hub or writer (nor the broker at all).

use futures_util::future::BoxFuture;

use crate::store::{GroupChange, GroupInfo, NewMessage, Refused};
use crate::wire::http::ConnInfo;
use crate::wire::ws::ChatMessage;

/// Why the broker's writer did not do an operation.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the broker's writer has stopped (shutting down)")]
    ShuttingDown,
    /// The database failed; nothing was written.
    #[error("{0}")]
    Failed(&'static str),
    #[error(transparent)]
    Refused(Refused),
}

pub trait Chat: Send + Sync {
    /// Open WebSocket connections (on every node of a cluster, as of their
    /// last heartbeat).
    fn connections(&self) -> usize;

    /// Every open connection (on every node), for `/admin/connections`.
    fn list(&self) -> BoxFuture<'_, Vec<ConnInfo>>;

    /// Whether `user` has a connection open.
    fn is_online(&self, user: &str) -> bool;

    /// The platform of every open connection.
    fn platforms(&self) -> Vec<i32>;

    /// Closes every connection of `user` (on every node) with close `code`;
    /// returns how many.
    fn close_user<'a>(
        &'a self,
        user: &'a str,
        code: u16,
        reason: &'static str,
    ) -> BoxFuture<'a, usize>;

    /// Applies fault rule `rule`, just added, if it acts on live
    /// connections (`ws.close`, `ws.reset`, `ws.freeze`), to those open now.
    fn apply_fault(&self, rule: u64);

    /// Queues a frame (a JSON text) on every connection of `user`.
    fn push(&self, user: &str, frame: String);

    /// The largest frame a client may send (`--max-frame`).
    fn max_frame(&self) -> usize;

    /// Stores `msg` through the single writer and delivers it; answers the
    /// stored message (or the one already stored under its clientMsgId).
    fn send(&self, msg: NewMessage) -> BoxFuture<'_, Result<ChatMessage, WriteError>>;

    /// Applies a group change as `actor` through the single writer; answers
    /// the group afterwards.
    fn change_group<'a>(
        &'a self,
        actor: &'a str,
        change: GroupChange,
    ) -> BoxFuture<'a, Result<GroupInfo, WriteError>>;
}
