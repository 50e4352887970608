//! Data snapshots: `imctl export`, `imctl serve --import`, `--export-on-exit`.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use imctl::client::chat::ChatConn;
use imctl::config::ServeConfig;
use serde_json::{Value, json};

use crate::common::{TestServer, imctl, spawn_serve, start, start_with, stderr, stdout};

const SECRET: &str = "snapshot-secret";

fn on_disk(dir: &Path, extra: &[&str]) -> ServeConfig {
    let mut config = ServeConfig::ephemeral_on_free_ports(extra);
    config.ephemeral = false;
    config.data_dir = Some(dir.to_path_buf());
    config
}

/// Runs the real `imctl ARGS` off the async runtime.
async fn imctl_async(state: &Path, args: &[&str]) -> Output {
    let (state, args): (_, Vec<String>) = (
        state.to_owned(),
        args.iter().map(|a| a.to_string()).collect(),
    );
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        imctl(&state, &args)
    })
    .await
    .unwrap()
}

/// `imctl serve ARGS` on free ports, which must fail (within 30 s) with
/// exit code 1; returns its stderr.
pub(crate) fn serve_fails(args: &[&str]) -> String {
    serve_fails_with(args, 1)
}

/// [`serve_fails`] with exit code `code` (2: settings that cannot work).
pub(crate) fn serve_fails_with(args: &[&str], code: i32) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_imctl"))
        .args(["serve", "--app-port", "0", "--broker-port", "0"])
        .args(crate::common::with_test_store(args))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("imctl serve {args:?} kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
    stderr(&out)
}

