//! `imctl bench` smoke runs: every scenario works end to end and loses
//! nothing. Numbers are not checked here (shared, noisy machines); they
//! live in docs/PERFORMANCE.md.

use serde_json::Value;
use tokio::process::Command;

use crate::common::stderr;

async fn bench(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_imctl"))
        .args(["bench", "--spawn", "--json"])
        .args(args)
        .env_remove("IMCTL_APP_SERVER")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "bench {args:?}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {:?}", out.stdout))
}

#[tokio::test]
async fn chat_delivers_everything_it_acks() {
    // On disk (the default for --spawn), closed loop.
    let r = bench(&[
        "chat",
        "--pairs",
        "3",
        "--duration",
        "500ms",
        "--window",
        "8",
    ])
    .await;
    assert!(r["acked"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["acked"], r["sent"], "{r}");
    assert_eq!(r["delivered"], r["acked"], "{r}");
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["duplicates"], 0, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(r["sendToDelivery"]["count"], r["delivered"], "{r}");
    // Open loop at a rate.
    let r = bench(&[
        "--ephemeral",
        "chat",
        "--pairs",
        "2",
        "--duration",
        "500ms",
        "--rate",
        "100",
    ])
    .await;
    assert!(r["sent"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["delivered"], r["acked"], "{r}");
}

#[tokio::test]
async fn a_rerun_on_the_same_data_is_not_taken_for_retries() {
    // Bench users are the same every run; their sends must still be new messages.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    for _ in 0..2 {
        let r = bench(&[
            "--data-dir",
            data,
            "chat",
            "--pairs",
            "2",
            "--duration",
            "300ms",
            "--window",
            "4",
        ])
        .await;
        assert!(r["acked"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(r["duplicateAcks"], 0, "{r}");
        assert_eq!(r["lost"], 0, "{r}");
        assert_eq!(r["delivered"], r["acked"], "{r}");
    }
}

#[tokio::test]
async fn group_reaches_every_member() {
    let r = bench(&[
        "--ephemeral",
        "group",
        "--members",
        "6",
        "--senders",
        "2",
        "--duration",
        "500ms",
    ])
    .await;
    let acked = r["acked"].as_u64().unwrap();
    assert!(acked > 0, "{r}");
    assert_eq!(r["delivered"].as_u64().unwrap(), acked * 6, "{r}");
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["duplicates"], 0, "{r}");
}

#[tokio::test]
async fn connect_holds_connections_and_reads_server_memory() {
    let r = bench(&[
        "--ephemeral",
        "connect",
        "--connections",
        "30",
        "--hold",
        "100ms",
    ])
    .await;
    assert_eq!(r["connections"], 30, "{r}");
    assert_eq!(r["connect"]["count"], 30, "{r}");
    assert!(r["serverRssAfter"].as_u64().unwrap() > 1_000_000, "{r}");
}

#[tokio::test]
async fn a_churning_soak_samples_server_memory() {
    let r = bench(&[
        "--ephemeral",
        "connect",
        "--connections",
        "20",
        "--concurrency",
        "5",
        "--hold",
        "3s",
        "--churn",
        "--sample-every",
        "500ms",
    ])
    .await;
    assert_eq!(r["churn"], true, "{r}");
    assert!(r["churned"].as_u64().unwrap() > 5, "{r}");
    assert_eq!(r["churnErrors"], 0, "{r}");
    assert_eq!(r["heldClosedByServer"], 0, "{r}");
    let samples = r["rssSamples"].as_array().unwrap();
    assert!(samples.len() >= 5, "{r}");
    for s in samples {
        assert!(s[1].as_u64().unwrap() > 1_000_000, "{r}");
    }
    // Held to the end: the last sample is taken at --hold.
    assert!(samples.last().unwrap()[0].as_f64().unwrap() >= 3.0, "{r}");
    assert!(r["rssAfterWarmUp"].as_u64().unwrap() > 0, "{r}");
    assert!(r["rssGrowthAfterWarmUp"].is_i64(), "{r}");
}

#[tokio::test]
async fn login_completes_every_flow() {
    let r = bench(&[
        "--ephemeral",
        "login",
        "--flows",
        "12",
        "--concurrency",
        "4",
    ])
    .await;
    assert_eq!(r["flows"], 12, "{r}");
    assert_eq!(r["confirmToAnswer"]["count"], 12, "{r}");
    assert_eq!(r["flow"]["count"], 12, "{r}");
}

#[tokio::test]
async fn bad_parameters_are_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_imctl"))
        .args([
            "bench",
            "--spawn",
            "--ephemeral",
            "group",
            "--members",
            "3",
            "--senders",
            "5",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--senders must be between 1 and --members"),
        "{}",
        stderr(&out)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_imctl"))
        .args(["bench", "--app-server", "http://127.0.0.1:1", "login"])
        .output()
        .await
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("does not answer /config"),
        "{}",
        stderr(&out)
    );
}
