//! Pushes between nodes: a subject per user, published after the commit by
//! the node that committed, subscribed by the nodes holding one of the
//! user's connections.
//!
//! Nothing here waits on NATS in the writer's path: pushes go through a
//! queue bounded in entries and bytes. A push that cannot be relayed (the
//! queue full, NATS down, a frame too large) is still in the store; its user
//! is remembered and, once NATS is up, named on `imctl.resync`, where the
//! nodes holding that user close its connections with 4009 so the client
//! reconnects and syncs. So no push is lost without the client being told.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::Subject;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{OnceCell, mpsc};
use tokio_util::sync::CancellationToken;

use super::{Cluster, Error};
use crate::wire::cluster::Resync;

/// Relayed pushes waiting to be published (one entry per user and batch).
pub const RELAY_QUEUE: usize = 16 * 1024;
/// Bytes of relayed pushes waiting to be published.
pub const RELAY_BYTES: usize = 64 * 1024 * 1024;
/// Users remembered for a resync; beyond it every node resyncs everyone.
const RESYNC_USERS: usize = 100_000;
/// How long a relayed push counts as possibly lost if the link then drops
/// (published, but maybe still in a buffer that died with the connection).
const IN_FLIGHT: Duration = Duration::from_secs(5);
/// Users remembered as relayed within [`IN_FLIGHT`].
const RECENT_USERS: usize = 100_000;
/// How often the users who missed pushes are named to the other nodes.
const RESYNC_EVERY: Duration = Duration::from_secs(1);
/// How long `hold` may take (NATS slow or down): then `connect` is refused.
const HOLD_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) const RESYNC: &str = "imctl.resync";
/// Nothing answers it: a request there comes back "no responders" once the
/// server has read everything this client sent before it.
const ROUND_TRIP: &str = "imctl.roundtrip";

const MISSED: &str = "missed pushes from another node: reconnect and sync";

/// This node's side of the relay.
pub(super) struct Relay {
    queue: mpsc::Sender<(String, Bytes)>,
    queued_bytes: Arc<AtomicUsize>,
    /// Pushes not relayed since the start.
    dropped: AtomicU64,
    /// Users whose pushes were not relayed, to name on `imctl.resync`.
    missed: Mutex<Missed>,
    /// Users relayed to lately, with when, oldest first.
    recent: Mutex<std::collections::VecDeque<(tokio::time::Instant, String)>>,
    holds: Mutex<std::collections::HashMap<String, Arc<Hold>>>,
}

#[derive(Default)]
struct Missed {
    users: HashSet<String>,
    everyone: bool,
    /// When the last of them was missed (milliseconds since the epoch).
    last_ms: i64,
}

/// One user's subscription, shared by their connections on this node.
struct Hold {
    /// Changed only under the map's lock.
    count: AtomicUsize,
    ready: OnceCell<bool>,
    stop: CancellationToken,
}

impl Relay {
    pub(super) fn new() -> (Self, mpsc::Receiver<(String, Bytes)>) {
        let (queue, queued) = mpsc::channel(RELAY_QUEUE);
        let relay = Relay {
            queue,
            queued_bytes: Default::default(),
            dropped: AtomicU64::new(0),
            missed: Mutex::default(),
            recent: Mutex::default(),
            holds: Mutex::default(),
        };
        (relay, queued)
    }
}

impl Cluster {
    /// Sends `frames` (JSON texts, one per line) to `user`'s connections on
    /// the other nodes. Never waits; see the module documentation for what
    /// happens when it cannot.
    pub fn relay(&self, user: &str, frames: String) {
        let relay = &self.0.relay;
        let len = frames.len();
        let before = relay.queued_bytes.fetch_add(len, Ordering::Relaxed);
        let fits = before + len <= RELAY_BYTES && self.is_connected();
        if !fits
            || relay
                .queue
                .try_send((user.to_owned(), frames.into()))
                .is_err()
        {
            relay.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            self.missed(user);
        }
    }

    /// Pushes not relayed to other nodes since the start.
    pub fn dropped_pushes(&self) -> u64 {
        self.0.relay.dropped.load(Ordering::Relaxed)
    }

