//! Several imctl nodes as one chat service, over NATS (`--nats`).
//!
//! The nodes share one PostgreSQL database for everything stored; NATS
//! carries what moves between them:
//! - `imctl.nodes`: every node's heartbeat, the registry `/route` picks from;
//! - `imctl.u.<user>`: pushes for a user, subscribed by the nodes holding
//!   one of the user's connections (NATS routes by interest; [`relay`]);
//! - `imctl.resync`: users who may have missed a relayed push, whose
//!   connections are closed with 4009 so they reconnect and `sync`;
//! - `imctl.presence`: users' platforms per node ([`presence`]);
//! - `imctl.close`, `imctl.conns`: requests every node answers (bans, listings);
//! - key-value buckets ([`kv`]) for the login API's short-lived state.

pub mod kv;
mod presence;
mod relay;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_nats::Client;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use relay::{RELAY_BYTES, RELAY_QUEUE, UserHold, user_subject};

use crate::wire::cluster::{CloseUser, NodeAnswer, NodeInfo};
use crate::wire::http::ConnInfo;

/// How often a node announces itself.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A node not heard from for this long has left the registry.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a request to every node waits for the slowest answer.
pub const GATHER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long joining waits for NATS.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

const NODES: &str = "imctl.nodes";
const CLOSE: &str = "imctl.close";
const CONNS: &str = "imctl.conns";

/// How often the NATS link's state is looked at.
const LINK_POLL: Duration = Duration::from_millis(200);
/// How often each node's full list of online users is fetched again, so a
/// presence change lost on the way is corrected.
const PRESENCE_REFRESH: Duration = Duration::from_secs(30);

