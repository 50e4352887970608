//! `imctl chaos` on the broker: the `ws.*` and `route.dead` fault rules,
//! added through `POST /_dev/faults` as a user would, against real sockets.
//! Each test checks the fault shows as specified and that nothing acked is
//! lost to it.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use imctl::client::chat::{ChatConn, ChatError, open_socket};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{TestServer, inbox_holds_exactly, start};

const ALICE: &str = "13800000001";
const BOB: &str = "13800000002";

/// Logs `mobile` in as `client`; (IM token, userId).
async fn login(s: &TestServer, mobile: &str, client: &str) -> (String, String) {
    let r = s
        .post(
            "/login",
            json!({"mobile": mobile, "code": "66666", "clientId": client, "platform": 2}),
            None,
        )
        .await;
    assert_eq!(r.code(), 0, "{}", r.body);
    let res = &r.body["result"];
    let field = |k: &str| res[k].as_str().unwrap().to_owned();
    assert_eq!(
        field("routeUrl"),
        format!("http://{}/route", s.running.broker_addr)
    );
    (field("token"), field("userId"))
}

/// `POST /route` on the broker, as a client asks it before connecting.
async fn route(s: &TestServer, token: &str, user: &str, client: &str) -> Value {
    let r: Value = s
        .http
        .post(format!("http://{}/route", s.running.broker_addr))
        .json(&json!({"userId": user, "clientId": client, "token": token}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["code"], 0, "{r}");
    r["result"].clone()
}

/// The next push that matters here (`presence` pushes come and go as
/// the test's own connections do).
async fn next_push(conn: &mut ChatConn) -> Value {
    loop {
        let v = conn.next_push().await.expect("a push");
        if v["op"] != "presence" {
            return v;
        }
    }
}

/// Reads until the server closes `conn`; the close code and reason.
async fn close_of(conn: &mut ChatConn) -> (Option<u16>, Option<String>) {
    loop {
        match conn.next_push().await {
            Ok(_) => continue,
            Err(ChatError::Closed { code, reason }) => return (code, reason),
            Err(e) => panic!("expected a close frame, got {e}"),
        }
    }
}

/// A `ping` answered with `pong`: the connection works.
async fn pings(conn: &mut ChatConn) {
    let pong = conn.request(json!({"op": "ping"})).await.unwrap();
    assert_eq!(pong["op"], "pong", "{pong}");
}

/// The value of one series in the app-server's `/metrics`, 0 when absent.
async fn metric(s: &TestServer, series: &str) -> f64 {
    let text = s.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

fn assert_fault(push: &Value, kind: &str) {
    assert_eq!(push["op"], "fault", "{push}");
    assert_eq!(push["kind"], kind, "{push}");
    assert!(push["rule"].as_u64().is_some(), "{push}");
}

#[tokio::test]
async fn ws_close_added_while_connected_closes_every_connection_of_the_user() {
    let s = start(&[]).await;
    let (mut phone, _) = s.chat(ALICE, "alice-phone").await;
    let (mut web, _) = s.chat(ALICE, "alice-web").await;
    let (mut bob, _) = s.chat(BOB, "bob-phone").await;
    let before = phone
        .send_text("single", "bob", "before the close", Some("close-1"))
        .await
        .unwrap();

    let info = s.add_fault("ws.close user=alice code=4009").await;
    // One fire bends all of alice's connections, and spends the one-shot rule.
    assert_eq!(
        (info["fired"].as_u64(), info["spent"].as_bool()),
        (Some(1), Some(true)),
        "{info}"
    );
    for conn in [&mut phone, &mut web] {
        let (code, reason) = close_of(conn).await;
        assert_eq!(code, Some(4009));
        let reason = reason.unwrap_or_default();
        assert!(reason.starts_with("injected"), "{reason}");
    }

    // Bob's connection is untouched: it still answers, and alice's message
    // reached it.
    pings(&mut bob).await;
    let msg = bob.next_op("msg").await.unwrap();
    assert_eq!(msg["message"]["msgId"], before.msg_id.as_str());
    let after = bob
        .send_text("single", "alice", "after the close", None)
        .await
        .unwrap();

    // The rule is spent: alice comes back, and has everything acked.
    let (mut again, _) = s.chat(ALICE, "alice-phone").await;
    pings(&mut again).await;
    inbox_holds_exactly(&mut again, &[before.msg_id, after.msg_id]).await;
}

#[tokio::test]
async fn ws_close_added_while_offline_closes_the_users_next_connection_on_its_next_frame() {
    let s = start(&[]).await;
    let (mut bob, _) = s.chat(BOB, "bob-phone").await;
    let acked = bob
        .send_text("single", "alice", "while alice is away", None)
        .await
        .unwrap();

    let info = s.add_fault("ws.close user=alice").await;
    // Nothing of alice's is live: the rule waits (bob does not match it).
    assert_eq!(
        (info["fired"].as_u64(), info["spent"].as_bool()),
        (Some(0), Some(false)),
        "{info}"
    );
    pings(&mut bob).await;

    let (mut alice, connected) = s.chat(ALICE, "alice-phone").await;
    assert_eq!(connected.head, 1);
    let r = alice.request(json!({"op": "ping"})).await;
    match r {
        Err(ChatError::Closed { code, reason }) => {
            // The default code is 4009.
            assert_eq!(code, Some(4009));
            let reason = reason.unwrap_or_default();
            assert!(reason.starts_with("injected"), "{reason}");
        }
        other => panic!("expected the injected close, got {other:?}"),
    }

    // One shot: the next connection stays, and the inbox is whole.
    let (mut alice, _) = s.chat(ALICE, "alice-phone").await;
    pings(&mut alice).await;
    inbox_holds_exactly(&mut alice, &[acked.msg_id]).await;
    pings(&mut bob).await;
}

#[tokio::test]
async fn ws_reset_ends_the_connection_without_a_close_frame() {
    let s = start(&[]).await;
    let (token, user) = login(&s, ALICE, "alice-raw").await;
    let r = route(&s, &token, &user, "alice-raw").await;
    let ws_url = r["wsUrl"].as_str().unwrap();
    // A raw socket: ChatConn cannot tell a missing close frame from an empty one.
    let mut ws = open_socket(ws_url).await.unwrap();
    let frames = [
        json!({"id": 1, "op": "connect", "token": token, "clientId": "alice-raw", "platform": 2}),
        json!({"id": 2, "op": "send", "conv": {"type": "single", "target": "bob"},
               "content": {"type": "text", "text": "before the reset"}, "clientMsgId": "reset-1"}),
    ];
    let mut acked = Vec::new();
    for frame in frames {
        let id = frame["id"].clone();
        ws.send(Message::text(frame.to_string())).await.unwrap();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .expect("a reply within 10 s")
                .unwrap()
                .unwrap();
            let v: Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
            if v["id"] == id {
                assert!(v["op"] == "connected" || v["op"] == "ack", "{v}");
                if let Some(m) = v["msgId"].as_str() {
                    acked.push(m.to_owned());
                }
                break;
            }
        }
    }
    let (mut bob, _) = s.chat(BOB, "bob-phone").await;

    let info = s.add_fault("ws.reset user=alice").await;
    assert_eq!(info["fired"], 1, "{info}");
    let end = loop {
        let next = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("the connection ends within 10 s");
        match next {
            Some(Ok(Message::Close(frame))) => panic!("a close frame: {frame:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => break format!("error: {e}"),
            None => break "end of stream".to_owned(),
        }
    };
    eprintln!("ws.reset: the client saw {end}");

    // Bob is untouched and has alice's message; alice comes back whole.
    pings(&mut bob).await;
    inbox_holds_exactly(&mut bob, &acked).await;
    let (mut alice, _) = s.chat(ALICE, "alice-phone").await;
    inbox_holds_exactly(&mut alice, &acked).await;
}

#[tokio::test]
async fn ws_freeze_holds_the_connection_for_its_length_then_it_works() {
    let s = start(&[]).await;
    let (mut alice, _) = s.chat(ALICE, "alice-phone").await;
    let (mut bob, _) = s.chat(BOB, "bob-phone").await;

    let added = Instant::now();
    let info = s.add_fault("ws.freeze user=alice for=1500ms").await;
    assert_eq!(info["fired"], 1, "{info}");
    // The fault push is written before the freeze.
    let push = next_push(&mut alice).await;
    assert_fault(&push, "ws.freeze");
    assert!(
        push["detail"].as_str().unwrap().contains("1500 ms"),
        "{push}"
    );

    let pushed = Instant::now();
    alice
        .send_raw(&json!({"id": 1000, "op": "ping"}).to_string())
        .await
        .unwrap();
    // Bob is not frozen; his message waits in alice's queue meanwhile.
    let during = bob
        .send_text("single", "alice", "during the freeze", None)
        .await
        .unwrap();
    let mut before_pong = Vec::new();
    loop {
        let v = alice.next_push().await.expect("the pong after the freeze");
        if v["id"] == 1000 {
            assert_eq!(v["op"], "pong", "{v}");
            break;
        }
        before_pong.push(v);
    }
    // The freeze began after the rule was posted and lasts 1.5 s; the fault
    // push was read a moment after it began (slack for that moment).
    assert!(
        added.elapsed() >= Duration::from_millis(1500),
        "pong after {:?}",
        added.elapsed()
    );
    assert!(
        pushed.elapsed() >= Duration::from_millis(1000),
        "pong {:?} after the fault push",
        pushed.elapsed()
    );

    // Afterwards: the held push arrives, and alice chats as before.
    let msg = match before_pong.into_iter().find(|v| v["op"] == "msg") {
        Some(msg) => msg,
        None => alice.next_op("msg").await.unwrap(),
    };
    assert_eq!(msg["message"]["msgId"], during.msg_id.as_str());
    let after = alice
        .send_text("single", "bob", "after the freeze", None)
        .await
        .unwrap();
    let msg = bob.next_op("msg").await.unwrap();
    assert_eq!(msg["message"]["msgId"], after.msg_id.as_str());
    inbox_holds_exactly(&mut alice, &[during.msg_id, after.msg_id]).await;
}

#[tokio::test]
async fn ws_delay_pushes_delivers_late_and_in_order_while_acks_come_at_once() {
    let s = start(&[]).await;
    let (mut alice, _) = s.chat(ALICE, "alice-phone").await;
    let (mut bob, _) = s.chat(BOB, "bob-phone").await;
    let info = s.add_fault("ws.delay-pushes user=bob ms=800").await;
    assert_eq!(info["spent"], false, "{info}");

    // Bob reads on his own, noting when each push arrives.
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut msgs = 0;
        while msgs < 3 {
            let push = next_push(&mut bob).await;
            msgs += usize::from(push["op"] == "msg");
            seen.push((Instant::now(), push));
        }
        (bob, seen)
    });
    let mut sent = Vec::new();
    for i in 0..3 {
        let at = Instant::now();
        let ack = alice
            .send_text("single", "bob", &format!("delayed {i}"), None)
            .await
            .unwrap();
        sent.push((at, Instant::now(), ack));
    }
    let (mut bob, seen) = reader.await.unwrap();

    let msgs: Vec<(usize, Instant, &Value)> = seen
        .iter()
        .enumerate()
        .filter(|(_, (_, p))| p["op"] == "msg")
        .map(|(i, (at, p))| (i, *at, p))
        .collect();
    let seqs: Vec<i64> = msgs
        .iter()
        .map(|(_, _, p)| p["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3], "in order");
    for ((i, arrived, push), (sent_at, acked_at, ack)) in msgs.iter().zip(&sent) {
        assert_eq!(push["message"]["msgId"], ack.msg_id.as_str());
        let late = arrived.duration_since(*sent_at);
        assert!(
            late >= Duration::from_millis(800),
            "push {i} after {late:?}"
        );
        // The ack is not held back with the push.
        assert!(acked_at < arrived, "ack after bob's push");
        // A fault push told bob before the delayed one came.
        let seq = push["seq"].as_i64().unwrap();
        let told = seen[..*i].iter().any(|(_, p)| {
            p["op"] == "fault"
                && p["kind"] == "ws.delay-pushes"
                && p["detail"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("seq {seq} "))
        });
        assert!(told, "no fault push before seq {seq}: {seen:?}");
    }

    // A push still held when the rule is cleared is not overtaken by the
    // next one, which itself is not bent (no fault push names it).
    let held = alice
        .send_text("single", "bob", "held when cleared", None)
        .await
        .unwrap();
    assert_eq!(s.clear_faults(None).await, 1);
    let straight = alice
        .send_text("single", "bob", "after the clear", None)
        .await
        .unwrap();
    let mut after = Vec::new();
    while after.len() < 2 {
        let push = next_push(&mut bob).await;
        if push["op"] == "fault" {
            let detail = push["detail"].as_str().unwrap();
            assert!(!detail.contains("seq 5 "), "{push}");
            continue;
        }
        assert_eq!(push["op"], "msg", "{push}");
        after.push((
            push["seq"].as_i64().unwrap(),
            push["message"]["msgId"].clone(),
        ));
    }
    assert_eq!(
        after,
        [
            (4, json!(held.msg_id.as_str())),
            (5, json!(straight.msg_id.as_str()))
        ],
        "in order across the clear"
    );
    let all: Vec<String> = sent
        .into_iter()
        .map(|(_, _, a)| a.msg_id)
        .chain([held.msg_id, straight.msg_id])
        .collect();
    inbox_holds_exactly(&mut bob, &all).await;
}

#[tokio::test]
async fn ws_drop_pushes_sends_fault_pushes_instead_and_sync_brings_everything_back() {
    let s = start(&[]).await;
    let (mut alice, _) = s.chat(ALICE, "alice-phone").await;
    let (mut bob, connected) = s.chat(BOB, "bob-phone").await;
    let first = alice
        .send_text("single", "bob", "before the rule", None)
        .await
        .unwrap();
    let seen = bob.next_op("msg").await.unwrap()["seq"].as_i64().unwrap();
    assert_eq!(seen, connected.head + 1);

    s.add_fault("ws.drop-pushes user=bob").await;
    let mut dropped = Vec::new();
    for i in 0..3 {
        let ack = alice
            .send_text("single", "bob", &format!("dropped {i}"), None)
            .await
            .unwrap();
        dropped.push(ack.msg_id);
    }
    // In place of each msg push, in order: a fault push naming its seq.
    for i in 1..=3 {
        let push = next_push(&mut bob).await;
        assert_fault(&push, "ws.drop-pushes");
        let detail = push["detail"].as_str().unwrap();
        assert!(detail.contains(&format!("seq {} ", seen + i)), "{push}");
    }
    // Nothing lost: sync from bob's last seq returns all three.
    let page = bob
        .request(json!({"op": "sync", "since": seen}))
        .await
        .unwrap();
    let got: Vec<(i64, &str)> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["seq"].as_i64().unwrap(),
                e["message"]["msgId"].as_str().unwrap(),
            )
        })
        .collect();
    let want: Vec<(i64, &str)> = (1..=3)
        .map(|i| seen + i)
        .zip(dropped.iter().map(String::as_str))
        .collect();
    assert_eq!(got, want);
    assert!(
        metric(&s, "imctl_faults_injected_total{kind=\"ws.drop-pushes\"}").await >= 3.0,
        "three drops counted"
    );

    // Cleared: msg pushes flow again (the next push is the next message,
    // so no dropped one sneaked through before it).
    assert_eq!(s.clear_faults(None).await, 1);
    let last = alice
        .send_text("single", "bob", "after the clear", None)
        .await
        .unwrap();
    let push = next_push(&mut bob).await;
    assert_eq!(
        (push["op"].as_str(), push["seq"].as_i64()),
        (Some("msg"), Some(seen + 4)),
        "{push}"
    );
    assert_eq!(push["message"]["msgId"], last.msg_id.as_str());
    let mut all = vec![first.msg_id];
    all.extend(dropped);
    all.push(last.msg_id);
    inbox_holds_exactly(&mut bob, &all).await;
}

