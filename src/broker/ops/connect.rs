//! The connection's own ops: `connect`, which authenticates it and
//! registers it with the hub, and `ping`.

use std::time::Duration;

use tokio::time::Instant;
use tracing::info;

use super::presence::TypingLimit;
use super::{Ctx, Handled, Refusal, db_error, refuse};
use crate::broker::hub::ConnHandle;
use crate::broker::{Broker, presence};
use crate::http::advertise::PublicUrls;
use crate::token::TokenError;
use crate::wire::ids::now_ms;
use crate::wire::limits::{MAX_CLIENT_ID, check_platform, check_text};
use crate::wire::ws::{ConnectReq, Reply, Request, close, code};
use serde_json::Value;

/// Who a connection is, once `connect` succeeded.
pub struct Identity {
    pub user_id: String,
    pub client_id: String,
    pub platform: i32,
    /// When the IM token expires: the connection closes then.
    pub expires: Instant,
    /// URLs on the host this connection reached us by (portraits).
    pub urls: PublicUrls,
    /// How often this connection may relay `typing`.
    pub typing: TypingLimit,
    /// Keeps this node subscribed to the user's pushes from other nodes.
    pub _relayed: Option<crate::cluster::UserHold>,
}

/// What the WebSocket upgrade knew before `connect`.
pub struct Upgrade<'a> {
    /// The IM token from `?token=`, for browsers that cannot set headers.
    pub token: Option<&'a str>,
    /// The host the client reached us by.
    pub urls: &'a PublicUrls,
}

/// `connect` with the frame's `body`, decoded first (a bad body is a
/// `bad connect frame` refusal).
pub async fn connect_frame(
    broker: &Broker,
    conn: &ConnHandle,
    id: Option<u64>,
    upgrade: &Upgrade<'_>,
    body: Value,
) -> Result<Identity, Refusal> {
    match super::request("connect", body)? {
        Request::Connect(req) => connect(broker, conn, id, upgrade, req).await,
        other => unreachable!("a connect frame decodes as connect, not {}", other.op()),
    }
}

/// Authenticates the connection, registers it and answers `connected`.
pub async fn connect(
    broker: &Broker,
    conn: &ConnHandle,
    id: Option<u64>,
    upgrade: &Upgrade<'_>,
    req: ConnectReq,
) -> Result<Identity, Refusal> {
    let token = req.token.as_deref().or(upgrade.token);
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return refuse(
            code::TOKEN_INVALID,
            "no token: put the IM token in the connect frame or in ?token= on the URL",
        );
    };
    let claims = broker.im_tokens.verify(token).map_err(|e| match e {
        TokenError::Expired => Refusal(code::TOKEN_EXPIRED, e.to_string()),
        TokenError::Invalid(_) => Refusal(code::TOKEN_INVALID, e.to_string()),
    })?;
    let client_id = match req.client_id.filter(|c| !c.is_empty()) {
        Some(c) => {
            check_text("clientId", &c, MAX_CLIENT_ID).map_err(|e| Refusal(code::BAD_REQUEST, e))?;
            c
        }
        None => claims.cid,
    };
    let platform = req.platform.unwrap_or(claims.plt);
    check_platform(platform).map_err(|e| Refusal(code::BAD_REQUEST, e))?;
    if let Some(why) =
        crate::broker::faults::refuse_connect(broker, &claims.sub, &client_id, platform)
    {
        return Err(Refusal(code::UNAVAILABLE, why));
    }
    let expires_in = Duration::from_millis((claims.exp * 1000 - now_ms()).max(0) as u64);
    let mut who = Identity {
        client_id,
        platform,
        user_id: claims.sub,
        expires: Instant::now() + expires_in,
        urls: upgrade.urls.clone(),
        typing: TypingLimit::default(),
        _relayed: None,
    };
    // Register before checking the ban and reading the head: a ban from now
    // on finds this connection, a message committed from now on is pushed,
    // anything earlier is covered by the head.
    let changed = broker
        .hub
        .register(&who.user_id, conn.clone(), &who.client_id, who.platform)
        .map_err(|too_many| {
            Refusal(
                code::TOO_MANY_CONNECTIONS,
                format!(
                    "user {:?} has {} connections already (--max-connections-per-user); close one first",
                    who.user_id, too_many.0
                ),
            )
        })?;
    // Likewise pushes committed on other nodes from now on reach this one;
    // a node that cannot promise that sends the client elsewhere.
    if let Some(cluster) = &broker.options.cluster {
        match cluster.hold(&who.user_id).await {
            Ok(hold) => who._relayed = Some(hold),
            Err(e) => {
                broker.hub.unregister(&who.user_id, conn.id);
                return refuse(
                    code::UNAVAILABLE,
                    format!(
                        "this node cannot reach the rest of the cluster ({e}); reconnect through /route"
                    ),
                );
            }
        }
    }
    let checked = async {
        match broker
            .store
            .user_status(&who.user_id)
            .await
            .map_err(db_error)?
        {
            None => refuse(
                code::TOKEN_INVALID,
                format!("user {:?} no longer exists", who.user_id),
            ),
            Some((_, true)) => refuse(
                code::FORBIDDEN,
                format!("user {:?} is banned by an administrator", who.user_id),
            ),
            Some((_, false)) => broker
                .store
                .inbox_head(&who.user_id)
                .await
                .map_err(db_error),
        }
    };
    let head = match checked.await {
        Ok(head) => head,
        Err(refusal) => {
            broker.hub.unregister(&who.user_id, conn.id);
            return Err(refusal);
        }
    };
    if changed.is_some() {
        presence::announce(broker, &who.user_id, conn.id).await;
    }
    info!(user = ?who.user_id, client = ?who.client_id, platform = who.platform, head, "connected");
    let connected = Reply::Connected {
        user_id: who.user_id.clone(),
        head,
        server_time: now_ms(),
        node: broker.options.node.clone(),
    };
    conn.send(connected.frame(id).into());
    Ok(who)
}

