//! Who is connected: each user's live connections and their outgoing queues.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Frames queued per connection before it counts as too slow.
pub const QUEUE: usize = 1024;

/// How to reach one connection.
#[derive(Clone)]
pub struct ConnHandle {
    pub id: u64,
    tx: mpsc::Sender<Utf8Bytes>,
    /// Cancelled when the connection must go; `why` says with which close code.
    pub kick: CancellationToken,
    why: std::sync::Arc<Mutex<Option<(u16, &'static str)>>>,
}

impl ConnHandle {
    /// Queues a frame; a full queue kicks the connection (it will `sync` after reconnecting).
    pub fn send(&self, frame: Utf8Bytes) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(frame) {
            tracing::warn!(
                conn = self.id,
                "outgoing queue full; closing the connection"
            );
            self.close(
                crate::wire::ws::close::TOO_SLOW,
                "too slow reading: reconnect and sync",
            );
        }
    }

    /// Makes the connection close with `code` (the first reason given wins).
    pub fn close(&self, code: u16, reason: &'static str) {
        self.why.lock().unwrap().get_or_insert((code, reason));
        self.kick.cancel();
    }

    /// Why the connection was asked to close.
    pub fn close_reason(&self) -> (u16, &'static str) {
        self.why.lock().unwrap().unwrap_or((
            crate::wire::ws::close::TOO_SLOW,
            "too slow reading: reconnect and sync",
        ))
    }
}

pub use crate::wire::http::ConnInfo;

#[derive(Default)]
pub struct Hub {
    users: Mutex<HashMap<String, Vec<(ConnHandle, ConnInfo)>>>,
    next_id: AtomicU64,
    /// The process's metrics; the hub is what every part of the broker shares.
    pub metrics: Arc<Metrics>,
    /// Bumped when a connection comes or goes, or messages are stored.
    pub activity: crate::activity::Activity,
}

impl Hub {
    /// A new connection handle and the receiving end of its queue.
    pub fn handle(&self) -> (ConnHandle, mpsc::Receiver<Utf8Bytes>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        (
            ConnHandle {
                id,
                tx,
                kick: CancellationToken::new(),
                why: Default::default(),
            },
            rx,
        )
    }

    /// Adds a connection on `platform`; returns the user's platforms if
    /// they changed (the user came online, or on a new platform).
    pub fn register(
        &self,
        user: &str,
        conn: ConnHandle,
        client_id: &str,
        platform: i32,
    ) -> Option<Vec<i32>> {
        let mut users = self.users.lock().unwrap();
        let conns = users.entry(user.to_owned()).or_default();
        let before = platforms(conns);
        let info = ConnInfo {
            user_id: user.to_owned(),
            client_id: client_id.to_owned(),
            platform,
            since: crate::store::now_ms(),
        };
        conns.push((conn, info));
        let after = platforms(conns);
        drop(users);
        self.activity.bump();
        (before != after).then_some(after)
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
        drop(users);
        self.activity.bump();
        (before != after).then_some(after)
    }

    /// The platforms `user` is connected on, sorted; empty when offline.
    pub fn platforms_of(&self, user: &str) -> Vec<i32> {
        self.users
            .lock()
            .unwrap()
            .get(user)
            .map(|c| platforms(c))
            .unwrap_or_default()
    }

    /// Queues `frame` on every connection of `user` except `except`.
    pub fn deliver(&self, user: &str, frame: &Utf8Bytes, except: Option<u64>) {
        let users = self.users.lock().unwrap();
        let mut sent = 0;
        for (conn, _) in users.get(user).into_iter().flatten() {
            if Some(conn.id) != except {
                conn.send(frame.clone());
                sent += 1;
            }
        }
        self.metrics.deliveries.inc_by(sent);
    }

    /// Queues a committed batch's frames, each user's back to back (so a
    /// connection wakes and flushes once for all of them rather than once
    /// per message). A push frame is made only for a connected user.
    pub fn deliver_batch(&self, pushes: Pushes) {
        let mut sent = 0;
        for (user, outs) in pushes.outs {
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
                        for (conn, _) in conns.iter().filter(|(c, _)| Some(c.id) != except) {
                            conn.send(frame.clone());
                            sent += 1;
                        }
                    }
                    // Straight to the handle: a connection that is closing
                    // has left the hub but still writes its last acks.
                    Out::Reply { frame, conn } => conn.send(frame),
                }
            }
        }
        self.metrics.deliveries.inc_by(sent);
    }

    /// The platform of every live connection.
    pub fn platforms(&self) -> Vec<i32> {
        let users = self.users.lock().unwrap();
        users.values().flatten().map(|(_, i)| i.platform).collect()
    }

    pub fn is_online(&self, user: &str) -> bool {
        self.users.lock().unwrap().contains_key(user)
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
        assert_eq!(hub.register("alice", a.clone(), "p", 2), Some(vec![2]));
        assert_eq!(hub.register("alice", b.clone(), "w", 5), Some(vec![2, 5]));
        hub.deliver("alice", &"x".into(), Some(a.id));
        assert_eq!(rb.recv().await.unwrap().as_str(), "x");
        assert!(ra.try_recv().is_err());
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
        hub.register("alice", a.clone(), "p", 2);
        hub.register("alice", a2.clone(), "w", 5);
        hub.register("bob", b.clone(), "p", 2);
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
        let drain = |rx: &mut mpsc::Receiver<Utf8Bytes>| {
            std::iter::from_fn(|| rx.try_recv().ok())
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
        };
        let push = |seq: i64| crate::wire::ws::msg_push(seq, r#"{"msgId":"m1"}"#);
        assert_eq!(drain(&mut rb), [push(1), push(2)]);
        assert_eq!(drain(&mut ra), ["ack".to_string(), push(2)]);
        assert_eq!(drain(&mut ra2), [push(1), push(2)]);
        assert_eq!(drain(&mut rgone), ["last ack"]);
        assert_eq!(hub.metrics.deliveries.get(), 5);
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
        assert!(a.kick.is_cancelled());
    }
}