#[tokio::test]
async fn ws_fail_ack_after_the_commit_stores_once_and_the_resend_gets_the_same_message() {
    let s = start(&[]).await;
    let (mut alice, _) = s.chat(ALICE, "alice-phone").await;
    let (mut bob, _) = s.chat(BOB, "bob-phone").await;
    s.add_fault("ws.fail-ack user=alice").await;

    let r = alice
        .send_text("single", "bob", "stored, not acked", Some("fail-after-1"))
        .await;
    match r {
        Err(ChatError::Refused { code, message }) => {
            assert_eq!(code, 500);
            assert!(message.starts_with("injected"), "{message}");
            assert!(message.contains("clientMsgId"), "{message}");
        }
        other => panic!("expected error 500, got {other:?}"),
    }
    // Committed all the same: bob has it.
    let push = bob.next_op("msg").await.unwrap();
    let stored = push["message"]["msgId"].as_str().unwrap().to_owned();
    assert_eq!(push["message"]["clientMsgId"], "fail-after-1");

    // The resend is answered with the stored message (one shot: no error now).
    let ack = alice
        .send_text("single", "bob", "stored, not acked", Some("fail-after-1"))
        .await
        .unwrap();
    assert_eq!(ack.msg_id, stored);
    assert!(ack.duplicate, "{ack:?}");
    inbox_holds_exactly(&mut bob, std::slice::from_ref(&stored)).await;
    inbox_holds_exactly(&mut alice, &[stored]).await;
    assert_eq!(
        metric(&s, "imctl_faults_injected_total{kind=\"ws.fail-ack\"}").await,
        1.0
    );
}

