//! Friends and profiles over real sockets.

use imctl::client::chat::ChatError;
use serde_json::{Value, json};

use crate::common::start;

fn code_of(r: Result<Value, ChatError>) -> i64 {
    match r {
        Err(ChatError::Refused { code, .. }) => code,
        other => panic!("expected an error frame, got {other:?}"),
    }
}

#[tokio::test]
async fn friend_requests_are_pushed_stored_and_answered() {
    let s = start(&[]).await;
    let (mut alice, _) = s.chat("13800000001", "a").await;
    let (mut bob, _) = s.chat("13800000002", "b").await;

    let r = alice
        .request(json!({"op": "friend.request", "target": "bob", "remark": "it's alice"}))
        .await
        .unwrap();
    assert_eq!(r["request"]["status"], "pending");
    let note = bob.next_op("notify").await.unwrap();
    assert_eq!(
        (
            note["kind"].as_str(),
            note["from"].as_str(),
            note["remark"].as_str()
        ),
        (Some("friend_request"), Some("alice"), Some("it's alice"))
    );

    assert_eq!(
        code_of(
            alice
                .request(json!({"op": "friend.request", "target": "bob"}))
                .await
        ),
        409,
        "duplicate"
    );
    assert_eq!(
        code_of(
            alice
                .request(json!({"op": "friend.request", "target": "alice"}))
                .await
        ),
        400,
        "self"
    );
    assert_eq!(
        code_of(
            alice
                .request(json!({"op": "friend.request", "target": "nobody"}))
                .await
        ),
        404
    );

    // Carol asks while bob is away; bob finds it after reconnecting.
    bob.close().await;
    let (mut carol, _) = s.chat("13800000003", "c").await;
    carol
        .request(json!({"op": "friend.request", "target": "bob"}))
        .await
        .unwrap();
    let (mut bob, _) = s.chat("13800000002", "b").await;
    let pending = bob.request(json!({"op": "friend.pending"})).await.unwrap();
    let from: Vec<_> = pending["incoming"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["fromUser"].as_str().unwrap())
        .collect();
    assert_eq!(from, ["carol", "alice"], "newest first");

    bob.request(json!({"op": "friend.accept", "from": "alice"}))
        .await
        .unwrap();
    assert_eq!(
        alice.next_op("notify").await.unwrap()["kind"],
        "friend_accepted"
    );
    bob.request(json!({"op": "friend.reject", "from": "carol"}))
        .await
        .unwrap();
    assert_eq!(
        carol.next_op("notify").await.unwrap()["kind"],
        "friend_rejected"
    );
    assert_eq!(
        code_of(
            bob.request(json!({"op": "friend.accept", "from": "carol"}))
                .await
        ),
        404,
        "already answered"
    );

    let friends = alice.request(json!({"op": "friend.list"})).await.unwrap();
    assert_eq!(
        friends["friends"],
        json!([{"userId": "bob", "displayName": "Bob Chen", "portrait": format!("{}/avatar/bob.svg", s.url), "online": true}])
    );
    let friends = bob.request(json!({"op": "friend.list"})).await.unwrap();
    assert_eq!(friends["friends"][0]["userId"], "alice");
    assert_eq!(
        bob.request(json!({"op": "friend.pending"})).await.unwrap()["incoming"],
        json!([])
    );
}

