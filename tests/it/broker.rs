//! The broker over real sockets: route, connect, chat, sync, dedupe, errors.

use imctl::client::chat::{ChatConn, ChatError};
use serde_json::{Value, json};

use crate::common::start;

fn refused(r: Result<Value, ChatError>) -> (i64, String) {
    match r {
        Err(ChatError::Refused { code, message }) => (code, message),
        other => panic!("expected an error frame, got {other:?}"),
    }
}

#[tokio::test]
async fn two_users_chat_with_acks_and_contiguous_seqs() {
    let s = start(&[]).await;
    let (mut alice, a) = s.chat("13800000001", "alice-phone").await;
    let (mut bob, b) = s.chat("13800000002", "bob-web").await;
    assert_eq!(
        (a.user_id.as_str(), a.head, a.node.as_str()),
        ("alice", 0, "n1")
    );
    assert_eq!(b.user_id, "bob");

    let ack = alice
        .send_text("single", "bob", "hi bob", Some("c-1"))
        .await
        .unwrap();
    assert_eq!((ack.code, ack.seq), (0, 1));
    assert!(ack.msg_id.starts_with('m'));
    let push = bob.next_op("msg").await.unwrap();
    assert_eq!(push["seq"], 1);
    let m = &push["message"];
    assert_eq!(
        (m["msgId"].as_str(), m["from"].as_str()),
        (Some(ack.msg_id.as_str()), Some("alice"))
    );
    assert_eq!(m["conv"], json!({"type": "single", "target": "bob"}));
    assert_eq!(m["content"], json!({"type": "text", "text": "hi bob"}));
    assert_eq!(m["clientMsgId"], "c-1");
    assert_eq!(m["serverTime"], ack.server_time);

    for i in 0..5 {
        bob.send_text("single", "alice", &format!("reply {i}"), None)
            .await
            .unwrap();
    }
    let seqs: Vec<i64> = {
        let mut v = Vec::new();
        for _ in 0..5 {
            v.push(alice.next_op("msg").await.unwrap()["seq"].as_i64().unwrap());
        }
        v
    };
    assert_eq!(
        seqs,
        [2, 3, 4, 5, 6],
        "alice's inbox: her own message was 1"
    );

    let config: Value = s.get("/config").await.json().await.unwrap();
    assert_eq!(
        config["routeUrl"],
        format!("http://{}/route", s.running.broker_addr)
    );
}

#[tokio::test]
async fn route_refuses_bad_tokens_with_code_13() {
    let s = start(&[]).await;
    let route = format!("http://{}/route", s.running.broker_addr);
    let (_, login) = s.login("13800000001").await;
    for body in [
        json!({"userId": "alice", "clientId": "c", "token": "garbage"}),
        json!({"userId": "bob", "clientId": "c", "token": login["token"]}),
    ] {
        let r: Value = s
            .http
            .post(&route)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["code"], 13, "{r}");
        assert!(
            r["message"].as_str().unwrap().contains("log in again"),
            "{r}"
        );
    }
    let expired = s
        .running
        .state
        .im_tokens
        .issue_at("alice", "c", 2, 1_000_000);
    let r: Value = s
        .http
        .post(&route)
        .json(&json!({"token": expired}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["code"], 13);
    assert!(r["message"].as_str().unwrap().contains("expired"), "{r}");
}

