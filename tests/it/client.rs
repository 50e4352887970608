//! `imctl client` scripted: `--send`, `--listen`, commands on stdin, the
//! saved login — the real binary against a real server.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{TestServer, start, stderr, stdout};

/// `imctl client --app-server URL ARGS` with a private state directory.
pub(crate) fn client(state: &Path, url: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imctl"));
    cmd.arg("client")
        .args(["--app-server", url])
        .args(args)
        .env("IMCTL_STATE_DIR", state)
        .env_remove("IMCTL_USER")
        .env_remove("IMCTL_BROKER")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn run(state: &Path, url: &str, args: &[&str]) -> Output {
    client(state, url, args).output().await.unwrap()
}

fn listener(state: &Path, url: &str, user: &str, count: u32) -> Child {
    let count = count.to_string();
    client(
        state,
        url,
        &[
            "--user",
            user,
            "--listen",
            "--count",
            &count,
            "--json",
            "--timeout",
            "30s",
        ],
    )
    .spawn()
    .unwrap()
}

pub(crate) async fn until_online(s: &TestServer, user: &str) {
    for _ in 0..500 {
        if s.running.state.broker.is_online(user) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{user} never connected");
}

fn json_lines(out: &Output) -> Vec<Value> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// How many codes were sent to a mobile.
async fn sms_count(s: &TestServer, mobile: &str) -> usize {
    s.client.dev_sms(mobile, None, None).await.unwrap().len()
}

#[tokio::test]
async fn send_reaches_a_listener() {
    let s = start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let bob = listener(dir.path(), &s.url, "bob", 1);
    until_online(&s, "bob").await;

    let sent = run(
        dir.path(),
        &s.url,
        &["--user", "alice", "--send", "bob", "hello bob"],
    )
    .await;
    assert!(sent.status.success(), "{}", stderr(&sent));
    let msg_id = stdout(&sent).trim().to_owned();
    assert!(msg_id.starts_with('m'), "{msg_id}");

    let got = bob.wait_with_output().await.unwrap();
    assert!(got.status.success(), "{}", stderr(&got));
    let lines = json_lines(&got);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["msgId"], msg_id);
    assert_eq!(lines[0]["from"], "alice");
    assert_eq!(
        lines[0]["conv"],
        json!({"type": "single", "target": "alice"})
    );
    assert_eq!(
        lines[0]["content"],
        json!({"type": "text", "text": "hello bob"})
    );

    // --json on send: the ack.
    let sent = run(
        dir.path(),
        &s.url,
        &["--user", "alice", "--send", "bob", "again", "--json"],
    )
    .await;
    assert!(sent.status.success(), "{}", stderr(&sent));
    let ack: Value = serde_json::from_str(stdout(&sent).trim()).unwrap();
    assert!(ack["msgId"].as_str().unwrap().starts_with('m'));
    assert!(ack["seq"].as_i64().unwrap() > 0);
    assert_eq!(ack["conv"]["target"], "bob");
}

#[tokio::test]
async fn a_group_message_reaches_two_listeners() {
    let s = start(&[]).await;
    let group = s.group("13800000001", "team", &["bob", "carol"]).await;
    let dir = tempfile::tempdir().unwrap();
    let bob = listener(dir.path(), &s.url, "bob", 1);
    let carol = listener(dir.path(), &s.url, "carol", 1);
    until_online(&s, "bob").await;
    until_online(&s, "carol").await;

    // By name, as a person would type it.
    let sent = run(
        dir.path(),
        &s.url,
        &["--user", "alice", "--send", "#team", "hi team"],
    )
    .await;
    assert!(sent.status.success(), "{}", stderr(&sent));
    for listener in [bob, carol] {
        let got = listener.wait_with_output().await.unwrap();
        assert!(got.status.success(), "{}", stderr(&got));
        // The group's "created" notification is skipped without --notifications.
        let lines = json_lines(&got);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["conv"], json!({"type": "group", "target": group}));
        assert_eq!(lines[0]["content"]["text"], "hi team");
    }
}

