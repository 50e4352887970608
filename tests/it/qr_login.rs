//! Web QR login: every transition and every refusal, over real HTTP.

use std::time::Duration;

use serde_json::json;

use crate::common::{Events, start, until_polling};

#[tokio::test]
async fn pc_session_is_random_and_described() {
    let s = start(&[]).await;
    let r = s
        .post(
            "/pc_session",
            json!({"clientId": "pc-1", "platform": 5, "device_name": "Chrome"}),
            None,
        )
        .await;
    assert_eq!(r.code(), 0);
    let res = &r.body["result"];
    let token = res["token"].as_str().unwrap();
    assert!(
        token.len() >= 32 && token.bytes().all(|b| b.is_ascii_hexdigit()),
        "≥128 random bits: {token}"
    );
    assert_eq!(res["status"], 0);
    let expired = res["expired"].as_i64().unwrap();
    assert!((299_000..=300_000).contains(&expired), "{expired}");
    assert_eq!(res["platform"], 5);
    assert_eq!(res["device_name"], "Chrome");
    assert_eq!(res["qrText"], format!("imctl://pcsession/{token}"));
    assert_ne!(s.pc_session().await, token);

    let r = s.post("/pc_session", json!({"platform": 5}), None).await;
    assert_eq!(r.code(), 15, "clientId is required");
}

