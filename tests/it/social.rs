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
