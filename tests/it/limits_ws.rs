//! Hostile and broken WebSocket clients (issue 14): every connection is
//! bounded in bytes and in time, and told why it is closed.

use std::time::{Duration, Instant};

use imctl::client::chat::{ChatConn, ChatError, open_socket};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{Served, TestServer, start};

/// A user's IM token from a spawned server.
async fn token(app: &str, mobile: &str) -> String {
    crate::common::login_at(app, mobile, "c-1").await["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Reads whatever `conn` still has until the server's close; the close
/// code, or `None` when the TCP connection was dropped. Fails if it is
/// still open after `within`.
async fn closed_within(conn: &mut ChatConn, within: Duration) -> Option<u16> {
    let started = Instant::now();
    conn.set_timeout(within);
    loop {
        assert!(
            started.elapsed() < within,
            "still open after {within:?} (frames still arriving)"
        );
        match conn.next_push().await {
            Ok(_) => continue,
            Err(ChatError::Closed { code, .. }) => return code,
            Err(ChatError::Socket(_)) => return None,
            Err(e) => panic!("still open after {within:?}: {e}"),
        }
    }
}

fn close_code(r: Result<Value, ChatError>) -> Option<u16> {
    match r {
        Err(ChatError::Closed { code, .. }) => code,
        other => panic!("expected the connection closed, got {other:?}"),
    }
}

/// The error frame a `request` got back.
fn refused(r: Result<Value, ChatError>) -> (i64, String) {
    match r {
        Err(ChatError::Refused { code, message }) => (code, message),
        other => panic!("expected an error frame, got {other:?}"),
    }
}

/// Stores `n` messages of `size` bytes from alice to bob.
async fn store_big_messages(ws: &str, app: &str, n: usize, size: usize) {
    let (mut alice, _) = ChatConn::connect(ws, &token(app, "13800000001").await, "a", 2)
        .await
        .unwrap();
    let text = "x".repeat(size);
    for _ in 0..n {
        alice.send_text("single", "bob", &text, None).await.unwrap();
    }
    alice.close().await;
}

#[tokio::test]
async fn clients_that_stop_reading_are_closed_and_memory_stays_bounded() {
    // The scenario scaled down: 10 sockets ask for 3 MB pages and
    // never read. Before: never closed, queues and blocked writes held.
    let served = Served::start(&[
        "--ephemeral",
        "--app-port",
        "0",
        "--broker-port",
        "0",
        "--write-timeout",
        "2s",
    ]);
    store_big_messages(&served.ws, &served.app, 50, 60_000).await;
    let bob = token(&served.app, "13800000002").await;
    let before = served.rss();
    let mut conns = Vec::new();
    for i in 0..10 {
        let (mut c, _) = ChatConn::connect(&served.ws, &bob, &format!("b{i}"), 2)
            .await
            .unwrap();
        for id in 0..6 {
            c.send_raw(&json!({"op": "sync", "id": id, "since": 0, "limit": 50}).to_string())
                .await
                .unwrap();
        }
        conns.push(c);
    }
    // Write timeout (2 s) + the close (≤ 5 s) + slack.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let peak = served.rss();
    for c in &mut conns {
        let code = closed_within(c, Duration::from_secs(10)).await;
        assert!(
            matches!(code, None | Some(4009)),
            "closed with {code:?}, not 4009"
        );
    }
    let grown = peak.saturating_sub(before) / (1024 * 1024);
    eprintln!(
        "RSS {} → {} MiB while 10 sockets did not read",
        before >> 20,
        peak >> 20
    );
    assert!(grown < 150, "RSS grew {grown} MiB");
}

#[tokio::test]
async fn a_write_not_taken_within_the_write_timeout_closes_the_socket() {
    // A queue budget too large to matter: only --write-timeout can end it.
    let served = Served::start(&[
        "--ephemeral",
        "--app-port",
        "0",
        "--broker-port",
        "0",
        "--write-timeout",
        "1s",
        "--queue-bytes",
        "200000000",
    ]);
    store_big_messages(&served.ws, &served.app, 50, 60_000).await;
    let bob = token(&served.app, "13800000002").await;
    let (mut c, _) = ChatConn::connect(&served.ws, &bob, "b", 2).await.unwrap();
    for id in 0..10 {
        c.send_raw(&json!({"op": "sync", "id": id, "since": 0, "limit": 50}).to_string())
            .await
            .unwrap();
    }
    // 1 s to write, ≤ 1 s for the close frame, then the TCP connection goes.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let code = closed_within(&mut c, Duration::from_secs(10)).await;
    assert!(matches!(code, None | Some(4009)), "closed with {code:?}");
}

#[tokio::test]
async fn a_ban_closes_a_socket_whose_writes_are_blocked() {
    // A generous queue and write timeout: only the ban can end this one.
    let served = Served::start(&[
        "--ephemeral",
        "--app-port",
        "0",
        "--broker-port",
        "0",
        "--write-timeout",
        "60s",
        "--queue-bytes",
        "200000000",
        "--admin-secret",
        "s3cret",
    ]);
    store_big_messages(&served.ws, &served.app, 50, 60_000).await;
    let bob = token(&served.app, "13800000002").await;
    let (mut c, _) = ChatConn::connect(&served.ws, &bob, "b", 2).await.unwrap();
    for id in 0..10 {
        c.send_raw(&json!({"op": "sync", "id": id, "since": 0, "limit": 50}).to_string())
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r: Value = reqwest::Client::new()
        .post(format!("{}/admin/users/bob/ban", served.app))
        .header("x-admin-secret", "s3cret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["closedConnections"], 1, "{r}");
    // The flush (3 s) gives up, then the TCP connection is dropped.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let code = closed_within(&mut c, Duration::from_secs(10)).await;
    assert!(matches!(code, None | Some(4003)), "closed with {code:?}");
}

#[tokio::test]
async fn a_socket_that_never_connects_is_closed_at_the_connect_deadline() {
    let s = start(&["--connect-timeout", "1s"]).await;
    let mut c = ChatConn::open(&s.ws_url()).await.unwrap();
    c.set_timeout(Duration::from_secs(5));
    let started = Instant::now();
    // The client answers the server's pings meanwhile; that is not enough.
    assert_eq!(close_code(c.next_push().await), Some(4001));
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn a_socket_is_closed_when_its_token_expires() {
    let s = start(&["--token-ttl", "2s"]).await;
    let (mut c, _) = s.chat("13800000001", "a").await;
    c.set_timeout(Duration::from_secs(6));
    let started = Instant::now();
    match c.next_push().await {
        Err(ChatError::Closed { code, reason }) => {
            assert_eq!(code, Some(4001));
            assert!(reason.unwrap().contains("token expired"));
        }
        other => panic!("expected close 4001, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

async fn connect_raw(s: &TestServer, frame: Value) -> (ChatConn, Result<Value, ChatError>) {
    let mut c = ChatConn::open(&s.ws_url()).await.unwrap();
    let r = c.request(frame).await;
    (c, r)
}

#[tokio::test]
async fn connect_refuses_unknown_platforms_and_bad_client_ids() {
    let s = start(&[]).await;
    let (_, login) = s.login("13800000001").await;
    let token = login["token"].as_str().unwrap();
    for (platform, client_id) in [(-1, "c"), (0, "c"), (1000, "c"), (2, "a\u{1b}[31mb\nc")] {
        let (mut c, r) = connect_raw(
            &s,
            json!({"op": "connect", "token": token, "clientId": client_id, "platform": platform}),
        )
        .await;
        let (code, message) = refused(r);
        assert_eq!(code, 400, "{platform} {client_id:?}: {message}");
        assert_eq!(close_code(c.next_push().await), Some(4001));
    }
    let long = "x".repeat(200);
    let (_, r) = connect_raw(
        &s,
        json!({"op": "connect", "token": token, "clientId": long, "platform": 2}),
    )
    .await;
    assert!(refused(r).1.contains("clientId"));
}

#[tokio::test]
async fn a_user_has_at_most_max_connections_per_user() {
    let s = start(&["--max-connections-per-user", "3"]).await;
    let mut conns = Vec::new();
    for i in 0..3 {
        conns.push(s.chat("13800000001", &format!("c{i}")).await.0);
    }
    let (_, login) = s.login("13800000001").await;
    let frame = json!({"op": "connect", "token": login["token"], "platform": 2});
    let (mut c, r) = connect_raw(&s, frame.clone()).await;
    let (code, message) = refused(r);
    assert_eq!(code, 429, "{message}");
    assert!(message.contains("--max-connections-per-user"), "{message}");
    assert_eq!(close_code(c.next_push().await), Some(4029));
    // Another user is not affected; a freed slot can be taken.
    s.chat("13800000002", "b").await;
    conns.pop().unwrap().close().await;
    let mut ok = false;
    for _ in 0..50 {
        if connect_raw(&s, frame.clone()).await.1.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "a closed connection frees its slot");
}

#[tokio::test]
async fn presence_frames_to_a_users_devices_are_coalesced() {
    let s = start(&["--max-connections-per-user", "100"]).await;
    let (mut observer, _) = s.chat("13800000001", "observer").await;
    let (_, login) = s.login("13800000001").await;
    let token = login["token"].as_str().unwrap();
    let started = Instant::now();
    // Connections on changing platforms come and go: before, each one sent
    // two presence frames to every other device of the user.
    let cycles = 40;
    let mut last = None;
    for i in 0..cycles {
        let platform = [1, 3, 4, 5, 6, 7, 8, 9][i % 8];
        let (c, _) = ChatConn::connect(&s.ws_url(), token, &format!("c{i}"), platform)
            .await
            .unwrap();
        if let Some(c) = last.replace(c) {
            c.close().await;
        }
    }
    let elapsed = started.elapsed();
    // Read until a quiet second: the last (coalesced) announcement is in.
    observer.set_timeout(Duration::from_secs(1));
    let mut frames = Vec::new();
    while let Ok(v) = observer.next_push().await {
        if v["op"] == "presence" {
            frames.push(v);
        }
    }
    let bound = 2 * (elapsed.as_millis() / 500) as usize + 4;
    eprintln!(
        "{} presence frames for {cycles} connections in {elapsed:?}",
        frames.len()
    );
    assert!(
        frames.len() <= bound.min(cycles),
        "{} presence frames in {elapsed:?}",
        frames.len()
    );
    // The one left open (platform 9) is announced, however coalesced.
    let state = frames.last().expect("the final state is announced");
    assert_eq!(state["platforms"], json!([2, 9]), "{state}");
}

#[tokio::test]
async fn typing_is_limited_per_connection_across_conversations() {
    let s = start(&[]).await;
    let mut groups = Vec::new();
    for i in 0..12 {
        groups.push(s.group("13800000001", &format!("g{i}"), &["bob"]).await);
    }
    let (mut alice, _) = s.chat("13800000001", "a").await;
    let (mut bob, _) = s.chat("13800000002", "b").await;
    for g in &groups {
        alice
            .notify(json!({"op": "typing", "conv": {"type": "group", "target": g}}))
            .await
            .unwrap();
    }
    alice.send_text("single", "bob", "end", None).await.unwrap();
    let mut typing = 0;
    loop {
        let v = bob.next_push().await.unwrap();
        if v["op"] == "msg" && v["message"]["content"]["text"] == "end" {
            break;
        }
        typing += usize::from(v["op"] == "typing");
    }
    assert_eq!(typing, 8, "8 conversations per 2 s per connection");
}

#[tokio::test]
async fn friends_only_covers_groups_and_typing() {
    let s = start(&["--friends-only"]).await;
    let (mut alice, _) = s.chat("13800000001", "a").await;
    let (mut bob, _) = s.chat("13800000002", "b").await;
    let (code, message) = refused(
        alice
            .request(json!({"op": "group.create", "name": "g", "members": ["bob"]}))
            .await,
    );
    assert_eq!(code, 403, "{message}");
    assert!(message.contains("--friends-only"), "{message}");
    let g = alice
        .request(json!({"op": "group.create", "name": "g", "members": []}))
        .await
        .unwrap()["group"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let add = json!({"op": "group.add", "group": g, "members": ["bob"]});
    assert_eq!(refused(alice.request(add.clone()).await).0, 403);
    alice
        .notify(json!({"op": "typing", "conv": {"type": "single", "target": "bob"}}))
        .await
        .unwrap();
    let e = alice.next_op("error").await.unwrap();
    assert_eq!(e["code"], 403, "{e}");

    alice
        .request(json!({"op": "friend.request", "target": "bob"}))
        .await
        .unwrap();
    bob.request(json!({"op": "friend.accept", "from": "alice"}))
        .await
        .unwrap();
    alice.request(add).await.unwrap();
    alice
        .notify(json!({"op": "typing", "conv": {"type": "single", "target": "bob"}}))
        .await
        .unwrap();
    bob.next_op("typing").await.unwrap();
}

#[tokio::test]
async fn deeply_nested_content_and_script_urls_are_refused_and_not_stored() {
    let s = start(&[]).await;
    let (mut alice, _) = s.chat("13800000001", "a").await;
    let mut deep = json!(1);
    for _ in 0..125 {
        deep = json!([deep]);
    }
    for content in [
        json!({"type": "custom", "data": deep}),
        json!({"type": "image", "url": "javascript:alert(1)", "w": 1, "h": 1, "size": 1}),
        json!({"type": "file", "url": "/media/x", "name": "a\u{1b}]0;pwned\u{7}", "size": 1}),
    ] {
        let (code, message) = refused(
            alice
                .request(json!({"op": "send", "conv": {"type": "single", "target": "bob"}, "content": content}))
                .await,
        );
        assert_eq!(code, 400, "{message}");
    }
    let synced = alice
        .request(json!({"op": "sync", "since": 0}))
        .await
        .unwrap();
    assert_eq!(synced["head"], 0, "nothing stored: {synced}");
}

/// Opens a WebSocket by hand, so a test can send frames no client library would.
async fn raw_upgrade(s: &TestServer) -> tokio::net::TcpStream {
    let mut tcp = tokio::net::TcpStream::connect(s.running.broker_addr)
        .await
        .unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        s.running.broker_addr
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.unwrap());
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    tcp
}

/// A masked client frame with this first byte and payload.
fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut f = vec![first, 0x80 | payload.len() as u8];
    f.extend(mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

#[tokio::test]
async fn websocket_protocol_violations_are_closed_with_1002_or_1007() {
    let s = start(&[]).await;
    let cases: [(&str, Vec<u8>, u16); 4] = [
        (
            "bad UTF-8 in a text frame",
            masked(0x81, &[0xff, 0xfe]),
            1007,
        ),
        (
            "an unmasked client frame",
            vec![0x81, 0x02, b'h', b'i'],
            1002,
        ),
        ("reserved bits", masked(0xC1, b"hi"), 1002),
        ("an unknown opcode", masked(0x83, b"hi"), 1002),
    ];
    for (what, frame, want) in cases {
        let mut tcp = raw_upgrade(&s).await;
        tcp.write_all(&frame).await.unwrap();
        let mut reply = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut reply))
            .await
            .unwrap_or_else(|_| panic!("{what}: no close frame"))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(reply[0], 0x88, "{what}: a close frame");
        let code = u16::from_be_bytes([reply[2], reply[3]]);
        assert_eq!(code, want, "{what}");
    }
}

#[tokio::test]
async fn every_send_stored_before_a_shutdown_is_acked_before_the_1001() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let args = ["--data-dir", data, "--app-port", "0", "--broker-port", "0"];
    let mut served = Served::start(&args);
    let im = token(&served.app, "13800000001").await;
    let ws = open_socket(&served.ws).await.unwrap();
    let (mut tx, mut rx) = ws.split();
    tx.send(Message::text(
        json!({"op": "connect", "token": im, "platform": 2}).to_string(),
    ))
    .await
    .unwrap();
    let connected = rx.next().await.unwrap().unwrap();
    assert!(connected.to_text().unwrap().contains("connected"));
    // The reader takes its time: a client that reads a little slowly.
    let reader = tokio::spawn(async move {
        let (mut acked, mut close) = (Vec::new(), None);
        while let Some(Ok(m)) = rx.next().await {
            match m {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    assert!(close.is_none());
                    if v["op"] == "ack" {
                        acked.push(v["id"].as_u64().unwrap());
                    }
                }
                Message::Close(f) => close = f.map(|f| u16::from(f.code)),
                _ => {}
            }
            if acked.len() % 500 == 499 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        (acked, close)
    });
    let pid = served.pid() as i32;
    let writer = tokio::spawn(async move {
        for i in 1..=20_000u64 {
            if i == 2_000 {
                // SAFETY: kill(2) on the child we spawned.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let send = json!({"op": "send", "id": i, "clientMsgId": format!("c{i}"), "conv": {"type": "single", "target": "bob"}, "content": {"type": "text", "text": format!("m{i}")}});
            if tx.send(Message::text(send.to_string())).await.is_err() {
                break;
            }
        }
    });
    let (acked, close) = tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .expect("the connection ends within the shutdown deadline")
        .unwrap();
    writer.abort();
    served.child.wait().unwrap();
    assert_eq!(close, Some(1001), "{} acks", acked.len());

    let served = Served::start(&args);
    let im = token(&served.app, "13800000001").await;
    let (mut alice, _) = ChatConn::connect(&served.ws, &im, "a", 2).await.unwrap();
    let mut stored = std::collections::BTreeSet::new();
    let mut since = 0;
    loop {
        let page = alice
            .request(json!({"op": "sync", "since": since, "limit": 1000}))
            .await
            .unwrap();
        for e in page["entries"].as_array().unwrap() {
            let c = e["message"]["clientMsgId"].as_str().unwrap();
            stored.insert(c[1..].parse::<u64>().unwrap());
            since = e["seq"].as_i64().unwrap();
        }
        if page["more"] != true {
            break;
        }
    }
    let acked: std::collections::BTreeSet<u64> = acked.into_iter().collect();
    eprintln!(
        "{} stored, {} acked before the 1001",
        stored.len(),
        acked.len()
    );
    assert!(!acked.is_empty());
    assert_eq!(
        acked, stored,
        "every acked send is stored and every stored send was acked"
    );
}

#[tokio::test]
async fn admin_messages_follow_the_content_rules_and_max_frame() {
    let s = start(&["--admin-secret", "s3cret", "--max-frame", "1024"]).await;
    let post = |text: String| {
        s.http
            .post(format!("{}/admin/messages", s.url))
            .header("x-admin-secret", "s3cret")
            .json(&json!({"to": {"type": "single", "target": "bob"}, "text": text}))
            .send()
    };
    let r = post("x".repeat(2000)).await.unwrap();
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.unwrap();
    assert!(body.to_string().contains("--max-frame"), "{body}");
    assert_eq!(post("  ".into()).await.unwrap().status(), 400);
    assert_eq!(post("hello".into()).await.unwrap().status(), 200);
}

#[tokio::test]
async fn websockets_beyond_max_websockets_get_a_503_until_one_closes() {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let s = start(&["--max-websockets", "2"]).await;
    let url = s.ws_url();
    // Sockets that never `connect` hold a slot too: that is what the cap is for.
    let first = open_socket(&url).await.unwrap();
    let _second = open_socket(&url).await.unwrap();
    match open_socket(&url).await {
        Err(WsError::Http(resp)) => {
            assert_eq!(resp.status(), 503);
            let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default());
            assert!(body.contains("--max-websockets"), "{body}");
        }
        other => panic!("a third WebSocket was not refused: {:?}", other.map(|_| ())),
    }
    drop(first);
    // The slot comes back when the connection task ends.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match open_socket(&url).await {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the closed socket's slot never came back: {e}"),
        }
    }
}

#[tokio::test]
async fn names_remarks_and_portraits_refuse_control_characters_and_foreign_hosts() {
    let s = start(&[]).await;
    let (mut alice, _) = s.chat("13800000001", "names").await;
    let refused = [
        json!({"op": "profile.update", "displayName": "a\u{1b}[2Jb"}),
        json!({"op": "profile.update", "displayName": "two\nlines"}),
        json!({"op": "profile.update", "portrait": "//evil.example/p.png"}),
        json!({"op": "profile.update", "portrait": "/\\evil.example/p.png"}),
        json!({"op": "group.create", "name": "bad\u{7}name", "members": ["bob"]}),
        json!({"op": "friend.request", "target": "carol", "remark": "hi\r\nforged"}),
    ];
    for frame in refused {
        let r = alice.request_raw(&mut frame.clone()).await.unwrap();
        assert_eq!(r["op"], "error", "{frame} was accepted: {r}");
        assert_eq!(r["code"], 400, "{frame}: {r}");
    }
    let ok = alice
        .request(
            json!({"op": "profile.update", "displayName": "Alice A.", "portrait": "/media/abc"}),
        )
        .await
        .unwrap();
    assert_eq!(ok["op"], "profile.update", "{ok}");
}