#[tokio::test]
async fn ws_fail_ack_before_the_commit_stores_nothing_and_the_resend_is_stored_once() {
    let s = start(&[]).await;
    let (mut alice, _) = s.chat(ALICE, "alice-phone").await;
    let (mut bob, _) = s.chat(BOB, "bob-phone").await;
    s.add_fault("ws.fail-ack user=alice when=before").await;

    let r = alice
        .send_text("single", "bob", "not stored", Some("fail-before-1"))
        .await;
    match r {
        Err(ChatError::Refused { code, message }) => {
            assert_eq!(code, 500);
            assert!(message.contains("before the commit"), "{message}");
            assert!(message.contains("clientMsgId"), "{message}");
        }
        other => panic!("expected error 500, got {other:?}"),
    }
    // Nothing stored: bob's inbox is still empty.
    let page = bob
        .request(json!({"op": "sync", "since": 0}))
        .await
        .unwrap();
    assert_eq!(
        (
            page["entries"].as_array().map(Vec::len),
            page["head"].as_i64()
        ),
        (Some(0), Some(0)),
        "{page}"
    );

    let ack = alice
        .send_text("single", "bob", "not stored", Some("fail-before-1"))
        .await
        .unwrap();
    assert!(!ack.duplicate, "the first one was not stored: {ack:?}");
    // Bob's first msg push is the resend's: none came for the failed send.
    let push = bob.next_op("msg").await.unwrap();
    assert_eq!(
        (push["seq"].as_i64(), push["message"]["msgId"].as_str()),
        (Some(1), Some(ack.msg_id.as_str()))
    );
    inbox_holds_exactly(&mut bob, std::slice::from_ref(&ack.msg_id)).await;
    inbox_holds_exactly(&mut alice, &[ack.msg_id]).await;
}

