//! `/route`: verifies the IM token and says which broker node to connect to.

use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::State;
use sha2::{Digest, Sha256};

use super::Broker;
use crate::cluster::{Cluster, RouteStrategy};
use crate::http::{ApiError, ApiJson, ApiResult, PublicUrls, Reply};
use crate::wire::cluster::NodeInfo;
use crate::wire::http::ApiResponse;
use crate::wire::ws::{RouteRequest, RouteResult};

/// A broker node clients can connect to.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    /// Its own host, or `None` for a node clients reach by the host they
    /// reached us by (this process's broker, or a node that advertises none).
    pub host: Option<String>,
    pub port: u16,
}

impl Node {
    /// The host `urls`'s client reaches this node by.
    pub fn host_for(&self, urls: &PublicUrls) -> String {
        self.host.clone().unwrap_or_else(|| urls.host().to_owned())
    }

    pub fn ws_url(&self, urls: &PublicUrls) -> String {
        format!("ws://{}:{}/ws", self.host_for(urls), self.port)
    }
}

/// Picks the node for a user: this one alone, or one of the cluster's live
/// nodes by the strategy.
pub struct Routes {
    strategy: RouteStrategy,
    local: Node,
    cluster: Option<Cluster>,
    turn: AtomicUsize,
}

impl Routes {
    /// Routes every user to `local`.
    pub fn single(local: Node) -> Self {
        Self::new(RouteStrategy::Hash, local, None)
    }

    pub fn new(strategy: RouteStrategy, local: Node, cluster: Option<Cluster>) -> Self {
        Self {
            strategy,
            local,
            cluster,
            turn: AtomicUsize::new(0),
        }
    }

    pub fn route(&self, user: &str) -> Node {
        let Some(cluster) = &self.cluster else {
            return self.local.clone();
        };
        let nodes = cluster.live_nodes();
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let picked = pick(self.strategy, user, &nodes, turn);
        match picked {
            Some(n) if n.name != self.local.name => Node {
                name: n.name.clone(),
                host: n.host.clone(),
                port: n.broker_port,
            },
            _ => self.local.clone(),
        }
    }
}

/// The node `strategy` picks for `user` among `nodes` (sorted by name);
/// `turn` counts routes, for round-robin.
pub fn pick<'a>(
    strategy: RouteStrategy,
    user: &str,
    nodes: &'a [NodeInfo],
    turn: usize,
) -> Option<&'a NodeInfo> {
    match strategy {
        RouteStrategy::Hash => nodes.iter().max_by_key(|n| score(&n.name, user)),
        RouteStrategy::RoundRobin => nodes.get(turn % nodes.len().max(1)),
        RouteStrategy::LeastConnections => nodes.iter().min_by_key(|n| n.connections),
    }
}

/// Rendezvous hashing: each (node, user) pair gets a score and the user goes
/// to the node scoring highest, so removing a node moves only its users.
/// SHA-256 rather than std's hasher: every node, of any build, must agree.
fn score(node: &str, user: &str) -> u64 {
    let digest = Sha256::new()
        .chain_update(node.as_bytes())
        .chain_update([0])
        .chain_update(user.as_bytes())
        .finalize();
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

#[utoipa::path(post, path = "/route", tag = "broker", request_body = RouteRequest, servers((url = "{broker}", description = "the broker (its own port)", variables(("broker" = (default = "http://127.0.0.1:8083", description = "the broker's address"))))),
    responses((status = 200, description = "`code` 0 where to connect, 13 bad or expired IM token", body = ApiResponse<RouteResult>)))]
pub async fn route(
    State(broker): State<Broker>,
    urls: PublicUrls,
    ApiJson(req): ApiJson<RouteRequest>,
) -> ApiResult<Reply<RouteResult>> {
    let claims = broker
        .im_tokens
        .verify(&req.token)
        .map_err(|e| ApiError::BadImToken(e.to_string()))?;
    if let Some(user) = req
        .user_id
        .as_deref()
        .filter(|u| !u.is_empty() && *u != claims.sub)
    {
        return Err(ApiError::BadImToken(format!(
            "the token belongs to {:?}, not {user:?}",
            claims.sub
        )));
    }
    let mut node = broker.options.routes.route(&claims.sub);
    if let Some(port) = super::faults::dead_route(&broker, &claims.sub) {
        node.port = port;
    }
    Ok(Reply::ok(RouteResult {
        host: node.host_for(&urls),
        port: node.port,
        ws_url: node.ws_url(&urls),
        node: node.name.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(names: &[&str]) -> Vec<NodeInfo> {
        names
            .iter()
            .enumerate()
            .map(|(i, name)| NodeInfo {
                name: name.to_string(),
                instance: "i".into(),
                host: None,
                broker_port: 9000 + i as u16,
                app_url: String::new(),
                connections: 10 - i,
                leaving: false,
            })
            .collect()
    }

    fn users() -> Vec<String> {
        (0..3000).map(|i| format!("user{i}")).collect()
    }

    #[test]
    fn hashing_spreads_users_and_a_node_leaving_moves_only_its_users() {
        let three = nodes(&["n1", "n2", "n3"]);
        let two = nodes(&["n1", "n3"]);
        let on = |nodes: &[NodeInfo], u: &str| {
            pick(RouteStrategy::Hash, u, nodes, 0).unwrap().name.clone()
        };
        let mut per_node = std::collections::HashMap::<String, usize>::new();
        for u in users() {
            let before = on(&three, &u);
            *per_node.entry(before.clone()).or_default() += 1;
            let after = on(&two, &u);
            if before != "n2" {
                assert_eq!(before, after, "{u} moved although its node stayed");
            }
            // Stable: the same answer every time.
            assert_eq!(on(&three, &u), before);
        }
        // Roughly a third each (3000 users: far from the bounds by chance).
        for n in ["n1", "n2", "n3"] {
            let got = per_node[n];
            assert!((800..1200).contains(&got), "{n} got {got} of 3000");
        }
    }

    #[test]
    fn round_robin_takes_turns_and_least_connections_takes_the_emptiest() {
        let three = nodes(&["n1", "n2", "n3"]);
        let picked: Vec<&str> = (0..6)
            .map(|t| {
                pick(RouteStrategy::RoundRobin, "u", &three, t)
                    .unwrap()
                    .name
                    .as_str()
            })
            .collect();
        assert_eq!(picked, ["n1", "n2", "n3", "n1", "n2", "n3"]);
        // n3 has 8 connections, n1 10.
        let least = pick(RouteStrategy::LeastConnections, "u", &three, 0).unwrap();
        assert_eq!(least.name, "n3");
        assert!(pick(RouteStrategy::Hash, "u", &[], 0).is_none());
    }
}
