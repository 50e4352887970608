//! `bench chat` (1:1 pairs) and `bench group` (fan-out): senders keep a
//! window of sends in flight (closed loop) or send at a fixed rate (open
//! loop); receivers time each message from the send time carried in its
//! text, and count duplicates and losses.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use super::{Report, Target, Ws, connect_ws, histogram, latency_json, latency_line, micros_since};
use crate::wire::ws::{ConvType, Conversation, GroupCreateReq, Reply, Request};

pub struct ChatOpts {
    pub pairs: usize,
    pub duration: Duration,
    /// Sends in flight per sender (closed loop).
    pub window: u32,
    /// Total messages per second over all senders (open loop), instead of the window.
    pub rate: Option<f64>,
}

pub struct GroupOpts {
    pub members: usize,
    pub senders: usize,
    pub duration: Duration,
    pub window: u32,
}

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    acked: AtomicU64,
    duplicate_acks: AtomicU64,
    errors: AtomicU64,
    delivered: AtomicU64,
    duplicates: AtomicU64,
}

/// How long to wait for the last acks and deliveries after sending stops.
const DRAIN: Duration = Duration::from_secs(10);
/// How long the bench users' mobiles are spread apart between scenarios.
const CHAT_BASE: u64 = 10_000_000;
const GROUP_BASE: u64 = 20_000_000;

pub async fn chat(target: &Target, opts: &ChatOpts) -> anyhow::Result<Report> {
    anyhow::ensure!(opts.pairs > 0, "--pairs must be at least 1");
    anyhow::ensure!(opts.window > 0, "--window must be at least 1");
    if let Some(r) = opts.rate {
        anyhow::ensure!(
            r.is_finite() && r > 0.0,
            "--rate must be a positive number of messages per second"
        );
    }
    let users = target.users(CHAT_BASE, opts.pairs * 2, 50).await?;
    let counts = Arc::new(Counts::default());
    let t0 = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    for (p, pair) in users.chunks(2).enumerate() {
        let (sender, receiver) = (&pair[0], &pair[1]);
        // Each user where `/route` sends them: on a cluster, across nodes.
        let rurl = target.ws_url(receiver).await?;
        let rws = connect_ws(&rurl, &receiver.token, &format!("bench-r{p}")).await?;
        let surl = target.ws_url(sender).await?;
        let sws = connect_ws(&surl, &sender.token, &format!("bench-s{p}")).await?;
        receivers.push(tokio::spawn(receive(
            rws,
            counts.clone(),
            t0,
            stop_rx.clone(),
        )));
        let to = Conversation {
            kind: ConvType::Single,
            target: receiver.user_id.clone(),
        };
        senders.push((sws, to, p));
    }
    run_senders(
        senders,
        counts,
        t0,
        stop_tx,
        receivers,
        opts.duration,
        opts.window,
        opts.rate,
        1,
        "chat",
    )
    .await
}

