//! Quick login (`/pc_session` with `flag: 1`): the session starts scanned by
//! the login session's user, that user's devices are asked over the
//! WebSocket, and the phone confirms or cancels without `/scan_pc`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{TestServer, simulate, start, stderr, stdout};

/// `/pc_session` as vue-chat sends it for a remembered user.
async fn quick(s: &TestServer, auth: Option<&str>, user_id: &str) -> Value {
    let r = s
        .post(
            "/pc_session",
            json!({"clientId": "web-1", "platform": "5", "device_name": "Firefox", "flag": 1, "userId": user_id}),
            auth,
        )
        .await;
    assert_eq!(r.code(), 0, "{}", r.body);
    r.body["result"].clone()
}

#[tokio::test]
async fn quick_login_binds_to_the_session_user_and_asks_every_device() {
    let s = start(&[]).await;
    let (alice, _) = s.login("13800000001").await;
    let (mut phone, _) = s.chat("13800000001", "alice-phone").await;
    let (mut tablet, _) = s.chat("13800000001", "alice-tablet").await;
    let (mut bob_phone, _) = s.chat("13800000002", "bob-phone").await;

    // The body naming another user than the session's is no quick login.
    let res = quick(&s, Some(&alice), "bob").await;
    assert_eq!(res["status"], 0, "{res}");
    assert!(res.get("userId").is_none(), "{res}");
    let res = quick(&s, Some(&alice), "alice").await;
    assert_eq!(res["status"], 1, "{res}");
    assert_eq!(res["userId"], "alice");
    let token = res["token"].as_str().unwrap();

    for device in [&mut phone, &mut tablet] {
        let push = device.next_op("pc_login_request").await.unwrap();
        assert_eq!(push["token"], token);
        assert_eq!(push["platform"], 5);
        assert_eq!(push["deviceName"], "Firefox");
        assert_eq!(push["clientId"], "web-1");
        let left = push["expiresInMs"].as_i64().unwrap();
        assert!((290_000..=300_000).contains(&left), "{push}");
    }
    bob_phone.set_timeout(Duration::from_millis(300));
    assert!(
        bob_phone.next_op("pc_login_request").await.is_err(),
        "only alice is asked"
    );

    let listed = s.client.dev_pc_sessions().await.unwrap();
    assert!(listed[0].quick_login);
    assert_eq!(listed[0].scanner.as_ref().unwrap().user_id, "alice");

    // The phone confirms straight away; the body's user_id is ignored and
    // quick_login may be a numeric string.
    let r = s
        .post(
            "/confirm_pc",
            json!({"token": token, "user_id": "bob", "quick_login": "1"}),
            Some(&alice),
        )
        .await;
    assert_eq!(r.code(), 0, "{}", r.body);
    assert_eq!(r.body["result"]["status"], 2);

    let path = format!("/session_login/{token}");
    let poll = || s.post(&path, json!({}), None);
    let first = poll().await;
    assert_eq!(first.code(), 9, "{}", first.body);
    assert_eq!(first.body["result"]["userId"], "alice");
    let done = poll().await;
    assert_eq!(done.code(), 0, "{}", done.body);
    assert_eq!(done.body["result"]["userId"], "alice");
    assert!(done.auth_token.is_some());
    assert_eq!(poll().await.code(), 8, "single use");
}

#[tokio::test]
async fn without_a_valid_session_it_is_an_ordinary_qr_session() {
    let s = start(&[]).await;
    let (bob, _) = s.login("13800000002").await;
    let (mut phone, _) = s.chat("13800000002", "bob-phone").await;
    s.running.state.store.set_banned("bob", true).await.unwrap();
    for auth in [None, Some("no-such-session"), Some(bob.as_str())] {
        let res = quick(&s, auth, "bob").await;
        assert_eq!(res["status"], 0, "{auth:?}: {res}");
        assert!(res.get("userId").is_none(), "{res}");
    }
    let (alice, _) = s.login("13800000001").await;
    // flag 0 is a legacy client: an ordinary session even when logged in.
    let r = s
        .post(
            "/pc_session",
            json!({"clientId": "web-1", "platform": 5, "flag": 0, "userId": "alice"}),
            Some(&alice),
        )
        .await;
    assert_eq!(r.body["result"]["status"], 0, "{}", r.body);
    let r = s
        .post(
            "/pc_session",
            json!({"clientId": "web-1", "platform": 5, "flag": 7}),
            Some(&alice),
        )
        .await;
    assert_eq!(r.code(), 15, "{}", r.body);
    let r = s
        .post(
            "/pc_session",
            json!({"clientId": "web-1", "platform": 5, "flag": "quick"}),
            Some(&alice),
        )
        .await;
    assert_eq!(r.code(), 15, "{}", r.body);
    assert!(
        s.client
            .dev_pc_sessions()
            .await
            .unwrap()
            .iter()
            .all(|p| !p.quick_login)
    );
    phone.set_timeout(Duration::from_millis(300));
    assert!(phone.next_op("pc_login_request").await.is_err());
}

