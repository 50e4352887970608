//! Issue 14, the app-server's side: every resource an HTTP client can make
//! the server hold is bounded in bytes and time, and bad settings are
//! refused at start.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Served, imctl, start, stderr};
use crate::snapshot::serve_fails_with;

#[test]
fn blank_admin_secret_empty_super_code_and_star_origin_are_refused() {
    for (args, says) in [
        (
            &["--ephemeral", "--admin-secret", " "][..],
            "--admin-secret must not be blank",
        ),
        (
            &["--ephemeral", "--admin-secret", ""][..],
            "--admin-secret must not be blank",
        ),
        (
            &["--ephemeral", "--super-code", ""][..],
            "--super-code none",
        ),
        (
            &["--ephemeral", "--cors-origin", "*.test"][..],
            "is not an origin",
        ),
        (
            &["--ephemeral", "--cors-origin", "http://a.test/x"][..],
            "is not an origin",
        ),
    ] {
        // Settings that cannot work: a usage error, like a bad flag.
        let err = serve_fails_with(args, 2);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn config_on_a_directory_or_fifo_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let refused = |path: &str, says: &str| {
        let out = imctl(dir.path(), &["serve", "--ephemeral", "--config", path]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
    };
    refused(d, "is a directory");
    let fifo = dir.path().join("imctl.toml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    refused(fifo.to_str().unwrap(), "not a regular file");
}

/// `POST path` with a raw `text/plain` body, as any web page may send it.
async fn post_text(http: &reqwest::Client, url: &str, body: String) -> (u16, Value) {
    let r = http
        .post(url)
        .header("content-type", "text/plain")
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn unauthenticated_fields_and_bodies_are_bounded_in_a_spawned_server() {
    let served = Served::start(&["--ephemeral", "--app-port", "0", "--broker-port", "0"]);
    let http = reqwest::Client::new();
    let pc = format!("{}/pc_session", served.app);
    // Warm up, so the first allocations do not count as growth.
    for _ in 0..20 {
        let body = json!({"clientId": "pc-1", "platform": 5, "device_name": "d"});
        assert_eq!(post_text(&http, &pc, body.to_string()).await.1["code"], 0);
    }
    let before = served.rss();
    // Under the body limit, but every field too long: refused, never stored.
    let big = "x".repeat(30 * 1024);
    for _ in 0..300 {
        let body = json!({"clientId": big, "platform": 5, "device_name": "d"});
        let (_, r) = post_text(&http, &pc, body.to_string()).await;
        assert_eq!(r["code"], 15, "{r}");
        assert!(
            r["message"]
                .as_str()
                .unwrap()
                .contains("clientId has at most 128")
        );
        let body = json!({"clientId": "pc-1", "platform": 5, "device_name": big});
        let (_, r) = post_text(&http, &pc, body.to_string()).await;
        assert_eq!(r["code"], 15, "{r}");
    }
    let login = json!({"mobile": "13800000001", "code": "66666", "clientId": big, "platform": 2});
    let (_, r) = post_text(&http, &format!("{}/login", served.app), login.to_string()).await;
    assert_eq!(r["code"], 15, "{r}");
    // Over the body limit: refused from its length, before it is read,
    // on every route (the rest of the body is never sent).
    for path in ["/pc_session", "/login", "/send_code"] {
        let mut tcp = raw(
            &served.app,
            format!(
                "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{{\"clientId\": \"",
                1 << 20
            ),
        )
        .await;
        let answer = answer_of(&mut tcp).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
        assert!(answer.contains(r#""code":15"#), "{path}: {answer}");
        assert!(answer.contains("larger than 64 KiB"), "{path}: {answer}");
    }
    let grown = served.rss().saturating_sub(before);
    assert!(grown < 32 << 20, "RSS grew by {} MiB", grown >> 20);
    // The dev list answers the 20 live sessions, bounded by `limit`.
    let list: Vec<Value> = http
        .get(format!("{}/_dev/pc_sessions?limit=5", served.app))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.len(), 5);
    let r = http
        .get(format!("{}/_dev/pc_sessions?limit=100000", served.app))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    eprintln!("RSS growth over 600 oversized fields: {} KiB", grown >> 10);
}

/// A client bound to `ip` (any 127.x address reaches a loopback server).
fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(ip))
        .build()
        .unwrap()
}

#[tokio::test]
async fn live_qr_sessions_are_capped_in_all_and_per_address() {
    let s = start(&["--max-qr-sessions", "5", "--max-qr-sessions-per-ip", "3"]).await;
    let body = json!({"clientId": "pc-1", "platform": 5}).to_string();
    let url = format!("{}/pc_session", s.url);
    let (a, b) = (client_from([127, 0, 0, 2]), client_from([127, 0, 0, 3]));
    for _ in 0..3 {
        assert_eq!(post_text(&a, &url, body.clone()).await.1["code"], 0);
    }
    let (_, r) = post_text(&a, &url, body.clone()).await;
    assert_eq!(r["code"], 3, "{r}");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("--max-qr-sessions-per-ip"),
        "{r}"
    );
    for _ in 0..2 {
        assert_eq!(post_text(&b, &url, body.clone()).await.1["code"], 0);
    }
    let (_, r) = post_text(&b, &url, body.clone()).await;
    assert_eq!(r["code"], 3, "{r}");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("--max-qr-sessions)"),
        "{r}"
    );
}

#[tokio::test]
async fn sms_codes_per_mobile_and_logins_per_address_are_limited_but_not_for_tests() {
    let s = start(&[
        "--sms-interval",
        "0s",
        "--sms-per-mobile-per-day",
        "2",
        "--logins-per-ip-per-minute",
        "4",
        "--sms-test-code",
        "13800000009=1234",
    ])
    .await;
    let send = |m: &str| s.post("/send_code", json!({"mobile": m}), None);
    assert_eq!(send("13800000001").await.code(), 0);
    assert_eq!(send("13800000001").await.code(), 0);
    let r = send("13800000001").await;
    assert_eq!(r.code(), 3, "{}", r.body);
    assert!(
        r.message().contains("--sms-per-mobile-per-day"),
        "{}",
        r.body
    );
    // The test-code mobile is never limited.
    for _ in 0..6 {
        assert_eq!(send("13800000009").await.code(), 0);
    }
    // Three calls counted so far from this address; one more is allowed.
    let wrong = json!({"mobile": "13800000001", "code": "000000", "clientId": "c", "platform": 2});
    assert_eq!(s.post("/login", wrong.clone(), None).await.code(), 6);
    let r = s.post("/login", wrong, None).await;
    assert_eq!(r.code(), 3, "{}", r.body);
    assert!(
        r.message().contains("--logins-per-ip-per-minute"),
        "{}",
        r.body
    );
    // The super code and test codes still log in.
    s.login("13800000002").await;
    let test = json!({"mobile": "13800000009", "code": "1234", "clientId": "c", "platform": 2});
    assert_eq!(s.post("/login", test, None).await.code(), 0);

    let free = start(&["--sms-interval", "0s", "--no-rate-limits"]).await;
    for _ in 0..12 {
        let r = free
            .post("/send_code", json!({"mobile": "13800000001"}), None)
            .await;
        assert_eq!(r.code(), 0, "{}", r.body);
    }
}

#[tokio::test]
async fn dev_sms_wait_is_bounded_with_a_400() {
    let s = start(&[]).await;
    for wait in ["1e20", "121", "-1", "NaN", "inf"] {
        let r = s.get(&format!("/_dev/sms?wait={wait}")).await;
        assert_eq!(r.status(), 400, "wait={wait}");
        let body: Value = r.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("wait="), "{body}");
    }
    let r = s.get("/_dev/sms?wait=0").await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn oversized_headers_are_refused() {
    let s = start(&[]).await;
    let r = s
        .http
        .get(format!("{}/healthz", s.url))
        .header("x-filler", "x".repeat(100 * 1024))
        .send()
        .await;
    // hyper answers 431, or closes the connection while the client writes.
    match r {
        Ok(r) => assert_eq!(r.status(), 431),
        Err(e) => assert!(e.is_request(), "{e}"),
    }
    assert_eq!(s.get("/healthz").await.status(), 200);
}

/// Opens a connection that sends half a request header and then nothing.
async fn half_header(addr: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"POST /login HTTP/1.1\r\nHost: localhost\r\nContent-Ty")
        .await
        .unwrap();
    tcp
}

