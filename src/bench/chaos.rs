//! `bench chat --kill-every`: 1:1 chat under load while the spawned server
//! is SIGKILLed and restarted on the same data directory. Senders reconnect
//! and retry what was not acked (same `clientMsgId`, as a real client does);
//! at the end every receiver's `sync` must hold every acked message exactly
//! once, with gapless seqs.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use super::{Report, Target, connect_ws};
use crate::client::chat::ChatConn;
use crate::wire::http::LoginResult;
use crate::wire::ws::{ConvType, Conversation, Incoming, Reply, Request, SyncReq};

pub struct ChaosOpts {
    pub pairs: usize,
    /// Sends in flight per sender.
    pub window: u32,
    pub kill_every: Duration,
    pub kills: u32,
}

/// How long senders get, after the last restart, to have their last sends acked.
const DRAIN: Duration = Duration::from_secs(20);
/// Apart from `bench chat`'s users, so the two never share an inbox.
const CHAOS_BASE: u64 = 40_000_000;

/// What one sender saw.
#[derive(Default)]
struct Sent {
    /// Messages sent (each once, however often retried).
    sent: u64,
    /// clientMsgId → msgId of every acked message.
    acked: HashMap<String, String>,
    /// Sends refused with an `error` frame (not stored, not expected).
    errors: u64,
    /// Connections opened after the first.
    reconnects: u64,
    /// Sends resent after a reconnect (their ack had not come).
    retried: u64,
    /// Retries the server had already stored before it died.
    duplicate_acks: u64,
    /// Sends still unacked when the drain deadline passed.
    unconfirmed: u64,
}

