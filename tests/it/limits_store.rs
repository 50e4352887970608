//! Issue 14, the store's part: pages bounded in bytes, group history within
//! membership periods, msgIds that never wrap, private files, and clients
//! that survive content they cannot render.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use imctl::wire::limits::PAGE_BYTES;
use serde_json::{Value, json};

use crate::common::{Served, rss_of};
use crate::snapshot::{chat_at, serve_fails};

const MIB: u64 = 1024 * 1024;

/// A snapshot of alice (13800000001) and bob (13800000002) with `contents`
/// sent from alice to bob, as JSON text (contents are written as given).
fn snapshot_with(contents: &[String], first_id: Option<i64>) -> String {
    let mut messages = Vec::with_capacity(contents.len());
    for (i, c) in contents.iter().enumerate() {
        let id = match (i, first_id) {
            (0, Some(id)) => format!(r#""msgId": "m{id}", "#),
            _ => String::new(),
        };
        messages.push(format!(
            r#"{{{id}"from": "alice", "conv": {{"type": "single", "target": "bob"}}, "content": {c}, "serverTime": 1, "recipients": ["alice", "bob"]}}"#
        ));
    }
    format!(
        r#"{{"version": 1, "users": [{{"userId": "alice", "displayName": "Alice", "mobile": "13800000001"}}, {{"userId": "bob", "displayName": "Bob", "mobile": "13800000002"}}], "messages": [{}]}}"#,
        messages.join(",\n")
    )
}

/// Imports `snapshot` into a new data dir under `dir` and returns the dir;
/// the importing process is gone, so a later start begins with a clean heap.
fn imported(dir: &Path, snapshot: &str) -> String {
    imported_by(Path::new(env!("CARGO_BIN_EXE_imctl")), dir, snapshot)
}

fn imported_by(bin: &Path, dir: &Path, snapshot: &str) -> String {
    let file = dir.join("in.json");
    std::fs::write(&file, snapshot).unwrap();
    let data = dir.join("data");
    let importer = Served::start_of(
        bin,
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--import",
            file.to_str().unwrap(),
            "--app-port",
            "0",
            "--broker-port",
            "0",
        ],
    );
    drop(importer);
    data.to_str().unwrap().to_owned()
}

/// Samples `pid`'s RSS every few ms until stopped; returns the peak.
struct Peak {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl Peak {
    fn watch(pid: u32) -> Self {
        let (stop, peak) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_of(pid), Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        });
        Self { stop, peak, thread }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        self.peak.load(Ordering::Relaxed)
    }
}

