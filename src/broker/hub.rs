//! Who is connected: each user's live connections and their outgoing queues.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::fault::{Faults, Fired, Subject};
use crate::telemetry::Telemetry;
use crate::wire::fault::Kind;
use crate::wire::ws::close;

/// Frames queued per connection before it counts as too slow.
pub const QUEUE: usize = 1024;
/// Bytes queued per connection before it counts as too slow (`--queue-bytes`).
pub const QUEUE_BYTES: usize = 8 * 1024 * 1024;
/// Live connections per user (`--max-connections-per-user`).
pub const MAX_CONNECTIONS_PER_USER: usize = 16;

const TOO_SLOW: (u16, &str) = (close::TOO_SLOW, "too slow reading: reconnect and sync");

/// How to reach one connection.
#[derive(Clone)]
pub struct ConnHandle {
    pub id: u64,
    tx: mpsc::Sender<Utf8Bytes>,
    /// Cancelled when the connection must go; `why` says with which close code.
    pub kick: CancellationToken,
    why: Arc<Mutex<Option<(u16, &'static str)>>>,
    /// Bytes queued and not yet taken by the connection.
    queued: Arc<AtomicUsize>,
    budget: usize,
    /// Set when a frame was dropped: the client must not trust the stream.
    overflowed: Arc<AtomicBool>,
    /// Injected faults: how long to freeze (`ws.freeze`), and pushes held
    /// back (`ws.delay-pushes`).
    freeze: Arc<Mutex<Option<std::time::Duration>>>,
    pub frozen: Arc<tokio::sync::Notify>,
    delayed: Arc<Mutex<Option<DelayLine>>>,
    /// Pushes held back now; later ones queue behind them to keep the order.
    held: Arc<AtomicUsize>,
}

/// Pushes held back by `ws.delay-pushes`, each with when it is due.
type DelayLine = mpsc::Sender<(tokio::time::Instant, Utf8Bytes)>;

/// The close "code" of an injected reset: no close frame at all.
pub const RESET: u16 = 0;

impl ConnHandle {
    /// Queues a frame. A full queue (in frames or bytes) drops the frame
    /// and closes the connection with 4009, so a client never reads past a
    /// gap (it will `sync` after reconnecting). One frame larger than the
    /// whole budget still goes through an empty queue.
    pub fn send(&self, frame: Utf8Bytes) {
        if self.overflowed.load(Ordering::Relaxed) {
            return;
        }
        let len = frame.len();
        let before = self.queued.fetch_add(len, Ordering::Relaxed);
        let fits = before == 0 || before + len <= self.budget;
        if !fits || self.tx.try_send(frame).is_err() {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            self.overflow(before);
        }
    }

