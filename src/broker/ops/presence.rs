//! Who is around: `presence` (who of my contacts is online, on which
//! platforms) and `typing` (relayed, never stored). The announcements a
//! connection's coming and going makes are `broker/presence.rs`.

use crate::wire::ws::Push;
use crate::wire::ws::{Reply, UserPresence};
use axum::extract::ws::Utf8Bytes;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::{Ctx, Handled, conv_for, db_error, only_friends, participants, refuse};
use crate::wire::ws::{ConvReq, ConvType, PresenceReq, code};

/// At most one `typing` per conversation per connection in this interval…
const TYPING_INTERVAL: Duration = Duration::from_secs(2);
/// …and in at most this many conversations per interval.
const TYPING_CONVERSATIONS: usize = 8;

/// When a connection last relayed `typing`, per conversation, for the
/// conversations within the last [`TYPING_INTERVAL`].
#[derive(Default)]
pub struct TypingLimit(Mutex<HashMap<(ConvType, String), Instant>>);

impl TypingLimit {
    /// Whether a `typing` in `conv` is over the limit now.
    fn limited(&self, conv: &(ConvType, String)) -> bool {
        let mut last = self.0.lock().unwrap();
        last.retain(|_, t| t.elapsed() < TYPING_INTERVAL);
        last.contains_key(conv) || last.len() >= TYPING_CONVERSATIONS
    }

    /// Counts a `typing` in `conv` as relayed now; false when the limit
    /// filled up meanwhile.
    fn record(&self, conv: (ConvType, String)) -> bool {
        let mut last = self.0.lock().unwrap();
        if last.len() >= TYPING_CONVERSATIONS {
            return false;
        }
        last.insert(conv, Instant::now());
        true
    }
}

pub async fn presence(cx: &Ctx<'_>, req: PresenceReq) -> Handled {
    let store = &cx.broker.store;
    let users = match req.users {
        Some(u) if u.len() > 1000 => {
            return refuse(code::BAD_REQUEST, "ask for at most 1000 users at once");
        }
        Some(u) => u,
        None => store
            .friends_of(cx.me())
            .await
            .map_err(db_error)?
            .into_iter()
            .map(|u| u.id)
            .collect(),
    };
    // Only people you share something with: yourself, friends, group co-members.
    let contacts = store.contacts_of(cx.me()).await.map_err(db_error)?;
    let (visible, hidden): (Vec<String>, Vec<String>) = users
        .into_iter()
        .partition(|u| *u == cx.me() || contacts.contains(u));
    let users = visible
        .into_iter()
        .map(|user_id| {
            let platforms = cx.broker.hub.platforms_of(&user_id);
            UserPresence {
                online: !platforms.is_empty(),
                user_id,
                platforms,
            }
        })
        .collect();
    cx.reply(Reply::Presence { users, hidden });
    Ok(())
}

pub async fn typing(cx: &Ctx<'_>, req: ConvReq) -> Handled {
    let key = (req.conv.kind, req.conv.target.clone());
    // Rate-limited typing is dropped (never stored), before any database work.
    if cx.who.typing.limited(&key) {
        return Ok(());
    }
    let others = participants(cx, &req.conv).await?;
    if req.conv.kind == ConvType::Single {
        only_friends(cx, &others, "show typing to").await?;
    }
    if !cx.who.typing.record(key) {
        return Ok(());
    }
    let push: Utf8Bytes = Push::Typing {
        conv: conv_for(&req.conv, cx.me()),
        from: cx.me().to_owned(),
    }
    .frame()
    .into();
    for other in others {
        cx.broker.hub.deliver(&other, &push, None);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::broker::ops::testkit::{Rig, drain, run};

    #[tokio::test]
    async fn presence_shows_contacts_and_hides_strangers() {
        let rig = Rig::new().await;
        let (mut alice, mut bob) = (rig.connect("alice").await, rig.connect("bob").await);
        rig.befriend(&mut alice, &mut bob).await;
        run(
            &alice.cx(Some(4)),
            json!({"op": "presence", "users": ["bob", "carol", "alice"]}),
        )
        .await
        .unwrap();
        let reply = drain(&mut alice.queue).pop().unwrap();
        assert_eq!(reply["id"], 4);
        assert_eq!(reply["hidden"], json!(["carol"]));
        let online: Vec<_> = reply["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| (u["userId"].clone(), u["online"].clone()))
            .collect();
        assert_eq!(
            online,
            [(json!("bob"), json!(true)), (json!("alice"), json!(true))]
        );
        let r = run(
            &alice.cx(None),
            json!({"op": "presence", "users": vec!["x"; 1001]}),
        )
        .await
        .unwrap_err();
        assert_eq!(
            (r.0, r.1.as_str()),
            (code::BAD_REQUEST, "ask for at most 1000 users at once")
        );
        rig.stop().await;
    }

    #[tokio::test]
    async fn typing_reaches_the_other_side_once_per_interval() {
        let rig = Rig::new().await;
        let (alice, mut bob) = (rig.connect("alice").await, rig.connect("bob").await);
        drain(&mut bob.queue);
        let frame = json!({"op": "typing", "conv": {"type": "single", "target": "bob"}});
        run(&alice.cx(None), frame.clone()).await.unwrap();
        run(&alice.cx(None), frame).await.unwrap();
        let pushes = drain(&mut bob.queue);
        assert_eq!(
            pushes.len(),
            1,
            "the second is within the interval: {pushes:?}"
        );
        assert_eq!(
            pushes[0],
            json!({"op": "typing", "conv": {"type": "single", "target": "alice"}, "from": "alice"})
        );
        rig.stop().await;
    }

    #[test]
    fn typing_is_limited_per_conversation_and_in_how_many() {
        let limit = TypingLimit::default();
        let conv = |n: usize| (ConvType::Single, format!("u{n}"));
        for n in 0..TYPING_CONVERSATIONS {
            assert!(!limit.limited(&conv(n)));
            assert!(limit.record(conv(n)));
        }
        assert!(limit.limited(&conv(0)), "again in the same conversation");
        assert!(limit.limited(&conv(99)), "one conversation too many");
        assert!(!limit.record(conv(99)));
    }
}