async fn admin_get(s: &TestServer, path: &str) -> Value {
    let r = s
        .http
        .get(format!("{}{path}", s.url))
        .header("x-admin-secret", SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// What `user` sees over the protocol: friends, groups with members and
/// roles, history of each conversation, and the whole inbox as (seq, msgId).
async fn seen_by(c: &mut ChatConn, peers: &[&str], groups: &[&str]) -> Value {
    let friends: Vec<Value> = c.request(json!({"op": "friend.list"})).await.unwrap()["friends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| json!([f["userId"], f["displayName"]]))
        .collect();
    let pending = c.request(json!({"op": "friend.pending"})).await.unwrap();
    let mut group_info = Vec::new();
    for g in groups {
        let info = c
            .request(json!({"op": "group.info", "group": g}))
            .await
            .unwrap();
        group_info.push(info["group"].clone());
    }
    let list = c.request(json!({"op": "group.list"})).await.unwrap()["groups"].clone();
    let mut history = Vec::new();
    for (kind, target) in peers
        .iter()
        .map(|p| ("single", *p))
        .chain(groups.iter().map(|g| ("group", *g)))
    {
        let h = c
            .request(
                json!({"op": "history", "conv": {"type": kind, "target": target}, "limit": 100}),
            )
            .await
            .unwrap();
        history.push(h["messages"].clone());
    }
    let synced = c
        .request(json!({"op": "sync", "since": 0, "limit": 500}))
        .await
        .unwrap();
    let inbox: Vec<Value> = synced["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| json!([e["seq"], e["message"]["msgId"]]))
        .collect();
    json!({
        "friends": friends,
        "incoming": pending["incoming"],
        "outgoing": pending["outgoing"],
        "groups": group_info,
        "groupList": list,
        "history": history,
        "inbox": inbox,
        "head": synced["head"],
    })
}

fn seqs(seen: &Value) -> Vec<i64> {
    seen["inbox"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[0].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn export_then_import_gives_the_same_data_and_chat_goes_on() {
    let s = start(&["--admin-secret", SECRET]).await;
    let (mut alice, _) = s.chat("13800000001", "alice-1").await;
    let (mut bob, _) = s.chat("13800000002", "bob-1").await;
    let (mut carol, _) = s.chat("13800000003", "carol-1").await;
    alice
        .request(json!({"op": "friend.request", "target": "bob", "remark": "alice here"}))
        .await
        .unwrap();
    bob.request(json!({"op": "friend.accept", "from": "alice"}))
        .await
        .unwrap();
    carol
        .request(json!({"op": "friend.request", "target": "alice", "remark": "carol here"}))
        .await
        .unwrap();
    let team = alice
        .request(json!({"op": "group.create", "name": "team", "members": ["bob", "carol"]}))
        .await
        .unwrap()["group"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    alice
        .request(json!({"op": "group.admin", "group": team, "userId": "bob", "admin": true}))
        .await
        .unwrap();
    let first = alice
        .send_text("single", "bob", "hi bob", Some("alice-c1"))
        .await
        .unwrap();
    bob.send_text("single", "alice", "hi alice", None)
        .await
        .unwrap();
    alice
        .send_text("group", &team, "hello team", Some("alice-c2"))
        .await
        .unwrap();
    carol
        .send_text("group", &team, "hi all", None)
        .await
        .unwrap();
    bob.send_text("single", "bob", "note to self", None)
        .await
        .unwrap();
    let r = s
        .http
        .post(format!("{}/admin/messages", s.url))
        .header("x-admin-secret", SECRET)
        .json(&json!({"to": {"type": "single", "target": "alice"}, "text": "maintenance at 5"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = s
        .http
        .post(format!("{}/admin/users/carol/ban", s.url))
        .header("x-admin-secret", SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let peers = ["alice", "bob", "carol", "system"];
    let before_alice = seen_by(&mut alice, &peers, &[&team]).await;
    let before_bob = seen_by(&mut bob, &peers, &[&team]).await;
    let users_before = admin_get(&s, "/admin/users").await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data.json");
    let file_arg = file.to_str().unwrap();
    let out = imctl_async(
        dir.path(),
        &[
            "export",
            file_arg,
            "--app-server",
            &s.url,
            "--admin-secret",
            SECRET,
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("4 users"), "{}", stdout(&out));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("\n  \"users\": ["), "pretty JSON: {text}");
    let snap: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(snap["version"], 1);
    assert_eq!(snap["friends"], json!([["alice", "bob"]]));
    assert_eq!(
        snap["friendRequests"][0]["from"].as_str(),
        Some("carol"),
        "{snap}"
    );
    assert_eq!(snap["groups"][0]["members"][1]["role"], "admin");
    // Notifications (created, admin_added), 5 chat messages, 1 system message.
    let messages = snap["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 8, "{snap:#}");
    let carol_user = snap["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["userId"] == "carol")
        .unwrap();
    assert_eq!(carol_user["banned"], true);
    // `-` writes the same to stdout.
    let out = imctl_async(
        dir.path(),
        &[
            "export",
            "-",
            "--app-server",
            &s.url,
            "--admin-secret",
            SECRET,
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let piped: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(piped["messages"], snap["messages"]);
    s.running.stop().await.unwrap();

    let t = start(&["--admin-secret", SECRET, "--import", file_arg]).await;
    assert!(t.running.imported && !t.running.seeded);
    assert_eq!(admin_get(&t, "/admin/users").await, users_before);
    let (mut alice, _) = t.chat("13800000001", "alice-2").await;
    let (mut bob, _) = t.chat("13800000002", "bob-2").await;
    let after_alice = seen_by(&mut alice, &peers, &[&team]).await;
    let after_bob = seen_by(&mut bob, &peers, &[&team]).await;
    assert_eq!(after_alice, before_alice);
    assert_eq!(after_bob, before_bob);
    for seen in [&after_alice, &after_bob] {
        let seqs = seqs(seen);
        assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
        assert_eq!(seen["head"], json!(seqs.len()));
    }
    // carol is still banned.
    let r = t
        .post(
            "/login",
            json!({"mobile": "13800000003", "code": "66666", "clientId": "c", "platform": 2}),
            None,
        )
        .await;
    assert_eq!(r.code(), 13, "{}", r.body);

    // Chat goes on: new ids after the old ones, seqs after the heads.
    let bob_head = after_bob["head"].as_i64().unwrap();
    let ack = alice
        .send_text("single", "bob", "after the import", Some("alice-c3"))
        .await
        .unwrap();
    assert!(!ack.duplicate);
    let last_old = messages.last().unwrap()["msgId"].as_str().unwrap();
    let n = |id: &str| id[1..].parse::<i64>().unwrap();
    assert_eq!(n(&ack.msg_id), n(last_old) + 1);
    assert_eq!(ack.seq, after_alice["head"].as_i64().unwrap() + 1);
    let push = bob.next_op("msg").await.unwrap();
    assert_eq!(
        (push["seq"].as_i64(), push["message"]["msgId"].as_str()),
        (Some(bob_head + 1), Some(ack.msg_id.as_str()))
    );
    bob.send_text("group", &team, "still here", None)
        .await
        .unwrap();
    // A retry of a clientMsgId from before the export is still a duplicate.
    let retry = alice
        .send_text("single", "bob", "hi bob", Some("alice-c1"))
        .await
        .unwrap();
    assert!(retry.duplicate);
    assert_eq!((retry.msg_id, retry.seq), (first.msg_id, first.seq));
    t.running.stop().await.unwrap();
}

#[tokio::test]
async fn import_into_a_new_data_dir_then_restart_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("team.json");
    std::fs::write(
        &file,
        json!({
            "version": 1,
            "users": [
                {"userId": "dora", "displayName": "Dora", "mobile": "13700000001"},
                {"userId": "eve", "displayName": "Eve", "mobile": "13700000002"}
            ],
            "friends": [["dora", "eve"]],
            "groups": [{"groupId": "crew", "name": "Crew", "owner": "dora",
                        "members": [{"userId": "dora", "role": "owner"}, {"userId": "eve", "role": "member"}]}],
            "messages": [
                {"from": "dora", "conv": {"type": "single", "target": "eve"}, "content": {"type": "text", "text": "hi eve"}, "serverTime": 1700000000000i64},
                {"from": "eve", "conv": {"type": "group", "target": "crew"}, "content": {"type": "text", "text": "hi crew"}, "serverTime": 1700000001000i64}
            ]
        })
        .to_string(),
    )
    .unwrap();
    let data = dir.path().join("data");
    let file_arg = file.to_str().unwrap();
    let s = start_with(on_disk(&data, &["--import", file_arg])).await;
    assert!(s.running.imported);
    let ids: Vec<_> = s
        .client
        .dev_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.user_id)
        .collect();
    assert_eq!(ids, ["dora", "eve"], "the snapshot replaces the fixtures");
    let (mut eve, _) = s.chat("13700000002", "eve-1").await;
    let synced = eve
        .request(json!({"op": "sync", "since": 0}))
        .await
        .unwrap();
    let got: Vec<_> = synced["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["seq"].as_i64().unwrap(), e["message"]["msgId"].clone()))
        .collect();
    assert_eq!(got, [(1, json!("m1")), (2, json!("m2"))]);
    eve.close().await;
    s.running.stop().await.unwrap();

    // The data stays; fixtures are not seeded on top of it.
    let s = start_with(on_disk(&data, &[])).await;
    assert!(!s.running.seeded);
    assert_eq!(s.client.dev_users().await.unwrap().len(), 2);
    s.running.stop().await.unwrap();

    // A second import into the same directory is refused, naming the way out.
    let err = serve_fails(&["--data-dir", data.to_str().unwrap(), "--import", file_arg]);
    assert!(err.contains("already has data"), "{err}");
    assert!(
        err.contains("--ephemeral") && err.contains("--data-dir"),
        "{err}"
    );
    assert!(err.contains(file_arg), "{err}");
}

#[test]
fn an_import_into_a_seeded_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("empty.json");
    std::fs::write(&file, r#"{"version": 1}"#).unwrap();
    let data = dir.path().join("data");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s = start_with(on_disk(&data, &[])).await;
        s.running.stop().await.unwrap();
    });
    let err = serve_fails(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--import",
        file.to_str().unwrap(),
    ]);
    assert!(err.contains("already has data"), "{err}");
    // Nothing changed: the fixtures are still there.
    rt.block_on(async {
        let s = start_with(on_disk(&data, &[])).await;
        assert_eq!(s.client.dev_users().await.unwrap().len(), 4);
        s.running.stop().await.unwrap();
    });
}

#[test]
fn bad_snapshot_files_are_refused_with_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let users =
        r#""users": [{"userId": "a", "displayName": "A"}, {"userId": "b", "displayName": "B"}]"#;
    let msg = |from: &str, kind: &str, to: &str| {
        format!(
            r#"{{"version": 1, {users}, "messages": [{{"msgId": "m1", "from": "{from}", "conv": {{"type": "{kind}", "target": "{to}"}}, "content": {{"type": "text", "text": "x"}}, "serverTime": 1}}]}}"#
        )
    };
    let cases = [
        ("bad-json", "{\"version\": 1,\n  \"users\": [\n}".to_owned(), "line 3 column 1"),
        ("version", r#"{"version": 2, "users": []}"#.to_owned(), "version 2 is not supported"),
        (
            "dup-user",
            r#"{"version": 1, "users": [{"userId": "a", "displayName": "A"}, {"userId": "a", "displayName": "A2"}]}"#.to_owned(),
            "user id \"a\" appears twice",
        ),
        ("from-unknown", msg("zed", "single", "a"), "from \"zed\" is not a user"),
        ("to-unknown", msg("a", "single", "zed"), "sent to \"zed\", which is not a user"),
        ("to-no-group", msg("a", "group", "g1"), "group \"g1\", which is not a group"),
        (
            "member-unknown",
            format!(
                r#"{{"version": 1, {users}, "groups": [{{"groupId": "g1", "name": "G", "owner": "a", "members": [{{"userId": "a", "role": "owner"}}, {{"userId": "ghost", "role": "member"}}]}}]}}"#
            ),
            "\"ghost\" is not a user",
        ),
        (
            "recipient-unknown",
            format!(
                r#"{{"version": 1, {users}, "messages": [{{"from": "a", "conv": {{"type": "single", "target": "b"}}, "content": {{"type": "text", "text": "x"}}, "recipients": ["a", "ghost"]}}]}}"#
            ),
            "recipients[1]: \"ghost\" is not a user",
        ),
        (
            "wrong-field",
            r#"{"version": 1, "users": [{"userId": "a", "name": "A"}]}"#.to_owned(),
            "unknown field `name`",
        ),
    ];
    for (name, text, problem) in cases {
        let file = dir.path().join(format!("{name}.json"));
        std::fs::write(&file, text).unwrap();
        let data = dir.path().join(format!("data-{name}"));
        let err = serve_fails(&[
            "--data-dir",
            data.to_str().unwrap(),
            "--import",
            file.to_str().unwrap(),
        ]);
        assert!(err.contains(problem), "{name}: {err}");
        assert!(err.contains(file.to_str().unwrap()), "{name}: {err}");
        assert!(
            !data.join("imctl.db").exists(),
            "{name}: a bad file creates no database"
        );
    }
    let missing = dir.path().join("missing.json");
    let err = serve_fails(&["--ephemeral", "--import", missing.to_str().unwrap()]);
    assert!(
        err.contains(&format!(
            "cannot read the snapshot file {}",
            missing.display()
        )),
        "{err}"
    );
}

#[tokio::test]
async fn export_needs_the_right_secret_and_a_server() {
    let s = start(&["--admin-secret", SECRET]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.json");
    let file_arg = file.to_str().unwrap();

    let out = imctl_async(dir.path(), &["export", file_arg, "--app-server", &s.url]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--admin-secret"), "{}", stderr(&out));

    let out = imctl_async(
        dir.path(),
        &[
            "export",
            file_arg,
            "--app-server",
            &s.url,
            "--admin-secret",
            "guess",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("wrong admin secret"),
        "{}",
        stderr(&out)
    );
    assert!(!file.exists());

    // The endpoint itself: 401 without the secret.
    assert_eq!(s.get("/admin/export").await.status(), 401);

    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", gone.local_addr().unwrap());
    drop(gone);
    let out = imctl_async(
        dir.path(),
        &[
            "export",
            file_arg,
            "--app-server",
            &url,
            "--admin-secret",
            SECRET,
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot reach"), "{}", stderr(&out));

    let out = imctl_async(
        dir.path(),
        &[
            "export",
            dir.path().join("no/such/dir/out.json").to_str().unwrap(),
            "--app-server",
            &s.url,
            "--admin-secret",
            SECRET,
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot write the snapshot to"),
        "{}",
        stderr(&out)
    );
}

/// Logs `mobile` in on a spawned server and connects to its broker.
pub(crate) async fn chat_at(url: &str, mobile: &str) -> ChatConn {
    let http = reqwest::Client::new();
    let res = &crate::common::login_at(url, mobile, "exit-test").await;
    let route: Value = http
        .post(res["routeUrl"].as_str().unwrap())
        .json(&json!({"userId": res["userId"], "clientId": "exit-test", "token": res["token"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    ChatConn::connect(
        route["result"]["wsUrl"].as_str().unwrap(),
        res["token"].as_str().unwrap(),
        "exit-test",
        2,
    )
    .await
    .unwrap()
    .0
}

#[tokio::test]
async fn export_on_exit_writes_the_snapshot_after_the_last_commit() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("on-exit.json");
    let (mut child, url, _) = spawn_serve(&[
        "--ephemeral",
        "--app-port",
        "0",
        "--broker-port",
        "0",
        "--export-on-exit",
        file.to_str().unwrap(),
    ]);
    let mut alice = chat_at(&url, "13800000001").await;
    let ack = alice
        .send_text("single", "bob", "kept on exit", Some("exit-1"))
        .await
        .unwrap();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "clean exit: {status}");
    let snap: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let messages = snap["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{snap:#}");
    assert_eq!(messages[0]["msgId"].as_str(), Some(ack.msg_id.as_str()));
    assert_eq!(messages[0]["content"]["text"], "kept on exit");
    assert_eq!(messages[0]["clientMsgId"], "exit-1");
    assert_eq!(snap["users"].as_array().unwrap().len(), 4);
    // Written atomically: no temporary file is left beside it.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [std::ffi::OsString::from("on-exit.json")]);
}

#[test]
fn export_on_exit_into_a_missing_directory_fails_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nope").join("out.json");
    let err = serve_fails(&["--ephemeral", "--export-on-exit", file.to_str().unwrap()]);
    assert!(err.contains("does not exist"), "{err}");
}

/// Every user's whole inbox as (seq, msgId), their inbox head, and each
/// conversation's history as they get it (a refusal included, with its code).
async fn timeline(c: &mut ChatConn, convs: &[(&str, &str)]) -> Value {
    let synced = c
        .request(json!({"op": "sync", "since": 0, "limit": 500}))
        .await
        .unwrap();
    assert_eq!(synced["more"], json!(false), "{synced}");
    let inbox: Vec<Value> = synced["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| json!([e["seq"], e["message"]["msgId"]]))
        .collect();
    let mut history = Vec::new();
    for (kind, target) in convs {
        let mut frame =
            json!({"op": "history", "conv": {"type": kind, "target": target}, "limit": 100});
        let mut reply = c.request_raw(&mut frame).await.unwrap();
        reply.as_object_mut().unwrap().remove("id");
        history.push(reply);
    }
    json!({"inbox": inbox, "head": synced["head"], "history": history})
}

fn inbox_ids(seen: &Value) -> Vec<String> {
    seen["inbox"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[1].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn import_gives_group_messages_to_who_had_them_not_to_todays_members() {
    let s = start(&["--admin-secret", SECRET]).await;
    let mobiles = [
        ("alice", "13800000001"),
        ("bob", "13800000002"),
        ("carol", "13800000003"),
    ];
    let mut conns = Vec::new();
    for (user, mobile) in mobiles {
        conns.push(s.chat(mobile, &format!("{user}-1")).await.0);
    }
    let [alice, bob, carol] = &mut conns[..] else {
        unreachable!()
    };
    // team: bob is there at first, carol joins late, bob is removed.
    let team = alice
        .request(json!({"op": "group.create", "name": "team", "members": ["bob"]}))
        .await
        .unwrap()["group"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    alice
        .send_text("group", &team, "before carol", None)
        .await
        .unwrap();
    alice
        .request(json!({"op": "group.add", "group": team, "members": ["carol"]}))
        .await
        .unwrap();
    bob.send_text("group", &team, "welcome carol", None)
        .await
        .unwrap();
    alice
        .request(json!({"op": "group.remove", "group": team, "members": ["bob"]}))
        .await
        .unwrap();
    carol
        .send_text("group", &team, "after bob", None)
        .await
        .unwrap();
    let r = s
        .http
        .post(format!("{}/admin/messages", s.url))
        .header("x-admin-secret", SECRET)
        .json(&json!({"to": {"type": "group", "target": team}, "text": "to the team"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // gone: messages, then dissolved (its members rows are deleted).
    let gone = bob
        .request(json!({"op": "group.create", "name": "gone", "members": ["carol"]}))
        .await
        .unwrap()["group"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    carol
        .send_text("group", &gone, "soon gone", None)
        .await
        .unwrap();
    bob.request(json!({"op": "group.dissolve", "group": gone}))
        .await
        .unwrap();
    alice
        .send_text("single", "bob", "still friends?", None)
        .await
        .unwrap();

    let convs = [
        ("group", team.as_str()),
        ("group", gone.as_str()),
        ("single", "alice"),
        ("single", "bob"),
        ("single", "system"),
    ];
    let mut before = Vec::new();
    for c in conns.iter_mut() {
        before.push(timeline(c, &convs).await);
    }
    // m1 created, m2, m3 carol added, m4, m5 bob removed, m6, m7 system,
    // m8 gone created, m9, m10 dissolved, m11 alice to bob.
    let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        inbox_ids(&before[0]),
        ids(&["m1", "m2", "m3", "m4", "m5", "m6", "m7", "m11"])
    );
    assert_eq!(
        inbox_ids(&before[1]),
        ids(&["m1", "m2", "m3", "m4", "m5", "m8", "m9", "m10", "m11"])
    );
    assert_eq!(
        inbox_ids(&before[2]),
        ids(&["m3", "m4", "m5", "m6", "m7", "m8", "m9", "m10"])
    );
    // carol reads the team's whole history, bob is refused it now.
    assert_eq!(before[2]["history"][0]["messages"][0]["msgId"], "m7");
    assert_eq!(before[1]["history"][0]["op"], "error");

    let snap = admin_get(&s, "/admin/export").await;
    let messages = snap["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 11, "{snap:#}");
    assert_eq!(messages[4]["recipients"], json!(["alice", "bob", "carol"]));
    assert_eq!(messages[6]["recipients"], json!(["alice", "carol"]));
    assert_eq!(messages[9]["recipients"], json!(["bob", "carol"]));
    for c in conns {
        c.close().await;
    }
    s.running.stop().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("groups.json");
    std::fs::write(&file, serde_json::to_string_pretty(&snap).unwrap()).unwrap();
    let t = start(&["--admin-secret", SECRET, "--import", file.to_str().unwrap()]).await;
    assert!(t.running.imported);
    for ((user, mobile), before) in mobiles.iter().zip(&before) {
        let (mut c, _) = t.chat(mobile, &format!("{user}-2")).await;
        let after = timeline(&mut c, &convs).await;
        assert_eq!(&after, before, "{user}");
        let seqs = seqs(&after);
        assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "{user}");
        assert_eq!(after["head"], json!(seqs.len()), "{user}");
        c.close().await;
    }
    // And it exports the same again.
    let mut again = admin_get(&t, "/admin/export").await;
    again["exportedAt"] = snap["exportedAt"].clone();
    assert_eq!(again, snap);
    t.running.stop().await.unwrap();
}
