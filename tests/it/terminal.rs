//! The interactive `imctl client` in real terminals: each runs in a tmux
//! pane (a private tmux server per test), driven by `send-keys` and read
//! with `capture-pane`.
//!
//! Needs tmux. Without it these tests say so on stderr and pass, unless
//! `IMCTL_REQUIRE_TMUX=1` (CI sets it), where they fail.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{TestServer, simulate, start, start_with, stderr};
use imctl::config::ServeConfig;

pub(crate) fn tmux_available(test: &str) -> bool {
    let ok = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("IMCTL_REQUIRE_TMUX").as_deref() != Ok("1"),
            "{test}: tmux is required (IMCTL_REQUIRE_TMUX=1) but is not installed"
        );
        // Straight to stderr, past the test harness's capture, so it is seen.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: tmux is not installed (apt-get install tmux)"
        );
    }
    ok
}

/// A private tmux server; killed on drop.
pub(crate) struct Tmux {
    socket: String,
    state: tempfile::TempDir,
}

impl Tmux {
    pub(crate) fn new() -> Self {
        Self {
            socket: format!("imctl-test-{}", imctl::token::random_token(6)),
            state: tempfile::tempdir().unwrap(),
        }
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux runs");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Opens a terminal running `imctl client --user USER`; it stays open
    /// after the client exits, showing the exit status.
    pub(crate) fn client(&self, url: &str, user: &str) -> Pane<'_> {
        self.run_client(user, url, &format!("--user {user}"))
    }

    /// A terminal named `name` running `imctl client --app-server URL ARGS`.
    fn run_client(&self, name: &str, url: &str, args: &str) -> Pane<'_> {
        let cmd = format!(
            "env -u IMCTL_BROKER NO_COLOR=1 IMCTL_STATE_DIR='{}' '{}' client --app-server '{url}' {args}; echo \"[exited $?]\"; sleep 600",
            self.state.path().display(),
            env!("CARGO_BIN_EXE_imctl"),
        );
        self.tmux(&[
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            "140",
            "-y",
            "50",
            &cmd,
        ]);
        Pane {
            tmux: self,
            name: name.to_owned(),
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

pub(crate) struct Pane<'t> {
    tmux: &'t Tmux,
    name: String,
}

impl Pane<'_> {
    /// Types text (literally) without pressing Enter.
    fn type_text(&self, text: &str) {
        self.tmux.tmux(&["send-keys", "-t", &self.name, "-l", text]);
    }

    /// Presses keys by tmux name (Enter, Tab, C-c, C-d).
    pub(crate) fn press(&self, key: &str) {
        self.tmux.tmux(&["send-keys", "-t", &self.name, key]);
    }

    fn line(&self, text: &str) {
        self.type_text(text);
        self.press("Enter");
    }

    pub(crate) fn screen(&self) -> String {
        self.tmux
            .tmux(&["capture-pane", "-p", "-J", "-S", "-200", "-t", &self.name])
    }