    /// Closes with 4009 after a dropped frame; warns once per connection.
    fn overflow(&self, queued: usize) {
        if !self.overflowed.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                conn = self.id,
                queued_bytes = queued,
                "outgoing queue full; closing the connection with 4009"
            );
            self.close(TOO_SLOW.0, TOO_SLOW.1);
        }
    }

    /// Whether a frame for this connection was dropped.
    pub fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Relaxed)
    }

    /// Makes the connection close with `code` (the first reason given wins).
    pub fn close(&self, code: u16, reason: &'static str) {
        self.why.lock().unwrap().get_or_insert((code, reason));
        self.kick.cancel();
    }

    /// Makes the connection end without a close frame (`ws.reset`).
    pub fn reset(&self) {
        self.close(RESET, "");
    }

    /// Makes the connection stop reading and writing for `how_long` (`ws.freeze`).
    pub fn freeze(&self, how_long: std::time::Duration) {
        *self.freeze.lock().unwrap() = Some(how_long);
        self.frozen.notify_one();
    }

    /// The freeze asked for, once.
    pub fn take_freeze(&self) -> Option<std::time::Duration> {
        self.freeze.lock().unwrap().take()
    }

    /// Queues `frame` after `delay` (`ws.delay-pushes`), behind the pushes
    /// already held back so they stay in order. Held frames count against
    /// the queue's budget like queued ones.
    fn send_delayed(&self, frame: Utf8Bytes, delay: std::time::Duration) {
        let mut line = self.delayed.lock().unwrap();
        let tx = line.get_or_insert_with(|| {
            let (tx, mut rx) = mpsc::channel::<(tokio::time::Instant, Utf8Bytes)>(QUEUE);
            let conn = self.clone();
            // Ends with the connection (its task cancels `kick` last).
            tokio::spawn(async move {
                loop {
                    let (due, frame) = tokio::select! {
                        biased;
                        _ = conn.kick.cancelled() => return,
                        next = rx.recv() => match next {
                            Some(next) => next,
                            None => return,
                        },
                    };
                    tokio::select! {
                        _ = tokio::time::sleep_until(due) => {}
                        _ = conn.kick.cancelled() => return,
                    }
                    conn.queued.fetch_sub(frame.len(), Ordering::Relaxed);
                    conn.send(frame);
                    conn.held.fetch_sub(1, Ordering::Release);
                }
            });
            tx
        });
        let len = frame.len();
        let before = self.queued.fetch_add(len, Ordering::Relaxed);
        let fits = before == 0 || before + len <= self.budget;
        let due = tokio::time::Instant::now() + delay;
        self.held.fetch_add(1, Ordering::AcqRel);
        if !fits || tx.try_send((due, frame)).is_err() {
            self.held.fetch_sub(1, Ordering::Release);
            self.queued.fetch_sub(len, Ordering::Relaxed);
            self.overflow(before);
        }
    }

    /// Whether pushes are held back now: later ones queue behind them.
    pub fn delaying(&self) -> bool {
        self.held.load(Ordering::Acquire) > 0
    }

    /// Queues a reply (an ack), behind any push held back: an ack's seq
    /// must not overtake a lower one.
    pub fn send_in_order(&self, frame: Utf8Bytes) {
        if self.delaying() {
            self.send_delayed(frame, std::time::Duration::ZERO);
        } else {
            self.send(frame);
        }
    }

    /// A connection closing with pushes still held back loses them: it
    /// closes with 4009 then, so the client syncs (never a silent gap).
    pub fn drop_held(&self) {
        if self.delaying() {
            self.overflowed.store(true, Ordering::Relaxed);
        }
    }

    /// Why the connection was asked to close.
    pub fn close_reason(&self) -> (u16, &'static str) {
        self.why.lock().unwrap().unwrap_or(TOO_SLOW)
    }
}

/// The receiving end of a connection's queue.
pub struct Queue {
    rx: mpsc::Receiver<Utf8Bytes>,
    queued: Arc<AtomicUsize>,
}

impl Queue {
    /// The next frame; cancel-safe.
    pub async fn recv(&mut self) -> Option<Utf8Bytes> {
        let frame = self.rx.recv().await?;
        Some(self.taken(frame))
    }

    pub fn try_recv(&mut self) -> Option<Utf8Bytes> {
        let frame = self.rx.try_recv().ok()?;
        Some(self.taken(frame))
    }

    fn taken(&self, frame: Utf8Bytes) -> Utf8Bytes {
        self.queued.fetch_sub(frame.len(), Ordering::Relaxed);
        frame
    }
}

/// A user already has `--max-connections-per-user` connections.
#[derive(Debug)]
pub struct TooMany(pub usize);

pub use crate::wire::http::ConnInfo;

pub struct Hub {
    users: Mutex<HashMap<String, Vec<(ConnHandle, ConnInfo)>>>,
    /// Each connection's queue budget in bytes.
    queue_bytes: usize,
    max_per_user: usize,
    next_id: AtomicU64,
    /// The stack's metrics and change signal (handed in by the stack).
    pub telemetry: Telemetry,
    /// The other nodes, in a cluster: every push also goes there.
    cluster: Option<Cluster>,
    /// Injected faults (`imctl chaos`) that bend pushes.
    pub faults: Faults,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new(QUEUE_BYTES, MAX_CONNECTIONS_PER_USER, Telemetry::default())
    }
}

