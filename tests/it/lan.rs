//! LAN mode: a device that reaches a `--host 0.0.0.0` stack by some address
//! gets every URL on that address (`--advertise-host` overrides it), and the
//! banner and `imctl status` carry the official clients' settings.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use reqwest::header::{ACCEPT, CONTENT_TYPE, HOST, VARY};
use serde_json::{Value, json};

use crate::common::{Served, imctl, start, stderr, stdout};

/// A spawned stack, asked at 127.0.0.1 but with any `Host` header.
struct Lan {
    /// Killed on drop.
    _served: Served,
    app_port: u16,
    broker_port: u16,
    http: reqwest::Client,
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"))
}

impl Lan {
    fn start(extra: &[&str]) -> Self {
        let mut args = vec![
            "--ephemeral",
            "--host",
            "0.0.0.0",
            "--app-port",
            "0",
            "--broker-port",
            "0",
            "--config",
            "none",
        ];
        args.extend_from_slice(extra);
        let served = Served::start(&args);
        Self {
            app_port: port_of(&served.app),
            broker_port: port_of(&served.ws),
            _served: served,
            http: reqwest::Client::new(),
        }
    }

    fn app(&self) -> String {
        format!("http://127.0.0.1:{}", self.app_port)
    }

    /// A JSON request to `port` at 127.0.0.1, addressed to `host`.
    async fn call(
        &self,
        method: reqwest::Method,
        port: u16,
        path: &str,
        host: &str,
        body: Option<Value>,
        auth: Option<&str>,
    ) -> Value {
        let mut req = self
            .http
            .request(method, format!("http://127.0.0.1:{port}{path}"))
            .header(HOST, format!("{host}:{port}"));
        if let Some(b) = body {
            req = req.json(&b);
        }
        if let Some(a) = auth {
            req = req.header("authToken", a);
        }
        let r = req.send().await.unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap()
    }

    async fn post(&self, path: &str, host: &str, body: Value, auth: Option<&str>) -> Value {
        let port = if path == "/route" {
            self.broker_port
        } else {
            self.app_port
        };
        self.call(reqwest::Method::POST, port, path, host, Some(body), auth)
            .await
    }

    async fn get(&self, path: &str, host: &str) -> Value {
        self.call(reqwest::Method::GET, self.app_port, path, host, None, None)
            .await
    }
}

/// Every network URL in `v` (the QR text's `imctl://` is none).
fn urls_in(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) if ["http", "ws"].iter().any(|p| s.starts_with(p)) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| urls_in(x, out)),
        Value::Object(o) => o.values().for_each(|x| urls_in(x, out)),
        _ => {}
    }
}

/// Asserts every URL in `answers` names `host`, and nothing names loopback.
fn all_on(host: &str, answers: &[(&str, &Value)]) {
    let mut seen = 0;
    for (what, v) in answers {
        // The store's address is the server's own, never handed to a client.
        let mut v = (*v).clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("database");
        }
        let text = v.to_string();
        assert!(
            !text.contains("127.0.0.1") && !text.contains("localhost"),
            "{what} hands out loopback: {text}"
        );
        let mut urls = Vec::new();
        urls_in(&v, &mut urls);
        for u in urls {
            assert!(
                u.starts_with(&format!("http://{host}:"))
                    || u.starts_with(&format!("ws://{host}:")),
                "{what}: {u} is not on {host}"
            );
            seen += 1;
        }
    }
    assert!(seen >= 10, "only {seen} URLs checked");
}