    /// Waits until the screen satisfies `test`; fails showing the screen.
    pub(crate) async fn wait(&self, what: &str, test: impl Fn(&str) -> bool) -> String {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = self.screen();
            if test(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < until,
                "{}: never saw {what}; the screen:\n{screen}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) async fn wait_for(&self, text: &str) -> String {
        self.wait(text, |s| s.contains(text)).await
    }

    /// The last non-empty line: the prompt and what is typed on it.
    fn last_line(screen: &str) -> &str {
        screen
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim_end()
    }
}

#[tokio::test]
async fn two_terminals_chat() {
    if !tmux_available("two_terminals_chat") {
        return;
    }
    let s = start(&[]).await;
    let tmux = Tmux::new();
    let alice = tmux.client(&s.url, "alice");
    let bob = tmux.client(&s.url, "bob");
    alice.wait_for("logged in as alice").await;
    bob.wait_for("logged in as bob").await;

    alice.line("/to bob");
    alice.wait_for("talking to bob").await;
    bob.line("/to alice");
    bob.wait_for("talking to alice").await;

    // Bob has half a line typed when alice's message arrives.
    bob.type_text("half typed");
    bob.wait("the half line", |s| {
        Pane::last_line(s) == "alice> half typed"
    })
    .await;
    alice.line("hello from alice");
    alice.wait_for("“hello from alice” ✓ sent").await;
    let screen = bob
        .wait("the message above the prompt", |s| {
            s.contains("[alice] alice: hello from alice")
                && Pane::last_line(s) == "alice> half typed"
        })
        .await;
    let message_at = screen.find("[alice] alice: hello from alice").unwrap();
    let prompt_at = screen.rfind("alice> half typed").unwrap();
    assert!(message_at < prompt_at, "{screen}");
    // Bob's typing showed on alice's screen.
    alice.wait_for("[bob] bob is typing…").await;
    // Bob's client acknowledged it: delivered. Bob reads it: read.
    alice
        .wait_for("✓✓ delivered to bob: “hello from alice”")
        .await;
    bob.press("Enter");
    alice.wait_for("[bob] bob: half typed").await;
    bob.line("/read");
    alice.wait_for("✓✓ read by bob").await;

    // /history: stored messages, oldest first.
    alice.line("/history 5");
    alice
        .wait("history lines", |s| {
            let after = &s[s.rfind("/history 5").unwrap_or(0)..];
            let lines: Vec<&str> = after.lines().collect();
            let hello = lines
                .iter()
                .position(|l| l.ends_with("[bob] alice: hello from alice"));
            let half = lines
                .iter()
                .position(|l| l.ends_with("[bob] bob: half typed"));
            matches!((hello, half), (Some(h), Some(b)) if h < b)
        })
        .await;
    // /convs: bob first, current, with the last message.
    alice.line("/convs");
    alice
        .wait("bob in /convs", |s| {
            s.lines()
                .any(|l| l.starts_with("* bob") && l.ends_with("bob: half typed"))
        })
        .await;

    // Tab completes user ids; Ctrl-C clears the line.
    alice.type_text("/to ca");
    alice.press("Tab");
    alice
        .wait("completion", |s| Pane::last_line(s) == "bob> /to carol")
        .await;
    alice.press("C-c");
    alice
        .wait("a cleared line", |s| Pane::last_line(s) == "bob>")
        .await;

    // The robot answers.
    alice.line("/msg robot hi");
    alice.wait_for("[robot] robot: echo: hi").await;

    // A bad command explains itself and the session goes on.
    alice.line("/frobnicate");
    alice.wait_for("unknown command /frobnicate").await;

    // Ctrl-D leaves cleanly.
    alice.press("C-d");
    alice.wait_for("[exited 0]").await;
    bob.line("/quit");
    bob.wait_for("[exited 0]").await;

    // Input history persists: the next start recalls the last line with Up,
    // and the saved login reconnects without a new SMS.
    let again = tmux.run_client("alice-again", &s.url, "--user alice");
    again.wait_for("logged in as alice").await;
    again.press("Up");
    again
        .wait("the recalled line", |s| {
            Pane::last_line(s) == "> /frobnicate"
        })
        .await;
    assert_eq!(
        s.client
            .dev_sms("13800000001", None, None)
            .await
            .unwrap()
            .len(),
        1
    );
}

fn on_disk(dir: &std::path::Path, app_port: u16, broker_port: u16) -> ServeConfig {
    let mut config = ServeConfig::ephemeral_on_free_ports(&[]);
    config.ephemeral = false;
    config.data_dir = Some(dir.to_path_buf());
    config.app_port = app_port;
    config.broker_port = broker_port;
    config
}

#[tokio::test]
async fn reconnects_after_the_server_restarts() {
    if !tmux_available("reconnects_after_the_server_restarts") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let s: TestServer = start_with(on_disk(data.path(), 0, 0)).await;
    let (app_port, broker_port) = (s.running.app_addr.port(), s.running.broker_addr.port());
    let url = s.url.clone();
    let tmux = Tmux::new();
    let alice = tmux.client(&url, "alice");
    alice.wait_for("logged in as alice").await;
    alice.line("/to bob");
    alice.wait_for("talking to bob").await;

    s.running.stop().await.unwrap();
    alice.wait_for("connection lost").await;
    // Typed while disconnected: queued.
    alice.line("sent while offline");
    alice.wait_for("“sent while offline” queued").await;

    let s = start_with(on_disk(data.path(), app_port, broker_port)).await;
    // Bob writes as soon as the server is back; alice gets it by push or by
    // the sync that follows her reconnect.
    let (mut bob, _) = s.chat("13800000002", "bob-test").await;
    bob.send_text("single", "alice", "while you were gone", None)
        .await
        .unwrap();
    alice.wait_for("reconnected").await;
    alice.wait_for("“sent while offline” ✓ sent").await;
    alice.wait_for("[bob] bob: while you were gone").await;
    // The queued message was stored once and reached bob.
    let history = bob
        .request(
            json!({"op": "history", "conv": {"type": "single", "target": "alice"}, "limit": 10}),
        )
        .await
        .unwrap();
    let texts: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["content"]["text"].as_str())
        .collect();
    assert_eq!(
        texts.iter().filter(|t| **t == "sent while offline").count(),
        1,
        "{texts:?}"
    );
    alice.press("C-d");
    alice.wait_for("[exited 0]").await;
}