#[tokio::test]
async fn ws_refuse_connect_refuses_the_user_with_1013_until_cleared() {
    let s = start(&[]).await;
    // A window long enough that a slow machine stays inside it; the test
    // clears the rule itself.
    let info = s.add_fault("ws.refuse-connect user=alice for=60s").await;
    let id = info["id"].as_u64().unwrap();

    let (token, user) = login(&s, ALICE, "alice-phone").await;
    let ws_url = route(&s, &token, &user, "alice-phone").await["wsUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    // An error frame answers connect, then the close.
    let mut conn = ChatConn::open(&ws_url).await.unwrap();
    let reply = conn
        .request_raw(
            &mut json!({"op": "connect", "token": token, "clientId": "alice-phone", "platform": 2}),
        )
        .await
        .unwrap();
    assert_eq!(
        (reply["op"].as_str(), reply["code"].as_i64()),
        (Some("error"), Some(503)),
        "{reply}"
    );
    assert!(
        reply["message"].as_str().unwrap().starts_with("injected"),
        "{reply}"
    );
    let (code, reason) = close_of(&mut conn).await;
    assert_eq!(code, Some(1013));
    assert!(reason.unwrap_or_default().starts_with("injected"));
    // Lasting: refused again.
    match ChatConn::connect(&ws_url, &token, "alice-phone", 2).await {
        Err(ChatError::Refused { code, .. }) => assert_eq!(code, 503),
        Ok(_) => panic!("alice connected while refused"),
        Err(e) => panic!("expected error 503, got {e}"),
    }

    // Others connect as usual.
    let (mut bob, _) = s.chat(BOB, "bob-phone").await;
    let acked = bob
        .send_text("single", "alice", "while alice is refused", None)
        .await
        .unwrap();

    assert_eq!(s.clear_faults(Some(id)).await, 1);
    let (mut alice, connected) = s.chat(ALICE, "alice-phone").await;
    assert_eq!(connected.head, 1);
    inbox_holds_exactly(&mut alice, &[acked.msg_id]).await;
    assert_eq!(
        metric(
            &s,
            "imctl_faults_injected_total{kind=\"ws.refuse-connect\"}"
        )
        .await,
        2.0
    );
}

#[tokio::test]
async fn ws_refuse_connect_for_a_window_ends_with_it() {
    let s = start(&[]).await;
    let added = Instant::now();
    s.add_fault("ws.refuse-connect user=alice for=2s").await;
    // Past the window (a lower bound only), alice connects.
    tokio::time::sleep(Duration::from_millis(2100).saturating_sub(added.elapsed())).await;
    let (mut alice, _) = s.chat(ALICE, "alice-phone").await;
    pings(&mut alice).await;
}

#[tokio::test]
async fn route_dead_hands_out_a_port_where_nothing_listens_once() {
    let s = start(&[]).await;
    let broker_port = s.running.broker_addr.port();
    let info = s.add_fault("route.dead user=alice times=1").await;
    assert_eq!(info["remaining"], 1, "{info}");

    // Bob's /route is not in its scope and does not spend it.
    let (bob_token, bob) = login(&s, BOB, "bob-phone").await;
    let r = route(&s, &bob_token, &bob, "bob-phone").await;
    assert_eq!(r["port"], broker_port, "{r}");

    let (token, user) = login(&s, ALICE, "alice-phone").await;
    let dead = route(&s, &token, &user, "alice-phone").await;
    let port = dead["port"].as_u64().unwrap() as u16;
    assert_ne!(port, broker_port, "{dead}");
    let ws_url = dead["wsUrl"].as_str().unwrap();
    assert!(ws_url.contains(&format!(":{port}/")), "{dead}");
    let refused = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
    assert_eq!(
        refused.map(drop).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionRefused)
    );
    assert!(matches!(
        ChatConn::open(ws_url).await,
        Err(ChatError::Connect { .. })
    ));

    // Spent: the next /route is the real broker, and alice connects there.
    let live = route(&s, &token, &user, "alice-phone").await;
    assert_eq!(live["port"], broker_port, "{live}");
    let (mut alice, _) =
        ChatConn::connect(live["wsUrl"].as_str().unwrap(), &token, "alice-phone", 2)
            .await
            .unwrap();
    pings(&mut alice).await;
    assert_eq!(
        metric(&s, "imctl_faults_injected_total{kind=\"route.dead\"}").await,
        1.0
    );
}

