//! The broker: `/route` and authenticated WebSocket chat at `/ws` and `/`.
//!
//! Connections (`conn.rs`) validate frames and hand sends to the single
//! writer (`writer.rs`), which commits them in batches, acks, and fans out
//! through the hub (`hub.rs`). The robot (`robot.rs`) is a user like any other.

mod conn;
mod faults;
mod handle;
mod hub;
mod ops;
mod presence;
mod receipts;
pub mod robot;
pub mod route;
mod socket;
mod writer;

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{FromRef, Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use robot::spawn as spawn_robot;

use crate::cluster::Cluster;
use crate::http::advertise::{Advertise, PublicUrls};
use crate::store::Store;
use crate::telemetry::Telemetry;
use crate::token::ImTokens;
use crate::wire::ws::Profile;
use hub::Hub;
use route::Routes;
use writer::WriteOp;

/// Sends waiting for the writer before connections wait in turn.
const WRITE_QUEUE: usize = 16 * 1024;

#[derive(Clone)]
pub struct Broker(Arc<Inner>);

pub struct Inner {
    pub store: Store,
    pub im_tokens: ImTokens,
    pub hub: Arc<Hub>,
    pub writer: mpsc::Sender<WriteOp>,
    pub options: BrokerOptions,
    pub shutdown: CancellationToken,
    /// Cancelled once the writer has committed its last batch at shutdown,
    /// so connections close only after their last acks are queued.
    pub writer_done: CancellationToken,
    /// Per user, how far delivery receipts have been sent.
    pub receipted: receipts::Watermarks,
    /// Presence announcements, coalesced per user.
    presence: presence::Presence,
    /// Every connection task, so shutdown can wait for their last acks.
    connections: tokio_util::task::TaskTracker,
    /// One permit per open WebSocket (`--max-websockets`): upgraded sockets
    /// leave the HTTP listener's connection cap, so they need their own.
    sockets: Arc<tokio::sync::Semaphore>,
}

impl Deref for Broker {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

pub struct BrokerOptions {
    pub routes: Routes,
    pub node: String,
    /// The other nodes, when this one is in a cluster (`--nats`).
    pub cluster: Option<Cluster>,
    pub max_frame: usize,
    pub idle_timeout: Duration,
    /// How long a new connection has to send `connect`.
    pub connect_timeout: Duration,
    /// How long one write to a client may take before it counts as too slow.
    pub write_timeout: Duration,
    /// Bytes queued for one connection before it counts as too slow.
    pub queue_bytes: usize,
    /// Live connections per user.
    pub max_connections_per_user: usize,
    /// WebSockets held at once, whoever opened them.
    pub max_websockets: usize,
    /// Which pages may open a WebSocket (the app-server's CORS policy).
    pub origins: std::sync::Arc<crate::http::cors::Origins>,
    pub friends_only: bool,
    /// The host of the URLs handed to clients (portraits).
    pub advertise: Advertise,
    /// Faults injected on purpose (`imctl chaos`), shared with the app-server.
    pub faults: crate::fault::Faults,
}

impl FromRef<Broker> for Advertise {
    fn from_ref(broker: &Broker) -> Self {
        broker.options.advertise.clone()
    }
}

impl Broker {
    /// A user as others see it (`mobile` only for `viewer` themself),
    /// with a portrait URL on the host of `urls`.
    pub fn profile(&self, user: &crate::store::User, viewer: &str, urls: &PublicUrls) -> Profile {
        Profile {
            user_id: user.id.clone(),
            display_name: user.display_name.clone(),
            portrait: urls.absolute(user.portrait.as_deref()),
            mobile: (user.id == viewer).then(|| user.mobile.clone()),
        }
    }

    /// The broker state and its writer task.
    pub fn new(
        store: Store,
        im_tokens: ImTokens,
        options: BrokerOptions,
        telemetry: Telemetry,
        shutdown: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let options_max = options.max_websockets;
        let hub = Arc::new(
            Hub::new(
                options.queue_bytes,
                options.max_connections_per_user,
                telemetry,
            )
            .with_cluster(options.cluster.clone())
            .with_faults(options.faults.clone()),
        );
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let writer_done = CancellationToken::new();
        let writer = writer::spawn(
            store.clone(),
            hub.clone(),
            rx,
            shutdown.clone(),
            writer_done.clone(),
        );
        let broker = Broker(Arc::new(Inner {
            store,
            im_tokens,
            hub,
            writer: tx,
            options,
            shutdown,
            writer_done,
            receipted: Default::default(),
            presence: Default::default(),
            connections: Default::default(),
            sockets: Arc::new(tokio::sync::Semaphore::new(options_max)),
        }));
        if let Some(cluster) = &broker.options.cluster {
            cluster.attach(Arc::new(handle::InCluster(broker.clone())));
        }
        (broker, writer)
    }

    /// Waits until every connection has closed (after shutdown each takes
    /// at most a few seconds: see `socket::close_bounded`).
    pub async fn connections_closed(&self) {
        self.connections.close();
        self.connections.wait().await;
    }
}

/// Every route of the broker.
pub fn app(broker: Broker) -> Router {
    // The broker has no path that `'*'` must not open.
    let cors = broker.options.origins.layer(|_| false);
    Router::new()
        .route("/route", post(route::route))
        .route("/ws", get(ws))
        .route("/", get(ws))
        .route("/healthz", get(|| async { "ok" }))
        .layer(cors)
        .with_state(broker)
}

#[derive(Debug, Deserialize)]
pub struct WsQuery {
    token: Option<String>,
}

/// The WebSocket upgrade; the chat protocol is in docs/PROTOCOL.md.
#[utoipa::path(get, path = "/ws", tag = "broker", servers((url = "{broker}", description = "the broker (its own port)", variables(("broker" = (default = "http://127.0.0.1:8083", description = "the broker's address"))))),
    params(("token" = Option<String>, Query, description = "the IM token, for browsers that cannot set headers")),
    responses((status = 101, description = "switching to the WebSocket chat protocol (docs/PROTOCOL.md)"), (status = 403, description = "an Origin that is not allowed", content_type = "text/plain", body = String)))]
