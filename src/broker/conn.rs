//! One WebSocket connection: a single task that reads client frames, writes
//! queued server frames, pings, and enforces the connect deadline, the idle
//! timeout, the token's expiry and the write timeout. Each frame's op is
//! dispatched to its handler in `ops/`.

use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use tokio::time::Instant;
use tracing::{info, warn};

use super::Broker;
use super::faults;
use super::hub::{ConnHandle, RESET};
use super::ops::connect::{self, Upgrade};
use super::ops::{self, Ctx, Header, Identity, Refusal};
use super::presence::announce;
use super::socket::{TOO_SLOW, Wrote, bounded, close_bounded, read_failed, write_all};
use super::writer::frame;
use crate::http::advertise::PublicUrls;
use crate::wire::ws::{ErrorFrame, close, code};

/// What to do after handling a frame.
enum Next {
    Continue,
    Close(u16, &'static str),
}

pub async fn run(
    mut socket: WebSocket,
    broker: Broker,
    url_token: Option<String>,
    urls: PublicUrls,
) {
    let (handle, mut queue) = broker.hub.handle();
    let options = &broker.options;
    let mut identity: Option<Identity> = None;
    let upgrade = Upgrade {
        token: url_token.as_deref(),
        urls: &urls,
    };
    let idle = options.idle_timeout;
    let mut last_heard = Instant::now();
    // A zero period would panic; `--idle-timeout 0s` pings as often as it may.
    let period = (idle / 3).max(Duration::from_millis(10));
    let mut ping = tokio::time::interval_at(Instant::now() + period, period);
    // Before `connect`: the connect deadline; after: the token's expiry.
    let deadline = tokio::time::sleep(options.connect_timeout);
    tokio::pin!(deadline);
    // A frame taken from the queue that the socket has not accepted yet.
    let mut carry: Option<Utf8Bytes> = None;
    let shutdown = broker.shutdown.clone();

    let closing = loop {
        let wrote = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break Some((close::GOING_AWAY, "the server is shutting down")),
            _ = handle.kick.cancelled() => break match handle.close_reason() {
                (RESET, _) => None,
                why => Some(why),
            },
            _ = handle.frozen.notified() => {
                // An injected `ws.freeze`: neither read nor write meanwhile.
                let how_long = handle.take_freeze().unwrap_or_default();
                let write = write_all(&mut socket, &mut carry, &mut queue);
                match bounded(write, options.write_timeout, &handle, &shutdown).await {
                    Wrote::Done => {
                        tokio::select! {
                            _ = tokio::time::sleep(how_long) => {}
                            _ = shutdown.cancelled() => {}
                            _ = handle.kick.cancelled() => {}
                        }
                        // The freeze is ours, not the client's silence.
                        last_heard = Instant::now();
                        ping.reset();
                        Wrote::Done
                    }
                    other => other,
                }
            }
            _ = &mut deadline => break Some(match identity {
                None => (close::AUTH_FAILED, "no connect frame within --connect-timeout"),
                Some(_) => (close::AUTH_FAILED, "token expired: log in again"),
            }),
            Some(out) = queue.recv() => {
                // Write everything already queued, then flush once.
                carry = Some(out);
                let write = write_all(&mut socket, &mut carry, &mut queue);
                bounded(write, options.write_timeout, &handle, &shutdown).await
            }
            incoming = socket.recv() => {
                last_heard = Instant::now();
                let next = match incoming {
                    Some(Ok(Message::Text(text))) => {
                        let connecting = identity.is_none();
                        // Boxed: the request handlers' state is large and only
                        // needed while a frame is handled, not while idle.
                        let next = Box::pin(on_text(&broker, &handle, &mut identity, &upgrade, &text)).await;
                        // Not on `connect` itself: the client gets `connected`
                        // first (a failed connect is ws.refuse-connect's).
                        if let (false, Some(who)) = (connecting, &identity) {
                            faults::on_frame(&broker, &handle, &who.user_id, &who.client_id, who.platform);
                        }
                        if let (true, Some(who)) = (connecting, &identity) {
                            deadline.as_mut().reset(who.expires);
                        }
                        next
                    }
                    Some(Ok(Message::Binary(_))) => {
                        handle.send(frame(&ErrorFrame::new(None, code::BAD_REQUEST, "binary frames are not supported; send JSON text frames")));
                        Next::Continue
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => Next::Continue,
                    Some(Ok(Message::Close(_))) | None => break None,
                    Some(Err(e)) => {
                        let user = identity.as_ref().map(|who| who.user_id.as_str());
                        break read_failed(&e, user, options.max_frame);
                    }
                };
                if let Next::Close(code, reason) = next {
                    break Some((code, reason));
                }
                Wrote::Done
            }
            _ = ping.tick() => {
                if last_heard.elapsed() >= idle {
                    break Some((close::IDLE, "idle timeout"));
                }
                let write = socket.send(Message::Ping(Default::default()));
                bounded(write, options.write_timeout, &handle, &shutdown).await
            }
        };
        match wrote {
            Wrote::Done | Wrote::Interrupted => {}
            Wrote::Failed => break None,
            Wrote::TooSlow => {
                warn!(conn = handle.id, user = ?identity.as_ref().map(|who| &who.user_id), timeout = ?options.write_timeout, "the client takes no frames; closing with 4009");
                break Some(TOO_SLOW);
            }
        }
    };
    if let Some(who) = &identity {
        // While shutting down everybody goes offline and the database is
        // closing: nobody is left to tell.
        if broker.hub.unregister(&who.user_id, handle.id).is_some() && !shutdown.is_cancelled() {
            announce(&broker, &who.user_id, handle.id).await;
        }
        info!(user = ?who.user_id, client = ?who.client_id, "disconnected");
    }
    // Pushes still held back by an injected delay are lost with the
    // connection: 4009 makes the client sync, unless it may not come back.
    if !matches!(closing, Some((close::BANNED | close::AUTH_FAILED, _))) {
        handle.drop_held();
    }
    if let Some((code, reason)) = closing {
        // Boxed: needed once, at the end, not in every idle connection's task.
        Box::pin(close_bounded(
            socket, &broker, &handle, queue, carry, code, reason,
        ))
        .await;
    }
    // Ends what still serves this connection (pushes held back by a fault).
    handle.kick.cancel();
}

/// Decodes a frame's header and runs its op's handler.
async fn on_text(
    broker: &Broker,
    conn: &ConnHandle,
    identity: &mut Option<Identity>,
    upgrade: &Upgrade<'_>,
    text: &str,
) -> Next {
    let Header { id, op, body } = match ops::header(text) {
        Ok(header) => header,
        Err((id, refusal)) => return refused(conn, id, refusal),
    };
    let Some(who) = identity.as_ref() else {
        if op != "connect" {
            let why = "not connected: the first frame must be {\"op\":\"connect\",\"token\":...}";
            return refused(conn, id, Refusal(code::NOT_CONNECTED, why.into()));
        }
        return match connect::connect_frame(broker, conn, id, upgrade, body).await {
            Ok(who) => {
                *identity = Some(who);
                Next::Continue
            }
            Err(refusal) => {
                let (code, reason) = connect::closing(&refusal);
                refusal.send(conn, id);
                Next::Close(code, reason)
            }
        };
    };
    // Checked before the body, which a second `connect` need not get right.
    if op == "connect" {
        let refusal = Refusal(code::ALREADY_CONNECTED, "already connected".into());
        return refused(conn, id, refusal);
    }
    let cx = Ctx {
        broker,
        conn,
        who,
        id,
    };
    let handled = match ops::request(&op, body) {
        Ok(request) => ops::dispatch(&cx, request).await,
        Err(refusal) => Err(refusal),
    };
    match handled {
        Ok(()) => Next::Continue,
        Err(refusal) => refused(conn, id, refusal),
    }
}

fn refused(conn: &ConnHandle, id: Option<u64>, refusal: Refusal) -> Next {
    refusal.send(conn, id);
    Next::Continue
}
