//! `imctl chaos`: the `/_dev/faults` API, the `api.*`, `qr.*` and `sms.*`
//! faults over real HTTP, what they leave in `/metrics`, and the CLI,
//! `serve --fault` and `[[fault]]` in imctl.toml against the real binary.

use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::common::{Served, TestServer, imctl, start, stderr, stdout, until_polling};

const ALICE: &str = "13800000001";

/// `POST /_dev/faults`: the status and the JSON body.
async fn add(s: &TestServer, rule: &str) -> (u16, Value) {
    let r = s
        .http
        .post(format!("{}/_dev/faults", s.url))
        .json(&json!({ "rule": rule }))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Adds a rule that must be accepted; its id.
async fn add_ok(s: &TestServer, rule: &str) -> u64 {
    s.add_fault(rule).await["id"].as_u64().unwrap()
}

/// Rule `id` as `GET /_dev/faults` lists it.
async fn rule_of(s: &TestServer, id: u64) -> Value {
    let list = s.faults().await;
    list["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no rule {id} in {list}"))
        .clone()
}

async fn delete(s: &TestServer, path: &str) -> (u16, Value) {
    let r = s
        .http
        .delete(format!("{}{path}", s.url))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// A POST whose headers matter: status, headers, JSON body.
async fn call(s: &TestServer, path: &str, body: Value) -> (u16, HeaderMap, Value) {
    let r = s
        .http
        .post(format!("{}{path}", s.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    (status, headers, r.json().await.unwrap())
}

fn fault_header(h: &HeaderMap) -> Option<&str> {
    h.get("x-imctl-fault").map(|v| v.to_str().unwrap())
}

fn login_body(mobile: &str, code: &str) -> Value {
    json!({"mobile": mobile, "code": code, "clientId": "phone-1", "platform": 2})
}

fn pc_body() -> Value {
    json!({"clientId": "pc-1", "platform": 5, "device_name": "test"})
}

/// A session gone for good answers 8 with no `result` (a poll timeout has one).
fn gone(body: &Value) -> bool {
    body["code"] == 8 && body.get("result").is_none_or(Value::is_null)
}

#[tokio::test]
async fn rules_are_added_listed_fired_and_cleared() {
    let s = start(&[]).await;
    // Keys in any order and spacing; the answer is the canonical text.
    let (status, info) = add(&s, "api.code  times=2 code=18 path=/login").await;
    assert_eq!(status, 201, "{info}");
    let id = info["id"].as_u64().unwrap();
    assert_eq!(info["rule"], "api.code path=/login code=18 times=2");
    assert_eq!(info["kind"], "api.code");
    assert_eq!(
        (&info["fired"], &info["remaining"], &info["spent"]),
        (&json!(0), &json!(2), &json!(false))
    );
    assert!(info["remainingMs"].is_null(), "no window: {info}");
    assert!(info["addedAt"].as_i64().unwrap() > 0);

    let login = || s.post("/login", login_body(ALICE, "66666"), None);
    assert_eq!(login().await.code(), 18);
    let r = rule_of(&s, id).await;
    assert_eq!(
        (&r["fired"], &r["remaining"]),
        (&json!(1), &json!(1)),
        "{r}"
    );
    assert_eq!(r["spent"], false);
    assert_eq!(login().await.code(), 18);
    let r = rule_of(&s, id).await;
    assert_eq!(
        (&r["fired"], &r["remaining"], &r["spent"]),
        (&json!(2), &json!(0), &json!(true)),
        "{r}"
    );
    // Spent: the real handler answers again.
    assert_eq!(login().await.code(), 0);

    // A lasting kind has no count.
    let (status, other) = add(&s, "api.delay path=/route ms=100").await;
    assert_eq!(status, 201, "{other}");
    assert!(other["remaining"].is_null(), "{other}");
    let other = other["id"].as_u64().unwrap();
    assert_ne!(other, id);
    assert_eq!(s.faults().await["rules"].as_array().unwrap().len(), 2);

    let one = format!("/_dev/faults/{other}");
    assert_eq!(delete(&s, &one).await, (200, json!({"cleared": 1})));
    let (status, body) = delete(&s, &one).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains(&other.to_string()),
        "{body}"
    );
    let (status, body) = delete(&s, "/_dev/faults/abc").await;
    assert_eq!(status, 400, "{body}");
    let left = s.faults().await;
    assert_eq!(left["rules"].as_array().unwrap().len(), 1, "{left}");
    assert_eq!(left["rules"][0]["id"], id);

    assert_eq!(
        delete(&s, "/_dev/faults").await,
        (200, json!({"cleared": 1}))
    );
    assert_eq!(s.faults().await["rules"], json!([]));
    assert_eq!(
        delete(&s, "/_dev/faults").await,
        (200, json!({"cleared": 0}))
    );
}

#[tokio::test]
async fn bad_rules_are_refused_naming_the_bad_part() {
    let s = start(&[]).await;
    for (rule, part) in [
        ("api.code path=/login code=abc", "code=abc"),
        ("bogus.kind", "bogus.kind"),
        ("api.http path=/login status=200", "status=200"),
        ("api.code path=/login", "code"),
    ] {
        let (status, body) = add(&s, rule).await;
        assert_eq!(status, 400, "{rule}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(
            error.starts_with("bad rule: ") && error.contains(part),
            "{rule}: {error}"
        );
    }
    // Not the JSON it wants: still a 400 that says what to send.
    let r = s
        .http
        .post(format!("{}/_dev/faults", s.url))
        .json(&json!({"rules": "qr.expire latest"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("rule"), "{body}");
    assert_eq!(s.faults().await["rules"], json!([]), "nothing was added");
}

#[tokio::test]
async fn faults_refuse_a_foreign_host_name() {
    let s = start(&[]).await;
    let url = format!("{}/_dev/faults", s.url);
    // A page on another name pointed at 127.0.0.1 must not set faults.
    let post = s
        .http
        .post(&url)
        .header("host", "evil.example")
        .json(&json!({"rule": "api.code path=/login code=6"}))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 403);
    for req in [s.http.get(&url), s.http.delete(&url)] {
        let r = req.header("host", "evil.example").send().await.unwrap();
        assert_eq!(r.status(), 403);
    }
    assert_eq!(s.faults().await["rules"], json!([]));
    assert_eq!(
        s.post("/login", login_body(ALICE, "66666"), None)
            .await
            .code(),
        0
    );
}

#[tokio::test]
async fn api_code_bends_only_the_named_sessions_poll_and_only_twice() {
    let s = start(&[]).await;
    let (alice, _) = s.login(ALICE).await;
    let (bent, other) = (s.pc_session().await, s.pc_session().await);
    // Scanned sessions answer a poll at once (9) when nothing bends it.
    for t in [&bent, &other] {
        let r = s
            .post(&format!("/scan_pc/{t}"), json!({}), Some(&alice))
            .await;
        assert_eq!(r.code(), 0, "{}", r.body);
    }
    let id = add_ok(
        &s,
        &format!("api.code path=/session_login token={bent} code=18 times=2"),
    )
    .await;

    let (status, headers, body) = call(&s, &format!("/session_login/{other}"), json!({})).await;
    assert_eq!((status, body["code"].as_i64()), (200, Some(9)), "{body}");
    assert_eq!(fault_header(&headers), None);

    for _ in 0..2 {
        let (status, headers, body) = call(&s, &format!("/session_login/{bent}"), json!({})).await;
        assert_eq!((status, body["code"].as_i64()), (200, Some(18)), "{body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .starts_with("injected: code 18"),
            "{body}"
        );
        assert_eq!(
            fault_header(&headers),
            Some(format!("rule {id} api.code code=18").as_str())
        );
    }
    // The third poll is the real one.
    let (_, headers, body) = call(&s, &format!("/session_login/{bent}"), json!({})).await;
    assert_eq!(body["code"], 9, "{body}");
    assert_eq!(fault_header(&headers), None);
    let r = rule_of(&s, id).await;
    assert_eq!((&r["fired"], &r["spent"]), (&json!(2), &json!(true)), "{r}");
}

#[tokio::test]
async fn api_http_answers_503_twice_then_the_real_session() {
    let s = start(&[]).await;
    let id = add_ok(&s, "api.http path=/pc_session status=503 times=2").await;
    for _ in 0..2 {
        let (status, headers, body) = call(&s, "/pc_session", pc_body()).await;
        assert_eq!(status, 503, "{body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.starts_with("injected: HTTP 503"), "{error}");
        assert_eq!(
            fault_header(&headers),
            Some(format!("rule {id} api.http status=503").as_str())
        );
    }
    let (status, headers, body) = call(&s, "/pc_session", pc_body()).await;
    assert_eq!((status, body["code"].as_i64()), (200, Some(0)), "{body}");
    assert!(body["result"]["token"].is_string(), "{body}");
    assert_eq!(fault_header(&headers), None);
}

#[tokio::test]
async fn api_delay_answers_right_but_late() {
    let s = start(&[]).await;
    let id = add_ok(&s, "api.delay path=/pc_session ms=600").await;
    let t0 = Instant::now();
    let (status, headers, body) = call(&s, "/pc_session", pc_body()).await;
    let took = t0.elapsed();
    assert_eq!((status, body["code"].as_i64()), (200, Some(0)), "{body}");
    assert!(
        body["result"]["token"].is_string(),
        "the real answer: {body}"
    );
    assert!(took >= Duration::from_millis(600), "{took:?}");
    assert_eq!(
        fault_header(&headers),
        Some(format!("rule {id} api.delay").as_str())
    );
    // Another path is not touched.
    let (_, headers, body) = call(&s, "/login", login_body(ALICE, "66666")).await;
    assert_eq!(body["code"], 0, "{body}");
    assert_eq!(fault_header(&headers), None);
}

#[tokio::test]
async fn api_cut_and_api_hang_close_the_connection_with_no_answer() {
    let s = start(&[]).await;
    let url = format!("{}/login", s.url);
    // A client of its own: a fresh connection, nothing pooled to retry on.
    let lone = || {
        reqwest::Client::new()
            .post(&url)
            .json(&login_body(ALICE, "66666"))
            .send()
    };

    add_ok(&s, "api.cut path=/login").await;
    let e = lone().await.expect_err("a cut connection has no answer");
    assert!(e.status().is_none(), "{e:?}");
    assert_eq!(
        s.post("/login", login_body(ALICE, "66666"), None)
            .await
            .code(),
        0
    );

    add_ok(&s, "api.hang path=/login ms=300").await;
    let t0 = Instant::now();
    let e = lone().await.expect_err("a hung request has no answer");
    assert!(e.status().is_none(), "{e:?}");
    assert!(
        t0.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(
        s.post("/login", login_body(ALICE, "66666"), None)
            .await
            .code(),
        0
    );

    let kinds: Vec<Value> = s.faults().await["injected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["kind"].clone())
        .collect();
    assert_eq!(kinds, [json!("api.hang"), json!("api.cut")], "newest first");
}

#[tokio::test]
async fn qr_expire_latest_ends_the_waiting_poll() {
    let s = start(&[]).await;
    let (alice, _) = s.login(ALICE).await;
    let older = s.pc_session().await;
    let token = s.pc_session().await;
    let poll = s.spawn_poll(&token);
    until_polling(&s, &token).await;

    let (status, info) = add(&s, "qr.expire latest").await;
    assert_eq!(status, 201, "{info}");
    // It acted at once on the live session.
    assert_eq!(
        (&info["fired"], &info["spent"]),
        (&json!(1), &json!(true)),
        "{info}"
    );

    let r = poll.await.unwrap();
    assert!(gone(&r.body), "{}", r.body);
    let scan = s
        .post(&format!("/scan_pc/{token}"), json!({}), Some(&alice))
        .await;
    assert_eq!(scan.code(), 8, "{}", scan.body);
    let live: Vec<String> = s
        .client
        .dev_pc_sessions()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.token)
        .collect();
    assert_eq!(live, [older.as_str()], "only the newest one expired");
    let scan = s
        .post(&format!("/scan_pc/{older}"), json!({}), Some(&alice))
        .await;
    assert_eq!(scan.code(), 0, "{}", scan.body);

    let injected = &s.faults().await["injected"][0];
    assert_eq!(injected["kind"], "qr.expire");
    assert_eq!(injected["id"], info["id"]);
    assert!(
        injected["detail"].as_str().unwrap().contains(&token[..8]),
        "{injected}"
    );
}

#[tokio::test]
async fn qr_ttl_from_serve_shortens_every_session() {
    let s = start(&["--fault", "qr.ttl ms=1500"]).await;
    let t0 = Instant::now();
    let r = s.post("/pc_session", pc_body(), None).await;
    assert_eq!(r.code(), 0, "{}", r.body);
    let expired = r.body["result"]["expired"].as_i64().unwrap();
    assert!((1..=1500).contains(&expired), "{expired}");
    let token = r.body["result"]["token"].as_str().unwrap().to_owned();

    let done = s.spawn_poll(&token).await.unwrap();
    // It lived 1.5 s from its creation, which came after t0.
    assert!(
        t0.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    assert!(gone(&done.body), "{}", done.body);
    assert!(s.client.dev_pc_sessions().await.unwrap().is_empty());

    // The rule lasts: a later session is short-lived too.
    let r = s.post("/pc_session", pc_body(), None).await;
    let expired = r.body["result"]["expired"].as_i64().unwrap();
    assert!((1..=1500).contains(&expired), "{expired}");
    let rules = s.faults().await["rules"].clone();
    assert_eq!(rules[0]["rule"], "qr.ttl ms=1500");
    // Once per session, at its creation.
    assert_eq!(rules[0]["fired"], 2, "{rules}");
}

#[tokio::test]
async fn sms_fail_fails_one_send_and_the_next_works() {
    let s = start(&[]).await;
    let (m, other) = ("13900000001", "13900000002");
    add_ok(&s, &format!("sms.fail mobile={m}")).await;
    // Another mobile is out of scope.
    let r = s.post("/send_code", json!({"mobile": other}), None).await;
    assert_eq!(r.code(), 0, "{}", r.body);

    let r = s.post("/send_code", json!({"mobile": m}), None).await;
    assert_eq!(r.code(), 4, "{}", r.body);
    assert!(r.message().contains("injected"), "{}", r.body);
    let outbox = s.client.dev_sms(m, None, None).await.unwrap();
    assert_eq!(outbox.len(), 1, "{outbox:?}");
    assert_eq!(outbox[0].code, "");
    assert!(
        outbox[0].fault.as_deref().unwrap().starts_with("failed"),
        "{outbox:?}"
    );

    // Spent; the failed SMS did not count against the resend interval.
    let r = s.post("/send_code", json!({"mobile": m}), None).await;
    assert_eq!(r.code(), 0, "{}", r.body);
    let outbox = s.client.dev_sms(m, None, None).await.unwrap();
    assert_eq!(outbox.len(), 2, "{outbox:?}");
    assert_eq!(outbox[0].code.len(), 6, "newest first: {outbox:?}");
    assert!(outbox[0].fault.is_none());
    let r = s.post("/login", login_body(m, &outbox[0].code), None).await;
    assert_eq!(r.code(), 0, "{}", r.body);
}

#[tokio::test]
async fn sms_delay_delivers_the_code_late() {
    let s = start(&[]).await;
    let m = "13900000003";
    add_ok(&s, &format!("sms.delay mobile={m} ms=800")).await;
    let t0 = Instant::now();
    let t0_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let r = s.post("/send_code", json!({"mobile": m}), None).await;
    assert_eq!(r.code(), 0, "{}", r.body);
    let early = s.client.dev_sms(m, None, None).await.unwrap();
    // Only provable while less than the delay has passed since the send.
    if t0.elapsed() < Duration::from_millis(800) {
        assert!(early.is_empty(), "arrived early: {early:?}");
    }

    let r = s.get(&format!("/_dev/sms?mobile={m}&wait=30")).await;
    let outbox: Value = r.json().await.unwrap();
    let sms = &outbox[0];
    assert!(
        sms["fault"].as_str().unwrap().starts_with("delayed 800 ms"),
        "{outbox}"
    );
    assert!(sms["sentAt"].as_i64().unwrap() - t0_ms >= 800, "{outbox}");
    let code = sms["code"].as_str().unwrap();
    assert_eq!(code.len(), 6, "{outbox}");
    let r = s.post("/login", login_body(m, code), None).await;
    assert_eq!(r.code(), 0, "{}", r.body);
}

#[tokio::test]
async fn injections_are_counted_and_listed() {
    let s = start(&[]).await;
    let id = add_ok(&s, "api.http path=/pc_session status=500 times=2").await;
    for _ in 0..3 {
        s.http
            .post(format!("{}/pc_session", s.url))
            .json(&pc_body())
            .send()
            .await
            .unwrap();
    }
    let metrics = s.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("imctl_faults_injected_total{kind=\"api.http\"} 2\n"),
        "{metrics}"
    );
    assert!(!metrics.contains("imctl_faults_injected_total{kind=\"api.code\"}"));

    let list = s.faults().await;
    let injected = list["injected"].as_array().unwrap();
    assert_eq!(injected.len(), 2, "{list}");
    for i in injected {
        assert_eq!(
            (&i["id"], &i["kind"]),
            (&json!(id), &json!("api.http")),
            "{i}"
        );
        assert_eq!(i["detail"], "POST \"/pc_session\" answered HTTP 500");
        assert!(i["at"].as_i64().unwrap() > 0);
    }
}

/// Runs `imctl ARGS` off the async runtime.
fn run(
    state: &std::path::Path,
    args: &[&str],
) -> impl std::future::Future<Output = std::process::Output> + use<> {
    let dir = state.to_owned();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    async move {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            imctl(&dir, &args)
        })
        .await
        .unwrap()
    }
}

fn served(extra: &[&str]) -> Served {
    let mut args = vec!["--ephemeral", "--app-port", "0", "--broker-port", "0"];
    args.extend_from_slice(extra);
    Served::start(&args)
}

async fn post_at(url: &str, body: Value) -> Value {
    reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn chaos_cli_adds_lists_and_clears() {
    let stack = served(&[]);
    let state = tempfile::tempdir().unwrap();
    let chaos = |args: &[&str]| {
        let mut all = vec!["chaos", "--app-server", stack.app.as_str()];
        all.extend_from_slice(args);
        run(state.path(), &all)
    };

    let out = chaos(&["add", "api.code", "path=/login", "code=6"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let id: u64 = stdout(&out).trim().parse().expect("the id on stdout");
    let r = post_at(&format!("{}/login", stack.app), login_body(ALICE, "66666")).await;
    assert_eq!(r["code"], 6, "{r}");

    let out = chaos(&["list", "--json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["rules"][0]["id"], id, "{list}");
    assert_eq!(list["rules"][0]["rule"], "api.code path=/login code=6");
    assert_eq!(list["rules"][0]["fired"], 1);
    assert_eq!(list["injected"][0]["kind"], "api.code");

    let out = chaos(&["clear"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "cleared 1 rule");
    let out = chaos(&["list", "--json"]).await;
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["rules"], json!([]), "{list}");
}

#[tokio::test]
async fn chaos_cli_refuses_bad_rules_before_asking_the_server() {
    let state = tempfile::tempdir().unwrap();
    // Nothing listens there: a refusal must come from the parse.
    let nowhere = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    for (words, part) in [
        (&["bogus.kind"][..], "bogus.kind"),
        (&["ws.close", "user=a", "code=abc"][..], "code=abc"),
    ] {
        let mut args = vec!["chaos", "--app-server", nowhere.as_str(), "add"];
        args.extend_from_slice(words);
        let out = run(state.path(), &args).await;
        assert_eq!(out.status.code(), Some(2), "{words:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("bad rule") && err.contains(part), "{err}");
    }
}

#[test]
fn serve_refuses_a_bad_fault_rule() {
    let err = crate::snapshot::serve_fails_with(&["--ephemeral", "--fault", "nope"], 2);
    assert!(err.contains("nope"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("imctl.toml");
    std::fs::write(&file, "[[fault]]\nrule = \"api.code path=/x code=abc\"\n").unwrap();
    let err =
        crate::snapshot::serve_fails_with(&["--ephemeral", "--config", file.to_str().unwrap()], 2);
    assert!(err.contains("code=abc"), "{err}");
}

#[tokio::test]
async fn a_fault_in_the_config_file_takes_effect() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("imctl.toml");
    std::fs::write(
        &file,
        "[[fault]]\nrule = \"api.code path=/send_code code=3\"\n",
    )
    .unwrap();
    let stack = served(&["--config", file.to_str().unwrap()]);
    let url = format!("{}/send_code", stack.app);
    let r = post_at(&url, json!({"mobile": "13900000004"})).await;
    assert_eq!(r["code"], 3, "{r}");
    assert!(
        r["message"].as_str().unwrap().starts_with("injected"),
        "{r}"
    );
    // One-shot: the next is the real one.
    let r = post_at(&url, json!({"mobile": "13900000004"})).await;
    assert_eq!(r["code"], 0, "{r}");
}

#[tokio::test]
async fn api_faults_spare_the_probes_and_the_dev_api_and_log_no_usable_token() {
    let s = start(&[]).await;
    add_ok(&s, "api.http path=/ status=503").await;
    for probe in ["/readyz", "/healthz", "/metrics", "/_dev/faults"] {
        assert_eq!(s.get(probe).await.status(), 200, "{probe}");
    }
    let (status, _, _) = call(&s, "/pc_session", pc_body()).await;
    assert_eq!(status, 503);
    delete(&s, "/_dev/faults").await;

    let token = s.pc_session().await;
    add_ok(&s, "api.code path=/session_login code=8 times=1").await;
    let poll = s
        .post(&format!("/session_login/{token}"), json!({}), None)
        .await;
    assert_eq!(poll.code(), 8, "{}", poll.body);
    let detail = s.faults().await["injected"][0]["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(detail.contains(&token[..8]), "{detail}");
    assert!(!detail.contains(&token), "a usable token in {detail}");
}

#[tokio::test]
async fn imctls_own_sms_login_waits_for_a_delayed_code() {
    let s = start(&["--sms-interval", "10ms"]).await;
    // An earlier code sits in the outbox; the next one replaces it.
    let (status, _, body) = call(&s, "/send_code", json!({"mobile": ALICE})).await;
    assert_eq!((status, &body["code"]), (200, &json!(0)), "{body}");
    add_ok(&s, &format!("sms.delay mobile={ALICE} ms=1500")).await;
    let state = tempfile::tempdir().unwrap();
    let out =
        crate::common::simulate(state.path(), &s.url, &["mobile-login", "--user", "alice"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(s.faults().await["injected"][0]["kind"], "sms.delay");
}
