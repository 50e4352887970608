//! `bench login`: full web QR logins (pc_session → long poll → scan →
//! confirm → answer), many at once; the confirm → long-poll answer latency.

use std::time::Instant;

use anyhow::Context;
use serde_json::json;

use super::{Report, Target, histogram, latency_json, latency_line};
use crate::client::AppClient;
use crate::wire::http::code;

pub struct LoginOpts {
    pub flows: usize,
    pub concurrency: usize,
    /// Where the phone scans and confirms, when not at the page's app-server.
    pub phone: Option<AppClient>,
}

const PHONE_BASE: u64 = 40_000_000;

pub async fn login(target: &Target, opts: &LoginOpts) -> anyhow::Result<Report> {
    anyhow::ensure!(opts.flows > 0, "--flows must be at least 1");
    let workers = opts.concurrency.clamp(1, opts.flows);
    let phone_app = opts.phone.clone().unwrap_or_else(|| target.app.clone());
    // One phone per worker.
    let mut phones = Vec::with_capacity(workers);
    for i in 0..workers {
        let mobile = super::bench_mobile(PHONE_BASE + i as u64);
        let (user, auth) = phone_app
            .login(&mobile, &target.super_code, &format!("bench-phone-{i}"), 2)
            .await
            .with_context(|| format!("phone login of {mobile}"))?;
        phones.push((user.user_id, auth));
    }
    let bar = super::progress("login");
    let started = Instant::now();
    let per_worker = opts.flows.div_ceil(workers);
    let mut tasks = Vec::new();
    let mut left = opts.flows;
    for (user_id, auth) in phones {
        let n = per_worker.min(left);
        left -= n;
        let (app, phone) = (target.app.clone(), phone_app.clone());
        tasks.push(tokio::spawn(async move {
            let mut confirm = histogram();
            let mut flow = histogram();
            for _ in 0..n {
                let t = Instant::now();
                let waited = one_flow(&app, &phone, &user_id, &auth).await?;
                let _ = confirm.record((waited.as_micros() as u64).max(1));
                let _ = flow.record((t.elapsed().as_micros() as u64).max(1));
            }
            Ok::<_, anyhow::Error>((confirm, flow))
        }));
    }
    let mut confirm = histogram();
    let mut flow = histogram();
    for t in tasks {
        let (c, f) = t.await??;
        confirm.add(c)?;
        flow.add(f)?;
    }
    let took = started.elapsed();
    bar.finish_and_clear();
    let rate = opts.flows as f64 / took.as_secs_f64();
    let json = json!({
        "scenario": "login",
        "flows": opts.flows,
        "concurrency": workers,
        "secs": took.as_secs_f64(),
        "loginsPerSec": rate.round(),
        "confirmToAnswer": latency_json(&confirm),
        "flow": latency_json(&flow),
    });
    let rows = vec![
        (
            "flows".into(),
            format!("{} ({workers} at a time)", opts.flows),
        ),
        (
            "full logins".into(),
            format!("{rate:.0}/s ({:.2} s in all)", took.as_secs_f64()),
        ),
        ("confirm → poll answer".into(), latency_line(&confirm)),
        ("whole flow".into(), latency_line(&flow)),
    ];
    Ok(Report {
        scenario: "login",
        rows,
        json,
        failure: None,
    })
}

/// One QR login, the page on `app` and the phone on `phone`; returns the
/// time from sending confirm to the long poll's answer.
async fn one_flow(
    app: &AppClient,
    phone: &AppClient,
    user_id: &str,
    auth: &str,
) -> anyhow::Result<std::time::Duration> {
    let pc = app.pc_session("bench-web", 5, "imctl bench").await?;
    let token = pc.token;
    // The web page's first poll comes back when the phone scans.
    let poll = {
        let (app, token) = (app.clone(), token.clone());
        tokio::spawn(async move { app.session_login(&token).await })
    };
    phone.scan_pc(auth, &token).await?;
    let scanned = poll.await??;
    anyhow::ensure!(
        scanned.code == code::SESSION_SCANNED,
        "after scan the poll answered {}: {}",
        scanned.code,
        scanned.message
    );
    let poll = {
        let (app, token) = (app.clone(), token.clone());
        tokio::spawn(async move {
            let answer = app.session_login(&token).await;
            (answer, Instant::now())
        })
    };
    // Give the second poll a moment to park, as a browser would have.
    tokio::task::yield_now().await;
    let sent = Instant::now();
    phone.confirm_pc(auth, &token, user_id).await?;
    let (answer, at) = poll.await?;
    let answer = answer?;
    anyhow::ensure!(
        answer.code == code::SUCCESS,
        "after confirm the poll answered {}: {}",
        answer.code,
        answer.message
    );
    Ok(at.saturating_duration_since(sent))
}
