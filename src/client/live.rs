//! A chat connection that stays up: logs in (or reuses a saved session),
//! asks `/route`, connects, syncs from the last seq this device showed,
//! reconnects with backoff when the connection drops, and keeps messages
//! sent while disconnected until it is back (same `clientMsgId`, so the
//! server stores each once). `imctl client` is built on it.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::app::{AppClient, ClientError, Failure, exit};
use super::chat::{ChatConn, ChatError, unexpected};
use super::chat_view::Outgoing;
use super::login;
use super::profiles::{ClientSession, ClientSessions};
use crate::wire::http::code as api_code;
use crate::wire::ids::now_ms;
use crate::wire::ws::{
    Ack, InboxEntry, Incoming, Push, RecvReq, Reply, Request, RouteRequest, SendReq, SyncReq,
    close, code,
};

/// How to log in again when the saved token stops working.
#[derive(Debug, Clone)]
pub enum Relogin {
    /// By SMS, as a phone does (the code from the dev outbox, or this one).
    Sms {
        mobile: String,
        code: Option<String>,
    },
    /// Logged in by QR: only a person with a phone can do it again.
    Qr,
}

/// What happened on the connection.
#[derive(Debug)]
pub enum Event {
    /// (Re)connected and synced: the messages missed meanwhile, oldest first.
    Connected {
        entries: Vec<InboxEntry>,
        /// The server's store was reset (its head is behind what we showed):
        /// we started again from seq 0.
        reset: bool,
        reconnect: bool,
    },
    /// A server push.
    Push(Push),
    /// An `error` that answers no request waiting for it (a frame the
    /// broker could not read far enough to find its `id`, say).
    Error { code: i32, message: String },
    /// A frame this client cannot read; `seq` when it is a `msg` push.
    Unreadable {
        op: String,
        seq: Option<i64>,
        error: String,
    },
    /// The connection dropped; reconnecting after `retry_in`.
    Lost { reason: String, retry_in: Duration },
    /// A reconnect attempt failed; trying again after `retry_in`.
    RetryFailed { reason: String, retry_in: Duration },
}

/// Why connecting failed.
enum LinkError {
    /// The token is no longer good: log in again.
    NeedLogin(String),
    /// Worth retrying (the server is down, say).
    Retry(anyhow::Error),
    /// Not worth retrying (banned).
    Fatal(anyhow::Error),
}

/// The highest seq below which every inbox entry has been seen.
#[derive(Debug, Default)]
struct Seqs {
    done: i64,
    ahead: BTreeSet<i64>,
}

impl Seqs {
    fn see(&mut self, seq: i64) {
        if seq <= self.done {
            return;
        }
        self.ahead.insert(seq);
        while self.ahead.remove(&(self.done + 1)) {
            self.done += 1;
        }
        // A gap that never fills (shouldn't happen) must not grow without end:
        // the next sync fills from `done`.
        if self.ahead.len() > 10_000 {
            self.ahead.clear();
        }
    }
}

const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// A connection that held this long starts the next backoff from the minimum.
const STABLE: Duration = Duration::from_secs(10);
/// Silence after which the client pings, and then gives the link up.
const KEEPALIVE: Duration = Duration::from_secs(30);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
const SYNC_PAGE: u32 = 200;

pub struct Live {
    app: AppClient,
    saved: ClientSessions,
    session: ClientSession,
    relogin: Relogin,
    /// A WebSocket URL that overrides `/route`'s answer.
    broker: Option<String>,
    conn: Option<ChatConn>,
    seqs: Seqs,
    outbox: VecDeque<Outgoing>,
    backoff: Duration,
    retry_at: Instant,
    /// When the current connection came up: backoff resets only after it held.
    connected_at: Instant,
    /// The highest seq a sync handed out: pushes up to it are duplicates
    /// (the broker pushes from `connect` on, the sync comes after).
    synced_max: i64,
    /// A keepalive `ping` is out and unanswered.
    pinged: bool,
    last_saved: Instant,
    timeout: Duration,
}