impl Hub {
    /// A hub whose connections queue at most `queue_bytes` and whose users
    /// have at most `max_per_user` connections.
    pub fn new(queue_bytes: usize, max_per_user: usize, telemetry: Telemetry) -> Self {
        Self {
            users: Default::default(),
            queue_bytes,
            max_per_user,
            next_id: Default::default(),
            telemetry,
            cluster: None,
            faults: Faults::default(),
        }
    }

    /// Bends pushes by these fault rules.
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Relays every push to the cluster's other nodes too.
    pub fn with_cluster(mut self, cluster: Option<Cluster>) -> Self {
        self.cluster = cluster;
        self
    }

    /// A new connection handle and the receiving end of its queue.
    pub fn handle(&self) -> (ConnHandle, Queue) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let queued = Arc::new(AtomicUsize::new(0));
        (
            ConnHandle {
                id,
                tx,
                kick: CancellationToken::new(),
                why: Default::default(),
                queued: queued.clone(),
                budget: self.queue_bytes,
                overflowed: Default::default(),
                freeze: Default::default(),
                frozen: Default::default(),
                delayed: Default::default(),
                held: Default::default(),
            },
            Queue { rx, queued },
        )
    }

    /// Adds a connection on `platform`; returns the user's platforms if
    /// they changed (the user came online, or on a new platform). Refused
    /// when the user has `max_per_user` connections already.
    pub fn register(
        &self,
        user: &str,
        conn: ConnHandle,
        client_id: &str,
        platform: i32,
    ) -> Result<Option<Vec<i32>>, TooMany> {
        let mut users = self.users.lock().unwrap();
        let conns = users.entry(user.to_owned()).or_default();
        if conns.len() >= self.max_per_user {
            return Err(TooMany(self.max_per_user));
        }
        let before = platforms(conns);
        let info = ConnInfo {
            user_id: user.to_owned(),
            client_id: client_id.to_owned(),
            platform,
            since: crate::store::now_ms(),
            node: None,
        };
        conns.push((conn, info));
        let after = platforms(conns);
        if before != after {
            self.tell_cluster(user, &after);
        }
        drop(users);
        self.telemetry.activity.bump();
        Ok((before != after).then_some(after))
    }

    /// Tells the other nodes `user`'s platforms here changed; called under
    /// the users' lock, so the changes leave in the order they happened.
    fn tell_cluster(&self, user: &str, platforms: &[i32]) {
        if let Some(cluster) = self
            .cluster
            .as_ref()
            .filter(|_| user != super::robot::ROBOT)
        {
            cluster.presence_changed(user, platforms);
        }
    }

    /// Removes a connection; returns the user's platforms if they changed
    /// (empty when the user went offline).
    pub fn unregister(&self, user: &str, id: u64) -> Option<Vec<i32>> {
        let mut users = self.users.lock().unwrap();
        let conns = users.get_mut(user)?;
        let before = platforms(conns);
        conns.retain(|(c, _)| c.id != id);
        let after = platforms(conns);
        if conns.is_empty() {
            users.remove(user);
        }
        if before != after {
            self.tell_cluster(user, &after);
        }
        drop(users);
        self.telemetry.activity.bump();
        (before != after).then_some(after)
    }

    /// The platforms `user` is connected on, sorted; empty when offline.
    /// (In a cluster: on every node.)
    pub fn platforms_of(&self, user: &str) -> Vec<i32> {
        let mut here = self
            .users
            .lock()
            .unwrap()
            .get(user)
            .map(|c| platforms(c))
            .unwrap_or_default();
        if let Some(cluster) = &self.cluster {
            here.extend(cluster.remote_platforms(user));
            here.sort_unstable();
            here.dedup();
        }
        here
    }

    /// Every user connected to this node (not the robot), with their platforms.
    pub fn online_here(&self) -> Vec<(String, Vec<i32>)> {
        let users = self.users.lock().unwrap();
        users
            .iter()
            .filter(|(user, _)| user.as_str() != super::robot::ROBOT)
            .map(|(user, conns)| (user.clone(), platforms(conns)))
            .collect()
    }

    /// Queues `frame` on every connection of `user` except `except`, here
    /// and on the cluster's other nodes.
    pub fn deliver(&self, user: &str, frame: &Utf8Bytes, except: Option<u64>) {
        if let Some(cluster) = &self.cluster {
            cluster.relay(user, frame.as_str().to_owned());
        }
        self.deliver_here(user, frame, except);
    }

    /// Queues pushes another node relayed (JSON texts, one per line) on
    /// `user`'s connections here.
    pub fn deliver_relayed(&self, user: &str, frames: &str) {
        for frame in frames.lines() {
            self.deliver_here(user, &Utf8Bytes::from(frame), None);
        }
    }

    fn deliver_here(&self, user: &str, frame: &Utf8Bytes, except: Option<u64>) {
        let users = self.users.lock().unwrap();
        let mut sent = 0;
        for (conn, info) in users.get(user).into_iter().flatten() {
            if Some(conn.id) != except {
                self.push(conn, info, frame);
                sent += 1;
            }
        }
        self.telemetry.metrics.deliveries.inc_by(sent);
    }

    /// Queues a committed batch's frames, each user's back to back (so a
    /// connection wakes and flushes once for all of them rather than once
    /// per message). A push frame is made only for a connected user.
    pub fn deliver_batch(&self, pushes: Pushes) {
        let mut sent = 0;
        for (user, outs) in pushes.outs {
            if let Some(cluster) = &self.cluster {
                // One relayed message per user and batch.
                let frames: Vec<String> = outs
                    .iter()
                    .filter_map(|out| match out {
                        Out::Msg { seq, message, .. } => {
                            Some(crate::wire::ws::msg_push(*seq, message))
                        }
                        Out::Reply { .. } => None,
                    })
                    .collect();
                if !frames.is_empty() {
                    cluster.relay(&user, frames.join("\n"));
                }
            }
            let users = self.users.lock().unwrap();
            let conns = users.get(&user).map(Vec::as_slice).unwrap_or_default();
            for out in outs {
                match out {
                    Out::Msg {
                        seq,
                        message,
                        except,
                    } => {
                        if conns.is_empty() {
                            continue;
                        }
                        let frame: Utf8Bytes = crate::wire::ws::msg_push(seq, &message).into();
                        for (conn, info) in conns.iter().filter(|(c, _)| Some(c.id) != except) {
                            self.push(conn, info, &frame);
                            sent += 1;
                        }
                    }
                    // Straight to the handle: a connection that is closing
                    // has left the hub but still writes its last acks.
                    Out::Reply { frame, conn } => conn.send_in_order(frame),
                }
            }
        }
        self.telemetry.metrics.deliveries.inc_by(sent);
    }

    /// Queues a push on `conn`, unless an injected fault drops or delays it.
    fn push(&self, conn: &ConnHandle, info: &ConnInfo, frame: &Utf8Bytes) {
        let faults = &self.faults;
        let bent = (faults.active(Kind::WsDropPushes) || faults.active(Kind::WsDelayPushes))
            && info.user_id != super::robot::ROBOT;
        if !bent {
            if conn.delaying() {
                conn.send_delayed(frame.clone(), std::time::Duration::ZERO);
            } else {
                conn.send(frame.clone());
            }
            return;
        }
        let subject = Subject {
            user: Some(&info.user_id),
            client: Some(&info.client_id),
            platform: Some(info.platform),
            ..Default::default()
        };
        // Only `msg` pushes: `sync` brings them back, and nothing else is stored.
        let msg = frame.as_str().starts_with(r#"{"op":"msg","#);
        if msg && let Some(fired) = faults.check(Kind::WsDropPushes, &subject) {
            let detail = format!(
                "dropped {} to {:?} ({:?}); sync brings it back",
                what(frame),
                info.user_id,
                info.client_id
            );
            self.tell(conn, &fired, detail);
            return;
        }
        if let Some(fired) = faults.check(Kind::WsDelayPushes, &subject) {
            let ms = fired.rule.ms.unwrap_or(0);
            let detail = format!(
                "delayed {} to {:?} ({:?}) by {ms} ms",
                what(frame),
                info.user_id,
                info.client_id
            );
            self.tell(conn, &fired, detail);
            conn.send_delayed(frame.clone(), std::time::Duration::from_millis(ms));
        } else if conn.delaying() {
            conn.send_delayed(frame.clone(), std::time::Duration::ZERO);
        } else {
            conn.send(frame.clone());
        }
    }

    /// Records an injection on `conn`, and tells the connection (a `fault`
    /// push, so inspectors can mark it).
    pub fn tell(&self, conn: &ConnHandle, fired: &Fired, detail: String) {
        self.faults.injected(fired, &detail);
        conn.send(fault_notice(fired, detail));
    }

    /// Every connection with its details (for applying fault rules).
    pub fn each(&self) -> Vec<(ConnHandle, ConnInfo)> {
        let users = self.users.lock().unwrap();
        users
            .iter()
            .filter(|(user, _)| user.as_str() != super::robot::ROBOT)
            .flat_map(|(_, conns)| conns.iter().cloned())
            .collect()
    }

    /// The platform of every live connection.
    pub fn platforms(&self) -> Vec<i32> {
        let users = self.users.lock().unwrap();
        users.values().flatten().map(|(_, i)| i.platform).collect()
    }

    /// Whether `user` has a connection (in a cluster: on any node).
    pub fn is_online(&self, user: &str) -> bool {
        self.users.lock().unwrap().contains_key(user)
            || self
                .cluster
                .as_ref()
                .is_some_and(|c| !c.remote_platforms(user).is_empty())
    }

    /// Every live connection, by user.
    pub fn list(&self) -> Vec<ConnInfo> {
        let users = self.users.lock().unwrap();
        let mut all: Vec<ConnInfo> = users.values().flatten().map(|(_, i)| i.clone()).collect();
        all.sort_by(|a, b| (&a.user_id, a.since).cmp(&(&b.user_id, b.since)));
        all
    }

    /// Closes every connection of `user` with `code`; returns how many.
    pub fn close_user(&self, user: &str, code: u16, reason: &'static str) -> usize {
        let users = self.users.lock().unwrap();
        let conns = users.get(user).map(Vec::as_slice).unwrap_or_default();
        conns.iter().for_each(|(c, _)| c.close(code, reason));
        conns.len()
    }

    /// Closes every client connection (not the robot's) with `code`;
    /// returns how many.
    pub fn close_all(&self, code: u16, reason: &'static str) -> usize {
        let users = self.users.lock().unwrap();
        let mut closed = 0;
        for (user, conns) in users.iter() {
            if user.as_str() != super::robot::ROBOT {
                conns.iter().for_each(|(c, _)| c.close(code, reason));
                closed += conns.len();
            }
        }
        closed
    }

    /// Closes with `code` the client connections (of `user`, or everyone's
    /// but the robot's) made before `before_ms`; returns how many.
    pub fn close_older(
        &self,
        user: Option<&str>,
        before_ms: i64,
        code: u16,
        reason: &'static str,
    ) -> usize {
        let users = self.users.lock().unwrap();
        let mut closed = 0;
        for (who, conns) in users.iter() {
            if who.as_str() == super::robot::ROBOT || user.is_some_and(|u| u != who) {
                continue;
            }
            for (conn, _) in conns.iter().filter(|(_, i)| i.since < before_ms) {
                conn.close(code, reason);
                closed += 1;
            }
        }
        closed
    }

    /// Live client connections in all (the built-in robot is not one).
    pub fn connections(&self) -> usize {
        self.users
            .lock()
            .unwrap()
            .iter()
            .filter(|(user, _)| user.as_str() != super::robot::ROBOT)
            .map(|(_, conns)| conns.len())
            .sum()
    }
}

