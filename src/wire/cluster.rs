//! What imctl nodes say to each other over NATS (`--nats`). Clients never
//! see these; nodes of different versions must still read each other's, so
//! fields are only ever added, with defaults.

use serde::{Deserialize, Serialize};

use super::http::ConnInfo;

/// A node's heartbeat on `imctl.nodes`, sent every second; a node not heard
/// from for a few seconds has left.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    /// `--node`, unique in the cluster.
    pub name: String,
    /// Random per process: tells a restarted node from the one before it.
    pub instance: String,
    /// `--advertise-host`; `None` when the node did not set one, in which
    /// case clients reach it by the host they reached the route by.
    #[serde(default)]
    pub host: Option<String>,
    /// The broker's port (WebSocket at `/ws`).
    pub broker_port: u16,
    /// The app-server's base URL as the node sees it.
    pub app_url: String,
    /// Live client connections on the node.
    #[serde(default)]
    pub connections: usize,
    /// Set in the last heartbeat of a node shutting down.
    #[serde(default)]
    pub leaving: bool,
}

/// `imctl.close`: close every connection of a user on every node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloseUser {
    pub user_id: String,
    pub code: u16,
}

/// A node's answer to `imctl.close` and `imctl.conns`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeAnswer {
    pub node: String,
    #[serde(default)]
    pub closed: usize,
    #[serde(default)]
    pub connections: Vec<ConnInfo>,
}

/// `imctl.resync`: users who may have missed pushes from the sending node
/// (or everyone); the nodes holding them close their connections with 4009.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resync {
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub everyone: bool,
    /// The last push missed, in milliseconds since the epoch: a connection
    /// made after it synced at `connect` and is left open.
    #[serde(default)]
    pub before_ms: i64,
}

/// `imctl.presence`: a user's platforms on the sending node changed
/// (empty: the user has no connection there any more).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceChange {
    pub node: String,
    pub user_id: String,
    pub platforms: Vec<i32>,
}

/// A node's answer to `imctl.node.<name>.online`: every user connected
/// there, with their platforms.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OnlineList {
    pub node: String,
    pub users: Vec<(String, Vec<i32>)>,
}