/// What `Live::wait` saw.
pub enum Wait {
    Event(Event),
    /// Disconnected and the backoff is over: call `reconnect` (not inside a
    /// `select!`, so a reconnect is never cut in half).
    ReconnectDue,
}

impl Live {
    /// Logs in (unless a saved session still works) and connects. With
    /// `sync`, returns the messages since the last seq this device showed.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        app: AppClient,
        saved: ClientSessions,
        session: ClientSession,
        relogin: Relogin,
        broker: Option<String>,
        timeout: Duration,
        sync: bool,
    ) -> anyhow::Result<(Self, Event)> {
        let seqs = Seqs {
            done: session.last_seq,
            ahead: BTreeSet::new(),
        };
        let mut live = Self {
            app,
            saved,
            session,
            relogin,
            broker,
            conn: None,
            seqs,
            outbox: VecDeque::new(),
            backoff: BACKOFF_MIN,
            retry_at: Instant::now(),
            connected_at: Instant::now(),
            synced_max: 0,
            pinged: false,
            last_saved: Instant::now(),
            timeout,
        };
        let event = match live.establish(sync, false).await {
            Ok(e) => e,
            Err(LinkError::NeedLogin(why)) => {
                tracing::info!(%why, "saved session refused; logging in again");
                live.login_again(&why).await?;
                match live.establish(sync, false).await {
                    Ok(e) => e,
                    Err(LinkError::NeedLogin(why)) => {
                        anyhow::bail!("the broker refused a fresh login: {why}")
                    }
                    Err(LinkError::Retry(e) | LinkError::Fatal(e)) => return Err(e),
                }
            }
            Err(LinkError::Retry(e) | LinkError::Fatal(e)) => return Err(e),
        };
        Ok((live, event))
    }

    pub fn user_id(&self) -> &str {
        &self.session.user_id
    }

    pub fn app(&self) -> &AppClient {
        &self.app
    }

    /// The IM token, for `Bearer` uploads to `/media`.
    pub fn im_token(&self) -> &str {
        &self.session.im_token
    }

    /// The app-server login session (`authToken`), when this login has one.
    pub fn auth_token(&self) -> Option<&str> {
        self.session.auth_token.as_deref()
    }

    /// The next thing that happens: a push, a drop, a reconnect.
    pub async fn next(&mut self) -> anyhow::Result<Event> {
        match self.wait().await {
            Wait::Event(e) => Ok(e),
            Wait::ReconnectDue => self.reconnect().await,
        }
    }

    /// Waits for a push, a drop, or the end of the backoff. Cancel-safe:
    /// nothing is consumed unless returned.
    pub async fn wait(&mut self) -> Wait {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                tokio::time::sleep_until(self.retry_at).await;
                return Wait::ReconnectDue;
            };
            match tokio::time::timeout(KEEPALIVE, conn.wait_push()).await {
                Ok(Ok(frame)) => {
                    self.pinged = false;
                    if let Some(event) = self.event_of(frame) {
                        return Wait::Event(event);
                    }
                }
                Ok(Err(e)) => return Wait::Event(self.lost(e.to_string())),
                // Quiet for a while: ask; quiet again: the link is dead
                // (a laptop slept, a network changed) even without a FIN.
                Err(_) if !self.pinged => {
                    self.pinged = true;
                    if let Err(e) = conn.tell(&Request::Ping).await {
                        return Wait::Event(self.lost(e.to_string()));
                    }
                }
                Err(_) => {
                    return Wait::Event(self.lost("the broker stopped answering".into()));
                }
            }
        }
    }

    /// What a frame that answers no waiting request means to the caller:
    /// pushes (but those a sync already handed out) and stray errors; the
    /// keepalive's `pong` and late replies mean nothing.
    fn event_of(&self, frame: Value) -> Option<Event> {
        match Incoming::read(frame.clone()) {
            Ok(Incoming::Push(Push::Msg { seq, .. })) if seq <= self.synced_max => None,
            Ok(Incoming::Push(push)) => Some(Event::Push(push)),
            Ok(Incoming::Reply(_, Reply::Error { code, message })) => {
                Some(Event::Error { code, message })
            }
            Ok(Incoming::Reply(..)) => None,
            Err(e) => Some(Event::Unreadable {
                op: frame["op"].as_str().unwrap_or_default().to_owned(),
                seq: frame["seq"].as_i64(),
                error: e.to_string(),
            }),
        }
    }

    /// Reconnects (logging in again if the token stopped working). Not
    /// cancel-safe: await it to the end.
    pub async fn reconnect(&mut self) -> anyhow::Result<Event> {
        match self.establish(true, true).await {
            Ok(event) => Ok(event),
            Err(LinkError::NeedLogin(why)) => {
                if let Err(e) = self.login_again(&why).await {
                    // The app-server may be down for a moment: try again later.
                    if e.chain()
                        .any(|c| matches!(c.downcast_ref(), Some(ClientError::Unreachable { .. })))
                    {
                        return Ok(self.retry_later(e));
                    }
                    return Err(e);
                }
                match self.establish(true, true).await {
                    Ok(event) => Ok(event),
                    Err(LinkError::NeedLogin(why)) => {
                        anyhow::bail!("the broker refused a fresh login: {why}")
                    }
                    Err(LinkError::Retry(e)) => Ok(self.retry_later(e)),
                    Err(LinkError::Fatal(e)) => Err(e),
                }
            }
            Err(LinkError::Retry(e)) => Ok(self.retry_later(e)),
            Err(LinkError::Fatal(e)) => Err(e),
        }
    }

    /// The connection is gone: back off, growing unless it had held a while.
    fn lost(&mut self, reason: String) -> Event {
        self.conn = None;
        self.pinged = false;
        self.backoff = if self.connected_at.elapsed() >= STABLE {
            BACKOFF_MIN
        } else {
            (self.backoff * 2).min(BACKOFF_MAX)
        };
        let retry_in = self.jittered();
        Event::Lost { reason, retry_in }
    }

    fn retry_later(&mut self, e: anyhow::Error) -> Event {
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        let retry_in = self.jittered();
        Event::RetryFailed {
            reason: format!("{e:#}"),
            retry_in,
        }
    }

    /// Sets the next try at half to all of the backoff: the clients of a
    /// node that died must not all come back at the same instant.
    fn jittered(&mut self) -> Duration {
        let wait = self.backoff.mul_f64(rand::random_range(0.5..=1.0));
        self.retry_at = Instant::now() + wait;
        wait
    }

    /// Route, connect, and (with `sync`) catch up. Commits nothing until it
    /// has succeeded, so it can be cancelled.
    async fn establish(&mut self, sync: bool, reconnect: bool) -> Result<Event, LinkError> {
        let ws_url = match &self.broker {
            Some(url) => url.clone(),
            None => {
                let req = RouteRequest {
                    user_id: Some(self.session.user_id.clone()),
                    client_id: Some(self.session.client_id.clone()),
                    token: self.session.im_token.clone(),
                };
                match self.app.route(&self.session.route_url, &req).await {
                    Ok(r) => r.ws_url,
                    Err(e) if e.api_code() == Some(api_code::NOT_LOGGED_IN) => {
                        return Err(LinkError::NeedLogin(e.to_string()));
                    }
                    Err(e) => return Err(LinkError::Retry(e.into())),
                }
            }
        };
        let (mut conn, connected) = match ChatConn::connect(
            &ws_url,
            &self.session.im_token,
            &self.session.client_id,
            self.session.platform,
        )
        .await
        {
            Ok(c) => c,
            Err(e) => return Err(classify(e)),
        };
        conn.set_timeout(self.timeout);
        let mut since = self.seqs.done;
        let reset = connected.head < since;
        if reset {
            since = 0;
        }
        let mut entries = Vec::new();
        if sync {
            loop {
                let sync = Request::Sync(SyncReq {
                    since,
                    limit: Some(SYNC_PAGE),
                });
                let (page, more) = match conn.call(&sync).await.map_err(classify)? {
                    Reply::Synced { entries, more, .. } => (entries, more),
                    other => return Err(LinkError::Retry(unexpected("synced", &other).into())),
                };
                let Some(last) = page.last() else {
                    break;
                };
                since = last.seq;
                entries.extend(page);
                if !more {
                    break;
                }
            }
        }
        // Committed from here on: no await below.
        // The entries count as seen once the caller has shown them (`seen`).
        if reset {
            self.seqs = Seqs::default();
        }
        self.synced_max = entries.last().map_or(0, |e| e.seq);
        self.conn = Some(conn);
        self.connected_at = Instant::now();
        self.pinged = false;
        Ok(Event::Connected {
            entries,
            reset,
            reconnect,
        })
    }

    /// Logs in again after the token stopped working, and saves the new session.
    async fn login_again(&mut self, why: &str) -> anyhow::Result<()> {
        let Relogin::Sms { mobile, code } = self.relogin.clone() else {
            return Err(Failure::new(
                exit::REFUSED,
                format!(
                    "the saved login no longer works ({why}); log in again with `imctl client --qr` or `--user`"
                ),
            )
            .into());
        };
        // A given --code is single use: later logins read the dev outbox.
        self.relogin = Relogin::Sms {
            mobile: mobile.clone(),
            code: None,
        };
        let (result, auth) = login::sms_login(
            &self.app,
            &mobile,
            code.as_deref(),
            &self.session.client_id,
            self.session.platform,
        )
        .await?;
        self.session.im_token = result.token;
        self.session.auth_token = Some(auth);
        self.session.route_url = login::route_url(&self.app, result.route_url).await?;
        self.save()
    }

    /// Notes that the user has seen inbox entries up to `seq`: tells the
    /// server (delivery receipts) and remembers it for the next start.
    pub async fn seen(&mut self, seqs: impl IntoIterator<Item = i64>) {
        let before = self.seqs.done;
        for s in seqs {
            self.seqs.see(s);
        }
        if self.seqs.done > before
            && let Some(conn) = self.conn.as_mut()
            && let Err(e) = conn
                .tell(&Request::Recv(RecvReq {
                    up_to: self.seqs.done,
                }))
                .await
        {
            tracing::debug!(error = %e, "recv not sent; the next sync covers it");
        }
        if self.last_saved.elapsed() > Duration::from_secs(1) {
            let _ = self.save();
        }
    }

    /// Saves the session (token, last seq) for the next start.
    pub fn save(&mut self) -> anyhow::Result<()> {
        self.session.last_seq = self.seqs.done;
        self.session.saved_at = now_ms();
        self.last_saved = Instant::now();
        self.saved.save(self.session.clone())
    }

    /// Sends a message. `Ok(Some(ack))` once stored; `Ok(None)` when the
    /// connection is down: it is queued and sent after the reconnect.
    /// `Err` when the server refused it.
    pub async fn send(&mut self, out: Outgoing) -> Result<Option<Ack>, ChatError> {
        let Some(conn) = self.conn.as_mut() else {
            self.outbox.push_back(out);
            return Ok(None);
        };
        let send = SendReq {
            conv: out.conv.clone(),
            content: out.content.clone(),
            client_msg_id: Some(out.client_msg_id.clone()),
        };
        match conn.send(send).await {
            Ok(ack) => {
                self.seqs.see(ack.seq);
                Ok(Some(ack))
            }
            Err(e @ ChatError::Refused { code: c, .. }) if c != i64::from(code::SERVER_ERROR) => {
                Err(e)
            }
            Err(e) => {
                // Nothing was stored (a 500) or the link broke: keep it for
                // the reconnect, which resends with the same clientMsgId.
                tracing::debug!(error = %e, "send failed; queued for the reconnect");
                self.conn = None;
                self.retry_at = Instant::now() + self.backoff;
                self.outbox.push_back(out);
                Ok(None)
            }
        }
    }

    /// Sends what was queued while disconnected; each with its outcome.
    pub async fn flush(&mut self) -> Vec<(Outgoing, Result<Option<Ack>, ChatError>)> {
        let mut done = Vec::new();
        while self.conn.is_some()
            && let Some(out) = self.outbox.pop_front()
        {
            let result = self.send(out.clone()).await;
            if matches!(result, Ok(None)) {
                // Lost again: `send` queued it last; it goes back first, in order.
                if let Some(back) = self.outbox.pop_back() {
                    self.outbox.push_front(back);
                }
                break;
            }
            done.push((out, result));
        }
        done
    }

    pub fn queued(&self) -> usize {
        self.outbox.len()
    }

    /// A request/reply on the connection; an error when disconnected.
    pub async fn request(&mut self, request: &Request) -> Result<Reply, ChatError> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(ChatError::Closed {
                code: None,
                reason: Some("not connected; reconnecting".into()),
            });
        };
        match conn.call(request).await {
            Err(e @ (ChatError::Closed { .. } | ChatError::Socket(_) | ChatError::Timeout(_))) => {
                self.conn = None;
                self.retry_at = Instant::now() + self.backoff;
                Err(e)
            }
            other => other,
        }
    }

    /// A request without a reply (`typing`); dropped when disconnected.
    pub async fn tell(&mut self, request: &Request) {
        if let Some(conn) = self.conn.as_mut() {
            let _ = conn.tell(request).await;
        }
    }

    /// Saves, then closes politely.
    pub async fn close(mut self) {
        let _ = self.save();
        if let Some(conn) = self.conn.take() {
            conn.close().await;
        }
    }
}

