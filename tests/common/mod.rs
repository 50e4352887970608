//! Helpers shared by the integration tests: an in-process server on a free
//! port with in-memory storage, and raw HTTP calls.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

use imctl::client::AppClient;
use imctl::client::chat::ChatConn;
use imctl::config::ServeConfig;
use imctl::server::{self, Running};
use imctl::wire::ws::Connected;
use serde_json::{Value, json};

pub struct TestServer {
    pub running: Running,
    pub url: String,
    pub client: AppClient,
    pub http: reqwest::Client,
}

/// Starts a stack with `--ephemeral` on free ports, plus `extra` flags.
pub async fn start(extra: &[&str]) -> TestServer {
    start_with(ServeConfig::ephemeral_on_free_ports(extra)).await
}

pub async fn start_with(mut config: ServeConfig) -> TestServer {
    on_test_store(&mut config);
    let running = server::start(&config).await.expect("server starts");
    let url = running.app_url();
    TestServer {
        client: AppClient::new(&url),
        http: reqwest::Client::new(),
        url,
        running,
    }
}

/// A raw answer: the JSON body and the authToken header.
#[derive(Debug)]
pub struct Raw {
    pub status: u16,
    pub body: Value,
    pub auth_token: Option<String>,
}

impl Raw {
    pub fn code(&self) -> i64 {
        self.body["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("no code in {}", self.body))
    }

    pub fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or_default()
    }
}

impl TestServer {
    pub async fn post(&self, path: &str, body: Value, auth: Option<&str>) -> Raw {
        let mut req = self.http.post(format!("{}{path}", self.url)).json(&body);
        if let Some(a) = auth {
            req = req.header("authToken", a);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let auth_token = resp
            .headers()
            .get("authToken")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = resp.json().await.expect("JSON body");
        Raw {
            status,
            body,
            auth_token,
        }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("request sent")
    }

    /// Logs `mobile` in with the super code; returns (authToken, result).
    pub async fn login(&self, mobile: &str) -> (String, Value) {
        let r = self
            .post(
                "/login",
                json!({"mobile": mobile, "code": "66666", "clientId": "phone-1", "platform": 2}),
                None,
            )
            .await;
        assert_eq!(r.code(), 0, "{}", r.body);
        (
            r.auth_token.expect("authToken header"),
            r.body["result"].clone(),
        )
    }

    /// Creates a web QR session; returns its token.
    pub async fn pc_session(&self) -> String {
        let r = self
            .post(
                "/pc_session",
                json!({"clientId": "pc-1", "platform": 5, "device_name": "test"}),
                None,
            )
            .await;
        assert_eq!(r.code(), 0, "{}", r.body);
        r.body["result"]["token"].as_str().unwrap().to_owned()
    }

    /// Starts a `/session_login` long poll in the background.
    pub fn spawn_poll(&self, token: &str) -> tokio::task::JoinHandle<Raw> {
        let (http, url, token) = (self.http.clone(), self.url.clone(), token.to_owned());
        tokio::spawn(async move {
            let resp = http
                .post(format!("{url}/session_login/{token}"))
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let auth_token = resp
                .headers()
                .get("authToken")
                .map(|v| v.to_str().unwrap().to_owned());
            Raw {
                status,
                auth_token,
                body: resp.json().await.unwrap(),
            }
        })
    }
}

impl TestServer {
    /// `POST /_dev/faults` (`imctl chaos add`): the rule as the server took
    /// it, after acting at once.
    pub async fn add_fault(&self, rule: &str) -> Value {
        let r = self
            .post("/_dev/faults", json!({ "rule": rule }), None)
            .await;
        assert_eq!(r.status, 201, "{rule}: {}", r.body);
        r.body
    }

