//! The real `imctl` binary: `simulate` against a live server, and `serve`.

use std::process::Command;

use serde_json::{Value, json};

use crate::common::{imctl, simulate, spawn_serve, start, stderr, stdout, until_polling};

fn json_out(o: &std::process::Output) -> Value {
    assert!(
        o.status.success(),
        "imctl failed: {}\n{}",
        stdout(o),
        stderr(o)
    );
    serde_json::from_str(stdout(o).trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

#[tokio::test]
async fn mobile_login_saves_the_phone_session() {
    let s = start(&[]).await;
    let state = tempfile::tempdir().unwrap();
    let out = simulate(state.path(), &s.url, &["mobile-login", "--user", "bob"]).await;
    let v = json_out(&out);
    assert_eq!(v["userId"], "bob");
    assert_eq!(v["mobile"], "13800000002");
    let saved = std::fs::read_to_string(state.path().join("phones.json")).unwrap();
    assert!(saved.contains("13800000002") && saved.contains(&s.url));
    // The code came from the outbox, not the super code.
    assert_eq!(
        s.client
            .dev_sms("13800000002", None, None)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn approve_latest_logs_the_web_page_in() {
    let s = start(&["--super-code", "none"]).await;
    let state = tempfile::tempdir().unwrap();
    let token = s.pc_session().await;
    let poll = s.spawn_poll(&token);
    until_polling(&s, &token).await;
    let out = simulate(
        state.path(),
        &s.url,
        &["approve", "--latest", "--as", "alice"],
    )
    .await;
    let v = json_out(&out);
    assert_eq!(
        (
            v["token"].as_str(),
            v["userId"].as_str(),
            v["status"].as_i64()
        ),
        (Some(token.as_str()), Some("alice"), Some(2))
    );
    assert_eq!(poll.await.unwrap().code(), 9);
    let done = s
        .post(&format!("/session_login/{token}"), json!({}), None)
        .await;
    assert_eq!(done.body["result"]["userId"], "alice");
}

#[tokio::test]
async fn scan_from_a_png_confirm_by_qr_text_and_cancel_by_url() {
    let s = start(&[]).await;
    let state = tempfile::tempdir().unwrap();
    let run = |args: Vec<String>| {
        let (dir, url) = (state.path().to_owned(), s.url.clone());
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            simulate(&dir, &url, &args).await
        }
    };

    // Scan a PNG the server rendered, then confirm with the full QR text.
    let token = s.pc_session().await;
    let png = s
        .get(&format!("/pc_session/{token}/qr.png"))
        .await
        .bytes()
        .await
        .unwrap();
    let file = state.path().join("qr.png");
    std::fs::write(&file, &png).unwrap();
    let out = run(vec![
        "scan".into(),
        "--image".into(),
        file.display().to_string(),
        "--as".into(),
        "carol".into(),
    ])
    .await;
    assert_eq!(json_out(&out)["status"], 1);
    let out = run(vec!["confirm".into(), format!("imctl://pcsession/{token}")]).await;
    assert_eq!(
        json_out(&out)["userId"],
        "carol",
        "the last phone used is the default"
    );
    let done = s
        .post(&format!("/session_login/{token}"), json!({}), None)
        .await;
    assert_eq!(done.body["result"]["userId"], "carol");

    // Scan by the URL of the QR picture, then cancel.
    let token = s.pc_session().await;
    let out = run(vec![
        "scan".into(),
        format!("{}/pc_session/{token}/qr.png", s.url),
        "--as".into(),
        "13800000001".into(),
    ])
    .await;
    assert_eq!(json_out(&out)["userId"], "alice");
    let out = run(vec![
        "cancel".into(),
        "--latest".into(),
        "--as".into(),
        "alice".into(),
    ])
    .await;
    assert_eq!(json_out(&out)["status"], 4);
    assert_eq!(
        s.post(&format!("/session_login/{token}"), json!({}), None)
            .await
            .code(),
        18
    );

    // Wrong user: bob cannot confirm what alice scanned (exit 5).
    let token = s.pc_session().await;
    run(vec![
        "scan".into(),
        token.clone(),
        "--as".into(),
        "alice".into(),
    ])
    .await;
    let out = run(vec![
        "confirm".into(),
        token.clone(),
        "--as".into(),
        "bob".into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("another user"), "{}", stderr(&out));

    // Unknown token (exit 4) and unknown user (exit 1).
    let out = run(vec![
        "scan".into(),
        "deadbeef".into(),
        "--as".into(),
        "alice".into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not found or expired"),
        "{}",
        stderr(&out)
    );
    let out = run(vec!["scan".into(), token, "--as".into(), "zed".into()]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no user \"zed\""), "{}", stderr(&out));
}

#[tokio::test]
async fn web_login_with_approve_as_is_a_one_command_smoke_test() {
    let s = start(&[]).await;
    let state = tempfile::tempdir().unwrap();
    let out = simulate(state.path(), &s.url, &["web-login", "--approve-as", "bob"]).await;
    let v = json_out(&out);
    assert_eq!(v["userId"], "bob");
    let claims = s
        .running
        .state
        .im_tokens
        .verify(v["token"].as_str().unwrap())
        .unwrap();
    assert_eq!((claims.sub.as_str(), claims.plt), ("bob", 5));
    assert!(v["authToken"].as_str().unwrap().len() >= 32);
}

#[test]
fn unreachable_server_is_exit_3_with_a_hint() {
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let url = format!("http://{free}");
    let out = imctl(
        state.path(),
        &[
            "simulate",
            "approve",
            "--latest",
            "--as",
            "alice",
            "--app-server",
            &url,
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("cannot reach {url}")),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("imctl serve"));
}

#[test]
fn an_https_address_without_the_tls_feature_says_how_to_get_it() {
    if cfg!(feature = "tls") {
        eprintln!("SKIPPED: built with --features tls, which speaks https");
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let out = imctl(
        state.path(),
        &[
            "simulate",
            "mobile-login",
            "--user",
            "alice",
            "--app-server",
            "https://127.0.0.1:9",
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("built without TLS") && stderr(&out).contains("--features tls"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn help_and_version() {
    let state = tempfile::tempdir().unwrap();
    let out = imctl(state.path(), &["--version"]);
    assert!(stdout(&out).contains(env!("CARGO_PKG_VERSION")));
    let out = imctl(state.path(), &["simulate", "--help"]);
    assert!(stdout(&out).contains("Exit codes"));
    let out = imctl(state.path(), &["client", "--help"]);
    assert!(stdout(&out).contains("6  timed out"), "{}", stdout(&out));
    assert!(stdout(&out).contains("--listen"));
    for sub in [
        "serve",
        "simulate approve",
        "simulate web-login",
        "simulate mobile-login",
        "client",
        "bench chat",
        "bench group",
        "bench connect",
        "bench login",
        "exec",
        "status",
        "wait-ready",
        "completions",
        "man",
        "export",
    ] {
        let mut args: Vec<&str> = sub.split(' ').collect();
        args.push("--help");
        assert!(imctl(state.path(), &args).status.success(), "{sub} --help");
    }
}

#[test]
fn serve_on_port_0_shows_the_real_port_and_stops_on_sigterm() {
    let (mut child, url, _) =
        spawn_serve(&["--ephemeral", "--app-port", "0", "--broker-port", "0"]);
    assert!(!url.ends_with(":0"), "{url}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ready = rt.block_on(async {
        reqwest::get(format!("{url}/readyz"))
            .await
            .map(|r| r.status().as_u16())
    });
    assert_eq!(ready.unwrap(), 200);
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status}");
}

#[test]
fn a_taken_port_names_the_port_and_the_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_imctl"))
        .args(["serve", "--ephemeral", "--app-port", &port])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("port {port}")) && err.contains("--app-port"),
        "{err}"
    );
    // This test process holds the port, and the message names it.
    assert!(
        err.contains(&format!("by pid {} (", std::process::id())),
        "{err}"
    );
}