    fn missed(&self, user: &str) {
        let relay = &self.0.relay;
        let before = relay.dropped.fetch_add(1, Ordering::Relaxed);
        if before.is_power_of_two() || before == 0 {
            tracing::warn!(
                dropped = before + 1,
                "pushes to other nodes dropped (NATS slow or down); their users' connections will be told to sync"
            );
        }
        self.resync_later(user);
    }

    /// Names `user` on the next `imctl.resync`.
    fn resync_later(&self, user: &str) {
        let mut missed = self.0.relay.missed.lock().unwrap();
        missed.last_ms = now_ms();
        if missed.users.len() < RESYNC_USERS {
            missed.users.insert(user.to_owned());
        } else {
            missed.everyone = true;
        }
    }

    /// Publishes the queue, each user's frames in messages within NATS's
    /// largest payload; names the missed users every [`RESYNC_EVERY`].
    pub(super) async fn publish_relayed(self, mut queued: mpsc::Receiver<(String, Bytes)>) {
        let mut every = tokio::time::interval(RESYNC_EVERY);
        loop {
            let (user, frames) = tokio::select! {
                _ = every.tick() => {
                    self.name_missed().await;
                    continue;
                }
                next = queued.recv() => match next {
                    Some(next) => next,
                    None => return,
                },
            };
            self.0
                .relay
                .queued_bytes
                .fetch_sub(frames.len(), Ordering::Relaxed);
            let max = self.0.client.server_info().max_payload.max(1024);
            let subject = Subject::from(user_subject(&user));
            for part in split(&frames, max) {
                let sent = match part {
                    Some(part) if self.is_connected() => {
                        self.0.client.publish(subject.clone(), part).await.is_ok()
                    }
                    _ => false,
                };
                if !sent {
                    self.missed(&user);
                }
            }
            self.relayed_to(user);
        }
    }

    fn relayed_to(&self, user: String) {
        let now = tokio::time::Instant::now();
        let mut recent = self.0.relay.recent.lock().unwrap();
        while let Some((at, _)) = recent.front() {
            if now.duration_since(*at) <= IN_FLIGHT && recent.len() < RECENT_USERS {
                break;
            }
            recent.pop_front();
        }
        recent.push_back((now, user));
    }

    /// The link dropped: what was published just before may be lost, so
    /// those users are named for a resync once it is back.
    pub(super) fn relayed_lately_missed(&self) {
        let recent = std::mem::take(&mut *self.0.relay.recent.lock().unwrap());
        for (_, user) in recent {
            self.resync_later(&user);
        }
    }

    /// Tells the other nodes which users missed pushes from this one.
    async fn name_missed(&self) {
        if !self.is_connected() {
            return;
        }
        let resync = {
            let mut missed = self.0.relay.missed.lock().unwrap();
            if missed.users.is_empty() && !missed.everyone {
                return;
            }
            let taken = std::mem::take(&mut *missed);
            Resync {
                users: if taken.everyone {
                    Vec::new()
                } else {
                    taken.users.into_iter().collect()
                },
                everyone: taken.everyone,
                // Clocks of different machines differ a little: a second more
                // closes a few connections for nothing rather than miss one.
                before_ms: taken.last_ms + 1000,
            }
        };
        tracing::info!(
            users = resync.users.len(),
            everyone = resync.everyone,
            "asking the other nodes to resync users who missed pushes"
        );
        let body: Bytes = serde_json::to_vec(&resync).expect("serializable").into();
        let _ = self.0.client.publish(RESYNC, body).await;
    }

    /// Closes the connections here of users another node could not relay to.
    pub(super) async fn resync(self, mut requests: async_nats::Subscriber) {
        while let Some(msg) = requests.next().await {
            let (Some(local), Ok(resync)) = (
                self.0.local.get(),
                serde_json::from_slice::<Resync>(&msg.payload),
            ) else {
                continue;
            };
            let closed = if resync.everyone {
                local.close_older(None, resync.before_ms, MISSED)
            } else {
                resync
                    .users
                    .iter()
                    .map(|u| local.close_older(Some(u), resync.before_ms, MISSED))
                    .sum()
            };
            if closed > 0 {
                tracing::info!(closed, "closed connections that missed pushes (4009)");
            }
        }
    }

