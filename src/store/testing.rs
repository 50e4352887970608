//! What the store's unit tests share: a seeded in-memory store and a message.

use serde_json::json;

use super::{Fixtures, Location, NewMessage, Store};
use crate::wire::ws::{ConvType, Conversation};

/// A store with the built-in fixtures (alice, bob, carol, robot): SQLite in
/// memory, or a new PostgreSQL database in the suite's PostgreSQL pass.
pub async fn store() -> Store {
    let s = empty_store().await;
    s.seed_once(&Fixtures::builtin()).await.unwrap();
    s
}

/// A store as migrations leave it, on the pass's backend (see [`store`]).
pub async fn empty_store() -> Store {
    let location = match crate::pg_local::test_database() {
        Some(url) => Location::Postgres(url),
        None => Location::Memory,
    };
    Store::open(&location).await.unwrap()
}

/// A seeded in-memory SQLite store, for tests of SQLite's own behaviour.
pub async fn sqlite_store() -> Store {
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
