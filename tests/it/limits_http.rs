//! Issue 14, the app-server's side: every resource an HTTP client can make
//! the server hold is bounded in bytes and time, and bad settings are
//! refused at start.

use crate::common::{imctl, stderr};
use crate::snapshot::serve_fails;

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
        (&["--ephemeral", "--cors-origin", "*"][..], "'*' is refused"),
        (
            &["--ephemeral", "--cors-origin", "http://a.test/x"][..],
            "is not an origin",
        ),
    ] {
        let err = serve_fails(args);
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
