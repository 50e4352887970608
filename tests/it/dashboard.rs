//! The dev dashboard's data: `GET /_dev/feed` (live snapshots) and the phone
//! buttons (`POST /_dev/pc_sessions/{token}/{action}`).

use serde_json::{Value, json};

use crate::common::{Events, TestServer, start, until_polling};

async fn feed(s: &TestServer) -> Events {
    Events::new(s.get("/_dev/feed").await)
}

/// The next snapshot for which `check` holds.
async fn until(events: &mut Events, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..20 {
        let (name, snap) = events.next().await.expect("the feed goes on");
        assert_eq!(name, "snapshot");
        if check(&snap) {
            return snap;
        }
    }
    panic!("no snapshot with {what}");
}

#[tokio::test]
async fn the_feed_follows_sms_qr_sessions_connections_and_messages() {
    let s = start(&[]).await;
    let mut events = feed(&s).await;
    let (_, first) = events.next().await.unwrap();
    assert_eq!(first["status"]["users"], 4);
    assert_eq!(first["users"].as_array().unwrap().len(), 4);
    assert!(first["sms"].as_array().unwrap().is_empty());
    assert!(
        first["connections"].as_array().unwrap().is_empty(),
        "the robot is not listed"
    );

    s.post("/send_code", json!({"mobile": "13800000002"}), None)
        .await;
    let snap = until(&mut events, "the SMS", |v| {
        v["sms"].as_array().unwrap().len() == 1
    })
    .await;
    assert_eq!(snap["sms"][0]["mobile"], "13800000002");
    assert_eq!(snap["sms"][0]["code"].as_str().unwrap().len(), 6);

    let token = s.pc_session().await;
    let snap = until(&mut events, "the QR session", |v| {
        !v["pcSessions"].as_array().unwrap().is_empty()
    })
    .await;
    assert_eq!(snap["pcSessions"][0]["token"], token);
    assert_eq!(snap["pcSessions"][0]["statusName"], "created");

    let (mut alice, _) = s.chat("13800000001", "dash").await;
    until(&mut events, "alice's connection", |v| {
        v["connections"][0]["userId"] == "alice"
    })
    .await;
    alice
        .request(json!({"op": "send", "conv": {"type": "single", "target": "bob"}, "content": {"type": "text", "text": "<b>hi</b>"}}))
        .await
        .unwrap();
    let snap = until(&mut events, "the message", |v| {
        !v["messages"].as_array().unwrap().is_empty()
    })
    .await;
    assert_eq!(snap["messages"][0]["content"]["text"], "<b>hi</b>");
    assert_eq!(snap["messages"][0]["from"], "alice");
}

#[tokio::test]
async fn phone_buttons_scan_approve_and_cancel() {
    let s = start(&[]).await;
    let action = |token: &str, action: &str, body: Value| {
        let req = s
            .http
            .post(format!("{}/_dev/pc_sessions/{token}/{action}", s.url))
            .json(&body);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };

    // Approve answers the waiting PC with a login as that user.
    let token = s.pc_session().await;
    let poll = s.spawn_poll(&token);
    until_polling(&s, &token).await;
    let (status, scanned) = action(&token, "scan", json!({"userId": "bob"})).await;
    assert_eq!(status, 200, "{scanned}");
    assert_eq!(scanned["status"], 1);
    assert_eq!(poll.await.unwrap().code(), 9);
    let poll = s.spawn_poll(&token);
    until_polling(&s, &token).await;
    let (status, done) = action(&token, "approve", json!({"userId": "bob"})).await;
    assert_eq!(status, 200, "{done}");
    let answer = poll.await.unwrap();
    assert_eq!(answer.code(), 0, "{}", answer.body);
    assert_eq!(answer.body["result"]["userId"], "bob");

    // Refusals, each with a reason.
    let token = s.pc_session().await;
    let (status, body) = action(&token, "approve", json!({"userId": "carol"})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = action(&token, "cancel", json!({"userId": "alice"})).await;
    assert_eq!(status, 409, "scanned by carol: {body}");
    let token = s.pc_session().await;
    for (act, body, want, says) in [
        ("dance", json!({"userId": "alice"}), 400, "unknown action"),
        ("scan", json!({"user": "alice"}), 400, "userId"),
        ("scan", json!({"userId": "ghost"}), 404, "no user"),
    ] {
        let (status, answer) = action(&token, act, body).await;
        assert_eq!(status, want, "{act}: {answer}");
        assert!(answer["error"].as_str().unwrap().contains(says), "{answer}");
    }
    let (status, answer) = action("nope", "scan", json!({"userId": "alice"})).await;
    assert_eq!(status, 404, "{answer}");

    // Cancel from a fresh session: scanned and cancelled in one go.
    let poll = s.spawn_poll(&token);
    until_polling(&s, &token).await;
    let (status, body) = action(&token, "cancel", json!({"userId": "alice"})).await;
    assert_eq!(status, 200, "{body}");
    let first = poll.await.unwrap();
    let code = first.code();
    assert!(code == 9 || code == 18, "{}", first.body);
}

#[tokio::test]
async fn the_dashboard_page_is_served() {
    let s = start(&[]).await;
    let page = s.get("/_dev/").await;
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script src="/assets/dev.js""#));
    assert_eq!(s.get("/assets/dev.js").await.status(), 200);
}

#[tokio::test]
async fn dev_and_admin_refuse_foreign_host_names() {
    let s = start(&[]).await;
    let get = |path: &str, host: &str| {
        s.http
            .get(format!("{}{path}", s.url))
            .header("host", host)
            .send()
    };
    // A page on another name pointed at 127.0.0.1 (DNS rebinding).
    let r = get("/_dev/sms", "evil.example:8888").await.unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("DNS rebinding"),
        "{body}"
    );
    assert_eq!(
        get("/admin/users", "evil.example").await.unwrap().status(),
        403
    );
    // Loopback names pass; the login API is not affected (an emulator's 10.0.2.2).
    assert_eq!(
        get("/_dev/users", "localhost:8888").await.unwrap().status(),
        200
    );
    assert_eq!(
        get("/_dev/users", "[::1]:8888").await.unwrap().status(),
        200
    );
    assert_eq!(get("/config", "10.0.2.2:8888").await.unwrap().status(), 200);
}

#[tokio::test]
async fn the_feed_names_big_messages_instead_of_parsing_them() {
    let s = start(&[]).await;
    let (mut alice, _) = s.chat("13800000001", "feed-big").await;
    let big = json!({"type": "custom", "data": vec![7; 3000]});
    alice
        .request(json!({"op": "send", "conv": {"type": "single", "target": "bob"}, "content": big}))
        .await
        .unwrap();
    alice
        .request(json!({"op": "send", "conv": {"type": "single", "target": "bob"}, "content": {"type": "text", "text": "small"}}))
        .await
        .unwrap();
    let mut events = feed(&s).await;
    let snap = until(&mut events, "both messages", |v| {
        v["messages"].as_array().is_some_and(|m| m.len() >= 2)
    })
    .await;
    let texts: Vec<&str> = snap["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"]["text"].as_str().unwrap_or_default())
        .collect();
    assert!(texts.contains(&"small"), "{texts:?}");
    let named = texts.iter().find(|t| t.starts_with("[custom: ")).copied();
    assert!(
        named.is_some_and(|t| t.ends_with(" bytes]")),
        "the big custom message is named with its size: {texts:?}"
    );
}