    /// `GET /_dev/faults`: `{rules, injected}`.
    pub async fn faults(&self) -> Value {
        let resp = self.get("/_dev/faults").await;
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    /// `DELETE /_dev/faults[/{id}]`: how many rules went.
    pub async fn clear_faults(&self, id: Option<u64>) -> u64 {
        let path = id.map_or("/_dev/faults".to_owned(), |id| format!("/_dev/faults/{id}"));
        let resp = self
            .http
            .delete(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json::<Value>().await.unwrap()["cleared"]
            .as_u64()
            .unwrap()
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.running.broker_addr)
    }

    /// Creates a group through the protocol as the user with `owner_mobile`;
    /// returns its id.
    pub async fn group(&self, owner_mobile: &str, name: &str, members: &[&str]) -> String {
        let (mut owner, _) = self.chat(owner_mobile, "group-maker").await;
        let reply = owner
            .request(json!({"op": "group.create", "name": name, "members": members}))
            .await
            .expect("group created");
        owner.close().await;
        reply["group"]["id"].as_str().unwrap().to_owned()
    }

    /// Logs `mobile` in, asks `/route`, connects: the whole client flow.
    pub async fn chat(&self, mobile: &str, client_id: &str) -> (ChatConn, Connected) {
        let r = self
            .post(
                "/login",
                json!({"mobile": mobile, "code": "66666", "clientId": client_id, "platform": 2}),
                None,
            )
            .await;
        assert_eq!(r.code(), 0, "{}", r.body);
        let res = &r.body["result"];
        let route = self
            .http
            .post(res["routeUrl"].as_str().expect("login carries routeUrl"))
            .json(&json!({"userId": res["userId"], "clientId": client_id, "token": res["token"]}))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
        assert_eq!(route["code"], 0, "{route}");
        let ws_url = route["result"]["wsUrl"].as_str().unwrap();
        ChatConn::connect(ws_url, res["token"].as_str().unwrap(), client_id, 2)
            .await
            .expect("connects")
    }
}

/// Waits until the server has a long poll parked on `token`, so a test can
/// act while it waits (no sleeps).
pub async fn until_polling(server: &TestServer, token: &str) {
    // Generous: a loaded CI machine may take seconds to land a request.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        if server
            .running
            .state
            .qr
            .get(token)
            .is_ok_and(|s| s.is_polled())
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    panic!("no long poll arrived for {token}");
}

/// Runs the real `imctl` binary with a private state directory.
pub fn imctl(state_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imctl"))
        .args(args)
        .env("IMCTL_STATE_DIR", state_dir)
        .env_remove("IMCTL_APP_SERVER")
        .env_remove("IMCTL_ADMIN_SECRET")
        .output()
        .expect("imctl runs")
}

/// Runs `imctl simulate ARGS --app-server URL --json` off the async runtime.
pub async fn simulate(state_dir: &Path, url: &str, args: &[&str]) -> Output {
    let mut all: Vec<String> = vec!["simulate".into()];
    all.extend(args.iter().map(|a| a.to_string()));
    all.extend(["--app-server".into(), url.to_owned(), "--json".into()]);
    let dir = state_dir.to_owned();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        imctl(&dir, &args)
    })
    .await
    .expect("imctl ran")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The suite runs twice (README): on SQLite, then with
/// `IMCTL_TEST_STORE=postgres` on PostgreSQL. In that pass a stack's store
/// moves to the shared test server: `--ephemeral` becomes a new database
/// (and a scratch data directory for uploads), and a `--data-dir` keeps
/// one database of its own for as long as the test process runs, so a
/// restart on the same directory finds its data again.
pub fn postgres_pass() -> bool {
    imctl::pg_local::tests_use_postgres()
}

/// The database for `data_dir` in the PostgreSQL pass (a new one for
/// `None`, an ephemeral stack), and the data directory to use.
fn test_database(data_dir: Option<&Path>) -> (String, std::path::PathBuf) {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static BY_DIR: Mutex<Option<HashMap<std::path::PathBuf, String>>> = Mutex::new(None);
    let pg = imctl::pg_local::shared().unwrap_or_else(|e| panic!("IMCTL_TEST_STORE=postgres: {e}"));
    let fresh = || pg.fresh_database().expect("a test database");
    match data_dir {
        None => (fresh(), pg.scratch_dir().expect("a scratch directory")),
        Some(dir) => {
            let mut map = BY_DIR.lock().unwrap();
            let url = map
                .get_or_insert_with(HashMap::new)
                .entry(dir.to_owned())
                .or_insert_with(fresh)
                .clone();
            (url, dir.to_owned())
        }
    }
}

/// In the PostgreSQL pass, the database the stacks on `data_dir` use.
pub fn test_database_of(data_dir: &Path) -> Option<String> {
    postgres_pass().then(|| test_database(Some(data_dir)).0)
}

/// [`postgres_pass`]: points an in-process stack at PostgreSQL.
fn on_test_store(config: &mut ServeConfig) {
    if !postgres_pass() || config.database.is_some() {
        return;
    }
    let (url, dir) = test_database(
        (!config.ephemeral)
            .then(|| {
                config
                    .data_dir
                    .clone()
                    .unwrap_or_else(imctl::store::default_data_dir)
            })
            .as_deref(),
    );
    config.ephemeral = false;
    config.database = Some(url);
    config.data_dir = Some(dir);
}

/// [`postgres_pass`]: the `imctl serve` arguments with the store moved.
pub fn with_test_store(args: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    if !postgres_pass() || args.iter().any(|a| a.starts_with("--database")) {
        return out;
    }
    if let Some(i) = out.iter().position(|a| a == "--ephemeral") {
        out.remove(i);
        let (url, dir) = test_database(None);
        out.extend([
            "--database".into(),
            url,
            "--data-dir".into(),
            dir.display().to_string(),
        ]);
    } else if let Some(i) = out.iter().position(|a| a == "--data-dir") {
        let (url, _) = test_database(Some(Path::new(&out[i + 1])));
        out.extend(["--database".into(), url]);
    }
    out
}

/// Starts the real `imctl serve ARGS` and reads the app-server URL and the
/// broker's WebSocket URL from its banner.
pub fn spawn_serve(args: &[&str]) -> (std::process::Child, String, String) {
    spawn_serve_of(Path::new(env!("CARGO_BIN_EXE_imctl")), args)
}

/// [`spawn_serve`] of another imctl binary (measurements against a build of main).
pub fn spawn_serve_of(bin: &Path, args: &[&str]) -> (std::process::Child, String, String) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(bin)
        .arg("serve")
        .args(with_test_store(args))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut app, mut ws) = (None, None);
    for line in lines.by_ref().map_while(Result::ok) {
        let line = line.trim();
        if let Some(u) = line.strip_prefix("web page") {
            app = Some(u.trim().trim_end_matches('/').to_owned());
        }
        if let Some(u) = line.strip_prefix("broker") {
            ws = u.split_whitespace().next().map(str::to_owned);
        }
        if app.is_some() && ws.is_some() {
            break;
        }
    }
    // Keep draining so the child never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (
        child,
        app.expect("banner shows the web page"),
        ws.expect("banner shows the broker"),
    )
}

