//! PostgreSQL as the store, whatever the pass: a restart under load, and the
//! one-line answers to a wrong `--database`. (The rest of the suite runs on
//! PostgreSQL in the second pass of `scripts/test.sh`.)

use std::process::Command;
use std::time::{Duration, Instant};

use imctl::client::AppClient;
use imctl::client::chat::{ChatConn, ChatError};
use imctl::pg_local::{self, LocalPostgres};
use serde_json::json;

use crate::common::{Served, stderr};

/// A server of the test's own (it restarts it or changes its settings),
/// or `None` after saying why the test is skipped.
fn own_server(test: &str) -> Option<LocalPostgres> {
    pg_local::or_skip(test, LocalPostgres::start())
}

async fn ready(app: &str) -> u16 {
    match reqwest::get(format!("{app}/readyz")).await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// Every acked send is stored exactly once after PostgreSQL is killed
/// (`-m immediate`, like a crash) and started again under load; meanwhile
/// reads answer 503, `/readyz` answers 503, and imctl stays up.
#[tokio::test]
async fn a_postgres_restart_under_load_costs_a_pause_not_an_ack() {
    let Some(mut pg) = own_server("a_postgres_restart_under_load_costs_a_pause_not_an_ack") else {
        return;
    };
    let url = pg.fresh_database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    // Trust authentication ignores the password; it is there to be masked.
    let url = url.replacen("imctl@", "imctl:pass-word@", 1);
    let served = Served::start(&[
        "--database",
        &url,
        "--data-dir",
        data,
        "--app-port",
        "0",
        "--broker-port",
        "0",
    ]);
    let client = AppClient::new(&served.app);
    let (alice, _) = client
        .login("13800000001", "66666", "alice-phone", 2)
        .await
        .unwrap();
    let (bob, _) = client
        .login("13800000002", "66666", "bob-phone", 2)
        .await
        .unwrap();
    let (mut reader, _) = ChatConn::connect(&served.ws, &bob.token, "bob-phone", 2)
        .await
        .unwrap();
    assert_eq!(ready(&served.app).await, 200);
    let status: serde_json::Value = reqwest::get(format!("{}/_dev/status", served.app))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let shown = status["database"].as_str().unwrap();
    assert!(
        shown.starts_with("PostgreSQL postgres://imctl:***@127.0.0.1:"),
        "{shown}"
    );

    // alice sends one message after another, each with a clientMsgId, and
    // resends a send that failed, as a client does.
    const N: usize = 200;
    let ws = served.ws.clone();
    let token = alice.token.clone();
    let sender = tokio::spawn(async move {
        let (mut conn, _) = ChatConn::connect(&ws, &token, "alice-phone", 2)
            .await
            .unwrap();
        conn.set_timeout(Duration::from_secs(60));
        let mut acked = Vec::new();
        for i in 0..N {
            let cmid = format!("r-{i}");
            let ack = loop {
                match conn
                    .send_text("single", "bob", &format!("m {i}"), Some(&cmid))
                    .await
                {
                    Ok(ack) => break ack,
                    Err(ChatError::Refused { code, .. }) if code == 500 || code == 503 => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => panic!("send {i}: {e}"),
                }
            };
            acked.push(ack.msg_id);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        acked
    });

    tokio::time::sleep(Duration::from_millis(500)).await;
    pg.kill_hard();
    // While it is down: imctl is up, not ready, and a read says 503.
    let down = Instant::now();
    let mut saw_not_ready = false;
    while down.elapsed() < Duration::from_secs(10) && !saw_not_ready {
        saw_not_ready = ready(&served.app).await == 503;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        saw_not_ready,
        "/readyz kept answering 200 with PostgreSQL down"
    );
    let read = reader
        .request(json!({"op": "sync", "since": 0, "limit": 10}))
        .await;
    match read {
        Err(ChatError::Refused { code: 503, .. }) => {}
        other => panic!("a read while PostgreSQL is down: {other:?}"),
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    pg.start_again().unwrap();

    let acked = tokio::time::timeout(Duration::from_secs(90), sender)
        .await
        .expect("the sends finish once PostgreSQL is back")
        .unwrap();
    let back = Instant::now();
    while ready(&served.app).await != 200 {
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "/readyz stays 503"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // bob's inbox: every acked message once, in order, seqs 1..=N.
    let page = reader
        .request(json!({"op": "sync", "since": 0, "limit": 1000}))
        .await
        .unwrap();
    let entries = page["entries"].as_array().unwrap();
    let seqs: Vec<i64> = entries.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    let ids: Vec<&str> = entries
        .iter()
        .map(|e| e["message"]["msgId"].as_str().unwrap())
        .collect();
    assert_eq!(seqs, (1..=N as i64).collect::<Vec<_>>());
    assert_eq!(ids, acked.iter().map(String::as_str).collect::<Vec<_>>());
    drop(served);
    drop(pg);
}

/// A wrong `--database` ends `serve` at once with one line saying which
/// part is wrong: exit 2 for settings, 3 for a server that cannot be reached.
#[test]
fn a_wrong_database_exits_with_one_line_saying_what_to_fix() {
    let run = |url: &str| {
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_imctl"))
            .args([
                "serve",
                "--app-port",
                "0",
                "--broker-port",
                "0",
                "--data-dir",
            ])
            .arg(dir.path())
            .args(["--database", url])
            .output()
            .unwrap();
        let took = started.elapsed();
        let err = stderr(&out);
        assert!(took < Duration::from_secs(15), "{url}: {took:?}");
        assert_eq!(err.trim().lines().count(), 1, "{url}: {err}");
        (out.status.code(), err)
    };
    let (code, err) = run("mysql://u@h/db");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("unknown database scheme \"mysql\""), "{err}");
    let (code, err) = run("postgres://imctl:secret-pw@127.0.0.1:bad/x");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("not a PostgreSQL URL") && !err.contains("secret-pw"),
        "{err}"
    );
    // Nothing listens on a port just freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, err) = run(&format!("postgres://imctl:secret-pw@127.0.0.1:{port}/x"));
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("cannot reach PostgreSQL") && !err.contains("secret-pw"),
        "{err}"
    );

    let Some(pg) = own_server("a_wrong_database_exits_with_one_line_saying_what_to_fix") else {
        return;
    };
    let (code, err) = run(&pg.url("no_such_database"));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no database \"no_such_database\""), "{err}");
    assert!(err.contains("createdb no_such_database"), "{err}");

    // A user whose password is checked, given the wrong one.
    let hba = pg.data_dir().join("pg_hba.conf");
    let trusted = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("host all pwuser 127.0.0.1/32 scram-sha-256\n{trusted}"),
    )
    .unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let admin = sqlx::PgPool::connect(&pg.url("postgres")).await.unwrap();
        for sql in [
            "CREATE ROLE pwuser LOGIN PASSWORD 'the-right-one'",
            "SELECT pg_reload_conf()",
        ] {
            sqlx::query(sql).execute(&admin).await.unwrap();
        }
        admin.close().await;
    });
    let port = pg.port();
    let (code, err) = run(&format!(
        "postgres://pwuser:not-the-one@127.0.0.1:{port}/postgres"
    ));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("refused user \"pwuser\"") && !err.contains("not-the-one"),
        "{err}"
    );
    // With the right password, the check passes and the next one fails.
    let (code, err) = run(&format!(
        "postgres://pwuser:the-right-one@127.0.0.1:{port}/nope"
    ));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no database \"nope\""), "{err}");
}

