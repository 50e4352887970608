//! A small client of the broker protocol: connect, request/reply by `id`,
//! and pushes kept in order. The CLI and the tests use it.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async_with_config};

use crate::wire::ws::{
    Ack, ConnectReq, Connected, Content, ConvType, Conversation, Incoming, Reply, Request, SendReq,
};

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("cannot connect to the broker at {url}: {source}")]
    Connect {
        url: String,
        source: tokio_tungstenite::tungstenite::Error,
    },
    #[error("the broker refused: code {code}: {message}")]
    Refused { code: i64, message: String },
    #[error("the connection closed{}", .reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Closed {
        code: Option<u16>,
        reason: Option<String>,
    },
    #[error("no answer from the broker within {0:?}")]
    Timeout(Duration),
    #[error("WebSocket error: {0}")]
    Socket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("unexpected frame from the broker: {0}")]
    Protocol(String),
}

pub type Result<T, E = ChatError> = std::result::Result<T, E>;

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a client WebSocket. tungstenite zero-fills its whole read buffer
/// (128 KiB by default) before every read; at bench rates that memset was a
/// tenth of the load generator's CPU, so the buffer is small (it still grows
/// for large frames).
pub async fn open_socket(ws_url: &str) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    let config = WebSocketConfig::default().read_buffer_size(8 * 1024);
    let (ws, _) = connect_async_with_config(ws_url, Some(config), true).await?;
    Ok(ws)
}

/// Nesting a client keeps when it reads a frame; anything deeper becomes
/// [`TOO_DEEP`]. serde_json refuses more than 128 levels outright, so one
/// stored message nested that deep would otherwise make every frame that
/// carries it (a `sync` page) unreadable, and the client with it.
pub const MAX_FRAME_DEPTH: usize = 64;
pub use crate::wire::json::TOO_DEEP;

/// Parses a frame from the broker, cutting values nested deeper than
/// [`MAX_FRAME_DEPTH`] (they are skipped without recursion, not built).
pub fn parse_frame(text: &str) -> serde_json::Result<Value> {
    let (v, cut) = crate::wire::json::parse_capped(text, MAX_FRAME_DEPTH)?;
    if cut {
        tracing::warn!(
            "a frame from the broker nests deeper than {MAX_FRAME_DEPTH} levels; the deeper part is shown as {TOO_DEEP:?}"
        );
    }
    Ok(v)
}

pub struct ChatConn {
    ws: Socket,
    next_id: u64,
    pushes: VecDeque<Value>,
    timeout: Duration,
}

impl ChatConn {
    /// Opens the WebSocket without sending anything.
    pub async fn open(ws_url: &str) -> Result<Self> {
        let ws = open_socket(ws_url)
            .await
            .map_err(|source| ChatError::Connect {
                url: ws_url.into(),
                source,
            })?;
        Ok(Self {
            ws,
            next_id: 0,
            pushes: VecDeque::new(),
            timeout: Duration::from_secs(10),
        })
    }

    /// Opens the WebSocket and sends `connect`.
    pub async fn connect(
        ws_url: &str,
        token: &str,
        client_id: &str,
        platform: i32,
    ) -> Result<(Self, Connected)> {
        let mut conn = Self::open(ws_url).await?;
        let connect = Request::Connect(ConnectReq {
            token: Some(token.into()),
            client_id: Some(client_id.into()),
            platform: Some(platform),
        });
        match conn.call(&connect).await? {
            Reply::Connected {
                user_id,
                head,
                server_time,
                node,
            } => {
                let connected = Connected {
                    id: Some(conn.next_id),
                    op: "connected".into(),
                    user_id,
                    head,
                    server_time,
                    node,
                };
                Ok((conn, connected))
            }
            other => Err(unexpected("connected", &other)),
        }
    }

    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Sends a raw text frame.
    pub async fn send_raw(&mut self, text: &str) -> Result<()> {
        self.ws.send(Message::text(text)).await?;
        Ok(())
    }

    /// Sends `request` with a fresh `id` and returns the reply with that id;
    /// an `error` reply becomes `ChatError::Refused`. Pushes that arrive
    /// meanwhile are kept for `next_push`.
    pub async fn call(&mut self, request: &Request) -> Result<Reply> {
        self.next_id += 1;
        let id = self.next_id;
        self.send_raw(&request.frame(Some(id))).await?;
        let frame = self.reply_to(id).await?;
        match Incoming::read(frame) {
            Ok(Incoming::Reply(_, Reply::Error { code, message })) => Err(ChatError::Refused {
                code: code.into(),
                message,
            }),
            Ok(Incoming::Reply(_, reply)) => Ok(reply),
            Ok(Incoming::Push(_)) => unreachable!("a frame with an id is a reply"),
            Err(e) => Err(ChatError::Protocol(format!(
                "bad {} reply: {e}",
                request.op()
            ))),
        }
    }

    /// Sends `request` without an id: no reply is asked for (`recv`, `typing`).
    pub async fn tell(&mut self, request: &Request) -> Result<()> {
        self.send_raw(&request.frame(None)).await
    }

    /// Sends a frame without an id as it is, for frames a [`Request`] cannot
    /// express (the tests' malformed ones).
    pub async fn notify(&mut self, frame: Value) -> Result<()> {
        self.send_raw(&frame.to_string()).await
    }