/// Sorts a connection failure into log-in-again, retry, or give up.
fn classify(e: ChatError) -> LinkError {
    match &e {
        ChatError::Refused { code: c, .. }
            if *c == i64::from(code::TOKEN_EXPIRED) || *c == i64::from(code::TOKEN_INVALID) =>
        {
            LinkError::NeedLogin(e.to_string())
        }
        ChatError::Closed {
            code: Some(close::AUTH_FAILED),
            ..
        } => LinkError::NeedLogin(e.to_string()),
        ChatError::Closed {
            code: Some(close::BANNED),
            ..
        } => LinkError::Fatal(Failure::new(exit::REFUSED, format!("banned: {e}")).into()),
        ChatError::Refused { code: c, .. } if *c == i64::from(code::FORBIDDEN) => {
            LinkError::Fatal(Failure::new(exit::REFUSED, e.to_string()).into())
        }
        // A cluster's node that cannot serve now: route again.
        ChatError::Refused { code: c, .. } if *c == i64::from(code::UNAVAILABLE) => {
            LinkError::Retry(e.into())
        }
        ChatError::Refused { .. } => LinkError::Fatal(e.into()),
        ChatError::Connect { .. } => LinkError::Retry(
            Failure::new(
                exit::UNREACHABLE,
                format!("{e} — is `imctl serve` running?"),
            )
            .into(),
        ),
        _ => LinkError::Retry(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::Seqs;

    #[test]
    fn seqs_advance_only_over_contiguous_entries() {
        let mut s = Seqs {
            done: 3,
            ..Default::default()
        };
        s.see(2);
        assert_eq!(s.done, 3);
        s.see(5);
        assert_eq!(s.done, 3);
        s.see(4);
        assert_eq!(s.done, 5);
        s.see(6);
        assert_eq!(s.done, 6);
    }
}