/// Whether the server closes `tcp` before `deadline`.
async fn closed_by(mut tcp: tokio::net::TcpStream, deadline: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    matches!(
        tokio::time::timeout(deadline, tcp.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn half_headers_time_out_and_healthz_answers_over_the_connection_cap() {
    let s = start(&["--http-timeout", "1s", "--max-connections", "20"]).await;
    let app = s.running.app_addr.to_string();
    let broker = s.running.broker_addr.to_string();
    let opened = Instant::now();
    let mut stuck = Vec::new();
    for _ in 0..20 {
        stuck.push(half_header(&app).await);
    }
    let on_broker = half_header(&broker).await;
    // The cap is reached: probes still answer, the API says 503.
    let fresh = reqwest::Client::new();
    let r = fresh
        .get(format!("{}/healthz", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = reqwest::Client::new()
        .post(format!("{}/login", s.url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("--max-connections"),
        "{body}"
    );
    // Every half header is cut off after the 1 s timeout (plus slack).
    let closes = stuck
        .into_iter()
        .chain([on_broker])
        .map(|tcp| closed_by(tcp, Duration::from_secs(5)));
    let closed = futures_util::future::join_all(closes).await;
    assert!(closed.iter().all(|c| *c), "{closed:?}");
    eprintln!("21 half headers closed after {:?}", opened.elapsed());
    // And the slots are free again.
    let r = reqwest::Client::new()
        .post(format!("{}/login", s.url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Logs in on a spawned server with the super code; returns the authToken.
async fn login_on(http: &reqwest::Client, app: &str) -> String {
    let r = http
        .post(format!("{app}/login"))
        .json(&json!({"mobile": "13800000001", "code": "66666", "clientId": "c", "platform": 2}))
        .send()
        .await
        .unwrap();
    r.headers()["authToken"].to_str().unwrap().to_owned()
}

/// Uploads `size` bytes as `text/plain`; returns the media URL.
async fn upload(http: &reqwest::Client, app: &str, auth: &str, size: usize) -> String {
    let r = http
        .post(format!("{app}/media"))
        .header("authToken", auth)
        .header("content-type", "text/plain")
        .body(vec![b'x'; size])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    v["url"].as_str().unwrap().to_owned()
}

/// A raw connection that sent `head` and then does nothing more.
async fn raw(app: &str, head: String) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let addr = app.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp
}

#[tokio::test]
async fn sigterm_finishes_within_the_shutdown_timeout_and_exports_whatever_clients_do() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("exit.json");
    let mut served = Served::start(&[
        "--ephemeral",
        "--app-port",
        "0",
        "--broker-port",
        "0",
        "--shutdown-timeout",
        "2s",
        "--export-on-exit",
        export.to_str().unwrap(),
    ]);
    let http = reqwest::Client::new();
    let auth = login_on(&http, &served.app).await;
    let url = upload(&http, &served.app, &auth, 16 << 20).await;
    // A download nobody reads, and an upload that trickles.
    let path = url.strip_prefix(&served.app).unwrap();
    let _download = raw(
        &served.app,
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"),
    )
    .await;
    let mut trickle = raw(
        &served.app,
        format!(
            "POST /media HTTP/1.1\r\nHost: localhost\r\nauthToken: {auth}\r\nContent-Type: text/plain\r\nContent-Length: 1000000\r\n\r\n"
        ),
    )
    .await;
    let trickling = tokio::spawn(async move {
        while trickle.write_all(b"x").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let signalled = Instant::now();
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(served.pid() as i32, libc::SIGTERM) }, 0);
    let status = loop {
        if let Some(status) = served.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGTERM with --shutdown-timeout 2s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("exited {:?} after SIGTERM", signalled.elapsed());
    trickling.abort();
    assert!(status.success(), "{status:?}");
    // The snapshot was written, and it loads.
    assert!(export.is_file());
    let again = Served::start(&[
        "--ephemeral",
        "--app-port",
        "0",
        "--broker-port",
        "0",
        "--import",
        export.to_str().unwrap(),
    ]);
    let r = http
        .get(format!("{}/healthz", again.app))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn a_second_signal_exits_at_once() {
    let mut served = Served::start(&[
        "--ephemeral",
        "--app-port",
        "0",
        "--broker-port",
        "0",
        "--shutdown-timeout",
        "60s",
    ]);
    // A body that never completes keeps the first shutdown waiting; the
    // second signal must not wait for it.
    let mut trickle =
        std::net::TcpStream::connect(served.app.trim_start_matches("http://")).unwrap();
    std::io::Write::write_all(
        &mut trickle,
        b"POST /login HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n{",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let pid = served.pid() as i32;
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        served.child.try_wait().unwrap().is_none(),
        "the first signal waits for the upload"
    );
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let signalled = Instant::now();
    let status = loop {
        if let Some(status) = served.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(5),
            "a second signal was ignored"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "{status:?}");
}

/// Reads what the server answers on `tcp` within 5 s (it may close after).
async fn answer_of(tcp: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("an answer within 5 s")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn an_upload_of_a_refused_type_is_answered_before_its_body() {
    let s = start(&[]).await;
    let (auth, _) = s.login("13800000001").await;
    let head = |content_type: &str| {
        format!(
            "POST /media HTTP/1.1\r\nHost: localhost\r\nauthToken: {auth}\r\nContent-Type: {content_type}\r\nContent-Length: 10000000\r\n\r\n"
        )
    };
    let mut tcp = raw(&s.url, head("application/x-msdownload")).await;
    let answer = answer_of(&mut tcp).await;
    assert!(answer.starts_with("HTTP/1.1 415"), "{answer}");
    // A multipart part is judged by its own header, before its bytes.
    let mut tcp = raw(&s.url, head("multipart/form-data; boundary=b")).await;
    use tokio::io::AsyncWriteExt;
    tcp.write_all(
        b"--b\r\nContent-Disposition: form-data; name=\"f\"\r\nContent-Type: text/html\r\n\r\n<p>",
    )
    .await
    .unwrap();
    let answer = answer_of(&mut tcp).await;
    assert!(answer.starts_with("HTTP/1.1 415"), "{answer}");
    // Too large by its Content-Length: 413 at once.
    let mut tcp = raw(
        &s.url,
        head("image/png").replace("10000000", &(100u64 << 20).to_string()),
    )
    .await;
    let answer = answer_of(&mut tcp).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

#[tokio::test]
async fn ephemeral_uploads_stop_at_the_media_quota() {
    const MIB: usize = 1 << 20;
    let quota = (64 * MIB).to_string();
    let served = Served::start(&[
        "--ephemeral",
        "--app-port",
        "0",
        "--broker-port",
        "0",
        "--media-quota",
        &quota,
    ]);
    let http = reqwest::Client::new();
    let auth = login_on(&http, &served.app).await;
    let before = served.rss();
    let (mut stored, mut refused) = (0, 0);
    for _ in 0..20 {
        let r = http
            .post(format!("{}/media", served.app))
            .header("authToken", &auth)
            .header("content-type", "text/plain")
            .body(vec![b'x'; 16 * MIB])
            .send()
            .await;
        // A refusal comes before the body is read, so the client may see
        // its write cut off rather than the 507 (asserted below).
        match r.map(|r| r.status().as_u16()) {
            Ok(201) => stored += 1,
            Ok(507) => refused += 1,
            Err(e) if e.is_request() => refused += 1,
            other => panic!("{other:?}"),
        }
    }
    let mut tcp = raw(
        &served.app,
        format!(
            "POST /media HTTP/1.1\r\nHost: localhost\r\nauthToken: {auth}\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n"
        ),
    )
    .await;
    let answer = answer_of(&mut tcp).await;
    assert!(answer.starts_with("HTTP/1.1 507"), "{answer}");
    assert!(answer.contains("--media-quota"), "{answer}");
    let grown = served.rss().saturating_sub(before);
    eprintln!(
        "20 × 16 MiB uploads, quota 64 MiB: {stored} stored, RSS +{} MiB",
        grown >> 20
    );
    assert_eq!((stored, refused), (4, 16));
    assert!(grown < 128 * MIB as u64, "RSS grew by {} MiB", grown >> 20);
}

#[tokio::test]
async fn downloads_stream_from_disk_and_media_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let served = Served::start(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--app-port",
        "0",
        "--broker-port",
        "0",
    ]);
    let http = reqwest::Client::new();
    let auth = login_on(&http, &served.app).await;
    let url = upload(&http, &served.app, &auth, 16 << 20).await;
    // Streamed from disk, still with its length (clients show progress).
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.content_length(), Some(16 << 20));
    drop(r);
    let media = data.join("media");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&media), 0o700);
    let file = std::fs::read_dir(&media)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(mode(&file), 0o600);
    let before = served.rss();
    let path = url.strip_prefix(&served.app).unwrap().to_owned();
    let mut readers = Vec::new();
    for _ in 0..40 {
        readers.push(
            raw(
                &served.app,
                format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"),
            )
            .await,
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let grown = served.rss().saturating_sub(before);
    eprintln!(
        "40 non-reading downloads of 16 MiB: RSS +{} MiB",
        grown >> 20
    );
    assert!(grown < 48 << 20, "RSS grew by {} MiB", grown >> 20);
}

#[tokio::test]
async fn admin_users_prints_old_control_characters_escaped_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let on_disk = [
        "--data-dir",
        data.to_str().unwrap(),
        "--app-port",
        "0",
        "--broker-port",
        "0",
        "--admin-secret",
        "s3cret",
    ];
    drop(Served::start(&on_disk));
    // Data written before validation existed: straight into the database.
    const FORGED: &str = "UPDATE users SET display_name = $1 WHERE id = 'alice'";
    let name = "\u{1b}[2J\nforged  admin  [banned]";
    match crate::common::test_database_of(&data) {
        Some(url) => {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            sqlx::query(FORGED).bind(name).execute(&pool).await.unwrap();
            pool.close().await;
        }
        None => {
            let db = imctl::store::database_path(&data);
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
                .await
                .unwrap();
            sqlx::query(FORGED).bind(name).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }
    let served = Served::start(&on_disk);
    let out = tokio::task::spawn_blocking({
        let (state, app) = (dir.path().to_owned(), served.app.clone());
        move || {
            imctl(
                &state,
                &[
                    "admin",
                    "users",
                    "--app-server",
                    &app,
                    "--admin-secret",
                    "s3cret",
                ],
            )
        }
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains('\u{1b}'), "{text:?}");
    let alice: Vec<&str> = text.lines().filter(|l| l.starts_with("alice")).collect();
    assert_eq!(alice.len(), 1, "{text}");
    assert!(alice[0].contains(r"\u{1b}[2J\nforged"), "{text}");
    assert!(!text.lines().any(|l| l.starts_with("forged")), "{text}");
}

#[tokio::test]
async fn admin_messages_are_validated_like_chat_sends() {
    let s = start(&["--admin-secret", "s3cret", "--max-frame", "1024"]).await;
    let send = |text: String| {
        s.http
            .post(format!("{}/admin/messages", s.url))
            .header("x-admin-secret", "s3cret")
            .json(&json!({"to": {"type": "single", "target": "alice"}, "text": text}))
            .send()
    };
    let r = send("hello".into()).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = send("x".repeat(2000)).await.unwrap();
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("--max-frame"),
        "{body}"
    );
    let r = send("   ".into()).await.unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn stalled_bodies_and_unread_answers_are_cut_off_after_the_http_timeout() {
    use tokio::io::AsyncReadExt;
    let s = start(&["--http-timeout", "1s"]).await;
    let (auth, _) = s.login("13800000001").await;
    let size = 8 << 20;
    let url = upload(&s.http, &s.url, &auth, size).await;
    // A body that stops after one byte: answered or closed, not held.
    let trickle = raw(
        &s.url,
        "POST /login HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{".into(),
    )
    .await;
    let mut unread = raw(
        &s.url,
        format!(
            "GET {} HTTP/1.1\r\nHost: localhost\r\n\r\n",
            url.strip_prefix(&s.url).unwrap()
        ),
    )
    .await;
    let started = Instant::now();
    let mut t = trickle;
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = vec![0u8; 4096];
        let mut all = Vec::new();
        loop {
            match t.read(&mut buf).await {
                Ok(0) | Err(_) => break all,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the stalled body is given up within the timeout + slack");
    let answer = String::from_utf8_lossy(&answer);
    eprintln!("stalled body given up after {:?}", started.elapsed());
    assert!(answer.contains(r#""code":15"#), "{answer}");
    assert!(answer.contains("timeout"), "{answer}");
    // The unread download: the server gives up; what arrived is short of
    // the file, and the stream ends.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0;
        loop {
            match unread.read(&mut buf).await {
                Ok(0) | Err(_) => break total,
                Ok(n) => total += n,
            }
        }
    })
    .await
    .expect("the server closed the unread download");
    assert!(got < size, "read {got} of {size} bytes: not cut off");
}

/// `imctl serve ARGS` under `ulimit -n files` (killed on drop).
fn serve_with_files(files: u32, args: &str) -> Served {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n {files} && exec {} serve --ephemeral --app-port 0 --broker-port 0 {args}",
            env!("CARGO_BIN_EXE_imctl")
        ))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let app = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            Some(
                l.trim()
                    .strip_prefix("web page")?
                    .trim()
                    .trim_end_matches('/')
                    .to_owned(),
            )
        })
        .expect("banner shows the web page");
    std::thread::spawn(move || lines.for_each(drop));
    Served {
        child,
        app,
        ws: String::new(),
    }
}

#[tokio::test]
async fn with_300_files_a_half_header_flood_leaves_healthz_answering() {
    let served = serve_with_files(300, "--http-timeout 2s");
    let app = served.app.clone();
    // 300 files: 54 connections per port plus 32 for the probes.
    let addr = app.trim_start_matches("http://").to_owned();
    let mut stuck = Vec::new();
    for _ in 0..80 {
        stuck.push(half_header(&addr).await);
    }
    let r = reqwest::Client::new()
        .get(format!("{app}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let login = || {
        reqwest::Client::new()
            .post(format!("{app}/login"))
            .body("{}")
            .send()
    };
    assert_eq!(login().await.unwrap().status(), 503);
    let closed = futures_util::future::join_all(
        stuck
            .into_iter()
            .map(|tcp| closed_by(tcp, Duration::from_secs(8))),
    )
    .await;
    assert!(closed.iter().all(|c| *c), "{closed:?}");
    assert_eq!(login().await.unwrap().status(), 200);
}
