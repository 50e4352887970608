//! The built-in web client in a real headless Chromium, driven over
//! WebDriver (Debian's `chromium` and `chromium-driver`, through fantoccini),
//! against a real server, with the real `imctl simulate` and `imctl client`.
//!
//! Without Chromium these tests say so on stderr and pass, unless
//! `IMCTL_REQUIRE_BROWSER=1` (CI sets it), where they fail.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::client::{client, until_online};
use crate::common::{simulate, start, stderr, stdout};

fn find_program(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Ok(p) = std::env::var(env) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// A headless Chromium behind its own chromedriver; both killed on drop.
pub(crate) struct Browser {
    pub(crate) client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// `None` (after saying why) when Chromium or chromedriver is missing
    /// and the test may skip.
    pub(crate) async fn start(test: &str) -> Option<Browser> {
        let chromium = find_program(
            "IMCTL_CHROMIUM",
            &["chromium", "chromium-browser", "google-chrome"],
        );
        let driver = find_program("IMCTL_CHROMEDRIVER", &["chromedriver"]);
        let (Some(chromium), Some(driver)) = (chromium, driver) else {
            assert!(
                std::env::var("IMCTL_REQUIRE_BROWSER").as_deref() != Ok("1"),
                "{test}: a browser is required (IMCTL_REQUIRE_BROWSER=1) but chromium or chromedriver \
                 is not installed (apt-get install chromium chromium-driver)"
            );
            // Straight to stderr, past the test harness's capture, so it is seen.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
            );
            return None;
        };
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let profile = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(&driver);
        cmd.arg(format!("--port={port}"))
            // Chromium's own scratch directories go with the profile, so
            // nothing is left in /tmp.
            .env("TMPDIR", profile.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group, so Chromium's processes die with it.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().expect("chromedriver starts");
        let browser = Browser {
            client: connect(port, &chromium, profile.path()).await,
            driver: child,
            _profile: profile,
        };
        browser
            .client
            .set_window_size(1400, 900)
            .await
            .expect("window size");
        Some(browser)
    }

    pub(crate) async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Runs `expr` until it gives something truthy; returns that.
    pub(crate) async fn until(&self, what: &str, expr: &str) -> Value {
        let script = format!("return ({expr});");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.js(&script).await;
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v != json!("") && v != json!(0);
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let state = self
                    .js("return document.body.innerText.slice(0, 3000)")
                    .await;
                panic!(
                    "timed out waiting for {what}; the page shows:\n{}",
                    state.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the element `css` finds; a page that re-renders (the
    /// dashboard redraws its tables on every change) may replace it between
    /// the find and the click, so a stale element is found again.
    pub(crate) async fn click(&self, css: &str) {
        for attempt in 1.. {
            let element = self
                .client
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("{css}: {e}"));
            match element.click().await {
                Ok(_) => return,
                Err(e) if attempt < 10 && e.to_string().contains("stale element") => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("click {css}: {e}"),
            }
        }
    }

    pub(crate) async fn type_into(&self, css: &str, text: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("typing into {css}: {e}"));
    }

    /// The QR token on screen once it differs from `old`.
    pub(crate) async fn qr_token(&self, old: &str) -> String {
        let expr = format!(
            "document.querySelector('#login:not([hidden]) #qr')?.dataset.token !== {old:?} && document.querySelector('#qr').dataset.token"
        );
        self.until("a QR code", &expr)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn until_chat_as(&self, user: &str) {
        self.until(
            &format!("the chat view as {user}, connected"),
            &format!(
                "!document.getElementById('chat').hidden && document.getElementById('chat').dataset.user === {user:?} && document.getElementById('link').textContent === 'connected'"
            ),
        )
        .await;
    }

    /// Saves a screenshot where cargo keeps test output and says where.
    async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        let _ = writeln!(std::io::stderr(), "screenshot: {}", path.display());
        path
    }

    /// Ends the WebDriver session; dropping kills what is left.
    pub(crate) async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.driver);
    }
}