#[tokio::test]
async fn the_phone_can_deny_and_others_cannot_answer() {
    let s = start(&[]).await;
    let (alice, _) = s.login("13800000001").await;
    let (bob, _) = s.login("13800000002").await;
    let token = quick(&s, Some(&alice), "alice").await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = s
        .post(
            "/confirm_pc",
            json!({"token": token, "quick_login": "yes"}),
            Some(&alice),
        )
        .await;
    assert_eq!(r.code(), 15, "quick_login is 0 or 1: {}", r.body);
    for path in ["/confirm_pc", "/cancel_pc"] {
        let r = s.post(path, json!({"token": token}), Some(&bob)).await;
        assert_eq!(r.code(), 15, "{path}: {}", r.body);
    }
    let r = s
        .post(&format!("/scan_pc/{token}"), json!({}), Some(&bob))
        .await;
    assert_eq!(r.code(), 15, "{}", r.body);
    let r = s
        .post("/cancel_pc", json!({"token": token}), Some(&alice))
        .await;
    assert_eq!(r.code(), 0, "{}", r.body);
    let r = s
        .post(&format!("/session_login/{token}"), json!({}), None)
        .await;
    assert_eq!(r.code(), 18, "a deny answers 18 at once: {}", r.body);
}

#[tokio::test]
async fn quick_login_requests_count_toward_the_qr_caps() {
    let s = start(&["--max-qr-sessions-per-ip", "2"]).await;
    let (alice, _) = s.login("13800000001").await;
    quick(&s, Some(&alice), "alice").await;
    quick(&s, Some(&alice), "alice").await;
    let r = s
        .post(
            "/pc_session",
            json!({"clientId": "web-1", "platform": 5, "flag": 1}),
            Some(&alice),
        )
        .await;
    assert_eq!(r.code(), 3, "{}", r.body);
}

#[tokio::test]
async fn the_dev_api_approves_a_quick_login() {
    let s = start(&[]).await;
    let (alice, _) = s.login("13800000001").await;
    let token = quick(&s, Some(&alice), "alice").await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = s
        .http
        .post(format!("{}/_dev/pc_sessions/{token}/approve", s.url))
        .json(&json!({"userId": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let info: Value = r.json().await.unwrap();
    assert_eq!(info["status"], 2, "{info}");
    assert_eq!(info["quickLogin"], true);
    let path = format!("/session_login/{token}");
    let poll = || s.post(&path, json!({}), None);
    assert_eq!(poll().await.code(), 9);
    assert_eq!(poll().await.code(), 0);
}

#[tokio::test]
async fn simulate_approve_latest_confirms_a_quick_login_without_scanning() {
    let s = start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    // The simulated phone logs in once; the page's quick login uses its own session.
    let login = simulate(dir.path(), &s.url, &["mobile-login", "--user", "alice"]).await;
    assert!(login.status.success(), "{}", stderr(&login));
    let (alice, _) = s.login("13800000001").await;
    let token = quick(&s, Some(&alice), "alice").await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    // A request addressed to alice beats a newer ordinary QR code.
    let _other = s.pc_session().await;
    let out = simulate(
        dir.path(),
        &s.url,
        &["approve", "--latest", "--as", "alice"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["token"], token.as_str(), "{v}");
    assert_eq!(v["status"], 2);
    let path = format!("/session_login/{token}");
    let poll = || s.post(&path, json!({}), None);
    assert_eq!(poll().await.code(), 9);
    assert_eq!(poll().await.code(), 0);
}
