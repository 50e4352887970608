//! Several imctl nodes as one chat service, over NATS (`--nats`).
//!
//! The nodes share one PostgreSQL database for everything stored; NATS
//! carries what moves between them:
//! - `imctl.nodes`: every node's heartbeat, the registry `/route` picks from;
//! - `imctl.u.<user>`: pushes for a user, subscribed by the nodes holding
//!   one of the user's connections (NATS routes by interest);
//! - `imctl.close`, `imctl.conns`: requests every node answers (bans, listings);
//! - key-value buckets ([`kv`]) for the login API's short-lived state.
//!
//! A push is sent after its commit, so one lost in transit (NATS down, a
//! full relay queue) is still in the store: the client finds it by `sync`.

pub mod kv;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_nats::{Client, Subject};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{OnceCell, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::wire::cluster::{CloseUser, NodeAnswer, NodeInfo};
use crate::wire::http::ConnInfo;

/// How often a node announces itself.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A node not heard from for this long has left the registry.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a request to every node waits for the slowest answer.
pub const GATHER_TIMEOUT: Duration = Duration::from_secs(2);
/// Pushes waiting to be published; beyond it they are dropped (and
/// counted): the store has them, clients `sync`.
pub const RELAY_QUEUE: usize = 16 * 1024;
/// How long joining waits for NATS.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

const NODES: &str = "imctl.nodes";
const CLOSE: &str = "imctl.close";
const CONNS: &str = "imctl.conns";
/// Nothing answers it: a request there comes back "no responders" once the
/// server has read everything this client sent before it.
const ROUND_TRIP: &str = "imctl.roundtrip";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot reach NATS at {url} ({why}): start nats-server (Debian package \"nats-server\") or point --nats at a running one"
    )]
    Unreachable { url: String, why: String },
    #[error("another live node is named {0:?}: give each node its own --node (IMCTL_NODE)")]
    NameTaken(String),
    #[error("NATS: {0}")]
    Nats(String),
}

impl Error {
    fn nats(e: impl std::fmt::Display) -> Self {
        Error::Nats(e.to_string())
    }
}

/// What the cluster asks of this node's broker.
pub trait Local: Send + Sync {
    /// Queues pushes that came from another node on `user`'s connections
    /// here; `frames` are JSON texts, one per line.
    fn deliver(&self, user: &str, frames: &str);
    /// Closes `user`'s connections here; returns how many.
    fn close_user(&self, user: &str, code: u16) -> usize;
    /// This node's connections.
    fn list(&self) -> Vec<ConnInfo>;
    /// How many client connections this node holds.
    fn connections(&self) -> usize;
}

/// How `/route` picks a node (`--route-strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RouteStrategy {
    /// By the user: their devices meet on one node, and a node leaving moves
    /// only its own users (rendezvous hashing).
    Hash,
    /// Each route to the next node in turn.
    RoundRobin,
    /// The node with the fewest connections (as of its last heartbeat).
    LeastConnections,
}

/// How this node joins.
#[derive(Debug, Clone)]
pub struct Settings {
    pub url: String,
    pub node: String,
    /// `--advertise-host`, handed to clients routed here by another node.
    pub host: Option<String>,
    pub broker_port: u16,
    pub app_url: String,
}

/// This node's membership; cheap to clone.
#[derive(Clone)]
pub struct Cluster(Arc<Inner>);

struct Inner {
    client: Client,
    me: NodeInfo,
    peers: Mutex<HashMap<String, (NodeInfo, Instant)>>,
    local: OnceLock<Arc<dyn Local>>,
    relay: mpsc::Sender<(Subject, Bytes)>,
    holds: Mutex<HashMap<String, Arc<Hold>>>,
    /// Pushes not handed to NATS (queue full or NATS refused them).
    dropped: AtomicU64,
    shutdown: CancellationToken,
}

/// One user's subscription, shared by their connections on this node.
struct Hold {
    count: AtomicUsize,
    ready: OnceCell<()>,
    stop: CancellationToken,
}