pub async fn group(target: &Target, opts: &GroupOpts) -> anyhow::Result<Report> {
    anyhow::ensure!(opts.members >= 2, "--members must be at least 2");
    anyhow::ensure!(opts.window > 0, "--window must be at least 1");
    anyhow::ensure!(
        (1..=opts.members).contains(&opts.senders),
        "--senders must be between 1 and --members"
    );
    let users = target.users(GROUP_BASE, opts.members, 50).await?;
    let ws_url = target.ws_url(&users[0]).await?;
    // The first user creates the group with everyone in it.
    let (mut owner, _) =
        crate::client::chat::ChatConn::connect(&ws_url, &users[0].token, "bench-owner", 2).await?;
    let create = Request::GroupCreate(GroupCreateReq {
        name: "bench".into(),
        members: users[1..].iter().map(|u| u.user_id.clone()).collect(),
    });
    let reply = owner.call(&create).await?;
    owner.close().await;
    let Reply::GroupCreate { group } = reply else {
        anyhow::bail!("group.create answered {reply:?}");
    };
    let group = group.id;
    let counts = Arc::new(Counts::default());
    let t0 = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    for (i, u) in users.iter().enumerate() {
        let url = target.ws_url(u).await?;
        let ws = connect_ws(&url, &u.token, &format!("bench-m{i}")).await?;
        if i < opts.senders {
            // A sender also receives the others' messages: a second connection.
            let sws = connect_ws(&url, &u.token, &format!("bench-ms{i}")).await?;
            let to = Conversation {
                kind: ConvType::Group,
                target: group.clone(),
            };
            senders.push((sws, to, i));
        }
        receivers.push(tokio::spawn(receive(
            ws,
            counts.clone(),
            t0,
            stop_rx.clone(),
        )));
    }
    // Each message reaches every member's receiving connection; a sender's
    // own receiving connection gets it too (only the sending one is skipped).
    let fan_out = opts.members as u64;
    run_senders(
        senders,
        counts,
        t0,
        stop_tx,
        receivers,
        opts.duration,
        opts.window,
        None,
        fan_out,
        "group",
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn run_senders(
    senders: Vec<(Ws, Conversation, usize)>,
    counts: Arc<Counts>,
    t0: Instant,
    stop_tx: watch::Sender<bool>,
    receivers: Vec<tokio::task::JoinHandle<Histogram<u64>>>,
    duration: Duration,
    window: u32,
    rate: Option<f64>,
    fan_out: u64,
    scenario: &'static str,
) -> anyhow::Result<Report> {
    let n = senders.len();
    let started = Instant::now();
    let stop_at = started + duration;
    let interval = rate.map(|r| Duration::from_secs_f64(n as f64 / r));
    // Bench users are the same on every run: clientMsgIds unique to this run
    // keep a rerun's sends from being taken for retries of the last run's.
    let run: Arc<str> = crate::token::random_token(4).into();
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|(ws, conv, p)| {
            // Open loop: senders start spread over one interval, not in phase.
            let first = interval.map_or(Duration::ZERO, |iv| iv.mul_f64(p as f64 / n as f64));
            let sender = Sender {
                p,
                run: run.clone(),
                first,
                window,
                interval,
                stop_at,
            };
            tokio::spawn(send_loop(ws, conv, sender, counts.clone(), t0))
        })
        .collect();
    let bar = super::progress(scenario);
    let mut last = (Instant::now(), 0u64);
    while Instant::now() < stop_at {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let d = counts.delivered.load(Ordering::Relaxed);
        let rate = (d - last.1) as f64 / last.0.elapsed().as_secs_f64();
        bar.set_message(format!("{d} delivered, {rate:.0}/s"));
        last = (Instant::now(), d);
    }
    let delivered_in_window = counts.delivered.load(Ordering::Relaxed);
    let elapsed = started.elapsed();
    let mut ack_hist = super::histogram();
    for t in tasks {
        ack_hist.add(t.await??)?;
    }
    // Wait for deliveries to catch up with what was acked, then stop receivers.
    let expected = counts.acked.load(Ordering::Relaxed) * fan_out;
    let drain_until = Instant::now() + DRAIN;
    while counts.delivered.load(Ordering::Relaxed) < expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(true);
    let mut delivery_hist = histogram();
    for r in receivers {
        delivery_hist.add(r.await?)?;
    }
    bar.finish_and_clear();
    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let (sent, acked, delivered) = (c(&counts.sent), c(&counts.acked), c(&counts.delivered));
    let lost = (acked * fan_out).saturating_sub(delivered);
    let throughput = delivered_in_window as f64 / elapsed.as_secs_f64();
    let mode = match rate {
        Some(r) => format!("open loop, {r:.0} msg/s"),
        None => format!("closed loop, window {window}"),
    };
    let json = json!({
        "scenario": scenario,
        "senders": n,
        "mode": mode,
        "durationSecs": elapsed.as_secs_f64(),
        "sent": sent,
        "acked": acked,
        "duplicateAcks": c(&counts.duplicate_acks),
        "errors": c(&counts.errors),
        "delivered": delivered,
        "lost": lost,
        "duplicates": c(&counts.duplicates),
        "deliveredPerSec": throughput.round(),
        "sendToAck": latency_json(&ack_hist),
        "sendToDelivery": latency_json(&delivery_hist),
    });
    let rows = vec![
        ("senders".into(), format!("{n} ({mode})")),
        ("duration".into(), format!("{:.1} s", elapsed.as_secs_f64())),
        (
            "sent / acked".into(),
            format!(
                "{sent} / {acked} ({} errors, {} duplicate acks)",
                c(&counts.errors),
                c(&counts.duplicate_acks)
            ),
        ),
        (
            "delivered".into(),
            format!("{delivered} (expected {})", acked * fan_out),
        ),
        (
            "lost / duplicates".into(),
            format!("{lost} / {}", c(&counts.duplicates)),
        ),
        ("throughput".into(), format!("{throughput:.0} deliveries/s")),
        ("send → ack".into(), latency_line(&ack_hist)),
        ("send → delivery".into(), latency_line(&delivery_hist)),
    ];
    Ok(Report {
        scenario,
        rows,
        json,
        failure: None,
    })
}

#[derive(Deserialize)]
struct Frame<'a> {
    op: &'a str,
    #[serde(default)]
    id: Option<u64>,
    #[serde(default)]
    duplicate: bool,
    /// A stored message in `msg` pushes, a string in `error` replies: kept
    /// raw and parsed only for `msg` (an untagged enum would buffer it).
    #[serde(default, borrow)]
    message: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct MsgBody<'a> {
    #[serde(borrow)]
    content: Content<'a>,
}

#[derive(Deserialize)]
struct Content<'a> {
    #[serde(default)]
    text: Option<&'a str>,
}

/// What one sender does.
struct Sender {
    p: usize,
    run: Arc<str>,
    /// Open loop: the delay before the first send.
    first: Duration,
    window: u32,
    interval: Option<Duration>,
    stop_at: Instant,
}