/// One `sync limit 1000` over 300 stored 64 KB custom messages: before,
/// the broker parsed every one into a `Value` tree (~1 MB each for an
/// array of numbers) and built the whole page; now the page stops at
/// `PAGE_BYTES` and the content is copied as stored.
#[tokio::test]
async fn a_big_sync_is_one_page_of_bounded_bytes_and_the_cursor_finds_every_message() {
    const N: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let numbers = vec!["0"; 32 * 1024].join(",");
    let contents: Vec<String> = (0..N)
        .map(|i| format!(r#"{{"type": "custom", "data": {{"n": {i}, "v": [{numbers}]}}}}"#))
        .collect();
    let data = imported(dir.path(), &snapshot_with(&contents, None));
    let served = Served::start(&["--data-dir", &data, "--app-port", "0", "--broker-port", "0"]);
    let mut bob = chat_at(&served.app, "13800000002").await;
    let before = served.rss();
    let peak = Peak::watch(served.pid());
    let raw = bob
        .request(json!({"op": "sync", "since": 0, "limit": 1000}))
        .await
        .unwrap();
    let peak = peak.stop();
    let growth = peak.saturating_sub(before);
    eprintln!(
        "sync of {N} × 64 KB: RSS {} → peak {} MiB",
        before / MIB,
        peak / MIB
    );
    assert!(
        growth < 64 * MIB,
        "one sync grew the server by {} MiB",
        growth / MIB
    );
    let bytes = raw["entries"].to_string().len();
    let one = contents[0].len() + 300;
    assert!(
        bytes <= PAGE_BYTES + one,
        "a page of {bytes} bytes is over the budget"
    );
    assert_eq!(raw["more"], true);
    assert!(raw["entries"].as_array().unwrap().len() < N);

    // Following the cursor hands out every message exactly once, in order.
    let mut seen = Vec::new();
    let mut page = raw;
    loop {
        let entries = page["entries"].as_array().unwrap();
        assert!(!entries.is_empty());
        for e in entries {
            seen.push((
                e["seq"].as_i64().unwrap(),
                e["message"]["content"]["data"]["n"].as_u64().unwrap(),
            ));
        }
        if page["more"] == false {
            break;
        }
        let since = seen.last().unwrap().0;
        page = bob
            .request(json!({"op": "sync", "since": since, "limit": 1000}))
            .await
            .unwrap();
    }
    let want: Vec<(i64, u64)> = (0..N).map(|i| (i as i64 + 1, i as u64)).collect();
    assert_eq!(seen, want);

    // history pages the same way, newest first, `before` the last msgId.
    let mut ids = Vec::new();
    let mut before: Value = Value::Null;
    loop {
        let page = bob
            .request(json!({"op": "history", "conv": {"type": "single", "target": "alice"}, "limit": 200, "before": before}))
            .await
            .unwrap();
        assert!(page["messages"].to_string().len() <= PAGE_BYTES + one);
        let messages = page["messages"].as_array().unwrap();
        ids.extend(
            messages
                .iter()
                .map(|m| m["msgId"].as_str().unwrap().to_owned()),
        );
        if page["more"] == false {
            break;
        }
        before = json!(ids.last().unwrap());
    }
    let want: Vec<String> = (1..=N).rev().map(|i| format!("m{i}")).collect();
    assert_eq!(ids, want);
}

/// The issue's measurement: one `sync limit 1000` over 999 stored 64 KB
/// custom messages, against `IMCTL_MEASURE_BIN` (default: this build).
/// `cargo test --release --test it -- --ignored measure_big_sync --nocapture`
#[tokio::test]
#[ignore = "a measurement, not a check"]
async fn measure_big_sync() {
    let bin = std::env::var("IMCTL_MEASURE_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_imctl").to_owned());
    let bin = Path::new(&bin);
    let dir = tempfile::tempdir().unwrap();
    let numbers = vec!["0"; 32 * 1024].join(",");
    let contents: Vec<String> = (0..999)
        .map(|i| format!(r#"{{"type": "custom", "data": {{"n": {i}, "v": [{numbers}]}}}}"#))
        .collect();
    let data = imported_by(bin, dir.path(), &snapshot_with(&contents, None));
    let served = Served::start_of(
        bin,
        &["--data-dir", &data, "--app-port", "0", "--broker-port", "0"],
    );
    let mut bob = chat_at(&served.app, "13800000002").await;
    bob.set_timeout(std::time::Duration::from_secs(120));
    let before = served.rss();
    let peak = Peak::watch(served.pid());
    // Before, the page (65 MB) was more than a client reads (16 MiB).
    let page = bob
        .request(json!({"op": "sync", "since": 0, "limit": 1000}))
        .await;
    let peak = peak.stop();
    let page = page.map(|p| {
        let n = p["entries"].as_array().unwrap().len();
        (n, p.to_string().len(), p["more"].clone())
    });
    eprintln!(
        "{}: sync limit 1000 over 999 × 64 KB: RSS {} → peak {} MiB; page (entries, bytes, more): {page:?}",
        bin.display(),
        before / MIB,
        peak / MIB,
    );
}

#[test]
fn an_import_whose_msg_ids_leave_no_room_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = || vec![r#"{"type": "text", "text": "hi"}"#.to_owned()];
    for last in [i64::MAX - 1, i64::MAX, i64::MAX / 2 + 1] {
        let file = dir.path().join(format!("{last}.json"));
        std::fs::write(&file, snapshot_with(&text(), Some(last))).unwrap();
        let err = serve_fails(&["--ephemeral", "--import", file.to_str().unwrap()]);
        let expected = format!("msgId m{last} leaves no room for new messages");
        assert!(err.contains(&expected), "{err}");
        assert!(err.contains("renumber"), "{err}");
    }
}

#[tokio::test]
async fn the_highest_importable_msg_id_still_leaves_room_to_send() {
    let dir = tempfile::tempdir().unwrap();
    let max = imctl::store::MAX_IMPORTED_MSG_ID;
    let file = dir.path().join("max.json");
    std::fs::write(
        &file,
        snapshot_with(&[r#"{"type": "text", "text": "hi"}"#.to_owned()], Some(max)),
    )
    .unwrap();
    let served = Served::start(&[
        "--ephemeral",
        "--import",
        file.to_str().unwrap(),
        "--app-port",
        "0",
        "--broker-port",
        "0",
    ]);
    let mut alice = chat_at(&served.app, "13800000001").await;
    for n in 1..=3 {
        let ack = alice
            .send_text("single", "bob", "next", None)
            .await
            .unwrap();
        assert_eq!(ack.msg_id, format!("m{}", max + n));
    }
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The database holds the IM-token secret, state files hold tokens, a
/// snapshot holds everything: none of them is for other local users.
#[cfg(unix)]
#[tokio::test]
async fn data_and_state_files_are_private_to_their_owner() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("deep/data");
    let served = Served::start(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--admin-secret",
        "s3cret",
        "--app-port",
        "0",
        "--broker-port",
        "0",
    ]);
    // A send makes sure the WAL and its index exist.
    let mut alice = chat_at(&served.app, "13800000001").await;
    alice.send_text("single", "bob", "hi", None).await.unwrap();
    for d in [dir.path().join("deep"), data.clone()] {
        assert_eq!(mode(&d), 0o700, "{}", d.display());
    }
    // PostgreSQL's files are its server's; SQLite's are imctl's.
    let files: &[&str] = if crate::common::postgres_pass() {
        &[]
    } else {
        &["imctl.db", "imctl.db-wal", "imctl.db-shm"]
    };
    for f in files {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    let state = dir.path().join("state/imctl");
    let export = dir.path().join("snap.json");
    let app = served.app.clone();
    let (state2, export2) = (state.clone(), export.clone());
    let (exported, logged_in) = tokio::task::spawn_blocking(move || {
        let exported = crate::common::imctl(
            &state2,
            &[
                "export",
                export2.to_str().unwrap(),
                "--app-server",
                &app,
                "--admin-secret",
                "s3cret",
            ],
        );
        let logged_in = crate::common::imctl(
            &state2,
            &[
                "simulate",
                "mobile-login",
                "--user",
                "bob",
                "--app-server",
                &app,
            ],
        );
        (exported, logged_in)
    })
    .await
    .unwrap();
    assert!(
        exported.status.success(),
        "{}",
        crate::common::stderr(&exported)
    );
    assert!(
        logged_in.status.success(),
        "{}",
        crate::common::stderr(&logged_in)
    );
    assert_eq!(mode(&export), 0o600);
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&dir.path().join("state")), 0o700);
    assert_eq!(mode(&state.join("phones.json")), 0o600);
}

/// Messages no client could render before: 125 levels of nesting (past
/// serde_json's limit of 128 once inside a frame), an unknown type, terminal
/// escapes and a forged line in a text, a huge text; then one ordinary one.
fn poison() -> Vec<String> {
    let deep = format!("{}1{}", "[".repeat(125), "]".repeat(125));
    vec![
        format!(r#"{{"type": "custom", "data": {deep}}}"#),
        r#"{"type": "hologram", "beam": {"x": 1}}"#.to_owned(),
        r#"{"type": "text", "text": "\u001b[2J\rwiped\n12:00 [alice] alice: forged"}"#.to_owned(),
        format!(r#"{{"type": "text", "text": "{}"}}"#, "y".repeat(200_000)),
        r#"{"type": "text", "text": "after the poison"}"#.to_owned(),
    ]
}

/// `imctl client`, `imctl export`, `serve --import` of that export and of
/// an `--export-on-exit` file all get past stored content they cannot show.
#[tokio::test]
async fn clients_exports_and_imports_survive_poison_messages() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("poison.json");
    // Bob's display name tries to forge a row too.
    let snapshot = snapshot_with(&poison(), None).replace(
        r#""displayName": "Bob""#,
        r#""displayName": "Bob\u001b[31m\nlogged in as alice""#,
    );
    std::fs::write(&file, snapshot).unwrap();
    let on_exit = dir.path().join("on-exit.json");
    let served = Served::start(&[
        "--ephemeral",
        "--import",
        file.to_str().unwrap(),
        "--admin-secret",
        "s3cret",
        "--export-on-exit",
        on_exit.to_str().unwrap(),
        "--app-port",
        "0",
        "--broker-port",
        "0",
    ]);
    let state = dir.path().join("state");

    // The terminal client shows all five, escaped, and exits 0.
    let shown = crate::client::client(
        &state,
        &served.app,
        &[
            "--user",
            "bob",
            "--listen",
            "--count",
            "5",
            "--timeout",
            "20s",
        ],
    )
    .output()
    .await
    .unwrap();
    let out = crate::common::stdout(&shown);
    assert!(shown.status.success(), "{}", crate::common::stderr(&shown));
    assert!(!out.contains('\u{1b}') && !out.contains('\r'), "{out}");
    let rows: Vec<&str> = out.lines().collect();
    assert!(
        rows.last().unwrap().ends_with("alice: after the poison"),
        "{out}"
    );
    // Each message is one row starting with its time; a text's own newline
    // only continues it, indented, so "12:00 [alice]" cannot pass as a row.
    let starts = rows.iter().filter(|r| !r.starts_with(' ')).count();
    assert_eq!(starts, 5, "{out}");
    assert!(
        out.contains("[custom [[[") && out.contains("more characters)"),
        "{out}"
    );
    assert!(out.contains("[hologram]"), "{out}");
    assert!(out.contains("\\u{1b}[2J\\rwiped"), "{out}");

    let phone_state = dir.path().join("phone");
    let app = served.app.clone();
    let phone = tokio::task::spawn_blocking(move || {
        crate::common::imctl(
            &phone_state,
            &[
                "simulate",
                "mobile-login",
                "--user",
                "bob",
                "--app-server",
                &app,
            ],
        )
    })
    .await
    .unwrap();
    assert!(phone.status.success(), "{}", crate::common::stderr(&phone));
    let out = crate::common::stdout(&phone);
    assert!(!out.contains("\nlogged in as alice"), "{out}");
    assert!(out.contains(r"Bob\u{1b}[31m\nlogged in as alice"), "{out}");

    // A second device syncs everything again, as JSON, without error.
    let json_state = dir.path().join("state-json");
    let shown = crate::client::client(
        &json_state,
        &served.app,
        &[
            "--user",
            "bob",
            "--listen",
            "--count",
            "5",
            "--json",
            "--timeout",
            "20s",
        ],
    )
    .output()
    .await
    .unwrap();
    assert!(shown.status.success(), "{}", crate::common::stderr(&shown));
    let lines: Vec<Value> = crate::common::stdout(&shown)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[4]["content"]["text"], "after the poison");

    // export, then import the export and the --export-on-exit file.
    let exported = dir.path().join("export.json");
    let (app, s2, e2) = (served.app.clone(), state.clone(), exported.clone());
    let out = tokio::task::spawn_blocking(move || {
        crate::common::imctl(
            &s2,
            &[
                "export",
                e2.to_str().unwrap(),
                "--app-server",
                &app,
                "--admin-secret",
                "s3cret",
            ],
        )
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", crate::common::stderr(&out));
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &served.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut served = served;
    let status = tokio::task::spawn_blocking(move || {
        let status = served.child.wait();
        (served, status)
    })
    .await
    .unwrap()
    .1
    .unwrap();
    assert!(status.success(), "{status}");
    for snapshot in [&exported, &on_exit] {
        let again = Served::start(&[
            "--ephemeral",
            "--import",
            snapshot.to_str().unwrap(),
            "--app-port",
            "0",
            "--broker-port",
            "0",
        ]);
        let mut bob = chat_at(&again.app, "13800000002").await;
        let page = bob
            .request(json!({"op": "sync", "since": 0, "limit": 10}))
            .await
            .unwrap();
        let entries = page["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 5, "{}", snapshot.display());
        assert_eq!(entries[4]["message"]["content"]["text"], "after the poison");
        assert_eq!(entries[1]["message"]["content"]["type"], "hologram");
    }
}

fn texts(page: &Value, key: &str) -> Vec<String> {
    page[key]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["content"]["type"] == "text")
        .map(|m| m["content"]["text"].as_str().unwrap().to_owned())
        .collect()
}

/// A member sees the group's messages from while they were a member: not
/// from before they were added, not from while they were removed.
#[tokio::test]
async fn group_history_shows_a_member_only_their_membership_periods() {
    let s = crate::common::start(&[]).await;
    let (mut alice, _) = s.chat("13800000001", "a").await;
    let created = alice
        .request(json!({"op": "group.create", "name": "team", "members": ["bob"]}))
        .await
        .unwrap();
    let g = created["group"]["id"].as_str().unwrap().to_owned();
    let conv = json!({"type": "group", "target": g});
    let say = async |alice: &mut imctl::client::chat::ChatConn, text: &str| {
        alice.send_text("group", &g, text, None).await.unwrap();
    };
    say(&mut alice, "before carol").await;
    let members = |op: &str| json!({"op": op, "group": g, "members": ["carol"]});
    alice.request(members("group.add")).await.unwrap();
    say(&mut alice, "first period").await;
    alice.request(members("group.remove")).await.unwrap();
    say(&mut alice, "while away").await;
    alice.request(members("group.add")).await.unwrap();
    say(&mut alice, "second period").await;

    let (mut carol, _) = s.chat("13800000003", "c").await;
    let page = carol
        .request(json!({"op": "history", "conv": conv, "limit": 50}))
        .await
        .unwrap();
    assert_eq!(texts(&page, "messages"), ["second period", "first period"]);
    // Paging back from the newest stays within her periods too.
    let newest = page["messages"][0]["msgId"].clone();
    let older = carol
        .request(json!({"op": "history", "conv": conv, "limit": 50, "before": newest}))
        .await
        .unwrap();
    assert_eq!(texts(&older, "messages"), ["first period"]);
    let (mut bob, _) = s.chat("13800000002", "b").await;
    let page = bob
        .request(json!({"op": "history", "conv": conv, "limit": 50}))
        .await
        .unwrap();
    assert_eq!(
        texts(&page, "messages"),
        [
            "second period",
            "while away",
            "first period",
            "before carol"
        ]
    );
}

/// `conversations` stops at the byte budget too, and `before` pages on.
#[tokio::test]
async fn the_conversation_list_pages_by_bytes() {
    let s = crate::common::start(&["--max-frame", "1048576"]).await;
    let (mut alice, _) = s.chat("13800000001", "a").await;
    let big = "z".repeat(100_000);
    let mut groups = Vec::new();
    for i in 0..15 {
        let created = alice
            .request(json!({"op": "group.create", "name": format!("g{i}"), "members": ["bob"]}))
            .await
            .unwrap();
        let g = created["group"]["id"].as_str().unwrap().to_owned();
        alice.send_text("group", &g, &big, None).await.unwrap();
        groups.push(g);
    }
    let (mut seen, mut before, mut pages) = (Vec::new(), Value::Null, 0);
    loop {
        let page = alice
            .request(json!({"op": "conversations", "limit": 1000, "before": before}))
            .await
            .unwrap();
        assert!(page["conversations"].to_string().len() <= PAGE_BYTES + big.len() + 1000);
        let list = page["conversations"].as_array().unwrap();
        seen.extend(
            list.iter()
                .map(|c| c["conv"]["target"].as_str().unwrap().to_owned()),
        );
        pages += 1;
        if page["more"] == false {
            break;
        }
        before = list.last().unwrap()["lastMessage"]["msgId"].clone();
    }
    assert!(pages >= 2, "{pages}");
    groups.reverse();
    assert_eq!(seen, groups);
    let bad = alice
        .request(json!({"op": "conversations", "before": "yesterday"}))
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("code 400"), "{bad}");
}