impl Cluster {
    /// Connects to NATS, checks the node's name is free and starts
    /// announcing it. Background tasks end with `shutdown`.
    pub async fn join(settings: Settings, shutdown: CancellationToken) -> Result<Self, Error> {
        let unreachable = |why: String| Error::Unreachable {
            url: settings.url.clone(),
            why,
        };
        let node = settings.node.clone();
        let client = async_nats::ConnectOptions::new()
            .name(format!("imctl {node}"))
            .no_echo()
            .connection_timeout(CONNECT_TIMEOUT)
            .max_reconnects(None)
            .event_callback(move |event| {
                let node = node.clone();
                async move { log_event(&node, event) }
            })
            .connect(&settings.url)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let who = format!("imctl.node.{}.who", settings.node);
        let asked = client.request(who.clone(), "".into());
        // An answer means a live node has the name; "no responders" that it is free.
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), asked).await {
            return Err(Error::NameTaken(settings.node));
        }
        let (relay, relayed) = mpsc::channel(RELAY_QUEUE);
        let me = NodeInfo {
            name: settings.node.clone(),
            instance: crate::token::random_token(8),
            host: settings.host.clone(),
            broker_port: settings.broker_port,
            app_url: settings.app_url.clone(),
            connections: 0,
            leaving: false,
        };
        let cluster = Cluster(Arc::new(Inner {
            client,
            me,
            peers: Mutex::default(),
            local: OnceLock::new(),
            relay,
            holds: Mutex::default(),
            dropped: AtomicU64::new(0),
            shutdown: shutdown.clone(),
        }));
        let whos = cluster.0.client.subscribe(who).await.map_err(Error::nats)?;
        let heartbeats = cluster
            .0
            .client
            .subscribe(NODES)
            .await
            .map_err(Error::nats)?;
        let closes = cluster
            .0
            .client
            .subscribe(CLOSE)
            .await
            .map_err(Error::nats)?;
        let conns = cluster
            .0
            .client
            .subscribe(CONNS)
            .await
            .map_err(Error::nats)?;
        tokio::spawn(cluster.clone().publish_relayed(relayed));
        tokio::spawn(cluster.clone().answer(whos, |_, _| Some(Bytes::new())));
        tokio::spawn(cluster.clone().answer(closes, |c, body| {
            let req: CloseUser = serde_json::from_slice(body).ok()?;
            let closed = c.local()?.close_user(&req.user_id, req.code);
            Some(c.node_answer(closed, Vec::new()))
        }));
        tokio::spawn(cluster.clone().answer(conns, |c, _| {
            let list = c.local_list();
            Some(c.node_answer(0, list))
        }));
        tokio::spawn(cluster.clone().listen(heartbeats));
        tokio::spawn(cluster.clone().heartbeat());
        tracing::info!(node = %cluster.0.me.name, nats = %settings.url, "joined the cluster");
        Ok(cluster)
    }

    /// Hands the cluster this node's broker (once, at start).
    pub fn attach(&self, local: Arc<dyn Local>) {
        let _ = self.0.local.set(local);
    }

    fn local(&self) -> Option<&Arc<dyn Local>> {
        self.0.local.get()
    }

    pub fn node(&self) -> &str {
        &self.0.me.name
    }

    /// Every live node, this one included, sorted by name.
    pub fn live_nodes(&self) -> Vec<NodeInfo> {
        let now = Instant::now();
        let mut nodes: Vec<NodeInfo> = self
            .0
            .peers
            .lock()
            .unwrap()
            .values()
            .filter(|(_, seen)| now.duration_since(*seen) < NODE_TIMEOUT)
            .map(|(info, _)| info.clone())
            .collect();
        nodes.push(self.me_now());
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        nodes
    }

    fn me_now(&self) -> NodeInfo {
        NodeInfo {
            connections: self.local().map_or(0, |l| l.connections()),
            ..self.0.me.clone()
        }
    }

    /// Pushes not relayed to other nodes since the start.
    pub fn dropped_pushes(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }

    /// Whether the NATS connection is up.
    pub fn is_connected(&self) -> bool {
        self.0.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Sends `frames` (JSON texts, one per line) to `user`'s connections on
    /// the other nodes. Never waits: a full queue drops them (see [`RELAY_QUEUE`]).
    pub fn relay(&self, user: &str, frames: String) {
        let subject = Subject::from(user_subject(user));
        if self.0.relay.try_send((subject, frames.into())).is_err() {
            self.dropped();
        }
    }

    fn dropped(&self) {
        let before = self.0.dropped.fetch_add(1, Ordering::Relaxed);
        if before.is_power_of_two() || before == 0 {
            tracing::warn!(
                dropped = before + 1,
                "pushes to other nodes dropped (NATS slow or down); clients recover them with sync"
            );
        }
    }

    async fn publish_relayed(self, mut relayed: mpsc::Receiver<(Subject, Bytes)>) {
        while let Some((subject, frames)) = relayed.recv().await {
            if self.0.client.publish(subject, frames).await.is_err() {
                self.dropped();
            }
        }
    }

    /// Subscribes this node to `user`'s pushes from other nodes for as long
    /// as the returned hold lives. Returns once NATS has the subscription,
    /// so a push committed after this is relayed here; a NATS that is down
    /// gets it when it is back (the client syncs what it missed).
    pub async fn hold(&self, user: &str) -> UserHold {
        let hold = {
            let mut holds = self.0.holds.lock().unwrap();
            let hold = holds.entry(user.to_owned()).or_insert_with(|| {
                Arc::new(Hold {
                    count: AtomicUsize::new(0),
                    ready: OnceCell::new(),
                    stop: self.0.shutdown.child_token(),
                })
            });
            // Changed only under the map's lock.
            hold.count.fetch_add(1, Ordering::Relaxed);
            hold.clone()
        };
        let guard = UserHold {
            cluster: self.clone(),
            user: user.to_owned(),
        };
        hold.ready
            .get_or_init(|| self.subscribe_user(user.to_owned(), hold.stop.clone()))
            .await;
        guard
    }

    async fn subscribe_user(&self, user: String, stop: CancellationToken) {
        let subscriber = match self.0.client.subscribe(user_subject(&user)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(user = ?user, error = %e, "cannot subscribe to a user's pushes from other nodes");
                return;
            }
        };
        // Wait until the server has the subscription (bounded: NATS may be down).
        let trip = self.0.client.request(ROUND_TRIP, Bytes::new());
        let _ = tokio::time::timeout(Duration::from_secs(1), trip).await;
        let cluster = self.clone();
        tokio::spawn(async move {
            let mut subscriber = subscriber;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    msg = subscriber.next() => match msg {
                        Some(msg) => {
                            if let (Some(local), Ok(frames)) = (cluster.local(), std::str::from_utf8(&msg.payload)) {
                                local.deliver(&user, frames);
                            }
                        }
                        None => break,
                    },
                }
            }
        });
    }

    fn release(&self, user: &str) {
        let mut holds = self.0.holds.lock().unwrap();
        if let Some(hold) = holds.get(user)
            && hold.count.fetch_sub(1, Ordering::Relaxed) == 1
        {
            // A `hold` still subscribing finds `stop` cancelled and lets go.
            hold.stop.cancel();
            holds.remove(user);
        }
    }

    /// Closes `user`'s connections on every node; returns how many closed.
    pub async fn close_user(&self, user: &str, code: u16) -> usize {
        let here = self.local().map_or(0, |l| l.close_user(user, code));
        let req = CloseUser {
            user_id: user.to_owned(),
            code,
        };
        let answers = self.gather(CLOSE, &req).await;
        here + answers.iter().map(|a| a.closed).sum::<usize>()
    }

    /// Every connection on every live node.
    pub async fn list(&self) -> Vec<ConnInfo> {
        let mut all = self.local_list();
        for answer in self.gather(CONNS, &()).await {
            all.extend(answer.connections);
        }
        all.sort_by(|a, b| (&a.user_id, a.since).cmp(&(&b.user_id, b.since)));
        all
    }

    fn local_list(&self) -> Vec<ConnInfo> {
        let mut list = self.local().map(|l| l.list()).unwrap_or_default();
        for c in &mut list {
            c.node = Some(self.0.me.name.clone());
        }
        list
    }

    fn node_answer(&self, closed: usize, connections: Vec<ConnInfo>) -> Bytes {
        let answer = NodeAnswer {
            node: self.0.me.name.clone(),
            closed,
            connections,
        };
        serde_json::to_vec(&answer).expect("serializable").into()
    }

    /// Asks every other live node and collects their answers until all
    /// have answered or [`GATHER_TIMEOUT`] has passed.
    async fn gather(&self, subject: &'static str, req: &impl serde::Serialize) -> Vec<NodeAnswer> {
        let expected = self.live_nodes().len() - 1;
        let mut answers = Vec::new();
        if expected == 0 {
            return answers;
        }
        let client = &self.0.client;
        let inbox = client.new_inbox();
        let Ok(mut replies) = client.subscribe(inbox.clone()).await else {
            return answers;
        };
        let body: Bytes = serde_json::to_vec(req).expect("serializable").into();
        if client
            .publish_with_reply(subject, inbox, body)
            .await
            .is_err()
        {
            return answers;
        }
        let deadline = Instant::now() + GATHER_TIMEOUT;
        while answers.len() < expected {
            match tokio::time::timeout_at(deadline, replies.next()).await {
                Ok(Some(msg)) => {
                    if let Ok(a) = serde_json::from_slice::<NodeAnswer>(&msg.payload) {
                        answers.push(a);
                    }
                }
                _ => break,
            }
        }
        answers
    }

    /// Answers each request on `requests` with `f`'s reply, if any.
    async fn answer(
        self,
        mut requests: async_nats::Subscriber,
        f: impl Fn(&Cluster, &[u8]) -> Option<Bytes>,
    ) {
        loop {
            let msg = tokio::select! {
                _ = self.0.shutdown.cancelled() => break,
                msg = requests.next() => match msg { Some(m) => m, None => break },
            };
            if let (Some(reply), Some(answer)) = (msg.reply, f(&self, &msg.payload)) {
                let _ = self.0.client.publish(reply, answer).await;
            }
        }
    }

    async fn heartbeat(self) {
        let mut tick = tokio::time::interval(HEARTBEAT);
        loop {
            tokio::select! {
                _ = self.0.shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            self.announce(false).await;
        }
        self.announce(true).await;
        let _ = self.0.client.flush().await;
    }

    async fn announce(&self, leaving: bool) {
        let info = NodeInfo {
            leaving,
            ..self.me_now()
        };
        let body: Bytes = serde_json::to_vec(&info).expect("serializable").into();
        let _ = self.0.client.publish(NODES, body).await;
    }

    /// Keeps the registry from heartbeats, and says who joins and leaves.
    async fn listen(self, mut heartbeats: async_nats::Subscriber) {
        let mut sweep = tokio::time::interval(HEARTBEAT);
        loop {
            tokio::select! {
                _ = self.0.shutdown.cancelled() => break,
                _ = sweep.tick() => self.sweep(),
                msg = heartbeats.next() => match msg {
                    Some(msg) => self.heard(&msg.payload),
                    None => break,
                },
            }
        }
    }

    fn heard(&self, body: &[u8]) {
        let Ok(info) = serde_json::from_slice::<NodeInfo>(body) else {
            return;
        };
        if info.name == self.0.me.name {
            tracing::error!(node = %info.name, "another node uses this node's name; give each node its own --node");
            return;
        }
        let mut peers = self.0.peers.lock().unwrap();
        if info.leaving {
            if peers.remove(&info.name).is_some() {
                tracing::info!(node = %info.name, "node left the cluster");
            }
            return;
        }
        let name = info.name.clone();
        if peers.insert(name.clone(), (info, Instant::now())).is_none() {
            tracing::info!(node = %name, "node joined the cluster");
        }
    }

    fn sweep(&self) {
        let now = Instant::now();
        self.0.peers.lock().unwrap().retain(|name, (_, seen)| {
            let live = now.duration_since(*seen) < NODE_TIMEOUT;
            if !live {
                tracing::warn!(node = %name, "node stopped heartbeating; removed from the cluster");
            }
            live
        });
    }

    /// The JetStream context, for [`kv`] buckets.
    pub(crate) fn jetstream(&self) -> async_nats::jetstream::Context {
        async_nats::jetstream::new(self.0.client.clone())
    }

    /// Publishes `body` on `subject` to every node (fire and forget).
    pub async fn broadcast(&self, subject: String, body: Bytes) {
        let _ = self.0.client.publish(subject, body).await;
    }

    /// Subscribes to what other nodes [`broadcast`](Self::broadcast) on `subject`.
    pub async fn subscribe(&self, subject: String) -> Result<async_nats::Subscriber, Error> {
        self.0.client.subscribe(subject).await.map_err(Error::nats)
    }
}