/// The `fault` push telling a connection what an injected fault did to it.
pub fn fault_notice(fired: &Fired, detail: String) -> Utf8Bytes {
    let push = crate::wire::ws::Push::Fault {
        rule: fired.id,
        kind: fired.rule.kind.name().into(),
        detail,
    };
    serde_json::to_string(&push)
        .expect("wire types serialize")
        .into()
}

/// A push in a few words, for fault reports: `the push of seq 12`.
fn what(frame: &Utf8Bytes) -> String {
    let v: serde_json::Value = serde_json::from_str(frame.as_str()).unwrap_or_default();
    match (v["op"].as_str(), v["seq"].as_i64()) {
        (Some(op), Some(seq)) => format!("the {op} push of seq {seq}"),
        (Some(op), None) => format!("a {op} push"),
        _ => "a push".into(),
    }
}

/// What a committed batch sends, by user, each user's in the order added
/// (so an ack never overtakes a push with a lower seq to the same user).
#[derive(Default)]
pub struct Pushes {
    outs: Vec<(String, Vec<Out>)>,
    index: HashMap<String, usize>,
}

pub enum Out {
    /// A stored message, for every connection of the user but `except` (the
    /// sending one); `message` is its JSON, shared by all recipients.
    Msg {
        seq: i64,
        message: Arc<str>,
        except: Option<u64>,
    },
    /// An answer (ack or error) to one connection.
    Reply { frame: Utf8Bytes, conn: ConnHandle },
}