/// One sender: keeps `window` sends in flight, or sends every `interval`;
/// returns the send→ack histogram.
async fn send_loop(
    ws: Ws,
    conv: Conversation,
    sender: Sender,
    counts: Arc<Counts>,
    t0: Instant,
) -> anyhow::Result<Histogram<u64>> {
    let Sender {
        p,
        run,
        first,
        window,
        interval,
        stop_at,
    } = sender;
    let (mut sink, mut stream) = ws.split();
    let mut hist = histogram();
    // Send time (µs since t0) by request id.
    let mut sent_at: Vec<u64> = Vec::new();
    let mut in_flight = 0u32;
    let mut unflushed = false;
    let mut next_due = tokio::time::Instant::now() + first;
    // Send frames are formatted by hand around this, not built as a
    // `Request` each: the load generator must cost less than the server.
    let conv = serde_json::to_string(&conv).expect("conversations serialize");
    let drain_until = stop_at + DRAIN;
    loop {
        let now = Instant::now();
        let sending = now < stop_at;
        let can_send = sending
            && match interval {
                Some(_) => tokio::time::Instant::now() >= next_due,
                None => in_flight < window,
            };
        if can_send {
            // Open loop: time from when the message was due, not when it went out.
            let at = match interval {
                Some(_) => micros_since(t0)
                    .min((next_due.into_std().saturating_duration_since(t0)).as_micros() as u64),
                None => micros_since(t0),
            };
            let n = sent_at.len() as u64;
            sent_at.push(at);
            let frame = format!(
                r#"{{"id":{},"op":"send","conv":{conv},"content":{{"type":"text","text":"b {p} {n} {at}"}},"clientMsgId":"b{run}-{p}-{n}"}}"#,
                n + 1
            );
            // Queued; flushed with whatever else is ready before waiting.
            in_time(drain_until, sink.feed(Message::text(frame))).await?;
            unflushed = true;
            counts.sent.fetch_add(1, Ordering::Relaxed);
            in_flight += 1;
            if let Some(iv) = interval {
                next_due += iv;
            }
            continue;
        }
        if unflushed {
            in_time(drain_until, sink.flush()).await?;
            unflushed = false;
        }
        if !sending && in_flight == 0 {
            break;
        }
        let wake = if sending && interval.is_some() {
            next_due
        } else {
            tokio::time::Instant::from_std(drain_until)
        };
        tokio::select! {
            frame = stream.next() => {
                let Some(frame) = frame else { break };
                let Message::Text(t) = frame? else { continue };
                let Ok(f) = serde_json::from_str::<Frame>(t.as_str()) else { continue };
                if let Some(id) = f.id {
                    in_flight = in_flight.saturating_sub(1);
                    match f.op {
                        // A duplicate means this run's ids collided with stored
                        // ones: not a new message, so not expected at receivers.
                        "ack" if f.duplicate => {
                            counts.duplicate_acks.fetch_add(1, Ordering::Relaxed);
                        }
                        "ack" => {
                            counts.acked.fetch_add(1, Ordering::Relaxed);
                            let sent = id.checked_sub(1).and_then(|i| sent_at.get(i as usize));
                            if let Some(at) = sent {
                                hist.saturating_record(micros_since(t0).saturating_sub(*at).max(1));
                            }
                        }
                        _ => {
                            counts.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(wake) => {
                if Instant::now() >= drain_until {
                    break;
                }
            }
        }
    }
    let _ = sink.close().await;
    Ok(hist)
}

/// A server that stops reading must not hold the bench past its deadline.
async fn in_time<T>(
    deadline: Instant,
    io: impl Future<Output = Result<T, tokio_tungstenite::tungstenite::Error>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout_at(deadline.into(), io).await {
        Ok(done) => Ok(done?),
        Err(_) => {
            anyhow::bail!("the broker stopped reading: a send did not go out by the drain deadline")
        }
    }
}

/// One receiving connection: times and counts bench messages until stopped.
async fn receive(
    ws: Ws,
    counts: Arc<Counts>,
    t0: Instant,
    mut stop: watch::Receiver<bool>,
) -> Histogram<u64> {
    let (mut sink, mut stream) = ws.split();
    let mut hist = histogram();
    let mut seen: HashSet<(u32, u64)> = HashSet::new();
    loop {
        tokio::select! {
            frame = stream.next() => {
                let Some(Ok(Message::Text(t))) = frame else {
                    if frame.is_none() { break } else { continue }
                };
                let Ok(f) = serde_json::from_str::<Frame>(t.as_str()) else { continue };
                if f.op != "msg" {
                    continue;
                }
                let Some(Ok(body)) = f.message.map(|m| serde_json::from_str::<MsgBody>(m.get())) else { continue };
                let Some(text) = body.content.text else { continue };
                let mut parts = text.split(' ').skip(1).map(|x| x.parse::<u64>().ok());
                let (Some(Some(p)), Some(Some(n)), Some(Some(at))) = (parts.next(), parts.next(), parts.next()) else {
                    continue;
                };
                if !seen.insert((p as u32, n)) {
                    counts.duplicates.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                counts.delivered.fetch_add(1, Ordering::Relaxed);
                hist.saturating_record(micros_since(t0).saturating_sub(at).max(1));
            }
            _ = stop.changed() => break,
        }
    }
    let _ = sink.close().await;
    hist
}