    /// Subscribes this node to `user`'s pushes from other nodes for as long
    /// as the returned hold lives. Returns once the NATS server has the
    /// subscription, so every push committed afterwards reaches this node;
    /// an error (NATS down or too slow) means the connection must not rely
    /// on relayed pushes, and `connect` refuses it.
    pub async fn hold(&self, user: &str) -> Result<UserHold, Error> {
        let hold = {
            let mut holds = self.0.relay.holds.lock().unwrap();
            let hold = holds.entry(user.to_owned()).or_insert_with(|| {
                Arc::new(Hold {
                    count: AtomicUsize::new(0),
                    ready: OnceCell::new(),
                    stop: self.0.shutdown.child_token(),
                })
            });
            hold.count.fetch_add(1, Ordering::Relaxed);
            hold.clone()
        };
        // Made before waiting: a refused or cancelled connect lets go too.
        let guard = UserHold {
            cluster: self.clone(),
            user: user.to_owned(),
        };
        if !self.is_connected() {
            return Err(Error::Nats("not connected".into()));
        }
        let subscribed = hold
            .ready
            .get_or_init(|| self.subscribe_user(user.to_owned(), hold.stop.clone()));
        match tokio::time::timeout(HOLD_TIMEOUT, subscribed).await {
            Ok(true) => Ok(guard),
            Ok(false) => Err(Error::Nats("cannot subscribe".into())),
            Err(_) => Err(Error::Nats(format!("no answer within {HOLD_TIMEOUT:?}"))),
        }
    }

    /// Subscribes and waits until the server has it; `false` on failure.
    async fn subscribe_user(&self, user: String, stop: CancellationToken) -> bool {
        let subscriber = match self.0.client.subscribe(user_subject(&user)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(user = ?user, error = %e, "cannot subscribe to a user's pushes from other nodes");
                return false;
            }
        };
        let trip = self.0.client.request(ROUND_TRIP, Bytes::new()).await;
        let confirmed = matches!(
            trip.as_ref().map_err(|e| e.kind()),
            Err(async_nats::client::RequestErrorKind::NoResponders)
        );
        if !confirmed {
            return false;
        }
        let cluster = self.clone();
        tokio::spawn(async move {
            let mut subscriber = subscriber;
            loop {
                tokio::select! {
                    // A released hold stops before delivering more.
                    biased;
                    _ = stop.cancelled() => break,
                    msg = subscriber.next() => match msg {
                        Some(msg) => {
                            let frames = std::str::from_utf8(&msg.payload);
                            if let (Some(local), Ok(frames)) = (cluster.0.local.get(), frames) {
                                local.deliver(&user, frames);
                            }
                        }
                        None => break,
                    },
                }
            }
        });
        true
    }

    fn release(&self, user: &str) {
        let mut holds = self.0.relay.holds.lock().unwrap();
        if let Some(hold) = holds.get(user)
            && hold.count.fetch_sub(1, Ordering::Relaxed) == 1
        {
            // A `hold` still subscribing finds `stop` cancelled and lets go.
            hold.stop.cancel();
            holds.remove(user);
        }
    }
}

/// `frames` (lines) in parts of at most `max` bytes, each whole lines; a
/// line longer than `max` is `None` (it cannot be relayed).
fn split(frames: &Bytes, max: usize) -> Vec<Option<Bytes>> {
    if frames.len() <= max {
        return vec![Some(frames.clone())];
    }
    let mut parts = Vec::new();
    // The part being filled is frames[start..end]; the next line starts at `pos`.
    let (mut start, mut end, mut pos) = (0, 0, 0);
    while pos <= frames.len() {
        let line_end = frames[pos..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(frames.len(), |i| pos + i);
        if end > start && line_end - start > max {
            parts.push(frames.slice(start..end));
            start = pos;
        }
        end = line_end;
        pos = line_end + 1;
    }
    parts.push(frames.slice(start..end));
    parts
        .into_iter()
        .map(|p| (p.len() <= max).then_some(p))
        .collect()
}

/// Milliseconds since the epoch (the wall clock nodes share).
fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| d.as_millis() as i64)
}