    /// [`ChatConn::call`] for a frame given as JSON, answered as JSON: for
    /// frames a [`Request`] cannot express (the tests' malformed ones).
    pub async fn request(&mut self, mut frame: Value) -> Result<Value> {
        let reply = self.request_raw(&mut frame).await?;
        if reply["op"] == "error" {
            return Err(ChatError::Refused {
                code: reply["code"].as_i64().unwrap_or_default(),
                message: reply["message"].as_str().unwrap_or_default().into(),
            });
        }
        Ok(reply)
    }

    /// Like `request`, but returns an `error` reply as it is.
    pub async fn request_raw(&mut self, frame: &mut Value) -> Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        frame["id"] = json!(id);
        self.send_raw(&frame.to_string()).await?;
        self.reply_to(id).await
    }

    /// The frame answering request `id`; the frames before it are kept for `next_push`.
    async fn reply_to(&mut self, id: u64) -> Result<Value> {
        loop {
            let v = self.read_frame().await?;
            if v.get("id").and_then(Value::as_u64) == Some(id) {
                return Ok(v);
            }
            self.pushes.push_back(v);
        }
    }

    /// The next frame that is not a reply to a request of ours (a push, or
    /// an error without an id).
    pub async fn next_push(&mut self) -> Result<Value> {
        match self.pushes.pop_front() {
            Some(v) => Ok(v),
            None => self.read_frame().await,
        }
    }

    /// The next push, waiting as long as it takes (the server's pings keep
    /// an idle connection open).
    pub async fn wait_push(&mut self) -> Result<Value> {
        match self.pushes.pop_front() {
            Some(v) => Ok(v),
            None => self.read_frame_within(None).await,
        }
    }

    /// The next push with this `op`, dropping others.
    pub async fn next_op(&mut self, op: &str) -> Result<Value> {
        loop {
            let v = self.next_push().await?;
            if v["op"] == op {
                return Ok(v);
            }
        }
    }

    /// Sends a text message; returns the ack.
    pub async fn send_text(
        &mut self,
        conv_type: &str,
        target: &str,
        text: &str,
        client_msg_id: Option<&str>,
    ) -> Result<Ack> {
        let kind: ConvType = serde_json::from_value(json!(conv_type))
            .map_err(|e| ChatError::Protocol(format!("conversation type {conv_type:?}: {e}")))?;
        self.send(SendReq {
            conv: Conversation {
                kind,
                target: target.into(),
            },
            content: Content::Text { text: text.into() },
            client_msg_id: client_msg_id.map(Into::into),
        })
        .await
    }

    /// Sends a message; returns the ack.
    pub async fn send(&mut self, send: SendReq) -> Result<Ack> {
        match self.call(&Request::Send(send)).await? {
            Reply::Ack {
                code,
                msg_id,
                server_time,
                seq,
                duplicate,
            } => Ok(Ack {
                id: Some(self.next_id),
                op: "ack".into(),
                code,
                msg_id,
                server_time,
                seq,
                duplicate,
            }),
            other => Err(unexpected("ack", &other)),
        }
    }

    async fn read_frame(&mut self) -> Result<Value> {
        self.read_frame_within(Some(self.timeout)).await
    }

    /// Reads the next text frame; cancel-safe (nothing is consumed unless returned).
    async fn read_frame_within(&mut self, timeout: Option<Duration>) -> Result<Value> {
        loop {
            let next = match timeout {
                Some(t) => tokio::time::timeout(t, self.ws.next())
                    .await
                    .map_err(|_| ChatError::Timeout(t))?,
                None => self.ws.next().await,
            };
            match next {
                Some(Ok(Message::Text(t))) => {
                    return parse_frame(t.as_str())
                        .map_err(|e| ChatError::Protocol(format!("{e}: {t}")));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(ChatError::Closed {
                        code: frame.as_ref().map(|f| f.code.into()),
                        reason: frame.map(|f| f.reason.to_string()),
                    });
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
                None => {
                    return Err(ChatError::Closed {
                        code: None,
                        reason: None,
                    });
                }
            }
        }
    }

    /// Closes the connection politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// A reply of the wrong kind: the broker and this client disagree.
pub fn unexpected(wanted: &str, got: &Reply) -> ChatError {
    ChatError::Protocol(format!("expected {wanted}, got {got:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_of_any_depth_parse_with_the_deep_part_cut() {
        let deep = format!("{}1{}", "[".repeat(500), "]".repeat(500));
        let text = format!(
            r#"{{"op":"msg","seq":1,"message":{{"content":{{"type":"custom","data":{deep}}}}}}}"#
        );
        assert!(serde_json::from_str::<Value>(&text).is_err());
        let v = parse_frame(&text).unwrap();
        assert_eq!(v["seq"], 1);
        assert_eq!(v["message"]["content"]["type"], "custom");
        let mut d = &v["message"]["content"]["data"];
        let mut levels = 0;
        while let Some(inner) = d.get(0) {
            d = inner;
            levels += 1;
        }
        assert_eq!(d, TOO_DEEP);
        assert!(levels > 50, "{levels}");
        // Ordinary frames come out as serde_json reads them.
        let plain = r#"{"a":[1,-2,3.5,"x",null,true,{"b":{}}]}"#;
        assert_eq!(
            parse_frame(plain).unwrap(),
            serde_json::from_str::<Value>(plain).unwrap()
        );
        assert!(parse_frame("{} x").is_err());
    }
}