/// Keeps this node subscribed to a user's pushes; see [`Cluster::hold`].
pub struct UserHold {
    cluster: Cluster,
    user: String,
}

impl Drop for UserHold {
    fn drop(&mut self) {
        self.cluster.release(&self.user);
    }
}

/// `imctl.u.<user>`: the user id itself when it is a plain subject token,
/// else `imctl.ux.<hex>` (ids may hold dots, spaces or `*`).
pub fn user_subject(user: &str) -> String {
    let plain = !user.is_empty()
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain {
        format!("imctl.u.{user}")
    } else {
        format!("imctl.ux.{}", hex::encode(user))
    }
}

fn log_event(node: &str, event: async_nats::Event) {
    use async_nats::Event;
    match event {
        Event::Connected => tracing::info!(node, "NATS connected"),
        Event::Disconnected => tracing::warn!(
            node,
            "NATS disconnected: serving this node's connections; pushes to other nodes wait or drop until it is back"
        ),
        other => tracing::warn!(node, "NATS: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_subjects_are_one_token_and_never_collide() {
        assert_eq!(user_subject("alice"), "imctl.u.alice");
        assert_eq!(user_subject("a.b"), "imctl.ux.612e62");
        assert_eq!(user_subject("a*"), "imctl.ux.612a");
        assert_eq!(user_subject(""), "imctl.ux.");
        // A plain id that looks like hex stays under `u`, apart from `ux`.
        assert_ne!(user_subject("612e62"), user_subject("a.b"));
    }
}
