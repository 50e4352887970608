//! The admin API: users, connections, bans, mutes, dissolve, system messages.

use imctl::client::chat::{ChatConn, ChatError};
use serde_json::{Value, json};

use crate::common::{TestServer, start};

const SECRET: &str = "test-admin-secret";

async fn admin(
    s: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = s
        .http
        .request(method, format!("{}{path}", s.url))
        .header("x-admin-secret", SECRET);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_admin_api_needs_the_secret() {
    let s = start(&["--admin-secret", SECRET]).await;
    let r = s.get("/admin/users").await;
    assert_eq!(r.status(), 401);
    assert!(
        r.json::<Value>().await.unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("X-Admin-Secret")
    );
    let r = s
        .http
        .get(format!("{}/admin/users", s.url))
        .header("x-admin-secret", "guess")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = s
        .http
        .get(format!("{}/admin/users", s.url))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn users_and_connections() {
    let s = start(&["--admin-secret", SECRET]).await;
    let (status, v) = admin(
        &s,
        reqwest::Method::POST,
        "/admin/users",
        Some(json!({"userId": "dora", "mobile": "13700000009", "displayName": "Dora"})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let (status, _) = admin(
        &s,
        reqwest::Method::POST,
        "/admin/users",
        Some(json!({"userId": "dora", "displayName": "Again"})),
    )
    .await;
    assert_eq!(status, 409);
    let (status, v) = admin(
        &s,
        reqwest::Method::POST,
        "/admin/users",
        Some(json!({"mobile": "123", "displayName": "X"})),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    let (_, v) = admin(&s, reqwest::Method::GET, "/admin/users", None).await;
    let ids: Vec<_> = v["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["userId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["alice", "bob", "carol", "robot", "dora"]);
    // The new user logs in like anyone else.
    let (_, dora) = s.login("13700000009").await;
    assert_eq!(dora["userId"], "dora");

    let (_c, _) = s.chat("13800000001", "alice-web").await;
    let (_, v) = admin(&s, reqwest::Method::GET, "/admin/connections", None).await;
    let alice: Vec<_> = v["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["userId"] == "alice")
        .collect();
    assert_eq!(alice.len(), 1);
    assert_eq!(
        (alice[0]["clientId"].as_str(), alice[0]["platform"].as_i64()),
        (Some("alice-web"), Some(2))
    );
}

#[tokio::test]
async fn a_ban_closes_connections_and_refuses_login_and_connect() {
    let s = start(&["--admin-secret", SECRET]).await;
    let (bob_auth, bob_login) = s.login("13800000002").await;
    let (mut bob, _) = s.chat("13800000002", "b").await;
    let (status, v) = admin(&s, reqwest::Method::POST, "/admin/users/bob/ban", None).await;
    assert_eq!((status, v["closedConnections"].as_i64()), (200, Some(1)));
    match bob.next_push().await {
        Err(ChatError::Closed {
            code: Some(4003), ..
        }) => {}
        other => panic!("expected close 4003, got {other:?}"),
    }
    let r = s
        .post(
            "/login",
            json!({"mobile": "13800000002", "code": "66666", "clientId": "b", "platform": 2}),
            None,
        )
        .await;
    assert_eq!(r.code(), 13);
    assert!(r.message().contains("banned"), "{}", r.message());
    let token = s.pc_session().await;
    assert_eq!(
        s.post(&format!("/scan_pc/{token}"), json!({}), Some(&bob_auth))
            .await
            .code(),
        13
    );
    let mut c = ChatConn::open(&s.ws_url()).await.unwrap();
    let e = c
        .request(json!({"op": "connect", "token": bob_login["token"]}))
        .await;
    assert!(
        matches!(e, Err(ChatError::Refused { code: 403, .. })),
        "{e:?}"
    );

    let upload = s
        .http
        .post(format!("{}/media", s.url))
        .header("authToken", &bob_auth)
        .header("content-type", "text/plain")
        .body("still here")
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 403, "banned users cannot upload");

    let (status, _) = admin(&s, reqwest::Method::POST, "/admin/users/bob/unban", None).await;
    assert_eq!(status, 200);
    s.chat("13800000002", "b").await;
    let (status, _) = admin(&s, reqwest::Method::POST, "/admin/users/nobody/ban", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn mutes_dissolve_and_system_messages() {
    let s = start(&["--admin-secret", SECRET]).await;
    let (mut alice, _) = s.chat("13800000001", "a").await;
    let (mut carol, _) = s.chat("13800000003", "c").await;
    let g = alice
        .request(json!({"op": "group.create", "name": "team", "members": ["carol"]}))
        .await
        .unwrap()["group"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let (status, _) = admin(
        &s,
        reqwest::Method::POST,
        &format!("/admin/groups/{g}/mute"),
        Some(json!({"userId": "carol"})),
    )
    .await;
    assert_eq!(status, 200);
    let r = carol.send_text("group", &g, "can I talk?", None).await;
    assert!(
        matches!(&r, Err(ChatError::Refused { code: 403, message }) if message.contains("muted")),
        "{r:?}"
    );
    alice.send_text("group", &g, "I can", None).await.unwrap();
    admin(
        &s,
        reqwest::Method::POST,
        &format!("/admin/groups/{g}/unmute"),
        Some(json!({"userId": "carol"})),
    )
    .await;
    carol
        .send_text("group", &g, "now I can", None)
        .await
        .unwrap();
    admin(
        &s,
        reqwest::Method::POST,
        &format!("/admin/groups/{g}/mute"),
        None,
    )
    .await;
    let r = alice.send_text("group", &g, "quiet?", None).await;
    assert!(
        matches!(&r, Err(ChatError::Refused { code: 403, .. })),
        "{r:?}"
    );
    let (status, _) = admin(&s, reqwest::Method::POST, "/admin/groups/nope/mute", None).await;
    assert_eq!(status, 404);

    let (status, v) = admin(
        &s,
        reqwest::Method::POST,
        "/admin/messages",
        Some(json!({"to": {"type": "single", "target": "carol"}, "text": "maintenance at 5"})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = admin(
        &s,
        reqwest::Method::POST,
        &format!("/admin/groups/{g}/dissolve"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    // Carol's inbox, after the group chatter: the system message, then the dissolution.
    let mut tail = Vec::new();
    loop {
        let m = carol.next_op("msg").await.unwrap();
        tail.push((
            m["message"]["from"].as_str().unwrap().to_owned(),
            m["message"]["content"].clone(),
        ));
        if m["message"]["content"]["kind"] == "dissolved" {
            break;
        }
    }
    let n = tail.len();
    assert_eq!(
        tail[n - 2],
        (
            "system".to_string(),
            json!({"type": "text", "text": "maintenance at 5"})
        )
    );
    assert_eq!(tail[n - 1].0, "@admin");
    let (status, _) = admin(
        &s,
        reqwest::Method::POST,
        "/admin/messages",
        Some(json!({"to": {"type": "single", "target": "ghost"}, "text": "x"})),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn imctl_admin_wraps_the_api() {
    let s = start(&["--admin-secret", SECRET]).await;
    let state = tempfile::tempdir().unwrap();
    let run = |args: Vec<String>| {
        let dir = state.path().to_owned();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            crate::common::imctl(&dir, &args)
        })
    };
    let base = |extra: &[&str]| {
        let mut v = vec![
            "admin".to_string(),
            "--app-server".into(),
            s.url.clone(),
            "--admin-secret".into(),
            SECRET.into(),
        ];
        v.extend(extra.iter().map(|a| a.to_string()));
        v
    };
    let out = run(base(&["users", "--json"])).await.unwrap();
    assert!(out.status.success(), "{}", crate::common::stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["users"][0]["userId"], "alice");
    let out = run(base(&["users"])).await.unwrap();
    assert!(crate::common::stdout(&out).contains("13800000002"));

    let out = run(base(&["ban", "bob"])).await.unwrap();
    assert!(crate::common::stdout(&out).contains("banned bob"));
    let (_, v) = admin(&s, reqwest::Method::GET, "/admin/users", None).await;
    assert_eq!(v["users"][1]["banned"], true);
    let out = run(base(&["message", "--to-user", "carol", "hello from ops"]))
        .await
        .unwrap();
    assert!(
        crate::common::stdout(&out).starts_with("sent m"),
        "{}",
        crate::common::stdout(&out)
    );

    let out = run(vec![
        "admin".into(),
        "--app-server".into(),
        s.url.clone(),
        "--admin-secret".into(),
        "wrong".into(),
        "users".into(),
    ])
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert!(
        crate::common::stderr(&out).contains("401"),
        "{}",
        crate::common::stderr(&out)
    );
    let out = run(vec![
        "admin".into(),
        "--app-server".into(),
        s.url.clone(),
        "users".into(),
    ])
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(crate::common::stderr(&out).contains("--admin-secret"));
}

#[tokio::test]
async fn a_body_that_is_not_json_gets_our_400_not_a_bare_415() {
    let s = start(&["--admin-secret", SECRET]).await;
    for path in ["/admin/users", "/admin/messages"] {
        let r = s
            .http
            .post(format!("{}{path}", s.url))
            .header("x-admin-secret", SECRET)
            .header("content-type", "text/plain")
            .body("name=carol")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{path}");
        let body: Value = r.json().await.unwrap();
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("Content-Type: application/json"),
            "{path}: {body}"
        );
    }
}