impl Pushes {
    pub fn add(&mut self, user: String, out: Out) {
        let i = *self.index.entry(user).or_insert_with_key(|user| {
            self.outs.push((user.clone(), Vec::new()));
            self.outs.len() - 1
        });
        self.outs[i].1.push(out);
    }
}

fn platforms(conns: &[(ConnHandle, ConnInfo)]) -> Vec<i32> {
    let mut p: Vec<i32> = conns.iter().map(|(_, i)| i.platform).collect();
    p.sort_unstable();
    p.dedup();
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delivers_to_every_connection_but_the_excluded_one() {
        let hub = Hub::default();
        let (a, mut ra) = hub.handle();
        let (b, mut rb) = hub.handle();
        assert_eq!(
            hub.register("alice", a.clone(), "p", 2).unwrap(),
            Some(vec![2])
        );
        assert_eq!(
            hub.register("alice", b.clone(), "w", 5).unwrap(),
            Some(vec![2, 5])
        );
        hub.deliver("alice", &"x".into(), Some(a.id));
        assert_eq!(rb.recv().await.unwrap().as_str(), "x");
        assert!(ra.try_recv().is_none());
        assert_eq!(hub.unregister("alice", a.id), Some(vec![5]));
        assert_eq!(hub.unregister("alice", b.id), Some(vec![]));
        assert_eq!(hub.unregister("alice", b.id), None);
        assert!(!hub.is_online("alice"));
        assert_eq!(hub.connections(), 0);
    }

    #[tokio::test]
    async fn a_batch_reaches_each_user_in_order_and_skips_the_sender() {
        let hub = Hub::default();
        let (a, mut ra) = hub.handle();
        let (a2, mut ra2) = hub.handle();
        let (b, mut rb) = hub.handle();
        for (user, conn, platform) in [("alice", &a, 2), ("alice", &a2, 5), ("bob", &b, 2)] {
            hub.register(user, conn.clone(), "p", platform).unwrap();
        }
        let mut pushes = Pushes::default();
        let msg = |seq: i64, except: Option<u64>| Out::Msg {
            seq,
            message: r#"{"msgId":"m1"}"#.into(),
            except,
        };
        let (gone, mut rgone) = hub.handle(); // closing: no longer in the hub
        pushes.add("bob".into(), msg(1, Some(a.id)));
        pushes.add("alice".into(), msg(1, Some(a.id)));
        let reply = |frame: &str, conn: &ConnHandle| Out::Reply {
            frame: frame.into(),
            conn: conn.clone(),
        };
        pushes.add("alice".into(), reply("ack", &a));
        pushes.add("bob".into(), msg(2, None));
        pushes.add("carol".into(), msg(1, None));
        pushes.add("alice".into(), msg(2, None));
        pushes.add("dave".into(), reply("last ack", &gone));
        hub.deliver_batch(pushes);
        let drain = |rx: &mut Queue| {
            std::iter::from_fn(|| rx.try_recv())
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
        };
        let push = |seq: i64| crate::wire::ws::msg_push(seq, r#"{"msgId":"m1"}"#);
        assert_eq!(drain(&mut rb), [push(1), push(2)]);
        assert_eq!(drain(&mut ra), ["ack".to_string(), push(2)]);
        assert_eq!(drain(&mut ra2), [push(1), push(2)]);
        assert_eq!(drain(&mut rgone), ["last ack"]);
        assert_eq!(hub.telemetry.metrics.deliveries.get(), 5);
    }

    #[test]
    fn a_full_queue_kicks_the_connection() {
        let hub = Hub::default();
        let (a, _rx) = hub.handle();
        for _ in 0..QUEUE {
            a.send("x".into());
        }
        assert!(!a.kick.is_cancelled());
        a.send("one too many".into());
        assert!(a.kick.is_cancelled() && a.overflowed());
        assert_eq!(a.close_reason().0, close::TOO_SLOW);
    }

    #[test]
    fn the_byte_budget_kicks_and_later_frames_are_dropped() {
        let hub = Hub::new(1000, 4, Telemetry::default());
        let (a, mut rx) = hub.handle();
        // One frame over the budget passes an empty queue.
        a.send("x".repeat(5000).into());
        assert!(!a.kick.is_cancelled());
        assert_eq!(rx.try_recv().map(|f| f.len()), Some(5000));
        a.send("y".repeat(600).into());
        a.send("z".repeat(600).into());
        assert!(a.kick.is_cancelled() && a.overflowed());
        a.send("late".into());
        assert_eq!(rx.try_recv().map(|f| f.len()), Some(600));
        assert!(rx.try_recv().is_none(), "nothing after the gap");
    }

    #[tokio::test]
    async fn pushes_held_back_count_against_the_byte_budget() {
        let hub = Hub::new(1000, 4, Telemetry::default());
        let (a, _rx) = hub.handle();
        let later = std::time::Duration::from_secs(60);
        a.send_delayed("y".repeat(600).into(), later);
        assert!(a.delaying() && !a.kick.is_cancelled());
        // Held, not queued, yet over the budget all the same: 4009.
        a.send_delayed("z".repeat(600).into(), later);
        assert!(a.kick.is_cancelled() && a.overflowed());
    }

    #[test]
    fn a_resync_closes_only_connections_older_than_the_missed_push() {
        let hub = Hub::default();
        let conns: Vec<_> = (0..3).map(|_| hub.handle().0).collect();
        hub.register("alice", conns[0].clone(), "a", 1).unwrap();
        hub.register("bob", conns[1].clone(), "b", 1).unwrap();
        hub.register(super::super::robot::ROBOT, conns[2].clone(), "r", 0)
            .unwrap();
        // Made after the push: they synced at connect.
        assert_eq!(hub.close_older(None, 0, close::TOO_SLOW, "x"), 0);
        assert_eq!(
            hub.close_older(Some("bob"), i64::MAX, close::TOO_SLOW, "x"),
            1
        );
        assert!(conns[1].kick.is_cancelled() && !conns[0].kick.is_cancelled());
        assert_eq!(hub.close_older(None, i64::MAX, close::TOO_SLOW, "x"), 2);
        assert!(conns[0].kick.is_cancelled());
        assert!(!conns[2].kick.is_cancelled(), "the robot is not a client");
    }

    #[test]
    fn a_user_has_at_most_max_per_user_connections() {
        let hub = Hub::new(QUEUE_BYTES, 2, Telemetry::default());
        let conns: Vec<_> = (0..3).map(|_| hub.handle().0).collect();
        assert!(hub.register("alice", conns[0].clone(), "a", 1).is_ok());
        assert!(hub.register("alice", conns[1].clone(), "b", 1).is_ok());
        assert!(hub.register("alice", conns[2].clone(), "c", 1).is_err());
        assert!(hub.register("bob", conns[2].clone(), "c", 1).is_ok());
        hub.unregister("alice", conns[0].id);
        assert!(hub.register("alice", conns[2].clone(), "c", 1).is_ok());
    }
}