/// Why a node closes its connections when its NATS link comes back.
const LINK_WAS_DOWN: &str = "this node lost the cluster for a moment: reconnect and sync";

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
    /// Closes `user`'s connections here with `code`; returns how many.
    fn close_user(&self, user: &str, code: u16) -> usize;
    /// Closes every client connection here with 4009 and `reason` (they
    /// may have missed pushes); returns how many.
    fn close_all(&self, reason: &'static str) -> usize;
    /// Closes with 4009 and `reason` the connections here (of `user`, or
    /// every client's) made before `before_ms`; returns how many.
    fn close_older(&self, user: Option<&str>, before_ms: i64, reason: &'static str) -> usize;
    /// This node's connections.
    fn list(&self) -> Vec<ConnInfo>;
    /// Every user connected here (not the robot), with their platforms.
    fn online(&self) -> Vec<(String, Vec<i32>)>;
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
    relay: relay::Relay,
    presence_out: mpsc::Sender<Bytes>,
    remote: Mutex<presence::Remote>,
    shutdown: CancellationToken,
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
            .name(format!("imctl {}", settings.node))
            .no_echo()
            .connection_timeout(CONNECT_TIMEOUT)
            .max_reconnects(None)
            .event_callback(move |event| {
                let node = node.clone();
                async move { tracing::info!(node, "NATS: {event}") }
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
        let (relay, relayed) = relay::Relay::new();
        let (presence_out, presence_queue) = presence::queue();
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
            presence_out,
            remote: Mutex::default(),
            shutdown: shutdown.clone(),
        }));
        let subscribe = |subject: String| {
            let client = cluster.0.client.clone();
            async move { client.subscribe(subject).await.map_err(Error::nats) }
        };
        let whos = subscribe(who).await?;
        let heartbeats = subscribe(NODES.into()).await?;
        let closes = subscribe(CLOSE.into()).await?;
        let conns = subscribe(CONNS.into()).await?;
        let resyncs = subscribe(relay::RESYNC.into()).await?;
        let presences = subscribe(presence::PRESENCE.into()).await?;
        let onlines = subscribe(presence::online_subject(&settings.node)).await?;
        tokio::spawn(cluster.clone().publish_relayed(relayed));
        tokio::spawn(cluster.clone().resync(resyncs));
        tokio::spawn(cluster.clone().watch_link());
        tokio::spawn(cluster.clone().publish_presence(presence_queue));
        tokio::spawn(cluster.clone().follow_presence(presences));
        tokio::spawn(cluster.clone().answer(onlines, |c, _| c.online_list()));
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

    /// Follows the NATS link. While it is down the node serves its own
    /// connections; when it comes back, they may have missed pushes from
    /// other nodes (published while nobody here listened), so they are
    /// closed with 4009 to reconnect and `sync`.
    ///
    /// The link's state is polled (every [`LINK_POLL`]) rather than taken
    /// from the client's events, which a flood of other events could push out.
    async fn watch_link(self) {
        let node = self.0.me.name.clone();
        let mut was_down = false;
        let mut every = tokio::time::interval(LINK_POLL);
        loop {
            tokio::select! {
                _ = self.0.shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            match (self.is_connected(), was_down) {
                (false, false) => {
                    was_down = true;
                    tracing::warn!(
                        node,
                        "NATS unreachable: serving this node's connections; pushes to other nodes are dropped until it is back"
                    );
                }
                (true, true) => {
                    was_down = false;
                    // What this node published just before the cut may have
                    // died with it: those users resync on the other nodes.
                    self.relayed_lately_missed();
                    let closed = self.local().map_or(0, |l| l.close_all(LINK_WAS_DOWN));
                    tracing::warn!(
                        node,
                        closed,
                        "NATS is back: closed this node's connections (4009) so they sync what they missed"
                    );
                    // Presence changes may have been lost both ways.
                    self.refetch_online();
                }
                _ => {}
            }
        }
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

    /// Whether the NATS connection is up.
    pub fn is_connected(&self) -> bool {
        self.0.client.connection_state() == async_nats::connection::State::Connected
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
    /// have answered or [`GATHER_TIMEOUT`] has passed; a node that does not
    /// answer is named in the log.
    async fn gather(&self, subject: &'static str, req: &impl serde::Serialize) -> Vec<NodeAnswer> {
        let others: Vec<String> = self
            .live_nodes()
            .into_iter()
            .map(|n| n.name)
            .filter(|n| *n != self.0.me.name)
            .collect();
        let mut answers = Vec::new();
        if others.is_empty() {
            return answers;
        }
        if self.is_connected() {
            let asked = self.ask(subject, req, &others, &mut answers);
            let _ = tokio::time::timeout(GATHER_TIMEOUT, asked).await;
        }
        let missing: Vec<&String> = others
            .iter()
            .filter(|n| !answers.iter().any(|a| &&a.node == n))
            .collect();
        if !missing.is_empty() {
            tracing::warn!(
                subject,
                ?missing,
                "nodes did not answer within {GATHER_TIMEOUT:?}"
            );
        }
        answers
    }

    async fn ask(
        &self,
        subject: &'static str,
        req: &impl serde::Serialize,
        asked: &[String],
        answers: &mut Vec<NodeAnswer>,
    ) {
        let client = &self.0.client;
        let inbox = client.new_inbox();
        let Ok(mut replies) = client.subscribe(inbox.clone()).await else {
            return;
        };
        let body: Bytes = serde_json::to_vec(req).expect("serializable").into();
        if client
            .publish_with_reply(subject, inbox, body)
            .await
            .is_err()
        {
            return;
        }
        // Counting only the nodes asked: one that joined meanwhile answers too.
        let mut waiting: Vec<&String> = asked.iter().collect();
        while !waiting.is_empty() {
            let Some(msg) = replies.next().await else {
                return;
            };
            if let Ok(a) = serde_json::from_slice::<NodeAnswer>(&msg.payload) {
                waiting.retain(|n| **n != a.node);
                answers.push(a);
            }
        }
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
        let mut refresh = tokio::time::interval(PRESENCE_REFRESH);
        refresh.tick().await;
        loop {
            tokio::select! {
                _ = self.0.shutdown.cancelled() => break,
                _ = sweep.tick() => self.sweep(),
                _ = refresh.tick() => self.refetch_online(),
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
            drop(peers);
            self.forget_node(&info.name);
            return;
        }
        let (name, instance) = (info.name.clone(), info.instance.clone());
        let before = peers.insert(name.clone(), (info, Instant::now()));
        drop(peers);
        let new = before.as_ref().is_none_or(|(b, _)| b.instance != instance);
        if new {
            tracing::info!(node = %name, "node joined the cluster");
            // Its users, as of now; changes from here on come as they happen.
            tokio::spawn(self.clone().fetch_online(name));
        }
    }

    fn sweep(&self) {
        let now = Instant::now();
        let mut gone = Vec::new();
        self.0.peers.lock().unwrap().retain(|name, (_, seen)| {
            let live = now.duration_since(*seen) < NODE_TIMEOUT;
            if !live {
                tracing::warn!(node = %name, "node stopped heartbeating; removed from the cluster");
                gone.push(name.clone());
            }
            live
        });
        gone.iter().for_each(|n| self.forget_node(n));
        self.prune_presence();
    }

    /// Whether `node` is another node in the registry.
    fn is_peer(&self, node: &str) -> bool {
        self.0.peers.lock().unwrap().contains_key(node)
    }

    /// The JetStream context, for [`kv`] buckets.
    pub(crate) fn jetstream(&self) -> async_nats::jetstream::Context {
        async_nats::jetstream::new(self.0.client.clone())
    }

    /// Publishes `body` on `subject` to every node (fire and forget; not
    /// while NATS is down, and never waiting more than a second).
    pub async fn broadcast(&self, subject: String, body: Bytes) {
        if self.is_connected() {
            let publish = self.0.client.publish(subject, body);
            let _ = tokio::time::timeout(Duration::from_secs(1), publish).await;
        }
    }

    /// Subscribes to what other nodes [`broadcast`](Self::broadcast) on `subject`.
    pub async fn subscribe(&self, subject: String) -> Result<async_nats::Subscriber, Error> {
        self.0.client.subscribe(subject).await.map_err(Error::nats)
    }
}
