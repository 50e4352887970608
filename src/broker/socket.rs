//! Bounded I/O on one WebSocket: writing queued frames under
//! `--write-timeout`, the close handshake, and the close code for a failed
//! read. Whatever the client does, none of it waits without a limit.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::Broker;
use super::hub::{ConnHandle, Queue};
use crate::wire::ws::close;

/// A closing connection writes what is queued (at shutdown: also the acks
/// of what the writer still commits) for at most this long, then the close
/// frame for at most [`CLOSE_FRAME`], then reads the client's close for at
/// most [`CLOSE_FRAME`]: 5 s in all, whatever the client does.
const CLOSE_FLUSH: Duration = Duration::from_secs(3);
const CLOSE_FRAME: Duration = Duration::from_secs(1);

pub const TOO_SLOW: (u16, &str) = (close::TOO_SLOW, "too slow reading: reconnect and sync");

/// What became of a bounded write.
pub enum Wrote {
    Done,
    /// The socket failed: the client is gone.
    Failed,
    /// The client did not take the bytes within `--write-timeout`.
    TooSlow,
    /// The connection must close (kicked, shutting down) before it finished.
    Interrupted,
}

/// Runs a write for at most `limit`, cut short when the connection must close.
pub async fn bounded(
    write: impl Future<Output = Result<(), axum::Error>>,
    limit: Duration,
    handle: &ConnHandle,
    shutdown: &CancellationToken,
) -> Wrote {
    tokio::select! {
        biased;
        _ = handle.kick.cancelled() => Wrote::Interrupted,
        _ = shutdown.cancelled() => Wrote::Interrupted,
        written = tokio::time::timeout(limit, write) => match written {
            Ok(Ok(())) => Wrote::Done,
            Ok(Err(e)) => {
                debug!(error = %e, "WebSocket write failed");
                Wrote::Failed
            }
            Err(_) => Wrote::TooSlow,
        },
    }
}

/// Hands `carry`, then up to 64 more queued frames, to the socket and
/// flushes once. Cancel-safe: a frame stays in `carry` until the socket
/// has taken it, and what the socket took stays in its buffer.
pub async fn write_all(
    socket: &mut WebSocket,
    carry: &mut Option<Utf8Bytes>,
    queue: &mut Queue,
) -> Result<(), axum::Error> {
    for _ in 0..65 {
        if carry.is_none() {
            *carry = queue.try_recv();
        }
        if carry.is_none() {
            break;
        }
        std::future::poll_fn(|cx| socket.poll_ready_unpin(cx)).await?;
        if let Some(out) = carry.take() {
            socket.start_send_unpin(Message::Text(out))?;
        }
    }
    socket.flush().await
}

/// Ends a connection within `CLOSE_FLUSH` + 2 × `CLOSE_FRAME`: writes what
/// is queued, then the close frame; a client that takes neither loses the
/// TCP connection instead.
pub async fn close_bounded(
    mut socket: WebSocket,
    broker: &Broker,
    handle: &ConnHandle,
    mut queue: Queue,
    mut carry: Option<Utf8Bytes>,
    code: u16,
    reason: &'static str,
) {
    // A client that is not reading (4009) would only hold us up.
    if code != close::TOO_SLOW && !handle.overflowed() {
        let shutting_down = code == close::GOING_AWAY;
        let flushed = tokio::time::timeout(CLOSE_FLUSH, async {
            if shutting_down {
                // The writer commits what it has queued and acks it: keep
                // writing those acks meanwhile, so none is lost to a full queue.
                let done = broker.writer_done.cancelled();
                tokio::pin!(done);
                loop {
                    tokio::select! {
                        biased;
                        _ = &mut done => break,
                        Some(out) = queue.recv() => {
                            carry = Some(out);
                            write_all(&mut socket, &mut carry, &mut queue).await?;
                        }
                    }
                }
            }
            // Flush what is queued (acks, an auth error) before the close frame.
            loop {
                if carry.is_none() {
                    carry = queue.try_recv();
                }
                if carry.is_none() {
                    return Ok::<_, axum::Error>(());
                }
                write_all(&mut socket, &mut carry, &mut queue).await?;
            }
        })
        .await;
        if !matches!(flushed, Ok(Ok(()))) {
            return;
        }
    }
    // A dropped frame (say an ack, at shutdown) means the client must
    // reconnect and sync, whatever else happened.
    let (code, reason) = if handle.overflowed() {
        TOO_SLOW
    } else {
        (code, reason)
    };
    let close = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    if !matches!(
        tokio::time::timeout(CLOSE_FRAME, socket.send(Message::Close(Some(close)))).await,
        Ok(Ok(()))
    ) {
        return;
    }
    // Finish the closing handshake: read (and drop) what the client had
    // already sent, so the socket is not closed with unread data, which
    // makes TCP reset it and lose the acks and the close frame in flight.
    let _ = tokio::time::timeout(CLOSE_FRAME, async {
        while let Some(Ok(m)) = socket.recv().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// The close for a failed read: 1009 for a frame over `--max-frame`,
/// 1002/1007 for a broken WebSocket protocol, none when the client is gone.
pub fn read_failed(
    e: &axum::Error,
    user: Option<&str>,
    max_frame: usize,
) -> Option<(u16, &'static str)> {
    use tungstenite::error::{CapacityError, Error as WsError};
    let inner = std::error::Error::source(e).and_then(|s| s.downcast_ref::<WsError>());
    let closing = match inner {
        Some(WsError::Capacity(CapacityError::MessageTooLong { .. })) => {
            // Before `connect` anyone can send one: not worth a warning each.
            if user.is_some() {
                warn!(
                    user,
                    max = max_frame,
                    "frame over --max-frame; closing with 1009"
                );
            } else {
                debug!(
                    max = max_frame,
                    "frame over --max-frame before connect; closing with 1009"
                );
            }
            return Some((close::TOO_BIG, "frame too big"));
        }
        Some(WsError::Utf8(_)) => (close::INVALID_PAYLOAD, "text frame is not UTF-8"),
        Some(WsError::Protocol(
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        )) => {
            debug!(user, "the client went away without a close frame");
            return None;
        }
        Some(WsError::Protocol(_) | WsError::Capacity(_)) => {
            (close::PROTOCOL_ERROR, "WebSocket protocol violation")
        }
        _ => {
            debug!(user, error = %e, "WebSocket read failed");
            return None;
        }
    };
    debug!(user, error = %e, code = closing.0, "WebSocket protocol violation; closing");
    Some(closing)
}