/// Logs alice in, completes a QR login for bob through the dashboard's
/// phone buttons, asks `/route`, `/config`, `/_dev`, uploads a file: every
/// answer a client that reached us as `host` reads, each URL expected on
/// `want`.
async fn everything_at(lan: &Lan, host: &str, want: &str) -> Vec<(&'static str, Value)> {
    let login = lan
        .post(
            "/login",
            host,
            json!({"mobile": "13800000001", "code": "66666", "clientId": "phone-1", "platform": "2"}),
            None,
        )
        .await;
    assert_eq!(login["code"], 0, "{login}");
    let r = &login["result"];
    assert_eq!(
        r["routeUrl"],
        format!("http://{want}:{}/route", lan.broker_port)
    );
    assert_eq!(
        r["portrait"],
        format!("http://{want}:{}/avatar/alice.svg", lan.app_port)
    );
    let auth = login_auth(lan, host).await;

    let route = lan
        .post(
            "/route",
            host,
            json!({"token": r["token"], "userId": "alice"}),
            None,
        )
        .await;
    assert_eq!(route["result"]["host"], want, "{route}");
    assert_eq!(route["result"]["port"], lan.broker_port);
    assert_eq!(
        route["result"]["wsUrl"],
        format!("ws://{want}:{}/ws", lan.broker_port)
    );

    let pc = lan
        .post(
            "/pc_session",
            host,
            json!({"clientId": "pc-1", "platform": 5, "device_name": "lan"}),
            None,
        )
        .await;
    let token = pc["result"]["token"].as_str().unwrap().to_owned();
    let approve = lan
        .post(
            &format!("/_dev/pc_sessions/{token}/approve"),
            host,
            json!({"userId": "bob"}),
            None,
        )
        .await;
    // Code 9 (with the scanner's portrait), then 0.
    let mut polls = Vec::new();
    while polls.len() < 3 {
        let r = lan
            .post(&format!("/session_login/{token}"), host, json!({}), None)
            .await;
        let done = r["code"] == 0;
        polls.push(r);
        if done {
            break;
        }
    }
    let confirmed = polls.pop().unwrap();
    assert_eq!(confirmed["code"], 0, "{confirmed}");
    let scanned = polls.pop().unwrap_or(json!({}));
    assert_eq!(
        confirmed["result"]["routeUrl"],
        format!("http://{want}:{}/route", lan.broker_port)
    );

    let upload = lan
        .http
        .post(format!("{}/media", lan.app()))
        .header(HOST, format!("{host}:{}", lan.app_port))
        .header("authToken", &auth)
        .header(CONTENT_TYPE, "image/png")
        .body(&b"\x89PNG\r\n\x1a\nbytes"[..])
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 201);
    let upload: Value = upload.json().await.unwrap();
    assert!(
        upload["url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("http://{want}:{}/media/", lan.app_port)),
        "{upload}"
    );

    let config = lan.get("/config", host).await;
    assert_eq!(
        config["appServer"],
        format!("http://{want}:{}", lan.app_port)
    );
    let status = lan.get("/_dev/status", host).await;
    assert_eq!(status["clients"]["android"]["IM_SERVER_HOST"], want);
    vec![
        ("/login", login),
        ("/route", route),
        ("/_dev/pc_sessions/…/approve", approve),
        ("/session_login (9)", scanned),
        ("/session_login (0)", confirmed),
        ("/media", upload),
        ("/config", config),
        ("/_dev/status", status),
        ("/_dev/users", lan.get("/_dev/users", host).await),
    ]
}

