//! The broker behind [`Chat`], the app-server's view of it: the hub and the
//! writer stay private to the broker.

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::Broker;
use super::writer::{Replier, WriteOp, Written};
use crate::http::chat::{Chat, WriteError};
use crate::store::{GroupChange, GroupInfo, NewMessage};
use crate::wire::http::ConnInfo;
use crate::wire::ws::{ChatMessage, close};

impl Chat for Broker {
    fn connections(&self) -> usize {
        match &self.options.cluster {
            Some(cluster) => cluster.live_nodes().iter().map(|n| n.connections).sum(),
            None => self.hub.connections(),
        }
    }

    fn list(&self) -> BoxFuture<'_, Vec<ConnInfo>> {
        async move {
            match &self.options.cluster {
                Some(cluster) => cluster.list().await,
                None => self.hub.list(),
            }
        }
        .boxed()
    }

    fn is_online(&self, user: &str) -> bool {
        self.hub.is_online(user)
    }

    fn platforms(&self) -> Vec<i32> {
        self.hub.platforms()
    }

    fn close_user<'a>(
        &'a self,
        user: &'a str,
        code: u16,
        reason: &'static str,
    ) -> BoxFuture<'a, usize> {
        async move {
            match &self.options.cluster {
                // Every node closes its own with the same code.
                Some(cluster) => cluster.close_user(user, code).await,
                None => self.hub.close_user(user, code, reason),
            }
        }
        .boxed()
    }

    fn apply_fault(&self, rule: u64) {
        super::faults::apply_live(self, rule);
    }

    fn push(&self, user: &str, frame: String) {
        self.hub.deliver(user, &frame.into(), None);
    }

    fn max_frame(&self) -> usize {
        self.options.max_frame
    }

    fn send(&self, msg: NewMessage) -> BoxFuture<'_, Result<ChatMessage, WriteError>> {
        async move {
            let op = |reply| WriteOp::Send {
                msg,
                id: None,
                reply,
            };
            match self.write(op).await? {
                Written::Message(m) => Ok(m),
                other => unreachable!("a send is answered with a message, not {other:?}"),
            }
        }
        .boxed()
    }

    fn change_group<'a>(
        &'a self,
        actor: &'a str,
        change: GroupChange,
    ) -> BoxFuture<'a, Result<GroupInfo, WriteError>> {
        async move {
            let write = |reply| WriteOp::Group {
                actor: actor.to_owned(),
                change,
                id: None,
                reply,
            };
            match self.write(write).await? {
                Written::Group(g) => Ok(g),
                other => unreachable!("a group change is answered with a group, not {other:?}"),
            }
        }
        .boxed()
    }
}

/// The broker as the cluster sees it.
pub struct InCluster(pub Broker);

impl crate::cluster::Local for InCluster {
    fn deliver(&self, user: &str, frames: &str) {
        self.0.hub.deliver_relayed(user, frames);
    }

    fn close_user(&self, user: &str, code: u16) -> usize {
        self.0.hub.close_user(user, code, close_reason(code))
    }

    fn online(&self) -> Vec<(String, Vec<i32>)> {
        self.0.hub.online_here()
    }

    fn close_older(&self, user: Option<&str>, before_ms: i64, reason: &'static str) -> usize {
        self.0
            .hub
            .close_older(user, before_ms, close::TOO_SLOW, reason)
    }

    fn close_all(&self, reason: &'static str) -> usize {
        self.0.hub.close_all(close::TOO_SLOW, reason)
    }

    fn list(&self) -> Vec<ConnInfo> {
        self.0.hub.list()
    }

    fn connections(&self) -> usize {
        self.0.hub.connections()
    }
}

/// The reason sent with a close another node asked for.
fn close_reason(code: u16) -> &'static str {
    match code {
        close::BANNED => "banned by an administrator",
        close::AUTH_FAILED => "account deleted",
        _ => "closed by another node",
    }
}

impl Broker {
    /// Hands `op` to the single writer and waits for its typed answer.
    async fn write(&self, op: impl FnOnce(Replier) -> WriteOp) -> Result<Written, WriteError> {
        let (replier, answer) = Replier::once();
        self.writer
            .send(op(replier))
            .await
            .map_err(|_| WriteError::ShuttingDown)?;
        match answer.await.map_err(|_| WriteError::ShuttingDown)? {
            Written::Refused(refused) => Err(WriteError::Refused(refused)),
            Written::Failed(message) => Err(WriteError::Failed(message)),
            written => Ok(written),
        }
    }
}
