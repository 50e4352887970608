//! Messages: `send` (stored and fanned out by the writer), `sync` (the
//! inbox after a seq), `recv` (a device's delivered position, and the
//! delivery receipts it newly covers) and `history` (a conversation's past).

use crate::wire::ws::{Push, ReceiptKind};
use serde_json::Value;

use super::{Ctx, Handled, Refusal, db_error, only_friends, refuse, to_writer};
use crate::broker::writer::{Replier, WriteOp};
use crate::store::{Before, Delivered, NewMessage, msg_id, parse_msg_id};
use crate::wire::limits::{self, PAGE_BYTES};
use crate::wire::ws::{
    ConvType, HistoryReq, RecvReq, SendReq, SyncReq, code, history_frame, synced_frame,
};

const MAX_SYNC: u32 = 1000;
const DEFAULT_SYNC: u32 = 200;
const MAX_HISTORY: u32 = 200;
const DEFAULT_HISTORY: u32 = 50;

/// Validates a message and hands it to the writer, which acks it.
pub async fn send(cx: &Ctx<'_>, req: SendReq) -> Handled {
    // No size check here: the frame carrying it is within --max-frame.
    req.content
        .validate()
        .map_err(|e| Refusal(code::BAD_REQUEST, format!("bad content: {e}")))?;
    if req.conv.target.is_empty() {
        return refuse(code::BAD_REQUEST, "conv.target must not be empty");
    }
    // Bounded and printable before they reach the store: the batch binds
    // every send's target and clientMsgId together, and PostgreSQL
    // refuses a NUL in text (for the whole batch, not just this send).
    limits::check_text("conv.target", &req.conv.target, limits::MAX_TARGET)
        .map_err(|e| Refusal(code::BAD_REQUEST, e))?;
    if let Some(c) = &req.client_msg_id
        && (c.is_empty()
            || c.chars().count() > limits::MAX_CLIENT_MSG_ID
            || c.chars().any(char::is_control))
    {
        return refuse(
            code::BAD_REQUEST,
            format!(
                "clientMsgId must be 1 to {} characters, none a control character",
                limits::MAX_CLIENT_MSG_ID
            ),
        );
    }
    if req.conv.kind == ConvType::Single {
        only_friends(cx, std::slice::from_ref(&req.conv.target), "message").await?;
    }
    let msg = NewMessage {
        sender: cx.who.user_id.clone(),
        conv: req.conv,
        content: serde_json::to_value(&req.content).expect("content serializes"),
        client_msg_id: req.client_msg_id,
        recipients: None,
    };
    if let Some(why) = crate::broker::faults::fail_ack(
        &cx.broker.hub.faults,
        cx.me(),
        crate::wire::fault::AckWhen::Before,
    ) {
        return refuse(code::SERVER_ERROR, why);
    }
    let reply = Replier::Conn(cx.conn.clone());
    to_writer(
        cx.broker,
        WriteOp::Send {
            msg,
            id: cx.id,
            reply,
        },
    )
    .await
}

pub async fn sync(cx: &Ctx<'_>, req: SyncReq) -> Handled {
    if req.since < 0 {
        return refuse(code::BAD_REQUEST, "since must be ≥ 0");
    }
    let limit = req.limit.unwrap_or(DEFAULT_SYNC).clamp(1, MAX_SYNC);
    let store = &cx.broker.store;
    let entries = store
        .inbox_page(cx.me(), req.since, limit, PAGE_BYTES)
        .await
        .map_err(db_error)?;
    let head = store.inbox_head(cx.me()).await.map_err(db_error)?;
    cx.conn.send(synced_frame(cx.id, &entries, head).into());
    Ok(())
}

/// A device acknowledges its inbox up to a seq: tells the senders what that
/// newly covers and has the writer store the device's position.
pub async fn recv(cx: &Ctx<'_>, req: RecvReq) -> Handled {
    if req.up_to < 0 {
        return refuse(code::BAD_REQUEST, "upTo must be ≥ 0");
    }
    let store = &cx.broker.store;
    // Nobody has acknowledged more than their inbox holds.
    let head = store.inbox_head(cx.me()).await.map_err(db_error)?;
    let up_to = req.up_to.min(head);
    let stored = store.user_delivered(cx.me()).await.map_err(db_error)?;
    if let Some(after) = cx.broker.receipted.claim(cx.me(), stored, up_to) {
        for d in store
            .delivered_between(cx.me(), after, up_to)
            .await
            .map_err(db_error)?
        {
            let receipt = Push::Receipt {
                kind: ReceiptKind::Delivered,
                conv: d.conv,
                by: cx.me().to_owned(),
                up_to: msg_id(d.up_to),
            };
            cx.push(&d.sender, &receipt);
        }
    }
    let d = Delivered {
        user_id: cx.who.user_id.clone(),
        client_id: cx.who.client_id.clone(),
        platform: cx.who.platform,
        up_to,
    };
    to_writer(cx.broker, WriteOp::Delivered(d)).await
}

