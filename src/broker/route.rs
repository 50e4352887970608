//! `/route`: verifies the IM token and says which broker node to connect to.

use axum::extract::State;

use super::Broker;
use crate::http::{ApiError, ApiJson, ApiResult, PublicUrls, Reply};
use crate::wire::http::ApiResponse;
use crate::wire::ws::{RouteRequest, RouteResult};

/// A broker node clients can connect to.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    /// Its own host, or `None` for this process's broker, which clients
    /// reach by the host they reached us by.
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

/// Picks the node for a user. One node today; round-robin or hash-by-user
/// strategies slot in here when there are several.
pub trait RouteStrategy: Send + Sync {
    fn route(&self, user_id: &str) -> &Node;
}

pub struct SingleNode(pub Node);

impl RouteStrategy for SingleNode {
    fn route(&self, _user_id: &str) -> &Node {
        &self.0
    }
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
    let node = broker.options.routes.route(&claims.sub);
    Ok(Reply::ok(RouteResult {
        host: node.host_for(&urls),
        port: node.port,
        ws_url: node.ws_url(&urls),
        node: node.name.clone(),
    }))
}
