//! What the store's unit tests share: a seeded in-memory store and a message.

use serde_json::json;

use super::{Fixtures, Location, NewMessage, Store};
use crate::wire::ws::{ConvType, Conversation};

/// An in-memory store with the built-in fixtures (alice, bob, carol, robot).
pub async fn store() -> Store {
    let s = Store::open(&Location::Memory).await.unwrap();
    s.seed_once(&Fixtures::builtin()).await.unwrap();
    s
}

/// A 1:1 text from `from` to `to`, with an optional clientMsgId.
pub fn text(from: &str, to: &str, cmid: Option<&str>) -> NewMessage {
    NewMessage {
        sender: from.into(),
        conv: Conversation {
            kind: ConvType::Single,
            target: to.into(),
        },
        content: json!({"type":"text","text":"hi"}),
        client_msg_id: cmid.map(Into::into),
        recipients: None,
    }
}