/// A server-sent event stream, read event by event.
pub struct Events {
    resp: reqwest::Response,
    buf: String,
}

impl Events {
    pub async fn open(s: &TestServer, token: &str) -> reqwest::Response {
        s.get(&format!("/pc_session/{token}/events")).await
    }

    pub fn new(resp: reqwest::Response) -> Self {
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Self {
            resp,
            buf: String::new(),
        }
    }

    /// The next event's name and JSON data (comments skipped); `None` when
    /// the stream ends.
    pub async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut name, mut data) = (String::from("message"), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some((name, serde_json::from_str(&data).unwrap()));
            }
            let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), self.resp.chunk())
                .await
                .expect("an event within 10 s")
                .unwrap()?;
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

/// Resident memory of process `pid` in bytes, from `/proc/<pid>/status`.
pub fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process alive");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc status");
    kib * 1024
}

/// A spawned `imctl serve`, killed when dropped so a failing test leaves
/// nothing behind.
pub struct Served {
    pub child: std::process::Child,
    pub app: String,
    pub ws: String,
}

impl Served {
    /// Starts the real binary with `args` (add `--ephemeral` or `--data-dir`).
    pub fn start(args: &[&str]) -> Self {
        let (child, app, ws) = spawn_serve(args);
        Self { child, app, ws }
    }

    /// Starts another imctl binary (`IMCTL_MEASURE_BIN` in measurements).
    pub fn start_of(bin: &Path, args: &[&str]) -> Self {
        let (child, app, ws) = spawn_serve_of(bin, args);
        Self { child, app, ws }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn rss(&self) -> u64 {
        rss_of(self.pid())
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Logs `mobile` in with the super code on the app-server at `app` (a
/// spawned one, say); the answer's `result` (`userId`, `token`, `routeUrl`).
pub async fn login_at(app: &str, mobile: &str, client_id: &str) -> Value {
    let r: Value = reqwest::Client::new()
        .post(format!("{app}/login"))
        .json(&json!({"mobile": mobile, "code": "66666", "clientId": client_id, "platform": 2}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["code"], 0, "{r}");
    r["result"].clone()
}

/// A PNG of `width`×`height` pixels, `channels` bytes each (1 grey, 3 RGB),
/// from `pixel(x, y)`.
pub fn png(
    width: u32,
    height: u32,
    channels: usize,
    pixel: impl Fn(u32, u32) -> Vec<u8>,
) -> Vec<u8> {
    let color = match channels {
        1 => png::ColorType::Grayscale,
        3 => png::ColorType::Rgb,
        n => panic!("{n} channels"),
    };
    let data: Vec<u8> = (0..height)
        .flat_map(|y| (0..width).map(move |x| (x, y)))
        .flat_map(|(x, y)| pixel(x, y))
        .collect();
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(color);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(&data).unwrap();
    writer.finish().unwrap();
    out
}

/// `reader`'s inbox, synced from the start, holds exactly the `acked`
/// message ids, each once, with seqs 1, 2, 3… (at most 1,000 entries).
pub async fn inbox_holds_exactly(reader: &mut ChatConn, acked: &[String]) {
    let page = reader
        .request(json!({"op": "sync", "since": 0, "limit": 1000}))
        .await
        .unwrap();
    let entries = page["entries"].as_array().unwrap();
    let seqs: Vec<i64> = entries.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "gapless");
    let stored: Vec<&str> = entries
        .iter()
        .map(|e| e["message"]["msgId"].as_str().unwrap())
        .collect();
    let unique: std::collections::HashSet<&str> = stored.iter().copied().collect();
    assert_eq!(unique.len(), stored.len(), "no message stored twice");
    let acked: std::collections::HashSet<&str> = acked.iter().map(String::as_str).collect();
    assert_eq!(unique, acked, "exactly the acked messages are stored");
}