/// The close a refused `connect` ends the connection with.
pub fn closing(refusal: &Refusal) -> (u16, &'static str) {
    match refusal.0 {
        code::FORBIDDEN => (close::BANNED, "banned"),
        code::TOO_MANY_CONNECTIONS => (close::TOO_MANY_CONNECTIONS, "too many connections"),
        code::UNAVAILABLE if refusal.1.starts_with("injected") => (
            close::TRY_AGAIN_LATER,
            "injected: ws.refuse-connect (imctl chaos)",
        ),
        code::UNAVAILABLE => (close::TRY_AGAIN_LATER, "unavailable for now: reconnect"),
        code::BAD_REQUEST => (close::AUTH_FAILED, "bad connect frame"),
        _ => (close::AUTH_FAILED, "authentication failed"),
    }
}

pub fn ping(cx: &Ctx<'_>) -> Handled {
    cx.reply(Reply::Pong {
        server_time: now_ms(),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::ops::testkit::{Rig, drain};

    #[tokio::test]
    async fn a_valid_token_connects_and_registers_the_connection() {
        let rig = Rig::new().await;
        let (conn, mut queue) = rig.broker.hub.handle();
        let token = rig.broker.im_tokens.issue("alice", "phone-1", 1);
        let urls = rig.broker.options.advertise.default_urls();
        let upgrade = Upgrade {
            token: None,
            urls: &urls,
        };
        let body = serde_json::json!({"op": "connect", "token": token, "clientId": "web-9"});
        let who = connect_frame(&rig.broker, &conn, Some(1), &upgrade, body)
            .await
            .unwrap();
        assert_eq!(
            (who.user_id.as_str(), who.client_id.as_str()),
            ("alice", "web-9")
        );
        assert!(rig.broker.hub.is_online("alice"));
        let frames = drain(&mut queue);
        assert_eq!(frames.len(), 1);
        assert_eq!(
            (
                &frames[0]["op"],
                &frames[0]["id"],
                &frames[0]["userId"],
                &frames[0]["head"]
            ),
            (&"connected".into(), &1.into(), &"alice".into(), &0.into())
        );
        rig.stop().await;
    }

    #[tokio::test]
    async fn a_refused_connect_leaves_nothing_registered_and_says_why() {
        let rig = Rig::new().await;
        let urls = rig.broker.options.advertise.default_urls();
        let (conn, mut queue) = rig.broker.hub.handle();
        let upgrade = Upgrade {
            token: Some(""),
            urls: &urls,
        };
        let refused = |body| connect_frame(&rig.broker, &conn, None, &upgrade, body);
        let Err(r) = refused(serde_json::json!({"op": "connect"})).await else {
            panic!("connected without a token");
        };
        assert_eq!(r.0, code::TOKEN_INVALID);
        assert!(r.1.starts_with("no token: "), "{}", r.1);
        assert_eq!(closing(&r), (close::AUTH_FAILED, "authentication failed"));
        let Err(r) = refused(serde_json::json!({"op": "connect", "token": 5})).await else {
            panic!("connected with a number for a token");
        };
        assert_eq!(r.0, code::BAD_REQUEST);
        assert!(r.1.starts_with("bad connect frame: "), "{}", r.1);
        assert_eq!(closing(&r), (close::AUTH_FAILED, "bad connect frame"));
        // The user exists no more: registered, checked, unregistered again.
        let token = rig.broker.im_tokens.issue("nobody", "c", 1);
        let Err(r) = refused(serde_json::json!({"op": "connect", "token": token})).await else {
            panic!("connected as a user that does not exist");
        };
        assert_eq!(
            (r.0, r.1.as_str()),
            (code::TOKEN_INVALID, "user \"nobody\" no longer exists")
        );
        assert!(!rig.broker.hub.is_online("nobody"));
        assert!(
            drain(&mut queue).is_empty(),
            "refusals are sent by the caller"
        );
        rig.stop().await;
    }
}