/// Keeps this node subscribed to a user's pushes; see [`Cluster::hold`].
pub struct UserHold {
    cluster: Cluster,
    user: String,
}

impl Drop for UserHold {
    fn drop(&mut self) {
        self.cluster.release(&self.user);
    }
}

/// `imctl.u.<user>`: the user id itself when it is a plain subject token,
/// else `imctl.ux.<hex>` (ids may hold dots, spaces or `*`).
pub fn user_subject(user: &str) -> String {
    let plain = !user.is_empty()
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain {
        format!("imctl.u.{user}")
    } else {
        format!("imctl.ux.{}", hex::encode(user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_subjects_are_one_token_and_never_collide() {
        assert_eq!(user_subject("alice"), "imctl.u.alice");
        assert_eq!(user_subject("a.b"), "imctl.ux.612e62");
        assert_eq!(user_subject("a*"), "imctl.ux.612a");
        assert_eq!(user_subject(""), "imctl.ux.");
        // A plain id that looks like hex stays under `u`, apart from `ux`.
        assert_ne!(user_subject("612e62"), user_subject("a.b"));
    }

    /// A push larger than the relay's byte budget is not queued: it is
    /// counted and its user named on `imctl.resync` for the other nodes.
    #[tokio::test]
    async fn a_push_over_the_byte_budget_is_dropped_and_its_user_resynced() {
        let test = "a_push_over_the_byte_budget_is_dropped_and_its_user_resynced";
        let Some(nats) = crate::nats_local::or_skip(test, crate::nats_local::LocalNats::start())
        else {
            return;
        };
        let settings = super::super::Settings {
            url: nats.url(),
            node: "n1".into(),
            host: None,
            broker_port: 1,
            app_url: "http://127.0.0.1:1".into(),
        };
        let stop = CancellationToken::new();
        let cluster = Cluster::join(settings, stop.clone()).await.unwrap();
        let watcher = async_nats::connect(nats.url()).await.unwrap();
        let mut resyncs = watcher.subscribe(RESYNC).await.unwrap();
        watcher.flush().await.unwrap();
        // Small frames, so it is the budget and not NATS's payload limit
        // that refuses them.
        let frames = vec!["{\"op\":\"msg\"}"; RELAY_BYTES / 12 + 1].join("\n");
        assert!(frames.len() > RELAY_BYTES);
        cluster.relay("bob", frames);
        assert_eq!(cluster.dropped_pushes(), 1);
        cluster.relay("carol", "small".into());
        let named = tokio::time::timeout(Duration::from_secs(10), resyncs.next())
            .await
            .expect("a resync within the interval")
            .unwrap();
        let resync: Resync = serde_json::from_slice(&named.payload).unwrap();
        assert_eq!(resync.users, ["bob"]);
        assert!(!resync.everyone);
        assert_eq!(cluster.dropped_pushes(), 1, "the small push was relayed");
        stop.cancel();
    }

    #[test]
    fn frames_are_split_at_lines_within_the_largest_payload() {
        let parts = |s: &'static str, max| {
            split(&Bytes::from(s), max)
                .into_iter()
                .map(|p| p.map(|p| String::from_utf8(p.to_vec()).unwrap()))
                .collect::<Vec<_>>()
        };
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(parts("aaa\nbbb", 100), [some("aaa\nbbb")]);
        assert_eq!(parts("aaa\nbbb\nccc", 7), [some("aaa\nbbb"), some("ccc")]);
        assert_eq!(
            parts("aaa\nbbb\nccc", 3),
            [some("aaa"), some("bbb"), some("ccc")]
        );
        // A line longer than the payload cannot go; the others still do.
        assert_eq!(parts("xxxxxxxxxx\nb", 5), [None, some("b")]);
        assert_eq!(parts("a\nxxxxxxxxxx", 5), [some("a"), None]);
    }
}
