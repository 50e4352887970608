//! imctl in other people's pipelines: `exec`, `status`, `wait-ready`,
//! completions and man pages, `imctl.toml`, fixed SMS codes.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{imctl, start, stderr, stdout};

const BIN: &str = env!("CARGO_BIN_EXE_imctl");

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Whether anything accepts connections at `url` (`http://host:port`).
fn answers(url: &str) -> bool {
    let addr = url.trim_start_matches("http://");
    std::net::TcpStream::connect(addr).is_ok()
}

/// `imctl exec ARGS` in an empty directory (no stray imctl.toml), kept
/// under cargo's target dir.
fn exec(args: &[&str]) -> Command {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("exec-cwd");
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("exec")
        .args(args)
        .env("IMCTL_BIN", BIN)
        .current_dir(dir);
    for var in [
        "IMCTL_APP_PORT",
        "IMCTL_BROKER_PORT",
        "IMCTL_DATA_DIR",
        "IMCTL_EPHEMERAL",
        "IMCTL_CONFIG",
        "IMCTL_APP_SERVER",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

#[test]
fn exec_runs_the_command_against_a_fresh_stack_and_passes_its_exit_code() {
    let script = r#""$IMCTL_BIN" status --app-server "$IMCTL_APP_SERVER" -o json \
        && echo "broker=$IMCTL_BROKER_URL route=$IMCTL_ROUTE_URL" \
        && test -n "$IMCTL_ADMIN_SECRET" && exit 7"#;
    let out = exec(&["--", "sh", "-c", script]).output().unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let text = stdout(&out);
    let mut lines = text.lines();
    let status: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(status["running"], true);
    assert!(
        status.get("database").is_none(),
        "exec is ephemeral: {status}"
    );
    let app = status["appServer"].as_str().unwrap();
    assert!(!app.ends_with(":8888"), "exec picks free ports: {app}");
    assert_eq!(
        lines.next().unwrap(),
        format!(
            "broker={} route={}",
            status["wsUrl"].as_str().unwrap(),
            status["routeUrl"].as_str().unwrap()
        )
    );
    // The command's exit code without an imctl error message, and the stack is gone.
    assert!(!stderr(&out).contains("error:"), "{}", stderr(&out));
    assert!(!answers(app), "the stack outlived exec");

    let ok = exec(&["--", "true"]).output().unwrap();
    assert_eq!(ok.status.code(), Some(0));
}

#[test]
fn exec_refuses_a_missing_command_clearly() {
    let out = exec(&["--", "no-such-command-for-imctl"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot run no-such-command-for-imctl"),
        "{}",
        stderr(&out)
    );
    let out = exec(&[]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "CMD is required");
}

/// Starts `exec -- sh -c 'echo $$; echo $IMCTL_APP_SERVER; exec sleep 60'`;
/// returns imctl, the sleeping command's pid and the app-server URL.
fn exec_sleeping() -> (std::process::Child, u32, String) {
    let mut child = exec(&[
        "--",
        "sh",
        "-c",
        "echo $$; echo $IMCTL_APP_SERVER; exec sleep 60",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let pid: u32 = lines.next().unwrap().unwrap().trim().parse().unwrap();
    let url = lines.next().unwrap().unwrap();
    (child, pid, url)
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: signalling a child process of this test.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, sig) }, 0);
}

fn gone(pid: u32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
        || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

#[test]
fn exec_on_ctrl_c_stops_the_command_and_the_stack_leaving_nothing() {
    let (mut imctl, cmd_pid, url) = exec_sleeping();
    assert!(answers(&url));
    // Only imctl gets it (as from `kill -INT`, not a terminal): it passes it on.
    signal(imctl.id(), libc::SIGINT);
    let status = imctl.wait().unwrap();
    assert_eq!(status.code(), Some(130), "128 + SIGINT");
    assert!(gone(cmd_pid), "the command outlived imctl exec");
    assert!(!answers(&url), "the stack outlived imctl exec");
}

#[test]
fn exec_passes_sigterm_on_at_once() {
    let (mut imctl, cmd_pid, url) = exec_sleeping();
    signal(imctl.id(), libc::SIGTERM);
    let status = imctl.wait().unwrap();
    assert_eq!(status.code(), Some(143), "128 + SIGTERM");
    assert!(gone(cmd_pid));
    assert!(!answers(&url));
}

#[test]
fn exec_stops_what_the_command_left_running() {
    // The command exits at once, leaving a background process.
    let out = exec(&["--", "sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let orphan: u32 = stdout(&out).trim().parse().unwrap();
    assert!(gone(orphan), "the background process outlived imctl exec");
}

#[test]
fn exec_escalates_when_the_command_ignores_ctrl_c() {
    let mut imctl = exec(&[
        "--",
        "sh",
        "-c",
        "trap '' INT; echo $$; echo $IMCTL_APP_SERVER; exec sleep 60",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(imctl.stdout.take().unwrap()).lines();
    let pid: u32 = lines.next().unwrap().unwrap().trim().parse().unwrap();
    let _url = lines.next().unwrap().unwrap();
    signal(imctl.id(), libc::SIGINT);
    // SIGINT is ignored, so SIGTERM ends it.
    assert_eq!(imctl.wait().unwrap().code(), Some(143));
    assert!(gone(pid));
}

#[tokio::test]
async fn status_describes_a_running_stack_and_fails_when_none_answers() {
    let s = start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let run = |args: Vec<String>| {
        let dir = dir.path().to_owned();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            imctl(&dir, &args)
        })
    };
    let args = |o: &str| {
        vec![
            "status".into(),
            "--app-server".into(),
            s.url.clone(),
            "-o".into(),
            o.into(),
        ]
    };

    let out = run(args("json")).await.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["running"], true);
    assert_eq!(v["appServer"], s.url);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["users"], 4);
    assert_eq!(v["connections"], 0, "the robot is not a connection");
    assert_eq!(v["qrSessions"], 0);
    assert_eq!(v["pid"], std::process::id());

    s.pc_session().await;
    let (_conn, _) = s.chat("13800000001", "status-test").await;
    let out = run(args("text")).await.unwrap();
    let text = stdout(&out);
    assert!(
        text.contains("is running") && text.contains(&s.url),
        "{text}"
    );
    assert!(
        text.contains("connections 1 · live QR sessions 1"),
        "{text}"
    );

    let out = run(args("env")).await.unwrap();
    let env = stdout(&out);
    assert!(
        env.contains(&format!("export IMCTL_APP_SERVER={}\n", s.url)),
        "{env}"
    );
    assert!(env.contains("export IMCTL_BROKER_URL=ws://"), "{env}");

    let url = s.url.clone();
    s.running.stop().await.unwrap();
    let out = run(vec![
        "status".into(),
        "--app-server".into(),
        url.clone(),
        "-o".into(),
        "json".into(),
    ])
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["running"], false);
    assert!(
        stderr(&out).contains("no imctl stack answers"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn wait_ready_waits_for_a_stack_started_later_and_times_out_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let url = format!("http://127.0.0.1:{port}");
    let waiter = Command::new(BIN)
        .args(["wait-ready", "--app-server", &url, "--timeout", "30s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut serve = Command::new(BIN)
        .args([
            "serve",
            "--ephemeral",
            "--app-port",
            &port,
            "--broker-port",
            "0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = waiter.wait_with_output().unwrap();
    let _ = serve.kill();
    let _ = serve.wait();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with(&format!("ready: {url}")),
        "{}",
        stdout(&out)
    );

    let nothing = format!("http://127.0.0.1:{}", free_port());
    let started = Instant::now();
    let out = imctl(
        dir.path(),
        &["wait-ready", "--app-server", &nothing, "--timeout", "300ms"],
    );
    assert_eq!(out.status.code(), Some(6));
    assert!(
        stderr(&out).contains("was not ready within 300ms"),
        "{}",
        stderr(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn completions_and_man_pages_are_generated() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let out = imctl(dir.path(), &["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        for word in ["imctl", "wait-ready", "simulate", "app-server"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    let out = imctl(dir.path(), &["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));

    let out = imctl(dir.path(), &["man"]);
    assert!(
        stdout(&out).starts_with(".ie"),
        "{}",
        &stdout(&out)[..100.min(stdout(&out).len())]
    );
    assert!(stdout(&out).contains(".TH imctl"));
    let pages = dir.path().join("man");
    let out = imctl(dir.path(), &["man", "--dir", pages.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    for page in [
        "imctl.1",
        "imctl-serve.1",
        "imctl-exec.1",
        "imctl-simulate-approve.1",
    ] {
        let text =
            std::fs::read_to_string(pages.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page}");
    }
}

/// `imctl serve --print-config` run in `dir` with extra environment.
fn print_config(
    dir: &std::path::Path,
    env: &[(&str, &str)],
    args: &[&str],
) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .arg("--print-config")
        .args(args)
        .current_dir(dir);
    for var in [
        "IMCTL_APP_PORT",
        "IMCTL_BROKER_PORT",
        "IMCTL_NODE",
        "IMCTL_FRIENDS_ONLY",
        "IMCTL_CONFIG",
        "IMCTL_SMS_TEST_CODES",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied()).output().unwrap()
}

#[test]
fn config_file_fills_what_flags_and_env_leave_to_defaults() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("imctl.toml"),
        r#"app-port = 9101
broker_port = 9102
node = "from-file"
friends-only = true
qr-ttl = "2m"
cors-origin = ["http://a.test", "http://b.test"]

[sms.test_codes]
"13800000009" = "123456"
"#,
    )
    .unwrap();
    let out = print_config(
        dir.path(),
        &[("IMCTL_BROKER_PORT", "9202")],
        &["--app-port", "9301"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for line in [
        "app-port = 9301  # flag",
        "broker-port = 9202  # env",
        "node = \"from-file\"  # file",
        "friends-only = true  # file",
        "qr-ttl = \"2m\"  # file",
        "cors-origin = [\"http://a.test\", \"http://b.test\"]  # file",
        "sms-ttl = \"5m\"  # default",
        "\"13800000009\" = \"123456\"",
        "# config file: imctl.toml",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    // What it prints is itself a valid config file.
    let again = tempfile::tempdir().unwrap();
    std::fs::write(again.path().join("other.toml"), &text).unwrap();
    let out = print_config(again.path(), &[], &["--config", "other.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("app-port = 9301  # file"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_flag_or_variable_overrules_a_conflicting_file_setting() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("imctl.toml"),
        "data-dir = \"./data\"\nadmin-secret = \"s3cret\"\n",
    )
    .unwrap();
    let out = print_config(dir.path(), &[], &["--ephemeral"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("ephemeral = true  # flag"), "{text}");
    assert!(text.contains("# data-dir is not set"), "{text}");
    assert!(!text.contains("s3cret"), "the secret is printed: {text}");
    let out = print_config(dir.path(), &[("IMCTL_EPHEMERAL", "true")], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    // `--config none` reads no file at all.
    let out = print_config(dir.path(), &[], &["--config", "none"]);
    assert!(
        stdout(&out).contains("# data-dir is not set"),
        "{}",
        stdout(&out)
    );
    // A global flag before the subcommand does not confuse the file's flags.
    let out = Command::new(BIN)
        .args(["--log", "serve", "serve", "--print-config"])
        .current_dir(dir.path())
        .env_remove("IMCTL_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("data-dir = \"./data\"  # file"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn bad_config_files_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("nope = 1\n", "unknown setting `nope`"),
        (
            "app-port = \"abc\"\n",
            "invalid value 'abc' for '--app-port",
        ),
        (
            "friends-only = \"yes\"\n",
            "`friends-only` in bad.toml: expected true or false",
        ),
        ("app-port = [1, 2]\n", "takes one value, not a list"),
        (
            "[sms.test_codes]\n\"123\" = \"1\"\n",
            "is not a mobile number",
        ),
        ("app-port = \n", "is not valid TOML"),
        ("config = \"x.toml\"\n", "unknown setting `config`"),
    ];
    for (content, want) in cases {
        std::fs::write(dir.path().join("bad.toml"), content).unwrap();
        let out = print_config(dir.path(), &[], &["--config", "bad.toml"]);
        assert_eq!(out.status.code(), Some(2), "{content}");
        assert!(stderr(&out).contains(want), "{content}: {}", stderr(&out));
    }
    let out = print_config(dir.path(), &[], &["--config", "missing.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("missing.toml does not exist"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn fixed_sms_codes_log_in_every_time_and_are_what_send_code_sends() {
    let s = start(&["--sms-test-code", "13800000009=123456"]).await;
    let login = |code: &'static str| json!({"mobile": "13800000009", "code": code, "clientId": "ci", "platform": 7});
    // No /send_code needed, and it keeps working.
    for _ in 0..2 {
        let r = s.post("/login", login("123456"), None).await;
        assert_eq!(r.code(), 0, "{}", r.body);
    }
    let r = s
        .post("/send_code", json!({"mobile": "13800000009"}), None)
        .await;
    assert_eq!(r.code(), 0, "{}", r.body);
    let sent = s.client.dev_sms("13800000009", None, None).await.unwrap();
    assert_eq!(sent[0].code, "123456");
    // Other mobiles still get random codes, and a wrong code is still wrong.
    let r = s.post("/login", login("654321"), None).await;
    assert_ne!(r.code(), 0);
    let r = s
        .post("/send_code", json!({"mobile": "13800000008"}), None)
        .await;
    assert_eq!(r.code(), 0);
    let other = s.client.dev_sms("13800000008", None, None).await.unwrap();
    assert_eq!(other[0].code.len(), 6);

    let dir = tempfile::tempdir().unwrap();
    let out = imctl(
        dir.path(),
        &["serve", "--print-config", "--sms-test-code", "12=1"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("is not a mobile number"),
        "{}",
        stderr(&out)
    );
}