/// The store in use is shown with its password masked in the effective
/// configuration and in `--help` (the environment's value); the restart
/// test checks `/_dev/status`.
#[test]
fn the_database_url_is_shown_without_its_password() {
    let serve = |flag: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_imctl"))
            .args(["serve", flag])
            .env(
                "IMCTL_DATABASE_URL",
                "postgres://imctl:hunter2@db.local:5432/chat",
            )
            .output()
            .unwrap();
        assert!(out.status.success(), "{flag}: {}", stderr(&out));
        crate::common::stdout(&out)
    };
    let text = serve("--print-config");
    assert!(
        text.contains("database = \"postgres://imctl:***@db.local:5432/chat\""),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
    let help = serve("--help");
    assert!(
        help.contains("IMCTL_DATABASE_URL") && !help.contains("hunter2"),
        "{help}"
    );
}

/// Two `imctl serve` processes on one database, as a staging backend or a
/// cluster runs them: an IM token made by one is good on the other (one
/// secret), and alice and carol sending to bob through different
/// processes at once give bob one gapless inbox with every acked message
/// once.
#[tokio::test]
async fn two_imctl_processes_share_one_database() {
    let Some(pg) = pg_local::shared_or_skip("two_imctl_processes_share_one_database") else {
        return;
    };
    let url = pg.fresh_database().unwrap();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let served: Vec<Served> = dirs
        .iter()
        .map(|d| {
            Served::start(&[
                "--database",
                &url,
                "--data-dir",
                d.path().to_str().unwrap(),
                "--app-port",
                "0",
                "--broker-port",
                "0",
            ])
        })
        .collect();
    // Logged in on the first process, connected to the second.
    let (alice, _) = AppClient::new(&served[0].app)
        .login("13800000001", "66666", "alice-phone", 2)
        .await
        .unwrap();
    let (carol, _) = AppClient::new(&served[1].app)
        .login("13800000003", "66666", "carol-phone", 2)
        .await
        .unwrap();
    let (bob, _) = AppClient::new(&served[0].app)
        .login("13800000002", "66666", "bob-phone", 2)
        .await
        .unwrap();
    const N: usize = 150;
    let sender = |ws: String, token: String, who: &'static str| {
        tokio::spawn(async move {
            let (mut conn, _) = ChatConn::connect(&ws, &token, &format!("{who}-phone"), 2)
                .await
                .unwrap();
            let mut acked = Vec::new();
            for i in 0..N {
                let ack = conn
                    .send_text(
                        "single",
                        "bob",
                        &format!("{who} {i}"),
                        Some(&format!("{who}-{i}")),
                    )
                    .await
                    .unwrap();
                acked.push(ack.msg_id);
            }
            acked
        })
    };
    let a = sender(served[1].ws.clone(), alice.token.clone(), "alice");
    let c = sender(served[0].ws.clone(), carol.token.clone(), "carol");
    let (a, c) = (a.await.unwrap(), c.await.unwrap());
    let (mut reader, connected) = ChatConn::connect(&served[1].ws, &bob.token, "bob-phone", 2)
        .await
        .unwrap();
    assert_eq!(connected.head, 2 * N as i64);
    let page = reader
        .request(json!({"op": "sync", "since": 0, "limit": 1000}))
        .await
        .unwrap();
    let entries = page["entries"].as_array().unwrap();
    let seqs: Vec<i64> = entries.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=2 * N as i64).collect::<Vec<_>>());
    let mut got: Vec<&str> = entries
        .iter()
        .map(|e| e["message"]["msgId"].as_str().unwrap())
        .collect();
    got.sort_unstable();
    let mut want: Vec<&str> = a.iter().chain(&c).map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(got, want, "every acked message once");
}