pub async fn history(cx: &Ctx<'_>, req: HistoryReq) -> Handled {
    let store = &cx.broker.store;
    if req.conv.kind == ConvType::Group
        && !store
            .is_group_member(&req.conv.target, cx.me())
            .await
            .map_err(db_error)?
    {
        return refuse(
            code::FORBIDDEN,
            format!("you are not a member of group {:?}", req.conv.target),
        );
    }
    let before = before(req.before)?;
    let limit = req.limit.unwrap_or(DEFAULT_HISTORY).clamp(1, MAX_HISTORY);
    let messages = store
        .history_page(cx.me(), &req.conv, before, limit, PAGE_BYTES)
        .await
        .map_err(db_error)?;
    cx.conn.send(history_frame(cx.id, &messages).into());
    Ok(())
}

/// `history`'s `before`: a msgId, a serverTime or nothing (the latest).
fn before(before: Option<Value>) -> Result<Before, Refusal> {
    match before {
        None | Some(Value::Null) => Ok(Before::Latest),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Before::ServerTime)
            .ok_or_else(|| Refusal(code::BAD_REQUEST, "before must be an integer time".into())),
        Some(Value::String(m)) => match parse_msg_id(&m) {
            Some(id) => Ok(Before::MessageId(id)),
            None => refuse(
                code::BAD_REQUEST,
                format!("before {m:?} is neither a msgId like \"m42\" nor a serverTime"),
            ),
        },
        Some(_) => refuse(
            code::BAD_REQUEST,
            "before must be a msgId string or a serverTime number",
        ),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::broker::ops::testkit::{Rig, drain, next, run};

    fn hi(to: &str, text: &str) -> Value {
        json!({"op": "send", "conv": {"type": "single", "target": to}, "content": {"type": "text", "text": text}})
    }

    #[tokio::test]
    async fn a_send_is_stored_acked_with_its_seq_and_pushed() {
        let rig = Rig::new().await;
        let (mut alice, mut bob) = (rig.connect("alice").await, rig.connect("bob").await);
        run(&alice.cx(Some(9)), hi("bob", "hello")).await.unwrap();
        let ack = next(&mut alice.queue).await;
        assert_eq!(
            (&ack["op"], &ack["id"], &ack["seq"], &ack["code"]),
            (&json!("ack"), &json!(9), &json!(1), &json!(0))
        );
        let push = next(&mut bob.queue).await;
        assert_eq!((&push["op"], &push["seq"]), (&json!("msg"), &json!(1)));
        assert_eq!(push["message"]["msgId"], ack["msgId"]);
        assert_eq!(push["message"]["content"]["text"], "hello");
        assert_eq!(rig.broker.store.inbox_head("bob").await.unwrap(), 1);
        rig.stop().await;
    }

    #[tokio::test]
    async fn a_bad_send_is_refused_with_the_same_texts() {
        let rig = Rig::new().await;
        let alice = rig.connect("alice").await;
        let no_content = json!({"op": "send", "conv": {"type": "single", "target": "bob"}});
        let r = run(&alice.cx(None), no_content).await.unwrap_err();
        assert_eq!(r.0, code::BAD_REQUEST);
        assert!(
            r.1.starts_with("bad send frame: missing field `content`"),
            "{}",
            r.1
        );
        let r = run(&alice.cx(None), hi("", "x")).await.unwrap_err();
        assert_eq!(r.1, "conv.target must not be empty");
        let mut long = hi("bob", "x");
        long["clientMsgId"] = json!("c".repeat(limits::MAX_CLIENT_MSG_ID + 1));
        let r = run(&alice.cx(None), long).await.unwrap_err();
        assert_eq!(
            r.1,
            "clientMsgId must be 1 to 128 characters, none a control character"
        );
        // A NUL would fail the whole batch on PostgreSQL: refused here.
        let mut nul = hi("bob", "x");
        nul["clientMsgId"] = json!("c\u{0}1");
        let r = run(&alice.cx(None), nul).await.unwrap_err();
        assert!(r.1.starts_with("clientMsgId must be"), "{}", r.1);
        let r = run(&alice.cx(None), hi("bob\u{0}", "x")).await.unwrap_err();
        assert_eq!(r.1, "conv.target must not contain control characters");
        let r = run(
            &alice.cx(None),
            hi(&"b".repeat(limits::MAX_TARGET + 1), "x"),
        )
        .await
        .unwrap_err();
        assert_eq!(r.1, "conv.target has at most 128 characters");
        assert_eq!(
            rig.broker.store.inbox_head("bob").await.unwrap(),
            0,
            "nothing stored"
        );
        rig.stop().await;
    }

    #[tokio::test]
    async fn friends_only_refuses_a_message_to_a_stranger() {
        let rig = Rig::friends_only().await;
        let alice = rig.connect("alice").await;
        let r = run(&alice.cx(None), hi("bob", "x")).await.unwrap_err();
        assert_eq!(
            (r.0, r.1.as_str()),
            (
                code::FORBIDDEN,
                "you can only message friends on this server (--friends-only); send [\"bob\"] a friend.request"
            )
        );
        // The robot and oneself are always allowed.
        run(&alice.cx(None), hi("robot", "x")).await.unwrap();
        rig.stop().await;
    }

    #[tokio::test]
    async fn sync_returns_the_entries_after_a_seq() {
        let rig = Rig::new().await;
        let (mut alice, mut bob) = (rig.connect("alice").await, rig.connect("bob").await);
        for text in ["one", "two", "three"] {
            run(&alice.cx(None), hi("bob", text)).await.unwrap();
            next(&mut alice.queue).await;
        }
        drain(&mut bob.queue);
        run(&bob.cx(Some(3)), json!({"op": "sync", "since": 1}))
            .await
            .unwrap();
        let synced = next(&mut bob.queue).await;
        assert_eq!(
            (
                &synced["op"],
                &synced["id"],
                &synced["head"],
                &synced["more"]
            ),
            (&json!("synced"), &json!(3), &json!(3), &json!(false))
        );
        let texts: Vec<_> = synced["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["seq"].clone(), e["message"]["content"]["text"].clone()))
            .collect();
        assert_eq!(
            texts,
            [(json!(2), json!("two")), (json!(3), json!("three"))]
        );
        let r = run(&bob.cx(None), json!({"op": "sync", "since": -1}))
            .await
            .unwrap_err();
        assert_eq!(
            (r.0, r.1.as_str()),
            (code::BAD_REQUEST, "since must be ≥ 0")
        );
        rig.stop().await;
    }

    #[tokio::test]
    async fn recv_receipts_what_it_newly_covers_once() {
        let rig = Rig::new().await;
        let (mut alice, mut bob) = (rig.connect("alice").await, rig.connect("bob").await);
        run(&alice.cx(None), hi("bob", "one")).await.unwrap();
        let ack = next(&mut alice.queue).await;
        drain(&mut bob.queue);
        // Beyond the head: counts as the head.
        run(&bob.cx(None), json!({"op": "recv", "upTo": 5}))
            .await
            .unwrap();
        let receipt = next(&mut alice.queue).await;
        assert_eq!(
            receipt,
            json!({"op": "receipt", "kind": "delivered", "conv": {"type": "single", "target": "bob"}, "by": "bob", "upTo": ack["msgId"]})
        );
        // A second device acknowledging the same: nothing new to tell (the
        // handler sends receipts itself, before it returns).
        let bob2 = rig.connect("bob").await;
        run(&bob2.cx(None), json!({"op": "recv", "upTo": 1}))
            .await
            .unwrap();
        assert!(drain(&mut alice.queue).is_empty());
        rig.stop().await;
    }

    #[tokio::test]
    async fn history_is_for_members_and_before_is_checked() {
        let rig = Rig::new().await;
        let mut alice = rig.connect("alice").await;
        let group = json!({"type": "group", "target": "g404"});
        let r = run(&alice.cx(None), json!({"op": "history", "conv": group}))
            .await
            .unwrap_err();
        assert_eq!(
            (r.0, r.1.as_str()),
            (code::FORBIDDEN, "you are not a member of group \"g404\"")
        );
        let bob = json!({"type": "single", "target": "bob"});
        let r = run(
            &alice.cx(None),
            json!({"op": "history", "conv": bob, "before": "x"}),
        )
        .await
        .unwrap_err();
        assert_eq!(
            r.1,
            "before \"x\" is neither a msgId like \"m42\" nor a serverTime"
        );
        run(&alice.cx(Some(2)), json!({"op": "history", "conv": bob}))
            .await
            .unwrap();
        let page = next(&mut alice.queue).await;
        assert_eq!(
            (&page["op"], &page["id"], &page["messages"]),
            (&json!("history"), &json!(2), &json!([]))
        );
        rig.stop().await;
    }
}