#[tokio::test]
async fn offline_messages_arrive_on_start_once() {
    let s = start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    for text in ["first", "second", "third"] {
        let sent = run(
            dir.path(),
            &s.url,
            &["--user", "alice", "--send", "bob", text],
        )
        .await;
        assert!(sent.status.success(), "{}", stderr(&sent));
    }
    // One login for three sends: the session is saved.
    assert_eq!(sms_count(&s, "13800000001").await, 1);

    let got = run(
        dir.path(),
        &s.url,
        &["--user", "bob", "--listen", "--count", "2", "--json"],
    )
    .await;
    assert!(got.status.success(), "{}", stderr(&got));
    let texts: Vec<Value> = json_lines(&got)
        .iter()
        .map(|l| l["content"]["text"].clone())
        .collect();
    assert_eq!(texts, [json!("first"), json!("second")]);
    // The third was not shown, so the next start begins there.
    let got = run(
        dir.path(),
        &s.url,
        &["--user", "bob", "--listen", "--count", "1", "--json"],
    )
    .await;
    assert!(got.status.success(), "{}", stderr(&got));
    assert_eq!(json_lines(&got)[0]["content"]["text"], "third");
    // Nothing is repeated: waiting for one more times out with exit 6.
    let got = run(
        dir.path(),
        &s.url,
        &[
            "--user",
            "bob",
            "--listen",
            "--count",
            "1",
            "--timeout",
            "300ms",
        ],
    )
    .await;
    assert_eq!(got.status.code(), Some(6), "{}", stderr(&got));
    assert!(stderr(&got).contains("0 of 1 messages"), "{}", stderr(&got));
    // Without --count, --timeout just ends listening.
    let got = run(
        dir.path(),
        &s.url,
        &["--user", "bob", "--listen", "--timeout", "200ms"],
    )
    .await;
    assert!(got.status.success(), "{}", stderr(&got));
}

#[tokio::test]
async fn send_fails_clearly() {
    let s = start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &s.url,
        &["--user", "alice", "--send", "ghost", "hi"],
    )
    .await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no user \"ghost\""),
        "{}",
        stderr(&out)
    );

    let out = run(
        dir.path(),
        &s.url,
        &["--user", "alice", "--send", "#nope", "hi"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no group #nope"), "{}", stderr(&out));

    let out = run(
        dir.path(),
        &s.url,
        &["--user", "nobody", "--send", "bob", "hi"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("known users: alice"),
        "{}",
        stderr(&out)
    );

    let out = run(
        dir.path(),
        "http://127.0.0.1:1",
        &["--user", "alice", "--send", "bob", "hi"],
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is `imctl serve` running?"),
        "{}",
        stderr(&out)
    );
}

/// A broker that accepts `connect` and then never answers.
async fn silent_broker() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
                while let Some(Ok(Message::Text(t))) = ws.next().await {
                    let frame: Value = serde_json::from_str(t.as_str()).unwrap();
                    if frame["op"] == "connect" {
                        let reply = json!({"id": frame["id"], "op": "connected", "userId": "alice", "head": 0, "serverTime": 0, "node": "silent"});
                        ws.send(Message::text(reply.to_string())).await.unwrap();
                    }
                }
            });
        }
    });
    format!("ws://{addr}/ws")
}