#[tokio::test]
async fn profiles_are_read_and_updates_reach_friends() {
    let s = start(&[]).await;
    let (mut alice, _) = s.chat("13800000001", "a").await;
    let (mut alice_web, _) = s.chat("13800000001", "a-web").await;
    let (mut bob, _) = s.chat("13800000002", "b").await;
    let (mut carol, _) = s.chat("13800000003", "c").await;
    alice
        .request(json!({"op": "friend.request", "target": "bob"}))
        .await
        .unwrap();
    bob.request(json!({"op": "friend.accept", "from": "alice"}))
        .await
        .unwrap();

    let got = alice
        .request(json!({"op": "profile.get", "users": ["alice", "bob", "ghost"]}))
        .await
        .unwrap();
    assert_eq!(got["users"][0]["mobile"], "13800000001", "my own mobile");
    assert!(
        got["users"][1].get("mobile").is_none(),
        "never someone else's: {}",
        got["users"][1]
    );
    assert_eq!(got["unknown"], json!(["ghost"]));

    let updated = alice.request(json!({"op": "profile.update", "displayName": "Alice L.", "portrait": "https://example.com/a.png"})).await.unwrap();
    assert_eq!(updated["user"]["displayName"], "Alice L.");
    for who in [&mut bob, &mut alice_web] {
        let push = who.next_op("profile").await.unwrap();
        assert_eq!(
            (
                push["user"]["userId"].as_str(),
                push["user"]["displayName"].as_str()
            ),
            (Some("alice"), Some("Alice L."))
        );
        assert!(push["user"].get("mobile").is_none());
    }
    // Carol is no friend: she learns nothing until she asks.
    carol.request(json!({"op": "ping"})).await.unwrap();
    let me = carol
        .request(json!({"op": "profile.get", "userId": "alice"}))
        .await
        .unwrap();
    assert_eq!(me["users"][0]["portrait"], "https://example.com/a.png");

    assert_eq!(
        code_of(
            alice
                .request(json!({"op": "profile.update", "displayName": "  "}))
                .await
        ),
        400
    );
    assert_eq!(
        code_of(
            alice
                .request(json!({"op": "profile.update", "portrait": "javascript:alert(1)"}))
                .await
        ),
        400
    );
    assert_eq!(
        code_of(alice.request(json!({"op": "profile.update"})).await),
        400
    );
}

#[tokio::test]
async fn friends_only_servers_refuse_strangers() {
    let s = start(&["--friends-only"]).await;
    let (mut alice, _) = s.chat("13800000001", "a").await;
    let (mut bob, _) = s.chat("13800000002", "b").await;
    let r = alice.send_text("single", "bob", "hi stranger", None).await;
    assert!(
        matches!(r, Err(ChatError::Refused { code: 403, .. })),
        "{r:?}"
    );
    alice
        .send_text("single", "robot", "the robot is always there", None)
        .await
        .unwrap();
    alice
        .request(json!({"op": "friend.request", "target": "bob"}))
        .await
        .unwrap();
    bob.request(json!({"op": "friend.accept", "from": "alice"}))
        .await
        .unwrap();
    alice
        .send_text("single", "bob", "hi friend", None)
        .await
        .unwrap();
}

#[tokio::test]
async fn delivery_and_read_receipts_reach_the_sender_and_my_devices() {
    let s = start(&[]).await;
    let (mut alice, _) = s.chat("13800000001", "a").await;
    let (mut bob, _) = s.chat("13800000002", "b").await;
    let (mut bob_web, _) = s.chat("13800000002", "b-web").await;
    let first = alice.send_text("single", "bob", "one", None).await.unwrap();
    let second = alice.send_text("single", "bob", "two", None).await.unwrap();
    bob.next_op("msg").await.unwrap();
    let last = bob.next_op("msg").await.unwrap();
    bob.notify(json!({"op": "recv", "upTo": last["seq"]}))
        .await
        .unwrap();
    let delivered = alice.next_op("receipt").await.unwrap();
    assert_eq!(delivered["kind"], "delivered");
    assert_eq!(delivered["by"], "bob");
    assert_eq!(
        delivered["conv"],
        json!({"type": "single", "target": "bob"})
    );
    assert_eq!(delivered["upTo"], second.msg_id.as_str());

    assert_eq!(
        code_of(
            bob.request(
                json!({"op": "read", "conv": {"type": "single", "target": "alice"}, "upTo": "m999"})
            )
            .await
        ),
        404
    );
    assert_eq!(
        code_of(
            bob.request(
                json!({"op": "read", "conv": {"type": "single", "target": "alice"}, "upTo": "42"})
            )
            .await
        ),
        400
    );
    let r = bob.request(json!({"op": "read", "conv": {"type": "single", "target": "alice"}, "upTo": first.msg_id})).await.unwrap();
    assert_eq!(r["upTo"], first.msg_id.as_str());
    let read = alice.next_op("receipt").await.unwrap();
    assert_eq!(
        (
            read["kind"].as_str(),
            read["by"].as_str(),
            read["upTo"].as_str()
        ),
        (Some("read"), Some("bob"), Some(first.msg_id.as_str()))
    );
    assert_eq!(read["conv"], json!({"type": "single", "target": "bob"}));
    let mine = bob_web.next_op("receipt").await.unwrap();
    assert_eq!(
        mine["conv"],
        json!({"type": "single", "target": "alice"}),
        "my other device clears its unread count"
    );
    // Read positions never move back.
    let back = bob.request(json!({"op": "read", "conv": {"type": "single", "target": "alice"}, "upTo": first.msg_id})).await.unwrap();
    assert_eq!(back["upTo"], first.msg_id.as_str());
}