/// An `authToken` for alice, logged in from `host`.
async fn login_auth(lan: &Lan, host: &str) -> String {
    let r = lan
        .http
        .post(format!("{}/login", lan.app()))
        .header(HOST, format!("{host}:{}", lan.app_port))
        .json(&json!({"mobile": "13800000001", "code": "66666", "clientId": "phone-2", "platform": 2}))
        .send()
        .await
        .unwrap();
    r.headers()["authToken"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn devices_on_the_lan_and_the_emulator_get_only_urls_on_the_host_they_reached() {
    let lan = Lan::start(&[]);
    for host in ["192.168.1.5", "10.0.2.2"] {
        let answers = everything_at(&lan, host, host).await;
        let refs: Vec<(&str, &Value)> = answers.iter().map(|(w, v)| (*w, v)).collect();
        all_on(host, &refs);
    }
    // A name works the same way, and its case does not matter.
    let config = lan.get("/config", "MyBox.LOCAL").await;
    assert_eq!(
        config["routeUrl"],
        format!("http://mybox.local:{}/route", lan.broker_port)
    );
}

#[tokio::test]
async fn a_host_header_that_is_not_a_plain_host_falls_back_to_the_machine_address() {
    let lan = Lan::start(&[]);
    let fallback = imctl::http::advertise::machine_address()
        .map_or("127.0.0.1".to_owned(), imctl::http::advertise::url_host);
    let long = "a".repeat(300);
    for garbage in ["evil.com/path", "http:", "a b", "[::1", long.as_str()] {
        let r = lan
            .http
            .get(format!("{}/config", lan.app()))
            .header(HOST, garbage)
            .send()
            .await
            .unwrap();
        let config: Value = r.json().await.unwrap();
        assert_eq!(
            config["routeUrl"],
            format!("http://{fallback}:{}/route", lan.broker_port),
            "Host {garbage:?}"
        );
    }
    // The machine's own address is what a device can reach, never loopback.
    if imctl::http::advertise::machine_address().is_some() {
        assert!(!fallback.starts_with("127."));
    }
}

#[tokio::test]
async fn advertise_host_names_every_url_and_status_carries_the_client_settings() {
    let lan = Lan::start(&["--advertise-host", "box.lan"]);
    let answers = everything_at(&lan, "10.0.2.2", "box.lan").await;
    let refs: Vec<(&str, &Value)> = answers.iter().map(|(w, v)| (*w, v)).collect();
    all_on("box.lan", &refs);
    let login = &answers[0].1["result"];
    assert_eq!(
        login["routeUrl"],
        format!("http://box.lan:{}/route", lan.broker_port)
    );
    let route = &answers[1].1["result"];
    assert_eq!(
        (route["host"].as_str(), route["wsUrl"].as_str()),
        (
            Some("box.lan"),
            Some(format!("ws://box.lan:{}/ws", lan.broker_port).as_str())
        )
    );

    let state = tempfile::tempdir().unwrap();
    let app = lan.app();
    let out = imctl(
        state.path(),
        &["status", "-o", "json", "--app-server", app.as_str()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let status: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let app_server = format!("http://box.lan:{}", lan.app_port);
    assert_eq!(status["appServer"], app_server);
    let clients = &status["clients"];
    assert_eq!(clients["android"]["APP_SERVER_ADDRESS"], app_server);
    assert_eq!(clients["android"]["IM_SERVER_HOST"], "box.lan");
    assert_eq!(clients["ios"]["APP_SERVER_ADDRESS"], app_server);
    assert_eq!(
        clients["vueChat"],
        json!({"APP_SERVER": app_server, "IM_SERVER_HOST": "box.lan", "ROUTE_PORT": lan.broker_port,
            "USE_WSS": false, "WS_PATH": "/ws"})
    );
    let env = stdout(&imctl(
        state.path(),
        &["status", "-o", "env", "--app-server", app.as_str()],
    ));
    assert!(
        env.contains(&format!("export IMCTL_APP_SERVER={app_server}\n")),
        "{env}"
    );
    assert!(
        env.contains("export IMCTL_IM_SERVER_HOST=box.lan\n"),
        "{env}"
    );
    let text = stdout(&imctl(
        state.path(),
        &["status", "--app-server", app.as_str()],
    ));
    assert!(
        text.contains(&format!("APP_SERVER_ADDRESS = \"{app_server}\"")),
        "{text}"
    );
}

#[tokio::test]
async fn the_banner_prints_the_client_settings_and_a_qr_code_for_a_lan_host() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_imctl"))
        .args([
            "serve",
            "--ephemeral",
            "--host",
            "0.0.0.0",
            "--app-port",
            "0",
            "--broker-port",
            "0",
            "--config",
            "none",
            "--advertise-host",
            "192.168.1.5",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut banner = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        // The QR code's last line is all upper half blocks.
        let done = line.starts_with('▀');
        banner.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = banner.join("\n");
    let app = banner[1].trim().strip_prefix("web page").unwrap().trim();
    let app = app.trim_end_matches('/');
    assert!(app.starts_with("http://192.168.1.5:"), "{text}");
    for expected in [
        format!("APP_SERVER_ADDRESS = \"{app}\";  IM_SERVER_HOST = \"192.168.1.5\";"),
        format!("APP_SERVER_ADDRESS = @\"{app}\""),
        format!("APP_SERVER = '{app}';  IM_SERVER_HOST = '192.168.1.5';  ROUTE_PORT = "),
        "USE_WSS = false;  WS_PATH = '/ws';".to_owned(),
        "10.0.2.2".to_owned(),
    ] {
        assert!(text.contains(&expected), "{expected} not in\n{text}");
    }
    let start = banner
        .iter()
        .position(|l| l.trim_start().starts_with("scan"))
        .unwrap();
    assert_eq!(decode_terminal_qr(&banner[start + 1..]), app, "{text}");
}

/// Reads a QR code drawn with half blocks (light modules as the blocks,
/// for dark terminals) back into its text.
fn decode_terminal_qr(lines: &[String]) -> String {
    const SCALE: u32 = 4;
    let rows: Vec<Vec<char>> = lines.iter().map(|l| l.chars().collect()).collect();
    let width = rows.iter().map(Vec::len).max().unwrap() as u32;
    let light = |x: u32, y: u32| {
        let (col, line) = ((x / SCALE) as usize, y / SCALE);
        let c = rows[(line / 2) as usize].get(col).copied().unwrap_or(' ');
        let (top, bottom) = match c {
            '█' => (true, true),
            '▀' => (true, false),
            '▄' => (false, true),
            _ => (false, false),
        };
        if line % 2 == 0 { top } else { bottom }
    };
    let png = crate::common::png(width * SCALE, rows.len() as u32 * 2 * SCALE, 1, |x, y| {
        vec![if light(x, y) { 255 } else { 0 }]
    });
    imctl::qr_image::decode(&png).expect("the banner's QR code reads")
}

#[tokio::test]
async fn listening_on_loopback_keeps_loopback_urls_whatever_the_host_header() {
    let s = start(&[]).await;
    let r: Value = s
        .http
        .get(format!("{}/config", s.url))
        .header(HOST, "10.0.2.2:8888")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["appServer"], s.url);
    assert!(
        r["routeUrl"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:")
    );
}

#[tokio::test]
async fn get_root_answers_ok_to_probes_and_the_page_to_browsers() {
    let s = start(&[]).await;
    for accept in [None, Some("*/*"), Some("application/json")] {
        let mut req = s.http.get(format!("{}/", s.url));
        if let Some(a) = accept {
            req = req.header(ACCEPT, a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()[VARY], "accept");
        assert!(
            r.headers()[CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/plain"),
            "{accept:?}"
        );
        assert_eq!(r.text().await.unwrap(), "Ok", "{accept:?}");
    }
    let page = s
        .http
        .get(format!("{}/", s.url))
        .header(
            ACCEPT,
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(page.headers()[VARY], "accept");
    assert!(
        page.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.text().await.unwrap().contains("/assets/app.js"));
}

#[test]
fn advertise_host_must_be_a_plain_host() {
    let state = tempfile::tempdir().unwrap();
    for bad in ["http://192.168.1.5", "192.168.1.5:8888", "box/x", "0.0.0.0"] {
        let out = imctl(
            state.path(),
            &["serve", "--ephemeral", "--advertise-host", bad],
        );
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("--advertise-host"),
            "{bad}: {}",
            stderr(&out)
        );
    }
}

#[tokio::test]
async fn a_websocket_opened_by_a_device_gets_portraits_on_its_host() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let lan = Lan::start(&[]);
    let login = lan
        .post(
            "/login",
            "10.0.2.2",
            json!({"mobile": "13800000001", "code": "66666", "clientId": "emu-1", "platform": 2}),
            None,
        )
        .await;
    let mut req = format!("ws://127.0.0.1:{}/ws", lan.broker_port)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        HOST,
        format!("10.0.2.2:{}", lan.broker_port).parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let frames = [
        json!({"id": 1, "op": "connect", "token": login["result"]["token"]}),
        json!({"id": 2, "op": "profile.get", "users": ["alice", "bob"]}),
    ];
    for f in frames {
        ws.send(Message::text(f.to_string())).await.unwrap();
    }
    let answer = loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
            .await
            .expect("an answer within 5 s")
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
        if v["id"] == 2 {
            break v;
        }
    };
    let users = answer["users"].as_array().unwrap();
    assert_eq!(users.len(), 2, "{answer}");
    for u in users {
        assert_eq!(
            u["portrait"],
            format!(
                "http://10.0.2.2:{}/avatar/{}.svg",
                lan.app_port,
                u["userId"].as_str().unwrap()
            ),
            "{answer}"
        );
    }
}

#[test]
fn advertise_host_is_a_key_of_imctl_toml() {
    let state = tempfile::tempdir().unwrap();
    let file = state.path().join("imctl.toml");
    std::fs::write(&file, "advertise_host = \"Box.LAN\"\n").unwrap();
    let file = file.to_str().unwrap();
    let out = imctl(state.path(), &["serve", "--config", file, "--print-config"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("advertise-host = \"Box.LAN\"  # file"),
        "{}",
        stdout(&out)
    );
    std::fs::write(
        state.path().join("imctl.toml"),
        "advertise-host = \"http://x\"\n",
    )
    .unwrap();
    let out = imctl(state.path(), &["serve", "--config", file]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
