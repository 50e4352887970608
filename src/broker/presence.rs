//! Presence announcements, coalesced per user: a user whose connections
//! come and go quickly costs their friends and devices at most one
//! `presence` frame per [`INTERVAL`], carrying the latest state.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use tokio::time::Instant;

use super::Broker;
use crate::wire::ws::Push;

/// At most one announcement per user in this interval.
pub const INTERVAL: Duration = Duration::from_millis(500);

/// Entries older than [`INTERVAL`] are pruned once the map holds this many
/// (or twice as many as after the last pruning, so pruning stays cheap
/// while very many users connect at once).
const PRUNE_AT: usize = 1024;

/// Per user: what was last announced and when; whether one is scheduled.
#[derive(Default)]
pub struct Presence {
    users: std::sync::Mutex<Users>,
}

#[derive(Default)]
struct Users {
    map: HashMap<String, Announced>,
    prune_at: usize,
}

struct Announced {
    at: Instant,
    /// `None` until something was announced.
    platforms: Option<Vec<i32>>,
    scheduled: bool,
}

impl Presence {
    /// Claims the right to announce `user` now; `Err(wait)` when the last
    /// announcement was too recent (a delayed one is then scheduled unless
    /// one already is: `Err(None)`).
    fn claim(&self, user: &str) -> Result<(), Option<Duration>> {
        let mut users = self.users.lock().unwrap();
        if users.map.len() >= users.prune_at.max(PRUNE_AT) {
            users
                .map
                .retain(|_, a| a.scheduled || a.at.elapsed() < INTERVAL);
            users.prune_at = 2 * users.map.len();
        }
        match users.map.get_mut(user) {
            Some(a) if a.scheduled => Err(None),
            Some(a) => match INTERVAL.checked_sub(a.at.elapsed()) {
                // Elapsed read once: a second read could pass INTERVAL.
                Some(wait) if !wait.is_zero() => {
                    a.scheduled = true;
                    Err(Some(wait))
                }
                _ => Ok(()),
            },
            None => Ok(()),
        }
    }

    /// Records `platforms` as announced; false when they were already.
    fn record(&self, user: &str, platforms: &[i32]) -> bool {
        let mut users = self.users.lock().unwrap();
        let a = users
            .map
            .entry(user.to_owned())
            .or_insert_with(|| Announced {
                at: Instant::now(),
                platforms: None,
                scheduled: false,
            });
        a.scheduled = false;
        // Back where the last announcement left it: nothing to say.
        if a.platforms.as_deref() == Some(platforms) {
            return false;
        }
        a.at = Instant::now();
        a.platforms = Some(platforms.to_vec());
        true
    }
}

/// Tells `user`'s friends, and the user's other devices, where the user is
/// connected now. `cause` is the connection whose coming or going changed
/// it (it knows already).
pub async fn announce(broker: &Broker, user: &str, cause: u64) {
    match broker.presence.claim(user) {
        Ok(()) => send(broker, user, Some(cause)).await,
        Err(None) => {}
        Err(Some(wait)) => {
            let (broker, user) = (broker.clone(), user.to_owned());
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                if !broker.shutdown.is_cancelled() {
                    send(&broker, &user, None).await;
                }
            });
        }
    }
}

async fn send(broker: &Broker, user: &str, except: Option<u64>) {
    let platforms = broker.hub.platforms_of(user);
    if !broker.presence.record(user, &platforms) {
        return;
    }
    let push: Utf8Bytes = Push::Presence {
        user_id: user.to_owned(),
        online: !platforms.is_empty(),
        platforms,
    }
    .frame()
    .into();
    match broker.store.friends_of(user).await {
        Ok(friends) => friends
            .iter()
            .for_each(|f| broker.hub.deliver(&f.id, &push, None)),
        Err(e) => tracing::warn!(error = %e, "cannot read friends for a presence change"),
    }
    broker.hub.deliver(user, &push, except);
}
