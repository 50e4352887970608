//! SMS login, the dev outbox, CORS and the small endpoints.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::start;

fn login_body(mobile: &str, code: &str) -> Value {
    json!({"mobile": mobile, "code": code, "clientId": "phone-1", "platform": 2})
}

#[tokio::test]
async fn sms_login_with_the_code_from_the_outbox() {
    let s = start(&[]).await;
    let r = s
        .post("/send_code", json!({"mobile": "13800000001"}), None)
        .await;
    assert_eq!((r.status, r.code()), (200, 0), "{}", r.body);
    // Wildfire's answer; Android needs a non-null `result` to see success.
    assert_eq!(
        r.body,
        json!({"code": 0, "message": "success", "result": "SUCCESS"})
    );

    let outbox = s.client.dev_sms("13800000001", None, None).await.unwrap();
    assert_eq!(outbox.len(), 1);
    let sms = &outbox[0];
    assert_eq!(sms.code.len(), 6);
    assert!(sms.text.contains(&sms.code));
    assert!(
        (sms.expires_at - sms.sent_at - 300_000).abs() < 1000,
        "valid 5 minutes by default"
    );

    let r = s
        .post("/login", login_body("13800000001", &sms.code), None)
        .await;
    assert_eq!(r.code(), 0, "{}", r.body);
    let res = &r.body["result"];
    assert_eq!(res["userId"], "alice");
    assert_eq!(res["register"], false);
    assert_eq!(res["userName"], "Alice Liu");
    assert_eq!(res["portrait"], format!("{}/avatar/alice.svg", s.url));
    let auth = r.auth_token.expect("authToken header");
    assert!(auth.len() >= 32, "authToken carries at least 128 bits");

    let claims = s
        .running
        .state
        .im_tokens
        .verify(res["token"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        (claims.sub.as_str(), claims.cid.as_str(), claims.plt),
        ("alice", "phone-1", 2)
    );

    // The code is single-use.
    let again = s
        .post("/login", login_body("13800000001", &sms.code), None)
        .await;
    assert_eq!(again.code(), 6, "{}", again.body);
}

#[tokio::test]
async fn first_login_registers_a_new_user() {
    let s = start(&[]).await;
    let r = s
        .post("/login", login_body("13912345678", "66666"), None)
        .await;
    assert_eq!(r.code(), 0);
    assert_eq!(r.body["result"]["register"], true);
    let id = r.body["result"]["userId"].as_str().unwrap().to_owned();
    let r = s
        .post("/login", login_body("13912345678", "66666"), None)
        .await;
    assert_eq!(r.body["result"]["register"], false);
    assert_eq!(r.body["result"]["userId"], id.as_str());
}

#[tokio::test]
async fn invalid_mobile_is_code_1() {
    let s = start(&[]).await;
    for m in ["", "12345", "23800000001", "1380000000x"] {
        let r = s.post("/send_code", json!({"mobile": m}), None).await;
        assert_eq!(r.code(), 1, "{m:?}: {}", r.body);
        let r = s.post("/login", login_body(m, "66666"), None).await;
        assert_eq!(r.code(), 1, "{m:?}: {}", r.body);
    }
}

#[tokio::test]
async fn resend_within_the_interval_is_code_3() {
    let s = start(&[]).await;
    assert_eq!(
        s.post("/send_code", json!({"mobile": "13800000002"}), None)
            .await
            .code(),
        0
    );
    let r = s
        .post("/send_code", json!({"mobile": "13800000002"}), None)
        .await;
    assert_eq!(r.code(), 3);
    assert!(r.message().contains("wait"), "{}", r.message());
    // Other numbers are not affected.
    assert_eq!(
        s.post("/send_code", json!({"mobile": "13800000003"}), None)
            .await
            .code(),
        0
    );
}

#[tokio::test]
async fn wrong_code_is_6_and_five_wrong_codes_burn_it() {
    let s = start(&[]).await;
    s.post("/send_code", json!({"mobile": "13800000003"}), None)
        .await;
    let code = s.client.dev_sms("13800000003", None, None).await.unwrap()[0]
        .code
        .clone();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for i in 1..=4 {
        let r = s
            .post("/login", login_body("13800000003", wrong), None)
            .await;
        assert_eq!(r.code(), 6, "try {i}: {}", r.body);
        assert!(
            r.message().contains(&format!("{} tries left", 5 - i)),
            "{}",
            r.message()
        );
    }
    let r = s
        .post("/login", login_body("13800000003", wrong), None)
        .await;
    assert_eq!(r.code(), 6);
    assert!(r.message().contains("burned"), "{}", r.message());
    // Even the right code no longer works; a new /send_code is needed.
    let r = s
        .post("/login", login_body("13800000003", &code), None)
        .await;
    assert_eq!(r.code(), 5);
    assert!(r.message().contains("/send_code"), "{}", r.message());
}

#[tokio::test]
async fn expired_code_is_5() {
    let s = start(&["--sms-ttl", "100ms", "--sms-interval", "0s"]).await;
    s.post("/send_code", json!({"mobile": "13800000001"}), None)
        .await;
    let code = s.client.dev_sms("13800000001", None, None).await.unwrap()[0]
        .code
        .clone();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let r = s
        .post("/login", login_body("13800000001", &code), None)
        .await;
    assert_eq!(r.code(), 5, "{}", r.body);
    assert!(r.message().contains("expired"));
}

#[tokio::test]
async fn super_code_can_be_changed_or_disabled() {
    let s = start(&["--super-code", "none"]).await;
    assert_eq!(
        s.post("/login", login_body("13800000001", "66666"), None)
            .await
            .code(),
        6
    );
    let s = start(&["--super-code", "424242"]).await;
    assert_eq!(
        s.post("/login", login_body("13800000001", "66666"), None)
            .await
            .code(),
        6
    );
    assert_eq!(
        s.post("/login", login_body("13800000001", "424242"), None)
            .await
            .code(),
        0
    );
    // A long random super code works too (SMS codes are capped, it is not).
    let long = "k3y-that-is-longer-than-any-sms-code";
    let s = start(&["--super-code", long]).await;
    assert_eq!(
        s.post("/login", login_body("13800000001", long), None)
            .await
            .code(),
        0
    );
}

#[tokio::test]
async fn bad_requests_are_code_15_with_a_reason() {
    let s = start(&[]).await;
    let raw = s
        .http
        .post(format!("{}/login", s.url))
        .body("{not json")
        .send()
        .await
        .unwrap();
    let body: Value = raw.json().await.unwrap();
    assert_eq!(body["code"], 15);
    assert!(body["message"].as_str().unwrap().contains("JSON"));

    let r = s
        .post(
            "/login",
            json!({"mobile": "13800000001", "code": "66666", "clientId": "", "platform": 2}),
            None,
        )
        .await;
    assert_eq!(r.code(), 15);
    assert!(r.message().contains("clientId"));
    let r = s
        .post(
            "/login",
            json!({"mobile": "13800000001", "code": "66666", "clientId": "c", "platform": 42}),
            None,
        )
        .await;
    assert_eq!(r.code(), 15);
    assert!(r.message().contains("platform"));

    // Wrong method and unknown paths say so in the same envelope.
    let r = s.get("/login").await;
    assert_eq!(r.status(), 405);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], 15);
    let r = s.get("/nope").await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], 16);
}

