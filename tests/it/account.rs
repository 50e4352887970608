//! Passwords, display names and deleting an account, over real sockets.

use imctl::client::chat::ChatError;
use serde_json::{Value, json};

use crate::common::{TestServer, start};

/// The newest code the dev outbox holds for `mobile`.
async fn outbox_code(s: &TestServer, mobile: &str) -> String {
    let sms: Vec<Value> = s
        .get(&format!("/_dev/sms?mobile={mobile}"))
        .await
        .json()
        .await
        .unwrap();
    sms[0]["code"].as_str().unwrap().to_owned()
}

/// Logs in by SMS and sets `password` with the `/login` reset code;
/// returns the authToken.
async fn with_password(s: &TestServer, mobile: &str, password: &str) -> String {
    let (auth, result) = s.login(mobile).await;
    let r = s
        .post(
            "/reset_pwd",
            json!({"resetCode": result["resetCode"], "newPassword": password}),
            Some(&auth),
        )
        .await;
    assert_eq!(r.code(), 0, "{}", r.body);
    auth
}

fn pwd_login(mobile: &str, password: &str) -> Value {
    json!({"mobile": mobile, "password": password, "clientId": "pwd-1", "platform": "2"})
}

#[tokio::test]
async fn the_login_reset_code_sets_a_password_that_logs_in() {
    let s = start(&[]).await;
    let (auth, result) = s.login("13800000001").await;
    let reset = result["resetCode"].as_str().expect("resetCode").to_owned();
    assert!(reset.len() == 6 && reset.bytes().all(|b| b.is_ascii_digit()));
    let reset_with = |code: &str, pw: &str| json!({"resetCode": code, "newPassword": pw});

    for weak in ["12345", "aaaaaaaa"] {
        let r = s
            .post("/reset_pwd", reset_with(&reset, weak), Some(&auth))
            .await;
        assert_eq!(r.code(), 24, "{weak}: {}", r.body);
    }
    let wrong = if reset == "000000" {
        "111111"
    } else {
        "000000"
    };
    let r = s
        .post("/reset_pwd", reset_with(wrong, "s3cret-pw"), Some(&auth))
        .await;
    assert_eq!(r.code(), 6, "{}", r.body);
    // A weak try and a wrong code did not use it up; the right one does.
    let r = s
        .post("/reset_pwd", reset_with(&reset, "s3cret-pw"), Some(&auth))
        .await;
    assert_eq!(r.code(), 0, "{}", r.body);
    let r = s
        .post("/reset_pwd", reset_with(&reset, "other-pw"), Some(&auth))
        .await;
    assert_eq!(r.code(), 6, "single use: {}", r.body);

    let r = s
        .post("/login_pwd", pwd_login("13800000001", "s3cret-pw"), None)
        .await;
    assert_eq!(r.code(), 0, "{}", r.body);
    assert!(r.auth_token.is_some(), "authToken header");
    let res = &r.body["result"];
    assert_eq!(res["userId"], "alice");
    assert_eq!(res["register"], false);
    assert!(res["token"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(res["routeUrl"].as_str().unwrap().ends_with("/route"));
    let new_auth = r.auth_token.unwrap();
    let r = s
        .post(
            "/change_name",
            json!({"newName": "Alice L"}),
            Some(&new_auth),
        )
        .await;
    assert_eq!(r.code(), 0, "the password session works: {}", r.body);

    // Unknown mobile and wrong password answer alike.
    for (mobile, pw) in [("13800000001", "wrong-pw"), ("13999999999", "s3cret-pw")] {
        let r = s.post("/login_pwd", pwd_login(mobile, pw), None).await;
        assert_eq!(r.code(), 6, "{mobile}: {}", r.body);
        assert_eq!(r.message(), "wrong mobile or password");
        assert!(r.auth_token.is_none());
    }
    // Bob never set one.
    let r = s
        .post("/login_pwd", pwd_login("13800000002", "s3cret-pw"), None)
        .await;
    assert_eq!(r.code(), 6, "{}", r.body);
    let r = s.post("/login_pwd", pwd_login("12345", "x"), None).await;
    assert_eq!(r.code(), 1, "{}", r.body);
}

#[tokio::test]
async fn change_pwd_needs_the_old_password_and_a_strong_new_one() {
    let s = start(&[]).await;
    let auth = with_password(&s, "13800000002", "first-pw").await;
    let change = |old: &str, new: &str| json!({"oldPassword": old, "newPassword": new});
    let r = s
        .post("/change_pwd", change("nope-pw", "second-pw"), Some(&auth))
        .await;
    assert_eq!(r.code(), 19, "{}", r.body);
    let r = s
        .post("/change_pwd", change("first-pw", "short"), Some(&auth))
        .await;
    assert_eq!(r.code(), 24, "{}", r.body);
    let r = s
        .post("/change_pwd", change("first-pw", "second-pw"), Some(&auth))
        .await;
    assert_eq!(r.code(), 0, "{}", r.body);
    let r = s
        .post("/login_pwd", pwd_login("13800000002", "first-pw"), None)
        .await;
    assert_eq!(r.code(), 6);
    let r = s
        .post("/login_pwd", pwd_login("13800000002", "second-pw"), None)
        .await;
    assert_eq!(r.code(), 0, "{}", r.body);
    let r = s
        .post("/change_pwd", change("second-pw", "third-pw"), None)
        .await;
    assert_eq!(r.code(), 13, "{}", r.body);
}

#[tokio::test]
async fn send_reset_code_reaches_the_outbox_and_burns_after_five_wrong_tries() {
    let s = start(&["--sms-interval", "1ms"]).await;
    s.login("13800000003").await;
    let r = s
        .post("/send_reset_code", json!({"mobile": "13800000003"}), None)
        .await;
    assert_eq!(
        (r.code(), &r.body["result"]),
        (0, &json!("SUCCESS")),
        "{}",
        r.body
    );
    let code = outbox_code(&s, "13800000003").await;
    let reset =
        |c: &str| json!({"mobile": "13800000003", "resetCode": c, "newPassword": "carol-pw"});
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..5 {
        assert_eq!(s.post("/reset_pwd", reset(wrong), None).await.code(), 6);
    }
    let r = s.post("/reset_pwd", reset(&code), None).await;
    assert_eq!(r.code(), 5, "burned: {}", r.body);

    s.post("/send_reset_code", json!({"mobile": "13800000003"}), None)
        .await;
    let code = outbox_code(&s, "13800000003").await;
    assert_eq!(s.post("/reset_pwd", reset(&code), None).await.code(), 0);
    let r = s
        .post("/login_pwd", pwd_login("13800000003", "carol-pw"), None)
        .await;
    assert_eq!(r.code(), 0, "{}", r.body);

    // Without a mobile: the session's user, or 13.
    assert_eq!(s.post("/send_reset_code", json!({}), None).await.code(), 13);
    // A mobile without an account gets the same answer and no SMS: whether
    // it has one is not told.
    let r = s
        .post("/send_reset_code", json!({"mobile": "13999999998"}), None)
        .await;
    assert_eq!(r.code(), 0, "{}", r.body);
    assert!(
        s.client
            .dev_sms("13999999998", None, None)
            .await
            .unwrap()
            .is_empty()
    );
    let r = s
        .post(
            "/reset_pwd",
            json!({"mobile": "13999999998", "resetCode": "123456", "newPassword": "abcdefg"}),
            None,
        )
        .await;
    assert_eq!(r.code(), 6, "{}", r.body);
    let r = s
        .post("/send_reset_code", json!({"mobile": "123"}), None)
        .await;
    assert_eq!(r.code(), 1, "{}", r.body);
    let r = s
        .post(
            "/reset_pwd",
            json!({"resetCode": "123456", "newPassword": "abcdefg"}),
            None,
        )
        .await;
    assert_eq!(r.code(), 13, "{}", r.body);
}

#[tokio::test]
async fn five_wrong_passwords_lock_password_login() {
    let s = start(&[]).await;
    with_password(&s, "13800000001", "right-pw").await;
    for n in 1..5 {
        let r = s
            .post("/login_pwd", pwd_login("13800000001", "wrong-pw"), None)
            .await;
        assert_eq!(r.code(), 6, "try {n}: {}", r.body);
    }
    let r = s
        .post("/login_pwd", pwd_login("13800000001", "wrong-pw"), None)
        .await;
    assert_eq!(r.code(), 20, "{}", r.body);
    let r = s
        .post("/login_pwd", pwd_login("13800000001", "right-pw"), None)
        .await;
    assert_eq!(
        r.code(),
        20,
        "locked even for the right password: {}",
        r.body
    );
    assert!(r.auth_token.is_none());
    // SMS login still works, and a reset lifts the lock.
    with_password(&s, "13800000001", "new-right-pw").await;
    let r = s
        .post("/login_pwd", pwd_login("13800000001", "new-right-pw"), None)
        .await;
    assert_eq!(r.code(), 0, "{}", r.body);
}

#[tokio::test]
async fn unknown_mobiles_and_concurrent_guesses_meet_the_same_lock() {
    let s = start(&[]).await;
    with_password(&s, "13800000001", "right-pw").await;
    // Ten guesses at once: each is counted before it is checked, so only
    // four are answered "wrong" and the rest find the account locked.
    let guesses = (0..10).map(|_| s.post("/login_pwd", pwd_login("13800000001", "wrong-pw"), None));
    let codes: Vec<i64> = futures_util::future::join_all(guesses)
        .await
        .iter()
        .map(|r| r.code())
        .collect();
    assert_eq!(codes.iter().filter(|&&c| c == 6).count(), 4, "{codes:?}");
    assert_eq!(codes.iter().filter(|&&c| c == 20).count(), 6, "{codes:?}");
    // A mobile with no account answers the same way, lock included.
    let mut unknown = Vec::new();
    for _ in 0..6 {
        unknown.push(
            s.post("/login_pwd", pwd_login("13999999997", "wrong-pw"), None)
                .await
                .code(),
        );
    }
    assert_eq!(unknown, [6, 6, 6, 6, 20, 20]);
}

#[tokio::test]
async fn account_calls_are_limited_per_account() {
    let s = start(&[]).await;
    let (auth, _) = s.login("13800000002").await;
    let weak = json!({"oldPassword": "whatever", "newPassword": "x"});
    for _ in 0..20 {
        assert_eq!(
            s.post("/change_pwd", weak.clone(), Some(&auth))
                .await
                .code(),
            24
        );
    }
    let r = s.post("/change_pwd", weak, Some(&auth)).await;
    assert_eq!(r.code(), 3, "{}", r.body);
    // Another account is not held back.
    let (carol, _) = s.login("13800000003").await;
    let r = s
        .post(
            "/change_pwd",
            json!({"oldPassword": "a", "newPassword": "x"}),
            Some(&carol),
        )
        .await;
    assert_eq!(r.code(), 24, "{}", r.body);
}

#[tokio::test]
async fn bad_bodies_are_code_15_and_missing_logins_13() {
    let s = start(&[]).await;
    let (auth, _) = s.login("13800000001").await;
    for (path, body) in [
        ("/login_pwd", json!({"mobile": "13800000001"})),
        (
            "/login_pwd",
            json!({"mobile": "13800000001", "password": 5, "clientId": "c", "platform": 2}),
        ),
        (
            "/login_pwd",
            json!({"mobile": "13800000001", "password": "", "clientId": "c", "platform": 2}),
        ),
        (
            "/login_pwd",
            json!({"mobile": "13800000001", "password": "p".repeat(200), "clientId": "c", "platform": 2}),
        ),
        ("/reset_pwd", json!({"newPassword": "abcdefg"})),
        ("/change_pwd", json!({"oldPassword": "abcdefg"})),
        ("/change_name", json!({})),
        ("/change_name", json!({"newName": 7})),
        ("/change_name", json!({"newName": "  "})),
        ("/change_name", json!({"newName": "x".repeat(65)})),
        ("/change_name", json!({"newName": "a\u{1b}[31mb"})),
        ("/destroy", json!({})),
        ("/send_reset_code", json!({"mobile": 13800000001u64})),
    ] {
        let r = s.post(path, body.clone(), Some(&auth)).await;
        assert_eq!((r.status, r.code()), (200, 15), "{path} {body}: {}", r.body);
    }
    for path in [
        "/change_pwd",
        "/change_name",
        "/send_destroy_code",
        "/destroy",
    ] {
        let r = s.post(path, json!({}), Some("not-a-session")).await;
        assert_eq!(r.code(), 13, "{path}: {}", r.body);
    }
}

#[tokio::test]
async fn change_name_sets_a_display_name_no_one_else_has() {
    let s = start(&[]).await;
    let (auth, _) = s.login("13800000003").await;
    let r = s
        .post(
            "/change_name",
            json!({"newName": " Caroline "}),
            Some(&auth),
        )
        .await;
    assert_eq!(r.code(), 0, "{}", r.body);
    let users: Vec<Value> = s.get("/_dev/users").await.json().await.unwrap();
    let carol = users.iter().find(|u| u["userId"] == "carol").unwrap();
    assert_eq!(carol["displayName"], "Caroline");
    // Another user's name, in any case, is taken; one's own is fine.
    let r = s
        .post("/change_name", json!({"newName": "alice liu"}), Some(&auth))
        .await;
    assert_eq!(r.code(), 17, "{}", r.body);
    let r = s
        .post("/change_name", json!({"newName": "CAROLINE"}), Some(&auth))
        .await;
    assert_eq!(r.code(), 0, "{}", r.body);
}

#[tokio::test]
async fn destroy_deletes_the_account_but_not_what_others_received() {
    let s = start(&[]).await;
    let (mut alice, _) = s.chat("13800000001", "alice-1").await;
    let (mut carol, _) = s.chat("13800000003", "carol-1").await;
    let sent = carol
        .request(json!({"op": "send", "conv": {"type": "single", "target": "alice"}, "content": {"type": "text", "text": "bye"}}))
        .await
        .unwrap();
    alice.next_push().await.unwrap();
    let owned = s.group("13800000003", "carol's", &["alice"]).await;
    let alone = s.group("13800000003", "just carol", &[]).await;
    let auth = with_password(&s, "13800000003", "carol-pw").await;
    let (_, old) = s.login("13800000003").await;

    // As Android sends a call without parameters: an empty JSON body.
    let r: Value = s
        .http
        .post(format!("{}/send_destroy_code", s.url))
        .header("authToken", &auth)
        .header("Content-Type", "application/json; charset=utf-8")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (&r["code"], &r["result"]),
        (&json!(0), &json!("SUCCESS")),
        "{r}"
    );
    let code = outbox_code(&s, "13800000003").await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let r = s
        .post("/destroy", json!({"code": wrong}), Some(&auth))
        .await;
    assert_eq!(r.code(), 6, "{}", r.body);
    let r = s.post("/destroy", json!({"code": code}), Some(&auth)).await;
    assert_eq!(r.code(), 0, "{}", r.body);

    // Connections closed, sessions and IM tokens refused, password gone.
    // Carol's socket closes with 4001 (after the group notifications she had).
    let closed = loop {
        match carol.next_push().await {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert!(
        matches!(
            closed,
            ChatError::Closed {
                code: Some(4001),
                ..
            }
        ),
        "{closed:?}"
    );
    // Alice hears carol leave the group they shared, which is now hers.
    let left = loop {
        let push = alice.next_push().await.unwrap();
        if push["message"]["content"]["kind"] == "left" {
            break push["message"].clone();
        }
    };
    assert_eq!(left["conv"]["target"], owned.as_str(), "{left}");
    assert_eq!(left["content"]["actor"], "carol", "{left}");
    assert_eq!(left["content"]["owner"], "alice", "{left}");
    let r = s
        .post("/change_name", json!({"newName": "ghost"}), Some(&auth))
        .await;
    assert_eq!(r.code(), 13, "{}", r.body);
    let refused = imctl::client::chat::ChatConn::connect(
        &s.ws_url(),
        old["token"].as_str().unwrap(),
        "carol-2",
        2,
    )
    .await;
    assert!(
        matches!(refused, Err(ChatError::Refused { code: 498, .. })),
        "the old IM token is refused: {:?}",
        refused.map(|_| ())
    );
    let r = s
        .post("/login_pwd", pwd_login("13800000003", "carol-pw"), None)
        .await;
    assert_eq!(r.code(), 6, "{}", r.body);

    // Alice keeps carol's message.
    let history = alice
        .request(json!({"op": "history", "conv": {"type": "single", "target": "carol"}}))
        .await
        .unwrap();
    let texts: Vec<&Value> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["content"]["text"])
        .collect();
    assert_eq!(texts, [&json!("bye")], "{history}");
    assert_eq!(history["messages"][0]["msgId"], sent["msgId"]);

    // Her group passed to alice; the one she was alone in is gone.
    let store = &s.running.state.store;
    let info = store.group_info(&owned).await.unwrap().unwrap();
    assert_eq!(info.owner, "alice");
    assert_eq!(info.members.len(), 1);
    let groups = store.groups_of("alice").await.unwrap();
    assert!(groups.iter().any(|g| g.id == owned && g.role == "owner"));
    assert!(
        store
            .group_membership(&alone, "alice")
            .await
            .unwrap()
            .is_none()
    );

    // The mobile registers a new account.
    let (_, fresh) = s.login("13800000003").await;
    assert_eq!(fresh["register"], true);
    assert_ne!(fresh["userId"], "carol");
}

#[tokio::test]
async fn exports_carry_no_password() {
    let s = start(&[]).await;
    with_password(&s, "13800000002", "bob-secret-pw").await;
    let export = s
        .http
        .get(format!("{}/admin/export", s.url))
        .header("X-Admin-Secret", &s.running.state.admin_secret)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(export.contains("\"bob\""), "{export}");
    assert!(!export.contains("bob-secret-pw") && !export.contains("$argon2"));
    // The store keeps a salted argon2id hash with OWASP's parameters.
    let stored = s
        .running
        .state
        .store
        .password("bob")
        .await
        .unwrap()
        .unwrap();
    assert!(
        stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{stored}"
    );
    assert!(!stored.contains("bob-secret-pw"));
}

#[tokio::test]
async fn simulate_mobile_login_with_a_password() {
    let s = start(&[]).await;
    with_password(&s, "13800000002", "bob-pw-123").await;
    let state = tempfile::tempdir().unwrap();
    let args = ["mobile-login", "--user", "bob", "--password", "bob-pw-123"];
    let out = crate::common::simulate(state.path(), &s.url, &args).await;
    assert!(out.status.success(), "{}", crate::common::stderr(&out));
    let v: Value = serde_json::from_str(&crate::common::stdout(&out)).unwrap();
    assert_eq!(v["userId"], "bob");
    let saved = std::fs::read_to_string(state.path().join("phones.json")).unwrap();
    assert!(saved.contains("13800000002") && !saved.contains("bob-pw-123"));

    let args = ["mobile-login", "--user", "bob", "--password", "wrong-pw"];
    let out = crate::common::simulate(state.path(), &s.url, &args).await;
    assert!(!out.status.success());
    assert!(
        crate::common::stderr(&out).contains("wrong mobile or password"),
        "{}",
        crate::common::stderr(&out)
    );
}

#[tokio::test]
async fn account_codes_are_sms_under_the_same_limits_as_login_codes() {
    let s = start(&[]).await;
    s.login("13800000003").await;
    let send = || s.post("/send_reset_code", json!({"mobile": "13800000003"}), None);
    assert_eq!(send().await.code(), 0);
    let again = send().await;
    assert_eq!(again.code(), 3, "{}", again.body);
    // A login code to the same number waits its turn too.
    let login = s
        .post("/send_code", json!({"mobile": "13800000003"}), None)
        .await;
    assert_eq!(login.code(), 3, "{}", login.body);
}

#[tokio::test]
async fn passwords_codes_and_tokens_never_reach_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let mut serve = std::process::Command::new(env!("CARGO_BIN_EXE_imctl"))
        .args([
            "serve",
            "--ephemeral",
            "--app-port",
            "0",
            "--broker-port",
            "0",
        ])
        .env("IMCTL_LOG", "trace")
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let kill = Reaper(&mut serve);
    let app = {
        use std::io::{BufRead, BufReader};
        let out = kill.0.stdout.take().unwrap();
        let mut lines = BufReader::new(out).lines();
        let url = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| {
                l.trim()
                    .strip_prefix("web page")
                    .map(|u| u.trim().trim_end_matches('/').to_owned())
            })
            .expect("banner");
        std::thread::spawn(move || lines.for_each(drop));
        url
    };
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value, auth: Option<&str>| {
        let mut req = http.post(format!("{app}{path}")).json(&body);
        if let Some(a) = auth {
            req = req.header("authToken", a);
        }
        async move {
            let r = req.send().await.unwrap();
            let auth = r
                .headers()
                .get("authToken")
                .map(|v| v.to_str().unwrap().to_owned());
            (r.json::<Value>().await.unwrap(), auth)
        }
    };
    let (login, auth) = post(
        "/login",
        json!({"mobile": "13800000002", "code": "66666", "clientId": "c", "platform": 2}),
        None,
    )
    .await;
    let auth = auth.unwrap();
    let reset = login["result"]["resetCode"].as_str().unwrap().to_owned();
    let im_token = login["result"]["token"].as_str().unwrap().to_owned();
    let first = "Secret-First-Pw";
    let second = "Secret-Second-Pw";
    let (r, _) = post(
        "/reset_pwd",
        json!({"resetCode": reset, "newPassword": first}),
        Some(&auth),
    )
    .await;
    assert_eq!(r["code"], 0, "{r}");
    let (r, _) = post(
        "/change_pwd",
        json!({"oldPassword": first, "newPassword": second}),
        Some(&auth),
    )
    .await;
    assert_eq!(r["code"], 0, "{r}");
    let (r, pwd_auth) = post(
        "/login_pwd",
        json!({"mobile": "13800000002", "password": second, "clientId": "c", "platform": 2}),
        None,
    )
    .await;
    assert_eq!(r["code"], 0, "{r}");
    let (r, _) = post(
        "/login_pwd",
        json!({"mobile": "13800000002", "password": "Secret-Wrong-Pw", "clientId": "c", "platform": 2}),
        None,
    )
    .await;
    assert_eq!(r["code"], 6, "{r}");
    drop(kill);
    let logged = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(
        logged.contains("password changed"),
        "the log was captured: {logged}"
    );
    for secret in [
        first,
        second,
        "Secret-Wrong-Pw",
        &reset,
        &auth,
        &pwd_auth.unwrap(),
        &im_token,
    ] {
        assert!(!logged.contains(secret), "{secret:?} is in the log");
    }
}

/// Kills and reaps the child when dropped, however the test ends.
struct Reaper<'a>(&'a mut std::process::Child);

impl Drop for Reaper<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