#[tokio::test]
async fn injected_faults_are_counted_by_kind_in_metrics() {
    let s = start(&[]).await;
    let (mut alice, _) = s.chat(ALICE, "alice-phone").await;
    let (mut bob, _) = s.chat(BOB, "bob-phone").await;
    let series = |kind: &str| format!("imctl_faults_injected_total{{kind=\"{kind}\"}}");
    assert_eq!(metric(&s, &series("ws.drop-pushes")).await, 0.0);

    s.add_fault("ws.drop-pushes user=bob").await;
    for i in 0..4 {
        alice
            .send_text("single", "bob", &format!("m{i}"), None)
            .await
            .unwrap();
    }
    for _ in 0..4 {
        assert_fault(&next_push(&mut bob).await, "ws.drop-pushes");
    }
    s.add_fault("ws.close user=alice").await;
    assert_eq!(close_of(&mut alice).await.0, Some(4009));

    assert!(metric(&s, &series("ws.drop-pushes")).await >= 4.0);
    assert_eq!(metric(&s, &series("ws.close")).await, 1.0);
    // The same injections are listed for `imctl chaos list`.
    let list: Value = s.get("/_dev/faults").await.json().await.unwrap();
    let kinds: Vec<&str> = list["injected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "ws.drop-pushes").count(),
        4,
        "{list}"
    );
    assert_eq!(kinds.first(), Some(&"ws.close"), "newest first: {list}");
}