#[tokio::test]
async fn offline_user_catches_up_exactly_with_sync() {
    let s = start(&[]).await;
    let (bob, b) = s.chat("13800000002", "bob-phone").await;
    assert_eq!(b.head, 0);
    bob.close().await;
    let (mut alice, _) = s.chat("13800000001", "alice-phone").await;
    for i in 1..=3 {
        alice
            .send_text("single", "bob", &format!("while you were out {i}"), None)
            .await
            .unwrap();
    }
    let (mut bob, b) = s.chat("13800000002", "bob-phone").await;
    assert_eq!(b.head, 3);
    let synced = bob
        .request(json!({"op": "sync", "since": 0, "limit": 200}))
        .await
        .unwrap();
    let entries = synced["entries"].as_array().unwrap();
    assert_eq!(
        entries
            .iter()
            .map(|e| e["seq"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let texts: Vec<_> = entries
        .iter()
        .map(|e| e["message"]["content"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        [
            "while you were out 1",
            "while you were out 2",
            "while you were out 3"
        ]
    );
    assert_eq!(
        (synced["head"].as_i64(), synced["more"].as_bool()),
        (Some(3), Some(false))
    );

    // Paging: limit 2 says there is more.
    let page = bob
        .request(json!({"op": "sync", "since": 0, "limit": 2}))
        .await
        .unwrap();
    assert_eq!(
        (
            page["entries"].as_array().unwrap().len(),
            page["more"].as_bool()
        ),
        (2, Some(true))
    );
    let rest = bob
        .request(json!({"op": "sync", "since": 2}))
        .await
        .unwrap();
    assert_eq!(rest["entries"][0]["seq"], 3);
    bob.notify(json!({"op": "recv", "upTo": 3})).await.unwrap();
    bob.request(json!({"op": "ping"})).await.unwrap();
}

#[tokio::test]
async fn every_device_of_a_user_converges() {
    let s = start(&[]).await;
    let (mut phone, _) = s.chat("13800000001", "alice-phone").await;
    let (mut web, _) = s.chat("13800000001", "alice-web").await;
    let (mut bob, _) = s.chat("13800000002", "bob-phone").await;
    let ack = phone
        .send_text("single", "bob", "from my phone", None)
        .await
        .unwrap();
    let mirrored = web.next_op("msg").await.unwrap();
    assert_eq!(mirrored["seq"], ack.seq);
    assert_eq!(mirrored["message"]["msgId"], ack.msg_id.as_str());
    assert_eq!(
        bob.next_op("msg").await.unwrap()["message"]["msgId"],
        ack.msg_id.as_str()
    );
    // Bob's answer reaches both of alice's devices.
    bob.send_text("single", "alice", "got it", None)
        .await
        .unwrap();
    assert_eq!(
        phone.next_op("msg").await.unwrap()["message"]["content"]["text"],
        "got it"
    );
    assert_eq!(
        web.next_op("msg").await.unwrap()["message"]["content"]["text"],
        "got it"
    );
    // The sending device got its ack, not a copy of its own message.
    let own = phone
        .request(json!({"op": "sync", "since": 0}))
        .await
        .unwrap();
    assert_eq!(own["entries"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_resend_with_the_same_client_msg_id_stores_nothing_new() {
    let s = start(&[]).await;
    let (mut alice, _) = s.chat("13800000001", "a").await;
    let (mut bob, _) = s.chat("13800000002", "b").await;
    let first = alice
        .send_text("single", "bob", "once", Some("retry-me"))
        .await
        .unwrap();
    let again = alice
        .send_text("single", "bob", "once", Some("retry-me"))
        .await
        .unwrap();
    assert_eq!(
        (again.msg_id.as_str(), again.seq, again.server_time),
        (first.msg_id.as_str(), first.seq, first.server_time)
    );
    assert!(again.duplicate && !first.duplicate);
    let after = alice
        .send_text("single", "bob", "next", None)
        .await
        .unwrap();
    assert_eq!(
        after.seq,
        first.seq + 1,
        "no seq was spent on the duplicate"
    );
    let synced = bob
        .request(json!({"op": "sync", "since": 0}))
        .await
        .unwrap();
    let texts: Vec<_> = synced["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"]["content"]["text"].clone())
        .collect();
    assert_eq!(texts, [json!("once"), json!("next")]);
    assert_eq!(
        bob.next_op("msg").await.unwrap()["message"]["content"]["text"],
        "once"
    );
    assert_eq!(
        bob.next_op("msg").await.unwrap()["message"]["content"]["text"],
        "next"
    );
}

#[tokio::test]
async fn bad_frames_get_errors_and_the_connection_survives() {
    let s = start(&[]).await;
    let mut c = ChatConn::open(&s.ws_url()).await.unwrap();
    // Before connect.
    let (code, msg) = refused(c.request(json!({"op": "send", "conv": {"type":"single","target":"bob"}, "content": {"type":"text","text":"x"}})).await);
    assert_eq!(code, 401, "{msg}");
    c.send_raw("{not json").await.unwrap();
    let e = c.next_push().await.unwrap();
    assert_eq!(
        (e["op"].as_str(), e["code"].as_i64()),
        (Some("error"), Some(400))
    );
    assert!(e["id"].is_null());

    let (_, login) = s.login("13800000001").await;
    c.request(json!({"op": "connect", "token": login["token"]}))
        .await
        .unwrap();
    let (code, _) = refused(
        c.request(json!({"op": "connect", "token": login["token"]}))
            .await,
    );
    assert_eq!(code, 409);
    let (code, msg) = refused(c.request(json!({"op": "teleport"})).await);
    assert_eq!(code, 405, "{msg}");
    let (code, msg) = refused(c.request(json!({"op": "send", "conv": {"type":"single","target":"bob"}, "content": {"type":"text","text":"  "}})).await);
    assert_eq!(code, 400);
    assert!(msg.contains("text must not be empty"), "{msg}");
    let (code, _) = refused(c.request(json!({"op": "send", "conv": {"type":"single","target":"bob"}, "content": {"type":"image","url":"u","w":0,"h":1,"size":1}})).await);
    assert_eq!(code, 400);
    let (code, msg) = refused(c.request(json!({"op": "send", "conv": {"type":"single","target":"nobody"}, "content": {"type":"text","text":"x"}})).await);
    assert_eq!(code, 404, "{msg}");
    let g1 = s.group("13800000002", "g1", &["carol"]).await;
    let (code, msg) = refused(c.request(json!({"op": "send", "conv": {"type":"group","target":g1}, "content": {"type":"text","text":"x"}})).await);
    assert_eq!(code, 403, "{msg}");
    let (code, _) = refused(
        c.request(json!({"op": "history", "conv": {"type":"group","target":g1}}))
            .await,
    );
    assert_eq!(code, 403);
    let (code, _) = refused(c.request(json!({"op": "sync", "since": -1})).await);
    assert_eq!(code, 400);
    c.send_raw(r#"{"id":"seven","op":"ping"}"#).await.unwrap();
    assert_eq!(c.next_push().await.unwrap()["code"], 400);
    // Nothing was stored, and the connection still works.
    let synced = c.request(json!({"op": "sync", "since": 0})).await.unwrap();
    assert_eq!(synced["head"], 0);
    assert_eq!(
        c.request(json!({"op": "ping"})).await.unwrap()["op"],
        "pong"
    );
}

#[tokio::test]
async fn bad_or_expired_tokens_close_with_4001() {
    let s = start(&[]).await;
    let expired = s
        .running
        .state
        .im_tokens
        .issue_at("alice", "c", 2, 1_000_000);
    for (token, code) in [("garbage".to_string(), 498), (expired, 419)] {
        let mut c = ChatConn::open(&s.ws_url()).await.unwrap();
        let (got, msg) = refused(c.request(json!({"op": "connect", "token": token})).await);
        assert_eq!(got, code, "{msg}");
        match c.next_push().await {
            Err(ChatError::Closed {
                code: Some(4001), ..
            }) => {}
            other => panic!("expected close 4001, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn oversize_frames_close_with_1009() {
    let s = start(&["--max-frame", "4096"]).await;
    let (mut c, _) = s.chat("13800000001", "a").await;
    let big = "x".repeat(5000);
    c.send_raw(&json!({"op":"send","conv":{"type":"single","target":"bob"},"content":{"type":"text","text":big}}).to_string()).await.unwrap();
    match c.next_push().await {
        Err(ChatError::Closed {
            code: Some(1009), ..
        }) => {}
        other => panic!("expected close 1009, got {other:?}"),
    }
}

#[tokio::test]
async fn token_in_the_url_and_both_paths() {
    let s = start(&[]).await;
    let (_, login) = s.login("13800000003").await;
    let token = login["token"].as_str().unwrap();
    for path in ["/ws", "/"] {
        let url = format!("ws://{}{path}?token={token}", s.running.broker_addr);
        let mut c = ChatConn::open(&url).await.unwrap();
        let connected = c.request(json!({"op": "connect"})).await.unwrap();
        assert_eq!(connected["userId"], "carol");
    }
    // A plain GET explains itself; a foreign Origin is refused.
    let plain = s
        .http
        .get(format!("http://{}/", s.running.broker_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 426);
    let evil = tokio_tungstenite::connect_async(
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(s.ws_url())
            .map(|mut r| {
                r.headers_mut()
                    .insert("origin", "http://evil.example".parse().unwrap());
                r
            })
            .unwrap(),
    )
    .await;
    assert!(evil.is_err(), "a foreign origin must be refused");
}

#[tokio::test]
async fn history_pages_newest_first() {
    let s = start(&[]).await;
    let (mut alice, _) = s.chat("13800000001", "a").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            alice
                .send_text("single", "bob", &format!("h{i}"), None)
                .await
                .unwrap()
                .msg_id,
        );
    }
    let page = alice
        .request(json!({"op": "history", "conv": {"type":"single","target":"bob"}, "limit": 3}))
        .await
        .unwrap();
    let got: Vec<_> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["msgId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, [ids[4].clone(), ids[3].clone(), ids[2].clone()]);
    assert_eq!(page["more"], true);
    let (mut bob, _) = s.chat("13800000002", "b").await;
    let older = bob.request(json!({"op": "history", "conv": {"type":"single","target":"alice"}, "before": ids[2], "limit": 3})).await.unwrap();
    let got: Vec<_> = older["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["msgId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, [ids[1].clone(), ids[0].clone()]);
    assert_eq!(older["more"], false);
}

#[tokio::test]
async fn the_robot_answers() {
    let s = start(&[]).await;
    let (mut alice, _) = s.chat("13800000001", "a").await;
    alice
        .send_text("single", "robot", "hello robot", None)
        .await
        .unwrap();
    let reply = alice.next_op("msg").await.unwrap();
    assert_eq!(reply["message"]["from"], "robot");
    assert!(
        reply["message"]["content"]["text"]
            .as_str()
            .unwrap()
            .contains("hello robot")
    );
}

#[tokio::test]
async fn groups_fan_out_and_every_change_is_a_notification() {
    let s = start(&[]).await;
    let (mut alice, _) = s.chat("13800000001", "a").await;
    let (mut bob, _) = s.chat("13800000002", "b").await;
    let (mut carol, _) = s.chat("13800000003", "c").await;

    let created = alice
        .request(json!({"op": "group.create", "name": "team", "members": ["bob"]}))
        .await
        .unwrap();
    let g = created["group"]["id"].as_str().unwrap().to_owned();
    assert_eq!(created["group"]["owner"], "alice");
    for who in [&mut alice, &mut bob] {
        let note = who.next_op("msg").await.unwrap();
        assert_eq!(
            note["message"]["conv"],
            json!({"type": "group", "target": g})
        );
        assert_eq!(note["message"]["content"]["type"], "notification");
        assert_eq!(note["message"]["content"]["kind"], "created");
    }

    // Members add; only the owner or an admin removes; a non-member sees nothing.
    let (code, _) = refused(carol.request(json!({"op": "group.info", "group": g})).await);
    assert_eq!(code, 403);
    bob.request(json!({"op": "group.add", "group": g, "members": ["carol"]}))
        .await
        .unwrap();
    let added = carol.next_op("msg").await.unwrap();
    assert_eq!(
        (
            added["message"]["content"]["kind"].as_str(),
            added["seq"].as_i64()
        ),
        (Some("member_added"), Some(1))
    );
    let (code, msg) = refused(
        bob.request(json!({"op": "group.remove", "group": g, "members": ["carol"]}))
            .await,
    );
    assert_eq!(code, 403, "{msg}");

    // A group message: stored once, one inbox entry per member.
    let ack = alice
        .send_text("group", &g, "hello team", None)
        .await
        .unwrap();
    for who in [&mut bob, &mut carol] {
        let m = who.next_op("msg").await.unwrap();
        if m["message"]["content"]["type"] == "notification" {
            // bob still has the member_added notification queued.
            assert_eq!(
                who.next_op("msg").await.unwrap()["message"]["msgId"],
                ack.msg_id.as_str()
            );
        } else {
            assert_eq!(m["message"]["msgId"], ack.msg_id.as_str());
        }
    }

    alice
        .request(json!({"op": "group.rename", "group": g, "name": "the team"}))
        .await
        .unwrap();
    let info = carol
        .request(json!({"op": "group.info", "group": g}))
        .await
        .unwrap();
    assert_eq!(info["group"]["name"], "the team");
    let roles: Vec<_> = info["group"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["userId"].clone(), m["role"].clone()))
        .collect();
    assert_eq!(
        roles,
        [
            (json!("alice"), json!("owner")),
            (json!("bob"), json!("member")),
            (json!("carol"), json!("member"))
        ]
    );
    let list = bob.request(json!({"op": "group.list"})).await.unwrap();
    assert_eq!(list["groups"][0]["memberCount"], 3);

    alice
        .request(json!({"op": "group.remove", "group": g, "members": ["carol"]}))
        .await
        .unwrap();
    let (code, _) = refused(
        carol
            .send_text("group", &g, "still here?", None)
            .await
            .map(|_| json!(null)),
    );
    assert_eq!(code, 403);
    bob.request(json!({"op": "group.leave", "group": g}))
        .await
        .unwrap();
    let (code, _) = refused(
        bob.request(json!({"op": "group.dissolve", "group": g}))
            .await,
    );
    assert_eq!(code, 403, "bob has left");
    alice
        .request(json!({"op": "group.dissolve", "group": g}))
        .await
        .unwrap();

    // Carol, removed, synced the whole story up to her removal.
    let synced = carol
        .request(json!({"op": "sync", "since": 0}))
        .await
        .unwrap();
    let kinds: Vec<_> = synced["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e["message"]["content"]["kind"]
                .as_str()
                .unwrap_or("text")
                .to_owned()
        })
        .collect();
    assert_eq!(kinds, ["member_added", "text", "renamed", "member_removed"]);
    // Alice's timeline has every step, dissolved last.
    let history = alice.request(json!({"op": "sync", "since": 0})).await;
    let last = history.unwrap()["entries"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()["message"]["content"]["kind"]
        .clone();
    assert_eq!(last, "dissolved");
    let (code, _) = refused(alice.request(json!({"op": "group.info", "group": g})).await);
    assert_eq!(code, 403, "nobody is a member of a dissolved group");
}

#[tokio::test]
async fn silent_connections_are_closed_after_the_idle_timeout() {
    let s = start(&["--idle-timeout", "300ms"]).await;
    let (mut c, _) = s.chat("13800000001", "a").await;
    // Not reading means not answering the server's pings either.
    assert!(s.running.state.broker.is_online("alice"));
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert!(
        !s.running.state.broker.is_online("alice"),
        "the server dropped the connection"
    );
    // The close frame (4008) may arrive, or the client's queued pongs hit the closed socket first.
    match c.next_op("never").await {
        Err(
            ChatError::Closed {
                code: Some(4008), ..
            }
            | ChatError::Socket(_),
        ) => {}
        other => panic!("expected the connection closed, got {other:?}"),
    }
}

#[tokio::test]
async fn the_owner_appoints_admins_who_can_manage_members() {
    let s = start(&[]).await;
    let (mut alice, _) = s.chat("13800000001", "a").await;
    let (mut bob, _) = s.chat("13800000002", "b").await;
    let g = alice
        .request(json!({"op": "group.create", "name": "team", "members": ["bob", "carol"]}))
        .await
        .unwrap()["group"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (code, _) = refused(
        bob.request(json!({"op": "group.admin", "group": g, "userId": "bob", "admin": true}))
            .await,
    );
    assert_eq!(code, 403, "only the owner appoints");
    let r = alice
        .request(json!({"op": "group.admin", "group": g, "userId": "bob", "admin": true}))
        .await
        .unwrap();
    let roles: Vec<_> = r["group"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].clone())
        .collect();
    assert_eq!(roles, [json!("owner"), json!("admin"), json!("member")]);
    bob.next_op("msg").await.unwrap(); // created
    let note = bob.next_op("msg").await.unwrap();
    assert_eq!(
        (
            note["message"]["content"]["kind"].as_str(),
            note["message"]["content"]["members"][0].as_str()
        ),
        (Some("admin_added"), Some("bob"))
    );
    bob.request(json!({"op": "group.remove", "group": g, "members": ["carol"]}))
        .await
        .unwrap();
    let (code, _) = refused(
        alice
            .request(json!({"op": "group.admin", "group": g, "userId": "alice", "admin": false}))
            .await,
    );
    assert_eq!(code, 400, "the owner's role cannot change");
    let (code, _) = refused(
        alice
            .request(json!({"op": "group.admin", "group": g, "userId": "carol", "admin": true}))
            .await,
    );
    assert_eq!(code, 404, "carol is no longer a member");
}

#[tokio::test]
async fn a_zero_idle_timeout_closes_cleanly_instead_of_crashing_the_connection() {
    let s = start(&["--idle-timeout", "0s"]).await;
    let mut c = ChatConn::open(&s.ws_url()).await.unwrap();
    // Idle at once: the connection task must close with 4008, not die.
    loop {
        match c.next_push().await {
            Ok(_) => continue,
            Err(ChatError::Closed {
                code: Some(4008), ..
            }) => break,
            Err(other) => panic!("expected close 4008, got {other:?}"),
        }
    }
}