#[tokio::test]
async fn send_without_an_ack_times_out() {
    let s = start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let broker = silent_broker().await;
    let out = run(
        dir.path(),
        &s.url,
        &[
            "--user",
            "alice",
            "--broker",
            &broker,
            "--send",
            "bob",
            "hi",
            "--timeout",
            "500ms",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(stderr(&out).contains("no ack"), "{}", stderr(&out));
}

#[tokio::test]
async fn stdin_lines_are_messages_and_commands() {
    let s = start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = client(dir.path(), &s.url, &["--user", "alice"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = alice.stdin.take().unwrap();
    stdin
        .write_all(b"/msg bob hi bob\n/to bob\nsecond line\n/history 5\n/convs\n")
        .await
        .unwrap();
    drop(stdin);
    let out = alice.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.matches("✓ sent").count(), 2, "{text}");
    assert!(text.contains("[bob] alice: second line"), "{text}");
    // /convs lists bob with the last message.
    assert!(
        text.lines()
            .any(|l| l.starts_with("* bob") && l.ends_with("alice: second line")),
        "{text}"
    );

    let got = run(
        dir.path(),
        &s.url,
        &["--user", "bob", "--listen", "--count", "2", "--json"],
    )
    .await;
    let texts: Vec<Value> = json_lines(&got)
        .iter()
        .map(|l| l["content"]["text"].clone())
        .collect();
    assert_eq!(texts, [json!("hi bob"), json!("second line")]);

    // A failing line stops the script with a non-zero exit and says which.
    let mut alice = client(dir.path(), &s.url, &["--user", "alice"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = alice.stdin.take().unwrap();
    stdin
        .write_all(b"no conversation yet\n/msg bob never\n")
        .await
        .unwrap();
    drop(stdin);
    let out = alice.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("pick one with /to"),
        "{}",
        stderr(&out)
    );
    assert!(!stdout(&out).contains("never"));

    // A message the server refuses fails the script too (exit 5), and the
    // lines after it do not run.
    let out = script(
        dir.path(),
        &s.url,
        "alice",
        "/msg ghost hi\n/msg bob after\n",
    )
    .await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("not sent"), "{}", stderr(&out));
    assert!(!stdout(&out).contains("after"), "{}", stdout(&out));
}

#[tokio::test]
async fn an_expired_saved_login_logs_in_again_and_fresh_ignores_it() {
    // Long enough that a run on a loaded machine finishes within it (a
    // token expiring mid-run logs in once more), short enough to wait out.
    let s = start(&["--token-ttl", "3s"]).await;
    let dir = tempfile::tempdir().unwrap();
    let send = |text: &'static str| {
        let dir = dir.path().to_owned();
        let url = s.url.clone();
        async move { run(&dir, &url, &["--user", "alice", "--send", "bob", text]).await }
    };
    assert!(send("one").await.status.success());
    assert_eq!(sms_count(&s, "13800000001").await, 1);
    tokio::time::sleep(Duration::from_millis(4100)).await;
    let out = send("two").await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        sms_count(&s, "13800000001").await,
        2,
        "expired token → new login"
    );
    let out = run(
        dir.path(),
        &s.url,
        &["--user", "alice", "--fresh", "--send", "bob", "three"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        sms_count(&s, "13800000001").await,
        3,
        "--fresh logs in again"
    );
}

/// Runs a stdin script as `user`; returns the output.
async fn script(state: &Path, url: &str, user: &str, lines: &str) -> Output {
    let mut child = client(state, url, &["--user", user])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(lines.as_bytes()).await.unwrap();
    drop(stdin);
    child.wait_with_output().await.unwrap()
}

#[tokio::test]
async fn groups_friends_profile_and_unread_from_a_script() {
    let s = start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let out = script(
        dir.path(),
        &s.url,
        "alice",
        "/group create crew bob carol\nhello crew\n/group remove carol\n/group info\n/friend add bob it's alice\n/me\n/me Alice L.\n",
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("created #crew"), "{text}");
    assert!(text.contains("[#crew] alice: hello crew"), "{text}");
    assert!(text.contains("removed carol from #crew"), "{text}");
    assert!(text.contains("#crew (g"), "{text}");
    assert!(
        text.lines().any(|l| l.trim() == "bob          member"),
        "{text}"
    );
    assert!(
        !text.lines().any(|l| l.trim().starts_with("carol ")),
        "{text}"
    );
    assert!(text.contains("asked bob to be your friend"), "{text}");
    assert!(
        text.contains("alice (Alice Liu), mobile 13800000001"),
        "{text}"
    );
    assert!(text.contains("your display name is now Alice L."), "{text}");

    // Bob: accepts, sees alice online in /who, finds the group by name and
    // its messages under an unread marker.
    let out = script(
        dir.path(),
        &s.url,
        "bob",
        "/friend accept alice\n/who\n/to #crew\n/group leave\n",
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("you and alice are friends now"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("alice") && l.ends_with("offline")),
        "{text}"
    );
    let marker = text.find("unread ────────").expect(&text);
    let hello = text.rfind("[#crew] alice: hello crew").expect(&text);
    assert!(marker < hello, "{text}");
    assert!(text.contains("you left #crew"), "{text}");

    // Refusals stop the script: not in the group any more.
    let out = script(dir.path(), &s.url, "bob", "/msg #crew still here?\n").await;
    assert_ne!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[tokio::test]
async fn send_image_uploads_and_sends() {
    let s = start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("cat picture.png");
    std::fs::write(
        &png,
        crate::common::png(64, 48, 3, |_, _| vec![200, 100, 50]),
    )
    .unwrap();
    let out = script(
        dir.path(),
        &s.url,
        "alice",
        &format!("/to bob\n/send-image {}\n", png.display()),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("[image 64x48 http"),
        "{}",
        stdout(&out)
    );

    let got = run(
        dir.path(),
        &s.url,
        &["--user", "bob", "--listen", "--count", "1", "--json"],
    )
    .await;
    let line = &json_lines(&got)[0];
    assert_eq!(line["content"]["type"], "image");
    assert_eq!(line["content"]["w"], 64);
    assert_eq!(line["content"]["h"], 48);
    let url = line["content"]["url"].as_str().unwrap();
    let served = s.client.get_bytes(url).await.unwrap();
    assert_eq!(served, std::fs::read(&png).unwrap());

    // Not a picture: a clear error, nothing sent.
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "hello").unwrap();
    let out = script(
        dir.path(),
        &s.url,
        "alice",
        &format!("/to bob\n/send-image {}\n", notes.display()),
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("is not a PNG or JPEG picture"),
        "{}",
        stderr(&out)
    );
}
