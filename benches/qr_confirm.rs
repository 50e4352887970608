//! Time from sending `confirm_pc` to the waiting `/session_login` long poll
//! answering, over real HTTP on loopback. Run: `cargo bench --bench qr_confirm`.
//! (`imctl bench login` will grow out of this.)

use std::time::{Duration, Instant};

use imctl::client::AppClient;
use imctl::config::ServeConfig;
use imctl::server;

const FLOWS: usize = 2000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let running = server::start(&ServeConfig::ephemeral_on_free_ports(&[])).await?;
    let client = AppClient::new(&running.app_url());
    let (_, phone) = client
        .login("13800000001", "66666", "bench-phone", 2)
        .await?;

    let mut after_confirm = Vec::with_capacity(FLOWS);
    let mut whole_flow = Vec::with_capacity(FLOWS);
    let started = Instant::now();
    for _ in 0..FLOWS {
        let flow = Instant::now();
        let token = client.pc_session("bench-pc", 5, "bench").await?.token;
        client.scan_pc(&phone, &token).await?;
        // The scan is reported first (code 9); then the poll that waits for confirm.
        assert_eq!(client.session_login(&token).await?.code, 9);
        let poll = {
            let (client, token) = (client.clone(), token.clone());
            tokio::spawn(async move {
                let answer = client.session_login(&token).await;
                (answer, Instant::now())
            })
        };
        while !running.state.qr.get(&token).is_ok_and(|s| s.is_polled()) {
            tokio::task::yield_now().await;
        }
        // Timed from sending confirm, so the number includes confirm's own
        // round trip: an upper bound of the wake-up latency.
        let confirmed = Instant::now();
        client.confirm_pc(&phone, &token, "alice").await?;
        let (answer, answered) = poll.await?;
        assert_eq!(answer?.code, 0);
        after_confirm.push(answered.saturating_duration_since(confirmed));
        whole_flow.push(flow.elapsed());
    }
    let total = started.elapsed();
    report("confirm_pc sent → long poll answered", &mut after_confirm);
    report("whole flow (sequential, one client)", &mut whole_flow);
    println!(
        "{FLOWS} flows in {total:.2?}: {:.0} flows/s sequential",
        FLOWS as f64 / total.as_secs_f64()
    );
    running.stop().await
}

fn report(what: &str, samples: &mut [Duration]) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    println!(
        "{what}: p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
        at(0.50),
        at(0.90),
        at(0.99),
        samples[samples.len() - 1]
    );
}