pub async fn ws(
    State(broker): State<Broker>,
    urls: PublicUrls,
    headers: HeaderMap,
    query: Result<Query<WsQuery>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(_) => {
            return (
                StatusCode::UPGRADE_REQUIRED,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "imctl broker: open a WebSocket here (ws://HOST:PORT/ws); the protocol is in docs/PROTOCOL.md\n",
            )
                .into_response();
        }
    };
    // Browsers send Origin; other clients need not. Same rule as the app-server's CORS.
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok())
        && !broker.options.origins.allows(origin, host)
    {
        return (
            StatusCode::FORBIDDEN,
            format!("origin {origin} is not allowed; add it with --cors-origin\n"),
        )
            .into_response();
    }
    let Ok(slot) = broker.sockets.clone().try_acquire_owned() else {
        tracing::debug!("--max-websockets reached; refusing an upgrade");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            axum::Json(serde_json::json!({
                "error": "the broker holds --max-websockets connections already; retry later"
            })),
        )
            .into_response();
    };
    let token = query.ok().and_then(|Query(q)| q.token);
    let max = broker.options.max_frame;
    upgrade
        // A small read buffer keeps idle connections cheap (it grows for
        // large frames). Frames queued together are written with one
        // syscall: with no write buffer each frame was a `sendto` of its own.
        // 16 KiB does as well as 64 KiB in the benches, and the buffer keeps
        // its capacity after a burst.
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| {
            let tracker = broker.connections.clone();
            tracker.track_future(async move {
                conn::run(socket, broker, token, urls).await;
                drop(slot);
            })
        })
}