#[tokio::test]
async fn the_conversation_list_has_last_messages_and_unread_counts() {
    let s = start(&[]).await;
    let (mut alice, _) = s.chat("13800000001", "a").await;
    let (mut carol, _) = s.chat("13800000003", "c").await;
    alice.send_text("single", "bob", "b1", None).await.unwrap();
    let b2 = alice.send_text("single", "bob", "b2", None).await.unwrap();
    carol
        .send_text("single", "alice", "from carol", None)
        .await
        .unwrap();

    // Bob was never online: his list is right on first connect.
    let (mut bob, _) = s.chat("13800000002", "b").await;
    let list = bob.request(json!({"op": "conversations"})).await.unwrap();
    let convs = list["conversations"].as_array().unwrap();
    assert_eq!(convs.len(), 1);
    assert_eq!(
        convs[0]["conv"],
        json!({"type": "single", "target": "alice"})
    );
    assert_eq!(
        (convs[0]["unread"].as_i64(), convs[0]["muted"].as_bool()),
        (Some(2), Some(false))
    );
    assert_eq!(convs[0]["lastMessage"]["msgId"], b2.msg_id.as_str());

    bob.request(
        json!({"op": "read", "conv": {"type": "single", "target": "alice"}, "upTo": b2.msg_id}),
    )
    .await
    .unwrap();
    bob.request(json!({"op": "conversation.mute", "conv": {"type": "single", "target": "alice"}, "muted": true})).await.unwrap();
    let list = bob.request(json!({"op": "conversations"})).await.unwrap();
    assert_eq!(
        (
            list["conversations"][0]["unread"].as_i64(),
            list["conversations"][0]["muted"].as_bool()
        ),
        (Some(0), Some(true))
    );

    let list = alice.request(json!({"op": "conversations"})).await.unwrap();
    let order: Vec<_> = list["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["conv"]["target"].clone(), c["unread"].clone()))
        .collect();
    assert_eq!(
        order,
        [(json!("carol"), json!(1)), (json!("bob"), json!(0))],
        "most recent first; my own messages are not unread"
    );
}

#[tokio::test]
async fn typing_is_relayed_rate_limited_and_checked() {
    let s = start(&[]).await;
    let (mut alice, _) = s.chat("13800000001", "a").await;
    let (mut bob, _) = s.chat("13800000002", "b").await;
    alice
        .notify(json!({"op": "typing", "conv": {"type": "single", "target": "bob"}}))
        .await
        .unwrap();
    alice
        .notify(json!({"op": "typing", "conv": {"type": "single", "target": "bob"}}))
        .await
        .unwrap();
    alice
        .send_text("single", "bob", "done typing", None)
        .await
        .unwrap();
    let t = bob.next_push().await.unwrap();
    assert_eq!(
        (t["op"].as_str(), t["from"].as_str()),
        (Some("typing"), Some("alice"))
    );
    assert_eq!(t["conv"], json!({"type": "single", "target": "alice"}));
    assert_eq!(
        bob.next_push().await.unwrap()["op"],
        "msg",
        "the second typing within 2 s was dropped"
    );

    let g = s.group("13800000002", "no alice", &["carol"]).await;
    alice
        .notify(json!({"op": "typing", "conv": {"type": "group", "target": g}}))
        .await
        .unwrap();
    let e = alice.next_push().await.unwrap();
    assert_eq!(
        (e["op"].as_str(), e["code"].as_i64()),
        (Some("error"), Some(403))
    );
}

#[tokio::test]
async fn presence_is_pushed_to_friends_and_queryable() {
    let s = start(&[]).await;
    let (mut bob, _) = s.chat("13800000002", "b").await;
    {
        let (mut alice, _) = s.chat("13800000001", "a").await;
        alice
            .request(json!({"op": "friend.request", "target": "bob"}))
            .await
            .unwrap();
        bob.request(json!({"op": "friend.accept", "from": "alice"}))
            .await
            .unwrap();
        alice.close().await;
    }
    let gone = bob.next_op("presence").await.unwrap();
    assert_eq!(
        (gone["userId"].as_str(), gone["online"].as_bool()),
        (Some("alice"), Some(false))
    );

    let (alice, _) = s.chat("13800000001", "a").await;
    let back = bob.next_op("presence").await.unwrap();
    assert_eq!(
        (back["online"].as_bool(), back["platforms"].clone()),
        (Some(true), json!([2]))
    );
    let q = bob
        .request(json!({"op": "presence", "users": ["alice", "carol"]}))
        .await
        .unwrap();
    assert_eq!(
        q["users"],
        json!([{"userId": "alice", "online": true, "platforms": [2]}])
    );
    assert_eq!(
        q["hidden"],
        json!(["carol"]),
        "no friend, no shared group: not bob's business"
    );
    // A shared group makes carol's presence visible.
    s.group("13800000003", "book club", &["bob"]).await;
    let q = bob
        .request(json!({"op": "presence", "users": ["carol"]}))
        .await
        .unwrap();
    assert_eq!(
        q["users"],
        json!([{"userId": "carol", "online": false, "platforms": []}])
    );
    let friends = bob.request(json!({"op": "presence"})).await.unwrap();
    assert_eq!(friends["users"][0]["userId"], "alice");
    // A dropped connection (no close frame) is noticed too.
    drop(alice);
    let dropped = bob.next_op("presence").await.unwrap();
    assert_eq!(dropped["online"], false);
}

#[tokio::test]
async fn two_devices_acknowledging_at_once_give_one_delivery_receipt() {
    let s = start(&[]).await;
    let (mut alice, _) = s.chat("13800000001", "a").await;
    let (mut bob, _) = s.chat("13800000002", "b").await;
    let (mut bob_web, _) = s.chat("13800000002", "b-web").await;
    alice.send_text("single", "bob", "one", None).await.unwrap();
    let pushed = bob.next_op("msg").await.unwrap();
    bob_web.next_op("msg").await.unwrap();
    let up_to = pushed["seq"].clone();
    // Both devices acknowledge the same seq at the same moment.
    let (a, b) = tokio::join!(
        bob.notify(json!({"op": "recv", "upTo": up_to})),
        bob_web.notify(json!({"op": "recv", "upTo": up_to}))
    );
    a.unwrap();
    b.unwrap();
    // Both recvs are handled once each device answers a ping after them.
    bob.request(json!({"op": "ping"})).await.unwrap();
    bob_web.request(json!({"op": "ping"})).await.unwrap();
    alice.request(json!({"op": "ping"})).await.unwrap();
    alice.set_timeout(std::time::Duration::from_millis(300));
    let mut receipts = 0;
    while let Ok(frame) = alice.next_push().await {
        if frame["op"] == "receipt" && frame["kind"] == "delivered" {
            receipts += 1;
        }
    }
    assert_eq!(receipts, 1);
}