#[tokio::test]
async fn qr_login_in_the_terminal() {
    if !tmux_available("qr_login_in_the_terminal") {
        return;
    }
    let s = start(&[]).await;
    let tmux = Tmux::new();
    let web = tmux.run_client("web", &s.url, "--qr");
    web.wait_for("waiting for a phone to scan").await;
    // The QR code itself is drawn with half blocks.
    assert!(web.screen().contains('▀') || web.screen().contains('▄'));
    let phone = tempfile::tempdir().unwrap();
    let out = simulate(
        phone.path(),
        &s.url,
        &["approve", "--latest", "--as", "carol"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    web.wait_for("logged in as carol").await;
    web.line("/msg bob from the QR login");
    web.wait_for("“from the QR login” ✓ sent").await;
    web.press("C-d");
    web.wait_for("[exited 0]").await;
}

#[tokio::test]
async fn a_web_login_request_is_approved_or_denied_from_the_terminal() {
    if !tmux_available("a_web_login_request_is_approved_or_denied_from_the_terminal") {
        return;
    }
    let s = start(&[]).await;
    let tmux = Tmux::new();
    let alice = tmux.client(&s.url, "alice");
    alice.wait_for("logged in as alice").await;
    let (page_auth, _) = s.login("13800000001").await;
    let ask = || async {
        let r = s
            .post(
                "/pc_session",
                json!({"clientId": "web-1", "platform": 5, "device_name": "Firefox", "flag": 1, "userId": "alice"}),
                Some(&page_auth),
            )
            .await;
        assert_eq!(r.body["result"]["status"], 1, "{}", r.body);
        r.body["result"]["token"].as_str().unwrap().to_owned()
    };
    let s = &s;
    let poll = |token: String| async move {
        s.post(&format!("/session_login/{token}"), json!({}), None)
            .await
            .code()
    };

    let token = ask().await;
    alice
        .wait_for("Web login request from Firefox (Web) — /approve or /deny")
        .await;
    alice.line("/approve");
    alice.wait_for("web login approved").await;
    assert_eq!(poll(token.clone()).await, 9);
    assert_eq!(poll(token).await, 0);

    let token = ask().await;
    alice
        .wait("a second request", |s| {
            s.matches("Web login request from Firefox").count() == 2
        })
        .await;
    alice.line("/deny");
    alice.wait_for("web login denied").await;
    assert_eq!(poll(token).await, 18);

    alice.line("/approve");
    alice.wait_for("no web login request to answer").await;
    alice.line("/quit");
    alice.wait_for("[exited 0]").await;
}