fn kill_group(child: &mut Child) {
    // SAFETY: signalling our own child's process group.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    let _ = child.wait();
}

async fn connect(port: u16, chromium: &Path, profile: &Path) -> Client {
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-quic", "--disable-dev-shm-usage",
                format!("--user-data-dir={}", profile.display()),
            ],
        },
    });
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // chromedriver is plain HTTP on loopback.
        let http = hyper_util::client::legacy::connect::HttpConnector::new();
        let attempt = ClientBuilder::new(http)
            .capabilities(caps.clone())
            .connect(&url)
            .await;
        match attempt {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => {
                panic!("cannot start Chromium through chromedriver: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}\n{}", stdout(out), stderr(out));
    stdout(out)
}

#[tokio::test]
async fn qr_login_in_the_browser_then_chat_with_terminal_clients() {
    let Some(b) = Browser::start("qr_login_in_the_browser_then_chat_with_terminal_clients").await
    else {
        return;
    };
    let s = start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    b.client.goto(&s.url).await.unwrap();

    // The page made a QR session and waits on it by server-sent events.
    let token = b.qr_token("").await;
    assert_eq!(s.running.state.qr.get(&token).unwrap().status() as i32, 0);
    b.until(
        "the event stream in the inspector",
        &format!("document.getElementById('insp-list').textContent.includes('/pc_session/{token}/events')"),
    )
    .await;

    // The real `imctl simulate` plays the phone.
    let approved = simulate(dir.path(), &s.url, &["approve", &token, "--as", "alice"]).await;
    ok(&approved);
    b.until_chat_as("alice").await;
    let inspector = b
        .js("return document.getElementById('insp-list').textContent")
        .await;
    let inspector = inspector.as_str().unwrap();
    for step in [
        "event: scanned",
        "event: confirmed",
        "/route",
        "connect #",
        "connected #",
        "sync #",
    ] {
        assert!(
            inspector.contains(step),
            "the inspector lacks {step:?}:\n{inspector}"
        );
    }

    // Page → terminal.
    let bob = client(
        dir.path(),
        &s.url,
        &[
            "--user",
            "bob",
            "--listen",
            "--count",
            "1",
            "--json",
            "--timeout",
            "30s",
        ],
    )
    .spawn()
    .unwrap();
    until_online(&s, "bob").await;
    b.type_into("#new-chat", "bob\n").await;
    b.until(
        "the conversation with bob open",
        "!document.getElementById('composer').disabled && document.getElementById('conv-title').textContent === 'Bob Chen'",
    )
    .await;
    b.type_into("#composer", "hello from the browser\n").await;
    let got = bob.wait_with_output().await.unwrap();
    let line: Value = serde_json::from_str(ok(&got).trim()).unwrap();
    assert_eq!(line["from"], "alice");
    assert_eq!(line["content"]["text"], "hello from the browser");
    // bob's client acknowledged it: the page says delivered.
    b.until(
        "the delivered mark",
        "document.querySelector('#timeline .msg.mine [data-state=delivered], #timeline .msg.mine [data-state=read]')",
    )
    .await;

    // Terminal → page, with markup that must stay text.
    let evil =
        "<script>window.pwned=1</script><img src=x onerror=\"window.pwned=2\"> <b>not bold</b>";
    ok(&client(
        dir.path(),
        &s.url,
        &["--user", "bob", "--send", "alice", evil],
    )
    .output()
    .await
    .unwrap());
    let shown = b
        .until(
            "bob's message in the timeline",
            "[...document.querySelectorAll('#timeline .msg:not(.mine) .text')].map(e => e.textContent).find(t => t.includes('not bold'))",
        )
        .await;
    assert_eq!(shown, json!(evil));
    let injected = b
        .js("return [window.pwned === undefined, document.querySelectorAll('#timeline script, #timeline b, #timeline .text img').length]")
        .await;
    assert_eq!(injected, json!([true, 0]), "markup from a peer became HTML");
    // Shown in the open conversation, so marked read on the server.
    let (mut other_device, _) = s.chat("13800000001", "alice-phone").await;
    let convs = other_device
        .request(json!({"op": "conversations"}))
        .await
        .unwrap();
    let with_bob = convs["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["conv"]["target"] == "bob")
        .cloned()
        .unwrap();
    assert_eq!(with_bob["unread"], 0, "{with_bob}");

    // alice reading on her other device is not bob reading alice's message.
    let bobs = with_bob["lastMessage"]["msgId"]
        .as_str()
        .unwrap()
        .to_owned();
    other_device
        .request(json!({"op": "read", "conv": {"type": "single", "target": "bob"}, "upTo": bobs}))
        .await
        .unwrap();
    b.until(
        "the receipt from alice's other device",
        "document.getElementById('insp-list').textContent.includes('receipt read by alice')",
    )
    .await;
    let state = b
        .js("return document.querySelector('#timeline .msg.mine .mstate').dataset.state")
        .await;
    assert_eq!(state, json!("delivered"), "bob never read it");
    b.screenshot("chat").await;

    // Too long for the broker's frame limit: refused in the page, link kept.
    b.js("document.getElementById('composer').value = 'x'.repeat(70000); document.getElementById('composer-form').requestSubmit(); return null")
        .await;
    let refused = b
        .until(
            "the oversized message refused",
            "document.querySelector('#timeline .msg.mine [data-state=failed]')?.textContent",
        )
        .await;
    assert!(
        refused.as_str().unwrap().contains("--max-frame"),
        "{refused}"
    );
    assert_eq!(
        b.js("return document.getElementById('link').textContent")
            .await,
        json!("connected")
    );

    // A reload reconnects with the saved login: no new QR.
    let sessions_before = s.running.state.qr.list(usize::MAX).len();
    b.client.refresh().await.unwrap();
    b.until_chat_as("alice").await;
    assert_eq!(
        s.running.state.qr.list(usize::MAX).len(),
        sessions_before,
        "a reload made a QR session"
    );
    b.until(
        "the conversation with bob in the list",
        "document.querySelector('#convs li[data-conv=\"single:bob\"]')",
    )
    .await;

    // Log out: back to a fresh QR.
    b.click("#logout").await;
    let next = b.qr_token(&token).await;
    assert_ne!(next, token);
    let kept = b.js("return localStorage.getItem('imctl.creds')").await;
    assert_eq!(kept, Value::Null, "logging out left the login behind");

    // Another user in the same page starts clean.
    ok(&simulate(dir.path(), &s.url, &["approve", &next, "--as", "bob"]).await);
    b.until_chat_as("bob").await;
    b.until(
        "bob's conversation with alice",
        "document.querySelector('#convs li[data-conv=\"single:alice\"]')",
    )
    .await;
    let leftovers = b
        .js("return [document.querySelectorAll('#convs li[data-conv=\"single:bob\"]').length, document.querySelectorAll('#timeline .msg').length, document.getElementById('composer').disabled]")
        .await;
    assert_eq!(
        leftovers,
        json!([0, 0, true]),
        "alice's chat leaked into bob's"
    );
    b.click("#logout").await;
    b.until(
        "the QR after bob logs out",
        "!document.getElementById('login').hidden",
    )
    .await;

    // A saved login the server no longer accepts: back to the QR, saying why.
    b.js(r#"localStorage.setItem('imctl.creds', JSON.stringify({userId: 'alice', imToken: 'not-a-token', authToken: 'x'})); return null"#)
        .await;
    b.client.refresh().await.unwrap();
    b.until(
        "the QR again, with the reason",
        "!document.getElementById('login').hidden && document.getElementById('login-state').textContent.includes('saved login ended')",
    )
    .await;
    b.close().await;
}

#[tokio::test]
async fn simulate_phone_panel_scans_cancels_and_approves() {
    let Some(b) = Browser::start("simulate_phone_panel_scans_cancels_and_approves").await else {
        return;
    };
    let s = start(&[]).await;
    // `?longpoll`: the page waits with POST /session_login instead of events.
    b.client
        .goto(&format!("{}/?longpoll", s.url))
        .await
        .unwrap();
    let first = b.qr_token("").await;
    b.until(
        "the long poll in the inspector",
        &format!("document.getElementById('insp-list').textContent.includes('POST /session_login/{first}')"),
    )
    .await;
    let cmd = b
        .js("return document.getElementById('simulate-cmd').textContent")
        .await;
    assert_eq!(
        cmd,
        json!(format!("imctl simulate approve {first} --as alice"))
    );

    // Scan only: the page shows who scanned; then cancel from the panel.
    b.click("#scan-only").await;
    b.click("#phone-users button[data-user=carol]").await;
    b.until(
        "the scanned state with carol",
        "document.getElementById('login-state').textContent.startsWith('scanned') && document.getElementById('scanner').textContent.includes('Carol')",
    )
    .await;
    b.screenshot("login-scanned").await;
    let log = b
        .js("return document.getElementById('phone-log').textContent")
        .await;
    let log = log.as_str().unwrap().to_owned();
    for call in [
        "POST /send_code",
        "GET /_dev/sms",
        "POST /login",
        &format!("POST /scan_pc/{first}"),
    ] {
        assert!(log.contains(call), "the panel does not show {call}:\n{log}");
    }
    b.click("#phone-cancel").await;
    let second = b.qr_token(&first).await;
    b.until(
        "the cancel noticed",
        "document.getElementById('login-state').textContent.startsWith('cancelled on the phone')",
    )
    .await;

    // One click approves; the saved phone login needs no second SMS.
    b.click("#scan-only").await;
    let sms_before = s
        .client
        .dev_sms("13800000003", None, None)
        .await
        .unwrap()
        .len();
    b.click("#phone-users button[data-user=carol]").await;
    b.until_chat_as("carol").await;
    assert_eq!(
        s.client
            .dev_sms("13800000003", None, None)
            .await
            .unwrap()
            .len(),
        sms_before
    );
    assert!(
        s.running.state.qr.get(&second).is_err(),
        "the QR session was not used up"
    );

    // An image: uploaded to /media, sent, shown inline.
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("dot.png");
    std::fs::write(
        &png,
        crate::common::png(40, 30, 3, |_, _| vec![200, 30, 30]),
    )
    .unwrap();
    b.type_into("#new-chat", "robot\n").await;
    b.until(
        "the robot conversation",
        "!document.getElementById('composer').disabled",
    )
    .await;
    b.type_into("#file", png.to_str().unwrap()).await;
    let size = b
        .until(
            "the image shown inline",
            "(() => { const i = document.querySelector('#timeline .msg.mine img.inline'); return i && i.complete && i.naturalWidth ? [i.naturalWidth, i.naturalHeight] : null })()",
        )
        .await;
    assert_eq!(size, json!([40, 30]));
    // And the robot answers a text.
    b.type_into("#composer", "ping\n").await;
    b.until(
        "the robot's answer",
        "document.querySelector('#timeline .msg:not(.mine) .text')",
    )
    .await;

    // A group made in the page, and a message to it.
    b.click("#new-group summary").await;
    b.type_into("#group-name", "web team").await;
    b.type_into("#group-members", "alice, bob\n").await;
    b.until(
        "the new group open",
        "document.getElementById('conv-title').textContent === '#web team' && document.querySelector('#timeline .note')?.textContent.includes('created the group')",
    )
    .await;
    b.type_into("#composer", "hi team\n").await;
    b.until(
        "the group message sent",
        "document.querySelector('#timeline .msg.mine [data-state=sent], #timeline .msg.mine [data-state=delivered]')",
    )
    .await;
    let (mut alice, _) = s.chat("13800000001", "alice-check").await;
    let groups = alice.request(json!({"op": "group.list"})).await.unwrap();
    let group = groups["groups"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(groups["groups"][0]["name"], "web team");
    let history = alice
        .request(json!({"op": "history", "conv": {"type": "group", "target": group}}))
        .await
        .unwrap();
    assert_eq!(
        history["messages"][0]["content"]["text"], "hi team",
        "{history}"
    );
    assert_eq!(history["messages"][0]["from"], "carol");
    b.close().await;
}

#[tokio::test]
async fn dev_dashboard_shows_live_data_and_its_buttons_play_the_phone() {
    let Some(b) =
        Browser::start("dev_dashboard_shows_live_data_and_its_buttons_play_the_phone").await
    else {
        return;
    };
    let s = start(&[]).await;
    b.client.goto(&format!("{}/_dev/", s.url)).await.unwrap();
    b.until(
        "the live feed",
        "document.getElementById('live').textContent === 'live'",
    )
    .await;

    // A web page's QR session appears; approving it as bob logs that page in.
    let token = s.pc_session().await;
    let poll = s.spawn_poll(&token);
    crate::common::until_polling(&s, &token).await;
    let row = format!("#sessions tr[data-token='{token}']");
    b.until(
        "the session's row",
        &format!("document.querySelector(\"{row}\")"),
    )
    .await;
    b.click(&format!("{row} select option[value=bob]")).await;
    b.click(&format!("{row} button[data-action=approve]")).await;
    // Scan and confirm land together: the page hears 9, then 0.
    assert_eq!(poll.await.unwrap().code(), 9);
    let answer = s
        .post(&format!("/session_login/{token}"), json!({}), None)
        .await;
    assert_eq!(answer.code(), 0, "{}", answer.body);
    assert_eq!(answer.body["result"]["userId"], "bob");

    // The SMS outbox and messages, live, as text.
    s.post("/send_code", json!({"mobile": "13800000003"}), None)
        .await;
    let code = s.client.dev_sms("13800000003", None, None).await.unwrap()[0]
        .code
        .clone();
    b.until(
        "the SMS code",
        &format!("document.querySelector('#sms .code')?.textContent === '{code}'"),
    )
    .await;
    let (mut alice, _) = s.chat("13800000001", "dash-browser").await;
    let evil = "<img src=x onerror=\"window.pwned=1\">hello";
    alice
        .request(json!({"op": "send", "conv": {"type": "single", "target": "bob"}, "content": {"type": "text", "text": evil}}))
        .await
        .unwrap();
    let shown = b
        .until(
            "the message",
            "document.querySelector('#msgs td.text')?.textContent",
        )
        .await;
    assert_eq!(shown, json!(evil));
    b.until(
        "alice connected",
        "document.getElementById('conns').textContent.includes('alice')",
    )
    .await;
    assert_eq!(
        b.js("return [window.pwned === undefined, document.querySelectorAll('#msgs img').length]")
            .await,
        json!([true, 0])
    );
    let waiting = s.pc_session().await;
    b.until(
        "a second session",
        &format!("document.querySelector(\"#sessions tr[data-token='{waiting}']\")"),
    )
    .await;

    // A quick-login request is marked, names the user it asks, and its
    // deny button cancels it.
    let (carol, _) = s.login("13800000003").await;
    let r = s
        .post(
            "/pc_session",
            json!({"clientId": "web-2", "platform": 5, "device_name": "Firefox", "flag": 1}),
            Some(&carol),
        )
        .await;
    let quick = r.body["result"]["token"].as_str().unwrap().to_owned();
    let row = format!("#sessions tr.quick[data-token='{quick}']");
    let shown = b
        .until(
            "the quick-login row",
            &format!("document.querySelector(\"{row}\")?.textContent"),
        )
        .await;
    let shown = shown.as_str().unwrap();
    assert!(
        shown.contains("quick login") && shown.contains("asks carol"),
        "{shown}"
    );
    b.screenshot("dashboard").await;
    // Found and clicked in one step: the live feed re-renders the rows.
    b.js(&format!(
        "document.querySelector(\"{row} button[data-action=cancel]\").click()"
    ))
    .await;
    b.until(
        "the request cancelled",
        &format!("document.querySelector(\"{row} td.state-4\")"),
    )
    .await;
    let answer = s
        .post(&format!("/session_login/{quick}"), json!({}), None)
        .await;
    assert_eq!(answer.code(), 18, "{}", answer.body);
    b.close().await;
}
