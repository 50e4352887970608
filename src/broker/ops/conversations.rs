//! Conversations: the list (`conversations`), read positions (`read`, with
//! read receipts) and `conversation.mute`.

use crate::wire::ws::Reply;
use crate::wire::ws::{Push, ReceiptKind};
use axum::extract::ws::Utf8Bytes;

use super::{Ctx, Handled, Refusal, conv_for, db_error, participants, refuse};
use crate::store::{msg_id, parse_msg_id};
use crate::wire::limits::PAGE_BYTES;
use crate::wire::ws::{ConversationsReq, MuteReq, ReadReq, code, conversations_frame};

pub async fn conversations(cx: &Ctx<'_>, req: ConversationsReq) -> Handled {
    let limit = req.limit.unwrap_or(100).clamp(1, 1000);
    let before = match req.before.as_deref() {
        None => None,
        Some(m) => Some(parse_msg_id(m).ok_or_else(|| {
            Refusal(
                code::BAD_REQUEST,
                format!("before {m:?} is not a msgId like \"m42\""),
            )
        })?),
    };
    let list = cx
        .broker
        .store
        .conversations_page(cx.me(), limit, before, PAGE_BYTES)
        .await
        .map_err(db_error)?;
    cx.conn.send(conversations_frame(cx.id, &list).into());
    Ok(())
}

/// Marks a conversation read up to a message; tells the other participants
/// and my other devices.
pub async fn read(cx: &Ctx<'_>, req: ReadReq) -> Handled {
    let Some(up_to) = parse_msg_id(&req.up_to) else {
        return refuse(
            code::BAD_REQUEST,
            format!("upTo {:?} is not a msgId like \"m42\"", req.up_to),
        );
    };
    let (broker, me) = (cx.broker, cx.me());
    let others = participants(cx, &req.conv).await?;
    if !broker
        .store
        .message_in_conv(me, &req.conv, up_to)
        .await
        .map_err(db_error)?
    {
        return refuse(
            code::NOT_FOUND,
            format!("no message {} in this conversation", req.up_to),
        );
    }
    let now = broker
        .store
        .mark_read(me, &req.conv, up_to)
        .await
        .map_err(db_error)?;
    let read = |conv| Push::Receipt {
        kind: ReceiptKind::Read,
        conv,
        by: me.to_owned(),
        up_to: msg_id(now),
    };
    let theirs: Utf8Bytes = read(conv_for(&req.conv, me)).frame().into();
    for other in &others {
        broker.hub.deliver(other, &theirs, None);
    }
    // My other devices clear their unread counts too.
    let mine = read(req.conv.clone()).frame().into();
    broker.hub.deliver(me, &mine, Some(cx.conn.id));
    if cx.id.is_some() {
        cx.reply(Reply::Read {
            conv: req.conv,
            up_to: msg_id(now),
        });
    }
    Ok(())
}

pub async fn mute(cx: &Ctx<'_>, req: MuteReq) -> Handled {
    participants(cx, &req.conv).await?;
    cx.broker
        .store
        .set_muted(cx.me(), &req.conv, req.muted)
        .await
        .map_err(db_error)?;
    cx.reply(Reply::ConversationMute {
        conv: req.conv,
        muted: req.muted,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::broker::ops::testkit::{Rig, drain, next, run};

    #[tokio::test]
    async fn read_tells_the_sender_and_my_other_devices() {
        let rig = Rig::new().await;
        let (mut alice, mut bob) = (rig.connect("alice").await, rig.connect("bob").await);
        let mut bob_web = rig.connect("bob").await;
        let hi = json!({"op": "send", "conv": {"type": "single", "target": "bob"}, "content": {"type": "text", "text": "hi"}});
        run(&alice.cx(None), hi).await.unwrap();
        let m = next(&mut alice.queue).await["msgId"].clone();
        drain(&mut bob.queue);
        drain(&mut bob_web.queue);

        let alice_conv = json!({"type": "single", "target": "alice"});
        run(
            &bob.cx(Some(4)),
            json!({"op": "read", "conv": alice_conv, "upTo": m}),
        )
        .await
        .unwrap();
        assert_eq!(
            drain(&mut alice.queue),
            [
                json!({"op": "receipt", "kind": "read", "conv": {"type": "single", "target": "bob"}, "by": "bob", "upTo": m})
            ]
        );
        assert_eq!(
            drain(&mut bob_web.queue),
            [json!({"op": "receipt", "kind": "read", "conv": alice_conv, "by": "bob", "upTo": m})]
        );
        assert_eq!(
            drain(&mut bob.queue),
            [json!({"id": 4, "op": "read", "conv": alice_conv, "upTo": m})]
        );

        let r = run(
            &bob.cx(None),
            json!({"op": "read", "conv": alice_conv, "upTo": "42"}),
        )
        .await
        .unwrap_err();
        assert_eq!(
            (r.0, r.1.as_str()),
            (code::BAD_REQUEST, "upTo \"42\" is not a msgId like \"m42\"")
        );
        let carol = json!({"type": "single", "target": "carol"});
        let r = run(
            &bob.cx(None),
            json!({"op": "read", "conv": carol, "upTo": m}),
        )
        .await
        .unwrap_err();
        assert_eq!(r.0, code::NOT_FOUND);
        assert_eq!(
            r.1,
            format!("no message {} in this conversation", m.as_str().unwrap())
        );
        rig.stop().await;
    }

    #[tokio::test]
    async fn the_list_shows_a_conversation_and_mute_is_answered() {
        let rig = Rig::new().await;
        let (mut alice, mut bob) = (rig.connect("alice").await, rig.connect("bob").await);
        let hi = json!({"op": "send", "conv": {"type": "single", "target": "bob"}, "content": {"type": "text", "text": "hi"}});
        run(&alice.cx(None), hi).await.unwrap();
        next(&mut alice.queue).await;
        drain(&mut bob.queue);
        run(&bob.cx(Some(1)), json!({"op": "conversations"}))
            .await
            .unwrap();
        let list = next(&mut bob.queue).await;
        assert_eq!(
            (&list["op"], &list["id"]),
            (&json!("conversations"), &json!(1))
        );
        assert_eq!(
            list["conversations"][0]["conv"],
            json!({"type": "single", "target": "alice"})
        );
        let r = run(&bob.cx(None), json!({"op": "conversations", "before": "x"}))
            .await
            .unwrap_err();
        assert_eq!(r.1, "before \"x\" is not a msgId like \"m42\"");

        let mute_it = json!({"op": "conversation.mute", "conv": {"type": "single", "target": "alice"}, "muted": true});
        run(&bob.cx(Some(2)), mute_it).await.unwrap();
        let muted = next(&mut bob.queue).await;
        assert_eq!((&muted["id"], &muted["muted"]), (&json!(2), &json!(true)));
        let in_no_group = json!({"op": "conversation.mute", "conv": {"type": "group", "target": "g404"}, "muted": true});
        let r = run(&bob.cx(None), in_no_group).await.unwrap_err();
        assert_eq!(
            (r.0, r.1.as_str()),
            (code::FORBIDDEN, "you are not a member of group \"g404\"")
        );
        rig.stop().await;
    }
}
