//! Chaos: `imctl bench chat --kill-every` SIGKILLs the spawned server under
//! load and restarts it on the same data dir; nothing acked may be lost,
//! duplicated, or leave a gap in the receivers' seqs.

use serde_json::Value;
use tokio::process::Command;

use crate::common::stderr;

async fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_imctl"))
        .arg("bench")
        .args(args)
        .env_remove("IMCTL_APP_SERVER")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn five_kills_under_load_lose_nothing_acked() {
    let started = std::time::Instant::now();
    let out = bench(&[
        "--spawn",
        "--json",
        "chat",
        "--pairs",
        "3",
        "--window",
        "4",
        "--kill-every",
        "700ms",
        "--kills",
        "5",
    ])
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("chaos: {r} in {:.1} s", started.elapsed().as_secs_f64());
    assert_eq!(r["kills"], 5, "{r}");
    // Each kill cuts every connection: the clients came back each time.
    assert!(r["reconnects"].as_u64().unwrap() >= 5 * 3, "{r}");
    assert!(r["acked"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["verified"], r["acked"], "{r}");
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["duplicates"], 0, "{r}");
    assert_eq!(r["gaps"], 0, "{r}");
    assert_eq!(r["ok"], true, "{r}");
}

#[tokio::test]
async fn kill_every_needs_a_spawned_server_on_disk() {
    for args in [
        &["chat", "--kill-every", "1s"][..],
        &["--spawn", "--ephemeral", "chat", "--kill-every", "1s"][..],
    ] {
        let out = bench(args).await;
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&out).contains("--kill-every restarts the server on its data dir"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}