#[tokio::test]
async fn text_plain_bodies_are_accepted_like_json() {
    // Browsers posting text/plain avoid a CORS preflight; Wildfire accepts them.
    let s = start(&[]).await;
    let r = s
        .http
        .post(format!("{}/send_code", s.url))
        .header("content-type", "text/plain")
        .body(r#"{"mobile":"13800000001"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["code"], 0);
}

#[tokio::test]
async fn cors_allows_localhost_pages_to_read_the_auth_token() {
    let s = start(&["--cors-origin", "https://app.example.com"]).await;
    let preflight = s
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/login", s.url))
        .header("origin", "http://localhost:5173")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type,authtoken")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "http://localhost:5173"
    );

    for origin in ["http://127.0.0.1:3000", "https://app.example.com"] {
        let r = s
            .http
            .post(format!("{}/login", s.url))
            .header("origin", origin)
            .json(&login_body("13800000001", "66666"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["access-control-allow-origin"], origin);
        let exposed = r.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase();
        assert!(exposed.contains("authtoken"), "{exposed}");
    }

    let evil = s
        .http
        .post(format!("{}/login", s.url))
        .header("origin", "http://evil.example")
        .json(&login_body("13800000001", "66666"))
        .send()
        .await
        .unwrap();
    assert!(evil.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn dev_sms_long_polls_until_an_sms_arrives() {
    let s = start(&[]).await;
    let waiter = {
        let client = s.client.clone();
        tokio::spawn(async move {
            client
                .dev_sms("13800000002", Some(Duration::from_secs(20)), None)
                .await
        })
    };
    // Another number's SMS does not wake the waiter with a wrong answer.
    s.post("/send_code", json!({"mobile": "13800000001"}), None)
        .await;
    s.post("/send_code", json!({"mobile": "13800000002"}), None)
        .await;
    let got = waiter.await.unwrap().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].mobile, "13800000002");

    // Newest first over all numbers; `since` filters older ones out.
    let all = s.client.dev_sms("", None, None).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.mobile.as_str()).collect::<Vec<_>>(),
        ["13800000002", "13800000001"]
    );
    let newer = s
        .client
        .dev_sms("13800000002", None, Some(got[0].sent_at))
        .await
        .unwrap();
    assert!(newer.is_empty());

    let bad = s.get("/_dev/sms?wait=soon").await;
    assert_eq!(bad.status(), 400);
    assert!(
        bad.json::<Value>().await.unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("wait")
    );
}

#[tokio::test]
async fn dev_users_health_and_avatars() {
    let s = start(&[]).await;
    let users = s.client.dev_users().await.unwrap();
    let ids: Vec<_> = users.iter().map(|u| u.user_id.as_str()).collect();
    assert_eq!(ids, ["alice", "bob", "carol", "robot"]);
    assert_eq!(users[1].mobile.as_deref(), Some("13800000002"));

    assert_eq!(s.get("/healthz").await.status(), 200);
    assert_eq!(s.get("/readyz").await.status(), 200);
    let avatar = s.get("/avatar/alice.svg").await;
    assert_eq!(avatar.headers()["content-type"], "image/svg+xml");
    assert!(avatar.text().await.unwrap().contains(">A</text>"));
    let page = s
        .http
        .get(format!("{}/", s.url))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("/pc_session"));
}
