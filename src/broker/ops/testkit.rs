//! A broker on an in-memory store, its writer running, and connected users
//! whose frames the handlers' tests read from their queues.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::connect::{Upgrade, connect_frame};
use super::{Ctx, Handled, Identity};
use crate::broker::hub::{ConnHandle, MAX_CONNECTIONS_PER_USER, QUEUE_BYTES, Queue};
use crate::broker::route::{Node, Routes};
use crate::broker::{Broker, BrokerOptions};
use crate::http::advertise::Advertise;
use crate::http::cors::Origins;
use crate::store::Fixtures;
use crate::telemetry::Telemetry;
use crate::token::ImTokens;

pub struct Rig {
    pub broker: Broker,
    writer: tokio::task::JoinHandle<()>,
}

/// One connected user.
pub struct Client {
    pub who: Identity,
    pub conn: ConnHandle,
    pub queue: Queue,
    broker: Broker,
}

impl Client {
    /// The context of a request with `id` on this connection.
    pub fn cx(&self, id: Option<u64>) -> Ctx<'_> {
        Ctx {
            broker: &self.broker,
            conn: &self.conn,
            who: &self.who,
            id,
        }
    }
}

impl Rig {
    /// Alice, bob, carol and the robot (not running), nobody friends.
    pub async fn new() -> Self {
        Self::with(false).await
    }

    /// As [`Rig::new`], with `--friends-only`.
    pub async fn friends_only() -> Self {
        Self::with(true).await
    }

    async fn with(friends_only: bool) -> Self {
        let store = crate::store::testing::empty_store().await;
        store.seed_once(&Fixtures::builtin()).await.unwrap();
        let options = BrokerOptions {
            routes: Routes::single(Node {
                name: "test".into(),
                host: None,
                port: 8083,
            }),
            node: "test".into(),
            cluster: None,
            max_frame: 64 * 1024,
            idle_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            queue_bytes: QUEUE_BYTES,
            max_connections_per_user: MAX_CONNECTIONS_PER_USER,
            max_websockets: 64,
            origins: Arc::new(Origins::new(&[], false)),
            friends_only,
            advertise: Advertise::new(Ipv4Addr::LOCALHOST.into(), None, 8082, 8083),
            faults: Default::default(),
        };
        let tokens = ImTokens::new(b"test secret", Duration::from_secs(3600));
        let (broker, writer) = Broker::new(
            store,
            tokens,
            options,
            Telemetry::default(),
            CancellationToken::new(),
        );
        Self { broker, writer }
    }

    /// A new connection of `user`, through `connect`; its queue is empty.
    pub async fn connect(&self, user: &str) -> Client {
        let (conn, mut queue) = self.broker.hub.handle();
        let token = self.broker.im_tokens.issue(user, "test", 1);
        let urls = self.broker.options.advertise.default_urls();
        let upgrade = Upgrade {
            token: Some(&token),
            urls: &urls,
        };
        let who = connect_frame(
            &self.broker,
            &conn,
            None,
            &upgrade,
            json!({"op": "connect"}),
        )
        .await
        .unwrap();
        drain(&mut queue);
        Client {
            who,
            conn,
            queue,
            broker: self.broker.clone(),
        }
    }

    /// Makes `a` and `b` friends, by request and acceptance; empties their queues.
    pub async fn befriend(&self, a: &mut Client, b: &mut Client) {
        let ask = json!({"op": "friend.request", "target": b.who.user_id});
        run(&a.cx(None), ask).await.unwrap();
        let yes = json!({"op": "friend.accept", "from": a.who.user_id});
        run(&b.cx(None), yes).await.unwrap();
        drain(&mut a.queue);
        drain(&mut b.queue);
    }

    /// Stops the writer (it commits what is queued first).
    pub async fn stop(self) {
        self.broker.shutdown.cancel();
        self.writer.await.unwrap();
    }
}

/// Runs a request frame on `cx`'s connection as the connection would once
/// connected: decoded by its `op`, then dispatched.
pub async fn run(cx: &Ctx<'_>, frame: Value) -> Handled {
    let op = frame["op"]
        .as_str()
        .expect("test frames carry an op")
        .to_owned();
    super::dispatch(cx, super::request(&op, frame)?).await
}

/// Every frame queued now, parsed.
pub fn drain(queue: &mut Queue) -> Vec<Value> {
    std::iter::from_fn(|| queue.try_recv())
        .map(|f| serde_json::from_str(f.as_str()).unwrap())
        .collect()
}

/// The next frame, waiting for the writer if need be.
pub async fn next(queue: &mut Queue) -> Value {
    let frame = tokio::time::timeout(Duration::from_secs(10), queue.recv())
        .await
        .expect("a frame within 10 s")
        .expect("the queue is open");
    serde_json::from_str(frame.as_str()).unwrap()
}
