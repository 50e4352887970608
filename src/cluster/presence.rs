//! Who is online on the other nodes, so presence announcements and friend
//! lists see the whole cluster. Each node publishes its users' platform
//! changes on `imctl.presence`, in order, from one task; a node newly heard
//! from is asked for its whole list (`imctl.node.<name>.online`); a node
//! that leaves the registry takes its users with it. Best effort: every
//! list is fetched again every 30 s and after a NATS outage, which corrects
//! a change lost on the way.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::Cluster;
use crate::wire::cluster::{OnlineList, PresenceChange};

pub(super) const PRESENCE: &str = "imctl.presence";
/// Presence changes waiting to be published; beyond it they are dropped.
const QUEUE: usize = 16 * 1024;

/// The other nodes' users: node → user → platforms.
#[derive(Default)]
pub(super) struct Remote {
    by_node: HashMap<String, HashMap<String, Vec<i32>>>,
}

pub(super) fn online_subject(node: &str) -> String {
    format!("imctl.node.{node}.online")
}

pub(super) fn queue() -> (mpsc::Sender<Bytes>, mpsc::Receiver<Bytes>) {
    mpsc::channel(QUEUE)
}

impl Cluster {
    /// This node's platforms for `user` changed (empty: gone from here).
    /// Never waits.
    pub fn presence_changed(&self, user: &str, platforms: &[i32]) {
        let change = PresenceChange {
            node: self.0.me.name.clone(),
            user_id: user.to_owned(),
            platforms: platforms.to_vec(),
        };
        let body = serde_json::to_vec(&change).expect("serializable").into();
        if self.0.presence_out.try_send(body).is_err() {
            tracing::debug!(user = ?user, "presence change not published (queue full)");
        }
    }

    /// `user`'s platforms on the other live nodes.
    pub fn remote_platforms(&self, user: &str) -> Vec<i32> {
        let remote = self.0.remote.lock().unwrap();
        remote
            .by_node
            .values()
            .filter_map(|users| users.get(user))
            .flatten()
            .copied()
            .collect()
    }

    pub(super) async fn publish_presence(self, mut out: mpsc::Receiver<Bytes>) {
        while let Some(body) = out.recv().await {
            self.broadcast(PRESENCE.into(), body).await;
        }
    }

    pub(super) async fn follow_presence(self, mut changes: async_nats::Subscriber) {
        while let Some(msg) = changes.next().await {
            let Ok(change) = serde_json::from_slice::<PresenceChange>(&msg.payload) else {
                continue;
            };
            // Not from a node that has left (its last changes trail its
            // leaving heartbeat): that would never be cleared.
            if !self.is_peer(&change.node) {
                continue;
            }
            let mut remote = self.0.remote.lock().unwrap();
            let users = remote.by_node.entry(change.node).or_default();
            if change.platforms.is_empty() {
                users.remove(&change.user_id);
            } else {
                users.insert(change.user_id, change.platforms);
            }
        }
    }

    /// Asks a node newly heard from for everyone connected there.
    pub(super) async fn fetch_online(self, node: String) {
        let asked = self.0.client.request(online_subject(&node), Bytes::new());
        let Ok(Ok(reply)) = tokio::time::timeout(Duration::from_secs(2), asked).await else {
            tracing::debug!(
                node,
                "no online list from a node; its presence arrives as it changes"
            );
            return;
        };
        if let Ok(list) = serde_json::from_slice::<OnlineList>(&reply.payload)
            && self.is_peer(&list.node)
        {
            let users = list.users.into_iter().collect();
            self.0
                .remote
                .lock()
                .unwrap()
                .by_node
                .insert(list.node, users);
        }
    }

    /// Fetches every live node's list again.
    pub(super) fn refetch_online(&self) {
        let peers: Vec<String> = self.0.peers.lock().unwrap().keys().cloned().collect();
        for node in peers {
            tokio::spawn(self.clone().fetch_online(node));
        }
    }

    /// Answers `imctl.node.<me>.online`.
    pub(super) fn online_list(&self) -> Option<Bytes> {
        let list = OnlineList {
            node: self.0.me.name.clone(),
            users: self.0.local.get()?.online(),
        };
        Some(serde_json::to_vec(&list).expect("serializable").into())
    }

    /// A node left: its users are no longer online through it.
    pub(super) fn forget_node(&self, node: &str) {
        self.0.remote.lock().unwrap().by_node.remove(node);
    }

    /// Drops the users of nodes no longer in the registry (a list or a
    /// change that arrived after the node left).
    pub(super) fn prune_presence(&self) {
        let peers = self.0.peers.lock().unwrap();
        let mut remote = self.0.remote.lock().unwrap();
        remote.by_node.retain(|node, _| peers.contains_key(node));
    }
}