pub async fn chaos(target: &mut Target, opts: &ChaosOpts) -> anyhow::Result<Report> {
    anyhow::ensure!(opts.pairs > 0, "--pairs must be at least 1");
    anyhow::ensure!(opts.window > 0, "--window must be at least 1");
    anyhow::ensure!(opts.kills > 0, "--kills must be at least 1");
    anyhow::ensure!(
        target.can_restart(),
        "--kill-every restarts the server on its data dir: use it with --spawn, without --ephemeral"
    );
    let users = target.users(CHAOS_BASE, opts.pairs * 2, 50).await?;
    // The login's routeUrl names the first incarnation's port: ask /config.
    let probe = LoginResult {
        route_url: None,
        ..users[0].clone()
    };
    let (url_tx, url_rx) = watch::channel(target.ws_url(&probe).await?);
    let (stop_tx, stop_rx) = watch::channel(false);
    let run: String = crate::token::random_token(4);
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for (p, pair) in users.chunks(2).enumerate() {
        let (sender, receiver) = (pair[0].clone(), pair[1].clone());
        receivers.push(tokio::spawn(drain_pushes(
            receiver.token.clone(),
            format!("chaos-r{p}"),
            url_rx.clone(),
            stop_rx.clone(),
        )));
        let to = serde_json::to_string(&Conversation {
            kind: ConvType::Single,
            target: receiver.user_id.clone(),
        })
        .expect("conversations serialize");
        senders.push(tokio::spawn(send_loop(
            sender,
            to,
            format!("c{run}-{p}-"),
            opts.window,
            url_rx.clone(),
            stop_rx.clone(),
        )));
    }

    let bar = super::progress("chaos");
    let started = Instant::now();
    let mut downtime = Duration::ZERO;
    for k in 1..=opts.kills {
        tokio::time::sleep(opts.kill_every).await;
        let t = Instant::now();
        target.kill_and_restart().await?;
        url_tx.send_replace(target.ws_url(&probe).await?);
        downtime += t.elapsed();
        bar.set_message(format!("{k} kills"));
    }
    // Load on the last incarnation too, then stop sending.
    tokio::time::sleep(opts.kill_every).await;
    let _ = stop_tx.send(true);
    let mut results = Vec::new();
    for s in senders {
        results.push(s.await??);
    }
    for r in receivers {
        r.await?;
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();

    // Every receiver's inbox, read as a client catching up would.
    let ws_url = url_rx.borrow().clone();
    let mut check = Check::default();
    for (p, (pair, sent)) in users.chunks(2).zip(&results).enumerate() {
        let inbox = sync_all(&ws_url, &pair[1], &format!("chaos-v{p}")).await?;
        check.inbox(&inbox, &format!("c{run}-{p}-"), &sent.acked);
    }

    let total = |f: fn(&Sent) -> u64| results.iter().map(f).sum::<u64>();
    let (sent, acked) = (total(|s| s.sent), total(|s| s.acked.len() as u64));
    let (errors, reconnects) = (total(|s| s.errors), total(|s| s.reconnects));
    let unconfirmed = total(|s| s.unconfirmed);
    let (retried, duplicate_acks) = (total(|s| s.retried), total(|s| s.duplicate_acks));
    let ok = check.lost == 0 && check.duplicates == 0 && check.gaps == 0 && acked > 0;
    let json = json!({
        "scenario": "chaos",
        "pairs": opts.pairs,
        "killEverySecs": opts.kill_every.as_secs_f64(),
        "kills": opts.kills,
        "durationSecs": elapsed.as_secs_f64(),
        "restartSecs": downtime.as_secs_f64() / opts.kills as f64,
        "sent": sent,
        "acked": acked,
        "verified": check.verified,
        "lost": check.lost,
        "duplicates": check.duplicates,
        "gaps": check.gaps,
        "storedWithoutAck": check.stored_unacked,
        "unconfirmed": unconfirmed,
        "errors": errors,
        "reconnects": reconnects,
        "retried": retried,
        "duplicateAcks": duplicate_acks,
        "ok": ok,
    });
    let rows = vec![
        (
            "kills".into(),
            format!(
                "{} (SIGKILL every {:?}; restart took {:.2} s on average)",
                opts.kills,
                opts.kill_every,
                downtime.as_secs_f64() / opts.kills as f64
            ),
        ),
        (
            "senders".into(),
            format!(
                "{} (window {}), {reconnects} reconnects, {retried} sends retried ({duplicate_acks} had been stored: acked as duplicates)",
                opts.pairs, opts.window
            ),
        ),
        (
            "sent / acked".into(),
            format!("{sent} / {acked} ({errors} errors, {unconfirmed} never confirmed)"),
        ),
        (
            "verified in sync".into(),
            format!(
                "{} of {acked} acked ({} stored without an ack: their ack died with the server)",
                check.verified, check.stored_unacked
            ),
        ),
        (
            "lost / duplicates / gaps".into(),
            format!("{} / {} / {}", check.lost, check.duplicates, check.gaps),
        ),
    ];
    let failure = (!ok).then(|| {
        if acked == 0 {
            "no message was acked".to_owned()
        } else {
            format!(
                "{} acked messages lost, {} duplicates, {} seq gaps in the receivers' inboxes",
                check.lost, check.duplicates, check.gaps
            )
        }
    });
    Ok(Report {
        scenario: "chat --kill-every",
        rows,
        json,
        failure,
    })
}

/// The verdict over the receivers' inboxes.
#[derive(Default)]
struct Check {
    verified: u64,
    lost: u64,
    duplicates: u64,
    gaps: u64,
    stored_unacked: u64,
}

impl Check {
    /// `inbox` is `(seq, clientMsgId, msgId)` in sync order; this run's
    /// messages from this pair have clientMsgIds starting with `prefix`.
    fn inbox(
        &mut self,
        inbox: &[(i64, Option<String>, String)],
        prefix: &str,
        acked: &HashMap<String, String>,
    ) {
        let mut expected = 1;
        for (seq, ..) in inbox {
            if *seq != expected {
                self.gaps += 1;
            }
            expected = seq + 1;
        }
        let mut stored: HashMap<&str, Vec<&str>> = HashMap::new();
        for (_, cmid, msg_id) in inbox {
            if let Some(c) = cmid.as_deref().filter(|c| c.starts_with(prefix)) {
                stored.entry(c).or_default().push(msg_id);
            }
        }
        for (cmid, msg_ids) in &stored {
            self.duplicates += msg_ids.len() as u64 - 1;
            if !acked.contains_key(*cmid) {
                self.stored_unacked += 1;
            }
        }
        for (cmid, msg_id) in acked {
            match stored.get(cmid.as_str()) {
                Some(ids) if ids.contains(&msg_id.as_str()) => self.verified += 1,
                _ => self.lost += 1,
            }
        }
    }
}

/// One sender: keeps `window` sends in flight; when the connection dies it
/// reconnects to the current URL and resends what was not acked.
async fn send_loop(
    user: LoginResult,
    conv: String,
    prefix: String,
    window: u32,
    urls: watch::Receiver<String>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Sent> {
    let mut out = Sent::default();
    // Sent but not acked, by message number.
    let mut unacked: BTreeMap<u64, ()> = BTreeMap::new();
    let mut next = 0u64;
    let mut drain_until = None;
    let mut first = true;
    let frame = |n: u64| {
        format!(
            r#"{{"id":{},"op":"send","conv":{conv},"content":{{"type":"text","text":"chaos {n}"}},"clientMsgId":"{prefix}{n}"}}"#,
            n + 1
        )
    };
    'connection: loop {
        let stopping = *stop.borrow();
        if stopping && drain_until.is_none() {
            drain_until = Some(Instant::now() + DRAIN);
        }
        if stopping && unacked.is_empty() || drain_until.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let url = urls.borrow().clone();
        let Ok(ws) = connect_ws(&url, &user.token, &format!("chaos-s-{prefix}")).await else {
            // The server is down: try again (the URL changes when it is back).
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if !first {
            out.reconnects += 1;
        }
        first = false;
        let (mut sink, mut stream) = ws.split();
        // Retries first, with the same clientMsgId: stored ones are acked as duplicates.
        out.retried += unacked.len() as u64;
        for n in unacked.keys() {
            if sink.feed(Message::text(frame(*n))).await.is_err() {
                continue 'connection;
            }
        }
        if sink.flush().await.is_err() {
            continue;
        }
        loop {
            let stopping = *stop.borrow();
            if stopping && drain_until.is_none() {
                drain_until = Some(Instant::now() + DRAIN);
            }
            if stopping && unacked.is_empty() {
                let _ = sink.close().await;
                break 'connection;
            }
            if !stopping && unacked.len() < window as usize {
                unacked.insert(next, ());
                out.sent += 1;
                let f = frame(next);
                next += 1;
                if sink.send(Message::text(f)).await.is_err() {
                    continue 'connection;
                }
                continue;
            }
            let deadline =
                drain_until.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                frame = stream.next() => {
                    let Some(Ok(frame)) = frame else { continue 'connection };
                    let Message::Text(t) = frame else { continue };
                    let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else { continue };
                    let Some(n) = v["id"].as_u64().and_then(|id| id.checked_sub(1)) else { continue };
                    if unacked.remove(&n).is_none() {
                        continue;
                    }
                    match Incoming::read(v) {
                        Ok(Incoming::Reply(_, Reply::Ack { msg_id, duplicate, .. })) => {
                            if duplicate {
                                out.duplicate_acks += 1;
                            }
                            out.acked.insert(format!("{prefix}{n}"), msg_id);
                        }
                        _ => out.errors += 1,
                    }
                }
                _ = stop.changed(), if !stopping => {}
                _ = tokio::time::sleep_until(deadline.into()) => break 'connection,
            }
        }
    }
    out.unconfirmed = unacked.len() as u64;
    Ok(out)
}

/// A receiver that stays connected (reconnecting after each kill) and
/// reads its pushes, as an app in the foreground does.
async fn drain_pushes(
    token: String,
    client_id: String,
    urls: watch::Receiver<String>,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let url = urls.borrow().clone();
        let Ok(mut ws) = connect_ws(&url, &token, &client_id).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        loop {
            tokio::select! {
                frame = ws.next() => if !matches!(frame, Some(Ok(_))) { break },
                _ = stop.changed() => {
                    let _ = ws.close(None).await;
                    return;
                }
            }
        }
    }
}

/// The user's whole inbox by `sync`, following `more` page by page:
/// `(seq, clientMsgId, msgId)` per entry.
async fn sync_all(
    ws_url: &str,
    user: &LoginResult,
    client_id: &str,
) -> anyhow::Result<Vec<(i64, Option<String>, String)>> {
    let (mut conn, _) = ChatConn::connect(ws_url, &user.token, client_id, 2).await?;
    let mut out = Vec::new();
    let mut since = 0;
    loop {
        let sync = Request::Sync(SyncReq {
            since,
            limit: Some(1000),
        });
        let (entries, more) = match conn.call(&sync).await? {
            Reply::Synced { entries, more, .. } => (entries, more),
            other => anyhow::bail!("sync answered {other:?}"),
        };
        let empty = entries.is_empty();
        for e in entries {
            out.push((e.seq, e.message.client_msg_id, e.message.msg_id));
            since = e.seq;
        }
        if empty || !more {
            break;
        }
    }
    conn.close().await;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: i64, cmid: &str, msg_id: &str) -> (i64, Option<String>, String) {
        (seq, Some(cmid.to_owned()), msg_id.to_owned())
    }

    #[test]
    fn the_check_finds_losses_duplicates_and_gaps() {
        let acked: HashMap<String, String> = [("p-0", "m1"), ("p-1", "m2"), ("p-2", "m3")]
            .into_iter()
            .map(|(c, m)| (c.to_owned(), m.to_owned()))
            .collect();
        let mut ok = Check::default();
        ok.inbox(
            &[
                entry(1, "p-0", "m1"),
                entry(2, "p-1", "m2"),
                entry(3, "p-2", "m3"),
                entry(4, "p-3", "m4"),
                entry(5, "other-0", "m5"),
            ],
            "p-",
            &acked,
        );
        assert_eq!(
            (
                ok.verified,
                ok.lost,
                ok.duplicates,
                ok.gaps,
                ok.stored_unacked
            ),
            (3, 0, 0, 0, 1)
        );
        let mut bad = Check::default();
        bad.inbox(
            &[
                entry(1, "p-0", "m1"),
                entry(3, "p-0", "m9"),
                entry(4, "p-2", "m3"),
            ],
            "p-",
            &acked,
        );
        assert_eq!(
            (bad.verified, bad.lost, bad.duplicates, bad.gaps),
            (2, 1, 1, 1)
        );
    }
}