#[tokio::test]
async fn adding_a_rule_applies_that_rule_alone_at_once() {
    // A rule from the start waits for alice's next frame…
    let s = start(&["--fault", "ws.close user=alice code=4000"]).await;
    let (mut alice, _) = s.chat(ALICE, "alice-phone").await;
    // …and adding another rule does not fire it.
    s.add_fault("api.code path=/login code=6").await;
    s.add_fault("ws.freeze user=carol for=1s").await;
    let list = s.get("/_dev/faults").await.json::<Value>().await.unwrap();
    assert_eq!(list["rules"][0]["fired"], 0, "{list}");
    // Her next frame does.
    alice
        .notify(json!({"op": "typing", "conv": {"type": "single", "target": "bob"}}))
        .await
        .unwrap();
    assert_eq!(close_of(&mut alice).await.0, Some(4000));
}

#[tokio::test]
async fn a_connection_closed_with_pushes_held_back_closes_with_4009() {
    let s = start(&[]).await;
    let (mut alice, _) = s.chat(ALICE, "alice-phone").await;
    let (mut bob, _) = s.chat(BOB, "bob-phone").await;
    s.add_fault("ws.delay-pushes user=bob ms=20000").await;
    alice
        .send_text("single", "bob", "held back", None)
        .await
        .unwrap();
    assert_fault(&next_push(&mut bob).await, "ws.delay-pushes");
    // A close asked with 1000 would hide the held push: it must be 4009.
    s.add_fault("ws.close user=bob code=1000").await;
    assert_eq!(close_of(&mut bob).await.0, Some(4009));
    // Nothing is lost: the message is in bob's inbox.
    let (mut again, _) = s.chat(BOB, "bob-phone").await;
    let synced = again
        .request(json!({"op": "sync", "since": 0}))
        .await
        .unwrap();
    assert_eq!(synced["entries"].as_array().unwrap().len(), 1, "{synced}");
}