#[tokio::test]
async fn scan_confirm_login_and_the_token_is_used_up() {
    let s = start(&[]).await;
    let (alice, _) = s.login("13800000001").await;
    let token = s.pc_session().await;

    let poll = s.spawn_poll(&token);
    until_polling(&s, &token).await;
    let r = s
        .post(&format!("/scan_pc/{token}"), json!({}), Some(&alice))
        .await;
    assert_eq!(r.code(), 0, "{}", r.body);
    assert_eq!(r.body["result"]["status"], 1);
    assert_eq!(r.body["result"]["userId"], "alice");

    let scanned = poll.await.unwrap();
    assert_eq!(scanned.code(), 9, "{}", scanned.body);
    assert_eq!(scanned.body["result"]["userName"], "Alice Liu");
    assert_eq!(
        scanned.body["result"]["portrait"],
        format!("{}/avatar/alice.svg", s.url)
    );
    let listed = s.client.dev_pc_sessions().await.unwrap();
    assert_eq!(listed[0].status, 3, "the PC has seen the scan");
    assert_eq!(listed[0].scanner.as_ref().unwrap().user_id, "alice");

    let poll = s.spawn_poll(&token);
    until_polling(&s, &token).await;
    let r = s
        .post(
            "/confirm_pc",
            json!({"token": token, "user_id": "alice", "quick_login": 1}),
            Some(&alice),
        )
        .await;
    assert_eq!(r.code(), 0, "{}", r.body);
    let done = poll.await.unwrap();
    assert_eq!(done.code(), 0, "{}", done.body);
    assert_eq!(done.body["result"]["userId"], "alice");
    let auth = done.auth_token.expect("authToken header for the PC");
    assert_ne!(auth, alice, "the PC gets its own login session");
    let claims = s
        .running
        .state
        .im_tokens
        .verify(done.body["result"]["token"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        (claims.sub.as_str(), claims.cid.as_str(), claims.plt),
        ("alice", "pc-1", 5)
    );

    // Single use: the session is gone.
    let again = s
        .post(&format!("/session_login/{token}"), json!({}), None)
        .await;
    assert_eq!(again.code(), 8);
    assert!(s.client.dev_pc_sessions().await.unwrap().is_empty());
    // The PC's authToken works like any other.
    let other = s.pc_session().await;
    assert_eq!(
        s.post(&format!("/scan_pc/{other}"), json!({}), Some(&auth))
            .await
            .code(),
        0
    );
}

#[tokio::test]
async fn scan_and_confirm_before_the_first_poll_still_answer_9_then_0() {
    let s = start(&[]).await;
    let (bob, _) = s.login("13800000002").await;
    let token = s.pc_session().await;
    let scan = s
        .post(&format!("/scan_pc/{token}"), json!({}), Some(&bob))
        .await;
    assert_eq!(scan.code(), 0, "{}", scan.body);
    let confirm = s
        .post("/confirm_pc", json!({"token": token}), Some(&bob))
        .await;
    assert_eq!(confirm.code(), 0, "{}", confirm.body);
    let path = format!("/session_login/{token}");
    let poll = || s.post(&path, json!({}), None);

    // vue-chat acts on a 0 only after a 9: the scan is told first.
    let first = poll().await;
    assert_eq!(first.code(), 9, "{}", first.body);
    assert_eq!(first.body["result"]["userName"], "Bob Chen");
    assert!(
        first.body["result"]["portrait"].is_string(),
        "{}",
        first.body
    );
    assert!(first.auth_token.is_none());
    assert_eq!(s.client.dev_pc_sessions().await.unwrap()[0].status, 2);

    let second = poll().await;
    assert_eq!(second.code(), 0, "{}", second.body);
    assert_eq!(second.body["result"]["userId"], "bob");
    assert!(second.auth_token.is_some(), "authToken header on 0");
    // Single use.
    assert_eq!(poll().await.code(), 8);
}

#[tokio::test]
async fn events_tell_the_scan_before_a_confirm_that_came_first() {
    let s = start(&[]).await;
    let (bob, _) = s.login("13800000002").await;
    let token = s.pc_session().await;
    s.post(&format!("/scan_pc/{token}"), json!({}), Some(&bob))
        .await;
    s.post("/confirm_pc", json!({"token": token}), Some(&bob))
        .await;
    let mut events = Events::new(Events::open(&s, &token).await);
    let names = [
        events.next().await.unwrap(),
        events.next().await.unwrap(),
        events.next().await.unwrap(),
    ];
    assert_eq!(
        names.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["status", "scanned", "confirmed"]
    );
    assert_eq!(names[1].1["code"], 9);
    assert_eq!(names[1].1["result"]["userId"], "bob");
    assert_eq!(names[2].1["code"], 0);
    assert!(names[2].1["authToken"].is_string());
    assert!(events.next().await.is_none());
}

#[tokio::test]
async fn phone_calls_need_login_code_13() {
    let s = start(&[]).await;
    let token = s.pc_session().await;
    for auth in [None, Some("not-a-session")] {
        assert_eq!(
            s.post(&format!("/scan_pc/{token}"), json!({}), auth)
                .await
                .code(),
            13
        );
        assert_eq!(
            s.post("/confirm_pc", json!({"token": token}), auth)
                .await
                .code(),
            13
        );
        assert_eq!(
            s.post("/cancel_pc", json!({"token": token}), auth)
                .await
                .code(),
            13
        );
    }
}

#[tokio::test]
async fn refusals_have_their_codes_and_change_nothing() {
    let s = start(&[]).await;
    let (alice, _) = s.login("13800000001").await;
    let (bob, _) = s.login("13800000002").await;
    let token = s.pc_session().await;

    assert_eq!(
        s.post("/scan_pc/unknown", json!({}), Some(&alice))
            .await
            .code(),
        8
    );
    let r = s
        .post("/confirm_pc", json!({"token": token}), Some(&alice))
        .await;
    assert_eq!(r.code(), 10, "confirm before scan: {}", r.body);

    s.post(&format!("/scan_pc/{token}"), json!({}), Some(&alice))
        .await;
    let r = s
        .post("/confirm_pc", json!({"token": token}), Some(&bob))
        .await;
    assert_eq!(r.code(), 15, "wrong user: {}", r.body);
    assert!(r.message().contains("another user"));
    assert_eq!(
        s.post(&format!("/scan_pc/{token}"), json!({}), Some(&bob))
            .await
            .code(),
        15
    );
    assert_eq!(
        s.client.dev_pc_sessions().await.unwrap()[0].status,
        1,
        "still scanned by alice"
    );

    assert_eq!(
        s.post("/confirm_pc", json!({"token": token}), Some(&alice))
            .await
            .code(),
        0
    );
    let r = s
        .post("/confirm_pc", json!({"token": token}), Some(&alice))
        .await;
    assert_eq!(r.code(), 15, "double confirm: {}", r.body);
    assert!(r.message().contains("already confirmed"));
    assert_eq!(
        s.post("/cancel_pc", json!({"token": token}), Some(&alice))
            .await
            .code(),
        15
    );
    let path = format!("/session_login/{token}");
    let poll = || s.post(&path, json!({}), None);
    assert_eq!(poll().await.code(), 9, "the scan is told first");
    let done = poll().await;
    assert_eq!(
        done.body["result"]["userId"], "alice",
        "the first confirm stands"
    );
}

#[tokio::test]
async fn cancel_answers_18_and_ends_the_session() {
    let s = start(&[]).await;
    let (alice, _) = s.login("13800000001").await;
    let token = s.pc_session().await;
    s.post(&format!("/scan_pc/{token}"), json!({}), Some(&alice))
        .await;
    assert_eq!(
        s.post(&format!("/session_login/{token}"), json!({}), None)
            .await
            .code(),
        9
    );

    let poll = s.spawn_poll(&token);
    until_polling(&s, &token).await;
    let r = s
        .post("/cancel_pc", json!({"token": token}), Some(&alice))
        .await;
    assert_eq!(r.code(), 0);
    assert_eq!(r.body["result"]["status"], 4);
    assert_eq!(poll.await.unwrap().code(), 18);
    assert_eq!(
        s.post("/confirm_pc", json!({"token": token}), Some(&alice))
            .await
            .code(),
        8
    );
}

#[tokio::test]
async fn a_second_concurrent_poll_is_refused() {
    let s = start(&[]).await;
    let token = s.pc_session().await;
    let first = s.spawn_poll(&token);
    until_polling(&s, &token).await;
    let second = s
        .post(&format!("/session_login/{token}"), json!({}), None)
        .await;
    assert_eq!(second.code(), 15);
    assert!(
        second.message().contains("already waiting"),
        "{}",
        second.message()
    );
    // The first poll is unaffected and still gets the scan.
    let (carol, _) = s.login("13800000003").await;
    s.post(&format!("/scan_pc/{token}"), json!({}), Some(&carol))
        .await;
    assert_eq!(first.await.unwrap().code(), 9);
}

#[tokio::test]
async fn long_poll_times_out_with_code_8() {
    let s = start(&["--poll-timeout", "100ms"]).await;
    let token = s.pc_session().await;
    let r = s
        .post(&format!("/session_login/{token}"), json!({}), None)
        .await;
    assert_eq!(r.code(), 8);
    assert!(r.message().contains("poll again"), "{}", r.message());
    assert_eq!(r.body["result"]["status"], 0, "a live session says so");
    // The session itself lives on.
    assert_eq!(s.client.dev_pc_sessions().await.unwrap().len(), 1);
}

#[tokio::test]
async fn expired_sessions_answer_8_everywhere() {
    let s = start(&["--qr-ttl", "150ms"]).await;
    let (alice, _) = s.login("13800000001").await;
    let waiting = s.pc_session().await;
    let poll = s.spawn_poll(&waiting);
    // The poll is answered when the session expires, before the 50 s poll timeout.
    let r = poll.await.unwrap();
    assert_eq!(r.code(), 8);
    assert!(r.message().contains("expired"), "{}", r.message());
    assert!(
        r.body.get("result").is_none(),
        "a gone session has no status: {}",
        r.body
    );

    let token = s.pc_session().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        s.post(&format!("/scan_pc/{token}"), json!({}), Some(&alice))
            .await
            .code(),
        8
    );
    assert_eq!(
        s.post("/confirm_pc", json!({"token": token}), Some(&alice))
            .await
            .code(),
        8
    );
    assert_eq!(
        s.get(&format!("/pc_session/{token}/qr.png")).await.status(),
        404
    );
    assert!(s.client.dev_pc_sessions().await.unwrap().is_empty());
}

#[tokio::test]
async fn qr_pictures_encode_the_prefix_and_token() {
    let s = start(&["--qr-prefix", "wildfirechat://pcsession/"]).await;
    let token = s.pc_session().await;
    let png = s.get(&format!("/pc_session/{token}/qr.png")).await;
    assert_eq!(png.headers()["content-type"], "image/png");
    let text = imctl::qr_image::decode(&png.bytes().await.unwrap()).unwrap();
    assert_eq!(text, format!("wildfirechat://pcsession/{token}"));
    let svg = s.get(&format!("/pc_session/{token}/qr.svg")).await;
    assert_eq!(svg.headers()["content-type"], "image/svg+xml");
    assert!(svg.text().await.unwrap().contains("<svg"));
    assert_eq!(s.get("/pc_session/nope/qr.svg").await.status(), 404);
}

#[tokio::test]
async fn shutdown_answers_the_waiting_long_poll() {
    let s = start(&[]).await;
    let token = s.pc_session().await;
    let poll = s.spawn_poll(&token);
    until_polling(&s, &token).await;
    s.running.stop().await.unwrap();
    let r = poll.await.unwrap();
    assert_eq!(r.code(), 8);
    assert!(r.message().contains("shutting down"), "{}", r.message());
}
